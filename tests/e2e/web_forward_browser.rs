//! Web forwards in headless Chromium: the page's Open button opens a real web app through
//! a forward, by name under `tabtunnel.localhost` (Chromium resolves `*.localhost` to
//! loopback), in a new tab: a redirect, a form post and a WebSocket echo page work; a
//! second browser without the cookie is refused; the URL dies with the forward and with
//! the session; a sibling forward's page can neither open a WebSocket to nor post into
//! another forward, and the link lets in only the browser that used it first.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, Locator};
use tabtunnel_e2e::browser::Browser;
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::page::{add_forward_in_form, browser_turn, log_in_with_password, open};
use tabtunnel_e2e::web_app::{HOME_TITLE, WebApp};
use tabtunnel_e2e::{pattern, sha256_hex, wait_for};

const DOMAIN: &str = "tabtunnel.localhost";
const DEADLINE: Duration = Duration::from_secs(30);

/// The lab (relay with web forwards by name), the web app, and the relay's page in
/// Chromium, logged in.
async fn logged_in() -> Result<(Lab, WebApp, Browser)> {
    logged_in_with(|config| config.web_forward_domain = Some(DOMAIN.into())).await
}

async fn logged_in_with(
    web: impl FnOnce(&mut tabtunnel_relay::Config) + Send + 'static,
) -> Result<(Lab, WebApp, Browser)> {
    let lab = Lab::builder().configure(web).start().await?;
    let app = WebApp::start().await?;
    let browser = open(&lab.relay.http_url()).await?;
    let c = &browser.client;
    log_in_with_password(c, "sshd", lab.sshd.user, lab.sshd.password).await?;
    Ok((lab, app, browser))
}

/// Waits for an element's text to pass `says`.
async fn wait_for_text(c: &Client, css: &str, says: impl Fn(&str) -> bool) -> Result<String> {
    wait_for(
        &format!("{css} to show the right text"),
        DEADLINE,
        || async {
            let text = c.find(Locator::Css(css)).await.ok()?.text().await.ok()?;
            says(&text).then_some(text)
        },
    )
    .await
}

/// The page's text, once it has loaded something with a body.
async fn body_text(c: &Client) -> Result<String> {
    wait_for_text(c, "body", |t| !t.is_empty()).await
}

/// Opens the row's Open link with the keyboard (focus, Enter), and switches to the tab
/// it opens; returns the page's own tab and the app's.
async fn open_with_keyboard(c: &Client, row: &str) -> Result<(WindowHandle, WindowHandle)> {
    let page_tab = c.window().await?;
    let before = c.windows().await?;
    let link = c
        .find(Locator::Css(&format!("{row} a.open-web")))
        .await
        .context("the row's Open link")?;
    assert_eq!(link.attr("target").await?.as_deref(), Some("_blank"));
    let rel = link.attr("rel").await?.unwrap_or_default();
    assert!(rel.contains("noopener"), "{rel}");
    link.send_keys("\u{E007}").await?; // Enter
    let opened = wait_for("the Open link's tab", DEADLINE, || async {
        let windows = c.windows().await.ok()?;
        windows.into_iter().find(|w| !before.contains(w))
    })
    .await?;
    c.switch_to_window(opened.clone()).await?;
    Ok((page_tab, opened))
}

