//! `ssh -L` semantics as the classic port-forwarding guide describes them, each against
//! a real OpenSSH sshd configured for the case.

use std::time::Duration;

use anyhow::Result;
use tabtunnel_client::{ClientError, ErrorCode, ForwardOptions, Session};
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::relay::Relay;
use tabtunnel_e2e::services::{BulkServer, EchoServer, exchange};
use tabtunnel_e2e::sshd::{Sshd, free_port};
use tabtunnel_e2e::{log_in, sshd_login};
use tabtunnel_e2e::{pattern, sha256_hex, wait_for, wait_until_port_free};
use tokio::io::AsyncReadExt;

async fn login(relay: &Relay, sshd: &Sshd) -> Result<Session> {
    Ok(log_in(&relay.ws_url(), sshd_login(sshd)).await?)
}

/// A lab whose sshd has the `extra` config lines, and a session logged in through it.
async fn setup(extra: &[&str]) -> Result<(Sshd, Relay, Session)> {
    let mut lab = Lab::builder();
    for line in extra {
        lab = lab.sshd_config(*line);
    }
    let Lab { sshd, relay, .. } = lab.start().await?;
    let session = login(&relay, &sshd).await?;
    Ok((sshd, relay, session))
}

/// Connects through `listen` and expects the connection to end at once, unanswered.
async fn expect_closed_at_once(listen: &str) -> Result<()> {
    let mut stream = tokio::net::TcpStream::connect(listen).await?;
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await?;
    anyhow::ensure!(
        matches!(read, Ok(0) | Err(_)),
        "the TCP client was answered: {read:?}"
    );
    Ok(())
}

