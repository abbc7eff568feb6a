//! Many relays behind a real load balancer: nginx round-robins 50 native sessions (the
//! client core, reconnecting) over two relay processes, each serving on its own loopback
//! address with its own `--public-host`, to a real OpenSSH sshd. Every session moves
//! checksummed bytes through its forward, at the address its relay advertises. Mid-run
//! relay A gets SIGTERM and drains: its /healthz says 503, the transfers in flight on it
//! finish intact, its sessions are told it is shutting down and come back through nginx
//! on relay B (the same ports, B's address), it exits 0 within its drain timeout, and
//! relay B's sessions never notice. A second SIGTERM ends a drain at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use tabtunnel_client::{
    ConnectionState, Forward, Reconnect, ReconnectOptions, Session, connect_resilient,
};
use tabtunnel_e2e::nginx::Nginx;
use tabtunnel_e2e::relay::RelayProcess;
use tabtunnel_e2e::services::EchoServer;
use tabtunnel_e2e::sshd::{Sshd, SshdOptions, signal};
use tabtunnel_e2e::{dial, init_logging, pattern, sha256_hex, sshd_key_login, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SESSIONS: usize = 50;
/// Logins in flight at once: below sshd's MaxStartups and the relays' login caps.
const LOGINS_AT_ONCE: usize = 6;
/// One transfer: echoed back and checked byte for byte (by SHA-256).
const TRANSFER: usize = 64 * 1024;
/// A transfer in flight on relay A when it is told to stop: sent in pieces over about
/// two seconds, so it spans the drain's start.
const SLOW_PIECES: usize = 20;
const SLOW_PIECE: usize = 32 * 1024;
const SLOW_PAUSE: Duration = Duration::from_millis(100);
/// Relay A's drain timeout: the test checks it exits well within it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long any one step may take on a loaded 2-core machine.
const STEP: Duration = Duration::from_secs(30);

/// Quick retries: 100 ms doubling to 1 s, for up to a minute.
const FAST: Reconnect = Reconnect {
    first_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
    give_up_after: Duration::from_secs(60),
};

/// One relay process and what it tells its users.
struct Relay {
    name: &'static str,
    process: RelayProcess,
    public_host: &'static str,
}

impl Relay {
    async fn start(
        name: &'static str,
        public_host: &'static str,
        sshd: &Sshd,
        config: &std::path::Path,
    ) -> Result<Self> {
        let target = format!("sshd={}", sshd.address());
        let drain = format!("{}s", DRAIN_TIMEOUT.as_secs());
        let process = RelayProcess::start_at(
            &format!("{public_host}:0"),
            &[
                "--config",
                &config.display().to_string(),
                "--target",
                &target,
                "--public-host",
                public_host,
                // Forwards on every address, as on a relay host users reach by its name;
                // only loopback clients are let through.
                "--allow-bind",
                "*",
                "--forward-allowed-sources",
                "127.0.0.0/8",
                "--trusted-proxies",
                "127.0.0.1/32",
                "--drain-timeout",
                &drain,
                "--resume-grace",
                "0s",
            ],
            "info",
            None,
        )
        .await?;
        Ok(Self {
            name,
            process,
            public_host,
        })
    }

    /// `GET path` straight to this relay (not through nginx): status line and body.
    async fn get(&self, path: &str) -> Result<String> {
        let mut stream = TcpStream::connect(&self.process.addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.process.addr);
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        tokio::time::timeout(STEP, stream.read_to_string(&mut response)).await??;
        Ok(response)
    }

    async fn metric(&self, name: &str) -> Result<i64> {
        let metrics = self.get("/metrics").await?;
        let line = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .with_context(|| format!("{} has no {name}:\n{metrics}", self.name))?;
        Ok(line.trim().parse()?)
    }
}

/// Every state a session reported, in order.
#[derive(Clone, Default)]
struct States(Arc<Mutex<Vec<ConnectionState>>>);

impl States {
    fn options(&self) -> ReconnectOptions {
        let states = self.0.clone();
        ReconnectOptions {
            policy: FAST,
            on_state: Some(Arc::new(move |state| {
                states.lock().expect("states").push(state);
            })),
        }
    }

    fn all(&self) -> Vec<ConnectionState> {
        self.0.lock().expect("states").clone()
    }
}

/// A tab: its session through nginx and its forward to the echo service.
struct Tab {
    session: Session,
    forward: Forward,
    states: States,
}

impl Tab {
    fn port(&self) -> Result<u16> {
        let (_, port) = self
            .forward
            .listen()
            .rsplit_once(':')
            .context("a port in the forward's address")?;
        Ok(port.parse()?)
    }
}

/// The process among `pids` that listens on IPv4 TCP `port`, from /proc/net/tcp and each
/// process's open files: which relay holds a forward.
fn listener_owner(port: u16, pids: &[u32]) -> Result<Option<u32>> {
    let suffix = format!(":{port:04X}");
    let sockets: Vec<String> = std::fs::read_to_string("/proc/net/tcp")?
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A");
            (listening && fields.get(1)?.ends_with(&suffix))
                .then(|| format!("socket:[{}]", fields.get(9).unwrap_or(&"")))
        })
        .collect();
    for &pid in pids {
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
            let link = std::fs::read_link(entry?.path()).unwrap_or_default();
            if sockets.iter().any(|s| link.as_os_str() == s.as_str()) {
                return Ok(Some(pid));
            }
        }
    }
    Ok(None)
}

