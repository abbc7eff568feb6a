//! The npm-style client package embedded in a page of its own (examples/embed, laid out
//! with the package by `cargo xtask package`), served by the relay as its web folder: the
//! example loads the package's worker and wasm from where the package sits, logs in
//! through a real sshd, adds a forward, and shows its address and stats; bytes sent through
//! that forward come back whole and the example's stats count them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use fantoccini::{Client, Locator};
use tabtunnel_e2e::init_logging;
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::page::{ONE_BROWSER, open, screenshots};
use tabtunnel_e2e::services::EchoServer;
use tabtunnel_e2e::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes sent through the example's forward.
const PAYLOAD: usize = 256 * 1024;

/// The example with the package beside it: `TABTUNNEL_EMBED_DIR`, or `npm/embed` in the
/// cargo target folder, where `cargo xtask package` writes it.
fn embed_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("TABTUNNEL_EMBED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
                .join("npm/embed")
        });
    let wasm = dir.join("tabtunnel-client/pkg/client_wasm_bg.wasm");
    anyhow::ensure!(
        dir.join("index.html").is_file() && wasm.is_file(),
        "{} lacks the example or the package: build them with `cargo xtask package`",
        dir.display()
    );
    Ok(dir)
}

async fn status(c: &Client) -> Option<String> {
    c.find(Locator::Id("status")).await.ok()?.text().await.ok()
}

/// Waits until the example's status line contains `text`, failing early on an error it shows.
async fn wait_for_status(c: &Client, text: &str) -> Result<()> {
    wait_for(
        &format!("the example's status to say {text:?}"),
        Duration::from_secs(30),
        || async { status(c).await.filter(|s| s.contains(text)) },
    )
    .await
    .map(|_| ())
}

async fn type_into(c: &Client, id: &str, text: &str) -> Result<()> {
    c.find(Locator::Id(id)).await?.send_keys(text).await?;
    Ok(())
}

/// A `data-*` number of the example's forward item, once it is there.
async fn item_number(c: &Client, attribute: &str) -> Option<u64> {
    let item = c.find(Locator::Css("li.forward")).await.ok()?;
    item.attr(attribute).await.ok()??.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_example_forwards_data_through_the_package() -> Result<()> {
    let dir = embed_dir()?;
    let _one = ONE_BROWSER.lock().await;
    init_logging();
    let lab = Lab::builder()
        .configure(move |config| config.web_dir = Some(dir))
        .start()
        .await?;
    let browser = open(&lab.relay.http_url()).await?;
    let c = &browser.client;
    // The relay's policy allows the example: the package's worker and wasm load.
    wait_for_status(c, "Ready.").await?;

    type_into(c, "target", "sshd").await?;
    type_into(c, "username", lab.sshd.user).await?;
    type_into(c, "password", lab.sshd.password).await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    // The example asks about the new host key with confirm(); the fingerprint it shows is sshd's.
    let question = wait_for("the host-key question", Duration::from_secs(30), || async {
        c.get_alert_text().await.ok()
    })
    .await?;
    assert!(
        question.contains(&lab.sshd.host_key_fingerprint),
        "the example asked {question:?}"
    );
    c.accept_alert().await?;
    wait_for_status(
        c,
        &format!("Connected (host key {})", lab.sshd.host_key_fingerprint),
    )
    .await?;

    // Once connected the example shows only the forward form.
    assert!(!c.find(Locator::Id("login")).await?.is_displayed().await?);
    assert!(c.find(Locator::Id("add")).await?.is_displayed().await?);

    let echo = EchoServer::start("127.0.0.1").await?;
    let spec = format!("0:127.0.0.1:{}", echo.addr.port());
    type_into(c, "spec", &spec).await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    let listen = wait_for("the forward's address", Duration::from_secs(30), || async {
        c.find(Locator::Css("li.forward"))
            .await
            .ok()?
            .attr("data-listen")
            .await
            .ok()?
    })
    .await?;
    assert!(
        listen.starts_with("127.0.0.1:"),
        "the forward listens on {listen}"
    );
    wait_for_status(c, &format!("Forwarding {spec} at {listen}.")).await?;

    let sent: Vec<u8> = (0..PAYLOAD).map(|i| (i * 7 % 251) as u8).collect();
    let mut stream = tokio::net::TcpStream::connect(&listen).await?;
    let (mut read, mut write) = stream.split();
    let mut echoed = vec![0u8; PAYLOAD];
    let (written, got) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(write.write_all(&sent), read.read_exact(&mut echoed))
    })
    .await
    .context("the echo did not come back within 60 s")?;
    written?;
    got?;
    assert!(
        echoed == sent,
        "the bytes echoed through the forward differ"
    );
    drop(stream);

    // The example's stats, from Forward.stats(), count what went through.
    let counted = PAYLOAD as u64;
    wait_for(
        "the example's stats to count the bytes",
        Duration::from_secs(30),
        || async {
            let up = item_number(c, "data-bytes-up").await?;
            let down = item_number(c, "data-bytes-down").await?;
            (up >= counted && down >= counted).then_some(())
        },
    )
    .await?;
    let text = c.find(Locator::Css("li.forward")).await?.text().await?;
    assert!(
        text.starts_with(&format!("{listen} → {spec}: 1 connections")),
        "the example shows {text:?}"
    );
    // As a person would see it, at desktop and phone widths, with nothing wider than the window.
    screenshots(c, "embed_browser", "forwarding").await?;
    browser.stop().await;
    Ok(())
}
