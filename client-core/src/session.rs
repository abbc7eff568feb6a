//! A session: one transport to the relay, one SSH connection through it, and the
//! forwards opened on it. The demultiplexer never blocks on one stream, so a Credit
//! frame is always processed even while SSH bytes wait for russh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::{SinkExt, StreamExt};
use russh::client;
use tabtunnel_proto::{Action, ConnError, ConnTable, Frame, MAX_DATA, Side, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};
use tracing::debug;

use crate::forward::{self, ConnInput, Forward, ForwardStats};
use crate::spec::{ForwardSpec, parse_forward};
use crate::ssh::{
    Credentials, HostKeyInfo, HostKeyPolicy, HostKeyVerdict, SshHandler, authenticate,
};
use crate::transport::{Transport, TransportError};
use crate::{ClientError, rt};

/// Frames queued for the transport. Data is bounded by credit; this bounds the rest.
const OUT_QUEUE: usize = 64;
/// Buffer of the in-memory pipe between the demultiplexer and russh.
const SSH_PIPE: usize = 256 * 1024;

/// What `connect` needs besides the transport.
#[derive(Debug)]
pub struct ConnectOptions {
    /// The relay's name for the SSH server.
    pub target: String,
    pub username: String,
    pub auth: Credentials,
    pub host_key: HostKeyPolicy,
    /// Detects a dead SSH server or relay; `None` turns it off.
    pub keepalive: Option<Keepalive>,
    /// The relay's access token, when its operator requires one.
    pub token: Option<String>,
}

/// Like ssh's `ServerAliveInterval` and `ServerAliveCountMax`: after `interval` with
/// nothing from the SSH server, ask it for an answer; when `count_max` such requests in
/// a row went unanswered, end the session. The tab's own timer drives it (russh's timers do not
/// exist in the browser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: std::time::Duration,
    pub count_max: u32,
}

impl Default for Keepalive {
    /// 15 s × 3: a dead server or relay is noticed within about a minute.
    fn default() -> Self {
        Self {
            interval: std::time::Duration::from_secs(15),
            count_max: 3,
        }
    }
}

/// Options of one forward.
#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    /// Open one test channel to the destination before listening, and fail the forward
    /// if the SSH server refuses it or cannot connect (like ssh's ExitOnForwardFailure,
    /// for the destination). The destination sees one connection open and close.
    pub check_destination: bool,
}

/// A live session. Cheap to clone; the session ends when `close` is called or the
/// relay or SSH server goes away.
#[derive(Clone)]
pub struct Session {
    owner: Arc<Owner>,
    host_key: HostKeyInfo,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

/// Held by the user's handles only (sessions and forwards), never by background tasks:
/// when the last handle goes, or `connect` fails, the transport closes. Without it the
/// tasks would keep each other, the WebSocket and the relay's session alive forever.
pub(crate) struct Owner {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.shutdown.notify_one();
    }
}

/// State shared by the session's handles and its background tasks.
pub(crate) struct Shared {
    pub(crate) out: mpsc::Sender<Frame>,
    pub(crate) state: Mutex<MuxState>,
    /// Set once authentication succeeded; Accept frames need it to open channels.
    pub(crate) ssh: OnceLock<client::Handle<SshHandler>>,
    closed: watch::Receiver<Option<String>>,
    /// Tells the writer to close the transport.
    shutdown: Arc<Notify>,
    /// Ends the demultiplexer with `end_reason` (the transport may never close by
    /// itself when the relay is gone).
    ended: Notify,
    end_reason: Mutex<Option<String>>,
    /// Ssh frames received so far: the keepalive's sign of life.
    ssh_frames: std::sync::atomic::AtomicU64,
}

pub(crate) struct MuxState {
    next_forward: u32,
    pending: HashMap<u32, PendingListen>,
    pub(crate) forwards: HashMap<u32, ForwardEntry>,
    /// The forwarded connections and their rules: ids, Eof, windows, credit.
    pub(crate) conns: ConnTable<ConnEntry>,
}

impl Default for MuxState {
    fn default() -> Self {
        Self {
            next_forward: 0,
            pending: HashMap::new(),
            forwards: HashMap::new(),
            conns: ConnTable::new(Side::Tab),
        }
    }
}

struct PendingListen {
    spec: Arc<ForwardSpec>,
    reply: oneshot::Sender<Result<String, ClientError>>,
}

pub(crate) struct ForwardEntry {
    pub(crate) spec: Arc<ForwardSpec>,
    pub(crate) stats: Arc<ForwardStats>,
}

