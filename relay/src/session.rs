//! One task per WebSocket: the Hello handshake, the SSH byte pipe to the target, and
//! the forwards the tab asked for. The session owns every task it starts (its SSH pipe,
//! a listener per forward, a task per connection) and is the only module that knows
//! them all: each part reports how it ended through a type of its own (`listen::Accepted`,
//! `connection::Ended`, `SshPipe::closed`). When the WebSocket ends, everything ends
//! with it.
//!
//! The loop is generic over the WebSocket's two halves (any `Sink`/`Stream` of
//! messages), so tests drive it in memory with hand-made frames.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Message;
use futures::{Sink, Stream, StreamExt};
use tabtunnel_proto::{
    Action, ConnError, ConnTable, ErrorCode, Frame, Opening, Side, UrgentGrants, VERSION, decode,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::Config;
use crate::config::values::BindAddr;
use crate::connection::{self, ConnHandle, ToTcp};
use crate::drain::Shutdown;
use crate::limits::{HelloSlot, LoginSlot, SessionPlace};
use crate::listen::{self, Accepted};
use crate::metrics::{GaugeGuard, Metrics};
use crate::outgoing::{OUT_QUEUE, Outgoing, write_loop};
use crate::parked::{Claimant, LiveSession, ParkedForward, Parking, SecretHash};
use crate::ports::{self, Holder, Lease, RefusalBudget};
use crate::ssh_pipe::SshPipe;

/// How long the relay tries to reach a target's SSH server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the last words (Error, Close) may wait for room in the queue.
const GOODBYE: Duration = Duration::from_secs(2);
/// How long the connections the tab closed in order may go on writing after the session
/// ended (see `Finishing`).
const FINISH_WRITES: Duration = Duration::from_secs(5);
/// Accepted TCP clients queued for the session, from all its forwards.
const ACCEPTED_QUEUE: usize = 64;

/// Why a session ended badly: sent to the tab as an Error frame, then a close code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct SessionError {
    code: ErrorCode,
    message: String,
    /// The /metrics reason: the code's name unless a limit names its own.
    reason: &'static str,
}

impl SessionError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reason: code.as_str(),
        }
    }

    fn refused(refusal: crate::limits::Refusal) -> Self {
        Self {
            reason: refusal.reason,
            ..Self::new(ErrorCode::Limit, refusal.message)
        }
    }

    fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Protocol, message)
    }

    /// RFC 6455 close codes: 1002 protocol error, 1008 policy, 1011 server trouble.
    fn close_code(&self) -> u16 {
        match self.code {
            ErrorCode::Protocol | ErrorCode::Version => 1002,
            ErrorCode::UnknownTarget
            | ErrorCode::Limit
            | ErrorCode::Unauthorized
            | ErrorCode::Idle
            | ErrorCode::SourceNotAllowed => 1008,
            ErrorCode::ShuttingDown => 1001,
            _ => 1011,
        }
    }
}

/// How a session ends when the relay stops: its last words to the tab, which tries again.
fn shutting_down() -> SessionError {
    SessionError::new(
        ErrorCode::ShuttingDown,
        "the relay is shutting down; connect again when it is back",
    )
}

impl From<ConnError> for SessionError {
    fn from(err: ConnError) -> Self {
        Self::protocol(err.to_string())
    }
}