/// Reloads the current tab until it says the forward is closed.
async fn wait_until_closed(c: &Client) -> Result<()> {
    wait_for("the forward's URL to close", DEADLINE, || async {
        c.refresh().await.ok()?;
        let text = c.find(Locator::Css("body")).await.ok()?.text().await.ok()?;
        text.contains("This forward is closed").then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_button_opens_a_web_app_with_its_redirects_forms_and_websockets() -> Result<()> {
    let _one = browser_turn().await?;
    let (_lab, app, browser) = logged_in().await?;
    let c = &browser.client;
    let spec = format!("0:127.0.0.1:{}", app.addr.port());
    add_forward_in_form(c, &spec).await?;
    let row = format!(".forward-row[data-spec='{spec}']");
    let href = c
        .find(Locator::Css(&format!("{row} a.open-web")))
        .await?
        .attr("href")
        .await?
        .context("href")?;
    assert!(
        href.contains(&format!(".{DOMAIN}:")) && href.contains("tabtunnel_key="),
        "{href}"
    );
    let (page_tab, app_tab) = open_with_keyboard(c, &row).await?;

    // The app's home page, the key gone from the address bar, the cookie out of scripts' reach.
    wait_for_text(c, "h1", |t| t == HOME_TITLE).await?;
    let here = c.current_url().await?;
    assert!(
        here.host_str().unwrap_or_default().ends_with(DOMAIN),
        "{here}"
    );
    assert_eq!(here.query(), None, "{here}");
    let cookies = c.execute("return document.cookie", vec![]).await?;
    assert_eq!(cookies, serde_json::json!(""), "the cookie is HttpOnly");

    // A redirect, a form post, a WebSocket echo.
    c.find(Locator::Id("to-redirect")).await?.click().await?;
    wait_for_text(c, "#landed", |t| t == "after the redirect").await?;
    c.goto(&format!("{}form", here.as_str())).await?;
    c.find(Locator::Id("name")).await?.send_keys("Ada").await?;
    c.find(Locator::Id("send")).await?.click().await?;
    wait_for_text(c, "#greeting", |t| t == "Hello, Ada").await?;
    c.goto(&format!("{}echo", here.as_str())).await?;
    wait_for_text(c, "#state", |t| t == "open").await?;
    for word in ["one", "two"] {
        c.find(Locator::Id("say")).await?.clear().await?;
        c.find(Locator::Id("say")).await?.send_keys(word).await?;
        c.find(Locator::Id("go")).await?.click().await?;
        wait_for_text(c, "#answers", |t| t.contains(&format!("echo: {word}"))).await?;
    }

    // A large body, streamed, as the app's own script fetches it.
    const SIZE: usize = 8 << 20;
    let digest = c
        .execute_async(
            r#"
            const [size, done] = arguments;
            fetch(`big?bytes=${size}`)
                .then((r) => r.arrayBuffer())
                .then((b) => crypto.subtle.digest("SHA-256", b))
                .then((d) => done(Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, "0")).join("")))
                .catch((e) => done(`failed: ${e}`));
            "#,
            vec![serde_json::json!(SIZE)],
        )
        .await?;
    assert_eq!(
        digest,
        serde_json::json!(sha256_hex(&pattern(5, SIZE))),
        "the streamed body arrived whole"
    );

    // A second browser, without the cookie, is refused, even with the page's address.
    let other = Browser::start().await?;
    other.client.goto(here.as_str()).await?;
    let refused = body_text(&other.client).await?;
    assert!(refused.contains("This forward is private"), "{refused}");
    other.stop().await;

    // Removing the forward in the page revokes its URL, and the row's link goes.
    c.switch_to_window(page_tab).await?;
    c.find(Locator::Css(&format!("{row} button.remove")))
        .await?
        .click()
        .await?;
    c.switch_to_window(app_tab).await?;
    wait_until_closed(c).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_dies_with_the_session() -> Result<()> {
    let _one = browser_turn().await?;
    let (_lab, app, browser) = logged_in().await?;
    let c = &browser.client;
    let spec = format!("0:127.0.0.1:{}", app.addr.port());
    add_forward_in_form(c, &spec).await?;
    let row = format!(".forward-row[data-spec='{spec}']");
    let (page_tab, app_tab) = open_with_keyboard(c, &row).await?;
    wait_for_text(c, "h1", |t| t == HOME_TITLE).await?;
    // Disconnect in the page: the session ends, and with it the forward's URL.
    c.switch_to_window(page_tab).await?;
    let disconnect = c.find(Locator::Id("connect")).await?;
    if disconnect.text().await? != "Disconnect" {
        bail!("the connect button should say Disconnect");
    }
    disconnect.click().await?;
    c.switch_to_window(app_tab).await?;
    wait_until_closed(c).await?;
    Ok(())
}

/// A self-signed certificate for the relay's names and every forward's name, and the
/// SHA-256 of its key, which Chromium is told to trust (and nothing else).
fn wildcard_cert(
    dir: &std::path::Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf, String)> {
    use base64ct::Encoding as _;
    use sha2::Digest;
    let pair = rcgen::generate_simple_self_signed(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        format!("*.{DOMAIN}"),
    ])?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, pair.cert.pem())?;
    std::fs::write(&key, pair.signing_key.serialize_pem())?;
    let spki = base64ct::Base64::encode_string(&sha2::Sha256::digest(
        rcgen::PublicKeyData::subject_public_key_info(&pair.signing_key),
    ));
    Ok((cert, key, spki))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_cookie_is_secure_http_only_lax_and_host_only() -> Result<()> {
    let _one = browser_turn().await?;
    let dir = tempfile::tempdir()?;
    let (cert, key, spki) = wildcard_cert(dir.path())?;
    let lab = Lab::builder()
        .configure(move |config| {
            config.tls_cert = Some(cert);
            config.tls_key = Some(key);
            config.web_forward_domain = Some(DOMAIN.into());
        })
        .start()
        .await?;
    let app = WebApp::start().await?;
    let browser =
        Browser::start_with_args(&[format!("--ignore-certificate-errors-spki-list={spki}")])
            .await?;
    let c = &browser.client;
    c.goto(&lab.relay.http_url()).await?;
    log_in_with_password(c, "sshd", lab.sshd.user, lab.sshd.password).await?;
    let spec = format!("0:127.0.0.1:{}", app.addr.port());
    add_forward_in_form(c, &spec).await?;
    let row = format!(".forward-row[data-spec='{spec}']");
    let (_page_tab, _app_tab) = open_with_keyboard(c, &row).await?;
    wait_for_text(c, "h1", |t| t == HOME_TITLE).await?;
    let here = c.current_url().await?;
    assert_eq!(here.scheme(), "https", "{here}");
    let host = here.host_str().unwrap_or_default().to_owned();
    assert!(host.starts_with("f-") && host.ends_with(DOMAIN), "{here}");

    // The cookie as Chromium keeps it.
    let cookies = c.get_all_cookies().await?;
    let ours: Vec<_> = cookies
        .iter()
        .filter(|k| k.name() == "tabtunnel_fwd")
        .collect();
    assert_eq!(ours.len(), 1, "{cookies:?}");
    let cookie = ours[0];
    assert_eq!(cookie.secure(), Some(true), "{cookie:?}");
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
    // fantoccini does not re-export the cookie crate's SameSite: compare its name.
    assert_eq!(
        format!("{:?}", cookie.same_site()),
        "Some(Lax)",
        "{cookie:?}"
    );
    assert_eq!(cookie.path(), Some("/"), "{cookie:?}");
    // Host-only: the forward's own name, never a parent domain other forwards share.
    assert_eq!(cookie.domain(), Some(host.as_str()), "{cookie:?}");

    // The app works over https too: its WebSocket page.
    c.goto(&format!("{}echo", here.as_str())).await?;
    wait_for_text(c, "#state", |t| t == "open").await?;
    c.find(Locator::Id("say"))
        .await?
        .send_keys("secure")
        .await?;
    c.find(Locator::Id("go")).await?.click().await?;
    wait_for_text(c, "#answers", |t| t.contains("echo: secure")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_path_an_app_with_relative_links_works_under_its_prefix() -> Result<()> {
    let _one = browser_turn().await?;
    let (_lab, app, browser) = logged_in_with(|config| config.web_forward_paths = true).await?;
    let c = &browser.client;
    let spec = format!("0:127.0.0.1:{}", app.addr.port());
    add_forward_in_form(c, &spec).await?;
    let row = format!(".forward-row[data-spec='{spec}']");
    let (_page_tab, _app_tab) = open_with_keyboard(c, &row).await?;
    wait_for_text(c, "h1", |t| t == HOME_TITLE).await?;
    let here = c.current_url().await?;
    assert!(
        here.path().starts_with("/f/") && here.path().ends_with('/'),
        "{here}"
    );
    assert_eq!(here.query(), None, "{here}");
    c.find(Locator::Id("to-redirect")).await?.click().await?;
    wait_for_text(c, "#landed", |t| t == "after the redirect").await?;
    // The app's absolute redirect (to /landed) is kept under the prefix.
    c.goto(&format!("{}absolute", here.as_str())).await?;
    wait_for_text(c, "#landed", |t| t == "after the redirect").await?;
    assert!(c.current_url().await?.path().starts_with(here.path()));
    c.goto(&format!("{}form", here.as_str())).await?;
    c.find(Locator::Id("name")).await?.send_keys("Lin").await?;
    c.find(Locator::Id("send")).await?.click().await?;
    wait_for_text(c, "#greeting", |t| t == "Hello, Lin").await?;
    c.goto(&format!("{}echo", here.as_str())).await?;
    wait_for_text(c, "#state", |t| t == "open").await?;
    c.find(Locator::Id("say"))
        .await?
        .send_keys("by path")
        .await?;
    c.find(Locator::Id("go")).await?.click().await?;
    wait_for_text(c, "#answers", |t| t.contains("echo: by path")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sibling_forwards_page_cannot_act_on_another_and_a_used_link_admits_only_its_browser()
-> Result<()> {
    let _one = browser_turn().await?;
    let (_lab, app, browser) = logged_in().await?;
    let c = &browser.client;
    let sibling_app = WebApp::start().await?;
    let victim_spec = format!("0:127.0.0.1:{}", app.addr.port());
    let sibling_spec = format!("0:127.0.0.1:{}", sibling_app.addr.port());
    add_forward_in_form(c, &victim_spec).await?;
    add_forward_in_form(c, &sibling_spec).await?;
    let victim_row = format!(".forward-row[data-spec='{victim_spec}']");
    let sibling_row = format!(".forward-row[data-spec='{sibling_spec}']");
    let victim_link = c
        .find(Locator::Css(&format!("{victim_row} a.open-web")))
        .await?
        .attr("href")
        .await?
        .context("href")?;

    // This browser opens both forwards: it holds both cookies.
    let (page_tab, _victim_tab) = open_with_keyboard(c, &victim_row).await?;
    wait_for_text(c, "h1", |t| t == HOME_TITLE).await?;
    let victim = c.current_url().await?;
    c.switch_to_window(page_tab.clone()).await?;
    let (_, _sibling_tab) = open_with_keyboard(c, &sibling_row).await?;
    wait_for_text(c, "h1", |t| t == HOME_TITLE).await?;
    assert_ne!(c.current_url().await?.host_str(), victim.host_str());

    // The sibling's page (same site) tries the victim's WebSocket: refused, though the
    // browser would send the victim's cookie with it.
    let ws_url = format!(
        "ws://{}:{}/ws",
        victim.host_str().unwrap_or_default(),
        victim.port().unwrap_or(80)
    );
    let outcome = c
        .execute_async(
            r#"
            const [url, done] = arguments;
            const ws = new WebSocket(url);
            ws.onopen = () => { ws.close(); done("open"); };
            ws.onerror = () => done("refused");
            "#,
            vec![serde_json::json!(ws_url)],
        )
        .await?;
    assert_eq!(outcome, serde_json::json!("refused"));
    // And posts a form to the victim: the app never sees it.
    c.execute(
        r#"
        const form = document.createElement("form");
        form.method = "post";
        form.action = arguments[0];
        const name = document.createElement("input");
        name.name = "name";
        name.value = "Eve";
        form.append(name);
        document.body.append(form);
        form.submit();
        "#,
        vec![serde_json::json!(format!("{}submit", victim.as_str()))],
    )
    .await?;
    let refused = wait_for_text(c, "h1", |t| t != HOME_TITLE).await?;
    assert_eq!(refused, "Refused: sent by another page");

    // The owner's browser clicking Open again gets in again.
    c.switch_to_window(page_tab).await?;
    open_with_keyboard(c, &victim_row).await?;
    wait_for_text(c, "h1", |t| t == HOME_TITLE).await?;
    assert_eq!(c.current_url().await?.query(), None);

    // Another browser with the used link is refused, and told why.
    let other = Browser::start().await?;
    other.client.goto(&victim_link).await?;
    let text = body_text(&other.client).await?;
    other.stop().await;
    assert!(text.contains("This link was used already"), "{text}");
    Ok(())
}
