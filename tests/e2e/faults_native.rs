//! Faults a shared relay must survive without losing its head: a crashed sshd, a tab
//! that vanishes, SIGTERM, and a tab that floods garbage.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::SinkExt;
use tabtunnel_client::Session;
use tabtunnel_e2e::fake_tab::FakeTab;
use tabtunnel_e2e::lab::{Lab, echo_forward};
use tabtunnel_e2e::relay::RelayProcess;
use tabtunnel_e2e::services::{BulkServer, exchange};
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{init_logging, log_in, sshd_login, wait_for, wait_until_port_free};
use tabtunnel_proto::Frame;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

async fn login(ws_url: &str, sshd: &Sshd) -> Result<Session> {
    Ok(log_in(ws_url, sshd_login(sshd)).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_sshd_ends_the_session_and_frees_its_port() -> Result<()> {
    // Without parking: a lost session's forwards are freed at once (reconnect_native
    // tests what resume_grace keeps).
    let Lab {
        mut sshd, relay, ..
    } = Lab::builder()
        .configure(|config| config.resume_grace = Duration::ZERO)
        .start()
        .await?;
    let session = login(&relay.ws_url(), &sshd).await?;
    let bulk = BulkServer::start(256 << 20, 3).await?;
    let fwd = session
        .forward(&format!("0:127.0.0.1:{}", bulk.addr.port()))
        .await?;
    let mut client = tokio::net::TcpStream::connect(fwd.listen()).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < 1 << 20 {
        got += client.read(&mut buf).await?;
    }
    sshd.kill(); // mid-transfer
    let reason = tokio::time::timeout(Duration::from_secs(20), session.closed()).await?;
    assert!(
        reason.contains("the SSH server closed the connection"),
        "{reason}"
    );
    // The TCP client's connection ends instead of hanging.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the TCP client was left hanging");
    wait_until_port_free(fwd.listen()).await
}

#[tokio::test]
async fn a_vanished_tab_frees_its_listeners_within_a_second() -> Result<()> {
    // Without parking: a lost session's forwards are freed at once (reconnect_native
    // tests what resume_grace keeps).
    let Lab {
        sshd: _sshd, relay, ..
    } = Lab::builder()
        .configure(|config| config.resume_grace = Duration::ZERO)
        .start()
        .await?;
    let mut tab = FakeTab::hello(&relay.ws_url(), "sshd", "").await?;
    let mut addresses = Vec::new();
    for _ in 1..=3 {
        addresses.push(tab.listening("").await?);
    }
    // The tab's connection drops without a WebSocket close (a crashed browser).
    drop(tab);
    let dropped = Instant::now();
    for address in &addresses {
        wait_for("the listener to close", Duration::from_secs(1), || async {
            std::net::TcpListener::bind(address).ok().map(drop)
        })
        .await?;
    }
    eprintln!(
        "all 3 listeners closed {:?} after the tab vanished",
        dropped.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_flood_of_garbage_ends_only_its_own_session() -> Result<()> {
    let Lab { sshd, relay, .. } = Lab::start().await?;
    let good = login(&relay.ws_url(), &sshd).await?;
    let (_echo, fwd) = echo_forward(&good).await?;

    let FakeTab { ws: mut rogue, .. } = FakeTab::hello(&relay.ws_url(), "sshd", "").await?;
    let mut noise = 0x9e37_79b9_u32;
    for _ in 0..2000 {
        noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let len = 1 + (noise % 300) as usize;
        let frame: Vec<u8> = (0..len).map(|i| (noise >> (i % 24)) as u8).collect();
        if rogue.feed(Message::Binary(frame.into())).await.is_err() {
            break; // the relay already hung up on us
        }
    }
    let _ = rogue.flush().await;
    // The flooder is told why and cut off at its first bad frame.
    let told = tokio::time::timeout(Duration::from_secs(10), async {
        use futures::StreamExt;
        while let Some(Ok(message)) = rogue.next().await {
            if let Message::Binary(data) = message
                && let Ok(Frame::Error { code, .. }) = tabtunnel_proto::decode(data)
            {
                return Some(code);
            }
        }
        None
    })
    .await?;
    assert_eq!(told, Some(tabtunnel_proto::ErrorCode::Protocol));
    assert_eq!(exchange(fwd.listen(), b"still fine").await?, b"still fine");
    assert!(
        good.closed_reason().is_none(),
        "the good session is unaffected"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_tells_the_tabs_and_exits_zero() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let target = format!("sshd={}", sshd.address());
    let mut relay = RelayProcess::start(&["--target", &target], "warn").await?;
    let session = login(&relay.ws_url(), &sshd).await?;
    let (_echo, fwd) = echo_forward(&session).await?;

    relay.terminate_cleanly(&session, fwd.listen()).await
}