/// The demultiplexer's handle to a connection, kept in `MuxState::conns`.
pub(crate) struct ConnEntry {
    /// Unbounded, yet bounded in bytes and frames: the table checks Data against the
    /// connection's window first, where each frame costs its bytes plus an overhead.
    pub(crate) input: mpsc::UnboundedSender<ConnInput>,
    /// Dropping this stops the connection's pump at once, wherever it waits.
    pub(crate) abort: oneshot::Sender<()>,
}

impl Shared {
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), ClientError> {
        self.out.send(frame).await.map_err(|_| self.closed_error())
    }

    /// Ends the session now with `reason`, whatever the transport does.
    pub(crate) fn end(&self, reason: String) {
        *self.end_reason.lock().expect("end lock") = Some(reason);
        self.ended.notify_one();
        self.shutdown.notify_one();
    }

    pub(crate) fn closed_error(&self) -> ClientError {
        let reason = self.closed.borrow().clone();
        ClientError::Closed(reason.unwrap_or_else(|| "the connection to the relay ended".into()))
    }
}

/// Opens a session: Hello to the relay, SSH handshake with host-key check, then
/// authentication. On success the session is ready for `forward`.
pub async fn connect<T: Transport>(
    transport: T,
    options: ConnectOptions,
) -> Result<Session, ClientError> {
    let (sink, mut stream) = transport.split();
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let shutdown = Arc::new(Notify::new());
    rt::spawn(write_loop(sink, out_rx, shutdown.clone()));

    let hello = Frame::Hello {
        version: VERSION,
        target: options.target.clone(),
        token: options.token.clone().unwrap_or_default(),
    };
    out_tx
        .send(hello)
        .await
        .map_err(|_| ClientError::Transport("the relay closed the connection".into()))?;
    let pinned = match next_frame(&mut stream).await? {
        Some(Frame::Welcome {
            version,
            pinned_host_keys,
        }) if version == VERSION => pinned_host_keys,
        Some(Frame::Welcome { version, .. }) => {
            return Err(ClientError::Protocol(format!(
                "the relay speaks protocol version {version}, this page {VERSION}: reload the page"
            )));
        }
        Some(Frame::Error { code, message }) => return Err(ClientError::Relay { code, message }),
        Some(other) => {
            return Err(ClientError::Protocol(format!(
                "expected Welcome, got {}",
                other.name()
            )));
        }
        None => {
            return Err(ClientError::Transport(
                "the relay closed the connection before answering".into(),
            ));
        }
    };

    // Stream 0 <-> an in-memory pipe that russh reads and writes like a socket.
    let (russh_side, mux_side) = tokio::io::duplex(SSH_PIPE);
    let (pipe_read, pipe_write) = tokio::io::split(mux_side);
    let (ssh_in_tx, ssh_in_rx) = mpsc::unbounded_channel();
    rt::spawn(ssh_outbound(pipe_read, out_tx.clone()));
    rt::spawn(ssh_inbound(pipe_write, ssh_in_rx));

    let (closed_tx, closed_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        out: out_tx,
        state: Mutex::new(MuxState {
            next_forward: 1,
            ..MuxState::default()
        }),
        ssh: OnceLock::new(),
        closed: closed_rx,
        shutdown,
        ended: Notify::new(),
        end_reason: Mutex::new(None),
        ssh_frames: std::sync::atomic::AtomicU64::new(0),
    });
    // From here on, any early return drops the owner and so closes the transport.
    let owner = Arc::new(Owner {
        shared: shared.clone(),
    });
    rt::spawn(demux(stream, shared.clone(), ssh_in_tx, closed_tx));

    let HostKeyPolicy { expected, ask, .. } = options.host_key;
    let handler = SshHandler::new(
        HostKeyPolicy {
            pinned,
            expected,
            ask,
        },
        shared.closed.clone(),
    );
    let verdict = handler.verdict.clone();
    let mut handle = client::connect_stream(Arc::new(ssh_config()), russh_side, handler)
        .await
        .map_err(|err| match verdict.lock().expect("verdict lock").clone() {
            Some(HostKeyVerdict::Refused(refusal)) => refusal,
            _ if shared.closed.borrow().is_some() => shared.closed_error(),
            _ => ClientError::Ssh(format!("the SSH handshake failed: {err}")),
        })?;
    let host_key = match verdict.lock().expect("verdict lock").clone() {
        Some(HostKeyVerdict::Accepted(info)) => info,
        _ => {
            return Err(ClientError::Ssh(
                "the server's host key was never checked".into(),
            ));
        }
    };
    let closed = shared.closed.clone();
    authenticate(&mut handle, &options.username, options.auth, closed)
        .await
        .map_err(|err| match err {
            ClientError::Ssh(_) | ClientError::Closed(_) if shared.closed.borrow().is_some() => {
                let reason = shared.closed.borrow().clone().unwrap_or_default();
                if reason.contains("SSH server closed") {
                    ClientError::Closed(format!(
                        "{reason} during login; SSH servers allow a login limited time and attempts (LoginGraceTime, MaxAuthTries)"
                    ))
                } else {
                    ClientError::Closed(reason)
                }
            }
            other => other,
        })?;
    let _ = shared.ssh.set(handle);
    if let Some(keepalive) = options.keepalive {
        rt::spawn(keep_alive(Arc::downgrade(&shared), keepalive));
    }
    Ok(Session { owner, host_key })
}

