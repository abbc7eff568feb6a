//! Liveness: a dead SSH server or relay is noticed and named, a tab that stops
//! answering loses its listeners, a relay shutdown and a login cut short say so.

use std::time::Duration;

use anyhow::{Context, Result};
use tabtunnel_client::{Auth, ConnectOptions, Credentials, Keepalive, PromptCallback, Session};
use tabtunnel_e2e::fake_tab::FakeTab;
use tabtunnel_e2e::lab::{Lab, echo_forward};
use tabtunnel_e2e::relay::RelayProcess;
use tabtunnel_e2e::services::exchange;
use tabtunnel_e2e::sshd::{Sshd, signal};
use tabtunnel_e2e::{init_logging, log_in, sshd_login, wait_until_port_free};

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
    Ok(log_in(
        ws_url,
        ConnectOptions {
            keepalive,
            auth,
            ..sshd_login(sshd)
        },
    )
    .await?)
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
    let Lab { sshd, relay, .. } = Lab::start().await?;
    let session = login(&relay.ws_url(), &sshd, Some(FAST), password(&sshd)).await?;
    let (_echo, fwd) = echo_forward(&session).await?;
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

#[tokio::test]
async fn a_frozen_relay_is_noticed_by_the_keepalive() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let target = format!("sshd={}", sshd.address());
    let relay = RelayProcess::start(&["--target", &target], "warn").await?;
    let ws_url = relay.ws_url();
    let session = login(&ws_url, &sshd, Some(FAST), password(&sshd)).await?;
    let pid = relay.pid()?;
    signal(pid, "STOP")?;
    let reason = ended(&session).await;
    signal(pid, "KILL")?;
    let reason = reason?;
    assert!(reason.contains("ServerAliveInterval"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn the_relay_ends_a_tab_that_stops_answering_pings() -> Result<()> {
    // Without parking: a lost session's forwards are freed at once (reconnect_native
    // tests what resume_grace keeps).
    let lab = Lab::builder()
        .configure(|config| {
            config.ping_interval = Duration::from_millis(200);
            config.resume_grace = Duration::ZERO;
        })
        .start()
        .await?;
    // A tab that says Hello, asks for a listener, then never reads again (a closed
    // laptop lid): it never answers the relay's pings.
    let mut ws = FakeTab::hello(&lab.relay.ws_url(), "sshd", "").await?;
    let address = ws.listening("").await?;
    // From here on nothing reads `ws`, so no pong goes back.
    wait_until_port_free(&address).await?;
    drop(ws);
    Ok(())
}

#[tokio::test]
async fn a_relay_shutdown_is_named_to_the_tab() -> Result<()> {
    let Lab { sshd, relay, .. } = Lab::start().await?;
    let session = login(&relay.ws_url(), &sshd, None, password(&sshd)).await?;
    relay.shutdown().await?;
    let reason = ended(&session).await?;
    assert!(reason.contains("the relay is shutting down"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn a_login_the_server_cuts_short_says_why() -> Result<()> {
    let Lab { sshd, relay, .. } = Lab::builder()
        .sshd_config("LoginGraceTime 2")
        .start()
        .await?;
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
