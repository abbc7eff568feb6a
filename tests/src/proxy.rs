//! A TCP proxy on loopback that a test can cut: every connection through it ends at once,
//! as when a laptop's Wi-Fi drops or a load balancer restarts, while new connections
//! pass again. Both sides see their socket close without a WebSocket close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Forwards every connection to `target` until cut or dropped.
#[derive(Debug)]
pub struct CutProxy {
    /// Where clients connect instead of `target`.
    pub addr: SocketAddr,
    accept: AbortHandle,
    pipes: Arc<Mutex<Vec<AbortHandle>>>,
    /// While set, new connections are closed as soon as they are accepted.
    down: Arc<AtomicBool>,
    /// Wakes the connections open now to stop carrying bytes, sockets left open.
    freeze: Arc<Notify>,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let pipes: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let down: Arc<AtomicBool> = Arc::default();
        let freeze: Arc<Notify> = Arc::default();
        let accept = tokio::spawn({
            let (pipes, down, freeze) = (pipes.clone(), down.clone(), freeze.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if down.load(Ordering::Relaxed) {
                        continue; // dropped: closed at once
                    }
                    let _ = client.set_nodelay(true);
                    let freeze = freeze.clone();
                    let pipe = tokio::spawn(async move {
                        let frozen = freeze.notified();
                        tokio::pin!(frozen);
                        frozen.as_mut().enable();
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let _ = server.set_nodelay(true);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            () = frozen => {
                                // Both sockets stay open and silent until cut.
                                std::future::pending::<()>().await;
                            }
                        }
                    });
                    let mut pipes = pipes.lock().expect("pipes");
                    pipes.retain(|p| !p.is_finished());
                    pipes.push(pipe.abort_handle());
                }
            }
        })
        .abort_handle();
        Ok(Self {
            addr,
            accept,
            pipes,
            down,
            freeze,
        })
    }

    /// `ws://ADDR/ws` through the proxy.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Ends every connection through the proxy now (both sockets closed); returns how
    /// many were open.
    pub fn cut(&self) -> usize {
        let pipes = std::mem::take(&mut *self.pipes.lock().expect("pipes"));
        let open = pipes.iter().filter(|p| !p.is_finished()).count();
        for pipe in pipes {
            pipe.abort();
        }
        open
    }

    /// Stops every connection open now from carrying bytes, without closing it: a network
    /// gone silent, which neither side notices until its keepalive or pings give up.
    /// New connections pass.
    pub fn freeze(&self) {
        self.freeze.notify_waiters();
    }

    /// Takes the way through down (every connection cut, new ones closed at once) or
    /// brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
        if down {
            self.cut();
        }
    }

    /// `http://ADDR` through the proxy.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections through the proxy now.
    pub fn open(&self) -> usize {
        let mut pipes = self.pipes.lock().expect("pipes");
        pipes.retain(|p| !p.is_finished());
        pipes.len()
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
