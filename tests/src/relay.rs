//! The relay, in-process on a free loopback port, stopped on drop.

use std::net::SocketAddr;
use std::path::PathBuf;

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

#[derive(Debug)]
pub struct Relay {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Relay {
    /// A relay with `targets` (name, host:port) and test defaults otherwise.
    pub async fn start(targets: &[(&str, &str)]) -> Result<Self> {
        let mut config = Config {
            forward_ports: TEST_FORWARD_PORTS,
            web_dir: web_dir(),
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
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tabtunnel_relay::run(
            listener,
            AppState::new(config),
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            addr,
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

    /// `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
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
