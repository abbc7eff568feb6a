//! A forward and its connections: each TCP client the relay accepts becomes a
//! direct-tcpip channel through the SSH server, with EOF passed on in each direction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::channel::oneshot;
use russh::ChannelMsg;
use tabtunnel_proto::{ConnFlow, Frame};
use tokio::sync::mpsc;
use tracing::debug;

use crate::ClientError;
use crate::session::{Owner, Shared};
use crate::spec::ForwardSpec;

/// Live counters of a forward.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Connections accepted so far.
    pub connections: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
    /// Bytes from TCP clients to the destination.
    pub bytes_up: AtomicU64,
    /// Bytes from the destination to TCP clients.
    pub bytes_down: AtomicU64,
    /// Connections that failed: refused by the relay (source not allowed, a limit) or
    /// the SSH server, or broken before their orderly end.
    pub failures: AtomicU64,
    /// The last such failure, for the page's row.
    pub last_error: Mutex<Option<String>>,
}

/// A snapshot of [`ForwardStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections: u64,
    pub active: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

impl ForwardStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("stats lock").clone(),
        }
    }
}

/// A forward the relay listens for.
#[derive(Clone)]
pub struct Forward {
    owner: Arc<Owner>,
    id: u32,
    spec: Arc<ForwardSpec>,
    listen: String,
    stats: Arc<ForwardStats>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("id", &self.id)
            .field("spec", &self.spec)
            .field("listen", &self.listen)
            .finish()
    }
}

impl Forward {
    pub(crate) fn new(
        owner: Arc<Owner>,
        id: u32,
        spec: Arc<ForwardSpec>,
        listen: String,
        stats: Arc<ForwardStats>,
    ) -> Self {
        Self {
            owner,
            id,
            spec,
            listen,
            stats,
        }
    }

    /// Where TCP clients connect, on the relay host (`127.0.0.1:10080`).
    pub fn listen(&self) -> &str {
        &self.listen
    }

    pub fn spec(&self) -> &ForwardSpec {
        &self.spec
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops listening and ends this forward's connections.
    pub async fn close(&self) -> Result<(), ClientError> {
        let conns = {
            let mut state = self.owner.shared.state.lock().expect("state lock");
            if state.forwards.remove(&self.id).is_none() {
                return Ok(()); // already closed
            }
            state.conns.forget_forward(self.id)
        };
        // Dropping the entries drops their abort guards: each pump stops now.
        drop(conns);
        self.owner
            .shared
            .send(Frame::Unlisten { forward: self.id })
            .await
    }
}

/// How long the SSH server may take to open a connection's channel (sshd's own connect
/// to the destination included).
const CHANNEL_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the demultiplexer passes to a connection, in wire order.
#[derive(Debug)]
pub(crate) enum ConnInput {
    Data(Bytes),
    Eof,
    /// The relay closed the connection in order: finish what is queued, then stop.
    /// Carries the connection's abort guard, so it fires only once this is processed.
    Close(oneshot::Sender<()>),
}

/// One accepted connection's pump between the relay and an SSH channel.
pub(crate) struct ConnPump {
    pub shared: Arc<Shared>,
    pub conn: u32,
    pub spec: Arc<ForwardSpec>,
    pub peer: String,
    pub stats: Arc<ForwardStats>,
    /// Its window and credit, shared with the demultiplexer's connection table.
    pub flow: Arc<ConnFlow>,
}

enum Ending {
    /// Both directions finished, or the server closed the channel: tell the relay.
    Orderly,
    /// The relay closed the connection: it has forgotten it already.
    RelayClosed,
    Failed(String),
}

impl ConnPump {
    /// Runs until the connection ends. `abort` resolves when the session drops the
    /// connection's entry: the relay aborted it, or its forward or session closed.
    pub(crate) async fn run(
        self,
        input: mpsc::UnboundedReceiver<ConnInput>,
        abort: oneshot::Receiver<()>,
    ) {
        let conn = self.conn;
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        let ending = self.pump(input, abort).await;
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        let reason = match ending {
            Ending::RelayClosed => None,
            Ending::Orderly => Some(String::new()),
            Ending::Failed(reason) => {
                debug!(conn, %reason, "connection failed");
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                *self.stats.last_error.lock().expect("stats lock") = Some(reason.clone());
                Some(reason)
            }
        };
        // Forget the id first, so frames still on the wire are ignored; then tell the
        // relay, unless it already forgot the connection (it closed it, or Unlisten).
        let still_known = {
            let mut state = self.shared.state.lock().expect("state lock");
            state.conns.forget(conn).is_some()
        };
        if let (true, Some(reason)) = (still_known, reason) {
            let _ = self.shared.send(Frame::Close { conn, reason }).await;
        }
    }

