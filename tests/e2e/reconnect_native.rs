//! Reconnect that keeps ports, end to end: the native client's `connect_resilient`, the
//! relay (in-process, or its binary when it restarts), real sshd, and a TCP proxy between
//! client and relay that the test cuts. A dropped WebSocket, a restarted sshd and a
//! restarted relay each bring the forwards back on their ports, carrying data, while the
//! connections that were open end; a network gone silent is noticed by the keepalive and
//! the relay's still-live session taken over; the relay keeps a lost session's ports from
//! others for `resume_grace` and frees them after; a wrong secret resumes nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::SinkExt;
use tabtunnel_client::{
    ClientError, ConnectOptions, ConnectionState, Credentials, HostKeyPolicy, PromptCallback,
    Reconnect, ReconnectOptions, Session, connect_resilient,
};
use tabtunnel_e2e::fake_tab::FakeTab;
use tabtunnel_e2e::lab::{Lab, echo_forward};
use tabtunnel_e2e::proxy::CutProxy;
use tabtunnel_e2e::relay::{Relay, RelayProcess};
use tabtunnel_e2e::services::{EchoServer, exchange};
use tabtunnel_e2e::{
    dial, init_logging, log_in, sshd_key_login, sshd_login, wait_for, wait_until_port_free,
};
use tabtunnel_proto::{ErrorCode, Frame, ResumeSecret, VERSION, encode_to_bytes};
use tabtunnel_relay::demo::{DemoOptions, DemoServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Quick retries for tests: 100 ms doubling to 1 s, for up to a minute.
const FAST: Reconnect = Reconnect {
    first_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
    give_up_after: Duration::from_secs(60),
};

/// How long a reconnect may take on a busy 2-core machine.
const BACK: Duration = Duration::from_secs(30);

/// Every state the session reported, in order.
#[derive(Clone, Default)]
struct States(Arc<Mutex<Vec<ConnectionState>>>);

impl States {
    fn options(&self, policy: Reconnect) -> ReconnectOptions {
        let states = self.0.clone();
        ReconnectOptions {
            policy,
            on_state: Some(Arc::new(move |state| {
                states.lock().expect("states").push(state);
            })),
        }
    }

    fn all(&self) -> Vec<ConnectionState> {
        self.0.lock().expect("states").clone()
    }

    /// Waits until `want` has been reported `n` times in all.
    async fn reached(&self, n: usize, want: impl Fn(&ConnectionState) -> bool) -> Result<()> {
        wait_for("the session's state", BACK, || async {
            (self.all().iter().filter(|s| want(s)).count() >= n).then_some(())
        })
        .await
        .with_context(|| format!("states so far: {:?}", self.all()))
    }
}

fn restored(resumed: bool) -> impl Fn(&ConnectionState) -> bool {
    move |s| *s == ConnectionState::Restored { resumed }
}

/// A TCP connection through `listen` that has echoed once.
async fn open_connection(listen: &str) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(listen).await?;
    stream.write_all(b"open").await?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(BACK, stream.read_exact(&mut buf)).await??;
    assert_eq!(&buf, b"open");
    Ok(stream)
}

