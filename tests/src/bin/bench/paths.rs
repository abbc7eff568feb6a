//! The paths the bench compares, each a way to reach the same three destinations (an echo
//! service, a bulk sender, a bulk receiver) through the same loopback sshd:
//!
//! - the tab: the relay's page in headless Chromium, through the relay process;
//! - native: the client core (in this process) over tokio-tungstenite, through the relay;
//!   it also opens a `-D` forward, through which the bulk measure moves the same bytes by
//!   SOCKS5 (the SOCKS rows beside the `-L` ones);
//! - `ssh -L`: OpenSSH's own client, no relay, no WebSocket: the reference.
//!
//! A path knows its forwards' listen addresses and which processes do its work, so every
//! measure can run on any path alike.

use std::time::Duration;

use anyhow::{Context, Result};
use tabtunnel_client::native::NativeTransport;
use tabtunnel_client::{ConnectOptions, Forward, Session};
use tabtunnel_e2e::browser::Browser;
use tabtunnel_e2e::page::open_forwards_in_worker;
use tabtunnel_e2e::relay::{RelayProcess, web_dir};
use tabtunnel_e2e::services::{BulkServer, EchoServer};
use tabtunnel_e2e::sshd::{Sshd, free_port};
use tabtunnel_e2e::{pattern, sha256_hex, sshd_key_login, wait_for};

use crate::procs::{ChromiumRole, Group};

pub const MIB: usize = 1 << 20;

/// The table's columns, in order: one per path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    Tab,
    Native,
    SshChacha,
    SshAes,
}

impl Column {
    pub const ALL: [Column; 4] = [Self::Tab, Self::Native, Self::SshChacha, Self::SshAes];

    pub fn label(self) -> &'static str {
        match self {
            Self::Tab => "tab",
            Self::Native => "native",
            Self::SshChacha => "ssh -L chacha20",
            Self::SshAes => "ssh -L aes128-gcm",
        }
    }

    fn cipher(self) -> &'static str {
        match self {
            Self::SshAes => "aes128-gcm@openssh.com",
            _ => "chacha20-poly1305@openssh.com",
        }
    }
}

/// A process (or group of processes) doing a path's work, for the CPU rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Renderer,
    NetworkService,
    OtherChromium,
    Relay,
    Sshd,
    Ssh,
    /// This process: the test's TCP ends and destinations (and the native client core).
    Bench,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Self::Renderer,
        Self::NetworkService,
        Self::OtherChromium,
        Self::Relay,
        Self::Sshd,
        Self::Ssh,
        Self::Bench,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Renderer => "tab renderer",
            Self::NetworkService => "browser network service",
            Self::OtherChromium => "other Chromium processes",
            Self::Relay => "relay",
            Self::Sshd => "sshd",
            Self::Ssh => "ssh",
            Self::Bench => "bench process",
        }
    }
}

/// The destinations every path forwards to, started once.
pub struct Destinations {
    pub echo: EchoServer,
    /// Sends `mib` MiB to each connection.
    pub download: BulkServer,
    /// Receives and hashes what each connection sends.
    pub upload: BulkServer,
    /// What an upload sends, and its hash.
    pub upload_data: Vec<u8>,
    pub upload_sha256: String,
}

impl Destinations {
    pub async fn start(mib: usize) -> Result<Self> {
        let upload_data = pattern(3, mib * MIB);
        Ok(Self {
            echo: EchoServer::start("127.0.0.1").await?,
            download: BulkServer::start(mib * MIB, 9).await?,
            upload: BulkServer::start(0, 9).await?,
            upload_sha256: sha256_hex(&upload_data),
            upload_data,
        })
    }

    /// Forward specs (`0:127.0.0.1:PORT`) for echo, download and upload, in that order.
    fn specs(&self) -> [String; 3] {
        [self.echo.addr, self.download.addr, self.upload.addr]
            .map(|addr| format!("0:127.0.0.1:{}", addr.port()))
    }
}

/// Where a path listens for each destination.
#[derive(Debug, Clone)]
pub struct Forwards {
    pub echo: String,
    pub download: String,
    pub upload: String,
}

impl Forwards {
    fn from(listens: Vec<String>) -> Result<Self> {
        let [echo, download, upload]: [String; 3] = listens
            .try_into()
            .map_err(|l| anyhow::anyhow!("expected three forwards, got {l:?}"))?;
        Ok(Self {
            echo,
            download,
            upload,
        })
    }
}

/// One path, set up with its three forwards; stop it with [`Path::stop`].
pub struct Path {
    pub column: Column,
    pub forwards: Forwards,
    /// The processes that do this path's work, by role.
    pub processes: Vec<(Role, Group)>,
    /// The tab's browser (tab path only), for what only the page can tell.
    pub browser: Option<Browser>,
    /// The relay's pid (tab and native paths).
    pub relay: Option<u32>,
    /// Where a `-D` forward of the path listens (native path only).
    pub socks: Option<String>,
    session: Option<(Session, Vec<Forward>)>,
    _ssh: Option<OpenSsh>,
}

impl Path {
    /// The relay's page in a fresh Chromium, logged in with sshd's test key.
    pub async fn tab(
        relay: &RelayProcess,
        sshd: &Sshd,
        to: &Destinations,
        chromium_args: &[String],
    ) -> Result<Self> {
        let browser = Browser::start_with_args(chromium_args).await?;
        browser.client.goto(&relay.http_url()).await?;
        let listens = open_forwards_in_worker(&browser, sshd, &to.specs()).await?;
        let driver = browser.driver_pid();
        let chromium = |role| Group::Chromium { driver, role };
        Ok(Self {
            column: Column::Tab,
            forwards: Forwards::from(listens)?,
            processes: vec![
                (Role::Renderer, chromium(ChromiumRole::Renderer)),
                (Role::NetworkService, chromium(ChromiumRole::NetworkService)),
                (Role::OtherChromium, chromium(ChromiumRole::Other)),
                (Role::Relay, Group::Pid(relay.pid()?)),
                (Role::Sshd, Group::Below(sshd.pid())),
                (Role::Bench, Group::Pid(std::process::id())),
            ],
            browser: Some(browser),
            relay: Some(relay.pid()?),
            socks: None,
            session: None,
            _ssh: None,
        })
    }

