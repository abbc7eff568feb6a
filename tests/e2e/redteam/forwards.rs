//! Forward ports: what a tab can take of the relay's port range and what each Listen
//! costs it. A hand-made "tab" speaks raw frames (it never logs in to SSH, as an attacker
//! need not), from chosen loopback source addresses, to a real sshd through the real relay.
//! The relay is configured through TOML, the way an operator does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::SinkExt;
use tabtunnel_e2e::fake_tab::FakeTab;
use tabtunnel_e2e::lab::echo_forward;
use tabtunnel_e2e::relay::{Relay, TEST_FORWARD_PORTS, TokenFile, test_config};
use tabtunnel_e2e::services::exchange;
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{init_logging, log_in, sshd_login};
use tabtunnel_proto::{ErrorCode, Frame, encode_to_bytes};
use tokio_tungstenite::tungstenite::Message;

/// A relay for `sshd` (target `sshd`) from `toml`, on `ports`.
async fn relay(
    sshd: &Sshd,
    toml: &str,
    ports: std::ops::RangeInclusive<u16>,
    tokens: Option<&TokenFile>,
) -> Result<Relay> {
    let mut config = test_config(toml, &sshd.address(), tokens)?;
    config.forward_ports = ports;
    Relay::start_with(config).await
}

/// A token file for alice and bob.
fn tokens() -> Result<TokenFile> {
    TokenFile::new(&format!("alice {ALICE}\nbob {BOB}\n"))
}
const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-0123456789abcdef01";

/// What the relay answered to a Listen.
#[derive(Debug)]
enum Answer {
    Listening(String),
    Failed(ErrorCode, String),
}

impl Answer {
    fn port(&self) -> Option<u16> {
        match self {
            Answer::Listening(address) => address.parse::<SocketAddr>().ok().map(|a| a.port()),
            Answer::Failed(..) => None,
        }
    }
}

/// A fake tab for target `sshd` that reads the answers to its Listens as [`Answer`]s.
struct Tab(FakeTab);

impl Tab {
    /// Opens a session from source address `from` (a loopback address) with `token`.
    async fn open(relay: &Relay, from: &str, token: &str) -> Result<Self> {
        let mut tab = FakeTab::connect_from(&relay.ws_url(), from.parse()?).await?;
        tab.send_hello("sshd", token).await?;
        match tab.welcome().await? {
            Ok(()) => Ok(Self(tab)),
            Err(refusal) => bail!("expected Welcome, got {refusal:?}"),
        }
    }

    async fn send(&mut self, frame: &Frame) -> Result<()> {
        self.0.send(frame).await
    }

    /// The next frame other than SSH bytes (sshd's banner).
    async fn next(&mut self) -> Result<Frame> {
        self.0
            .next()
            .await?
            .context("the relay closed the WebSocket")
    }

    /// Sends a Listen and returns the relay's answer to it.
    async fn listen(&mut self, bind: &str, port: u16) -> Result<Answer> {
        Ok(match self.0.listen(bind, port).await? {
            Ok(address) => Answer::Listening(address),
            Err((code, message)) => Answer::Failed(code, message),
        })
    }

    /// Listens on `port 0` `n` times; returns the ports it got.
    async fn listen_many(&mut self, n: usize) -> Result<Vec<u16>> {
        let mut ports = Vec::new();
        for _ in 0..n {
            if let Some(port) = self.listen("", 0).await?.port() {
                ports.push(port);
            }
        }
        Ok(ports)
    }
}

/// `bind()` calls the relay made for forwards so far (`tabtunnel_forward_binds_total`).
async fn forward_binds(relay: &Relay) -> Result<u64> {
    let text = relay.get("/metrics").await?;
    text.lines()
        .find_map(|l| l.strip_prefix("tabtunnel_forward_binds_total "))
        .context("the relay does not count its bind() calls for forwards")?
        .trim()
        .parse()
        .context("a count")
}

