//! Places held without credentials: pre-Hello WebSockets, session places, sshd
//! startups, forward ports.
//!
//! The relays here are configured from TOML text, so a test of a new limit fails on an
//! older relay by its behaviour (or by naming a key it does not know), never by not
//! compiling.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tabtunnel_client::{ClientError, ConnectOptions, ErrorCode, Session};
use tabtunnel_e2e::fake_tab::FakeTab;
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::relay::Relay;
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{log_in, sshd_login, wait_for};
use tabtunnel_proto::Frame;

const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-fedcba9876543210";
/// How long [`FakeTab::held`] looks: the events that would end a session have happened
/// before it is asked.
const HELD: Duration = Duration::from_millis(100);

/// A lab whose relay is configured by `toml`, with the tokens of alice and bob if `tokens`,
/// and whose sshd has the `sshd_config` lines.
async fn lab(toml: &str, tokens: bool, sshd_config: &[&str]) -> Result<Lab> {
    let mut lab = Lab::builder().relay_toml(toml);
    if tokens {
        lab = lab.tokens(&format!("alice {ALICE}\nbob {BOB}\n"));
    }
    for line in sshd_config {
        lab = lab.sshd_config(*line);
    }
    lab.start().await
}

/// A hand-made tab's WebSocket to `relay` from the loopback address `from`, nothing sent.
async fn websocket_from(relay: &Relay, from: Ipv4Addr) -> Result<FakeTab> {
    FakeTab::connect_from(&relay.ws_url(), from.into()).await
}

async fn login(relay: &Relay, sshd: &Sshd, token: Option<&str>) -> Result<Session, ClientError> {
    let options = ConnectOptions {
        token: token.map(str::to_owned),
        ..sshd_login(sshd)
    };
    log_in(&relay.ws_url(), options).await
}

fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Finding 3: silent WebSockets from the token holder's own address used to take session
/// places until handshake_timeout (plus a 2 s drain): 10 of them locked out a token holder
/// with 10 places per address. Now they take only waiting places, of which each address
/// has 8: a newer WebSocket makes the oldest silent one give up its place.
#[tokio::test]
async fn silent_websockets_do_not_lock_out_a_token_holder_on_their_address() -> Result<()> {
    let Lab { sshd, relay, .. } = lab(
        "handshake_timeout = \"60s\"\n[limits]\nsessions_per_ip = 10\n",
        true,
        &[],
    )
    .await?;
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(websocket_from(&relay, loopback(1)).await?);
    }
    let session = login(&relay, &sshd, Some(ALICE))
        .await
        .context("alice logs in beside 10 silent WebSockets from her address")?;
    let echo = tabtunnel_e2e::services::EchoServer::start("127.0.0.1").await?;
    let fwd = session
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;
    assert_eq!(
        tabtunnel_e2e::services::exchange(fwd.listen(), b"through sshd").await?,
        b"through sshd"
    );

    // The three oldest made room (for the 9th, the 10th and alice's), each told why in
    // an Error frame; the seven newest are still held open.
    for ws in &mut silent[..3] {
        match ws.next().await? {
            Some(Frame::Error { code, message }) => {
                assert_eq!(code, ErrorCode::Limit);
                assert!(
                    message.contains("sent no Hello")
                        && message.contains("(127.0.0.1)")
                        && message.contains("at most 8 may wait"),
                    "{message}"
                );
            }
            other => bail!("expected an Error frame, got {other:?}"),
        }
    }
    for ws in &mut silent[3..] {
        assert!(
            ws.held(HELD).await,
            "a silent WebSocket within the cap is held"
        );
    }
    session.close().await;
    Ok(())
}

/// Finding 3: 40 silent WebSockets from four addresses filled a relay limited to 40
/// sessions. Now they hold no session place.
#[tokio::test]
async fn silent_websockets_from_several_addresses_do_not_fill_the_relay() -> Result<()> {
    let Lab { sshd, relay, .. } = lab(
        "handshake_timeout = \"60s\"\n[limits]\nsessions = 40\n",
        true,
        &[],
    )
    .await?;
    let mut silent = Vec::new();
    for last in 2..=5 {
        for _ in 0..10 {
            silent.push(websocket_from(&relay, loopback(last)).await?);
        }
    }
    let session = login(&relay, &sshd, Some(ALICE))
        .await
        .context("alice logs in beside 40 silent WebSockets from four addresses")?;
    session.close().await;
    // Each address keeps its 8 newest waiting.
    for per_address in silent.chunks_mut(10) {
        for ws in &mut per_address[2..] {
            assert!(
                ws.held(HELD).await,
                "a silent WebSocket within the cap is held"
            );
        }
    }
    Ok(())
}