/// Serves one tab's WebSocket, given as its two halves, until it closes. `hello` is
/// its waiting place; the session takes its real places only after a valid Hello (see
/// `limits`). `holder` names the session (its id) and its client address in the book of
/// forward ports.
#[allow(clippy::too_many_arguments)]
pub async fn run<W, R>(
    ws_tx: W,
    mut ws_rx: R,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    peer: crate::ClientAddr,
    shutdown: Shutdown,
    holder: Holder,
    hello: HelloSlot,
    web: Option<crate::web_forward::Offer>,
    parking: Arc<Parking>,
) where
    W: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    metrics.sessions_total.inc();
    let _active = GaugeGuard::new(&metrics.sessions_active);
    let id = holder.session;
    let span = info_span!("session", id, %peer, user = tracing::field::Empty, target = tracing::field::Empty);
    async move {
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let grants = Arc::new(UrgentGrants::default());
        let writer = tokio::spawn(write_loop(ws_tx, out_rx, grants.clone()).in_current_span());
        let result = Session::start(
            &mut ws_rx,
            out_tx.clone(),
            grants,
            config,
            metrics.clone(),
            holder,
            hello,
            parking,
            &shutdown,
        )
        .await;
        // A tab sends nothing after its Hello until the Welcome, so a session that ended
        // before one has nothing to drain; its places are free already.
        let welcomed = result.is_ok();
        let (result, finishing) = match result {
            // Serving consumes the session: its listeners, connections and places end
            // here, but for the writes of connections the tab closed in order.
            Ok(session) => {
                let session = Session { web, ..session };
                session.serve(&mut ws_rx, shutdown).await
            }
            Err(err) => (Err(err), Finishing::default()),
        };
        let (error, close) = last_words(result, &metrics, peer);
        if let Some(error) = error {
            let _ = tokio::time::timeout(GOODBYE, out_tx.send(error)).await;
        }
        // Bounded: the queue may be full of frames for a tab that is gone.
        let _ = tokio::time::timeout(GOODBYE, out_tx.send(close)).await;
        drop(out_tx);
        // The writer may be stuck on a tab that stopped reading: abort it rather than
        // leave it holding the socket (and its connection's place) for ever.
        let mut writer = writer;
        if !welcomed {
            if tokio::time::timeout(GOODBYE, &mut writer).await.is_err() {
                writer.abort();
            }
            return;
        }
        // A clean close: read what the tab still sends until its Close. Dropping a socket
        // with unread data makes the kernel reset it, and the tab could then lose the
        // Error frame that says why the session ended. Bounded: the tab may be gone.
        let drain = async {
            while let Some(Ok(message)) = ws_rx.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(GOODBYE, drain).await;
        finishing.finish().await;
        if tokio::time::timeout(Duration::from_secs(5), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
    .instrument(span)
    .await
}

/// The tasks of connections the tab closed in order just before the session ended,
/// still writing to their TCP clients what the tab sent before its Close: a download
/// that finished in the tab must not lose its tail because the page closed at once.
#[derive(Default)]
struct Finishing(JoinSet<connection::Ended>);

impl Finishing {
    /// Lets them finish, for at most [`FINISH_WRITES`] (a client may have stopped
    /// reading); whatever is left then is cut.
    async fn finish(mut self) {
        if self.0.is_empty() {
            return;
        }
        let all = async { while self.0.join_next().await.is_some() {} };
        if tokio::time::timeout(FINISH_WRITES, all).await.is_err() {
            debug!(
                connections = self.0.len(),
                "cut connections still writing after the session ended"
            );
        }
    }
}

/// What the tab is told as the session ends (an Error frame when it failed, then the
/// Close), logged and counted within the log budget.
fn last_words(
    result: Result<String, SessionError>,
    metrics: &Metrics,
    peer: crate::ClientAddr,
) -> (Option<Outgoing>, Outgoing) {
    match result {
        Ok(reason) => {
            // Within a budget too: sessions that come and go are a flood of their own.
            if let Some(suppressed) = metrics.refusal_log.admit(peer.ip(), "ended") {
                info!(suppressed, "session ended: {reason}");
            }
            (None, Outgoing::Close(1000, reason))
        }
        Err(err) => {
            if let Some(suppressed) = metrics.refusal_log.admit(peer.ip(), "session") {
                info!(
                    code = err.code.as_str(),
                    suppressed, "session failed: {}", err.message
                );
            }
            metrics.refused(err.reason);
            let close = Outgoing::Close(err.close_code(), err.message.clone());
            let error = Outgoing::Frame(Frame::Error {
                code: err.code,
                message: err.message,
            });
            (Some(error), close)
        }
    }
}

struct Session {
    out: mpsc::Sender<Outgoing>,
    /// Credit refills, which the writer sends ahead of `out`.
    grants: Arc<UrgentGrants>,
    config: Arc<Config>,
    /// The socket to the target's SSH server.
    ssh: SshPipe,
    forwards: HashMap<u32, ForwardEntry>,
    /// Remote forwards (`ssh -R`): the destinations the relay dials for them.
    remote: HashMap<u32, crate::dial::RemoteForward>,
    /// The forwarded connections and their rules: ids, Eof, windows, credit.
    conns: ConnTable<ConnHandle>,
    /// Where the forwards' listeners hand over their TCP clients.
    accepted_tx: mpsc::Sender<Accepted>,
    accepted_rx: mpsc::Receiver<Accepted>,
    /// One accept loop per forward; dropping the set stops them all.
    listeners: JoinSet<()>,
    /// One task per connection, each ending with its id; dropping the set aborts them.
    connections: JoinSet<connection::Ended>,
    metrics: Arc<Metrics>,
    /// When the session last opened or closed a forward, or a connection opened or
    /// ended; with no connection open, the idle timeout counts from here. Frames that
    /// change nothing (a refused Listen, an Unlisten of no forward) do not count.
    last_activity: tokio::time::Instant,
    /// The token holder's name, when the relay has tokens.
    owner: Option<String>,
    /// This session's hand in the relay's book of forward ports.
    ports: Holder,
    /// Refused Listens left before the session is ended for asking too often.
    refused_listens: RefusalBudget,
    /// Its place under the session caps, held for its whole life.
    _place: SessionPlace,
    /// Its place among the sessions logging in to the target; dropped at the first Listen.
    login: Option<LoginSlot>,
    /// Where its forwards are offered as web apps, when the relay has web forwards on.
    web: Option<crate::web_forward::Offer>,
    /// Where a lost session parks its forwards, and a resuming one finds them.
    parking: Arc<Parking>,
    /// The hash of the secret this session's Welcome gave (`None`: parking is off).
    resume: Option<SecretHash>,
    /// Its place among the live sessions a returning tab may take over.
    live: Option<LiveSession>,
    /// Who may resume this session.
    claimant: Claimant,
    /// Set when the session ends abnormally (its tab lost or silent, its SSH server's
    /// connection ended): its forwards are then parked rather than freed.
    lost: bool,
    /// The relay drains: the session accepts no TCP client and opens no forward, and
    /// ends when its last connection closes (see `drain`).
    draining: bool,
    /// The forwards of the session this one resumed that no Listen has taken back yet,
    /// by bind address and port; freed at `claim_by`.
    unclaimed: HashMap<(BindAddr, u16), ParkedForward>,
    claim_by: tokio::time::Instant,
}

struct ForwardEntry {
    listener: AbortHandle,
    /// What a Listen asked for and got: a lost session parks it under these.
    bind: BindAddr,
    port: u16,
    /// Shared with the accept loop, so that a lost session can park them.
    listeners: Arc<[TcpListener]>,
    /// The forward's ports in the relay's book, given back when the forward ends.
    lease: Lease,
    active: GaugeGuard,
    /// Its entry among the web forwards: dropping it revokes the forward's URL; a
    /// parked forward keeps it for the session that resumes it.
    web: Option<crate::web_forward::Registration>,
    /// A dynamic forward's SOCKS side (`None`: a `-L` forward). Dropping it stops its
    /// handshakes.
    socks: Option<crate::socks_forward::SocksForward>,
}

impl ForwardEntry {
    /// Stops accepting and keeps what a resuming session needs.
    fn park(self) -> ParkedForward {
        self.listener.abort();
        ParkedForward {
            bind: self.bind,
            port: self.port,
            listeners: self.listeners,
            lease: self.lease,
            active: self.active,
            web: self.web,
        }
    }
}

/// How a tab's WebSocket ended.
enum Heard {
    Frame(Frame),
    /// The tab closed it with a Close message that says it meant to (no code, 1000
    /// normal, 1001 going away: a page closed or reloaded).
    Closed,
    /// It ended otherwise: dropped without a Close, a read error, or a Close with
    /// another code (a tab that reconnects says so with one).
    Lost,
}

impl Session {
    /// Reads the Hello, takes the session's places, reaches the target and answers
    /// Welcome.
    #[allow(clippy::too_many_arguments)]
    async fn start<R>(
        ws_rx: &mut R,
        out: mpsc::Sender<Outgoing>,
        grants: Arc<UrgentGrants>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        ports: Holder,
        mut waiting: HelloSlot,
        parking: Arc<Parking>,
        shutdown: &Shutdown,
    ) -> Result<Self, SessionError>
    where
        R: Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        let heard = Mutex::new(tokio::time::Instant::now());
        let limit = config.handshake_timeout;
        let hello = tokio::select! {
            hello = tokio::time::timeout(limit, next_frame(ws_rx, &heard)) => hello,
            why = waiting.evicted() => {
                return Err(SessionError::refused(crate::limits::Refusal {
                    reason: crate::limits::HELLOS,
                    message: why,
                }));
            }
        };
        let hello = hello.map_err(|_| {
            SessionError::protocol(format!(
                "no Hello within {} of opening the WebSocket",
                humantime::format_duration(limit)
            ))
        })??;
        let Heard::Frame(hello) = hello else {
            return Err(SessionError::protocol(
                "the WebSocket closed before the Hello",
            ));
        };
        let Frame::Hello {
            version,
            target,
            token,
            resume,
        } = hello
        else {
            return Err(SessionError::protocol(format!(
                "expected Hello first, got {}",
                hello.name()
            )));
        };
        if version != VERSION {
            return Err(SessionError::new(
                ErrorCode::Version,
                format!(
                    "the page speaks protocol version {version}, this relay speaks {VERSION}: reload the page"
                ),
            ));
        }
        // A draining relay takes no new session (see `drain`): before any place is taken
        // or the target reached. The tab takes ShuttingDown as "try again", and behind a
        // load balancer another relay answers.
        if shutdown.is_draining() {
            return Err(SessionError::new(
                ErrorCode::ShuttingDown,
                "the relay is shutting down and takes no new sessions; connect again in a moment",
            ));
        }
        let mut user = None;
        if !config.tokens.is_empty() {
            // Only the owner's name is ever logged, never the token. A wrong one spends
            // its source's budget of failed checks, as at `/api/targets`.
            use crate::token_check::TokenCheck;
            let owner = if token.is_empty() {
                None
            } else {
                match waiting.check_token(&config, &token) {
                    TokenCheck::Holder(owner) => Some(owner),
                    TokenCheck::Wrong => None,
                    TokenCheck::TooMany => {
                        return Err(SessionError::new(
                            ErrorCode::Limit,
                            crate::token_check::TOO_MANY_MESSAGE,
                        ));
                    }
                }
            };
            let Some(owner) = owner else {
                return Err(SessionError::new(
                    ErrorCode::Unauthorized,
                    if token.is_empty() {
                        "this relay needs an access token: open the link your relay's operator gave you, or enter your token"
                    } else {
                        "this access token is not valid here: check it with your relay's operator"
                    },
                ));
            };
            tracing::Span::current().record("user", owner);
            user = Some(owner);
        }
        // Cut short: the tab chose it, and a refusal is logged with the session's span.
        tracing::Span::current().record("target", &*crate::log_limit::clip(&target));
        let Some(entry) = config.targets.get(&target) else {
            let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
            return Err(SessionError::new(
                ErrorCode::UnknownTarget,
                format!(
                    "unknown target {:?}; this relay offers: {}",
                    crate::log_limit::clip(&target),
                    known.join(", ")
                ),
            ));
        };
        let owner = user.map(str::to_owned);
        let claimant = Claimant {
            user: owner.clone(),
            target: target.clone(),
        };
        // A tab back before the relay noticed its loss: its old session, still holding
        // places this one needs, ends as lost now, parking its forwards for below.
        if let Some(secret) = &resume {
            parking.end_live(secret, &claimant).await;
        }
        let place = waiting
            .admit(user, &config.limits)
            .map_err(SessionError::refused)?;
        // From here until its first Listen, the session is one more connection the SSH
        // server counts against its MaxStartups.
        let login = place
            .start_login(
                &target,
                &entry.address,
                &config.limits,
                config.login_grace,
                tokio::time::Instant::now(),
            )
            .map_err(SessionError::refused)?;
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&entry.address))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                if let Some(suppressed) = metrics.refusal_log.admit(ports.ip, "target") {
                    warn!(address = %entry.address, suppressed, "cannot reach SSH server: {err}");
                }
                return Err(SessionError::new(
                    ErrorCode::TargetUnreachable,
                    format!(
                        "the relay cannot reach the SSH server of target {target:?} ({err}); ask the relay's operator"
                    ),
                ));
            }
            Err(_) => {
                if let Some(suppressed) = metrics.refusal_log.admit(ports.ip, "target") {
                    warn!(address = %entry.address, suppressed, "SSH server connect timed out");
                }
                return Err(SessionError::new(
                    ErrorCode::TargetUnreachable,
                    format!(
                        "the SSH server of target {target:?} did not answer within 10 s; ask the relay's operator"
                    ),
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        // Within a budget: sessions that come and go are a flood of their own.
        if let Some(suppressed) = metrics.refusal_log.admit(ports.ip, "started") {
            info!(address = %entry.address, suppressed, "connected to SSH server");
        }
        // An unknown, expired or someone else's secret is simply a fresh session.
        let adopted = resume.and_then(|secret| parking.resume(&secret, &claimant));
        let resumed = adopted.is_some();
        let unclaimed: HashMap<_, _> = adopted
            .into_iter()
            .flatten()
            .map(|forward| ((forward.bind, forward.port), forward))
            .collect();
        if resumed {
            info!(forwards = unclaimed.len(), "resumed a parked session");
        }
        let secret = parking.enabled().then(crate::parked::new_secret);
        let welcome = Frame::Welcome {
            version: VERSION,
            pinned_host_keys: entry.pinned_host_keys.clone(),
            resume: secret,
            resumed,
        };
        out.send(Outgoing::Frame(welcome))
            .await
            .map_err(|_| gone())?;

        let hash = secret.as_ref().map(SecretHash::of);
        let live = hash.map(|hash| parking.live(hash, claimant.clone()));
        let (accepted_tx, accepted_rx) = mpsc::channel(ACCEPTED_QUEUE);
        Ok(Self {
            ssh: SshPipe::start(stream, out.clone()),
            out,
            grants,
            config,
            forwards: HashMap::new(),
            remote: HashMap::new(),
            conns: ConnTable::new(Side::Relay),
            accepted_tx,
            accepted_rx,
            listeners: JoinSet::new(),
            connections: JoinSet::new(),
            metrics,
            last_activity: tokio::time::Instant::now(),
            owner,
            ports,
            refused_listens: RefusalBudget::default(),
            _place: place,
            login: Some(login),
            web: None,
            claim_by: tokio::time::Instant::now() + parking.grace(),
            resume: hash,
            live,
            parking,
            claimant,
            lost: false,
            draining: false,
            unclaimed,
        })
    }

    /// Serves the session until it ends; returns the reason for an orderly end. The
    /// loop is raced, once, against the silence watchdog and the relay's stop: the
    /// loop can wait on a full queue to a tab that vanished, and both must still end it.
    async fn serve<R>(
        mut self,
        ws_rx: &mut R,
        shutdown: Shutdown,
    ) -> (Result<String, SessionError>, Finishing)
    where
        R: Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        let heard = Arc::new(Mutex::new(tokio::time::Instant::now()));
        let watchdog = watch_silence(heard.clone(), self.out.clone(), self.config.ping_interval);
        let taken_over = self.live.as_ref().map(LiveSession::taken_over);
        let taken_over = async move {
            match taken_over {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            end = self.run(ws_rx, &heard, &shutdown) => end,
            reason = watchdog => {
                self.lost = true;
                Ok(reason)
            }
            () = taken_over => {
                self.lost = true;
                Ok("its tab came back on another connection".into())
            }
            () = shutdown.stopped() => Err(shutting_down()),
        };
        // A draining relay parks nothing: its tab cannot resume on another relay.
        if self.lost && !shutdown.is_draining() {
            self.park();
        }
        // The connections still open end with the session. Those the tab closed in order
        // are forgotten already, yet their tasks may still be writing what came before
        // the Close: they finish after the session's last words (see `Finishing`).
        for (_, handle) in self.conns.forget_all() {
            handle.task.abort();
        }
        let finishing = Finishing(std::mem::take(&mut self.connections));
        (end, finishing)
    }

    /// Parks the forwards of a lost session (and those of a session it resumed that it
    /// had not claimed yet) for its tab to take back; the connections end with the
    /// session. Without a secret (parking off), they end with it too.
    fn park(&mut self) {
        // First out of the live sessions: a takeover waits for that, then for the park.
        self.live = None;
        let Some(hash) = self.resume else { return };
        let mut forwards: Vec<ParkedForward> = self
            .forwards
            .drain()
            .map(|(_, entry)| entry.park())
            .collect();
        forwards.extend(self.unclaimed.drain().map(|(_, forward)| forward));
        if !forwards.is_empty() {
            debug!(
                forwards = forwards.len(),
                grace = %humantime::format_duration(self.parking.grace()),
                "parked the session's forwards for its tab to resume"
            );
        }
        self.parking
            .park(hash, self.claimant.clone(), self.ports.ip, forwards);
    }

    /// Reads the tab's frames, the forwards' TCP clients, the connections' ends and the
    /// SSH server's end, one at a time, until one of them ends the session.
    async fn run<R>(
        &mut self,
        ws_rx: &mut R,
        heard: &Mutex<tokio::time::Instant>,
        shutdown: &Shutdown,
    ) -> Result<String, SessionError>
    where
        R: Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        loop {
            // Draining: the session lasts as long as its connections, no longer. A
            // connection the tab closed is forgotten at once, yet its task may still be
            // writing what came before the Close: wait for the tasks too.
            if self.draining && self.conns.is_empty() && self.connections.is_empty() {
                return Err(shutting_down());
            }
            // Only a session with no connection open can be idle: an open one keeps it
            // alive however quiet it is, as with `ssh -L` (a psql left open at a prompt).
            let idle = self.config.idle_timeout.filter(|_| self.conns.is_empty());
            let idle_deadline = idle.map(|t| self.last_activity + t);
            tokio::select! {
                frame = next_frame(ws_rx, heard) => match frame? {
                    Heard::Frame(frame) => self.on_frame(frame).await?,
                    Heard::Closed => return Ok("the tab closed the WebSocket".into()),
                    Heard::Lost => {
                        self.lost = true;
                        return Ok("the tab's WebSocket was lost".into());
                    }
                },
                Some(accepted) = self.accepted_rx.recv() => self.on_accepted(accepted).await?,
                () = shutdown.draining(), if !self.draining => self.stop_accepting(),
                Some(ended) = self.connections.join_next(), if !self.connections.is_empty() => {
                    // An aborted task's connection was forgotten when it was aborted.
                    if let Ok(ended) = ended {
                        self.forget(ended).await;
                    }
                }
                // Reap the accept loops of closed forwards: a tab may open and close
                // forwards for as long as it likes, and the set must not grow with them.
                Some(_) = self.listeners.join_next(), if !self.listeners.is_empty() => {}
                end = self.ssh.closed() => {
                    self.lost = true;
                    return self.ssh_ended(end).await;
                }
                () = tokio::time::sleep_until(self.claim_by), if !self.unclaimed.is_empty() => {
                    debug!(forwards = self.unclaimed.len(), "freed the resumed forwards nobody claimed");
                    self.unclaimed.clear();
                    self.parking.count_unclaimed();
                }
                () = tokio::time::sleep_until(idle_deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if idle_deadline.is_some() =>
                {
                    let idle = idle.unwrap_or_default();
                    return Err(SessionError::new(
                        ErrorCode::Idle,
                        format!(
                            "the relay ended this session: idle for {} with no connections; log in again",
                            humantime::format_duration(idle)
                        ),
                    ));
                }
            }
        }
    }

    /// The relay started draining: no new TCP clients (the accept loops stop and the
    /// listening sockets close, so the ports are free for wherever the tab reconnects),
    /// and a resumed session's unclaimed forwards are freed.
    fn stop_accepting(&mut self) {
        self.draining = true;
        for entry in self.forwards.values_mut() {
            entry.listener.abort();
            entry.listeners = Vec::new().into();
        }
        self.unclaimed.clear();
        if !self.conns.is_empty() {
            debug!(
                connections = self.conns.len(),
                "draining: the session ends when its last connection closes"
            );
        }
    }

    async fn send(&self, frame: Frame) -> Result<(), SessionError> {
        self.out
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| gone())
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), SessionError> {
        match frame {
            Frame::Ssh(data) => self.ssh.send(data).await,
            Frame::Listen {
                forward,
                bind,
                port,
            } => {
                // The page sends Listen only after the SSH login succeeded: a forward it
                // opened ends the session's count as logging in. A refused one proves
                // nothing (it costs no forward), so it leaves the count as it is.
                let opened = !self.forwards.contains_key(&forward);
                self.listen(forward, &bind, port).await?;
                if opened && self.forwards.contains_key(&forward) {
                    self.login = None;
                }
            }
            Frame::Unlisten { forward } => {
                if let Some(entry) = self.forwards.remove(&forward) {
                    self.last_activity = tokio::time::Instant::now();
                    entry.listener.abort();
                    for (_, handle) in self.conns.forget_forward(forward) {
                        handle.task.abort();
                    }
                    debug!(forward, "forward closed by the tab");
                } else {
                    self.close_remote(forward);
                }
            }
            Frame::Data { conn, data } => {
                deliver(conn, self.conns.handle_data(conn, &data)?);
            }
            Frame::Credit { conn, bytes } => self.conns.handle_credit(conn, bytes)?,
            Frame::Blocked { conn } => {
                if let Some(bytes) = self.conns.handle_blocked(conn)? {
                    self.grants.push(conn, bytes);
                }
            }
            Frame::Eof { conn } => {
                deliver(conn, self.conns.handle_eof(conn)?);
            }
            Frame::Close { conn, reason } => {
                if deliver(conn, self.conns.handle_close(conn, reason)?) {
                    self.last_activity = tokio::time::Instant::now();
                }
            }
            frame @ (Frame::ListenSocks { .. } | Frame::OpenFailed { .. }) => {
                self.on_dynamic_frame(frame).await?
            }
            frame @ (Frame::RemoteForward { .. } | Frame::Dial { .. }) => {
                self.on_remote_frame(frame).await?
            }
            other => {
                return Err(SessionError::protocol(format!(
                    "the tab sent a {} frame, which only the relay may send",
                    other.name()
                )));
            }
        }
        Ok(())
    }

    async fn listen(&mut self, forward: u32, bind: &str, port: u16) -> Result<(), SessionError> {
        if self.draining {
            let message = "the relay is shutting down and opens no new forwards".to_owned();
            return self
                .refuse_listen(forward, ErrorCode::ShuttingDown, message)
                .await;
        }
        let duplicate = self.has_forward(forward);
        // A forward of the session this one resumed: counted already, the same
        // listeners, no bind().
        if !duplicate && let Some(parked) = self.claim(bind, port) {
            parked.lease.hand_to(self.ports.session);
            return self.start_forward(forward, parked).await;
        }
        let most = self.config.limits.forwards_per_session;
        // Unclaimed forwards of a resumed session count: they hold their ports. Remote
        // forwards count too, though they hold none.
        if self.forwards.len() + self.unclaimed.len() + self.remote.len() >= most {
            let message = format!(
                "a session may have at most {most} forwards on this relay; remove one before adding another"
            );
            return self.refuse_listen(forward, ErrorCode::Limit, message).await;
        }
        if duplicate {
            let message = format!("forward id {forward} is already listening");
            return self
                .refuse_listen(forward, ErrorCode::DuplicateForward, message)
                .await;
        }
        let bound =
            listen::bind(&self.config, &self.ports, self.owner.as_deref(), bind, port).await;
        match bound {
            Ok(bound) => {
                let port = bound.local_addr().map_or(port, |a| a.port());
                let listen::Bound {
                    listeners,
                    lease,
                    addr,
                } = bound;
                let parts = ParkedForward {
                    bind: addr,
                    port,
                    listeners: listeners.into(),
                    lease,
                    active: GaugeGuard::new(&self.metrics.forwards_active),
                    web: None,
                };
                self.start_forward(forward, parts).await
            }
            Err(refusal) => {
                self.refuse_listen(forward, refusal.code, refusal.message)
                    .await
            }
        }
    }

    /// The forward of a resumed session that listens on `bind`:`port`, if no Listen has
    /// taken it yet.
    fn claim(&mut self, bind: &str, port: u16) -> Option<ParkedForward> {
        if self.unclaimed.is_empty() {
            return None;
        }
        let addr: BindAddr = crate::log_limit::clip(bind).parse().ok()?;
        self.unclaimed.remove(&(addr, port))
    }

    /// Accepts on a forward's listeners and tells the tab where it listens.
    /// `parts`: its sockets and places, fresh from a bind or taken back from the session
    /// this one resumed (then with its web URL, if it had one).
    async fn start_forward(
        &mut self,
        forward: u32,
        parts: ParkedForward,
    ) -> Result<(), SessionError> {
        let ParkedForward {
            bind,
            port,
            listeners,
            lease,
            active,
            web,
        } = parts;
        let address = listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| format!("{bind:?}:{port}"), |a| a.to_string());
        debug!(forward, %address, "listening");
        let listener = self
            .listeners
            // A span per forward, inside the session's: its accept loop logs there.
            .spawn(
                listen::accept_loop(forward, listeners.clone(), self.accepted_tx.clone())
                    .instrument(info_span!("forward", forward, %address)),
            );
        // The web URL goes first, so the tab has it when the forward opens. A resumed
        // forward keeps its own.
        let web = self.web.as_ref().map(|offer| {
            let registration = match web {
                Some(kept) => {
                    offer.reopen(&kept, forward, self.accepted_tx.clone());
                    kept
                }
                None => offer.register(forward, self.accepted_tx.clone()),
            };
            (registration, offer)
        });
        let url = web
            .as_ref()
            .map(|(registration, offer)| offer.url(registration));
        self.forwards.insert(
            forward,
            ForwardEntry {
                listener,
                bind,
                port,
                listeners,
                lease,
                active,
                web: web.map(|(registration, _)| registration),
                socks: None,
            },
        );
        self.last_activity = tokio::time::Instant::now();
        if let Some(url) = url {
            self.send(Frame::WebForward { forward, url }).await?;
        }
        self.send(Frame::Listening { forward, address }).await
    }

    /// Logs, counts and answers a refused Listen; ends the session when it has had more
    /// refusals than its budget allows: each may cost the relay binds and a log line.
    async fn refuse_listen(
        &mut self,
        forward: u32,
        code: ErrorCode,
        message: String,
    ) -> Result<(), SessionError> {
        if let Some(suppressed) = self.metrics.refusal_log.admit(self.ports.ip, "listen") {
            info!(
                forward,
                code = code.as_str(),
                suppressed,
                "listen refused: {message}"
            );
        }
        self.metrics.refused(code.as_str());
        if !self.refused_listens.spend(tokio::time::Instant::now()) {
            return Err(SessionError::new(
                ErrorCode::Limit,
                format!(
                    "the relay ended this session: too many of its forward requests were refused (more than {} at once, then {} a second); fix the forwards that fail, then log in again",
                    ports::REFUSED_LISTEN_BURST,
                    ports::REFUSED_LISTENS_PER_SEC
                ),
            ));
        }
        self.send(Frame::ListenFailed {
            forward,
            code,
            message,
        })
        .await
    }

    /// Counts, logs and tells the tab about a TCP client of `forward` that the relay
    /// closed at accept. The notice is dropped rather than waited for when the queue to
    /// the tab is full: a flood of refused clients must not hold up the session.
    fn refuse_connection(
        &self,
        forward: u32,
        peer: SocketAddr,
        refusal: crate::limits::ConnectionRefusal,
    ) {
        let crate::limits::ConnectionRefusal {
            code,
            reason,
            message,
        } = refusal;
        if let Some(suppressed) = self.metrics.refusal_log.admit(peer.ip(), "connection") {
            info!(forward, %peer, reason, suppressed, "connection refused: {message}");
        }
        self.metrics.refused(reason);
        let notice = Frame::ListenFailed {
            forward,
            code,
            message,
        };
        let _ = self.out.try_send(Outgoing::Frame(notice));
    }

    /// Admits a forward's new TCP client (see `limits::admit_connection`) and starts its
    /// connection; a refused one is closed at once.
    async fn on_accepted(&mut self, accepted: Accepted) -> Result<(), SessionError> {
        let Some(accepted) = self.socks_client(accepted).await? else {
            return Ok(());
        };
        let Accepted {
            forward,
            stream,
            peer,
            admitted,
        } = accepted;
        let refuse = |admitted: Option<tokio::sync::oneshot::Sender<_>>, why: String| {
            if let Some(admitted) = admitted {
                let _ = admitted.send(Err(why));
            }
        };
        if !self.forwards.contains_key(&forward) {
            // the forward closed while this connection waited
            refuse(admitted, "this forward is closed".into());
            return Ok(());
        }
        if self.draining {
            // Accepted just before the drain, or a web forward's request.
            refuse(admitted, "the relay is shutting down".into());
            return Ok(());
        }
        // A refusal drops the stream, which closes it: the TCP client sees its
        // connection end, and no byte of it reaches the tab or the destination.
        let (open, waiting) = (self.conns.count(forward), self.conns.unanswered(forward));
        if let Err(refusal) = crate::limits::admit_connection(&self.config, peer, open, waiting) {
            refuse(admitted, refusal.message.clone());
            self.refuse_connection(forward, peer, refusal);
            return Ok(());
        }
        let opening = match self.conns.open(forward) {
            Ok(opening) => opening,
            Err(err) => {
                warn!("{err}; refusing {peer}");
                refuse(admitted, err.to_string());
                return Ok(());
            }
        };
        if let Some(admitted) = admitted {
            let _ = admitted.send(Ok(()));
        }
        debug!(conn = opening.conn, forward, %peer, "accepted");
        let accept = Frame::Accept {
            conn: opening.conn,
            forward,
            peer: peer.to_string(),
        };
        self.start_connection(opening, accept, stream).await
    }

    /// Starts a connection this side opened for a listening forward: tells the tab
    /// (`announce`: an Accept for a `-L` client, a Connect for a SOCKS one), grants the
    /// connection's first window, and runs its task.
    pub(super) async fn start_connection(
        &mut self,
        opening: Opening,
        announce: Frame,
        client: connection::Client,
    ) -> Result<(), SessionError> {
        let conn = opening.conn;
        self.last_activity = tokio::time::Instant::now();
        self.metrics.connections_total.inc();
        self.send(announce).await?;
        self.send(Frame::Credit {
            conn,
            bytes: opening.flow().initial_grant(),
        })
        .await?;
        let handle = connection::spawn(
            &mut self.connections,
            conn,
            opening.forward,
            client,
            opening.flow().clone(),
            connection::Outlets {
                out: self.out.clone(),
                grants: self.grants.clone(),
                metrics: self.metrics.clone(),
            },
        );
        self.conns.insert(opening, handle);
        Ok(())
    }

    /// How the session ends when its SSH server's side ends. A close (or a reset) is an
    /// orderly end, not a refusal, yet the tab must know it by its code (a login cut
    /// short reads differently), so an Error frame with the code goes before the
    /// orderly close, even if the tab is gone too.
    async fn ssh_ended(&self, end: Option<std::io::Error>) -> Result<String, SessionError> {
        let reason = match end {
            None => "the SSH server closed the connection",
            // A server that dies with bytes of ours unread resets rather than closes: the
            // same ending for the user, not a network failure.
            Some(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                "the SSH server closed the connection abruptly (reset): it may have crashed or restarted, or the network dropped the connection; log in again"
            }
            Some(err) => {
                return Err(SessionError::new(
                    ErrorCode::TargetUnreachable,
                    format!("the connection to the SSH server failed: {err}"),
                ));
            }
        };
        let _ = self
            .send(Frame::Error {
                code: ErrorCode::SshClosed,
                message: reason.into(),
            })
            .await;
        Ok(reason.into())
    }

    /// Forgets a connection whose task ended by itself, and tells the tab how it
    /// ended, unless the tab had closed it already.
    async fn forget(&mut self, ended: connection::Ended) {
        let connection::Ended { conn, close } = ended;
        if self.conns.forget(conn).is_some() {
            self.last_activity = tokio::time::Instant::now();
            if let Some(reason) = close {
                // A writer that stopped is noticed by the loop's other sends.
                let _ = self.send(Frame::Close { conn, reason }).await;
            }
        }
    }
}