/// russh settings for the tab. No keepalive or inactivity timers: russh drives those
/// with tokio timers, which do not exist in the browser.
fn ssh_config() -> client::Config {
    let mut config = client::Config::default();
    // chacha20-poly1305 first: about 4x faster than AES-GCM in wasm (no AES instructions).
    let mut ciphers = vec![russh::cipher::CHACHA20_POLY1305];
    ciphers.extend(
        config
            .preferred
            .cipher
            .iter()
            .filter(|c| **c != russh::cipher::CHACHA20_POLY1305),
    );
    config.preferred.cipher = ciphers.into();
    // Each channel queues at most this many messages (each up to a 32 KiB packet), which
    // bounds what a slow TCP client can make the tab hold.
    config.channel_buffer_size = 32;
    config
}

impl Session {
    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// The server's host-key fingerprint (`SHA256:...`), as accepted.
    pub fn host_key(&self) -> &HostKeyInfo {
        &self.host_key
    }

    /// Opens a local forward like `ssh -L spec`: the relay listens, and each TCP client
    /// that connects is carried through a direct-tcpip channel to the destination.
    pub async fn forward(&self, spec: &str) -> Result<Forward, ClientError> {
        self.forward_with(spec, ForwardOptions::default()).await
    }

    /// [`Session::forward`] with options.
    pub async fn forward_with(
        &self,
        spec: &str,
        options: ForwardOptions,
    ) -> Result<Forward, ClientError> {
        let spec = Arc::new(parse_forward(spec)?);
        if options.check_destination {
            self.check_destination(&spec).await?;
        }
        let (reply, answer) = oneshot::channel();
        let id = {
            let mut state = self.shared().state.lock().expect("state lock");
            let id = state.next_forward;
            state.next_forward = id
                .checked_add(1)
                .ok_or_else(|| ClientError::Protocol("forward ids exhausted".into()))?;
            state.pending.insert(
                id,
                PendingListen {
                    spec: spec.clone(),
                    reply,
                },
            );
            id
        };
        let listen = Frame::Listen {
            forward: id,
            bind: spec.bind.clone(),
            port: spec.port,
        };
        self.shared().send(listen).await?;
        let address = answer.await.map_err(|_| self.shared().closed_error())??;
        let stats = self
            .shared()
            .state
            .lock()
            .expect("state lock")
            .forwards
            .get(&id)
            .map(|f| f.stats.clone());
        let stats = stats.ok_or_else(|| self.shared().closed_error())?;
        Ok(Forward::new(self.owner.clone(), id, spec, address, stats))
    }

    /// Opens and closes one channel to the spec's destination, so a destination the
    /// SSH server refuses or cannot reach fails the forward now, not its first client.
    async fn check_destination(&self, spec: &ForwardSpec) -> Result<(), ClientError> {
        let ssh = self
            .shared()
            .ssh
            .get()
            .ok_or_else(|| self.shared().closed_error())?;
        let channel = ssh
            .channel_open_direct_tcpip(
                spec.host.as_str(),
                u32::from(spec.host_port),
                "127.0.0.1",
                0,
            )
            .await
            .map_err(|err| ClientError::ChannelRefused {
                destination: format!("{}:{}", spec.host, spec.host_port),
                reason: crate::forward::describe_open_failure(&err),
            })?;
        let _ = channel.close().await;
        Ok(())
    }

    /// Why the session ended, once it has; `None` while it is live.
    pub fn closed_reason(&self) -> Option<String> {
        self.shared().closed.borrow().clone()
    }

    /// Waits until the session ends and returns why.
    pub async fn closed(&self) -> String {
        self.closed_signal().await
    }