/// Finding 3: a failed Hello used to keep its session place through a 2 s drain. Now it
/// never takes one, and ends at once.
#[tokio::test]
async fn a_failed_hello_ends_at_once_and_holds_no_place() -> Result<()> {
    let Lab { sshd, relay, .. } = lab("[limits]\nsessions_per_ip = 1\n", true, &[]).await?;
    // The attacker sends a wrong token and then neither reads nor closes.
    let mut wrong = websocket_from(&relay, loopback(1)).await?;
    wrong.send_hello("sshd", "alice-0123456789abcdeX").await?;
    let session = login(&relay, &sshd, Some(ALICE))
        .await
        .context("the only place per address is free right after a failed Hello")?;
    match wrong.next().await? {
        Some(Frame::Error { code, message }) => {
            assert_eq!(code, ErrorCode::Unauthorized);
            assert!(message.contains("not valid here"), "{message}");
        }
        other => bail!("expected an Error frame, got {other:?}"),
    }
    assert!(
        wrong.next().await?.is_none(),
        "the relay closes after the Error"
    );
    session.close().await;
    Ok(())
}

/// Finding 9: each Hello opened a connection to sshd from the relay's one address, and
/// stayed unauthenticated as long as the tab liked: with 100 such sessions a real user got
/// through sshd's MaxStartups 4 times in 10. Now one address may have 4 sessions logging
/// in (and a target 8), below sshd's default MaxStartups of 10.
#[tokio::test]
async fn sessions_that_never_log_in_do_not_fill_sshds_startups() -> Result<()> {
    // Enough places for the finding's 100 sessions from one address.
    let Lab { sshd, relay, .. } = lab(
        "[limits]\nsessions_per_ip = 200\n",
        false,
        &["MaxStartups 10:30:100"],
    )
    .await?;
    let (mut welcomed, mut busy, mut attacker) = (0, 0, Vec::new());
    for _ in 0..100 {
        let mut ws = websocket_from(&relay, loopback(2)).await?;
        ws.send_hello("sshd", "").await?;
        match ws.welcome().await? {
            Ok(()) => welcomed += 1,
            Err((ErrorCode::Limit, message)) => {
                assert!(
                    message.contains("logins from your address (127.0.0.2) are busy")
                        && message.contains("try again in a few seconds"),
                    "{message}"
                );
                busy += 1;
            }
            Err(other) => bail!("unexpected refusal {other:?}"),
        }
        attacker.push(ws);
    }
    let mut logged_in = 0;
    for _ in 0..10 {
        if let Ok(Ok(session)) =
            tokio::time::timeout(Duration::from_secs(30), login(&relay, &sshd, None)).await
        {
            logged_in += 1;
            session.close().await;
        }
    }
    eprintln!(
        "100 attacker sessions: {welcomed} welcomed, {busy} refused; the user logged in {logged_in} times in 10"
    );
    assert_eq!(logged_in, 10, "the user logs in every time");
    assert_eq!(welcomed, 4, "one address has 4 sessions logging in");
    assert_eq!(busy, 96);
    assert!(
        !sshd.log().contains("MaxStartups"),
        "sshd never dropped a connection:\n{}",
        sshd.log()
    );
    Ok(())
}

/// Finding 9, the per-target cap: attackers at several addresses get at most 8 sessions
/// logging in to one target, below sshd's MaxStartups; a user beyond them is told the
/// logins are busy (sshd would have dropped them at random). A session's first Listen
/// shows its login succeeded: it no longer counts.
#[tokio::test]
async fn a_target_has_at_most_8_sessions_logging_in_and_a_listen_frees_one() -> Result<()> {
    let Lab { sshd, relay, .. } = lab(
        "[limits]\nlogins_per_target = 8\n",
        false,
        &["MaxStartups 10:30:100"],
    )
    .await?;
    let (mut welcomed, mut target_busy) = (Vec::new(), 0);
    for last in 2..=5 {
        for _ in 0..4 {
            let mut ws = websocket_from(&relay, loopback(last)).await?;
            ws.send_hello("sshd", "").await?;
            match ws.welcome().await? {
                Ok(()) => welcomed.push(ws),
                Err((ErrorCode::Limit, message)) => {
                    assert!(
                        message.contains("logins to target \"sshd\" are busy")
                            && message.contains("try again in a few seconds"),
                        "{message}"
                    );
                    target_busy += 1;
                }
                Err(other) => bail!("unexpected refusal {other:?}"),
            }
        }
    }
    assert_eq!((welcomed.len(), target_busy), (8, 8));
    assert_eq!(sshd.open_connections(), 8);
    let err = login(&relay, &sshd, None).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("logins to target \"sshd\" are busy"),
        "{err}"
    );
    // One session shows progress: its place goes to the next login.
    welcomed[0].listening("127.0.0.1").await?;
    let session = login(&relay, &sshd, None)
        .await
        .context("a Listen frees a login place")?;
    session.close().await;
    for ws in &mut welcomed {
        assert!(ws.held(HELD).await, "no session is ended by the cap");
    }
    assert!(!sshd.log().contains("MaxStartups"), "{}", sshd.log());
    Ok(())
}