/// Passes what the connection table decided on to the connection's task; true if the
/// tab ended the connection.
fn deliver(conn: u32, action: Action<'_, ConnHandle>) -> bool {
    match action {
        Action::Ignore => false,
        Action::Data(handle, data) => {
            let _ = handle.to_tcp.send(ToTcp::Data(data));
            false
        }
        Action::Eof(handle) => {
            let _ = handle.to_tcp.send(ToTcp::Eof);
            false
        }
        Action::Close(handle) => {
            debug!(conn, "tab closed connection");
            // Orderly: bytes queued before the Close are still written.
            let _ = handle.to_tcp.send(ToTcp::Close);
            true
        }
        Action::Abort(handle, reason) => {
            debug!(conn, %reason, "tab closed connection");
            handle.task.abort();
            true
        }
        Action::Refused(handle, failure, message) => {
            debug!(conn, ?failure, %message, "tab could not open connection");
            // A SOCKS client is told why; the task then ends by itself.
            let _ = handle.to_tcp.send(ToTcp::Refused(failure));
            true
        }
    }
}

fn gone() -> SessionError {
    SessionError::new(ErrorCode::Internal, "the WebSocket writer stopped")
}

/// Pings the tab every `every` and returns when it has been silent for three: a tab
/// that vanished without a FIN (a closed laptop) must not keep its listeners. Pings
/// are dropped, not queued, while the queue to the tab is full.
async fn watch_silence(
    heard: Arc<Mutex<tokio::time::Instant>>,
    out: mpsc::Sender<Outgoing>,
    every: Duration,
) -> String {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let silent = heard.lock().expect("heard lock").elapsed();
        if silent >= every * 3 {
            return format!(
                "the tab stopped answering: nothing for {:.1} s, WebSocket pings included",
                silent.as_secs_f64()
            );
        }
        let _ = out.try_send(Outgoing::Ping);
    }
}

