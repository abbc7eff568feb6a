//! Test harness: real components only. `Sshd` runs OpenSSH's sshd on a free loopback
//! port, `Relay` runs the relay in-process (`RelayProcess` as its binary), `Lab` is the two
//! together, `services` are TCP destinations, `web_app` a web app for web forwards, `proxy` a TCP proxy a test can cut, `nginx` nginx as reverse proxy or load balancer, `Browser` drives headless Chromium through
//! chromedriver and `page` the relay's page in it, and `FakeTab` speaks frames by hand.
//! Everything started here is stopped on drop.

pub mod browser;
pub mod fake_tab;
pub mod lab;
pub mod nginx;
pub mod page;
pub mod proxy;
pub mod relay;
pub mod services;
pub mod sshd;
pub mod web_app;

use std::time::{Duration, Instant};

/// The test user, defined beside the sshd that logs it in.
pub use sshd::{TEST_PASSWORD, TEST_USER};

/// Polls `check` every few milliseconds until it returns `Some` or `deadline` passes.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if start.elapsed() > deadline {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Samples a growing count every 100 ms until it stays the same for a whole second, and
/// returns it: for "the sender has stopped" when a flow is held back.
pub async fn wait_until_steady(
    what: &str,
    deadline: Duration,
    mut sample: impl FnMut() -> u64,
) -> anyhow::Result<u64> {
    let start = Instant::now();
    let (mut last, mut unchanged) = (sample(), 0);
    while start.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sample();
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
        if unchanged >= 10 {
            return Ok(now);
        }
    }
    anyhow::bail!("{what} was still changing after {deadline:?} (last {last})")
}

/// Waits until nothing listens on `addr` any more (it can be bound again).
pub async fn wait_until_port_free(addr: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("{addr} to be free"),
        Duration::from_secs(10),
        || async { std::net::TcpListener::bind(addr).ok().map(drop) },
    )
    .await
}

/// Logs to the test's output when RUST_LOG is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Deterministic pseudo-random bytes (xorshift), so transfers are not all-zero.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Options for logging in to `sshd` as its test user with its password, through the
/// relay's target `sshd`, expecting sshd's real host key. Tests change what they test.
pub fn sshd_login(sshd: &sshd::Sshd) -> tabtunnel_client::ConnectOptions {
    tabtunnel_client::ConnectOptions {
        keepalive: None,
        token: None,
        target: "sshd".into(),
        username: sshd.user.into(),
        auth: tabtunnel_client::Auth::Password(sshd.password.into()).into(),
        host_key: tabtunnel_client::HostKeyPolicy {
            pinned: vec![],
            expected: Some(sshd.host_key_fingerprint.clone()),
            ask: None,
            known_hosts: None,
        },
    }
}

/// [`sshd_login`] with sshd's test client key (ed25519) instead of the password.
pub fn sshd_key_login(sshd: &sshd::Sshd) -> tabtunnel_client::ConnectOptions {
    tabtunnel_client::ConnectOptions {
        auth: tabtunnel_client::Auth::PrivateKey {
            pem: sshd.client_key.clone(),
            passphrase: None,
        }
        .into(),
        ..sshd_login(sshd)
    }
}

/// Logs in through the relay at `ws_url` with `options`.
pub async fn log_in(
    ws_url: &str,
    options: tabtunnel_client::ConnectOptions,
) -> Result<tabtunnel_client::Session, tabtunnel_client::ClientError> {
    let transport = tabtunnel_client::native::NativeTransport::connect(ws_url).await?;
    tabtunnel_client::connect(transport, options).await
}

/// Opens a native transport to `ws_url` each time it is called: what a session of
/// `connect_resilient` reconnects with.
pub fn dial(ws_url: &str) -> tabtunnel_client::Dial<tabtunnel_client::native::NativeTransport> {
    let url = ws_url.to_owned();
    std::sync::Arc::new(move || {
        let url = url.clone();
        Box::pin(async move { tabtunnel_client::native::NativeTransport::connect(&url).await })
    })
}

/// A process's resident and peak resident memory in bytes, from /proc/PID/status
/// (VmRSS, VmHWM).
pub fn process_memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/status has no {name}"))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
