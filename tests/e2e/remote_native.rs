//! Remote forwards (`ssh -R`) with the native client, through the in-process relay, to a
//! real OpenSSH sshd: sshd listens on loopback, a client on the server's side connects
//! there, and the relay connects to a service on the relay host (both on this machine,
//! over loopback).

use std::time::Duration;

use anyhow::Result;
use tabtunnel_client::{
    ClientError, ErrorCode, Forward, Reconnect, ReconnectOptions, Session, connect_resilient,
};
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::proxy::CutProxy;
use tabtunnel_e2e::services::{EchoServer, exchange};
use tabtunnel_e2e::{dial, pattern, wait_for};

/// A lab whose relay lets remote forwards reach an echo service on 127.0.0.1, with
/// `sshd_config` lines added.
async fn lab_with_echo(sshd_config: &[&str]) -> Result<(Lab, EchoServer)> {
    let echo = EchoServer::start("127.0.0.1").await?;
    let mut builder =
        Lab::builder().relay_toml(&format!("remote_destinations = [\"{}\"]", echo.addr));
    for line in sshd_config {
        builder = builder.sshd_config(*line);
    }
    Ok((builder.start().await?, echo))
}

/// The port sshd listens on for `forward` (`localhost:PORT`).
fn sshd_port(forward: &Forward) -> u16 {
    let listen = forward.listen();
    let port = listen
        .strip_prefix("localhost:")
        .unwrap_or_else(|| panic!("sshd listens on localhost, not {listen}"));
    port.parse().unwrap()
}

/// Whether a TCP connect to `127.0.0.1:port` is refused now (nothing listens).
async fn refused(port: u16) -> bool {
    match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Err(err) => err.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

async fn remote_forward(session: &Session, spec: &str) -> Result<Forward, ClientError> {
    session.forward(&format!("-R {spec}")).await
}

#[tokio::test]
async fn a_client_on_the_servers_side_reaches_a_service_on_the_relay_host() -> Result<()> {
    let (lab, echo) = lab_with_echo(&[]).await?;
    let session = lab.log_in().await?;
    let forward = remote_forward(&session, &format!("0:{}", echo.addr)).await?;
    // -R 0: sshd picked the port, and the forward says which.
    let port = sshd_port(&forward);
    assert_ne!(port, 0);
    let at_sshd = format!("127.0.0.1:{port}");
    assert_eq!(
        exchange(&at_sshd, b"hello from the server's side").await?,
        b"hello from the server's side"
    );
    // Enough to need the connection's window refilled several times, each way.
    let bulk = pattern(7, 3 << 20);
    assert!(
        exchange(&at_sshd, &bulk).await? == bulk,
        "3 MiB came back intact"
    );
    let stats = forward.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.bytes_up, 28 + (3 << 20));
    assert_eq!(stats.bytes_down, 28 + (3 << 20));
    assert_eq!(forward.kind().to_string(), format!("-R 0:{}", echo.addr));
    Ok(())
}