/// `len` consecutive ports free on both loopback families, outside the test range and
/// below Linux's ephemeral range, so that no other test takes them meanwhile.
fn free_run(len: u16) -> Result<std::ops::RangeInclusive<u16>> {
    let free = |p: u16| {
        std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("::1", p)).is_ok()
    };
    let offset = (std::process::id() as u16 % 50) * 50;
    for i in 0..50u16 {
        let lo = 30000 + (offset + i * 50) % 2500;
        if (lo..lo + len).all(free) {
            return Ok(lo..=lo + len - 1);
        }
    }
    bail!("no {len} free ports in a row in 30000-32549")
}

#[tokio::test]
async fn a_full_range_refuses_port_zero_without_a_bind() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let range = free_run(20)?;
    let relay = relay(&sshd, "", range.clone(), None).await?;
    // Two sessions from two addresses fill the range with the relay's own forwards.
    let mut a = Tab::open(&relay, "127.0.0.1", "").await?;
    let mut b = Tab::open(&relay, "127.0.0.2", "").await?;
    let mut held = a.listen_many(10).await?;
    held.extend(b.listen_many(10).await?);
    held.sort();
    ensure!(
        held == range.clone().collect::<Vec<_>>(),
        "the forwards hold the whole range: {held:?}"
    );
    let mut c = Tab::open(&relay, "127.0.0.3", "").await?;
    let before = forward_binds(&relay).await?;
    for _ in 0..5 {
        match c.listen("", 0).await? {
            Answer::Failed(ErrorCode::PortInUse, message) => ensure!(
                message.contains("every port in this relay's forward range"),
                "{message}"
            ),
            other => bail!("a full range answered {other:?}"),
        }
    }
    let spent = forward_binds(&relay).await? - before;
    eprintln!("5 Listen{{port 0}} on a full range of 20 cost {spent} bind() calls");
    ensure!(
        spent == 0,
        "{spent} bind() calls for a range the relay itself filled"
    );

    // Ports held by other programs on the host cost a bind each, up to a bound.
    let busy = free_run(40)?;
    let others: Vec<_> = busy
        .clone()
        .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
        .collect::<Result<_, _>>()?;
    let relay = self::relay(&sshd, "", busy, None).await?;
    let mut tab = Tab::open(&relay, "127.0.0.1", "").await?;
    let before = forward_binds(&relay).await?;
    let answer = tab.listen("", 0).await?;
    let spent = forward_binds(&relay).await? - before;
    eprintln!("Listen{{port 0}} on 40 ports held by another program cost {spent} bind() calls");
    ensure!(
        matches!(&answer, Answer::Failed(ErrorCode::PortInUse, m) if m.contains("other programs")),
        "{answer:?}"
    );
    // 24: the relay's PORT_ZERO_ATTEMPTS.
    ensure!(spent <= 24, "{spent} bind() calls for one Listen");
    drop(others);
    Ok(())
}

