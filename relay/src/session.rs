//! One task per WebSocket: the Hello handshake, the SSH byte pipe to the target, and
//! the forwards the tab asked for. Everything a session starts lives in its `JoinSet`,
//! so when the WebSocket ends, its listeners and connections end with it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use tabtunnel_proto::{
    CONNECTION_WINDOW, ErrorCode, Frame, RecvWindow, VERSION, decode, encode_to_bytes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::Config;
use crate::connection::{self, ConnHandle, ToTcp};
use crate::listen;
use crate::metrics::{GaugeGuard, Metrics};

/// How long the relay tries to reach a target's SSH server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued for the WebSocket writer. Data frames are bounded by credit anyway;
/// this keeps the rest (Ssh, control) from piling up when the tab is slow.
const OUT_QUEUE: usize = 64;
/// How long the last words (Error, Close) may wait for room in the queue.
const GOODBYE: Duration = Duration::from_secs(2);
/// Ssh frames queued for the SSH server's socket.
const SSH_QUEUE: usize = 16;

/// Something to send to the tab.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Frame(Frame),
    /// Close the WebSocket with this code and reason; nothing is sent after it.
    Close(u16, String),
    /// A WebSocket ping: browsers answer it themselves, even in background tabs.
    Ping,
}

/// Events from a session's own tasks to its loop.
#[derive(Debug)]
pub(crate) enum Event {
    Accepted {
        forward: u32,
        stream: TcpStream,
        peer: SocketAddr,
    },
    ConnectionDone {
        conn: u32,
    },
    SshClosed(Option<std::io::Error>),
}

/// Why a session ended badly: sent to the tab as an Error frame, then a close code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct SessionError {
    code: ErrorCode,
    message: String,
}

impl SessionError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
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

/// Serves one tab's WebSocket until it closes.
pub async fn run(
    socket: WebSocket,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    peer: crate::ClientAddr,
    id: u64,
    shutdown: CancellationToken,
) {
    metrics.sessions_total.inc();
    let _active = GaugeGuard::new(&metrics.sessions_active);
    let span = info_span!("session", id, %peer, user = tracing::field::Empty, target = tracing::field::Empty);
    async move {
        let (ws_tx, mut ws_rx) = socket.split();
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let writer = tokio::spawn(write_loop(ws_tx, out_rx).in_current_span());
        let result = Session::start(&mut ws_rx, out_tx.clone(), config, metrics.clone()).await;
        let result = match result {
            // Serving consumes the session: its listeners and connections end here.
            Ok(session) => session.serve(&mut ws_rx, shutdown).await,
            Err(err) => Err(err),
        };
        let close = match result {
            Ok(reason) => {
                info!("session ended: {reason}");
                Outgoing::Close(1000, reason)
            }
            Err(err) => {
                info!(code = err.code.as_str(), "session failed: {}", err.message);
                metrics.refused(err.code.as_str());
                let close = Outgoing::Close(err.close_code(), err.message.clone());
                let error = Outgoing::Frame(Frame::Error {
                    code: err.code,
                    message: err.message,
                });
                let _ = tokio::time::timeout(GOODBYE, out_tx.send(error)).await;
                close
            }
        };
        // Bounded: the queue may be full of frames for a tab that is gone.
        let _ = tokio::time::timeout(GOODBYE, out_tx.send(close)).await;
        drop(out_tx);
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
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }
    .instrument(span)
    .await
}

/// Answers a WebSocket the relay will not serve (a limit was reached) with an Error
/// frame and a close, so the page can show why.
pub async fn refuse(mut socket: WebSocket, code: ErrorCode, message: String) {
    let frame = Frame::Error {
        code,
        message: message.clone(),
    };
    let _ = socket.send(Message::Binary(encode_to_bytes(&frame))).await;
    let close = CloseFrame {
        code: 1008,
        reason: truncate_reason(message).into(),
    };
    let _ = socket.send(Message::Close(Some(close))).await;
}

