//! One accepted connection's pump between the relay and a direct-tcpip channel
//! through the SSH server, with EOF passed on in each direction. A SOCKS client's
//! connection (a `-D` forward's) is pumped alike; if its channel cannot be opened, the
//! relay is told why in an OpenFailed, which becomes the client's SOCKS reply. A remote
//! forward's connection (`-R`) comes the other way: the SSH server's forwarded channel,
//! accepted once the relay connected to the destination, and pumped alike.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::channel::oneshot;
use russh::ChannelMsg;
use tabtunnel_proto::{ConnFlow, Frame, OpenFailure, SSH_PACKET_DATA};
use tokio::sync::mpsc;
use tracing::debug;

use crate::error::ClientError;
use crate::mux::{Accepted, ConnInput, Mux};
use crate::ssh::{ForwardedChannel, SshHandle};
use crate::stats::ForwardStats;

/// How long the SSH server may take to open a connection's channel (sshd's own connect
/// to the destination included).
const CHANNEL_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Pumps each connection the mux hands out until the mux ends (its end of the queue
/// closes with it).
pub(crate) async fn serve(
    mux: Arc<Mux>,
    ssh: Arc<SshHandle>,
    mut accepted: mpsc::UnboundedReceiver<Accepted>,
) {
    while let Some(accepted) = accepted.recv().await {
        let Accepted {
            conn,
            host,
            port,
            socks,
            peer,
            stats,
            flow,
            input,
            abort,
        } = accepted;
        let pump = ConnPump {
            mux: mux.clone(),
            ssh: ssh.clone(),
            conn,
            host,
            port,
            socks,
            peer,
            stats,
            flow,
        };
        crate::rt::spawn(pump.run(Opener::DirectTcpip, input, abort));
    }
}

/// One connection's pump between the relay and an SSH channel.
pub(crate) struct ConnPump {
    pub(crate) mux: Arc<Mux>,
    pub(crate) ssh: Arc<SshHandle>,
    pub(crate) conn: u32,
    /// Where its channel goes (for a remote forward: where the relay connects).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// A SOCKS client's connection: a failed open is an OpenFailed.
    pub(crate) socks: bool,
    pub(crate) peer: String,
    pub(crate) stats: Arc<ForwardStats>,
    pub(crate) flow: Arc<ConnFlow>,
}

/// Where a connection's SSH channel comes from.
pub(crate) enum Opener {
    /// The tab opens a direct-tcpip channel to the destination, then grants the relay
    /// its first credit (`-L`, `-D`).
    DirectTcpip,
    /// The SSH server opened a forwarded-tcpip channel (`-R`): accepted once the relay
    /// connected (its first Credit), rejected if it could not (its OpenFailed).
    Forwarded(Box<ForwardedChannel>),
}

enum Ending {
    /// Both directions finished, or the server closed the channel: tell the relay.
    Orderly,
    /// The relay closed the connection: it has forgotten it already.
    RelayClosed,
    Failed(String),
    /// Its channel could not be opened, for a SOCKS client: tell the relay why.
    Refused(OpenFailure, String),
    /// The relay could not connect a remote forward's connection: it forgot it already.
    RelayRefused(String),
}

impl ConnPump {
    /// Runs until the connection ends. `abort` resolves when the mux drops the
    /// connection's entry: the relay aborted it, or its forward or session closed.
    pub(crate) async fn run(
        self,
        opener: Opener,
        input: mpsc::UnboundedReceiver<ConnInput>,
        abort: oneshot::Receiver<()>,
    ) {
        let conn = self.conn;
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        self.stats
            .open(conn, format!("{}:{}", bracketed(&self.host), self.port));
        let ending = self.pump(opener, input, abort).await;
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.stats.closed(conn);
        let last_word = match ending {
            Ending::RelayClosed => None,
            Ending::RelayRefused(reason) => {
                debug!(conn, %reason, "the relay could not connect");
                self.stats.fail(reason);
                None
            }
            Ending::Orderly => Some(Frame::Close {
                conn,
                reason: String::new(),
            }),
            Ending::Failed(reason) => {
                debug!(conn, %reason, "connection failed");
                self.stats.fail(reason.clone());
                Some(Frame::Close { conn, reason })
            }
            Ending::Refused(failure, message) => {
                debug!(conn, ?failure, %message, "connection refused");
                self.stats.fail(message.clone());
                Some(Frame::OpenFailed {
                    conn,
                    failure,
                    message,
                })
            }
        };
        // Forget the id first, so frames still on the wire are ignored; then tell the
        // relay, unless it already forgot the connection (it closed it, or Unlisten).
        let still_known = self.mux.forget_conn(conn);
        if let (true, Some(frame)) = (still_known, last_word) {
            let _ = self.mux.send(frame).await;
        }
    }

    async fn pump(
        &self,
        opener: Opener,
        mut input: mpsc::UnboundedReceiver<ConnInput>,
        mut abort: oneshot::Receiver<()>,
    ) -> Ending {
        let channel = match opener {
            Opener::DirectTcpip => self.open_direct().await,
            Opener::Forwarded(forwarded) => {
                self.answer_forwarded(*forwarded, &mut input, &mut abort)
                    .await
            }
        };
        let channel = match channel {
            Ok(channel) => channel,
            Err(ending) => return ending,
        };
        self.pump_channel(channel, input, abort).await
    }

    /// Waits for the relay's answer to a remote forward's Dial: its first Credit (it
    /// connected) accepts the SSH server's channel; its OpenFailed, or the connection's
    /// end, rejects it.
    async fn answer_forwarded(
        &self,
        forwarded: ForwardedChannel,
        input: &mut mpsc::UnboundedReceiver<ConnInput>,
        abort: &mut oneshot::Receiver<()>,
    ) -> Result<russh::Channel<russh::client::Msg>, Ending> {
        let ForwardedChannel { channel, reply, .. } = forwarded;
        let refused = tokio::select! {
            // The credit first: the relay's Data may be queued already when the pump
            // wakes, and its Credit, which came before it, is the answer.
            biased;
            // `available` takes nothing: the pump spends the credit.
            _ = self.flow.credit().available() => None,
            item = input.recv() => Some(match item {
                Some(ConnInput::Refused(reason)) => Ending::RelayRefused(reason),
                Some(ConnInput::Data(_) | ConnInput::Eof) => Ending::Failed(
                    "the relay sent data before it connected".into(),
                ),
                Some(ConnInput::Close(_)) | None => Ending::RelayClosed,
            }),
            _ = &mut *abort => Some(Ending::RelayClosed),
        };
        if let Some(ending) = refused {
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return Err(ending);
        }
        reply.accept().await;
        Ok(channel)
    }

    /// Opens the direct-tcpip channel to the destination and grants the relay its first
    /// credit.
    async fn open_direct(&self) -> Result<russh::Channel<russh::client::Msg>, Ending> {
        let ssh = &self.ssh;
        let (peer_host, peer_port) = split_peer(&self.peer);
        let destination = format!("{}:{}", bracketed(&self.host), self.port);
        let open = ssh.channel_open_direct_tcpip_described(
            self.host.as_str(),
            u32::from(self.port),
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
                let reason = format!(
                    "the SSH server did not open a channel to {destination} within {} s; check that it can reach that address",
                    CHANNEL_OPEN_TIMEOUT.as_secs()
                );
                return Err(self.open_failed(OpenFailure::TimedOut, reason));
            }
        };
        let channel = match opened {
            Ok(channel) => channel,
            Err(err) => {
                let reason = ClientError::ChannelRefused {
                    destination,
                    reason: describe_open_failure(&err),
                }
                .to_string();
                return Err(self.open_failed(open_failure(&err), reason));
            }
        };
        let grant = self.flow.initial_grant();
        if self
            .mux
            .send(Frame::Credit {
                conn: self.conn,
                bytes: grant,
            })
            .await
            .is_err()
        {
            return Err(Ending::RelayClosed);
        }
        Ok(channel)
    }

    /// Pumps an open channel both ways until the connection ends.
    async fn pump_channel(
        &self,
        channel: russh::Channel<russh::client::Msg>,
        mut input: mpsc::UnboundedReceiver<ConnInput>,
        mut abort: oneshot::Receiver<()>,
    ) -> Ending {
        let (mut reader, writer) = channel.split();

        // relay -> SSH channel; credit returns to the relay as russh takes the bytes.
        let to_ssh = async {
            while let Some(item) = input.recv().await {
                match item {
                    ConnInput::Data(data) => {
                        let len = data.len();
                        // Whole packets whose ciphertext pairs fit one Ssh frame.
                        for start in (0..len).step_by(SSH_PACKET_DATA) {
                            let piece = data.slice(start..len.min(start + SSH_PACKET_DATA));
                            if let Err(err) = writer.data_bytes(piece).await {
                                return Err(format!("SSH channel write failed: {err}"));
                            }
                        }
                        self.stats.bytes_up.fetch_add(len as u64, Ordering::Relaxed);
                        if let Some(bytes) = self.flow.consumed(len) {
                            self.mux.grant(self.conn, bytes);
                        }
                    }
                    // Keep reading after Eof: a Close may follow while the other
                    // direction still runs.
                    ConnInput::Eof => {
                        let _ = writer.eof().await;
                    }
                    ConnInput::Close(_guard) => return Ok(()),
                    // Only a connection the relay has not taken is refused.
                    ConnInput::Refused(_) => return Ok(()),
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
                            let credit = self.flow.credit();
                            let mut n = credit.try_take(data.len());
                            if n == 0 {
                                // Out of credit: say so (the relay may grow the window),
                                // then wait.
                                if credit.ran_dry()
                                    && self
                                        .mux
                                        .send(Frame::Blocked { conn: self.conn })
                                        .await
                                        .is_err()
                                {
                                    return Ok(());
                                }
                                n = credit.take(data.len()).await;
                            }
                            let chunk = data.split_to(n);
                            if self
                                .mux
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
                        if self.mux.send(Frame::Eof { conn: self.conn }).await.is_err() {
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

impl ConnPump {
    /// How a connection whose channel could not be opened ends: a SOCKS client is
    /// answered with `failure`; a `-L` client's connection closes with the reason.
    fn open_failed(&self, failure: OpenFailure, reason: String) -> Ending {
        if self.socks {
            Ending::Refused(failure, reason)
        } else {
            Ending::Failed(reason)
        }
    }
}

/// An IPv6 address in brackets, as `host:port` needs it.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// What an SSH server meant by refusing a channel, in SOCKS terms.
fn open_failure(err: &russh::Error) -> OpenFailure {
    match err {
        russh::Error::ChannelOpenFailed {
            reason,
            description,
        } => OpenFailure::from_ssh(reason.code(), description),
        russh::Error::ChannelOpenFailure(reason) => OpenFailure::from_ssh(reason.code(), ""),
        _ => OpenFailure::General,
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
    let reason;
    let err = match err {
        // The server's own words are for the SOCKS reply code; the page says the reason
        // in its words, as it always has.
        russh::Error::ChannelOpenFailed { reason: why, .. } => {
            reason = russh::Error::ChannelOpenFailure(why.clone());
            &reason
        }
        other => other,
    };
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
