//! Reconnect in the browser: the page's SSH client (in its worker) and the JS API (on the
//! main thread) reach the relay through a TCP proxy the test cuts. The page says it is
//! reconnecting, then connected again; its forwards listen on the same ports and carry
//! data, and the API reports each state through `onStateChange`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tabtunnel_e2e::browser::Browser;
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::page::{
    add_forward_in_form, browser_turn, log_in_with_password, open, status, wait_for_status,
};
use tabtunnel_e2e::proxy::CutProxy;
use tabtunnel_e2e::services::{EchoServer, exchange};
use tabtunnel_e2e::wait_for;

/// Saves what the page looks like at desktop and phone widths, for a person to look at:
/// `reconnect-NAME-desktop.png` and `-phone.png` in the system's temporary folder.
async fn screenshots(browser: &Browser, name: &str) -> Result<Vec<PathBuf>> {
    let mut saved = Vec::new();
    for (width, height, label) in [(1280, 900, "desktop"), (390, 844, "phone")] {
        browser.client.set_window_size(width, height).await?;
        let png = browser.client.screenshot().await?;
        let path = std::env::temp_dir().join(format!("reconnect-{name}-{label}.png"));
        std::fs::write(&path, png)?;
        saved.push(path);
    }
    browser.client.set_window_size(1280, 900).await?;
    eprintln!("screenshots: {saved:?}");
    Ok(saved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_it_is_reconnecting_and_its_forwards_come_back_on_the_same_ports()
-> Result<()> {
    let _one = browser_turn().await?;
    let lab = Lab::start().await?;
    let proxy = CutProxy::start(lab.relay.addr).await?;
    let browser = open(&proxy.http_url()).await?;
    let c = &browser.client;
    log_in_with_password(c, "sshd", lab.sshd.user, lab.sshd.password).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let spec = format!("0:{}", echo.addr);
    let listen = add_forward_in_form(c, &spec).await?;
    assert_eq!(exchange(&listen, b"before").await?, b"before");

    // The way to the relay goes down: the page says it is trying again, and why.
    proxy.set_down(true);
    wait_for_status(c, "the status to say reconnecting", |s| {
        s.starts_with("reconnecting (attempt ") && s.contains("next try in")
    })
    .await?;
    screenshots(&browser, "reconnecting").await?;
    proxy.set_down(false);
    wait_for_status(c, "the status to say connected again", |s| {
        s.starts_with("connected again as") && s.contains("forwards restored on the same ports")
    })
    .await?;
    screenshots(&browser, "restored").await?;
    // The row shows the same address, and it carries data again.
    let row = format!(".forward-row[data-spec='{spec}'] .listen");
    let shown = c.find(fantoccini::Locator::Css(&row)).await?.text().await?;
    assert_eq!(shown, listen);
    assert_eq!(exchange(&listen, b"after").await?, b"after");
    assert!(status(c).await?.contains(lab.sshd.user));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_api_reports_each_state_and_the_forward_carries_on() -> Result<()> {
    let _one = browser_turn().await?;
    let lab = Lab::start().await?;
    let proxy = CutProxy::start(lab.relay.addr).await?;
    let browser = open(&proxy.http_url()).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let opened = browser
        .run_js(
            r#"
            const [user, password, fingerprint, spec] = args;
            window.__states = [];
            const session = await m.connect({
                target: "sshd", username: user, password, hostKey: fingerprint,
                reconnect: { firstDelayMs: 100, maxDelayMs: 1000, giveUpAfterMs: 60000 },
                onStateChange: (state) => window.__states.push(state),
            });
            const fwd = await session.forward(spec);
            window.__session = session;
            window.__fwd = fwd;
            return { listen: fwd.listen };
            "#,
            vec![
                json!(lab.sshd.user),
                json!(lab.sshd.password),
                json!(lab.sshd.host_key_fingerprint),
                json!(format!("0:{}", echo.addr)),
            ],
        )
        .await?;
    let listen = opened["listen"].as_str().context("listen")?.to_owned();
    assert_eq!(exchange(&listen, b"one").await?, b"one");

    assert!(
        proxy.cut() >= 1,
        "the page's WebSocket went through the proxy"
    );
    let states = wait_for("the restored state", Duration::from_secs(30), || async {
        let states = browser
            .run_js("return window.__states;", vec![])
            .await
            .ok()?;
        let restored = states
            .as_array()?
            .iter()
            .any(|s| s["state"] == json!("restored"));
        restored.then_some(states)
    })
    .await?;
    let states: Vec<Value> = states.as_array().context("states")?.clone();
    assert_eq!(states[0], json!({ "state": "live" }));
    assert_eq!(states[1]["state"], json!("reconnecting"));
    assert_eq!(states[1]["attempt"], json!(1));
    assert!(states[1]["nextTryMs"].as_f64().is_some(), "{states:?}");
    assert!(
        states[1]["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{states:?}"
    );
    assert_eq!(
        states.last(),
        Some(&json!({ "state": "restored", "resumed": true })),
        "{states:?}"
    );
    assert_eq!(exchange(&listen, b"two").await?, b"two");
    let stats = browser
        .run_js("return window.__fwd.stats();", vec![])
        .await?;
    assert_eq!(
        stats["connections"],
        json!(2),
        "counters carried on: {stats}"
    );
    let reason = browser
        .run_js("return window.__session.closedReason ?? null;", vec![])
        .await?;
    assert_eq!(reason, Value::Null);
    browser
        .run_js("await window.__session.close();", vec![])
        .await?;
    Ok(())
}