    /// The native client core in this process, through the relay.
    pub async fn native(relay: &RelayProcess, sshd: &Sshd, to: &Destinations) -> Result<Self> {
        let transport = NativeTransport::connect(&relay.ws_url()).await?;
        let options = ConnectOptions {
            keepalive: Some(Default::default()),
            ..sshd_key_login(sshd)
        };
        let session = tabtunnel_client::connect(transport, options).await?;
        let mut forwards = Vec::new();
        for spec in to.specs() {
            forwards.push(session.forward(&spec).await?);
        }
        let listens = forwards.iter().map(|f| f.listen().to_owned()).collect();
        let socks = session.forward("-D 0").await?;
        let socks_listen = socks.listen().to_owned();
        forwards.push(socks);
        Ok(Self {
            column: Column::Native,
            forwards: Forwards::from(listens)?,
            processes: vec![
                (Role::Relay, Group::Pid(relay.pid()?)),
                (Role::Sshd, Group::Below(sshd.pid())),
                (Role::Bench, Group::Pid(std::process::id())),
            ],
            browser: None,
            relay: Some(relay.pid()?),
            socks: Some(socks_listen),
            session: Some((session, forwards)),
            _ssh: None,
        })
    }

    /// OpenSSH's `ssh -N -L` (one process, three forwards) with `column`'s cipher.
    pub async fn ssh(column: Column, sshd: &Sshd, to: &Destinations) -> Result<Self> {
        let ports = [free_port()?, free_port()?, free_port()?];
        let remotes = [to.echo.addr, to.download.addr, to.upload.addr].map(|a| a.port());
        let ssh = OpenSsh::forward(sshd, column.cipher(), &ports, &remotes).await?;
        Ok(Self {
            column,
            forwards: Forwards::from(ports.map(|p| format!("127.0.0.1:{p}")).to_vec())?,
            processes: vec![
                (Role::Ssh, Group::Pid(ssh.0.id())),
                (Role::Sshd, Group::Below(sshd.pid())),
                (Role::Bench, Group::Pid(std::process::id())),
            ],
            browser: None,
            relay: None,
            socks: None,
            session: None,
            _ssh: Some(ssh),
        })
    }

    /// Closes the session, the browser or `ssh`.
    pub async fn stop(mut self) {
        if let Some((session, _forwards)) = self.session.take() {
            session.close().await;
        }
        if let Some(browser) = self.browser.take() {
            browser.stop().await;
        }
    }
}

/// The relay binary (of this bench's build profile) with target "sshd" and the page,
/// as deployed: a process of its own, so its CPU and memory are its alone. The limits
/// are raised where the measures need it: the concurrent measure opens all its
/// connections at once, past the default `pending_accepts_per_forward` (64), which the
/// relay would refuse by design.
pub async fn start_relay(sshd: &Sshd) -> Result<(RelayProcess, tempfile::TempDir)> {
    relay_with_limits(
        sshd,
        "[limits]\nconnections_per_forward = 1000\npending_accepts_per_forward = 1000\n\
         connections_per_ip = 1000\n",
    )
    .await
}

/// The relay binary with target "sshd", the page, and `config` (TOML) as its config
/// file, which lives in the returned directory.
pub async fn relay_with_limits(
    sshd: &Sshd,
    config: &str,
) -> Result<(RelayProcess, tempfile::TempDir)> {
    let dir = tempfile::Builder::new()
        .prefix("tabtunnel-bench-")
        .tempdir()?;
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config)?;
    let target = format!("sshd={}", sshd.address());
    let config_arg = path.display().to_string();
    let web = web_dir().display().to_string();
    let args = [
        "--target",
        &target,
        "--config",
        &config_arg,
        "--web-dir",
        &web,
    ];
    let relay = RelayProcess::start(&args, "warn").await?;
    Ok((relay, dir))
}

/// `ssh -N -L ...` to the bench's sshd, killed on drop.
struct OpenSsh(std::process::Child);

impl OpenSsh {
    async fn forward(sshd: &Sshd, cipher: &str, locals: &[u16], remotes: &[u16]) -> Result<Self> {
        let key = sshd.dir().join("client_ed25519");
        let mut command = std::process::Command::new("ssh");
        command
            .args([
                "-N",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "LogLevel=ERROR", "-c", cipher, "-i"])
            .arg(&key)
            .args(["-p", &sshd.port.to_string()]);
        for (local, remote) in locals.iter().zip(remotes) {
            command.arg("-L");
            command.arg(format!("127.0.0.1:{local}:127.0.0.1:{remote}"));
        }
        let child = command
            .arg(format!("{}@127.0.0.1", sshd.user))
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("starting ssh (openssh-client)")?;
        let guard = Self(child);
        // Probe by binding, not connecting: a connection would be forwarded for real.
        for local in locals {
            wait_for("ssh -L to listen", Duration::from_secs(20), || async {
                std::net::TcpListener::bind(("127.0.0.1", *local))
                    .is_err()
                    .then_some(())
            })
            .await?;
        }
        Ok(guard)
    }
}

impl Drop for OpenSsh {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