/// Finding 9: a session stops counting as logging in after login_grace, and is not ended
/// for it: to the relay, a user who logged in and has not added a forward yet looks the
/// same as this silent session, and keeps it.
#[tokio::test]
async fn a_session_counts_as_logging_in_only_for_the_login_grace() -> Result<()> {
    let Lab { sshd, relay, .. } = lab(
        "login_grace = \"2s\"\n[limits]\nlogins_per_target = 1\n",
        false,
        &[],
    )
    .await?;
    let mut first = websocket_from(&relay, loopback(1)).await?;
    first.send_hello("sshd", "").await?;
    assert_eq!(first.welcome().await?, Ok(()));
    let mut second = websocket_from(&relay, loopback(2)).await?;
    second.send_hello("sshd", "").await?;
    match second.welcome().await? {
        Err((ErrorCode::Limit, message)) => assert!(
            message.contains("logins to target \"sshd\" are busy"),
            "{message}"
        ),
        other => bail!("a second login within the grace: {other:?}"),
    }
    let user = wait_for(
        "the login place after the grace",
        Duration::from_secs(20),
        || async { login(&relay, &sshd, None).await.ok() },
    )
    .await?;
    assert!(first.held(HELD).await, "the first session goes on");
    first.listening("127.0.0.1").await?;
    let echo = tabtunnel_e2e::services::EchoServer::start("127.0.0.1").await?;
    let fwd = user
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;
    assert_eq!(
        tabtunnel_e2e::services::exchange(fwd.listen(), b"through sshd").await?,
        b"through sshd"
    );
    user.close().await;
    Ok(())
}

/// Finding 8's per-token cap: one token holder may have 10 sessions, from any addresses;
/// another holder is not affected.
#[tokio::test]
async fn a_token_holder_has_at_most_10_sessions() -> Result<()> {
    let Lab {
        sshd: _sshd, relay, ..
    } = lab("", true, &[]).await?;
    let mut alice = Vec::new();
    for i in 0..10 {
        let mut ws = websocket_from(&relay, loopback(2 + i % 2)).await?;
        ws.send_hello("sshd", ALICE).await?;
        if let Err(refusal) = ws.welcome().await? {
            bail!("alice's session {} was refused: {refusal:?}", i + 1);
        }
        // Shows progress, so the session no longer counts as logging in.
        ws.listening("127.0.0.1").await?;
        alice.push(ws);
    }
    let mut eleventh = websocket_from(&relay, loopback(4)).await?;
    eleventh.send_hello("sshd", ALICE).await?;
    match eleventh.welcome().await? {
        Err((ErrorCode::Limit, message)) => assert!(
            message.contains("at most 10 sessions may use one access token")
                && message.contains("limits.sessions_per_user"),
            "{message}"
        ),
        other => bail!("alice's 11th session: {other:?}"),
    }
    let mut bob = websocket_from(&relay, loopback(4)).await?;
    bob.send_hello("sshd", BOB).await?;
    assert_eq!(bob.welcome().await?, Ok(()), "bob is not affected");
    for ws in &mut alice {
        assert!(ws.held(HELD).await, "alice's sessions go on");
    }
    Ok(())
}

/// A refused Listen costs no forward and proves nothing, so it must not end a session's
/// count as logging in: otherwise anyone could free the place at once and hold sshd's
/// unauthenticated connections past `logins_per_target`.
#[tokio::test]
async fn a_refused_listen_does_not_free_a_login_place() -> Result<()> {
    let Lab {
        sshd: _sshd, relay, ..
    } = lab("[limits]\nlogins_per_target = 1\n", false, &[]).await?;
    let mut first = websocket_from(&relay, loopback(1)).await?;
    first.send_hello("sshd", "").await?;
    assert_eq!(first.welcome().await?, Ok(()));
    let refused = Frame::Listen {
        forward: 1,
        bind: "not-an-address".into(),
        port: 0,
    };
    first.send(&refused).await?;
    match first.next().await? {
        Some(Frame::ListenFailed { .. }) => {}
        other => bail!("expected ListenFailed, got {other:?}"),
    }
    let mut second = websocket_from(&relay, loopback(2)).await?;
    second.send_hello("sshd", "").await?;
    let (code, message) = second
        .welcome()
        .await?
        .err()
        .context("the first session still counts as logging in")?;
    assert_eq!(code, ErrorCode::Limit, "{message}");
    assert!(message.contains("busy"), "{message}");
    // A Listen that opens a forward does end the count.
    first.listening("127.0.0.1").await?;
    let mut third = websocket_from(&relay, loopback(3)).await?;
    third.send_hello("sshd", "").await?;
    assert_eq!(third.welcome().await?, Ok(()));
    Ok(())
}