#[tokio::test]
async fn a_remote_forward_on_a_given_port_is_released_when_closed_and_when_the_session_ends()
-> Result<()> {
    let (lab, echo) = lab_with_echo(&[]).await?;
    let session = lab.log_in().await?;
    let free = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let forward = remote_forward(&session, &format!("{free}:{}", echo.addr)).await?;
    assert_eq!(forward.listen(), format!("localhost:{free}"));
    assert_eq!(
        exchange(&format!("127.0.0.1:{free}"), b"one").await?,
        b"one"
    );
    // Closed: sshd stops listening (cancel-tcpip-forward), the session lives on.
    forward.close().await?;
    wait_for(
        "sshd to stop listening on the closed forward's port",
        Duration::from_secs(10),
        || async { refused(free).await.then_some(()) },
    )
    .await?;
    let again = remote_forward(&session, &format!("0:{}", echo.addr)).await?;
    let port = sshd_port(&again);
    assert_eq!(
        exchange(&format!("127.0.0.1:{port}"), b"two").await?,
        b"two"
    );
    // The session ends: sshd frees the port with it.
    session.close().await;
    wait_for(
        "sshd to free the port when the session ended",
        Duration::from_secs(10),
        || async { refused(port).await.then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_relay_refuses_a_destination_its_operator_did_not_list() -> Result<()> {
    // The default: no destinations, so -R is off.
    let lab = Lab::start().await?;
    let session = lab.log_in().await?;
    let err = remote_forward(&session, "0:127.0.0.1:3000")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Relay {
                code: ErrorCode::DestinationNotAllowed,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "this relay does not allow remote forwards (ssh -R), so it will not connect to 127.0.0.1:3000: its operator has named no destinations for them (remote_destinations)"
    );
    drop(session);
    // Listed ones only.
    let (lab, echo) = lab_with_echo(&[]).await?;
    let session = lab.log_in().await?;
    let err = remote_forward(&session, "0:localhost:3000")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "destination-not-allowed");
    assert_eq!(
        err.to_string(),
        format!(
            "this relay does not connect remote forwards (ssh -R) to localhost:3000; its operator allows only {} (remote_destinations)",
            echo.addr
        )
    );
    // The session is unharmed: an allowed one still opens.
    let forward = remote_forward(&session, &format!("0:{}", echo.addr)).await?;
    assert_eq!(
        exchange(&format!("127.0.0.1:{}", sshd_port(&forward)), b"ok").await?,
        b"ok"
    );
    Ok(())
}

#[tokio::test]
async fn sshd_refusing_to_listen_is_the_forwards_error() -> Result<()> {
    for line in ["AllowTcpForwarding local", "PermitListen 127.0.0.1:1"] {
        let (lab, echo) = lab_with_echo(&[line]).await?;
        let session = lab.log_in().await?;
        let err = remote_forward(&session, &format!("0:{}", echo.addr))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "remote-listen-refused", "{line}: {err}");
        assert!(
            err.to_string().starts_with(
                "the SSH server refused to listen on localhost:0 for the remote forward: it may not allow remote forwards (AllowTcpForwarding), or not on that address and port (PermitListen)"
            ),
            "{line}: {err}"
        );
        // The relay's side was closed with it: as many forwards as before can open.
        let local = session.forward(&format!("0:{}", echo.addr)).await?;
        assert_eq!(
            exchange(local.listen(), b"still fine").await?,
            b"still fine"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_destination_that_is_down_closes_the_servers_client_and_says_why() -> Result<()> {
    let (lab, echo) = lab_with_echo(&[]).await?;
    let session = lab.log_in().await?;
    let forward = remote_forward(&session, &format!("0:{}", echo.addr)).await?;
    let port = sshd_port(&forward);
    drop(echo); // the service stops: the relay's connect is refused
    let addr = format!("127.0.0.1:{port}");
    wait_for(
        "the destination to refuse",
        Duration::from_secs(10),
        || async {
            let back = exchange(&addr, b"anyone?").await.unwrap_or_default();
            back.is_empty().then_some(())
        },
    )
    .await?;
    let stats = wait_for(
        "the forward to count the failure",
        Duration::from_secs(10),
        || async {
            let stats = forward.stats();
            (stats.failures > 0).then_some(stats)
        },
    )
    .await?;
    let last = stats.last_error.unwrap_or_default();
    assert!(
        last.starts_with("the relay could not connect to 127.0.0.1:"),
        "{last}"
    );
    assert_eq!(stats.active, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_websocket_brings_the_remote_forward_back_on_the_same_sshd_port() -> Result<()> {
    let (lab, echo) = lab_with_echo(&[]).await?;
    let proxy = CutProxy::start(lab.relay.addr).await?;
    let reconnect = ReconnectOptions {
        policy: Reconnect {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            give_up_after: Duration::from_secs(60),
        },
        on_state: None,
    };
    let session = connect_resilient(dial(&proxy.ws_url()), lab.login(), reconnect).await?;
    let forward = remote_forward(&session, &format!("0:{}", echo.addr)).await?;
    let port = sshd_port(&forward);
    let at_sshd = format!("127.0.0.1:{port}");
    assert_eq!(exchange(&at_sshd, b"before").await?, b"before");
    assert_eq!(
        proxy.cut(),
        1,
        "the session's WebSocket went through the proxy"
    );
    // The old SSH session ends with its WebSocket, and sshd frees the port; the new one
    // asks for the same port again.
    wait_for(
        "the remote forward to carry data again",
        Duration::from_secs(30),
        || async {
            let back = exchange(&at_sshd, b"after").await.ok()?;
            (back == b"after").then_some(())
        },
    )
    .await?;
    assert_eq!(forward.listen(), format!("localhost:{port}"));
    assert_eq!(session.closed_reason(), None);
    let stats = forward.stats();
    assert_eq!(stats.failures, 0, "{stats:?}");
    session.close().await;
    wait_for("sshd to free the port", Duration::from_secs(10), || async {
        refused(port).await.then_some(())
    })
    .await?;
    Ok(())
}