/// The relay whose process listens for `tab`'s forward (waiting, within the step's
/// deadline, for it to listen), and the address the page shows for it there: the
/// forward listens on every address, so the relay's public host and the port.
async fn holder<'a>(tab: &Tab, relays: &'a [&'a Relay]) -> Result<(&'a Relay, String)> {
    let port = tab.port()?;
    let pids: Vec<u32> = relays.iter().filter_map(|r| r.process.child.id()).collect();
    let pid = wait_for("a relay to listen for the forward", STEP, || async {
        listener_owner(port, &pids).ok().flatten()
    })
    .await?;
    let relay = relays
        .iter()
        .find(|r| r.process.child.id() == Some(pid))
        .context("the listener's process is a relay")?;
    ensure!(
        tab.forward.listen() == format!("0.0.0.0:{port}"),
        "the forward listens on every address: {}",
        tab.forward.listen()
    );
    Ok((relay, format!("{}:{port}", relay.public_host)))
}

/// Sends `data` through `address` to the echo service and checks every byte came back.
async fn echo_checked(address: &str, data: &[u8]) -> Result<()> {
    let stream = TcpStream::connect(address).await?;
    let (mut r, mut w) = stream.into_split();
    let sent = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await?;
        w.shutdown().await
    });
    let mut received = Vec::with_capacity(data.len());
    tokio::time::timeout(STEP, r.read_to_end(&mut received)).await??;
    writer.await??;
    ensure!(
        received.len() == data.len() && sha256_hex(&received) == sha256_hex(data),
        "{address}: {} of {} bytes came back, or other bytes",
        received.len(),
        data.len()
    );
    Ok(())
}

/// A transfer that spans relay A's drain: the first piece echoed, then `started` is
/// told, the rest sent slowly; every byte checked at the end.
async fn slow_transfer(
    address: String,
    seed: u64,
    started: tokio::sync::mpsc::Sender<()>,
) -> Result<usize> {
    let data = pattern(seed, SLOW_PIECES * SLOW_PIECE);
    let stream = TcpStream::connect(&address).await?;
    let (mut r, mut w) = stream.into_split();
    let mut received = vec![0; SLOW_PIECE];
    w.write_all(&data[..SLOW_PIECE]).await?;
    tokio::time::timeout(STEP, r.read_exact(&mut received)).await??;
    started.send(()).await?;
    let rest = data[SLOW_PIECE..].to_vec();
    let writer = tokio::spawn(async move {
        for piece in rest.chunks(SLOW_PIECE) {
            tokio::time::sleep(SLOW_PAUSE).await;
            w.write_all(piece).await?;
        }
        w.shutdown().await
    });
    tokio::time::timeout(STEP, r.read_to_end(&mut received)).await??;
    writer.await??;
    ensure!(
        received.len() == data.len() && sha256_hex(&received) == sha256_hex(&data),
        "the transfer in flight at the drain: {} of {} bytes came back, or other bytes",
        received.len(),
        data.len()
    );
    Ok(data.len())
}

