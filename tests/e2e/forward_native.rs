//! The client core, built natively over tokio-tungstenite, through the in-process relay
//! to a real OpenSSH sshd: the same code the browser runs, minus the browser.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::SinkExt;
use tabtunnel_client::native::NativeTransport;
use tabtunnel_client::{
    Auth, ClientError, ConnectOptions, ErrorCode, HostKeyPolicy, Session, connect,
};
use tabtunnel_e2e::fake_tab::{ANSWER, FakeTab};
use tabtunnel_e2e::lab::{Lab, echo_forward};
use tabtunnel_e2e::relay::Relay;
use tabtunnel_e2e::services::{BulkServer, EchoServer, exchange};
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{pattern, sha256_hex, sshd_login, wait_for, wait_until_port_free};
use tabtunnel_proto::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The lab and a session logged in with the password and a keepalive.
struct Setup {
    lab: Lab,
    session: Session,
}

async fn setup() -> Result<Setup> {
    let lab = Lab::start().await?;
    let session = lab
        .log_in_with(options(&lab.sshd, Auth::Password(lab.sshd.password.into())))
        .await?;
    Ok(Setup { lab, session })
}

fn options(sshd: &Sshd, auth: Auth) -> ConnectOptions {
    ConnectOptions {
        keepalive: Some(Default::default()),
        auth: auth.into(),
        ..sshd_login(sshd)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_32_mib_each_way_with_equal_sha256() -> Result<()> {
    const SIZE: usize = 32 << 20;
    let s = setup().await?;
    let mut bulk = BulkServer::start(SIZE, 7).await?;
    let fwd = s
        .session
        .forward(&format!("0:127.0.0.1:{}", bulk.addr.port()))
        .await?;
    let upload = pattern(11, SIZE);
    let started = Instant::now();
    let received = exchange(fwd.listen(), &upload).await?;
    let elapsed = started.elapsed();
    let report = bulk.report().await.expect("bulk server report");
    assert_eq!(report.received, SIZE);
    assert_eq!(
        report.received_sha256,
        sha256_hex(&upload),
        "upload arrived intact"
    );
    assert_eq!(received.len(), SIZE);
    assert_eq!(
        sha256_hex(&received),
        bulk.sent_sha256,
        "download arrived intact"
    );
    let stats = fwd.stats();
    assert_eq!(
        (stats.connections, stats.bytes_up, stats.bytes_down),
        (1, SIZE as u64, SIZE as u64)
    );
    eprintln!(
        "32 MiB each way, concurrently, in {elapsed:?} (debug build; see `cargo xtask bench` for figures)"
    );
    drop(s.lab);
    Ok(())
}

#[tokio::test]
async fn logs_in_with_an_ed25519_key() -> Result<()> {
    let lab = Lab::start().await?;
    let sshd = &lab.sshd;
    let auth = Auth::PrivateKey {
        pem: sshd.client_key.clone(),
        passphrase: None,
    };
    let session = lab.log_in_with(options(sshd, auth)).await?;
    assert_eq!(session.host_key().fingerprint, sshd.host_key_fingerprint);
    assert_eq!(session.host_key().algorithm, "ssh-ed25519");
    let (_echo, fwd) = echo_forward(&session).await?;
    assert_eq!(
        exchange(fwd.listen(), b"hello through a key").await?,
        b"hello through a key"
    );
    Ok(())
}

#[tokio::test]
async fn fifty_concurrent_connections() -> Result<()> {
    let s = setup().await?;
    let (_echo, fwd) = echo_forward(&s.session).await?;
    let listen = fwd.listen().to_owned();
    let clients: Vec<_> = (0..50u64)
        .map(|i| {
            let listen = listen.clone();
            tokio::spawn(async move {
                let data = pattern(i, 64 * 1024 + i as usize * 97);
                let back = exchange(&listen, &data).await?;
                anyhow::ensure!(
                    back == data,
                    "connection {i} got {} bytes back, not its {}",
                    back.len(),
                    data.len()
                );
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.await??;
    }
    let stats = fwd.stats();
    assert_eq!(stats.connections, 50);
    wait_for(
        "all connections to end",
        Duration::from_secs(10),
        || async { (fwd.stats().active == 0).then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn half_close_still_delivers_the_whole_reply() -> Result<()> {
    let s = setup().await?;
    let (_echo, fwd) = echo_forward(&s.session).await?;
    let mut stream = tokio::net::TcpStream::connect(fwd.listen()).await?;
    let request = pattern(3, 300_000);
    stream.write_all(&request).await?;
    stream.shutdown().await?; // our write half is closed; the read half stays open
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut reply)).await??;
    assert_eq!(reply.len(), request.len());
    assert!(reply == request, "the echo after our EOF came back whole");
    Ok(())
}

#[tokio::test]
async fn listener_closes_with_the_session_and_the_port_is_free_again() -> Result<()> {
    let s = setup().await?;
    let (_echo, fwd) = echo_forward(&s.session).await?;
    let listen = fwd.listen().to_owned();
    assert_eq!(exchange(&listen, b"ping").await?, b"ping");
    // A connection is open while the session ends: it must not keep the port.
    let _open = tokio::net::TcpStream::connect(&listen).await?;
    s.session.close().await;
    wait_until_port_free(&listen).await?;
    Ok(())
}

#[tokio::test]
async fn closing_a_forward_frees_its_port_and_keeps_the_session() -> Result<()> {
    let s = setup().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let spec = format!("0:127.0.0.1:{}", echo.addr.port());
    let first = s.session.forward(&spec).await?;
    let second = s.session.forward(&spec).await?;
    let listen = first.listen().to_owned();
    first.close().await?;
    wait_until_port_free(&listen).await?;
    assert_eq!(
        exchange(second.listen(), b"still here").await?,
        b"still here"
    );
    Ok(())
}

#[tokio::test]
async fn relay_refusals_reach_the_client_with_clear_messages() -> Result<()> {
    let s = setup().await?;
    // Outside the relay's port range.
    let err = s.session.forward("8080:127.0.0.1:22").await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Relay {
                code: ErrorCode::PortNotAllowed,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("outside this relay's forward range 20000-29999"),
        "{err}"
    );
    // Privileged.
    let err = s.session.forward("80:127.0.0.1:22").await.unwrap_err();
    assert!(err.to_string().contains("CAP_NET_BIND_SERVICE"), "{err}");
    // In use by another process on the relay host.
    let taken = tabtunnel_e2e::relay::occupy_forward_port()?;
    let port = taken.local_addr()?.port();
    let err = s
        .session
        .forward(&format!("{port}:127.0.0.1:22"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Relay {
                code: ErrorCode::PortInUse,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("already in use"), "{err}");
    // Not loopback.
    let err = s
        .session
        .forward("0.0.0.0:0:127.0.0.1:22")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("allowed_binds"), "{err}");
    // A bad spec never reaches the relay.
    let err = s.session.forward("1100:mail").await.unwrap_err();
    assert!(matches!(err, ClientError::BadSpec(_)), "{err:?}");
    // The session still works after all that.
    let (_echo, ok) = echo_forward(&s.session).await?;
    assert_eq!(exchange(ok.listen(), b"fine").await?, b"fine");
    Ok(())
}

#[tokio::test]
async fn unknown_target_wrong_password_and_wrong_host_key_fail_clearly() -> Result<()> {
    let lab = Lab::start().await?;
    let (sshd, relay) = (&lab.sshd, &lab.relay);

    let transport = NativeTransport::connect(&relay.ws_url()).await?;
    let mut opts = options(sshd, Auth::Password(sshd.password.into()));
    opts.target = "nope".into();
    let err = connect(transport, opts).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Relay {
                code: ErrorCode::UnknownTarget,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("unknown target \"nope\"; this relay offers: sshd"),
        "{err}"
    );

    let err = lab
        .log_in_with(options(sshd, Auth::Password("wrong".into())))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::AuthFailed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("publickey") && err.to_string().contains("password"),
        "{err}"
    );

    let transport = NativeTransport::connect(&relay.ws_url()).await?;
    let mut opts = options(sshd, Auth::Password(sshd.password.into()));
    opts.host_key.expected = Some("SHA256:AAAAnotthekey".into());
    let err = connect(transport, opts).await.unwrap_err();
    assert!(
        matches!(err, ClientError::HostKeyMismatch { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&sshd.host_key_fingerprint),
        "{err}"
    );

    let transport = NativeTransport::connect(&relay.ws_url()).await?;
    let mut opts = options(sshd, Auth::Password(sshd.password.into()));
    opts.host_key.expected = None;
    let err = connect(transport, opts).await.unwrap_err();
    assert!(
        matches!(err, ClientError::HostKeyUnknown { .. }),
        "unknown keys are refused by default: {err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_destination_closes_the_tcp_client_at_once_and_counts_a_failure() -> Result<()> {
    let s = setup().await?;
    let closed_port = tabtunnel_e2e::sshd::free_port()?; // nothing listens there
    let fwd = s
        .session
        .forward(&format!("0:127.0.0.1:{closed_port}"))
        .await?;
    let mut stream = tokio::net::TcpStream::connect(fwd.listen()).await?;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await?;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the client sees its connection end: {read:?}"
    );
    let stats = fwd.stats();
    assert_eq!(stats.failures, 1);
    let last = stats.last_error.unwrap_or_default();
    assert!(last.contains("could not connect"), "{last}");
    Ok(())
}

#[tokio::test]
async fn a_malformed_frame_ends_only_that_session() -> Result<()> {
    let s = setup().await?;
    let (_echo, fwd) = echo_forward(&s.session).await?;

    let mut rogue = FakeTab::hello(&s.lab.relay.ws_url(), "sshd", "").await?;
    rogue
        .ws
        .send(Message::Binary(vec![99u8, 0, 0, 0, 0].into()))
        .await?;
    let (error, _close) = rogue.goodbye(ANSWER).await?;
    let (code, message) = error.expect("the relay explains before closing");
    assert_eq!(code, ErrorCode::Protocol);
    assert!(message.contains("unknown frame kind 99"), "{message}");
    // The well-behaved session did not notice.
    assert_eq!(exchange(fwd.listen(), b"unaffected").await?, b"unaffected");
    assert!(s.session.closed_reason().is_none());
    Ok(())
}

/// A destination that writes `len` bytes as fast as it can and reads nothing.
async fn firehose(len: usize) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0x5au8; 64 * 1024];
                let mut sent = 0;
                while sent < len && stream.write_all(&chunk).await.is_ok() {
                    sent += chunk.len();
                }
            });
        }
    });
    Ok((addr, task))
}

