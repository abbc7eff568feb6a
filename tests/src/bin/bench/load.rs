//! The load section: many sessions at once, each with one forward and one connection
//! moving data at a steady rate, through the relay running as its own (release) process
//! to a real OpenSSH sshd. Only the relay is measured, from /proc/<its pid>: RSS at
//! start, with the sessions idle and with their connections active, its peak RSS, and
//! its CPU time. The clients, the echo service and sshd run elsewhere (this process and
//! sshd's own), so they share the machine's cores but never the relay's figures.
//!
//! Every failure (a login, a session lost, a connection that errs, stalls or corrupts
//! its echo) is counted and printed, and then makes the bench fail.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tabtunnel_client::{ConnectOptions, Forward, Session};
use tabtunnel_e2e::services::EchoServer;
use tabtunnel_e2e::sshd::{Sshd, SshdOptions};
use tabtunnel_e2e::{log_in, pattern, sshd_key_login};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::options::env_number;
use crate::procs::{self, CpuReading, Group};

/// Writes per second on each connection: small writes, as interactive traffic makes.
const TICKS_PER_SEC: u64 = 10;
/// Longest one login (WebSocket, SSH handshake, key auth, forward) may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a connection may take to echo its first bytes.
const FIRST_ECHO_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest the echoes still in flight may take to come back after the writers stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What the load section does; each figure has an environment variable.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// BENCH_SESSIONS: sessions (each with one forward, then one connection).
    pub sessions: usize,
    /// BENCH_RATE_KIB: KiB/s each connection sends (and gets echoed back).
    pub rate_kib: u64,
    /// BENCH_LOAD_SECS: length of the measured interval with every connection active.
    pub seconds: u64,
    /// BENCH_LOGIN_PARALLEL: logins in flight at once (below sshd's MaxStartups).
    pub parallel: usize,
}

impl LoadOptions {
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            sessions: env_number("BENCH_SESSIONS", 500)?,
            rate_kib: env_number("BENCH_RATE_KIB", 16)?,
            seconds: env_number("BENCH_LOAD_SECS", 20)?,
            parallel: env_number("BENCH_LOGIN_PARALLEL", 8)?,
        })
    }
}

/// Failures by kind, each with its messages (and how often each occurred).
#[derive(Debug, Default)]
struct Failures(BTreeMap<&'static str, BTreeMap<String, usize>>);

impl Failures {
    fn add(&mut self, kind: &'static str, message: impl Into<String>) {
        *self
            .0
            .entry(kind)
            .or_default()
            .entry(message.into())
            .or_default() += 1;
    }

    fn count(&self, kind: &str) -> usize {
        self.0.get(kind).map_or(0, |m| m.values().sum())
    }

    fn total(&self) -> usize {
        self.0.values().flat_map(|m| m.values()).sum()
    }
}

/// The relay process as /proc shows it.
struct RelayProc {
    pid: u32,
}

impl RelayProc {
    fn rss(&self) -> Result<u64> {
        procs::rss(self.pid)
    }

    /// User plus system CPU seconds so far.
    fn cpu_seconds(&self) -> Result<f64> {
        procs::cpu_seconds(self.pid).context("the relay has exited")
    }

    fn open_files(&self) -> usize {
        procs::open_files(self.pid)
    }
}

/// A figure measured over an interval: relay CPU, machine CPU and this process's CPU.
struct CpuWindow {
    started: Instant,
    relay: f64,
    sshd: Group,
    sshd_cpu: CpuReading,
    machine: (u64, u64),
    bench: f64,
}

struct CpuUse {
    seconds: f64,
    /// Relay CPU seconds used in the window.
    relay_cpu: f64,
    /// Percent of one core.
    relay_pct: f64,
    machine_pct: f64,
    bench_pct: f64,
    /// sshd's session processes together, percent of one core.
    sshd_pct: f64,
}

impl CpuWindow {
    fn start(relay: &RelayProc, sshd: &Sshd) -> Result<Self> {
        let sshd = Group::Below(sshd.pid());
        Ok(Self {
            started: Instant::now(),
            relay: relay.cpu_seconds()?,
            sshd_cpu: sshd.cpu(),
            sshd,
            machine: procs::machine_ticks()?,
            bench: bench_cpu()?,
        })
    }

    fn end(&self, relay: &RelayProc) -> Result<CpuUse> {
        let seconds = self.started.elapsed().as_secs_f64();
        let relay_cpu = relay.cpu_seconds()? - self.relay;
        let (busy, total) = procs::machine_ticks()?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let machine_pct = if total > self.machine.1 {
            (busy - self.machine.0) as f64 / (total - self.machine.1) as f64 * 100.0 * cores
        } else {
            0.0
        };
        let bench_cpu = bench_cpu()? - self.bench;
        let sshd_cpu = self.sshd.cpu().since(&self.sshd_cpu);
        Ok(CpuUse {
            seconds,
            relay_cpu,
            relay_pct: relay_cpu / seconds * 100.0,
            machine_pct,
            bench_pct: bench_cpu / seconds * 100.0,
            sshd_pct: sshd_cpu / seconds * 100.0,
        })
    }
}

/// This process's CPU seconds so far.
fn bench_cpu() -> Result<f64> {
    procs::cpu_seconds(std::process::id()).context("reading this process's CPU time")
}

/// Byte counts of all connections together.
#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    echoed: AtomicU64,
}

