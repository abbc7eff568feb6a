//! The relay's page in Chromium, set up the way the browser tests need it.

use std::time::Duration;

use anyhow::Result;
use fantoccini::Locator;

use crate::browser::Browser;
use crate::lab::Lab;
use crate::relay::{Relay, web_dir};
use crate::sshd::{Sshd, SshdOptions};
use crate::{init_logging, wait_for};

/// One browser at a time: they share two cores, and the throughput figure means more
/// when nothing else runs.
pub static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn require_bundle() -> Result<()> {
    let bundle = web_dir().join("pkg/client_wasm.js");
    anyhow::ensure!(
        bundle.exists(),
        "{} is missing: build it with `cargo xtask wasm`",
        bundle.display()
    );
    Ok(())
}

/// Waits for the browser's turn (see [`ONE_BROWSER`]; keep the guard for the whole test),
/// with logging on and the page's bundle checked.
pub async fn browser_turn() -> Result<tokio::sync::MutexGuard<'static, ()>> {
    let one = ONE_BROWSER.lock().await;
    init_logging();
    require_bundle()?;
    Ok(one)
}

/// A browser showing `url`.
pub async fn open(url: &str) -> Result<Browser> {
    let browser = Browser::start().await?;
    browser.client.goto(url).await?;
    Ok(browser)
}

/// The page's status line.
pub async fn status(c: &fantoccini::Client) -> Result<String> {
    Ok(c.find(Locator::Id("status")).await?.text().await?)
}

/// Waits until the status line, in lower case, passes `says` (within 30 s).
pub async fn wait_for_status(
    c: &fantoccini::Client,
    what: &str,
    says: impl Fn(&str) -> bool,
) -> Result<()> {
    wait_for(what, Duration::from_secs(30), || async {
        says(&status(c).await.ok()?.to_lowercase()).then_some(())
    })
    .await
}

/// Waits until the status says the page is connected.
pub async fn wait_until_connected(c: &fantoccini::Client) -> Result<()> {
    wait_for_status(c, "the status to say connected", |s| {
        s.contains("connected as")
    })
    .await
}

/// The browser's turn, a real sshd, the relay with target "sshd", and the relay's page
/// loaded in Chromium. Keep the relay and the guard alive for the whole test.
pub async fn page() -> Result<(Browser, Sshd, Relay, tokio::sync::MutexGuard<'static, ()>)> {
    page_with(SshdOptions::default()).await
}

/// [`page`] with sshd configured for the test's case.
pub async fn page_with(
    options: SshdOptions,
) -> Result<(Browser, Sshd, Relay, tokio::sync::MutexGuard<'static, ()>)> {
    let one = browser_turn().await?;
    let mut lab = Lab::builder();
    for line in options.extra_config {
        lab = lab.sshd_config(line);
    }
    let Lab { sshd, relay, .. } = lab.start().await?;
    let browser = open(&relay.http_url()).await?;
    Ok((browser, sshd, relay, one))
}

/// Picks `target` and types the user name and password into the form (clicks nothing).
pub async fn fill_login(
    c: &fantoccini::Client,
    target: &str,
    user: &str,
    password: &str,
) -> Result<()> {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(&format!("#target option[value='{target}']")))
        .await?
        .click()
        .await?;
    c.find(Locator::Id("username"))
        .await?
        .send_keys(user)
        .await?;
    c.find(Locator::Id("password"))
        .await?
        .send_keys(password)
        .await?;
    Ok(())
}

/// Accepts the host-key question once the page shows it.
pub async fn accept_host_key(c: &fantoccini::Client) -> Result<()> {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(
            "#hostkey-dialog:not([hidden]) #hostkey-accept",
        ))
        .await?
        .click()
        .await?;
    Ok(())
}

/// Logs in through the form with the password, accepting the host key when asked.
pub async fn log_in_with_password(
    c: &fantoccini::Client,
    target: &str,
    user: &str,
    password: &str,
) -> Result<()> {
    fill_login(c, target, user, password).await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    accept_host_key(c).await?;
    wait_until_connected(c).await
}

/// Waits for the forward row matching `row` (a CSS selector) to show its listen address.
pub async fn row_listen_address(c: &fantoccini::Client, row: &str) -> Result<String> {
    let selector = format!("{row} .listen");
    wait_for("the forward's row", Duration::from_secs(30), || async {
        let text = c
            .find(Locator::Css(&selector))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.starts_with("127.0.0.1:").then_some(text)
    })
    .await
}

