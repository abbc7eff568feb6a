//! Limits of a shared relay: each gives a clear error to the one who hit it, and nobody
//! else notices. /healthz and /metrics report what happened.

use std::time::Duration;

use anyhow::Result;
use tabtunnel_client::{ClientError, ErrorCode, Session};
use tabtunnel_e2e::fake_tab::FakeTab;
use tabtunnel_e2e::lab::{Lab, echo_forward};
use tabtunnel_e2e::relay::Relay;
use tabtunnel_e2e::services::{EchoServer, exchange};
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{log_in, sshd_login};
use tabtunnel_e2e::{wait_for, wait_until_port_free};
use tabtunnel_proto::{Frame, MAX_FRAME};
use tabtunnel_relay::config::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A lab whose relay has these limits.
async fn lab_with(limits: Limits) -> Result<Lab> {
    Lab::builder()
        .configure(move |config| config.limits = limits)
        .start()
        .await
}

async fn login(relay: &Relay, sshd: &Sshd) -> Result<Session, ClientError> {
    log_in(&relay.ws_url(), sshd_login(sshd)).await
}

fn is_limit(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::Relay {
            code: ErrorCode::Limit,
            ..
        }
    )
}

#[tokio::test]
async fn forwards_and_connections_are_capped_per_session_and_forward() -> Result<()> {
    let limits = Limits {
        forwards_per_session: 2,
        connections_per_forward: 1,
        ..Limits::default()
    };
    let Lab { sshd, relay, .. } = lab_with(limits).await?;
    let session = login(&relay, &sshd).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let spec = format!("0:127.0.0.1:{}", echo.addr.port());
    let first = session.forward(&spec).await?;
    let _second = session.forward(&spec).await?;
    let err = session.forward(&spec).await.unwrap_err();
    assert!(is_limit(&err), "{err:?}");
    assert!(err.to_string().contains("at most 2 forwards"), "{err}");

    // One connection at a time through `first`: a second is closed at once, the first
    // goes on undisturbed.
    let mut held = tokio::net::TcpStream::connect(first.listen()).await?;
    held.write_all(b"one").await?;
    let mut buf = [0u8; 3];
    held.read_exact(&mut buf).await?;
    let mut extra = tokio::net::TcpStream::connect(first.listen()).await?;
    let ended = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut buf)).await?;
    assert!(
        matches!(ended, Ok(0) | Err(_)),
        "the extra connection is closed: {ended:?}"
    );
    held.write_all(b"two").await?;
    held.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"two");

    let metrics = relay.get("/metrics").await?;
    assert!(
        metrics.contains("tabtunnel_refusals_total{reason=\"limit\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("tabtunnel_forwards_active 2"), "{metrics}");
    assert!(
        metrics.contains("tabtunnel_connections_active 1"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn sessions_are_capped_in_total_and_per_address_and_places_come_back() -> Result<()> {
    let lab = lab_with(Limits {
        sessions_per_ip: 1,
        ..Limits::default()
    })
    .await?;
    let Lab { sshd, relay, .. } = &lab;
    let first = login(relay, sshd).await?;
    let err = login(relay, sshd).await.unwrap_err();
    assert!(is_limit(&err), "{err:?}");
    assert!(
        err.to_string().contains("from one address (127.0.0.1)"),
        "{err}"
    );
    first.close().await;
    let again = wait_for(
        "the place to come back",
        Duration::from_secs(10),
        || async { login(relay, sshd).await.ok() },
    )
    .await?;
    again.close().await;

    let full = lab
        .another_relay(|config| {
            config.limits = Limits {
                sessions: 1,
                ..Limits::default()
            }
        })
        .await?;
    let _only = login(&full, sshd).await?;
    let err = login(&full, sshd).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("serves at most 1 sessions at once and is full"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn healthz_and_metrics_report_sessions_connections_and_bytes() -> Result<()> {
    let Lab { sshd, relay, .. } = Lab::start().await?;
    assert!(relay.get("/healthz").await?.ends_with("\r\n\r\nok\n"));
    let session = login(&relay, &sshd).await?;
    let (_echo, fwd) = echo_forward(&session).await?;
    assert_eq!(exchange(fwd.listen(), &[7u8; 5000]).await?, vec![7u8; 5000]);
    let metrics = wait_for(
        "the connection to be counted closed",
        Duration::from_secs(10),
        || async {
            let text = relay.get("/metrics").await.ok()?;
            text.contains("tabtunnel_connections_active 0")
                .then_some(text)
        },
    )
    .await?;
    for line in [
        "tabtunnel_sessions_active 1",
        "tabtunnel_sessions_total 1",
        "tabtunnel_forwards_active 1",
        "tabtunnel_connections_total 1",
        "tabtunnel_bytes_up_total 5000",
        "tabtunnel_bytes_down_total 5000",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains(sshd.password) && !metrics.contains("127.0.0.1"),
        "counts only"
    );
    Ok(())
}

/// A lab whose relay has `configure` applied on top of the test defaults.
async fn lab_configured(
    configure: impl FnOnce(&mut tabtunnel_relay::Config) + Send + 'static,
) -> Result<Lab> {
    Lab::builder().configure(configure).start().await
}

/// A destination that counts the connections it accepted and echoes their bytes.
struct CountingEcho {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingEcho {
    async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Ok(Self {
            addr,
            accepted,
            task,
        })
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to `to` from the local address `from` (any loopback address works on Linux).
async fn connect_from(from: &str, to: &str) -> Result<tokio::net::TcpStream> {
    let to: std::net::SocketAddr = to.parse()?;
    let from: std::net::IpAddr = from.parse()?;
    let socket = if from.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(from, 0))?;
    Ok(socket.connect(to).await?)
}

/// Waits (bounded) until the relay closes `stream`; fails if it sends anything instead.
async fn closed_by_relay(stream: &mut tokio::net::TcpStream) -> Result<()> {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Ok(()),
        Ok(Ok(n)) => anyhow::bail!("the connection carried {n} bytes instead of closing"),
        Err(_) => anyhow::bail!("the relay did not close the connection within 10 s"),
    }
}

/// Waits until `fwd` counts `failures` failed connections, the last one saying `says`.
async fn forward_failed(fwd: &tabtunnel_client::Forward, failures: u64, says: &str) -> Result<()> {
    let stats = wait_for(
        &format!("{failures} failures on the forward"),
        Duration::from_secs(10),
        || async {
            let stats = fwd.stats();
            (stats.failures == failures).then_some(stats)
        },
    )
    .await?;
    let last = stats.last_error.as_deref().unwrap_or_default();
    anyhow::ensure!(last.contains(says), "the forward's last error: {stats:?}");
    Ok(())
}

/// Polls /metrics until `line` appears in it; returns the whole text.
async fn metrics_show(relay: &Relay, line: &str) -> Result<String> {
    wait_for(
        &format!("{line:?} in /metrics"),
        Duration::from_secs(10),
        || async {
            let text = relay.get("/metrics").await.ok()?;
            text.lines().any(|l| l == line).then_some(text)
        },
    )
    .await
}

#[tokio::test]
async fn forwards_accept_tcp_clients_only_from_allowed_sources() -> Result<()> {
    let Lab { sshd, relay, .. } = lab_configured(|config| {
        config.forward_allowed_sources = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await?;
    let session = login(&relay, &sshd).await?;
    let destination = CountingEcho::start().await?;
    let fwd = session
        .forward(&format!("0:127.0.0.1:{}", destination.addr.port()))
        .await?;

    // 127.0.0.2 is loopback too, but not in the allowed network: closed at accept.
    let mut outsider = connect_from("127.0.0.2", fwd.listen()).await?;
    let _ = outsider.write_all(b"let me in").await;
    closed_by_relay(&mut outsider).await?;
    // The tab's forward shows why (the page's row reads its stats).
    let stats = wait_for(
        "the forward to show the refusal",
        Duration::from_secs(10),
        || async {
            let stats = fwd.stats();
            (stats.failures == 1).then_some(stats)
        },
    )
    .await?;
    let why = stats.last_error.unwrap_or_default();
    assert!(
        why.contains("127.0.0.2") && why.contains("forward_allowed_sources"),
        "{why}"
    );
    assert_eq!(stats.connections, 0, "the tab never saw the connection");

    // An IPv6 client is checked against the same list: ::1 is not in it.
    let fwd6 = session
        .forward(&format!("[::1]:0:127.0.0.1:{}", destination.addr.port()))
        .await?;
    let mut outsider6 = connect_from("::1", fwd6.listen()).await?;
    closed_by_relay(&mut outsider6).await?;

    // From the allowed address the forward works as before.
    let mut insider = connect_from("127.0.0.1", fwd.listen()).await?;
    insider.write_all(b"hello").await?;
    let mut buf = [0u8; 5];
    insider.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"hello");
    assert_eq!(
        destination.accepted(),
        1,
        "only the allowed client reached the destination"
    );
    metrics_show(
        &relay,
        "tabtunnel_refusals_total{reason=\"source-not-allowed\"} 2",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn idle_sessions_end_but_open_quiet_connections_keep_theirs() -> Result<()> {
    let idle = Duration::from_secs(2);
    let Lab { sshd, relay, .. } =
        lab_configured(move |config| config.idle_timeout = Some(idle)).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let spec = format!("0:127.0.0.1:{}", echo.addr.port());

    // `busy` holds a connection open and quiet, like a psql waiting at its prompt.
    let busy = login(&relay, &sshd).await?;
    let busy_fwd = busy.forward(&spec).await?;
    let mut quiet = tokio::net::TcpStream::connect(busy_fwd.listen()).await?;
    quiet.write_all(b"a").await?;
    let mut buf = [0u8; 1];
    quiet.read_exact(&mut buf).await?;

    // `unused` has a forward nobody connects to: it ends, and says why.
    let unused = login(&relay, &sshd).await?;
    let unused_fwd = unused.forward(&spec).await?;
    let reason = tokio::time::timeout(Duration::from_secs(30), unused.closed()).await?;
    assert!(
        reason.contains("idle for 2s with no connections; log in again"),
        "{reason}"
    );
    wait_until_port_free(unused_fwd.listen()).await?;
    metrics_show(&relay, "tabtunnel_refusals_total{reason=\"idle\"} 1").await?;

    // By now `busy`'s connection has been quiet for longer than the timeout; give it
    // twice as long again, then it still carries data.
    let survived = tokio::time::timeout(idle * 2, busy.closed()).await;
    assert!(survived.is_err(), "ended: {:?}", busy.closed_reason());
    quiet.write_all(b"b").await?;
    quiet.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"b");

    // Once its last connection closes, the idle clock runs for it too.
    drop(quiet);
    let reason = tokio::time::timeout(Duration::from_secs(30), busy.closed()).await?;
    assert!(reason.contains("idle for 2s"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn connections_waiting_for_a_hung_ssh_server_are_capped() -> Result<()> {
    let healthy = Sshd::start().await?;
    let healthy_address = healthy.address();
    let Lab {
        sshd: hung, relay, ..
    } = lab_configured(move |config| {
        config.limits.pending_accepts_per_forward = 3;
        config
            .add_target("healthy", &healthy_address, "test")
            .unwrap();
    })
    .await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let spec = format!("0:127.0.0.1:{}", echo.addr.port());
    let stuck = login(&relay, &hung).await?;
    let stuck_fwd = stuck.forward(&spec).await?;
    let other = log_in(
        &relay.ws_url(),
        tabtunnel_client::ConnectOptions {
            target: "healthy".into(),
            ..sshd_login(&healthy)
        },
    )
    .await?;
    let other_fwd = other.forward(&spec).await?;

    // The SSH server stops answering: channel opens for new connections never complete.
    assert!(hung.freeze_sessions()? > 0, "sshd had a session process");
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(tokio::net::TcpStream::connect(stuck_fwd.listen()).await?);
    }
    // Beyond the cap, each new client is closed at once.
    for _ in 0..2 {
        let mut extra = tokio::net::TcpStream::connect(stuck_fwd.listen()).await?;
        closed_by_relay(&mut extra).await?;
    }
    let metrics = metrics_show(
        &relay,
        "tabtunnel_refusals_total{reason=\"pending-accepts\"} 2",
    )
    .await?;
    assert!(
        metrics.contains("tabtunnel_connections_active 3"),
        "{metrics}"
    );
    // The waiting ones are still open (nothing closed them).
    for stream in &waiting {
        let mut buf = [0u8; 1];
        let err = stream.try_read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }
    forward_failed(&stuck_fwd, 2, "waiting for the SSH server").await?;
    // Another session is not affected.
    assert_eq!(exchange(other_fwd.listen(), b"fine").await?, b"fine");
    assert!(other.closed_reason().is_none());

    // The tab gives up on channels the server never opens (30 s): the waiting clients are
    // closed, the forward says why, and the cap is free again.
    for mut stream in waiting {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => anyhow::bail!("a waiting connection carried {n} bytes"),
            Err(_) => anyhow::bail!("a connection waited for its channel for over 60 s"),
        }
    }
    forward_failed(&stuck_fwd, 5, "did not open a channel").await?;
    metrics_show(&relay, "tabtunnel_connections_active 0").await?;
    Ok(())
}

#[tokio::test]
async fn a_tab_that_never_says_hello_is_closed_after_the_handshake_timeout() -> Result<()> {
    let Lab {
        sshd: _sshd, relay, ..
    } = lab_configured(|config| {
        config.handshake_timeout = Duration::from_secs(1);
    })
    .await?;
    let mut silent = FakeTab::connect(&relay.ws_url()).await?;
    let (error, close) = silent.goodbye(Duration::from_secs(20)).await?;
    let (code, message) = error.expect("the relay explains before closing");
    assert_eq!(code, ErrorCode::Protocol);
    assert!(message.contains("no Hello within 1s"), "{message}");
    assert_eq!(close, Some(1002));
    metrics_show(&relay, "tabtunnel_refusals_total{reason=\"protocol\"} 1").await?;
    Ok(())
}

#[tokio::test]
async fn an_oversized_frame_ends_only_its_own_session() -> Result<()> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let Lab { sshd, relay, .. } = Lab::start().await?;
    let session = login(&relay, &sshd).await?;
    let (_echo, fwd) = echo_forward(&session).await?;

    let mut rogue = FakeTab::hello(&relay.ws_url(), "sshd", "").await?;
    // One byte over the limit: an Ssh frame with a payload of MAX_DATA + 1.
    let mut huge = vec![0u8; MAX_FRAME + 1];
    huge[0] = Frame::Ssh(Default::default()).kind();
    rogue.ws.send(Message::Binary(huge.into())).await?;
    let (error, close) = rogue.goodbye(Duration::from_secs(20)).await?;
    let (code, message) = error.expect("the relay explains before closing");
    assert_eq!(code, ErrorCode::Protocol);
    assert!(message.contains(&MAX_FRAME.to_string()), "{message}");
    assert_eq!(close, Some(1002));

    assert_eq!(exchange(fwd.listen(), b"unaffected").await?, b"unaffected");
    assert!(session.closed_reason().is_none());
    Ok(())
}
