//! OpenSSH's sshd, started for one test on a free loopback port with its own config,
//! host key and client key in a temporary folder, and killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The system user the password tests log in as; `cargo xtask setup` creates it
/// (`xtask/src/e2e.rs` holds the same two values; xtask cannot depend on this heavy crate).
pub const TEST_USER: &str = "tabtunnel-e2e";
/// Its password, set by `cargo xtask setup`.
pub const TEST_PASSWORD: &str = "tabtunnel-e2e-password";

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    pub port: u16,
    /// `SHA256:...` of its host key, from `ssh-keygen -lf`.
    pub host_key_fingerprint: String,
    /// An ed25519 private key (OpenSSH format) that sshd accepts for [`Sshd::user`].
    pub client_key: String,
    pub user: &'static str,
    pub password: &'static str,
    dir: tempfile::TempDir,
}

/// Extra `sshd_config` lines for a test (e.g. `AllowTcpForwarding no`).
#[derive(Debug, Default, Clone)]
pub struct SshdOptions {
    pub extra_config: Vec<String>,
}

impl Sshd {
    pub async fn start() -> Result<Self> {
        Self::start_with(SshdOptions::default()).await
    }

    pub async fn start_with(options: SshdOptions) -> Result<Self> {
        if !Path::new(SSHD).exists() {
            bail!("{SSHD} is missing: install openssh-server (run `cargo xtask setup`)");
        }
        let user_exists = Command::new("id")
            .arg(TEST_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !user_exists.success() {
            bail!(
                "the test user {TEST_USER} does not exist: run `cargo xtask setup` (as root) to create it"
            );
        }
        std::fs::create_dir_all("/run/sshd")
            .context("sshd needs /run/sshd: run `cargo xtask setup` as root")?;
        let dir = tempfile::Builder::new()
            .prefix("tabtunnel-sshd-")
            .tempdir()?;
        // sshd reads authorized_keys as the logged-in user, so the folder must be readable.
        set_mode(dir.path(), 0o755)?;
        let host_key = dir.path().join("host_ed25519");
        let client_key = dir.path().join("client_ed25519");
        keygen(&host_key)?;
        keygen(&client_key)?;
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized)?;
        set_mode(&authorized, 0o644)?;
        let host_key_fingerprint = fingerprint(&host_key.with_extension("pub"))?;

        // Pick a free port, then let sshd bind it; retry if another process took it.
        for _attempt in 0..5 {
            let port = free_port()?;
            let config = dir.path().join("sshd_config");
            let mut text = format!(
                "ListenAddress 127.0.0.1:{port}\n\
                 HostKey {host_key}\n\
                 PidFile none\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 AuthorizedKeysFile {authorized}\n\
                 PasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 PermitRootLogin no\n\
                 AllowUsers {TEST_USER}\n\
                 LogLevel VERBOSE\n",
                host_key = host_key.display(),
                authorized = authorized.display(),
            );
            for line in &options.extra_config {
                text.push_str(line);
                text.push('\n');
            }
            // Defaults last: sshd takes the first value it reads for a keyword.
            text.push_str("AllowTcpForwarding yes\n");
            std::fs::write(&config, text)?;
            let log = std::fs::File::create(dir.path().join("sshd.log"))?;
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting sshd")?;
            let ready = wait_until_listening(&mut child, port).await;
            match ready {
                Ok(true) => {
                    return Ok(Self {
                        child,
                        port,
                        host_key_fingerprint,
                        client_key: std::fs::read_to_string(&client_key)?,
                        user: TEST_USER,
                        password: TEST_PASSWORD,
                        dir,
                    });
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log =
                        std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default();
                    if !log.contains("Address already in use") {
                        bail!("sshd did not start:\n{log}");
                    }
                }
            }
        }
        bail!("sshd found no free port after 5 attempts")
    }

