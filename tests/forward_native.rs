//! The client core, built natively over tokio-tungstenite, through the in-process relay
//! to a real OpenSSH sshd: the same code the browser runs, minus the browser.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::{SinkExt, StreamExt};
use tabtunnel_client::native::NativeTransport;
use tabtunnel_client::{
    Auth, ClientError, ConnectOptions, ErrorCode, HostKeyPolicy, Session, connect,
};
use tabtunnel_e2e::relay::Relay;
use tabtunnel_e2e::services::{BulkServer, EchoServer, exchange};
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{init_logging, pattern, sha256_hex, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Everything a test needs: sshd, a relay with target "sshd", and a logged-in session.
struct Setup {
    sshd: Sshd,
    relay: Relay,
    session: Session,
}

async fn setup() -> Result<Setup> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = Relay::start(&[("sshd", &sshd.address())]).await?;
    let session = open(&relay, &sshd, Auth::Password(sshd.password.into())).await?;
    Ok(Setup {
        sshd,
        relay,
        session,
    })
}

fn options(sshd: &Sshd, auth: Auth) -> ConnectOptions {
    ConnectOptions {
        target: "sshd".into(),
        username: sshd.user.into(),
        auth,
        host_key: HostKeyPolicy {
            pinned: vec![],
            expected: Some(sshd.host_key_fingerprint.clone()),
            ask: None,
        },
    }
}

async fn open(relay: &Relay, sshd: &Sshd, auth: Auth) -> Result<Session, ClientError> {
    let transport = NativeTransport::connect(&relay.ws_url())
        .await
        .map_err(|e| ClientError::Transport(e.0))?;
    connect(transport, options(sshd, auth)).await
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
    drop(s.sshd);
    Ok(())
}

#[tokio::test]
async fn logs_in_with_an_ed25519_key() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = Relay::start(&[("sshd", &sshd.address())]).await?;
    let auth = Auth::PrivateKey {
        pem: sshd.client_key.clone(),
        passphrase: None,
    };
    let session = open(&relay, &sshd, auth).await?;
    assert_eq!(session.host_key().fingerprint, sshd.host_key_fingerprint);
    assert_eq!(session.host_key().algorithm, "ssh-ed25519");
    let echo = EchoServer::start("127.0.0.1").await?;
    let fwd = session
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;
    assert_eq!(
        exchange(fwd.listen(), b"hello through a key").await?,
        b"hello through a key"
    );
    Ok(())
}

#[tokio::test]
async fn fifty_concurrent_connections() -> Result<()> {
    let s = setup().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let fwd = s
        .session
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;
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
    let echo = EchoServer::start("127.0.0.1").await?;
    let fwd = s
        .session
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;
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
    let echo = EchoServer::start("127.0.0.1").await?;
    let fwd = s
        .session
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;
    let listen = fwd.listen().to_owned();
    assert_eq!(exchange(&listen, b"ping").await?, b"ping");
    // A connection is open while the session ends: it must not keep the port.
    let _open = tokio::net::TcpStream::connect(&listen).await?;
    s.session.close().await;
    wait_for(
        "the forward's port to be free",
        Duration::from_secs(5),
        || async { std::net::TcpListener::bind(&listen).ok() },
    )
    .await?;
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
    wait_for(
        "the closed forward's port to be free",
        Duration::from_secs(5),
        || async { std::net::TcpListener::bind(&listen).ok() },
    )
    .await?;
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
    // In use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let _ = taken;
    let first = s.session.forward("0:127.0.0.1:22").await?;
    let port = first.listen().rsplit_once(':').unwrap().1.to_owned();
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
    let echo = EchoServer::start("127.0.0.1").await?;
    let ok = s
        .session
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;
    assert_eq!(exchange(ok.listen(), b"fine").await?, b"fine");
    Ok(())
}

#[tokio::test]
async fn unknown_target_wrong_password_and_wrong_host_key_fail_clearly() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = Relay::start(&[("sshd", &sshd.address())]).await?;

    let transport = NativeTransport::connect(&relay.ws_url()).await?;
    let mut opts = options(&sshd, Auth::Password(sshd.password.into()));
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

    let err = open(&relay, &sshd, Auth::Password("wrong".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::AuthFailed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("publickey") && err.to_string().contains("password"),
        "{err}"
    );

    let transport = NativeTransport::connect(&relay.ws_url()).await?;
    let mut opts = options(&sshd, Auth::Password(sshd.password.into()));
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
    let mut opts = options(&sshd, Auth::Password(sshd.password.into()));
    opts.host_key.expected = None;
    let err = connect(transport, opts).await.unwrap_err();
    assert!(
        matches!(err, ClientError::HostKeyRejected { .. }),
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
    let echo = EchoServer::start("127.0.0.1").await?;
    let fwd = s
        .session
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;

    let (mut rogue, _) = tokio_tungstenite::connect_async(s.relay.ws_url()).await?;
    use tokio_tungstenite::tungstenite::Message;
    let hello = tabtunnel_proto::encode_to_bytes(&tabtunnel_proto::Frame::Hello {
        version: 1,
        target: "sshd".into(),
    });
    rogue.send(Message::Binary(hello)).await?;
    rogue
        .send(Message::Binary(vec![99u8, 0, 0, 0, 0].into()))
        .await?;
    let mut error = None;
    while let Some(Ok(message)) = rogue.next().await {
        if let Message::Binary(data) = message
            && let Ok(tabtunnel_proto::Frame::Error { code, message }) =
                tabtunnel_proto::decode(data)
        {
            error = Some((code, message));
        }
    }
    let (code, message) = error.expect("the relay explains before closing");
    assert_eq!(code, ErrorCode::Protocol);
    assert!(message.contains("unknown frame kind 99"), "{message}");
    // The well-behaved session did not notice.
    assert_eq!(exchange(fwd.listen(), b"unaffected").await?, b"unaffected");
    assert!(s.session.closed_reason().is_none());
    Ok(())
}