#[tokio::test]
async fn refused_listens_beyond_the_budget_end_the_session() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = relay(&sshd, "", TEST_FORWARD_PORTS, None).await?;
    let mut tab = Tab::open(&relay, "127.0.0.1", "").await?;
    // 200 Listens the relay refuses (a privileged port), sent at once.
    for forward in 1..=200 {
        let listen = Frame::Listen {
            forward,
            bind: String::new(),
            port: 80,
        };
        if tab
            .0
            .ws
            .feed(Message::Binary(encode_to_bytes(&listen)))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = tab.0.ws.flush().await;
    let mut refused = 0;
    let ended = loop {
        match tab.next().await {
            Ok(Frame::ListenFailed { .. }) => refused += 1,
            Ok(Frame::Error { code, message }) => break Some((code, message)),
            Ok(_) => {}
            Err(_) => break None,
        }
        if refused == 200 {
            break None;
        }
    };
    eprintln!("{refused} of 200 refused Listens were answered before the session ended");
    let Some((code, message)) = ended else {
        bail!("all {refused} refused Listens were answered and the session goes on");
    };
    ensure!(code == ErrorCode::Limit, "{code:?}: {message}");
    ensure!(
        message.contains("too many of its forward requests were refused"),
        "{message}"
    );
    ensure!(refused < 100, "{refused} refusals before the end");
    Ok(())
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_the_range() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    // The default limits, on the tests' range of 10,000 ports.
    let relay = relay(&sshd, "", TEST_FORWARD_PORTS, None).await?;
    let mut held = 0;
    let mut tabs = Vec::new();
    let mut refusal = None;
    // As many forwards as 6 sessions from one address get, asking 12 each.
    for _ in 0..6 {
        let mut tab = Tab::open(&relay, "127.0.0.1", "").await?;
        for _ in 0..12 {
            match tab.listen("", 0).await? {
                Answer::Listening(_) => held += 1,
                Answer::Failed(ErrorCode::Limit, message)
                    if message.contains("from one address") =>
                {
                    refusal = Some(message);
                }
                Answer::Failed(..) => {}
            }
        }
        tabs.push(tab);
    }
    eprintln!("one address held {held} forward ports");
    ensure!(held == 50, "one address holds {held} ports");
    let refusal = refusal.context("no refusal named the per-address cap")?;
    ensure!(
        refusal.contains("at most 50") && refusal.contains("limits.forwards_per_ip"),
        "{refusal}"
    );
    // Another address still gets ports.
    let mut other = Tab::open(&relay, "127.0.0.2", "").await?;
    ensure!(
        matches!(other.listen("", 0).await?, Answer::Listening(_)),
        "a second address is served"
    );
    Ok(())
}

#[tokio::test]
async fn forwards_are_capped_in_total_and_come_back_with_unlisten() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = relay(
        &sshd,
        "[limits]\nforwards = 3\nforwards_per_ip = 100",
        TEST_FORWARD_PORTS,
        None,
    )
    .await?;
    let mut a = Tab::open(&relay, "127.0.0.1", "").await?;
    let mut b = Tab::open(&relay, "127.0.0.2", "").await?;
    ensure!(a.listen_many(2).await?.len() == 2);
    ensure!(b.listen_many(1).await?.len() == 1);
    match b.listen("", 0).await? {
        Answer::Failed(ErrorCode::Limit, message) => ensure!(
            message.contains("maximum of 3 forwards") && message.contains("limits.forwards"),
            "{message}"
        ),
        other => bail!("a fourth forward got {other:?}"),
    }
    // Unlisten frees its place at once: once `a` has answered a later frame (a Listen the
    // policy refuses), its Unlisten has been handled.
    a.send(&Frame::Unlisten { forward: 1 }).await?;
    ensure!(matches!(
        a.listen("", 80).await?,
        Answer::Failed(ErrorCode::PortNotAllowed, _)
    ));
    ensure!(
        matches!(b.listen("", 0).await?, Answer::Listening(_)),
        "the freed place is taken again"
    );
    Ok(())
}

