//! The session's socket to its SSH server: one pump each way between it and the tab,
//! and how it ended. Both pumps end with the pipe.

use bytes::Bytes;
use tabtunnel_proto::{Frame, MAX_DATA};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::outgoing::Outgoing;

/// Ssh frames queued for the SSH server's socket.
const SSH_QUEUE: usize = 16;

#[derive(Debug)]
pub(crate) struct SshPipe {
    to_ssh: mpsc::Sender<Bytes>,
    /// SSH server -> tab; ends with how the server's side ended.
    reader: AbortOnDropHandle<Ending>,
    /// The reader stopped because the tab's queue closed: its result has been taken,
    /// and a finished task's handle must not be polled again (tokio panics).
    tab_gone: bool,
    _writer: AbortOnDropHandle<()>,
}

impl SshPipe {
    /// Starts both pumps, in the caller's span.
    pub(crate) fn start(stream: TcpStream, out: mpsc::Sender<Outgoing>) -> Self {
        let (read, write) = stream.into_split();
        let (to_ssh, rx) = mpsc::channel(SSH_QUEUE);
        Self {
            to_ssh,
            reader: AbortOnDropHandle::new(tokio::spawn(from_ssh(read, out).in_current_span())),
            tab_gone: false,
            _writer: AbortOnDropHandle::new(tokio::spawn(
                to_ssh_server(write, rx).in_current_span(),
            )),
        }
    }

    /// Queues the tab's SSH bytes for the server. A closed socket is reported by
    /// [`SshPipe::closed`], not here.
    pub(crate) async fn send(&self, data: Bytes) {
        let _ = self.to_ssh.send(data).await;
    }

    /// Resolves when the server's side has ended: `None` for an orderly close, else the
    /// error. Cancel-safe, so a loop may race it; call it until it resolves, not after.
    pub(crate) async fn closed(&mut self) -> Option<std::io::Error> {
        if self.tab_gone {
            return std::future::pending().await;
        }
        match (&mut self.reader).await {
            Ok(Ending::Closed) => None,
            Ok(Ending::Failed(err)) => Some(err),
            // The session is ending by another way, which it reports itself.
            Ok(Ending::TabGone) => {
                self.tab_gone = true;
                std::future::pending().await
            }
            Err(err) => Some(std::io::Error::other(format!(
                "the relay's reader of the SSH server failed: {err}"
            ))),
        }
    }
}

/// How the SSH server -> tab pump ended.
#[derive(Debug)]
enum Ending {
    Closed,
    Failed(std::io::Error),
    /// The queue to the tab closed first.
    TabGone,
}

/// SSH server -> tab, until the server's side ends or the tab's queue closes.
async fn from_ssh(mut ssh: tokio::net::tcp::OwnedReadHalf, out: mpsc::Sender<Outgoing>) -> Ending {
    let mut buf = vec![0u8; MAX_DATA];
    loop {
        ack_at_once(ssh.as_ref());
        match ssh.read(&mut buf).await {
            Ok(0) => return Ending::Closed,
            Ok(n) => {
                let frame = Frame::Ssh(Bytes::copy_from_slice(&buf[..n]));
                if out.send(Outgoing::Frame(frame)).await.is_err() {
                    return Ending::TabGone;
                }
            }
            Err(err) => return Ending::Failed(err),
        }
    }
}

/// Asks the kernel to acknowledge what the SSH server sends at once. OpenSSH's sshd
/// sets no TCP_NODELAY on a session without a terminal, so when it writes twice in a row
/// (a channel's open confirmation, then the channel's first bytes), Nagle holds the
/// second write until the first is acknowledged, and Linux delays that acknowledgement
/// by up to 40 ms: the first byte of a new forwarded connection waited that long.
/// Quick-ack mode does not stick (the kernel leaves it as it sees fit), so it is
/// re-armed before every read; a setsockopt is cheap next to a read of up to 64 KiB.
fn ack_at_once(socket: &TcpStream) {
    #[cfg(target_os = "linux")]
    let _ = socket2::SockRef::from(socket).set_tcp_quickack(true);
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Tab -> SSH server.
async fn to_ssh_server(mut ssh: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(data) = rx.recv().await {
        if ssh.write_all(&data).await.is_err() {
            return; // the reader reports the failure
        }
    }
    let _ = ssh.shutdown().await;
}
