//! The page runs the SSH client in a dedicated worker: a main thread kept busy stops no
//! transfer (it would if the client ran there), the relay serves the worker under its
//! policy, and a worker that crashes or never starts is reported to the user, with the
//! session marked closed and the page still answering. Embedders still run the JS API on a
//! main thread, with localStorage as the known-hosts store.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fantoccini::{Client, Locator};
use serde_json::json;
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::page::{
    add_forward_in_form, browser_turn, log_in_with_password, open, page, wait_for_status,
};
use tabtunnel_e2e::relay::web_dir;
use tabtunnel_e2e::services::EchoServer;
use tabtunnel_e2e::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the test keeps the page's main thread busy.
const BUSY_MS: u64 = 3000;

/// Milliseconds since the epoch, as the page's `Date.now()` counts them.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Echo turns through a forward, counted as they go, until told to stop.
#[derive(Debug, Default, Clone)]
struct Pinger {
    stop: Arc<AtomicBool>,
    turns: Arc<AtomicUsize>,
}

impl Pinger {
    /// Turns (start, end in ms since the epoch) through the forward at `listen` until
    /// `stop` (at most 20,000 turns or 60 s).
    async fn run(self, listen: String) -> Result<Vec<(f64, f64)>> {
        let mut stream = tokio::net::TcpStream::connect(&listen).await?;
        let ping = *b"ping through the worker while the page is busy: 0123456789abcdef";
        let mut echoed = [0u8; 64];
        let mut turns = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..20_000 {
            if self.stop.load(Relaxed) || Instant::now() > deadline {
                break;
            }
            let started = now_ms();
            stream.write_all(&ping).await?;
            tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut echoed))
                .await
                .context("no echo within 20 s")??;
            anyhow::ensure!(echoed == ping, "the echo differs");
            turns.push((started, now_ms()));
            self.turns.fetch_add(1, Relaxed);
        }
        Ok(turns)
    }
}