    /// Resolves, with the reason, when the session ends. Unlike [`Session::closed`] it
    /// does not hold the session: an abandoned session still closes when its last
    /// handle goes, and this then resolves.
    pub fn closed_signal(&self) -> impl std::future::Future<Output = String> + 'static {
        let mut closed = self.shared().closed.clone();
        async move {
            loop {
                if let Some(reason) = closed.borrow_and_update().clone() {
                    return reason;
                }
                if closed.changed().await.is_err() {
                    return "the session ended".into();
                }
            }
        }
    }

    /// Ends the session: the relay then closes every listener and connection of it.
    pub async fn close(&self) {
        if let Some(ssh) = self.shared().ssh.get() {
            let _ = ssh
                .disconnect(russh::Disconnect::ByApplication, "closed by the user", "en")
                .await;
        }
        // The writer closes the WebSocket when it reaches this marker.
        self.shared().shutdown.notify_one();
        self.closed().await;
    }
}

async fn next_frame<S>(stream: &mut S) -> Result<Option<Frame>, ClientError>
where
    S: futures::Stream<Item = Result<Bytes, TransportError>> + Unpin,
{
    match stream.next().await {
        None => Ok(None),
        Some(Err(err)) => Err(ClientError::Transport(err.0)),
        Some(Ok(message)) => tabtunnel_proto::decode(message)
            .map(Some)
            .map_err(|err| ClientError::Protocol(format!("malformed frame from the relay: {err}"))),
    }
}