/// Sends queued frames, batching what is ready into one flush.
async fn write_loop(
    mut ws: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(frame) => {
                    if ws
                        .feed(Message::Binary(encode_to_bytes(&frame)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Outgoing::Ping => {
                    if ws.feed(Message::Ping(Bytes::new())).await.is_err() {
                        return;
                    }
                }
                Outgoing::Close(code, reason) => {
                    let reason = truncate_reason(reason);
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = ws.send(Message::Close(Some(frame))).await;
                    return;
                }
            }
            batched += 1;
            if batched < 64 {
                next = rx.try_recv().ok();
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// A WebSocket close reason is at most 123 bytes; cut at a character boundary.
fn truncate_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}

struct Session {
    out: mpsc::Sender<Outgoing>,
    config: Arc<Config>,
    ssh_tx: mpsc::Sender<Bytes>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    forwards: HashMap<u32, ForwardEntry>,
    conns: HashMap<u32, ConnHandle>,
    next_conn: u32,
    /// Every task of the session; dropping the set aborts them all.
    tasks: JoinSet<()>,
    metrics: Arc<Metrics>,
    /// When the session last added a forward or had a connection open; with no
    /// connection open, the idle timeout counts from here.
    last_activity: tokio::time::Instant,
}

struct ForwardEntry {
    listener: AbortHandle,
    conns: HashSet<u32>,
    /// Where it listens, to name a clash with the session's own forwards.
    address: Option<SocketAddr>,
    _active: GaugeGuard,
}

impl Session {
    /// Reads the Hello, reaches the target and answers Welcome.
    async fn start(
        ws_rx: &mut SplitStream<WebSocket>,
        out: mpsc::Sender<Outgoing>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SessionError> {
        let heard = Mutex::new(tokio::time::Instant::now());
        let limit = config.handshake_timeout;
        let hello = tokio::time::timeout(limit, next_frame(ws_rx, &heard))
            .await
            .map_err(|_| {
                SessionError::protocol(format!(
                    "no Hello within {} of opening the WebSocket",
                    humantime::format_duration(limit)
                ))
            })??;
        let Some(hello) = hello else {
            return Err(SessionError::protocol(
                "the WebSocket closed before the Hello",
            ));
        };
        let Frame::Hello {
            version,
            target,
            token,
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
        if !config.tokens.is_empty() {
            // Only the owner's name is ever logged, never the token.
            let Some(owner) = config.token_owner(&token) else {
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
        }
        tracing::Span::current().record("target", target.as_str());
        let Some(entry) = config.targets.get(&target) else {
            let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
            return Err(SessionError::new(
                ErrorCode::UnknownTarget,
                format!(
                    "unknown target {target:?}; this relay offers: {}",
                    known.join(", ")
                ),
            ));
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&entry.address))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                warn!(address = %entry.address, "cannot reach SSH server: {err}");
                return Err(SessionError::new(
                    ErrorCode::TargetUnreachable,
                    format!(
                        "the relay cannot reach the SSH server of target {target:?} ({err}); ask the relay's operator"
                    ),
                ));
            }
            Err(_) => {
                warn!(address = %entry.address, "SSH server connect timed out");
                return Err(SessionError::new(
                    ErrorCode::TargetUnreachable,
                    format!(
                        "the SSH server of target {target:?} did not answer within 10 s; ask the relay's operator"
                    ),
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        info!(address = %entry.address, "connected to SSH server");
        let welcome = Frame::Welcome {
            version: VERSION,
            pinned_host_keys: entry.pinned_host_keys.clone(),
        };
        out.send(Outgoing::Frame(welcome))
            .await
            .map_err(|_| gone())?;

        let (events_tx, events_rx) = mpsc::channel(64);
        let (ssh_tx, ssh_rx) = mpsc::channel(SSH_QUEUE);
        let mut tasks = JoinSet::new();
        let (ssh_read, ssh_write) = stream.into_split();
        tasks.spawn(pump_from_ssh(ssh_read, out.clone(), events_tx.clone()).in_current_span());
        tasks.spawn(pump_to_ssh(ssh_write, ssh_rx).in_current_span());
        Ok(Self {
            out,
            config,
            ssh_tx,
            events_tx,
            events_rx,
            forwards: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 1,
            tasks,
            metrics,
            last_activity: tokio::time::Instant::now(),
        })
    }

    /// The session's loop; returns the reason for an orderly end.
    async fn serve(
        mut self,
        ws_rx: &mut SplitStream<WebSocket>,
        shutdown: CancellationToken,
    ) -> Result<String, SessionError> {
        // The silence watchdog runs beside the loop, not in it: the loop can wait on a
        // full queue to a tab that vanished, and the watchdog must still end it then.
        let heard = Arc::new(Mutex::new(tokio::time::Instant::now()));
        let watchdog = watch_silence(heard.clone(), self.out.clone(), self.config.ping_interval);
        tokio::pin!(watchdog);
        loop {
            // Only a session with no connection open can be idle: an open one keeps it
            // alive however quiet it is, as with `ssh -L` (a psql left open at a prompt).
            let idle = self.config.idle_timeout.filter(|_| self.conns.is_empty());
            let idle_deadline = idle.map(|t| self.last_activity + t);
            tokio::select! {
                reason = &mut watchdog => return Ok(reason),
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
                frame = next_frame(ws_rx, &heard) => match frame? {
                    Some(frame) => {
                        tokio::select! {
                            result = self.on_frame(frame) => result?,
                            reason = &mut watchdog => return Ok(reason),
                        }
                    }
                    None => return Ok("the tab closed the WebSocket".into()),
                },
                () = shutdown.cancelled() => {
                    return Err(SessionError::new(
                        ErrorCode::ShuttingDown,
                        "the relay is shutting down; connect again when it is back",
                    ));
                }
                Some(event) = self.events_rx.recv() => {
                    let end = tokio::select! {
                        end = self.on_event(event) => end?,
                        reason = &mut watchdog => return Ok(reason),
                    };
                    if let Some(end) = end {
                        return Ok(end.into());
                    }
                }
                // Reap finished tasks so the set does not grow with closed connections.
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
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
            Frame::Ssh(data) => {
                // A closed SSH socket is reported by the reader as SshClosed.
                let _ = self.ssh_tx.send(data).await;
            }
            Frame::Listen {
                forward,
                bind,
                port,
            } => {
                self.last_activity = tokio::time::Instant::now();
                self.listen(forward, &bind, port).await?
            }
            Frame::Unlisten { forward } => {
                self.last_activity = tokio::time::Instant::now();
                if let Some(entry) = self.forwards.remove(&forward) {
                    entry.listener.abort();
                    for conn in entry.conns {
                        if let Some(handle) = self.conns.remove(&conn) {
                            handle.task.abort();
                        }
                    }
                    info!(forward, "forward closed by the tab");
                }
            }
            Frame::Data { conn, data } => {
                if let Some(handle) = self.conn(conn, "Data")? {
                    // Empty or post-Eof Data would queue without spending credit.
                    if data.is_empty() || handle.eof_received {
                        return Err(SessionError::protocol(format!(
                            "connection {conn}: Data frame {}",
                            if data.is_empty() {
                                "with no bytes"
                            } else {
                                "after Eof"
                            }
                        )));
                    }
                    handle
                        .recv_window
                        .lock()
                        .expect("window lock")
                        .on_data(data.len())
                        .map_err(|err| {
                            SessionError::protocol(format!("connection {conn}: {err}"))
                        })?;
                    let _ = handle.to_tcp.send(ToTcp::Data(data));
                }
            }
            Frame::Credit { conn, bytes } => {
                if let Some(handle) = self.conn(conn, "Credit")? {
                    handle.send_credit.grant(bytes).map_err(|err| {
                        SessionError::protocol(format!("connection {conn}: {err}"))
                    })?;
                }
                // The tab grants credit once it has opened the SSH channel.
                if let Some(handle) = self.conns.get_mut(&conn) {
                    handle.answered = true;
                }
            }
            Frame::Eof { conn } => {
                self.conn(conn, "Eof")?;
                if let Some(handle) = self.conns.get_mut(&conn) {
                    if handle.eof_received {
                        return Err(SessionError::protocol(format!(
                            "connection {conn}: a second Eof"
                        )));
                    }
                    handle.eof_received = true;
                    let _ = handle.to_tcp.send(ToTcp::Eof);
                }
            }
            Frame::Close { conn, reason } => {
                self.conn(conn, "Close")?;
                self.last_activity = tokio::time::Instant::now();
                if let Some(handle) = self.conns.remove(&conn) {
                    debug!(conn, %reason, "tab closed connection");
                    if let Some(entry) = self.forwards.get_mut(&handle.forward) {
                        entry.conns.remove(&conn);
                    }
                    if reason.is_empty() {
                        // Orderly: bytes queued before the Close are still written.
                        let _ = handle.to_tcp.send(ToTcp::Close);
                    } else {
                        handle.task.abort();
                    }
                }
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

    /// The live connection `conn`, `None` if it has already ended (frames may cross a
    /// Close on the wire), or an error if the relay never opened it.
    fn conn(&self, conn: u32, frame: &str) -> Result<Option<&ConnHandle>, SessionError> {
        match self.conns.get(&conn) {
            Some(handle) => Ok(Some(handle)),
            None if conn < self.next_conn => Ok(None),
            None => Err(SessionError::protocol(format!(
                "{frame} frame for connection {conn}, which the relay never opened"
            ))),
        }
    }

    async fn listen(&mut self, forward: u32, bind: &str, port: u16) -> Result<(), SessionError> {
        let most = self.config.limits.forwards_per_session;
        if self.forwards.len() >= most {
            self.metrics.refused(ErrorCode::Limit.as_str());
            let message = format!(
                "a session may have at most {most} forwards on this relay; remove one before adding another"
            );
            return self
                .send(Frame::ListenFailed {
                    forward,
                    code: ErrorCode::Limit,
                    message,
                })
                .await;
        }
        if self.forwards.contains_key(&forward) {
            let message = format!("forward id {forward} is already listening");
            return self
                .send(Frame::ListenFailed {
                    forward,
                    code: ErrorCode::DuplicateForward,
                    message,
                })
                .await;
        }
        if port != 0
            && let Ok(ip) = listen::parse_bind_address(bind)
            && let Some(taken) = self.forwards.values().filter_map(|f| f.address).find(|a| {
                a.port() == port && (a.ip() == ip || a.ip().is_unspecified() || ip.is_unspecified())
            })
        {
            let message = format!(
                "this session already forwards {taken}; remove that forward first, or pick another port (0 for any free one)"
            );
            return self
                .send(Frame::ListenFailed {
                    forward,
                    code: ErrorCode::DuplicateForward,
                    message,
                })
                .await;
        }
        match listen::bind(&self.config, bind, port).await {
            Ok(listener) => {
                let bound = listener.local_addr().ok();
                let address = bound
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| format!("{bind}:{port}"));
                info!(forward, %address, "listening");
                let events = self.events_tx.clone();
                let listener = self
                    .tasks
                    // A span per forward, inside the session's: its accept loop logs there.
                    .spawn(
                        listen::accept_loop(forward, listener, events)
                            .instrument(info_span!("forward", forward, %address)),
                    );
                self.forwards.insert(
                    forward,
                    ForwardEntry {
                        listener,
                        conns: HashSet::new(),
                        address: bound,
                        _active: GaugeGuard::new(&self.metrics.forwards_active),
                    },
                );
                self.send(Frame::Listening { forward, address }).await
            }
            Err(refusal) => {
                info!(
                    forward,
                    code = refusal.code.as_str(),
                    "listen refused: {}",
                    refusal.message
                );
                self.metrics.refused(refusal.code.as_str());
                self.send(Frame::ListenFailed {
                    forward,
                    code: refusal.code,
                    message: refusal.message,
                })
                .await
            }
        }
    }

    /// Counts, logs and tells the tab about a TCP client of `forward` that the relay
    /// closed at accept. The notice is dropped rather than waited for when the queue to
    /// the tab is full: a flood of refused clients must not hold up the session.
    fn refuse_connection(
        &self,
        forward: u32,
        peer: SocketAddr,
        code: ErrorCode,
        reason: &str,
        message: String,
    ) {
        info!(forward, %peer, reason, "connection refused: {message}");
        self.metrics.refused(reason);
        let notice = Frame::ListenFailed {
            forward,
            code,
            message,
        };
        let _ = self.out.try_send(Outgoing::Frame(notice));
    }

    async fn on_event(&mut self, event: Event) -> Result<Option<&'static str>, SessionError> {
        match event {
            Event::Accepted {
                forward,
                stream,
                peer,
            } => {
                let Some(entry) = self.forwards.get(&forward) else {
                    return Ok(None); // the forward closed while this connection waited
                };
                // Each refusal drops the stream, which closes it: the TCP client sees its
                // connection end, and no byte of it reaches the tab or the destination.
                if !self.config.source_allowed(peer.ip()) {
                    self.refuse_connection(
                        forward,
                        peer,
                        ErrorCode::SourceNotAllowed,
                        ErrorCode::SourceNotAllowed.as_str(),
                        format!(
                            "connection from {} refused: the relay accepts forwarded connections only from its operator's allowed sources (forward_allowed_sources)",
                            peer.ip()
                        ),
                    );
                    return Ok(None);
                }
                let limits = &self.config.limits;
                if entry.conns.len() >= limits.connections_per_forward {
                    self.refuse_connection(
                        forward,
                        peer,
                        ErrorCode::Limit,
                        ErrorCode::Limit.as_str(),
                        format!(
                            "connection from {peer} refused: this forward has its maximum of {} open connections",
                            limits.connections_per_forward
                        ),
                    );
                    return Ok(None);
                }
                // Connections whose SSH channel the tab has not opened yet: a tab that is
                // slow to answer (a hung SSH server) must not collect them without bound.
                let waiting = entry
                    .conns
                    .iter()
                    .filter(|c| self.conns.get(c).is_some_and(|h| !h.answered))
                    .count();
                if waiting >= limits.pending_accepts_per_forward {
                    self.refuse_connection(
                        forward,
                        peer,
                        ErrorCode::Limit,
                        crate::metrics::PENDING_ACCEPTS,
                        format!(
                            "connection from {peer} refused: {waiting} connections of this forward are still waiting for the SSH server to open their channel; check that the SSH server can reach the destination, or try again shortly"
                        ),
                    );
                    return Ok(None);
                }
                let Some(entry) = self.forwards.get_mut(&forward) else {
                    return Ok(None);
                };
                self.last_activity = tokio::time::Instant::now();
                self.metrics.connections_total.inc();
                let conn = self.next_conn;
                let Some(next) = self.next_conn.checked_add(1) else {
                    warn!("connection ids exhausted; refusing {peer}");
                    return Ok(None);
                };
                self.next_conn = next;
                entry.conns.insert(conn);
                debug!(conn, forward, %peer, "accepted");
                self.send(Frame::Accept {
                    conn,
                    forward,
                    peer: peer.to_string(),
                })
                .await?;
                let window = RecvWindow::new(CONNECTION_WINDOW);
                self.send(Frame::Credit {
                    conn,
                    bytes: window.initial_grant(),
                })
                .await?;
                let handle = connection::spawn(
                    &mut self.tasks,
                    conn,
                    forward,
                    stream,
                    window,
                    connection::Outlets {
                        out: self.out.clone(),
                        events: self.events_tx.clone(),
                        metrics: self.metrics.clone(),
                    },
                );
                self.conns.insert(conn, handle);
            }
            Event::ConnectionDone { conn } => {
                self.last_activity = tokio::time::Instant::now();
                if let Some(handle) = self.conns.remove(&conn)
                    && let Some(entry) = self.forwards.get_mut(&handle.forward)
                {
                    entry.conns.remove(&conn);
                }
            }
            Event::SshClosed(None) => return Ok(Some("the SSH server closed the connection")),
            // A server that dies with bytes of ours unread resets rather than closes: the
            // same ending for the user, not a network failure.
            Event::SshClosed(Some(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(Some(
                    "the SSH server closed the connection abruptly (reset): it may have crashed or restarted, or the network dropped the connection; log in again",
                ));
            }
            Event::SshClosed(Some(err)) => {
                return Err(SessionError::new(
                    ErrorCode::TargetUnreachable,
                    format!("the connection to the SSH server failed: {err}"),
                ));
            }
        }
        Ok(None)
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

/// The next frame from the tab; `None` when the WebSocket has closed. Any message,
/// pongs included, counts as hearing from the tab.
async fn next_frame(
    ws: &mut SplitStream<WebSocket>,
    heard: &Mutex<tokio::time::Instant>,
) -> Result<Option<Frame>, SessionError> {
    loop {
        let next = ws.next().await;
        *heard.lock().expect("heard lock") = tokio::time::Instant::now();
        let message = match next {
            None => return Ok(None),
            Some(Err(err)) => {
                // A message over the limit (axum's max_message_size) is the tab's fault:
                // say so, rather than end as if the tab had left.
                if let Some(tungstenite::Error::Capacity(what)) = std::error::Error::source(&err)
                    .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
                {
                    return Err(SessionError::protocol(format!(
                        "the tab sent a WebSocket message over the protocol's {}-byte limit ({what}); reload the page",
                        tabtunnel_proto::MAX_FRAME
                    )));
                }
                debug!("WebSocket read failed: {err}");
                return Ok(None);
            }
            Some(Ok(message)) => message,
        };
        match message {
            Message::Binary(bytes) => {
                return decode(bytes)
                    .map(Some)
                    .map_err(|err| SessionError::protocol(format!("malformed frame: {err}")));
            }
            Message::Close(_) => return Ok(None),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Text(_) => {
                return Err(SessionError::protocol(
                    "text message on a binary protocol; reload the page",
                ));
            }
        }
    }
}

/// SSH server -> tab.
async fn pump_from_ssh(
    mut ssh: tokio::net::tcp::OwnedReadHalf,
    out: mpsc::Sender<Outgoing>,
    events: mpsc::Sender<Event>,
) {
    let mut buf = vec![0u8; tabtunnel_proto::MAX_DATA];
    let end = loop {
        match ssh.read(&mut buf).await {
            Ok(0) => break None,
            Ok(n) => {
                let frame = Frame::Ssh(Bytes::copy_from_slice(&buf[..n]));
                if out.send(Outgoing::Frame(frame)).await.is_err() {
                    return;
                }
            }
            Err(err) => break Some(err),
        }
    };
    let _ = events.send(Event::SshClosed(end)).await;
}

/// Tab -> SSH server.
async fn pump_to_ssh(mut ssh: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(data) = rx.recv().await {
        if ssh.write_all(&data).await.is_err() {
            return; // the reader half reports the failure
        }
    }
    let _ = ssh.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::truncate_reason;

    #[test]
    fn close_reasons_fit_the_websocket_limit() {
        let long = "é".repeat(200);
        let cut = truncate_reason(long);
        assert!(cut.len() <= 123 && cut.ends_with("..."));
        assert_eq!(truncate_reason("short".into()), "short");
    }
}