#[tokio::test]
async fn a_token_holder_keeps_to_their_share_and_their_block() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let tokens = tokens()?;
    let relay_a = relay(
        &sshd,
        "[limits]\nforwards_per_user = 3",
        TEST_FORWARD_PORTS,
        Some(&tokens),
    )
    .await?;
    let mut alice = Tab::open(&relay_a, "127.0.0.1", ALICE).await?;
    ensure!(alice.listen_many(3).await?.len() == 3);
    // From another address, in another session: still alice's share.
    let mut alice_again = Tab::open(&relay_a, "127.0.0.3", ALICE).await?;
    match alice_again.listen("", 0).await? {
        Answer::Failed(ErrorCode::Limit, message) => ensure!(
            message.contains("token holder (alice)")
                && message.contains("limits.forwards_per_user"),
            "{message}"
        ),
        other => bail!("alice's fourth forward got {other:?}"),
    }
    let mut bob = Tab::open(&relay_a, "127.0.0.1", BOB).await?;
    ensure!(
        matches!(bob.listen("", 0).await?, Answer::Listening(_)),
        "bob is served"
    );

    // Port blocks: 5 ports each, in token-file order.
    let range = free_run(10)?;
    let lo = *range.start();
    let relay_b = relay(&sshd, "forward_ports_per_user = 5", range, Some(&tokens)).await?;
    let mut alice = Tab::open(&relay_b, "127.0.0.1", ALICE).await?;
    let mut bob = Tab::open(&relay_b, "127.0.0.1", BOB).await?;
    let mut alices = alice.listen_many(5).await?;
    alices.sort();
    ensure!(
        alices == (lo..lo + 5).collect::<Vec<_>>(),
        "alice's ports: {alices:?}"
    );
    match alice.listen("", 0).await? {
        Answer::Failed(ErrorCode::PortInUse, message) => ensure!(
            message.contains(&format!("your block {lo}-{}", lo + 4)),
            "{message}"
        ),
        other => bail!("alice's sixth forward got {other:?}"),
    }
    match alice.listen("", lo + 7).await? {
        Answer::Failed(ErrorCode::PortNotAllowed, message) => {
            ensure!(message.contains("outside your block"), "{message}")
        }
        other => bail!("alice in bob's block got {other:?}"),
    }
    let bobs = bob.listen_many(5).await?;
    ensure!(
        bobs.len() == 5 && bobs.iter().all(|p| (lo + 5..lo + 10).contains(p)),
        "bob's ports: {bobs:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_localhost_forward_holds_both_loopback_families() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = relay(&sshd, "", TEST_FORWARD_PORTS, None).await?;
    let victim = log_in(&relay.ws_url(), sshd_login(&sshd)).await?;
    let (_echo, forward) = echo_forward(&victim).await?;
    let port = forward.listen().parse::<SocketAddr>()?.port();
    ensure!(
        forward.listen() == format!("127.0.0.1:{port}"),
        "the tab is told {}",
        forward.listen()
    );
    let mut attacker = Tab::open(&relay, "127.0.0.1", "").await?;
    let answer = attacker.listen("[::1]", port).await?;
    eprintln!("another session asking for [::1]:{port}: {answer:?}");
    ensure!(
        matches!(&answer, Answer::Failed(ErrorCode::PortInUse, m) if m.contains("already in use")),
        "another session took [::1]:{port}: {answer:?}"
    );
    // A client that tries IPv6 loopback first reaches the victim's destination.
    let reply = exchange(&format!("[::1]:{port}"), b"over ::1").await?;
    ensure!(reply == b"over ::1", "{reply:?}");
    Ok(())
}

#[tokio::test]
async fn no_op_frames_do_not_keep_an_idle_session_alive() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = relay(&sshd, "idle_timeout = \"2s\"", TEST_FORWARD_PORTS, None).await?;
    let mut tab = Tab::open(&relay, "127.0.0.1", "").await?;
    let start = Instant::now();
    // Unlisten of a forward that does not exist, every 500 ms, for up to 10 s.
    let ended = loop {
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "the session is still open after {:?} of no-op frames",
            start.elapsed()
        );
        if tab.send(&Frame::Unlisten { forward: 999 }).await.is_err() {
            break None;
        }
        match tokio::time::timeout(Duration::from_millis(500), tab.next()).await {
            Ok(Ok(Frame::Error { code, message })) => break Some((code, message)),
            Ok(Err(_)) => break None,
            _ => {}
        }
    };
    let (code, message) = ended.context("the session ended without an Error")?;
    eprintln!("ended after {:?}: {message}", start.elapsed());
    ensure!(code == ErrorCode::Idle, "{code:?}: {message}");
    ensure!(message.contains("idle for 2s"), "{message}");
    Ok(())
}