#[tokio::test]
async fn a_half_closed_then_reset_client_does_not_freeze_the_session() -> Result<()> {
    let s = setup().await?;
    let (hose, _hose_task) = firehose(64 << 20).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let flood = s.session.forward(&format!("0:{hose}")).await?;
    let fine = s
        .session
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;

    // Half-close, then stop reading: the tab's side now waits for credit.
    let stuck = tokio::net::TcpStream::connect(flood.listen()).await?;
    let (reader, mut writer) = stuck.into_split();
    writer.shutdown().await?;
    wait_for(
        "the first window to reach the stuck client",
        Duration::from_secs(20),
        || async {
            (flood.stats().bytes_down >= u64::from(tabtunnel_proto::CONNECTION_WINDOW))
                .then_some(())
        },
    )
    .await?;
    // Now reset it: the relay sends Close with a reason, which must reach the pump.
    let stuck = reader.reunite(writer)?;
    stuck.set_zero_linger()?;
    drop(stuck);

    wait_for(
        "the reset connection to end in the tab",
        Duration::from_secs(20),
        || async { (flood.stats().active == 0).then_some(()) },
    )
    .await?;
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        exchange(fine.listen(), b"still moving"),
    )
    .await??;
    assert_eq!(
        reply, b"still moving",
        "another forward of the session still works"
    );
    Ok(())
}