/// Whether `stream` was ended (EOF or reset) within the deadline: never resumed.
async fn ended(stream: &mut TcpStream) -> Result<()> {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(BACK, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    anyhow::ensure!(
        read.is_ok(),
        "a connection open at the drop was left hanging"
    );
    Ok(())
}

async fn metrics_show(lab: &Lab, line: &str) -> Result<()> {
    wait_for(line, BACK, || async {
        let metrics = lab.relay.get("/metrics").await.ok()?;
        metrics.contains(line).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_websocket_comes_back_on_the_same_ports_and_open_connections_end() -> Result<()> {
    let lab = Lab::start().await?;
    let proxy = CutProxy::start(lab.relay.addr).await?;
    let states = States::default();
    let session =
        connect_resilient(dial(&proxy.ws_url()), lab.login(), states.options(FAST)).await?;
    let (_echo, fwd) = echo_forward(&session).await?;
    let (_echo2, fwd2) = echo_forward(&session).await?;
    let (listen, listen2) = (fwd.listen().to_owned(), fwd2.listen().to_owned());
    assert_eq!(exchange(&listen, b"before").await?, b"before");
    let mut open = open_connection(&listen).await?;

    assert_eq!(
        proxy.cut(),
        1,
        "the session's WebSocket went through the proxy"
    );
    states.reached(1, restored(true)).await?;
    ended(&mut open).await?;
    // The same handles, the same addresses, carrying data again.
    assert_eq!(fwd.listen(), listen);
    assert_eq!(exchange(&listen, b"after").await?, b"after");
    assert_eq!(exchange(&listen2, b"second").await?, b"second");
    let stats = fwd.stats();
    assert_eq!(stats.connections, 3, "counters carried on: {stats:?}");
    wait_for("no connection open", BACK, || async {
        (fwd.stats().active == 0).then_some(())
    })
    .await?;
    let all = states.all();
    assert_eq!(all[0], ConnectionState::Live);
    assert!(
        matches!(&all[1], ConnectionState::Reconnecting { attempt: 1, .. }),
        "{all:?}"
    );
    assert_eq!(session.closed_reason(), None);
    metrics_show(&lab, "tabtunnel_sessions_resumed_total 1").await?;
    metrics_show(&lab, "tabtunnel_sessions_parked_total 1").await?;

    // Twice in a row works too: each Welcome gives the next secret.
    proxy.cut();
    states.reached(2, restored(true)).await?;
    assert_eq!(exchange(&listen, b"third time").await?, b"third time");
    // A forward closed while connected stays closed after a reconnect.
    fwd2.close().await?;
    wait_until_port_free(&listen2).await?;
    proxy.cut();
    states.reached(3, restored(true)).await?;
    assert_eq!(exchange(&listen, b"fourth").await?, b"fourth");
    wait_until_port_free(&listen2).await?;

    // The user's own close ends it for good: no reconnect, the ports free at once.
    let before = states.all().len();
    session.close().await;
    wait_until_port_free(&listen).await?;
    assert_eq!(states.all().len(), before, "{:?}", states.all());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sshd_brings_the_forwards_back_on_the_same_ports() -> Result<()> {
    let mut lab = Lab::start().await?;
    let states = States::default();
    let session =
        connect_resilient(dial(&lab.relay.ws_url()), lab.login(), states.options(FAST)).await?;
    let (_echo, fwd) = echo_forward(&session).await?;
    let listen = fwd.listen().to_owned();
    let mut open = open_connection(&listen).await?;

    lab.sshd.restart().await?;
    states.reached(1, restored(true)).await?;
    ended(&mut open).await?;
    assert_eq!(exchange(&listen, b"after sshd").await?, b"after sshd");
    assert_eq!(session.closed_reason(), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_process_gets_the_forwards_on_the_same_ports() -> Result<()> {
    init_logging();
    let lab = Lab::start().await?;
    let target = format!("sshd={}", lab.sshd.address());
    let args = ["--target", target.as_str()];
    let relay = RelayProcess::start(&args, "warn").await?;
    let addr = relay.addr.clone();
    let states = States::default();
    let session =
        connect_resilient(dial(&relay.ws_url()), lab.login(), states.options(FAST)).await?;
    let (_echo, fwd) = echo_forward(&session).await?;
    let listen = fwd.listen().to_owned();
    let mut open = open_connection(&listen).await?;

    relay.kill().await?;
    ended(&mut open).await?;
    let _relay = RelayProcess::start_at(&addr, &args, "warn", None).await?;
    // A new process knows no parked session: a fresh one, listening on the same ports.
    states.reached(1, restored(false)).await?;
    assert_eq!(exchange(&listen, b"after relay").await?, b"after relay");
    assert_eq!(fwd.listen(), listen);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_sessions_ports_are_reserved_for_the_grace_and_free_after() -> Result<()> {
    let lab = Lab::builder()
        .configure(|config| config.resume_grace = Duration::from_secs(3))
        .start()
        .await?;
    let proxy = CutProxy::start(lab.relay.addr).await?;
    // A session that never comes back (no reconnect), lost with its forward.
    let lost = log_in(&proxy.ws_url(), lab.login()).await?;
    let (echo, fwd) = echo_forward(&lost).await?;
    let listen = fwd.listen().to_owned();
    let port = listen.rsplit_once(':').context("port")?.1.to_owned();
    proxy.cut();
    tokio::time::timeout(BACK, lost.closed()).await?;
    metrics_show(&lab, "tabtunnel_sessions_parked_now 1").await?;

    // A second session cannot take the reserved port.
    let other = lab.log_in().await?;
    let spec = format!("{port}:{}", echo.addr);
    match other.forward(&spec).await {
        Err(ClientError::Relay {
            code: ErrorCode::PortInUse,
            ..
        }) => {}
        other => anyhow::bail!("expected port-in-use, got {other:?}"),
    }
    // After the grace it is free, and the second session can have it.
    wait_until_port_free(&listen).await?;
    let taken = other.forward(&spec).await?;
    assert_eq!(taken.listen(), listen);
    assert_eq!(exchange(&listen, b"mine now").await?, b"mine now");
    metrics_show(&lab, "tabtunnel_parked_expired_total 1").await?;
    metrics_show(&lab, "tabtunnel_sessions_parked_now 0").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_resume_secret_resumes_nothing() -> Result<()> {
    let lab = Lab::start().await?;
    let proxy = CutProxy::start(lab.relay.addr).await?;
    let lost = log_in(&proxy.ws_url(), lab.login()).await?;
    let (_echo, fwd) = echo_forward(&lost).await?;
    let port: u16 = fwd.listen().rsplit_once(':').context("port")?.1.parse()?;
    proxy.cut();
    tokio::time::timeout(BACK, lost.closed()).await?;
    metrics_show(&lab, "tabtunnel_sessions_parked_now 1").await?;

    // A tab that guesses a secret gets a fresh session, and the port stays reserved.
    let mut tab = FakeTab::connect(&lab.relay.ws_url()).await?;
    tab.ws
        .send(Message::Binary(encode_to_bytes(&Frame::Hello {
            version: VERSION,
            target: "sshd".into(),
            token: String::new(),
            resume: Some(ResumeSecret([0x5a; 32])),
        })))
        .await?;
    let welcome = tab.next().await?;
    assert!(
        matches!(
            welcome,
            Some(Frame::Welcome {
                resumed: false,
                resume: Some(_),
                ..
            })
        ),
        "{welcome:?}"
    );
    tab.send(&Frame::Listen {
        forward: 1,
        bind: "127.0.0.1".into(),
        port,
    })
    .await?;
    let answer = tab.next().await?;
    assert!(
        matches!(
            answer,
            Some(Frame::ListenFailed {
                code: ErrorCode::PortInUse,
                ..
            })
        ),
        "{answer:?}"
    );
    metrics_show(&lab, "tabtunnel_sessions_parked_now 1").await?;
    metrics_show(&lab, "tabtunnel_sessions_resumed_total 0").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_stops_the_reconnect_with_the_host_key_error() -> Result<()> {
    let mut lab = Lab::start().await?;
    let states = States::default();
    let session =
        connect_resilient(dial(&lab.relay.ws_url()), lab.login(), states.options(FAST)).await?;
    let first_key = lab.sshd.host_key_fingerprint.clone();
    lab.sshd.restart_with_new_host_key().await?;
    let reason = tokio::time::timeout(BACK, session.closed()).await?;
    assert!(
        reason.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") && reason.contains(&first_key),
        "{reason}"
    );
    states
        .reached(
            1,
            |s| matches!(s, ConnectionState::GaveUp { reason } if reason.contains("HAS CHANGED")),
        )
        .await?;
    assert!(
        !states
            .all()
            .iter()
            .any(|s| matches!(s, ConnectionState::Restored { .. }))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_never_comes_back_is_given_up_on() -> Result<()> {
    let Lab { sshd, relay, .. } = Lab::start().await?;
    let states = States::default();
    let policy = Reconnect {
        give_up_after: Duration::from_secs(2),
        ..FAST
    };
    let session = connect_resilient(
        dial(&relay.ws_url()),
        sshd_login(&sshd),
        states.options(policy),
    )
    .await?;
    relay.shutdown().await?;
    let reason = tokio::time::timeout(BACK, session.closed()).await?;
    assert!(reason.starts_with("gave up reconnecting after"), "{reason}");
    assert!(reason.contains("cannot reach the relay"), "{reason}");
    let all = states.all();
    assert!(
        matches!(all.last(), Some(ConnectionState::GaveUp { .. })),
        "{all:?}"
    );
    let attempts = all
        .iter()
        .filter(|s| matches!(s, ConnectionState::Reconnecting { .. }))
        .count();
    assert!(attempts >= 2, "{all:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_network_is_noticed_by_the_keepalive_and_the_live_session_taken_over() -> Result<()>
{
    // One session per address: the old one, still live, must give its place up first.
    let lab = Lab::builder()
        .configure(|config| config.limits.sessions_per_ip = 1)
        .start()
        .await?;
    let proxy = CutProxy::start(lab.relay.addr).await?;
    let states = States::default();
    let mut login = lab.login();
    login.keepalive = Some(tabtunnel_client::Keepalive {
        interval: Duration::from_secs(1),
        count_max: 2,
    });
    let session = connect_resilient(dial(&proxy.ws_url()), login, states.options(FAST)).await?;
    let (_echo, fwd) = echo_forward(&session).await?;
    let listen = fwd.listen().to_owned();
    assert_eq!(exchange(&listen, b"before").await?, b"before");
    // The old WebSocket goes silent; the relay still thinks it live (it pings every 20 s).
    proxy.freeze();
    states.reached(1, restored(true)).await?;
    let all = states.all();
    assert!(
        matches!(&all[1], ConnectionState::Reconnecting { reason, .. } if reason.contains("ServerAliveInterval")),
        "{all:?}"
    );
    assert_eq!(exchange(&listen, b"after").await?, b"after");
    metrics_show(&lab, "tabtunnel_sessions_resumed_total 1").await?;
    Ok(())
}

/// The login to the demo SSH server (target "demo") with `auth`, expecting its host key.
fn demo_login(demo: &DemoServer, auth: Credentials) -> ConnectOptions {
    ConnectOptions {
        keepalive: None,
        token: None,
        target: "demo".into(),
        username: demo.username.clone(),
        auth,
        host_key: HostKeyPolicy {
            pinned: vec![],
            expected: Some(demo.host_key_fingerprint.clone()),
            ask: None,
            known_hosts: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_login_asks_the_prompt_callback_again_when_the_server_wants_it() -> Result<()> {
    init_logging();
    // The demo SSH server asks its password and a code through keyboard-interactive.
    let demo = DemoServer::start_with(DemoOptions {
        second_factor: Some("4242".into()),
        ..DemoOptions::default()
    })
    .await?;
    let relay = Relay::start(&[("demo", &demo.ssh_addr.to_string())]).await?;
    let proxy = CutProxy::start(relay.addr).await?;
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let password = demo.password.clone();
    let prompt: PromptCallback = Box::new({
        let asked = asked.clone();
        move |_request| {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let answers = Some(vec![password.clone(), "4242".to_owned()]);
            Box::pin(async move { answers })
        }
    });
    let options = demo_login(
        &demo,
        Credentials {
            prompt: Some(prompt),
            ..Credentials::default()
        },
    );
    let states = States::default();
    let session = connect_resilient(dial(&proxy.ws_url()), options, states.options(FAST)).await?;
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 1);
    proxy.cut();
    states
        .reached(1, |s| matches!(s, ConnectionState::Restored { .. }))
        .await?;
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the code was asked again"
    );
    assert_eq!(session.closed_reason(), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_the_server_no_longer_takes_is_asked_for_through_the_prompt() -> Result<()> {
    let mut demo = DemoServer::start().await?;
    let relay = Relay::start(&[("demo", &demo.ssh_addr.to_string())]).await?;
    let proxy = CutProxy::start(relay.addr).await?;
    // What the user would type when asked: the password as it is now.
    let typed = Arc::new(Mutex::new(demo.password.clone()));
    let asked = Arc::new(Mutex::new(Vec::<String>::new()));
    let prompt: PromptCallback = Box::new({
        let (typed, asked) = (typed.clone(), asked.clone());
        move |request| {
            let questions: Vec<String> = request.prompts.iter().map(|p| p.prompt.clone()).collect();
            asked.lock().expect("asked").extend(questions);
            let answer = typed.lock().expect("typed").clone();
            Box::pin(async move { Some(vec![answer]) })
        }
    });
    let options = demo_login(
        &demo,
        Credentials {
            password: Some(demo.password.clone()),
            prompt: Some(prompt),
            ..Credentials::default()
        },
    );
    let states = States::default();
    let session = connect_resilient(dial(&proxy.ws_url()), options, states.options(FAST)).await?;
    assert!(
        asked.lock().expect("asked").is_empty(),
        "the password held was enough"
    );

    // The user changes their password while the link is down.
    *typed.lock().expect("typed") = demo.change_password();
    proxy.cut();
    states
        .reached(1, |s| matches!(s, ConnectionState::Restored { .. }))
        .await?;
    let asked = asked.lock().expect("asked").clone();
    assert_eq!(asked.len(), 1, "asked once: {asked:?}");
    assert!(asked[0].to_lowercase().contains("password"), "{asked:?}");
    assert_eq!(session.closed_reason(), None);
    let all = states.all();
    assert!(
        all.iter().any(|s| matches!(s, ConnectionState::Reconnecting { reason, .. } if reason.contains("authentication failed"))),
        "the refused try was reported: {all:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_the_server_no_longer_takes_end_the_session_at_once() -> Result<()> {
    let lab = Lab::start().await?;
    let proxy = CutProxy::start(lab.relay.addr).await?;
    let states = States::default();
    let session = connect_resilient(
        dial(&proxy.ws_url()),
        sshd_key_login(&lab.sshd),
        states.options(FAST),
    )
    .await?;
    // The key is no longer authorized (an operator revoked it) when the link drops.
    std::fs::write(lab.sshd.dir().join("authorized_keys"), "")?;
    proxy.cut();
    let reason = tokio::time::timeout(BACK, session.closed()).await?;
    assert!(reason.contains("authentication failed"), "{reason}");
    let all = states.all();
    let attempts = all
        .iter()
        .filter(|s| matches!(s, ConnectionState::Reconnecting { .. }))
        .count();
    assert_eq!(
        attempts, 1,
        "no second try with refused credentials: {all:?}"
    );
    assert!(
        matches!(all.last(), Some(ConnectionState::GaveUp { reason }) if reason.contains("authentication failed")),
        "{all:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_while_reconnecting_stops_for_good() -> Result<()> {
    let lab = Lab::builder()
        .configure(|config| config.resume_grace = Duration::from_secs(2))
        .start()
        .await?;
    let proxy = CutProxy::start(lab.relay.addr).await?;
    let states = States::default();
    let session =
        connect_resilient(dial(&proxy.ws_url()), lab.login(), states.options(FAST)).await?;
    let (_echo, fwd) = echo_forward(&session).await?;
    let listen = fwd.listen().to_owned();
    proxy.set_down(true);
    states
        .reached(2, |s| matches!(s, ConnectionState::Reconnecting { .. }))
        .await?;
    let reason = tokio::time::timeout(BACK, async {
        session.close().await;
        session.closed().await
    })
    .await?;
    assert_eq!(reason, "the session was closed while reconnecting");
    // The way back opens, but nothing comes back: the parked port is freed after the grace.
    proxy.set_down(false);
    wait_until_port_free(&listen).await?;
    let all = states.all();
    assert!(
        !all.iter().any(|s| matches!(
            s,
            ConnectionState::Restored { .. } | ConnectionState::GaveUp { .. }
        )),
        "{all:?}"
    );
    Ok(())
}

/// Not a test of reconnecting: a plain `connect` session is unchanged (it ends when its
/// WebSocket drops, and never comes back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_session_still_ends_when_its_websocket_drops() -> Result<()> {
    let lab = Lab::start().await?;
    let proxy = CutProxy::start(lab.relay.addr).await?;
    let session: Session = log_in(&proxy.ws_url(), sshd_login(&lab.sshd)).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    session.forward(&format!("0:{}", echo.addr)).await?;
    proxy.cut();
    let reason = tokio::time::timeout(BACK, session.closed()).await?;
    assert!(
        reason.contains("the relay closed the connection")
            || reason.contains("the connection to the relay failed"),
        "{reason}"
    );
    Ok(())
}
