//! TCP destinations for forwards: what sshd connects to on the test's behalf.

use std::net::SocketAddr;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Echoes every byte back; after the client's EOF it finishes writing and closes, so
/// half-close is observable.
#[derive(Debug)]
pub struct EchoServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(ip: &str) -> Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one connection to a [`BulkServer`] received.
#[derive(Debug, Clone)]
pub struct BulkReport {
    pub received: usize,
    pub received_sha256: String,
}

/// Sends `send` bytes of a known pattern while hashing everything it receives, both
/// at once, then reports what it received.
#[derive(Debug)]
pub struct BulkServer {
    pub addr: SocketAddr,
    pub sent_sha256: String,
    reports: tokio::sync::mpsc::UnboundedReceiver<BulkReport>,
    task: JoinHandle<()>,
}

impl BulkServer {
    pub async fn start(send: usize, seed: u64) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let payload = std::sync::Arc::new(crate::pattern(seed, send));
        let sent_sha256 = crate::sha256_hex(&payload);
        let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (payload, tx) = (payload.clone(), tx.clone());
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    let writer = tokio::spawn(async move {
                        let _ = w.write_all(&payload).await;
                        let _ = w.shutdown().await;
                    });
                    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut received = 0;
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        received += n;
                        sha2::Digest::update(&mut hasher, &buf[..n]);
                    }
                    let _ = writer.await;
                    let received_sha256 = crate::hex(&sha2::Digest::finalize(hasher));
                    let _ = tx.send(BulkReport {
                        received,
                        received_sha256,
                    });
                });
            }
        });
        Ok(Self {
            addr,
            sent_sha256,
            reports,
            task,
        })
    }

    /// The next finished connection's report.
    pub async fn report(&mut self) -> Option<BulkReport> {
        self.reports.recv().await
    }
}

impl Drop for BulkServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to `addr`, sends `data` (then EOF) while reading everything back at once.
/// Returns what was read.
pub async fn exchange(addr: &str, data: &[u8]) -> Result<Vec<u8>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut r, mut w) = stream.into_split();
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await?;
        w.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let mut received = Vec::new();
    r.read_to_end(&mut received).await?;
    writer.await??;
    Ok(received)
}

/// Sends up to `total` bytes to each connection as fast as the connection takes them,
/// from one reused buffer (so a 1 GiB flood costs the test no memory), and counts what
/// it managed to write: the far side of a forward whose reader stops.
#[derive(Debug)]
pub struct FloodServer {
    pub addr: SocketAddr,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: JoinHandle<()>,
}

impl FloodServer {
    pub async fn start(total: u64) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let chunk = crate::pattern(3, 64 * 1024);
                    let mut left = total;
                    while left > 0 {
                        let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        match stream.write(&chunk[..n]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                left -= n as u64;
                                counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok(Self { addr, sent, task })
    }

    /// Bytes written so far, over all connections.
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FloodServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