    async fn pump(
        &self,
        mut input: mpsc::UnboundedReceiver<ConnInput>,
        mut abort: oneshot::Receiver<()>,
    ) -> Ending {
        let Some(ssh) = self.shared.ssh.get() else {
            return Ending::Failed("the SSH session is not ready".into());
        };
        let (peer_host, peer_port) = split_peer(&self.peer);
        let destination = format!("{}:{}", self.spec.host, self.spec.host_port);
        let open = ssh.channel_open_direct_tcpip(
            self.spec.host.as_str(),
            u32::from(self.spec.host_port),
            peer_host,
            peer_port,
        );
        // A server that never answers (a destination that drops SYNs, a hung sshd) must
        // not hold the TCP client, and the relay's cap on waiting connections, forever.
        let opened = futures::future::select(
            Box::pin(open),
            Box::pin(crate::rt::sleep(CHANNEL_OPEN_TIMEOUT)),
        )
        .await;
        let opened = match opened {
            futures::future::Either::Left((opened, _)) => opened,
            futures::future::Either::Right(_) => {
                return Ending::Failed(format!(
                    "the SSH server did not open a channel to {destination} within {} s; check that it can reach that address",
                    CHANNEL_OPEN_TIMEOUT.as_secs()
                ));
            }
        };
        let channel = match opened {
            Ok(channel) => channel,
            Err(err) => {
                return Ending::Failed(
                    ClientError::ChannelRefused {
                        destination,
                        reason: describe_open_failure(&err),
                    }
                    .to_string(),
                );
            }
        };
        let (mut reader, writer) = channel.split();
        let grant = self.flow.initial_grant();
        if self
            .shared
            .send(Frame::Credit {
                conn: self.conn,
                bytes: grant,
            })
            .await
            .is_err()
        {
            return Ending::RelayClosed;
        }

        // relay -> SSH channel; credit returns to the relay as russh takes the bytes.
        let to_ssh = async {
            while let Some(item) = input.recv().await {
                match item {
                    ConnInput::Data(data) => {
                        let len = data.len();
                        if let Err(err) = writer.data_bytes(data).await {
                            return Err(format!("SSH channel write failed: {err}"));
                        }
                        self.stats.bytes_up.fetch_add(len as u64, Ordering::Relaxed);
                        if let Some(bytes) = self.flow.consumed(len) {
                            let _ = self
                                .shared
                                .send(Frame::Credit {
                                    conn: self.conn,
                                    bytes,
                                })
                                .await;
                        }
                    }
                    // Keep reading after Eof: a Close may follow while the other
                    // direction still runs.
                    ConnInput::Eof => {
                        let _ = writer.eof().await;
                    }
                    ConnInput::Close(_guard) => return Ok(()),
                }
            }
            Ok(())
        };

        // SSH channel -> relay, within the relay's credit.
        let from_ssh = async {
            loop {
                match reader.wait().await {
                    Some(ChannelMsg::Data { mut data }) => {
                        while !data.is_empty() {
                            let n = self.flow.credit().take(data.len()).await;
                            let chunk = data.split_to(n);
                            if self
                                .shared
                                .send(Frame::Data {
                                    conn: self.conn,
                                    data: chunk,
                                })
                                .await
                                .is_err()
                            {
                                return Ok(());
                            }
                            self.stats.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    Some(ChannelMsg::Eof) => {
                        if self
                            .shared
                            .send(Frame::Eof { conn: self.conn })
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                    Some(ChannelMsg::Close) => return Ok(()),
                    // No Close first: the SSH session ended under this connection.
                    None => {
                        return Err("the SSH session ended before the connection closed".to_owned());
                    }
                    Some(_) => {}
                }
            }
        };

        tokio::pin!(to_ssh, from_ssh);
        let ending = tokio::select! {
            biased;
            result = &mut to_ssh => match result {
                Ok(()) => Ending::RelayClosed,
                Err(reason) => Ending::Failed(reason),
            },
            _ = &mut abort => Ending::RelayClosed,
            result = &mut from_ssh => match result {
                Ok(()) => Ending::Orderly,
                Err(reason) => Ending::Failed(reason),
            },
        };
        let _ = writer.close().await;
        ending
    }
}

/// `127.0.0.1:5555` or `[::1]:5555` into originator host and port.
fn split_peer(peer: &str) -> (String, u32) {
    match peer.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port.parse().unwrap_or(0),
        ),
        None => (peer.to_owned(), 0),
    }
}

pub(crate) fn describe_open_failure(err: &russh::Error) -> String {
    use russh::ChannelOpenFailure as F;
    match err {
        russh::Error::ChannelOpenFailure(F::AdministrativelyProhibited) => {
            "the SSH server does not allow forwarding to that destination (AllowTcpForwarding / PermitOpen)".into()
        }
        russh::Error::ChannelOpenFailure(F::ConnectFailed) => {
            "the SSH server could not connect to it (refused or unreachable from the server)".into()
        }
        russh::Error::ChannelOpenFailure(F::ResourceShortage) => "the SSH server is out of resources".into(),
        russh::Error::ChannelOpenFailure(F::UnknownChannelType) => "the SSH server does not support port forwarding".into(),
        other => other.to_string(),
    }
}