/// The next frame from the tab, or how its WebSocket ended. Any message,
/// pongs included, counts as hearing from the tab.
async fn next_frame<R>(
    ws: &mut R,
    heard: &Mutex<tokio::time::Instant>,
) -> Result<Heard, SessionError>
where
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    loop {
        let next = ws.next().await;
        *heard.lock().expect("heard lock") = tokio::time::Instant::now();
        let message = match next {
            None => return Ok(Heard::Lost),
            Some(Err(err)) => {
                // A message over the limit or a broken WebSocket frame is the tab's fault:
                // say so, and close with 1002, rather than end as if the tab had left.
                if let Some(fault) = std::error::Error::source(&err)
                    .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
                    .and_then(tab_fault)
                {
                    return Err(SessionError::protocol(fault));
                }
                debug!("WebSocket read failed: {err}");
                return Ok(Heard::Lost);
            }
            Some(Ok(message)) => message,
        };
        match message {
            Message::Binary(bytes) => {
                return decode(bytes)
                    .map(Heard::Frame)
                    .map_err(|err| SessionError::protocol(format!("malformed frame: {err}")));
            }
            Message::Close(close) => {
                return Ok(match close.map(|c| c.code) {
                    None | Some(1000) | Some(1001) => Heard::Closed,
                    Some(_) => Heard::Lost,
                });
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Text(_) => {
                return Err(SessionError::protocol(
                    "text message on a binary protocol; reload the page",
                ));
            }
        }
    }
}

/// What the tab did wrong when reading its WebSocket failed through its fault: a
/// message over the limit (axum's max_message_size), or a frame that breaks RFC 6455
/// (unmasked, reserved bits set, an unknown opcode, a fragmented or oversized control
/// frame, invalid UTF-8). `None` when the connection merely ended.
fn tab_fault(err: &tungstenite::Error) -> Option<String> {
    use tungstenite::error::ProtocolError;
    match err {
        tungstenite::Error::Capacity(what) => Some(format!(
            "the tab sent a WebSocket message over the protocol's {}-byte limit ({what}); reload the page",
            tabtunnel_proto::MAX_FRAME
        )),
        // A connection dropped without a close handshake is a tab that left (a crashed
        // browser, a closed laptop), not one that broke the protocol.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Protocol(what) => Some(format!(
            "the tab broke the WebSocket protocol: {what}; reload the page"
        )),
        // Not the text itself: it is the tab's, and may be long.
        tungstenite::Error::Utf8(_) => Some(
            "the tab broke the WebSocket protocol: invalid UTF-8 in a text message or close reason; reload the page"
                .into(),
        ),
        _ => None,
    }
}

mod remote;
mod socks;
#[cfg(test)]
mod tests;
