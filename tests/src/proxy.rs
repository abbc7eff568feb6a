//! A TCP proxy on loopback that a test can cut: every connection through it ends at once,
//! as when a laptop's Wi-Fi drops or a load balancer restarts, while new connections
//! pass again. Both sides see their socket close without a WebSocket close.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Forwards every connection to `target` until cut or dropped.
#[derive(Debug)]
pub struct CutProxy {
    /// Where clients connect instead of `target`.
    pub addr: SocketAddr,
    accept: AbortHandle,
    pipes: Arc<Mutex<Vec<AbortHandle>>>,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let pipes: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let pipes = pipes.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let _ = client.set_nodelay(true);
                    let pipe = tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let _ = server.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
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