/// Runs the load section, prints its table and returns it. Fails after printing if
/// anything failed.
pub async fn run(options: &LoadOptions) -> Result<String> {
    let n = options.sessions;
    // Per session this process holds a WebSocket, one forwarded connection and the echo
    // service's side of it; leave room for everything else.
    let wanted = (n as u64) * 4 + 256;
    let limit =
        rlimit::increase_nofile_limit(wanted.max(65536)).context("raising the open-files limit")?;
    if limit < wanted {
        bail!(
            "{n} sessions need about {wanted} open files in the bench, but the hard limit is {limit}: \
             raise it (ulimit -Hn, or LimitNOFILE) or lower BENCH_SESSIONS"
        );
    }

    println!(
        "\nload: {n} sessions through the relay process to OpenSSH sshd (key login, {} at a time); \
         then one connection each, echoing {} KiB/s each way for {} s",
        options.parallel, options.rate_kib, options.seconds
    );

    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![
            // Logins in flight stay below `start` (the bench bounds them), so none is dropped.
            format!(
                "MaxStartups {}:30:{}",
                options.parallel * 4,
                options.parallel * 8
            ),
            "MaxSessions 10".into(),
        ],
    })
    .await?;
    // All sessions come from 127.0.0.1, so the per-address caps must allow them all (a
    // forward each, and each session is a TCP connection to the relay too); the bench
    // bounds the logins in flight below sshd's MaxStartups itself.
    let (relay, _config_dir) = crate::paths::relay_with_limits(
        &sshd,
        &format!(
            "[limits]\nsessions = {cap}\nsessions_per_ip = {cap}\nhellos_per_ip = {cap}\n\
             logins_per_target = {cap}\nlogins_per_ip = {cap}\nforwards = {cap}\n\
             forwards_per_ip = {cap}\nconnections_per_ip = {cap}\n",
            cap = n + 16
        ),
    )
    .await?;
    let proc = RelayProc { pid: relay.pid()? };
    let echo = EchoServer::start("127.0.0.1").await?;
    let mut failures = Failures::default();
    let mut table = Table::default();

    let rss_start = proc.rss()?;
    table.row("relay RSS at start (no sessions)", mib(rss_start));

    // Log in every session, each with one forward to the echo service.
    let cpu = CpuWindow::start(&proc, &sshd)?;
    let (live, login_failures) = log_in_all(&relay.ws_url(), &sshd, options, echo.addr).await;
    let login = cpu.end(&proc)?;
    for message in login_failures {
        failures.add("login", message);
    }
    let ok = live.len();
    table.row(
        &format!("log in + forward, {ok} of {n} sessions (wall)"),
        format!("{:.1} s", login.seconds),
    );
    if ok > 0 {
        table.row(
            "relay CPU per login",
            format!("{:.2} ms", login.relay_cpu * 1000.0 / ok as f64),
        );
    }
    if ok == 0 {
        print!("{}", table.render());
        failures.print();
        bail!("no session logged in; see the failures above");
    }

    // Idle: sessions and listeners, no connections. The relay has answered every forward
    // already; a short pause lets its last replies' buffers go before RSS is read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut live = drop_closed(live, &mut failures, "session lost while idle");
    let rss_idle = proc.rss()?;
    let idle_count = live.len().max(1) as u64;
    table.row(
        &format!("relay RSS, {} idle sessions", live.len()),
        mib(rss_idle),
    );
    table.row(
        "  RSS per idle session",
        kib(rss_idle.saturating_sub(rss_start) / idle_count),
    );
    table.row("relay open files, idle", proc.open_files().to_string());

    // Active: one connection per forward, echoing at a steady rate.
    let totals = Arc::new(Totals::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (conns, connect_failures) = open_connections(&live, options, &totals, stop_rx).await;
    for message in connect_failures {
        failures.add("connection (open)", message);
    }
    let active = conns.len();
    if active == 0 {
        print!("{}", table.render());
        failures.print();
        bail!("no connection echoed; see the failures above");
    }
    let echoed_before = totals.echoed.load(Ordering::Relaxed);
    let cpu = CpuWindow::start(&proc, &sshd)?;
    let mut rss_max = 0;
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_max = rss_max.max(proc.rss()?);
    }
    let rss_active = proc.rss()?;
    let open_active = proc.open_files();
    let window = cpu.end(&proc)?;
    let echoed = totals.echoed.load(Ordering::Relaxed) - echoed_before;

    table.row(
        &format!("relay RSS, {active} active connections"),
        format!("{} (max {})", mib(rss_active), mib(rss_max.max(rss_active))),
    );
    table.row(
        "  RSS per active connection",
        kib(rss_active.saturating_sub(rss_idle) / active as u64),
    );
    table.row(
        "relay CPU, active (of one core)",
        format!("{:.1} %", window.relay_pct),
    );
    let target_rate = (active as u64 * options.rate_kib) as f64 / 1024.0;
    let rate = echoed as f64 / window.seconds / (1 << 20) as f64;
    table.row(
        "throughput, echoed payload",
        format!("{rate:.2} MiB/s (target {target_rate:.2}) each way"),
    );
    if rate > 0.0 {
        table.row(
            "  relay CPU per MiB echoed",
            format!(
                "{:.1} ms",
                window.relay_cpu * 1000.0 / (echoed as f64 / (1 << 20) as f64)
            ),
        );
    }
    table.row("relay open files, active", open_active.to_string());
    table.row(
        "machine CPU, active (all cores)",
        format!(
            "{:.0} % of {} (sshd {:.0} %, bench clients {:.0} %)",
            window.machine_pct,
            std::thread::available_parallelism().map_or(1, |n| n.get()) * 100,
            window.sshd_pct,
            window.bench_pct
        ),
    );

    // Stop writing, then every echo must come back whole.
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, futures::future::join_all(conns)).await;
    match drained {
        Ok(outcome) => {
            for result in outcome {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => failures.add("connection (data)", format!("{err:#}")),
                    Err(err) => failures.add("connection (data)", format!("task: {err}")),
                }
            }
        }
        Err(_) => failures.add(
            "connection (data)",
            format!(
                "echoes still missing {} s after the writers stopped",
                DRAIN_TIMEOUT.as_secs()
            ),
        ),
    }
    live = drop_closed(live, &mut failures, "session lost while active");

    table.row("relay peak RSS (VmHWM)", mib(procs::peak_rss(proc.pid)?));
    let sent = totals.sent.load(Ordering::Relaxed);
    table.row(
        "payload sent / echoed in all",
        format!(
            "{:.1} / {:.1} MiB",
            sent as f64 / (1 << 20) as f64,
            totals.echoed.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
        ),
    );
    table.row(
        "failures",
        format!(
            "{} (login {}, session lost {}, connection {})",
            failures.total(),
            failures.count("login"),
            failures.count("session lost while idle") + failures.count("session lost while active"),
            failures.count("connection (open)") + failures.count("connection (data)")
        ),
    );
    let rendered = table.render();
    print!("{rendered}");
    failures.print();

    // Tear down: the relay first (every session ends with it), then clients and sshd.
    let relay_log = relay.kill().await?;
    drop(live);
    drop(sshd);
    let noisy: Vec<&String> = relay_log
        .iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        // The page is not built for a load-only run, and no browser asks for it.
        .filter(|l| !l.contains("pkg/client_wasm.js"))
        .collect();
    if !noisy.is_empty() {
        println!("relay warnings/errors ({}), first few:", noisy.len());
        for line in noisy.iter().take(5) {
            println!("  {line}");
        }
    }
    if failures.total() > 0 {
        bail!(
            "{} of the load's operations failed (listed above)",
            failures.total()
        );
    }
    Ok(rendered)
}