/// Waits until `tab` was told the relay is shutting down and came back (a fresh session:
/// a drained relay parks nothing).
async fn came_back(tab: &Tab) -> Result<()> {
    wait_for("the session to come back", STEP, || async {
        let states = tab.states.all();
        let told = states.iter().position(|s| {
            matches!(s, ConnectionState::Reconnecting { reason, .. }
                if reason.contains("the relay is shutting down"))
        })?;
        states[told..]
            .contains(&ConnectionState::Restored { resumed: false })
            .then_some(())
    })
    .await
    .with_context(|| format!("states: {:?}", tab.states.all()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_over_two_relays_and_one_drained_mid_run() -> Result<()> {
    init_logging();
    let run = Instant::now();
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec!["MaxStartups 30:30:100".into()],
    })
    .await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    // Every session comes from 127.0.0.1 (through nginx, a trusted proxy): the
    // per-address caps must hold them all.
    let config_dir = tempfile::tempdir()?;
    let config = config_dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "[limits]\nsessions_per_ip = 200\nhellos_per_ip = 64\nlogins_per_target = 32\n\
         logins_per_ip = 32\nforwards_per_ip = 200\n",
    )?;
    let a = Relay::start("A", "127.0.0.2", &sshd, &config).await?;
    let b = Relay::start("B", "127.0.0.3", &sshd, &config).await?;
    let nginx = Nginx::balance(&[a.process.addr.clone(), b.process.addr.clone()]).await?;
    let both = [&a, &b];
    for relay in both {
        let targets = relay.get("/api/targets").await?;
        ensure!(
            targets.contains(&format!("\"public_host\":\"{}\"", relay.public_host)),
            "relay {} tells its public host: {targets}",
            relay.name
        );
        ensure!(relay.get("/healthz").await?.ends_with("\r\n\r\nok\n"));
    }

    // 50 sessions through nginx, a forward each, spread over both relays.
    let spec = format!("*:0:127.0.0.1:{}", echo.addr.port());
    let url = nginx.ws_url();
    let tabs: Vec<Result<Tab>> = futures::stream::iter(0..SESSIONS)
        .map(|_| {
            let (url, spec, login) = (url.clone(), spec.clone(), sshd_key_login(&sshd));
            async move {
                let states = States::default();
                let session = connect_resilient(dial(&url), login, states.options()).await?;
                let forward = session.forward(&spec).await?;
                Ok(Tab {
                    session,
                    forward,
                    states,
                })
            }
        })
        .buffer_unordered(LOGINS_AT_ONCE)
        .collect()
        .await;
    let tabs: Vec<Tab> = tabs.into_iter().collect::<Result<_>>()?;
    let logged_in = run.elapsed();
    let (on_a, on_b) = (
        a.metric("tabtunnel_sessions_active").await?,
        b.metric("tabtunnel_sessions_active").await?,
    );
    ensure!(
        on_a + on_b == SESSIONS as i64 && on_a > 1 && on_b > 0,
        "nginx spread the sessions over both relays: A {on_a}, B {on_b}"
    );

    // Each forward is held by its session's relay and shown at that relay's address.
    let verified = Arc::new(AtomicU64::new(0));
    let mut tabs_a = Vec::new();
    let mut tabs_b = Vec::new();
    for (i, tab) in tabs.into_iter().enumerate() {
        let (relay, address) = holder(&tab, &both).await?;
        let data = pattern(i as u64, TRANSFER);
        echo_checked(&address, &data).await?;
        verified.fetch_add(TRANSFER as u64, Ordering::Relaxed);
        if std::ptr::eq(relay, &a) {
            tabs_a.push((tab, address));
        } else {
            tabs_b.push((tab, address));
        }
    }
    ensure!(tabs_a.len() as i64 == on_a && tabs_b.len() as i64 == on_b);

    // Relay B's sessions transfer all along, until relay A is gone and its sessions back.
    let stop = Arc::new(AtomicBool::new(false));
    let mut b_workers = tokio::task::JoinSet::new();
    for (i, (_, address)) in tabs_b.iter().enumerate() {
        let (address, stop, verified) = (address.clone(), stop.clone(), verified.clone());
        b_workers.spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) && round < 10_000 {
                let data = pattern(1000 + i as u64 * 10_000 + round, TRANSFER);
                echo_checked(&address, &data).await?;
                verified.fetch_add(TRANSFER as u64, Ordering::Relaxed);
                round += 1;
            }
            anyhow::Ok(round)
        });
    }
    // Half of relay A's sessions have a transfer in flight when it is told to stop.
    let busy = tabs_a.len() / 2;
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel(busy.max(1));
    let mut in_flight = tokio::task::JoinSet::new();
    for (i, (_, address)) in tabs_a.iter().take(busy).enumerate() {
        in_flight.spawn(slow_transfer(
            address.clone(),
            500 + i as u64,
            started_tx.clone(),
        ));
    }
    for _ in 0..busy {
        tokio::time::timeout(STEP, started_rx.recv())
            .await?
            .context("a transfer on relay A failed to start")?;
    }

    let drain_started = Instant::now();
    signal(a.process.pid()?, "TERM")?;
    // A load balancer's health check now sees relay A draining; B is fine.
    wait_for("relay A's /healthz to say 503", STEP, || async {
        let answer = a.get("/healthz").await.ok()?;
        (answer.contains(" 503 ") && answer.contains("draining")).then_some(())
    })
    .await
    .with_context(|| format!("relay A said: {:#?}", a.process.output()))?;
    ensure!(a.metric("tabtunnel_draining").await? == 1);
    ensure!(b.get("/healthz").await?.ends_with("ok\n"));
    ensure!(b.metric("tabtunnel_draining").await? == 0);

    // The transfers in flight on A finish, every byte intact.
    while let Some(done) = in_flight.join_next().await {
        verified.fetch_add(done?? as u64, Ordering::Relaxed);
    }
    let (status, log) = a.process.exited(DRAIN_TIMEOUT + STEP).await?;
    let drain = drain_started.elapsed();
    ensure!(status.success(), "relay A exited with {status}");
    ensure!(
        drain < DRAIN_TIMEOUT,
        "relay A drained in {drain:?}, not at its {DRAIN_TIMEOUT:?} deadline"
    );
    ensure!(
        log.iter().any(|line| line.contains("draining:"))
            && log
                .iter()
                .any(|line| line.contains("drain over (every session ended)")),
        "relay A logs its drain: {log:#?}"
    );

    // A's sessions, idle or busy, were told and came back on B: same port, B's address.
    let only_b = [&b];
    for (i, (tab, _)) in tabs_a.iter().enumerate() {
        came_back(tab).await?;
        let (relay, address) = holder(tab, &only_b).await?;
        ensure!(std::ptr::eq(relay, &b) && address.starts_with("127.0.0.3:"));
        echo_checked(&address, &pattern(9000 + i as u64, TRANSFER)).await?;
        verified.fetch_add(TRANSFER as u64, Ordering::Relaxed);
    }

    // Relay B's sessions never noticed: no reconnect, no error, every transfer checked.
    stop.store(true, Ordering::Relaxed);
    let mut rounds = 0;
    while let Some(done) = b_workers.join_next().await {
        rounds += done??;
    }
    for (tab, _) in &tabs_b {
        ensure!(
            tab.states.all() == [ConnectionState::Live] && tab.session.closed_reason().is_none(),
            "a session on relay B was disturbed: {:?} {:?}",
            tab.states.all(),
            tab.session.closed_reason()
        );
        let stats = tab.forward.stats();
        ensure!(
            stats.failures == 0 && stats.last_error.is_none(),
            "{stats:?}"
        );
    }
    ensure!(
        rounds > tabs_b.len() as u64,
        "B's sessions kept transferring"
    );
    if b.metric("tabtunnel_sessions_active").await? != SESSIONS as i64 {
        bail!("all 50 sessions are on relay B now");
    }
    eprintln!(
        "scale_out: {SESSIONS} sessions through nginx (A {on_a}, B {on_b}; logged in in {:.1} s); \
         {:.1} MiB verified by SHA-256; relay A drained in {:.2} s with {busy} transfers in flight \
         (deadline {DRAIN_TIMEOUT:?}); run time {:.1} s",
        logged_in.as_secs_f64(),
        verified.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        drain.as_secs_f64(),
        run.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The relay binary's signals: the first starts the drain (a session with an open
/// connection holds it), a second ends it at once, and the relay still exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_the_drain_at_once() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let target = format!("sshd={}", sshd.address());
    let relay =
        RelayProcess::start(&["--target", &target, "--drain-timeout", "10m"], "info").await?;
    let session = tabtunnel_e2e::log_in(&relay.ws_url(), sshd_key_login(&sshd)).await?;
    let (_echo, forward) = tabtunnel_e2e::lab::echo_forward(&session).await?;
    let mut open = TcpStream::connect(forward.listen()).await?;
    open.write_all(b"open").await?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(STEP, open.read_exact(&mut buf)).await??;
    let pid = relay.pid()?;
    signal(pid, "TERM")?;
    let healthz = |relay: &RelayProcess| {
        let addr = relay.addr.clone();
        async move {
            let mut stream = TcpStream::connect(&addr).await.ok()?;
            let request = format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.ok()?;
            Some(answer)
        }
    };
    wait_for("the relay to drain", STEP, || async {
        healthz(&relay).await.filter(|a| a.contains(" 503 "))
    })
    .await?;
    // Held by the open connection, for as long as the 10-minute timeout allows...
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        session.closed_reason().is_none(),
        "the busy session is still on"
    );
    // ...until a second signal.
    let second = Instant::now();
    signal(pid, "TERM")?;
    let reason = tokio::time::timeout(STEP, session.closed()).await?;
    ensure!(reason.contains("the relay is shutting down"), "{reason}");
    let (status, log) = relay.exited(STEP).await?;
    ensure!(status.success(), "the relay exited with {status}");
    ensure!(
        second.elapsed() < Duration::from_secs(10),
        "ended at once, not at the deadline: {:?}",
        second.elapsed()
    );
    ensure!(
        log.iter()
            .any(|line| line.contains("drain over (a second signal)")),
        "{log:#?}"
    );
    Ok(())
}
