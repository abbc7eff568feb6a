//! The relay, in-process on a free loopback port, stopped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tabtunnel_relay::{AppState, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Forward ports the tests use: below Linux's ephemeral range, so outgoing
/// connections of other tests never hold them.
pub const TEST_FORWARD_PORTS: std::ops::RangeInclusive<u16> = 20000..=29999;

/// Holds a port inside [`TEST_FORWARD_PORTS`], as another process on the relay host
/// would; the port stays taken while the listener lives.
pub fn occupy_forward_port() -> Result<std::net::TcpListener> {
    TEST_FORWARD_PORTS
        .clone()
        .find_map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
        .ok_or_else(|| anyhow::anyhow!("no free port in {TEST_FORWARD_PORTS:?}"))
}

/// A token file (`NAME TOKEN` lines) in a folder of its own, removed on drop.
#[derive(Debug)]
pub struct TokenFile {
    dir: tempfile::TempDir,
}

impl TokenFile {
    pub fn new(lines: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("tokens"), lines)?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }
}

/// A config with the test defaults (the test port range, the built page), then the
/// settings of `toml`, target "sshd" at `sshd`, and the tokens of `tokens`.
pub fn test_config(toml: &str, sshd: &str, tokens: Option<&TokenFile>) -> Result<Config> {
    let mut config = Config::from_toml(toml)?;
    config.forward_ports = TEST_FORWARD_PORTS;
    config.web_dir = Some(web_dir());
    config.add_target("sshd", sshd, "test")?;
    if let Some(tokens) = tokens {
        config.load_tokens(&tokens.path())?;
    }
    Ok(config)
}

#[derive(Debug)]
pub struct Relay {
    pub addr: SocketAddr,
    /// Serves HTTPS and wss:// (its config names a certificate).
    pub tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Relay {
    /// A relay with `targets` (name, host:port) and test defaults otherwise.
    pub async fn start(targets: &[(&str, &str)]) -> Result<Self> {
        let mut config = Config {
            forward_ports: TEST_FORWARD_PORTS,
            web_dir: Some(web_dir()),
            ..Config::default()
        };
        for (name, address) in targets {
            config.add_target(name, address, "test")?;
        }
        Self::start_with(config).await
    }

    pub async fn start_with(config: Config) -> Result<Self> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = AppState::new(config)?;
        let tls = state.tls();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tabtunnel_relay::run(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            tls,
            stop: Some(stop),
            task,
        })
    }

    /// Shuts the relay down as SIGTERM does: sessions are told, then it stops.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        tokio::time::timeout(std::time::Duration::from_secs(15), task).await???;
        Ok(())
    }

    /// `ws://127.0.0.1:PORT/ws` (`wss://` with TLS).
    pub fn ws_url(&self) -> String {
        ws_url(self.addr, self.tls)
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn http_url(&self) -> String {
        http_url(self.addr, self.tls)
    }

    /// `GET path` over plain HTTP/1.0 (for /metrics and /healthz); the whole response.
    pub async fn get(&self, path: &str) -> Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok(response)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// The page's folder: `TABTUNNEL_WEB_DIR`, or `web/` of this repository.
pub fn web_dir() -> PathBuf {
    std::env::var_os("TABTUNNEL_WEB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web"))
}

/// The real `relay` binary as a child process (for what in-process cannot show: signals,
/// a frozen process, its own logs), killed on drop. Its stdout and stderr are drained
/// all the time, since a full pipe would stall it, and kept for the test to read.
#[derive(Debug)]
pub struct RelayProcess {
    pub child: tokio::process::Child,
    /// `127.0.0.1:PORT` it serves on.
    pub addr: String,
    /// It said it serves https://.
    pub tls: bool,
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    drains: Vec<JoinHandle<()>>,
}

impl RelayProcess {
    /// Starts `relay --listen 127.0.0.1:0 --forward-ports <test range>` plus `args`, with
    /// RUST_LOG=`log`, and waits until it says where it serves.
    pub async fn start(args: &[&str], log: &str) -> Result<Self> {
        Self::start_limited(args, log, None).await
    }

    /// [`RelayProcess::start`], with the open-files limit (soft and hard) set to
    /// `open_files` as `ulimit -n` would (through util-linux's `prlimit`, which then runs
    /// the relay in its own process).
    pub async fn start_limited(args: &[&str], log: &str, open_files: Option<u64>) -> Result<Self> {
        Self::start_at("127.0.0.1:0", args, log, open_files).await
    }

    /// [`RelayProcess::start_limited`], serving on `listen` (a relay started again on the
    /// address of one that stopped, as behind a load balancer).
    pub async fn start_at(
        listen: &str,
        args: &[&str],
        log: &str,
        open_files: Option<u64>,
    ) -> Result<Self> {
        Self::spawn(relay_binary()?, None, listen, args, log, open_files).await
    }

    /// Copies the relay binary alone into the empty folder `dir` and starts it there
    /// (its working directory), as an operator who copied the one file would.
    pub async fn start_alone_in(dir: &Path, args: &[&str], log: &str) -> Result<Self> {
        anyhow::ensure!(
            std::fs::read_dir(dir)?.next().is_none(),
            "{} is not empty",
            dir.display()
        );
        let copy = dir.join("relay");
        std::fs::copy(relay_binary()?, &copy)?;
        Self::spawn(copy, Some(dir), "127.0.0.1:0", args, log, None).await
    }

