//! Liveness: a dead SSH server or relay is noticed and named, a tab that stops
//! answering loses its listeners, a relay shutdown and a login cut short say so.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::SinkExt;
use tabtunnel_client::native::NativeTransport;
use tabtunnel_client::{
    Auth, ConnectOptions, Credentials, HostKeyPolicy, Keepalive, PromptCallback, Session, connect,
};
use tabtunnel_e2e::relay::{Relay, TEST_FORWARD_PORTS};
use tabtunnel_e2e::services::{EchoServer, exchange};
use tabtunnel_e2e::sshd::{Sshd, SshdOptions, signal};
use tabtunnel_e2e::{init_logging, wait_until_port_free};
use tokio::io::AsyncBufReadExt;

const FAST: Keepalive = Keepalive {
    interval: Duration::from_secs(1),
    count_max: 2,
};

async fn login(
    ws_url: &str,
    sshd: &Sshd,
    keepalive: Option<Keepalive>,
    auth: Credentials,
) -> Result<Session> {
    let transport = NativeTransport::connect(ws_url).await?;
    let options = ConnectOptions {
        keepalive,
        token: None,
        target: "sshd".into(),
        username: sshd.user.into(),
        auth,
        host_key: HostKeyPolicy {
            pinned: vec![],
            expected: Some(sshd.host_key_fingerprint.clone()),
            ask: None,
        },
    };
    Ok(connect(transport, options).await?)
}

fn password(sshd: &Sshd) -> Credentials {
    Auth::Password(sshd.password.into()).into()
}

/// Waits (bounded) for the session to end and returns why.
async fn ended(session: &Session) -> Result<String> {
    tokio::time::timeout(Duration::from_secs(30), session.closed())
        .await
        .context("the session did not end")
}

#[tokio::test]
async fn a_frozen_ssh_server_is_noticed_by_the_keepalive() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = Relay::start(&[("sshd", &sshd.address())]).await?;
    let session = login(&relay.ws_url(), &sshd, Some(FAST), password(&sshd)).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let fwd = session
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;
    assert_eq!(exchange(fwd.listen(), b"alive").await?, b"alive");
    // An idle but healthy session survives several keepalive intervals.
    tokio::time::timeout(Duration::from_millis(3500), session.closed())
        .await
        .unwrap_err();
    assert!(
        sshd.freeze_sessions()? > 0,
        "sshd had a process for the session"
    );
    let reason = ended(&session).await?;
    assert!(
        reason.contains("no answer from the SSH server for 3 s, 2 keepalive(s) included")
            && reason.contains("ServerAliveInterval"),
        "{reason}"
    );
    // The session's end closes its listener on the relay.
    wait_until_port_free(fwd.listen()).await
}

/// The relay binary, as `cargo test --workspace` builds it next to this test.
fn relay_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary folder")?;
    let relay = dir.join("relay");
    anyhow::ensure!(
        relay.exists(),
        "{} is missing: run `cargo build -p tabtunnel-relay`",
        relay.display()
    );
    Ok(relay)
}

#[tokio::test]
async fn a_frozen_relay_is_noticed_by_the_keepalive() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let range = format!(
        "{}-{}",
        TEST_FORWARD_PORTS.start(),
        TEST_FORWARD_PORTS.end()
    );
    let mut child = tokio::process::Command::new(relay_binary()?)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--forward-ports",
            &range,
            "--target",
        ])
        .arg(format!("sshd={}", sshd.address()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("tabtunnel relay: open ") {
                return Ok(rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned());
            }
        }
        anyhow::bail!("the relay printed no address")
    })
    .await??;
    let ws_url = format!("{}ws", url.replace("http://", "ws://"));
    let session = login(&ws_url, &sshd, Some(FAST), password(&sshd)).await?;
    let pid = child.id().context("relay pid")?;
    signal(pid, "STOP")?;
    let reason = ended(&session).await;
    signal(pid, "KILL")?;
    let reason = reason?;
    assert!(reason.contains("ServerAliveInterval"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn the_relay_ends_a_tab_that_stops_answering_pings() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let mut config = tabtunnel_relay::Config {
        forward_ports: TEST_FORWARD_PORTS,
        ping_interval: Duration::from_millis(200),
        ..Default::default()
    };
    config.add_target("sshd", &sshd.address(), "test")?;
    let relay = Relay::start_with(config).await?;
    // A tab that says Hello, asks for a listener, then never reads again (a closed
    // laptop lid): it never answers the relay's pings.
    let (mut ws, _) = tokio_tungstenite::connect_async(relay.ws_url()).await?;
    use tabtunnel_proto::{Frame, encode_to_bytes};
    use tokio_tungstenite::tungstenite::Message;
    let hello = Frame::Hello {
        version: tabtunnel_proto::VERSION,
        target: "sshd".into(),
        token: String::new(),
    };
    ws.send(Message::Binary(encode_to_bytes(&hello))).await?;
    let listen = Frame::Listen {
        forward: 1,
        bind: String::new(),
        port: 0,
    };
    ws.send(Message::Binary(encode_to_bytes(&listen))).await?;
    let address = tokio::time::timeout(Duration::from_secs(10), async {
        use futures::StreamExt;
        while let Some(message) = ws.next().await {
            if let Message::Binary(data) = message?
                && let Ok(Frame::Listening { address, .. }) = tabtunnel_proto::decode(data)
            {
                return Ok(address);
            }
        }
        anyhow::bail!("no Listening")
    })
    .await??;
    // From here on nothing reads `ws`, so no pong goes back.
    wait_until_port_free(&address).await?;
    drop(ws);
    Ok(())
}

#[tokio::test]
async fn a_relay_shutdown_is_named_to_the_tab() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = Relay::start(&[("sshd", &sshd.address())]).await?;
    let session = login(&relay.ws_url(), &sshd, None, password(&sshd)).await?;
    relay.shutdown().await?;
    let reason = ended(&session).await?;
    assert!(reason.contains("the relay is shutting down"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn a_login_the_server_cuts_short_says_why() -> Result<()> {
    init_logging();
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec!["LoginGraceTime 2".into()],
    })
    .await?;
    let relay = Relay::start(&[("sshd", &sshd.address())]).await?;
    // A user who never answers the password prompt.
    let never: PromptCallback = Box::new(|_| Box::pin(futures::future::pending()));
    let credentials = Credentials {
        prompt: Some(never),
        ..Credentials::default()
    };
    let ws_url = relay.ws_url();
    let attempt = login(&ws_url, &sshd, None, credentials);
    let err = tokio::time::timeout(Duration::from_secs(30), attempt)
        .await?
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("during login") && message.contains("LoginGraceTime"),
        "{message}"
    );
    Ok(())
}