#[tokio::test]
async fn the_relay_drops_the_tcp_client_once_the_destination_is_done() -> Result<()> {
    let s = setup().await?;
    // A destination that closes as soon as it accepts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let _closer = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let fwd = s.session.forward(&format!("0:{addr}")).await?;
    let mut client = tokio::net::TcpStream::connect(fwd.listen()).await?;
    let mut buf = [0u8; 16];
    // The destination's EOF arrives; our own write side stays open.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf)).await??,
        0
    );
    // The tab then closes the connection, and the relay must close its socket: writes
    // start failing instead of vanishing into a connection nobody serves.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.write_all(b"x").await.is_ok() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the relay kept the TCP connection open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn frames_that_would_queue_without_credit_end_the_session() -> Result<()> {
    let s = setup().await?;

    let mut rogue = FakeTab::hello(&s.lab.relay.ws_url(), "sshd", "").await?;
    let (conn, _tcp) = rogue.accepted_connection().await?;
    rogue
        .send(&Frame::Data {
            conn,
            data: bytes::Bytes::new(),
        })
        .await?;
    let (code, message) = rogue.error().await?;
    assert_eq!(code, ErrorCode::Protocol);
    assert!(message.contains("Data frame with no bytes"), "{message}");

    let mut rogue = FakeTab::hello(&s.lab.relay.ws_url(), "sshd", "").await?;
    let (conn, _tcp) = rogue.accepted_connection().await?;
    rogue.send(&Frame::Eof { conn }).await?;
    rogue.send(&Frame::Eof { conn }).await?;
    let (code, message) = rogue.error().await?;
    assert_eq!(code, ErrorCode::Protocol);
    assert!(message.contains("a second Eof"), "{message}");

    // A target name far over the text limit gets an answer, not a dead session writer.
    let mut rogue = FakeTab::hello(&s.lab.relay.ws_url(), &"x".repeat(5000), "").await?;
    let (code, message) = rogue.error().await?;
    assert_eq!(code, ErrorCode::UnknownTarget);
    assert!(message.starts_with("unknown target"), "{message}");
    Ok(())
}