    async fn spawn(
        binary: PathBuf,
        cwd: Option<&Path>,
        listen: &str,
        args: &[&str],
        log: &str,
        open_files: Option<u64>,
    ) -> Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let mut command = match open_files {
            None => tokio::process::Command::new(binary),
            Some(n) => {
                let mut command = tokio::process::Command::new("prlimit");
                command
                    .arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(binary);
                command
            }
        };
        let range = format!(
            "{}-{}",
            TEST_FORWARD_PORTS.start(),
            TEST_FORWARD_PORTS.end()
        );
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        let mut child = command
            .args(["--listen", listen, "--forward-ports", &range])
            .args(args)
            .env("RUST_LOG", log)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = oneshot::channel();
        let mut addr_tx = Some(addr_tx);
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let sink = output.clone();
        let out_drain = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // "tabtunnel relay: open http://ADDR/ in a browser" (or https://)
                if let Some(url) = line.strip_prefix("tabtunnel relay: open ")
                    && let Some((scheme, rest)) = url.split_once("://")
                    && let Some(tx) = addr_tx.take()
                {
                    let addr = rest.split('/').next().unwrap_or_default().to_owned();
                    let _ = tx.send((scheme == "https", addr));
                }
                sink.lock().expect("output").push(line);
            }
        });
        let sink = output.clone();
        let err_drain = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("output").push(line);
            }
        });
        let (tls, addr) = tokio::time::timeout(std::time::Duration::from_secs(30), addr_rx)
            .await
            .map_err(|_| anyhow::anyhow!("the relay did not say where it serves within 30 s"))??;
        Ok(Self {
            child,
            addr,
            tls,
            output,
            drains: vec![out_drain, err_drain],
        })
    }

    pub fn ws_url(&self) -> String {
        ws_url(&self.addr, self.tls)
    }

    pub fn http_url(&self) -> String {
        http_url(&self.addr, self.tls)
    }

    pub fn pid(&self) -> Result<u32> {
        self.child
            .id()
            .ok_or_else(|| anyhow::anyhow!("the relay has exited"))
    }

    /// Everything it printed so far, one line each.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().expect("output").clone()
    }

    /// Sends SIGTERM and checks the shutdown a tab must see: `session` is told the relay is
    /// shutting down, the relay exits 0, and the forward's port `listen` is free again.
    pub async fn terminate_cleanly(
        &mut self,
        session: &tabtunnel_client::Session,
        listen: &str,
    ) -> Result<()> {
        use std::time::Duration;
        crate::sshd::signal(self.pid()?, "TERM")?;
        let reason = tokio::time::timeout(Duration::from_secs(15), session.closed()).await?;
        anyhow::ensure!(
            reason.contains("the relay is shutting down"),
            "the tab was told: {reason}"
        );
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await??;
        anyhow::ensure!(status.success(), "the relay exited with {status}");
        crate::wait_until_port_free(listen).await
    }

    /// Waits up to `limit` for it to exit by itself; its exit status and everything it
    /// printed, to the last line.
    pub async fn exited(
        mut self,
        limit: std::time::Duration,
    ) -> Result<(std::process::ExitStatus, Vec<String>)> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("the relay did not exit within {limit:?}"))??;
        for drain in std::mem::take(&mut self.drains) {
            let _ = tokio::time::timeout(limit, drain).await;
        }
        Ok((status, self.output()))
    }

    /// Kills it and returns everything it printed.
    pub async fn kill(mut self) -> Result<Vec<String>> {
        self.child.kill().await?;
        for drain in std::mem::take(&mut self.drains) {
            let _ = drain.await;
        }
        Ok(self.output())
    }
}

/// Names the relay binary the tests run instead of the build's own: a dist build, say
/// `TABTUNNEL_RELAY_BIN=target/dist/relay` (a relative path is from the repository root).
pub const RELAY_BIN_VAR: &str = "TABTUNNEL_RELAY_BIN";

/// The `relay` binary the tests run: [`RELAY_BIN_VAR`]'s, else the one of the profile this
/// program was built with (a test runs from `target/<profile>/deps/`, a binary such as the
/// bench from `target/<profile>/`).
pub fn relay_binary() -> Result<PathBuf> {
    if let Some(given) = std::env::var_os(RELAY_BIN_VAR).filter(|v| !v.is_empty()) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let binary = root.join(given);
        anyhow::ensure!(
            binary.is_file(),
            "{RELAY_BIN_VAR} names {}, which is not a file",
            binary.display()
        );
        return Ok(binary);
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no target folder"))?;
    let profile_dir = if dir.ends_with("deps") {
        dir.parent()
            .ok_or_else(|| anyhow::anyhow!("no target folder"))?
    } else {
        dir
    };
    let binary = profile_dir.join("relay");
    let release = if profile_dir.ends_with("release") {
        " --release"
    } else {
        ""
    };
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: run `cargo build{release} -p tabtunnel-relay`",
        binary.display()
    );
    Ok(binary)
}

/// The WebSocket address of a relay serving on `addr`.
fn ws_url(addr: impl std::fmt::Display, tls: bool) -> String {
    let s = if tls { "s" } else { "" };
    format!("ws{s}://{addr}/ws")
}

/// The page's address of a relay serving on `addr`.
fn http_url(addr: impl std::fmt::Display, tls: bool) -> String {
    let s = if tls { "s" } else { "" };
    format!("http{s}://{addr}")
}
