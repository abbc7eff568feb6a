//! Limits of a shared relay: each gives a clear error to the one who hit it, and nobody
//! else notices. /healthz and /metrics report what happened.

use std::time::Duration;

use anyhow::Result;
use tabtunnel_client::{ClientError, ErrorCode, Session};
use tabtunnel_e2e::relay::{Relay, TEST_FORWARD_PORTS};
use tabtunnel_e2e::services::{EchoServer, exchange};
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{init_logging, wait_for};
use tabtunnel_e2e::{log_in, sshd_login};
use tabtunnel_relay::config::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn relay_with(sshd: &Sshd, limits: Limits) -> Result<Relay> {
    let mut config = tabtunnel_relay::Config {
        forward_ports: TEST_FORWARD_PORTS,
        limits,
        ..Default::default()
    };
    config.add_target("sshd", &sshd.address(), "test")?;
    Relay::start_with(config).await
}

async fn login(relay: &Relay, sshd: &Sshd) -> Result<Session, ClientError> {
    log_in(&relay.ws_url(), sshd_login(sshd)).await
}

/// `GET path` over plain HTTP/1.0; returns the whole response.
async fn http_get(relay: &Relay, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", relay.addr).as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
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
    init_logging();
    let sshd = Sshd::start().await?;
    let limits = Limits {
        forwards_per_session: 2,
        connections_per_forward: 1,
        ..Limits::default()
    };
    let relay = relay_with(&sshd, limits).await?;
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

    let metrics = http_get(&relay, "/metrics").await?;
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
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = relay_with(
        &sshd,
        Limits {
            sessions_per_ip: 1,
            ..Limits::default()
        },
    )
    .await?;
    let first = login(&relay, &sshd).await?;
    let err = login(&relay, &sshd).await.unwrap_err();
    assert!(is_limit(&err), "{err:?}");
    assert!(
        err.to_string().contains("from one address (127.0.0.1)"),
        "{err}"
    );
    first.close().await;
    let again = wait_for(
        "the place to come back",
        Duration::from_secs(10),
        || async { login(&relay, &sshd).await.ok() },
    )
    .await?;
    again.close().await;

    let full = relay_with(
        &sshd,
        Limits {
            sessions: 1,
            ..Limits::default()
        },
    )
    .await?;
    let _only = login(&full, &sshd).await?;
    let err = login(&full, &sshd).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("serves at most 1 sessions at once and is full"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn healthz_and_metrics_report_sessions_connections_and_bytes() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = relay_with(&sshd, Limits::default()).await?;
    assert!(
        http_get(&relay, "/healthz")
            .await?
            .ends_with("\r\n\r\nok\n")
    );
    let session = login(&relay, &sshd).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let fwd = session
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;
    assert_eq!(exchange(fwd.listen(), &[7u8; 5000]).await?, vec![7u8; 5000]);
    let metrics = wait_for(
        "the connection to be counted closed",
        Duration::from_secs(10),
        || async {
            let text = http_get(&relay, "/metrics").await.ok()?;
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