/// Logs in through the JS API with sshd's test key, unless the page already has a session
/// (`window.__session`), and opens a forward for each spec; returns their listen addresses,
/// in order.
pub async fn open_forwards_with_key(
    browser: &crate::browser::Browser,
    sshd: &Sshd,
    specs: &[String],
) -> Result<Vec<String>> {
    let listens = browser
        .run_js(
            r#"
            const [user, key, fingerprint, specs] = args;
            window.__session ??= await m.connect({ target: "sshd", username: user, privateKey: key, hostKey: fingerprint });
            const session = window.__session;
            const listens = [];
            for (const spec of specs) listens.push((await session.forward(spec)).listen);
            return listens;
            "#,
            vec![
                serde_json::json!(sshd.user),
                serde_json::json!(sshd.client_key),
                serde_json::json!(sshd.host_key_fingerprint),
                serde_json::json!(specs),
            ],
        )
        .await?;
    listens
        .as_array()
        .and_then(|all| all.iter().map(|l| l.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| anyhow::anyhow!("the page returned no listen addresses: {listens}"))
}

/// [`open_forwards_with_key`] through the page's own client, which runs in its worker
/// (`window.tabtunnelPage.client`), so nothing of the SSH client runs on the page's main
/// thread: the page as shipped, for the bench.
pub async fn open_forwards_in_worker(
    browser: &crate::browser::Browser,
    sshd: &Sshd,
    specs: &[String],
) -> Result<Vec<String>> {
    let script = r#"
        const done = arguments[arguments.length - 1];
        const [user, key, fingerprint, specs] = arguments;
        (async () => {
            await window.tabtunnelPage.ready;
            const client = await window.tabtunnelPage.client.get();
            window.__workerSession ??= await client.connect({ target: "sshd", username: user, privateKey: key, hostKey: fingerprint });
            const listens = [];
            for (const spec of specs) listens.push((await window.__workerSession.forward(spec)).listen);
            return listens;
        })().then((ok) => done({ ok }), (e) => done({ error: String(e && e.message || e) }));
    "#;
    let args = vec![
        serde_json::json!(sshd.user),
        serde_json::json!(sshd.client_key),
        serde_json::json!(sshd.host_key_fingerprint),
        serde_json::json!(specs),
    ];
    let result = browser.client.execute_async(script, args).await?;
    if let Some(error) = result.get("error") {
        anyhow::bail!("the page's client could not open the forwards: {error}");
    }
    result["ok"]
        .as_array()
        .and_then(|all| all.iter().map(|l| l.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| anyhow::anyhow!("the page returned no listen addresses: {result}"))
}

/// Adds the forward `spec` through the Forwards form, as a user does, and returns its
/// row's listen address.
pub async fn add_forward_in_form(c: &fantoccini::Client, spec: &str) -> Result<String> {
    c.find(Locator::Id("forward-spec"))
        .await?
        .send_keys(spec)
        .await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    row_listen_address(c, &format!(".forward-row[data-spec='{spec}']")).await
}

/// The widths the page is looked at: desktop and a phone, (name, width, height).
pub const SCREEN_SIZES: [(&str, u32, u32); 2] = [("desktop", 1200, 900), ("phone", 390, 844)];

/// The narrowest window [`screenshots`] checks the page fits (no screenshot).
pub const NARROWEST: (u32, u32) = (360, 740);

/// Where page tests put their screenshots: `screenshots/` in the cargo target folder
/// (`CARGO_TARGET_DIR`, or the workspace's `target/`), for people to open.
pub fn screenshot_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("screenshots")
}

/// Saves the top of the page as `screenshots/TEST/STATE-WIDTHxHEIGHT.png` at each of
/// [`SCREEN_SIZES`], checking at each and at [`NARROWEST`] that nothing is wider than the
/// window (a phone would scroll sideways), and leaves the window at desktop size. Returns the files.
pub async fn screenshots(
    c: &fantoccini::Client,
    test: &str,
    state: &str,
) -> Result<Vec<std::path::PathBuf>> {
    let dir = screenshot_dir().join(test);
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::new();
    for (_, width, height) in SCREEN_SIZES {
        c.set_window_size(width, height).await?;
        // The top of the page, where each state shows first: a screenshot holds only the
        // window, and the focus may have scrolled it anywhere.
        c.execute("window.scrollTo(0, 0);", vec![]).await?;
        let overflow = c
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await?;
        anyhow::ensure!(
            overflow.as_i64() == Some(0),
            "{state} at {width}px: the page is {overflow} px wider than the window"
        );
        let file = dir.join(format!("{state}-{width}x{height}.png"));
        std::fs::write(&file, c.screenshot().await?)?;
        files.push(file);
    }
    // The narrowest phones in common use: still nothing wider than the window.
    c.set_window_size(NARROWEST.0, NARROWEST.1).await?;
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await?;
    anyhow::ensure!(
        overflow.as_i64() == Some(0),
        "{state} at {}px: the page is {overflow} px wider than the window",
        NARROWEST.0
    );
    let (_, width, height) = SCREEN_SIZES[0];
    c.set_window_size(width, height).await?;
    Ok(files)
}