/// Frames -> transport, flushing once per batch of ready frames, until `shutdown` is
/// notified (the session was closed or abandoned) or the queue ends; then it closes the
/// transport, which ends the relay's session and everything it holds.
async fn write_loop<S>(mut sink: S, mut rx: mpsc::Receiver<Frame>, shutdown: Arc<Notify>)
where
    S: futures::Sink<Bytes, Error = TransportError> + Unpin,
{
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.notified() => break,
            frame = rx.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            if sink
                .feed(tabtunnel_proto::encode_to_bytes(&frame))
                .await
                .is_err()
            {
                return;
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// russh -> relay: SSH bytes as Ssh frames.
async fn ssh_outbound(
    mut pipe: tokio::io::ReadHalf<tokio::io::DuplexStream>,
    out: mpsc::Sender<Frame>,
) {
    let mut buf = vec![0u8; MAX_DATA];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0
            || out
                .send(Frame::Ssh(Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
        {
            break;
        }
    }
}

/// relay -> russh. Fed by an unbounded queue so the demultiplexer never waits on russh;
/// what can arrive is bounded by the SSH channel windows russh grants.
async fn ssh_inbound(
    mut pipe: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) {
    while let Some(data) = rx.recv().await {
        if pipe.write_all(&data).await.is_err() {
            return;
        }
    }
    let _ = pipe.shutdown().await;
}

/// Reads frames from the relay and routes them until the transport ends.
async fn demux<S>(
    mut stream: S,
    shared: Arc<Shared>,
    ssh_in: mpsc::UnboundedSender<Bytes>,
    closed: watch::Sender<Option<String>>,
) where
    S: futures::Stream<Item = Result<Bytes, TransportError>> + Unpin,
{
    let reason = loop {
        let next = tokio::select! {
            biased;
            () = shared.ended.notified() => {
                break shared.end_reason.lock().expect("end lock").take().unwrap_or_default();
            }
            next = next_frame(&mut stream) => next,
        };
        let frame = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => break "the relay closed the connection".to_owned(),
            Err(err) => break err.to_string(),
        };
        if let Err(err) = route(&shared, &ssh_in, frame) {
            break err.to_string();
        }
    };
    debug!("session ends: {reason}");
    let _ = closed.send(Some(reason));
    drop(ssh_in);
    // Fail pending requests and stop every connection.
    let mut state = shared.state.lock().expect("state lock");
    state.pending.clear();
    state.conns.forget_all(); // drops every abort guard
}

/// The session's `ServerAliveInterval`: each interval in which the SSH server sent
/// nothing gets a keepalive request it must answer; when `count_max` requests in a row
/// went unanswered, the session ends. Holds the session weakly, so it never keeps an
/// abandoned one alive.
async fn keep_alive(shared: std::sync::Weak<Shared>, keepalive: Keepalive) {
    use std::sync::atomic::Ordering;
    let mut seen = 0;
    let mut unanswered = 0;
    loop {
        rt::sleep(keepalive.interval).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closed.borrow().is_some() {
            return;
        }
        let now = shared.ssh_frames.load(Ordering::Relaxed);
        if now != seen {
            (seen, unanswered) = (now, 0);
            continue;
        }
        if unanswered >= keepalive.count_max {
            let silent = keepalive.interval * (unanswered + 1);
            shared.end(format!(
                "no answer from the SSH server for {} s, {unanswered} keepalive(s) included (ServerAliveInterval {} s, ServerAliveCountMax {}): the server, the relay or the network is gone",
                silent.as_secs(),
                keepalive.interval.as_secs(),
                keepalive.count_max
            ));
            return;
        }
        if let Some(ssh) = shared.ssh.get() {
            // want_reply: the server must answer, which is the sign of life we count.
            let _ = ssh.send_keepalive(true).await;
        }
        unanswered += 1;
    }
}

/// Handles one frame without waiting, so no stream can hold up another.
fn route(
    shared: &Arc<Shared>,
    ssh_in: &mpsc::UnboundedSender<Bytes>,
    frame: Frame,
) -> Result<(), ClientError> {
    let mut state = shared.state.lock().expect("state lock");
    match frame {
        Frame::Ssh(data) => {
            shared
                .ssh_frames
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = ssh_in.send(data);
        }
        Frame::Listening { forward, address } => {
            if let Some(pending) = state.pending.remove(&forward) {
                let stats = Arc::new(ForwardStats::default());
                state.forwards.insert(
                    forward,
                    ForwardEntry {
                        spec: pending.spec,
                        stats,
                    },
                );
                if pending.reply.send(Ok(address)).is_err() {
                    // The caller gave up waiting; do not leave a listener behind.
                    state.forwards.remove(&forward);
                    let _ = shared.out.try_send(Frame::Unlisten { forward });
                }
            }
        }
        Frame::ListenFailed {
            forward,
            code,
            message,
        } => {
            if let Some(pending) = state.pending.remove(&forward) {
                let _ = pending
                    .reply
                    .send(Err(ClientError::Relay { code, message }));
            } else if let Some(entry) = state.forwards.get(&forward) {
                // A live forward: the relay refused one TCP client of it (a source it
                // does not allow, too many waiting). The listener stays; the forward's
                // row shows why.
                debug!(forward, code = code.as_str(), %message, "the relay refused a connection");
                entry
                    .stats
                    .failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *entry.stats.last_error.lock().expect("stats lock") = Some(message);
            }
        }
        Frame::Accept {
            conn,
            forward,
            peer,
        } => {
            let opening = state.conns.accept(conn, forward).map_err(broken)?;
            let Some(entry) = state.forwards.get(&forward) else {
                // Closed while the relay accepted; the relay forgets it on Unlisten.
                return Ok(());
            };
            let (input, input_rx) = mpsc::unbounded_channel();
            let (abort, abort_rx) = oneshot::channel();
            let pump = forward::ConnPump {
                shared: shared.clone(),
                conn,
                spec: entry.spec.clone(),
                peer,
                stats: entry.stats.clone(),
                flow: opening.flow().clone(),
            };
            state.conns.insert(opening, ConnEntry { input, abort });
            rt::spawn(pump.run(input_rx, abort_rx));
        }
        Frame::Data { conn, data } => {
            deliver(conn, state.conns.handle_data(conn, &data).map_err(broken)?);
        }
        Frame::Credit { conn, bytes } => {
            state.conns.handle_credit(conn, bytes).map_err(broken)?;
        }
        Frame::Eof { conn } => deliver(conn, state.conns.handle_eof(conn).map_err(broken)?),
        Frame::Close { conn, reason } => {
            deliver(
                conn,
                state.conns.handle_close(conn, reason).map_err(broken)?,
            );
        }
        Frame::Error { code, message } => return Err(ClientError::Relay { code, message }),
        other => {
            return Err(ClientError::Protocol(format!(
                "the relay sent a {} frame, which only the tab may send",
                other.name()
            )));
        }
    }
    Ok(())
}

/// The relay broke a rule of a connection.
fn broken(err: ConnError) -> ClientError {
    ClientError::Protocol(err.to_string())
}

/// Passes what the connection table decided on to the connection's pump.
fn deliver(conn: u32, action: Action<'_, ConnEntry>) {
    match action {
        Action::Ignore => {}
        Action::Data(entry, data) => {
            let _ = entry.input.send(ConnInput::Data(data));
        }
        Action::Eof(entry) => {
            let _ = entry.input.send(ConnInput::Eof);
        }
        Action::Close(entry) => {
            debug!(conn, "relay closed connection");
            // Orderly: bytes queued before the Close still reach the channel.
            let _ = entry.input.send(ConnInput::Close(entry.abort));
        }
        Action::Abort(entry, reason) => {
            debug!(conn, %reason, "relay closed connection");
            // Dropping the entry aborts the pump now.
            drop(entry);
        }
    }
}