async fn session_error(c: &Client) -> Result<String> {
    Ok(c.find(Locator::Id("session-error")).await?.text().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_keeps_working_while_the_pages_main_thread_is_busy() -> Result<()> {
    let (browser, sshd, _relay, _one) = page().await?;
    let c = &browser.client;
    let echo = EchoServer::start("127.0.0.1").await?;
    log_in_with_password(c, "sshd", sshd.user, sshd.password).await?;
    let listen = add_forward_in_form(c, &format!("0:127.0.0.1:{}", echo.addr.port())).await?;

    // The worker script comes as JavaScript, under a policy that allows the worker.
    let served = c
        .execute_async(
            r#"const done = arguments[0];
            fetch("/client_worker.js").then((r) => done({
                type: r.headers.get("content-type"),
                csp: r.headers.get("content-security-policy"),
                worker: window.tabtunnelPage.clientWorker instanceof Worker,
            }));"#,
            vec![],
        )
        .await?;
    let kind = served["type"].as_str().unwrap_or_default();
    assert!(kind.contains("javascript"), "{served}");
    let csp = served["csp"].as_str().unwrap_or_default();
    assert!(csp.contains("worker-src 'self'"), "{served}");
    assert_eq!(served["worker"], json!(true), "{served}");

    // Echoes go back and forth all along, while the main thread is blocked for BUSY_MS in
    // between. A turn that starts and ends inside the busy time went through a client off
    // the main thread.
    let pinger = Pinger::default();
    let pinging = tokio::spawn(pinger.clone().run(listen));
    wait_for("the first echoes", Duration::from_secs(20), || async {
        (pinging.is_finished() || pinger.turns.load(Relaxed) > 0).then_some(())
    })
    .await?;
    let busy = c
        .execute(
            r#"const start = Date.now();
            while (Date.now() - start < arguments[0]) { /* busy */ }
            return [start, Date.now()];"#,
            vec![json!(BUSY_MS)],
        )
        .await?;
    let busy = (
        busy[0].as_f64().context("busy start")?,
        busy[1].as_f64().context("busy end")?,
    );
    pinger.stop.store(true, Relaxed);
    let turns = pinging.await??;
    let inside = turns
        .iter()
        .filter(|(start, end)| busy.0 <= *start && *end <= busy.1)
        .count();
    eprintln!(
        "{inside} of {} turns inside {:.0} ms of a busy main thread",
        turns.len(),
        busy.1 - busy.0
    );
    assert!(
        inside > 0,
        "no echo came back while the page's main thread was busy {busy:?}: {} turns, first {:?}, last {:?}",
        turns.len(),
        turns.first(),
        turns.last()
    );
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_client_worker_is_reported_and_its_session_closed() -> Result<()> {
    let (browser, sshd, _relay, _one) = page().await?;
    let c = &browser.client;
    let echo = EchoServer::start("127.0.0.1").await?;
    log_in_with_password(c, "sshd", sshd.user, sshd.password).await?;
    let spec = format!("0:127.0.0.1:{}", echo.addr.port());
    add_forward_in_form(c, &spec).await?;

    // A request the worker does not know throws there, uncaught: as a bug or a panic would.
    c.execute(
        "window.tabtunnelPage.clientWorker.postMessage({ op: 'no-such-request' });",
        vec![],
    )
    .await?;
    wait_for_status(c, "the status to say the client stopped", |s| {
        s.starts_with("closed: the ssh client stopped")
    })
    .await?;
    let shown = session_error(c).await?;
    assert!(
        shown.starts_with("The SSH client stopped:") && shown.contains("Reload the page"),
        "{shown}"
    );
    let row = c
        .find(Locator::Css(&format!(".forward-row[data-spec='{spec}']")))
        .await?;
    assert_eq!(row.attr("data-state").await?.as_deref(), Some("closed"));

    // Connecting again says why it cannot, rather than waiting for ever.
    c.find(Locator::Id("connect")).await?.click().await?;
    wait_for_status(c, "the page to give up connecting", |s| {
        s.starts_with("disconnected")
    })
    .await?;
    assert!(
        session_error(c)
            .await?
            .starts_with("The SSH client stopped:"),
        "the reason stays on screen"
    );
    browser.stop().await;
    Ok(())
}

/// Copies the page's folder to `to`, all but `left_out` (a file name in its top folder).
fn copy_web_dir(from: &Path, to: &Path, left_out: &str) -> Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == left_out || name == "node_modules" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_web_dir(&entry.path(), &target, "")?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_script_that_fails_to_load_is_reported() -> Result<()> {
    let _one = browser_turn().await?;
    let web = tempfile::tempdir()?;
    copy_web_dir(&web_dir(), web.path(), "client_worker.js")?;
    let path = web.path().to_owned();
    let lab = Lab::builder()
        .configure(move |config| config.web_dir = Some(path))
        .start()
        .await?;
    let browser = open(&lab.relay.http_url()).await?;
    let c = &browser.client;
    let shown = wait_for(
        "the page to say the client is missing",
        Duration::from_secs(30),
        || async {
            let text = session_error(c).await.ok()?;
            (!text.is_empty()).then_some(text)
        },
    )
    .await?;
    assert!(
        shown.starts_with("The SSH client could not be loaded:"),
        "{shown}"
    );
    // The rest of the page still works: the relay's targets are offered.
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#target option[value='sshd']"))
        .await?;
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedders_still_run_the_js_api_on_a_main_thread_with_localstorage() -> Result<()> {
    let (browser, sshd, relay, _one) = page().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    // knownHosts: true without a store: this window's localStorage, as before the worker.
    let remembered = browser
        .run_js(
            r#"
            const [user, key, spec] = args;
            localStorage.removeItem("tabtunnel.knownHosts");
            const session = await m.connect({ target: "sshd", username: user, privateKey: key,
                knownHosts: true, onHostKey: () => true });
            const fwd = await session.forward(spec);
            const listen = fwd.listen;
            const stored = localStorage.getItem("tabtunnel.knownHosts");
            m.forgetHostKey("sshd", session.hostKeyAlgorithm);
            const after = localStorage.getItem("tabtunnel.knownHosts");
            await session.close();
            return { listen, stored, after };
            "#,
            vec![
                json!(sshd.user),
                json!(sshd.client_key),
                json!(format!("0:127.0.0.1:{}", echo.addr.port())),
            ],
        )
        .await?;
    let id = format!("{}|sshd|ssh-ed25519", relay.http_url());
    let stored: serde_json::Value =
        serde_json::from_str(remembered["stored"].as_str().context("stored")?)?;
    assert_eq!(
        stored[&id]["fingerprint"],
        json!(sshd.host_key_fingerprint),
        "{remembered}"
    );
    let after: serde_json::Value =
        serde_json::from_str(remembered["after"].as_str().context("after")?)?;
    assert!(after.get(&id).is_none(), "forgotten: {remembered}");
    assert!(
        remembered["listen"]
            .as_str()
            .is_some_and(|l| l.starts_with("127.0.0.1:")),
        "{remembered}"
    );
    browser.stop().await;
    Ok(())
}