    /// The listening sshd's process id; its sessions are its [`descendants`].
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// TCP connections sshd has open now (established, on its port), from /proc/net/tcp.
    pub fn open_connections(&self) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let port = format!(":{:04X}", self.port);
        table
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&port) && fields[3] == "01"
            })
            .count()
    }

    /// Everything sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Makes a client key with `ssh-keygen` (`kind` and `bits` as its -t and -b, `format`
    /// as its -m: "" for OpenSSH's own, "PEM" or "PKCS8"), lets sshd accept it, and
    /// returns the private key file's text.
    pub fn new_client_key(
        &self,
        kind: &str,
        bits: Option<u32>,
        format: &str,
        passphrase: &str,
    ) -> Result<String> {
        let name = format!(
            "key-{kind}-{}-{format}-{}",
            bits.unwrap_or(0),
            passphrase.len()
        );
        let path = self.dir.path().join(name);
        let mut cmd = Command::new("ssh-keygen");
        cmd.args([
            "-q",
            "-t",
            kind,
            "-N",
            passphrase,
            "-C",
            "tabtunnel-test",
            "-f",
        ])
        .arg(&path);
        if let Some(bits) = bits {
            cmd.args(["-b", &bits.to_string()]);
        }
        if !format.is_empty() {
            cmd.args(["-m", format]);
        }
        let status = cmd
            .stdin(Stdio::null())
            .status()
            .context("running ssh-keygen")?;
        if !status.success() {
            bail!("ssh-keygen -t {kind} -m {format:?} failed");
        }
        let public = std::fs::read_to_string(path.with_extension("pub"))?;
        let authorized = self.dir.path().join("authorized_keys");
        let mut keys = std::fs::read_to_string(&authorized)?;
        keys.push_str(&public);
        std::fs::write(&authorized, keys)?;
        Ok(std::fs::read_to_string(&path)?)
    }
}

impl Sshd {
    /// Stops (SIGSTOP) sshd's per-connection processes: a server that hangs without
    /// closing its TCP connections, as a frozen host does.
    pub fn freeze_sessions(&self) -> Result<usize> {
        // A process may exit between listing and signalling; count those we reached.
        Ok(descendants(self.child.id())
            .into_iter()
            .filter(|pid| signal(*pid, "STOP").is_ok())
            .count())
    }
}

impl Sshd {
    /// Kills sshd entirely, listener and sessions, as a crash would.
    pub fn kill(&mut self) {
        for pid in descendants(self.child.id()) {
            let _ = signal(pid, "KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Restarts sshd as a service restart or a reboot does: every session ends, and a
    /// new daemon with the same host key and config listens on the same port.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("sshd.log"))?;
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(self.dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting sshd again")?;
        let ready = wait_until_listening(&mut child, self.port).await;
        self.child = child;
        if !ready? {
            bail!("sshd did not start again:\n{}", self.log());
        }
        Ok(())
    }

    /// [`Sshd::restart`] with a new host key (a reinstalled server, or someone in the
    /// middle): `host_key_fingerprint` names the new one.
    pub async fn restart_with_new_host_key(&mut self) -> Result<()> {
        let host_key = self.dir.path().join("host_ed25519");
        std::fs::remove_file(&host_key)?;
        std::fs::remove_file(host_key.with_extension("pub"))?;
        keygen(&host_key)?;
        self.host_key_fingerprint = fingerprint(&host_key.with_extension("pub"))?;
        self.restart().await
    }

    /// Kills sshd's per-connection processes: the server closes every session.
    pub fn kill_sessions(&self) -> Result<usize> {
        Ok(descendants(self.child.id())
            .into_iter()
            .filter(|pid| signal(*pid, "KILL").is_ok())
            .count())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Per-connection processes first: a stopped one would outlive the listener.
        for pid in descendants(self.child.id()) {
            let _ = signal(pid, "KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `kill -SIGNAL pid`.
pub fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        // A process that exited meanwhile is the caller's to judge (by the result), not noise.
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

/// Every process below `root`, from /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The parent pid is the second field after the parenthesised command name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Polls until sshd accepts TCP on `port` (true) or exits (false), for at most 10 s.
async fn wait_until_listening(child: &mut Child, port: u16) -> Result<bool> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        // Ready only when sshd's banner arrives: a bare connect can succeed by connecting
        // to itself (the port is in the ephemeral range), and that socket would then hold
        // the port and keep sshd from binding it.
        if let Ok(mut probe) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::AsyncReadExt;
            let mut banner = [0u8; 4];
            let read =
                tokio::time::timeout(Duration::from_secs(5), probe.read_exact(&mut banner)).await;
            if matches!(read, Ok(Ok(_))) && &banner == b"SSH-" {
                return Ok(true);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("sshd did not listen on port {port} within 10 s")
}

fn keygen(path: &Path) -> Result<()> {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "tabtunnel-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .context("running ssh-keygen (install openssh-client)")?;
    if !status.success() {
        bail!("ssh-keygen failed for {}", path.display());
    }
    Ok(())
}

/// The `SHA256:...` field of `ssh-keygen -lf`.
pub fn fingerprint(public_key: &Path) -> Result<String> {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    text.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("unexpected ssh-keygen -lf output: {text:?}"))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