#[tokio::test]
async fn forwards_through_the_server_to_a_host_only_it_reaches() -> Result<()> {
    // ssh -L 1100:mail.example.com:110 other.example.com: the destination is another
    // host; here a service on 127.0.0.2 that only sshd connects to.
    let (sshd, _relay, session) = setup(&[]).await?;
    assert_ne!(
        sshd.port, 22,
        "the target's SSH port comes from the relay config"
    );
    let mail = EchoServer::start("127.0.0.2").await?;
    let fwd = session
        .forward(&format!("0:127.0.0.2:{}", mail.addr.port()))
        .await?;
    assert_eq!(
        exchange(fwd.listen(), b"+OK POP3 ready").await?,
        b"+OK POP3 ready"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_come_and_go_while_another_carries_traffic() -> Result<()> {
    const SIZE: usize = 24 << 20;
    let (_sshd, _relay, session) = setup(&[]).await?;
    let mut bulk = BulkServer::start(SIZE, 1).await?;
    let busy = session
        .forward(&format!("0:127.0.0.1:{}", bulk.addr.port()))
        .await?;
    let upload = pattern(2, SIZE);
    let listen = busy.listen().to_owned();
    let transfer = tokio::spawn({
        let upload = upload.clone();
        async move { exchange(&listen, &upload).await }
    });
    wait_for(
        "the transfer to be under way",
        Duration::from_secs(20),
        || async { (busy.stats().bytes_down > 1 << 20).then_some(()) },
    )
    .await?;

    let echo = EchoServer::start("127.0.0.1").await?;
    let spec = format!("0:127.0.0.1:{}", echo.addr.port());
    let (a, b) = (session.forward(&spec).await?, session.forward(&spec).await?);
    assert_eq!(exchange(a.listen(), b"a").await?, b"a");
    let b_listen = b.listen().to_owned();
    b.close().await?;
    wait_until_port_free(&b_listen).await?;
    assert_eq!(exchange(a.listen(), b"a again").await?, b"a again");

    // The same listen port twice in one session: refused, and the message says so.
    let port = a
        .listen()
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default();
    let err = session
        .forward(&format!("{port}:127.0.0.1:{}", echo.addr.port()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Relay {
                code: ErrorCode::DuplicateForward,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("this session already forwards 127.0.0.1:{port}")),
        "{err}"
    );
    a.close().await?;

    let received = transfer.await??;
    let report = bulk.report().await.expect("report");
    assert_eq!(
        sha256_hex(&received),
        bulk.sent_sha256,
        "the busy forward's download survived"
    );
    assert_eq!(
        report.received_sha256,
        sha256_hex(&upload),
        "and its upload"
    );
    Ok(())
}

#[tokio::test]
async fn wildcard_and_other_binds_need_the_operator_setting() -> Result<()> {
    let lab = Lab::start().await?;
    let (sshd, strict) = (&lab.sshd, &lab.relay);
    let echo = EchoServer::start("127.0.0.1").await?;
    let dest = format!("127.0.0.1:{}", echo.addr.port());

    let session = login(strict, sshd).await?;
    for bind in ["*", "0.0.0.0"] {
        let err = session
            .forward(&format!("{bind}:0:{dest}"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Relay {
                    code: ErrorCode::BindNotAllowed,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("allowed_binds setting (--allow-bind)"),
            "{err}"
        );
    }

    let gateway = lab
        .another_relay(|config| config.allowed_binds.push("0.0.0.0".parse().unwrap()))
        .await?;
    let session = login(&gateway, sshd).await?;
    let fwd = session.forward(&format!("*:0:{dest}")).await?;
    assert!(fwd.listen().starts_with("0.0.0.0:"), "{}", fwd.listen());
    let port = fwd
        .listen()
        .rsplit_once(':')
        .map(|(_, p)| p)
        .unwrap_or_default();
    assert_eq!(
        exchange(&format!("127.0.0.1:{port}"), b"gateway").await?,
        b"gateway"
    );
    Ok(())
}

#[tokio::test]
async fn ipv6_addresses_in_brackets() -> Result<()> {
    let (_sshd, _relay, session) = setup(&[]).await?;
    let echo6 = EchoServer::start("::1").await?;
    let fwd = session
        .forward(&format!("[::1]:0:[::1]:{}", echo6.addr.port()))
        .await?;
    assert!(fwd.listen().starts_with("[::1]:"), "{}", fwd.listen());
    assert_eq!(exchange(fwd.listen(), b"over v6").await?, b"over v6");
    Ok(())
}

#[tokio::test]
async fn a_server_that_forbids_forwarding_says_so_and_closes_the_client_at_once() -> Result<()> {
    let (_sshd, _relay, session) = setup(&["AllowTcpForwarding no"]).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let spec = format!("0:127.0.0.1:{}", echo.addr.port());
    let fwd = session.forward(&spec).await?;
    expect_closed_at_once(fwd.listen()).await?;
    let stats = fwd.stats();
    assert_eq!(stats.failures, 1);
    let why = stats.last_error.unwrap_or_default();
    assert!(
        why.contains("the SSH server does not allow forwarding to that destination"),
        "{why}"
    );
    // The forward stays up: the next client is refused the same way.
    expect_closed_at_once(fwd.listen()).await?;
    assert_eq!(fwd.stats().failures, 2);

    // Checked when added, the same refusal fails the forward itself.
    let err = session
        .forward_with(
            &spec,
            ForwardOptions {
                check_destination: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ChannelRefused { .. }), "{err:?}");
    assert!(
        err.to_string().contains("does not allow forwarding"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn permit_open_allows_only_its_destinations() -> Result<()> {
    let allowed = EchoServer::start("127.0.0.1").await?;
    let other = EchoServer::start("127.0.0.1").await?;
    let permit = format!("PermitOpen 127.0.0.1:{}", allowed.addr.port());
    let (_sshd, _relay, session) = setup(&[&permit]).await?;
    let ok = session
        .forward(&format!("0:127.0.0.1:{}", allowed.addr.port()))
        .await?;
    assert_eq!(exchange(ok.listen(), b"permitted").await?, b"permitted");
    let denied = session
        .forward(&format!("0:127.0.0.1:{}", other.addr.port()))
        .await?;
    expect_closed_at_once(denied.listen()).await?;
    let why = denied.stats().last_error.unwrap_or_default();
    assert!(why.contains("does not allow forwarding"), "{why}");
    Ok(())
}

#[tokio::test]
async fn check_on_add_reports_an_unreachable_destination_before_listening() -> Result<()> {
    let (_sshd, _relay, session) = setup(&[]).await?;
    let closed = free_port()?;
    let err = session
        .forward_with(
            &format!("0:127.0.0.1:{closed}"),
            ForwardOptions {
                check_destination: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("refused the channel to 127.0.0.1:{closed}")),
        "{err}"
    );
    assert!(err.to_string().contains("could not connect"), "{err}");
    // Unchecked, the same forward opens and reports per connection instead.
    let fwd = session.forward(&format!("0:127.0.0.1:{closed}")).await?;
    expect_closed_at_once(fwd.listen()).await?;
    // A reachable destination passes the check.
    let echo = EchoServer::start("127.0.0.1").await?;
    let checked = session
        .forward_with(
            &format!("0:127.0.0.1:{}", echo.addr.port()),
            ForwardOptions {
                check_destination: true,
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(exchange(checked.listen(), b"checked").await?, b"checked");
    Ok(())
}
