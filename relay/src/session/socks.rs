//! Dynamic forwards (`ssh -D`): a forward whose TCP clients speak SOCKS.
//!
//! A ListenSocks opens its listener as a Listen does, under the same rules, and marks the
//! forward as SOCKS. Each client it accepts is admitted as a `-L` client is (allowed
//! sources, the forward's caps, where a client still in its handshake counts as open and
//! as waiting), then gets a task of its own for its handshake, within the operator's
//! `handshake_timeout` and `tabtunnel_socks`' size bounds. A client that asked for a
//! destination comes back through the session's queue of accepted clients; the session
//! then sends the tab a Connect (the destination as the client named it: the relay never
//! resolves a name) and the connection's task replies to the client once the tab answers
//! (see `connection::answer_socks`).
//!
//! A forward without SOCKS credentials would be an open proxy for every host that can
//! reach its port, so it may listen on loopback only.

use std::net::SocketAddr;

use tabtunnel_proto::{ErrorCode, Frame};
use tabtunnel_socks::Credentials;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::{Session, SessionError, deliver};
use crate::config::values::BindAddr;
use crate::connection::{Client, SocksClient};
use crate::listen::Accepted;
use crate::socks_forward::SocksForward;

impl Session {
    /// The frames of dynamic forwards.
    pub(super) async fn on_dynamic_frame(&mut self, frame: Frame) -> Result<(), SessionError> {
        match frame {
            Frame::ListenSocks {
                forward,
                bind,
                port,
                username,
                password,
            } => {
                let credentials = if username.is_empty() {
                    Credentials::None
                } else {
                    Credentials::Password { username, password }
                };
                self.listen_socks(forward, &bind, port, credentials).await
            }
            Frame::OpenFailed {
                conn,
                failure,
                message,
            } => {
                let action = self.conns.handle_open_failed(conn, failure, message)?;
                if deliver(conn, action) {
                    self.last_activity = tokio::time::Instant::now();
                }
                Ok(())
            }
            other => Err(SessionError::protocol(format!(
                "the tab sent a {} frame where none was expected",
                other.name()
            ))),
        }
    }

    /// Opens dynamic forward `forward` on `bind`:`port`, asking `credentials` of its
    /// clients.
    async fn listen_socks(
        &mut self,
        forward: u32,
        bind: &str,
        port: u16,
        credentials: Credentials,
    ) -> Result<(), SessionError> {
        if credentials == Credentials::None {
            let addr = crate::log_limit::clip(bind).parse::<BindAddr>();
            // An address that does not parse gets the Listen's own refusal below.
            if let Ok(addr) = addr
                && !addr.ip().is_loopback()
            {
                let message = format!(
                    "a SOCKS forward on {} without a username and password would be an open proxy for every host that reaches it; set a SOCKS username and password for it, or bind it to loopback (127.0.0.1)",
                    addr.ip()
                );
                return self
                    .refuse_listen(forward, ErrorCode::BindNotAllowed, message)
                    .await;
            }
        }
        let opened = !self.forwards.contains_key(&forward);
        // A SOCKS proxy is no web app: it gets no web URL.
        let web = self.web.take();
        let listened = self.listen(forward, bind, port).await;
        self.web = web;
        listened?;
        if opened && let Some(entry) = self.forwards.get_mut(&forward) {
            entry.socks = Some(SocksForward::new(credentials));
            // As for a Listen: the SSH login succeeded.
            self.login = None;
        }
        Ok(())
    }

    /// Takes a client of a dynamic forward: a new TCP client starts its handshake; a
    /// client past it opens its connection. Any other client is handed back.
    pub(super) async fn socks_client(
        &mut self,
        accepted: Accepted,
    ) -> Result<Option<Accepted>, SessionError> {
        let Accepted {
            forward,
            stream,
            peer,
            admitted,
        } = accepted;
        let is_socks = self
            .forwards
            .get(&forward)
            .is_some_and(|entry| entry.socks.is_some());
        match stream {
            Client::Tcp(stream) if is_socks => {
                self.start_handshake(forward, stream, peer);
                Ok(None)
            }
            Client::Socks(client) if is_socks => {
                self.open_socks(forward, peer, client).await?;
                Ok(None)
            }
            // Its forward closed while it asked: dropped, it closes.
            Client::Socks(_) => Ok(None),
            stream => Ok(Some(Accepted {
                forward,
                stream,
                peer,
                admitted,
            })),
        }
    }

    /// Admits a new TCP client of a dynamic forward and starts its handshake.
    fn start_handshake(&mut self, forward: u32, stream: TcpStream, peer: SocketAddr) {
        let Some(socks) = self
            .forwards
            .get_mut(&forward)
            .and_then(|entry| entry.socks.as_mut())
        else {
            return;
        };
        let handshaking = socks.handshaking();
        // A client in its handshake holds a socket and a task, as one waiting for the
        // tab does: it counts as both open and waiting.
        let open = self.conns.count(forward) + handshaking;
        let waiting = self.conns.unanswered(forward) + handshaking;
        if let Err(refusal) = crate::limits::admit_connection(&self.config, peer, open, waiting) {
            self.refuse_connection(forward, peer, refusal);
            return;
        }
        let (limit, to_session) = (self.config.handshake_timeout, self.accepted_tx.clone());
        let metrics = self.metrics.clone();
        if let Some(socks) = self
            .forwards
            .get_mut(&forward)
            .and_then(|entry| entry.socks.as_mut())
        {
            socks.start(forward, stream, peer, limit, to_session, metrics);
        }
    }

    /// A SOCKS client asked for its destination: the tab is asked to open a connection
    /// to it, and the connection's task answers the client when the tab answers.
    async fn open_socks(
        &mut self,
        forward: u32,
        peer: SocketAddr,
        client: Box<SocksClient>,
    ) -> Result<(), SessionError> {
        let opening = match self.conns.open(forward) {
            Ok(opening) => opening,
            Err(err) => {
                warn!("{err}; refusing {peer}");
                return Ok(());
            }
        };
        let (host, port) = (client.request.host.to_string(), client.request.port);
        debug!(conn = opening.conn, forward, %peer, %host, port, "SOCKS client asked for a destination");
        let connect = Frame::Connect {
            conn: opening.conn,
            forward,
            host,
            port,
            peer: peer.to_string(),
        };
        self.start_connection(opening, connect, Client::Socks(client))
            .await
    }
}