/// Keeps the sessions that are still open; counts the others as `kind` failures.
fn drop_closed(
    live: Vec<(Session, Forward)>,
    failures: &mut Failures,
    kind: &'static str,
) -> Vec<(Session, Forward)> {
    live.into_iter()
        .filter(|(session, _)| match session.closed_reason() {
            Some(reason) => {
                failures.add(kind, reason);
                false
            }
            None => true,
        })
        .collect()
}

/// Logs in `options.sessions` sessions, `options.parallel` at a time, each with one
/// forward to `echo`. Returns the live ones and the failures' messages.
async fn log_in_all(
    ws_url: &str,
    sshd: &Sshd,
    options: &LoadOptions,
    echo: std::net::SocketAddr,
) -> (Vec<(Session, Forward)>, Vec<String>) {
    let gate = Arc::new(Semaphore::new(options.parallel));
    let mut tasks = JoinSet::new();
    for _ in 0..options.sessions {
        let gate = gate.clone();
        let url = ws_url.to_owned();
        let login = ConnectOptions {
            // The relay's WebSocket pings are answered without it; off, it would only add
            // client work to the figures.
            keepalive: None,
            ..sshd_key_login(sshd)
        };
        let spec = format!("0:127.0.0.1:{}", echo.port());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            tokio::time::timeout(LOGIN_TIMEOUT, async {
                let session = log_in(&url, login).await.map_err(|e| e.to_string())?;
                let forward = session.forward(&spec).await.map_err(|e| e.to_string())?;
                Ok((session, forward))
            })
            .await
            .map_err(|_| format!("no login within {} s", LOGIN_TIMEOUT.as_secs()))?
        });
    }
    let mut live = Vec::new();
    let mut failed = Vec::new();
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(pair)) => live.push(pair),
            Ok(Err(message)) => failed.push(message),
            Err(err) => failed.push(format!("login task: {err}")),
        }
    }
    (live, failed)
}

