//! The SOCKS side of a dynamic forward (`ssh -D`): what it asks of its clients, and
//! each client's handshake on a task of its own. The session decides who may start one
//! and what a finished one opens (see `session::socks`).

use std::net::SocketAddr;
use std::time::Duration;

use tabtunnel_socks::{Credentials, Handshake, Progress, READ_CHUNK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, debug_span};

use crate::connection::{Client, SocksClient};
use crate::listen::Accepted;
use crate::metrics::Metrics;

/// The /metrics reason of a SOCKS client closed in its handshake (malformed, a wrong
/// login, no request in time).
pub(crate) const SOCKS_HANDSHAKE: &str = "socks-handshake";

/// The SOCKS side of a dynamic forward.
pub(crate) struct SocksForward {
    credentials: Credentials,
    /// Its clients' handshakes in progress; dropping the set (the forward closed)
    /// aborts them.
    handshakes: JoinSet<()>,
}

impl SocksForward {
    /// Handshakes still running (finished ones are reaped first, so the set never grows
    /// with the clients a forward ever had).
    pub fn handshaking(&mut self) -> usize {
        while self.handshakes.try_join_next().is_some() {}
        self.handshakes.len()
    }

    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            handshakes: JoinSet::new(),
        }
    }

    /// Starts the handshake of a client the session admitted, within `limit`; a client
    /// that asks for a destination goes back to the session through `to_session`.
    pub fn start(
        &mut self,
        forward: u32,
        stream: TcpStream,
        peer: SocketAddr,
        limit: Duration,
        to_session: mpsc::Sender<Accepted>,
        metrics: std::sync::Arc<Metrics>,
    ) {
        let task = handshake(
            forward,
            stream,
            peer,
            self.credentials.clone(),
            limit,
            (to_session, metrics),
        )
        .instrument(debug_span!("socks", forward, %peer));
        self.handshakes.spawn(task);
    }
}

/// One client's handshake, within `limit`: on a request, the client goes back to the
/// session; on a refusal, it gets its protocol's error reply and is closed. Its log
/// lines are debug only: anyone who reaches the port can send garbage.
async fn handshake(
    forward: u32,
    mut stream: TcpStream,
    peer: SocketAddr,
    credentials: Credentials,
    limit: Duration,
    (to_session, metrics): (mpsc::Sender<Accepted>, std::sync::Arc<Metrics>),
) {
    let mut handshake = Handshake::new(credentials);
    let asked = tokio::time::timeout(limit, async {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            match handshake.feed(&buf[..n]) {
                Ok(Progress::More { reply }) => stream.write_all(&reply).await?,
                Ok(Progress::Request {
                    reply,
                    request,
                    rest,
                }) => {
                    stream.write_all(&reply).await?;
                    return Ok(Ok((request, rest)));
                }
                Err(refusal) => {
                    let _ = stream.write_all(&refusal.reply).await;
                    let _ = stream.shutdown().await;
                    return Ok(Err(refusal.error));
                }
            }
        }
    })
    .await;
    let (request, rest) = match asked {
        Ok(Ok(Ok(asked))) => asked,
        Ok(Ok(Err(error))) => {
            metrics.refused(SOCKS_HANDSHAKE);
            return debug!("SOCKS handshake refused: {error}");
        }
        Ok(Err(err)) => return debug!("SOCKS client left during its handshake: {err}"),
        Err(_) => {
            metrics.refused(SOCKS_HANDSHAKE);
            return debug!(
                "SOCKS client asked for no destination within {}",
                humantime::format_duration(limit)
            );
        }
    };
    let client = SocksClient {
        stream,
        request,
        rest,
    };
    let _ = to_session
        .send(Accepted {
            forward,
            stream: Client::Socks(Box::new(client)),
            peer,
            admitted: None,
        })
        .await;
}