#[tokio::test]
async fn operator_pins_narrow_the_check_and_never_replace_it() -> Result<()> {
    let lab = Lab::start().await?;
    let sshd = &lab.sshd;
    let relay_with_pin = |pin: String| {
        lab.another_relay(|config| {
            config.targets.get_mut("sshd").unwrap().pinned_host_keys = vec![pin];
        })
    };
    let attempt = |relay: &Relay,
                   expected: Option<String>,
                   ask: Option<tabtunnel_client::HostKeyCallback>| {
        let mut opts = options(sshd, Auth::Password(sshd.password.into()));
        opts.host_key = HostKeyPolicy {
            pinned: vec![],
            expected,
            ask,
            known_hosts: None,
        };
        let url = relay.ws_url();
        async move { connect(NativeTransport::connect(&url).await?, opts).await }
    };

    let good = relay_with_pin(sshd.host_key_fingerprint.clone()).await?;
    // Pinned and matching, nothing else given: accepted without asking.
    let session = attempt(&good, None, None).await?;
    assert!(session.host_key().pinned);
    // Pinned and matching, but the tab expects another key: the tab's check still applies.
    let err = attempt(&good, Some("SHA256:somethingelse".into()), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::HostKeyMismatch { .. }),
        "{err:?}"
    );
    // The callback still decides, and learns the key is pinned.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let ask: tabtunnel_client::HostKeyCallback = Box::new(move |info| {
        let _ = seen_tx.send(info.pinned);
        Box::pin(async { false })
    });
    let err = attempt(&good, None, Some(ask)).await.unwrap_err();
    assert!(
        matches!(err, ClientError::HostKeyRejected { .. }),
        "{err:?}"
    );
    assert!(seen_rx.recv()?, "onHostKey was told the key is pinned");

    let wrong = relay_with_pin("SHA256:notthiskeyatall".into()).await?;
    let err = attempt(&wrong, Some(sshd.host_key_fingerprint.clone()), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("pinned by the relay's operator"),
        "{err}"
    );
    Ok(())
}