type Connection = tokio::task::JoinHandle<Result<()>>;

/// Opens one connection per forward and starts it echoing; returns once each has had
/// its first bytes echoed back (or failed).
async fn open_connections(
    live: &[(Session, Forward)],
    options: &LoadOptions,
    totals: &Arc<Totals>,
    stop: watch::Receiver<bool>,
) -> (Vec<Connection>, Vec<String>) {
    let chunk_len = (options.rate_kib * 1024 / TICKS_PER_SEC).max(1) as usize;
    let chunk: Arc<[u8]> = pattern(5, chunk_len).into();
    let tick = Duration::from_millis(1000 / TICKS_PER_SEC);
    let gate = Arc::new(Semaphore::new(options.parallel * 4));
    let mut opening = JoinSet::new();
    let count = live.len() as u32;
    for (i, (_, forward)) in live.iter().enumerate() {
        let listen = forward.listen().to_owned();
        let (gate, chunk, totals, stop) =
            (gate.clone(), chunk.clone(), totals.clone(), stop.clone());
        // Spread the connections' writes evenly over a tick.
        let offset = tick * i as u32 / count;
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let stream = tokio::net::TcpStream::connect(&listen)
                .await
                .with_context(|| format!("connecting to {listen}"))?;
            stream.set_nodelay(true)?;
            let (first_tx, first_rx) = tokio::sync::oneshot::channel();
            let conn = tokio::spawn(echo_steadily(
                stream, chunk, tick, offset, totals, stop, first_tx,
            ));
            match tokio::time::timeout(FIRST_ECHO_TIMEOUT, first_rx).await {
                Ok(Ok(())) => Ok(conn),
                Ok(Err(_)) => match conn.await {
                    Ok(Err(err)) => Err(err),
                    _ => bail!("the connection ended before its first echo"),
                },
                Err(_) => {
                    conn.abort();
                    bail!("no echo within {} s", FIRST_ECHO_TIMEOUT.as_secs())
                }
            }
        });
    }
    let mut conns = Vec::new();
    let mut failed = Vec::new();
    while let Some(result) = opening.join_next().await {
        match result {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(err)) => failed.push(format!("{err:#}")),
            Err(err) => failed.push(format!("connection task: {err}")),
        }
    }
    (conns, failed)
}

