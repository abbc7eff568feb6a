//! The SOCKS side of a dynamic forward (`ssh -D`): what it asks of its clients, and
//! each client's handshake on a task of its own. The session decides who may start one
//! and what a finished one opens (see `session::socks`).
//!
//! A forward with a login takes [`WRONG_LOGIN_BURST`] wrong ones at once, then one more
//! every [`WRONG_LOGIN_EVERY`]: its password is the tab user's choice and anyone who
//! reaches the port may guess, from as many addresses as they like, so the budget is the
//! forward's. A client that comes while it is spent is closed before it can try one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tabtunnel_socks::{Credentials, Handshake, HandshakeError, Progress, READ_CHUNK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, debug_span};

use crate::connection::{Client, SocksClient};
use crate::listen::Accepted;
use crate::metrics::Metrics;
use crate::rate::TokenBucket;

/// The /metrics reason of a SOCKS client closed in its handshake (malformed, a wrong
/// login, no request in time).
pub(crate) const SOCKS_HANDSHAKE: &str = "socks-handshake";
/// The /metrics reason of a SOCKS client closed at once: its forward had too many wrong
/// logins of late.
pub(crate) const SOCKS_LOGINS: &str = "socks-logins";

/// Wrong SOCKS logins a forward takes at once.
pub const WRONG_LOGIN_BURST: f64 = 10.0;
/// One more wrong login a forward takes this often.
pub const WRONG_LOGIN_EVERY: Duration = Duration::from_secs(10);

/// Where a handshake reports to.
struct Outlets {
    to_session: mpsc::Sender<Accepted>,
    metrics: Arc<Metrics>,
    wrong_logins: Arc<Mutex<TokenBucket>>,
}

/// The SOCKS side of a dynamic forward.
pub(crate) struct SocksForward {
    credentials: Credentials,
    /// Its clients' handshakes in progress; dropping the set (the forward closed)
    /// aborts them.
    handshakes: JoinSet<()>,
    /// Its budget of wrong logins.
    wrong_logins: Arc<Mutex<TokenBucket>>,
}

impl SocksForward {
    /// Handshakes still running (finished ones are reaped first, so the set never grows
    /// with the clients a forward ever had).
    pub fn handshaking(&mut self) -> usize {
        while self.handshakes.try_join_next().is_some() {}
        self.handshakes.len()
    }

    pub fn new(credentials: Credentials) -> Self {
        let per_sec = 1.0 / WRONG_LOGIN_EVERY.as_secs_f64();
        Self {
            credentials,
            handshakes: JoinSet::new(),
            wrong_logins: Arc::new(Mutex::new(TokenBucket::new(
                WRONG_LOGIN_BURST,
                per_sec,
                Instant::now(),
            ))),
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
        metrics: Arc<Metrics>,
    ) {
        let spent = self.credentials != Credentials::None
            && !self
                .wrong_logins
                .lock()
                .expect("wrong logins lock")
                .ready(Instant::now());
        if spent {
            metrics.refused(SOCKS_LOGINS);
            return debug!(%peer, "SOCKS client closed: too many wrong logins of late");
        }
        let outlets = Outlets {
            to_session,
            metrics,
            wrong_logins: self.wrong_logins.clone(),
        };
        let task = handshake(
            forward,
            stream,
            peer,
            self.credentials.clone(),
            limit,
            outlets,
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
    outlets: Outlets,
) {
    let Outlets {
        to_session,
        metrics,
        wrong_logins,
    } = outlets;
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
                    // Spent before the client hears, so its next try meets the budget.
                    if refusal.error == HandshakeError::WrongCredentials {
                        wrong_logins
                            .lock()
                            .expect("wrong logins lock")
                            .take(Instant::now());
                    }
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