/// Writes `chunk` every `tick` until `stop`, then EOF; reads the echo all along and
/// checks it is the same bytes, all of them.
async fn echo_steadily(
    stream: tokio::net::TcpStream,
    chunk: Arc<[u8]>,
    tick: Duration,
    offset: Duration,
    totals: Arc<Totals>,
    mut stop: watch::Receiver<bool>,
    first: tokio::sync::oneshot::Sender<()>,
) -> Result<()> {
    let (mut reader, mut writer) = stream.into_split();
    let writer_totals = totals.clone();
    let writer_chunk = chunk.clone();
    let write = async move {
        let chunk = writer_chunk;
        let mut sent = 0u64;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
            writer.write_all(&chunk).await.context("writing")?;
            sent += chunk.len() as u64;
            writer_totals
                .sent
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        writer.shutdown().await.context("sending EOF")?;
        Ok::<u64, anyhow::Error>(sent)
    };
    let read = async {
        let mut first = Some(first);
        let mut received = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).await.context("reading the echo")?;
            if n == 0 {
                return Ok::<u64, anyhow::Error>(received);
            }
            for (i, byte) in buf[..n].iter().enumerate() {
                let at = (received as usize + i) % chunk.len();
                if *byte != chunk[at] {
                    bail!(
                        "the echo differs from what was sent at byte {}",
                        received as usize + i
                    );
                }
            }
            received += n as u64;
            totals.echoed.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
        }
    };
    let (sent, received) = tokio::try_join!(write, read)?;
    if sent != received {
        bail!("sent {sent} bytes, {received} came back");
    }
    Ok(())
}

impl Failures {
    fn print(&self) {
        for (kind, messages) in &self.0 {
            for (message, count) in messages {
                println!("FAILED {kind} ×{count}: {message}");
            }
        }
    }
}

/// Two columns: what, and its figure.
#[derive(Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, what: &str, figure: impl Into<String>) {
        self.0.push((what.to_owned(), figure.into()));
    }

    fn render(&self) -> String {
        let width = self
            .0
            .iter()
            .map(|(w, _)| w.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<width$}  figure", "load (relay process only)");
        let _ = writeln!(out, "{}", "-".repeat(width + 40));
        for (what, figure) in &self.0 {
            let _ = writeln!(out, "{what:<width$}  {figure}");
        }
        out
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}
