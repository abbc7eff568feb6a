//! The demultiplexer and the write loop: one transport to the relay carries stream 0
//! (SSH bytes, pumped to and from an in-memory pipe that russh reads like a socket)
//! and the forwards' connections. The demultiplexer never blocks on one stream, so a
//! Credit frame is always processed even while SSH bytes wait for russh.
//!
//! The mux knows no SSH channel and no forward handle: an accepted connection is
//! handed out as an [`Accepted`] on a queue, and the handles call the mux's methods.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::{SinkExt, StreamExt};
use tabtunnel_proto::{
    Action, ConnError, ConnFlow, ConnTable, Frame, MAX_DATA, ResumeSecret, Side, UrgentGrants,
    VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tracing::debug;

use crate::end::End;
use crate::error::ClientError;
use crate::kind::ForwardKind;
use crate::rt;
use crate::stats::ForwardStats;
use crate::transport::{Transport, TransportError};

/// Frames queued for the transport. Data is bounded by credit; this bounds the rest.
const OUT_QUEUE: usize = 64;
/// Buffer of the in-memory pipe between the demultiplexer and russh.
const SSH_PIPE: usize = 256 * 1024;

/// The session's link to the relay, shared by its handles and background tasks.
pub(crate) struct Mux {
    out: mpsc::Sender<Frame>,
    /// Credit refills, which the write loop sends ahead of `out`.
    grants: Arc<UrgentGrants>,
    state: Mutex<MuxState>,
    end: End,
    /// Ssh frames received so far: the keepalive's sign of life.
    ssh_frames: Arc<AtomicU64>,
}

/// Held by the user's handles only (sessions and forwards), never by background tasks:
/// when the last handle goes, or `connect` fails, the transport closes. Without it the
/// tasks would keep each other, the WebSocket and the relay's session alive forever.
pub(crate) struct Owner {
    mux: Arc<Mux>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.mux.end.close_transport();
    }
}

impl Owner {
    /// The mux, for background tasks (which must not hold the owner).
    pub(crate) fn mux(&self) -> Arc<Mux> {
        self.mux.clone()
    }
}

impl std::ops::Deref for Owner {
    type Target = Mux;

    fn deref(&self) -> &Mux {
        &self.mux
    }
}

struct MuxState {
    next_forward: u32,
    pending: HashMap<u32, PendingListen>,
    forwards: HashMap<u32, ForwardEntry>,
    /// The connections' rules (ids, Eof, windows) live in the table; the mux only
    /// applies what it answers.
    conns: ConnTable<ConnHandle>,
    /// Where the SSH server listens for each remote forward (see `remote`).
    sshd_listens: HashMap<u32, (String, u32)>,
}

/// What a Listen waits for.
type ListenReply = Result<Listened, ClientError>;

/// A forward the relay opened: where it listens, its web URL if the relay gave one,
/// and its counters.
pub(crate) struct Listened {
    pub(crate) address: String,
    pub(crate) web_url: Option<String>,
    pub(crate) stats: Arc<ForwardStats>,
}

struct PendingListen {
    kind: Arc<ForwardKind>,
    /// The counters of a forward listening again after a reconnect; `None`: new ones.
    stats: Option<Arc<ForwardStats>>,
    reply: oneshot::Sender<ListenReply>,
    /// The WebForward the relay sends just before the Listening.
    web_url: Option<String>,
}

struct ForwardEntry {
    kind: Arc<ForwardKind>,
    stats: Arc<ForwardStats>,
}

/// The mux's end of a connection's pump.
struct ConnHandle {
    /// Unbounded, yet bounded in bytes and frames: the table checks each Data against
    /// the connection's window first, where each frame costs its bytes plus a fixed
    /// overhead.
    input: mpsc::UnboundedSender<ConnInput>,
    /// Dropping this stops the connection's pump at once, wherever it waits.
    abort: oneshot::Sender<()>,
}

/// What the demultiplexer passes to a connection, in wire order.
#[derive(Debug)]
pub(crate) enum ConnInput {
    Data(Bytes),
    Eof,
    /// The relay closed the connection in order: finish what is queued, then stop.
    /// Carries the connection's abort guard, so it fires only once this is processed.
    Close(oneshot::Sender<()>),
    /// The relay could not open a connection the tab opened (a remote forward's Dial):
    /// why, in its words.
    Refused(String),
}

/// A connection the relay opened (a `-L` forward's Accept, a `-D` forward's Connect),
/// for whoever pumps it to an SSH channel.
pub(crate) struct Accepted {
    pub(crate) conn: u32,
    /// Where its SSH channel goes: the forward's destination, or the one a SOCKS client
    /// named.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// A SOCKS client's: if its channel cannot be opened, the relay is told why with an
    /// OpenFailed (it becomes the client's reply), not a Close.
    pub(crate) socks: bool,
    pub(crate) peer: String,
    pub(crate) stats: Arc<ForwardStats>,
    /// The receive window the pump refills and the credit it spends.
    pub(crate) flow: Arc<ConnFlow>,
    pub(crate) input: mpsc::UnboundedReceiver<ConnInput>,
    /// Resolves when the mux drops the connection: the relay aborted it, or its
    /// forward or the session closed.
    pub(crate) abort: oneshot::Receiver<()>,
}

/// A mux the relay welcomed.
pub(crate) struct Opened {
    pub(crate) owner: Arc<Owner>,
    /// Host-key fingerprints the relay's operator pinned for the target.
    pub(crate) pinned: Vec<String>,
    /// The secret that resumes this session if it is lost (`None`: the relay keeps
    /// nothing), and whether it resumed the one the Hello named.
    pub(crate) resume: Option<ResumeSecret>,
    pub(crate) resumed: bool,
    /// Stream 0, for russh.
    pub(crate) ssh_stream: DuplexStream,
    pub(crate) accepted: mpsc::UnboundedReceiver<Accepted>,
}

/// Says Hello on `transport` and waits for the relay's Welcome; then runs the
/// demultiplexer, the write loop and the stream-0 pumps in the background.
pub(crate) async fn open<T: Transport>(transport: T, hello: Frame) -> Result<Opened, ClientError> {
    let (sink, mut stream) = transport.split();
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let grants = Arc::new(UrgentGrants::default());
    let end = End::default();
    rt::spawn(write_loop(sink, out_rx, grants.clone(), end.clone()));

    // Until the Welcome, an error drops `out`: the writer then closes the transport.
    out.send(hello)
        .await
        .map_err(|_| ClientError::Transport("the relay closed the connection".into()))?;
    let (pinned, resume, resumed) = match next_frame(&mut stream).await? {
        Some(Frame::Welcome {
            version,
            pinned_host_keys,
            resume,
            resumed,
        }) if version == VERSION => (pinned_host_keys, resume, resumed),
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

    let (ssh_stream, mux_side) = tokio::io::duplex(SSH_PIPE);
    let (pipe_read, pipe_write) = tokio::io::split(mux_side);
    let (ssh_in, ssh_in_rx) = mpsc::unbounded_channel();
    rt::spawn(ssh_outbound(pipe_read, out.clone()));
    rt::spawn(ssh_inbound(pipe_write, ssh_in_rx));

    let mux = Arc::new(Mux {
        out,
        grants,
        state: Mutex::new(MuxState {
            next_forward: 1,
            pending: HashMap::new(),
            forwards: HashMap::new(),
            conns: ConnTable::new(Side::Tab),
            sshd_listens: HashMap::new(),
        }),
        end,
        ssh_frames: Arc::default(),
    });
    let (accepted_tx, accepted) = mpsc::unbounded_channel();
    let links = Links {
        ssh_in,
        accepted: accepted_tx,
    };
    rt::spawn(demux(stream, mux.clone(), links));
    Ok(Opened {
        owner: Arc::new(Owner { mux }),
        pinned,
        resume,
        resumed,
        ssh_stream,
        accepted,
    })
}

impl Mux {
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), ClientError> {
        self.out.send(frame).await.map_err(|_| self.closed_error())
    }

    /// Grants the relay `bytes` more credit for `conn`, ahead of queued frames. Only for
    /// refills (see [`UrgentGrants`]); a connection's first grant goes through `send`.
    pub(crate) fn grant(&self, conn: u32, bytes: u32) {
        self.grants.push(conn, bytes);
    }

    pub(crate) fn end(&self) -> &End {
        &self.end
    }

    /// Counts Ssh frames received: the keepalive's sign of life.
    pub(crate) fn ssh_frames(&self) -> Arc<AtomicU64> {
        self.ssh_frames.clone()
    }

    pub(crate) fn closed_error(&self) -> ClientError {
        ClientError::Closed(
            self.end
                .ended()
                .map(|ended| ended.reason)
                .unwrap_or_else(|| "the connection to the relay ended".into()),
        )
    }

    /// Asks the relay to listen for `kind`; returns the forward's id and what the relay
    /// answered.
    pub(crate) async fn listen(
        &self,
        kind: Arc<ForwardKind>,
    ) -> Result<(u32, Listened), ClientError> {
        self.listen_as(None, kind, None).await
    }

    /// [`Mux::listen`], for a forward that listened before the session reconnected when
    /// `id` is given: the same id and the same counters, so its handle carries on.
    pub(crate) async fn listen_as(
        &self,
        id: Option<u32>,
        kind: Arc<ForwardKind>,
        stats: Option<Arc<ForwardStats>>,
    ) -> Result<(u32, Listened), ClientError> {
        let (reply, answer) = oneshot::channel();
        let forward = {
            let mut state = self.state.lock().expect("state lock");
            let id = id.unwrap_or(state.next_forward);
            state.next_forward = id
                .checked_add(1)
                .ok_or_else(|| ClientError::Protocol("forward ids exhausted".into()))?
                .max(state.next_forward);
            state.pending.insert(
                id,
                PendingListen {
                    kind: kind.clone(),
                    stats,
                    reply,
                    web_url: None,
                },
            );
            id
        };
        self.send(kind.listen_frame(forward)).await?;
        let listened = answer.await.map_err(|_| self.closed_error())??;
        Ok((forward, listened))
    }

    /// Stops the relay listening for `forward` and ends its connections.
    pub(crate) async fn close_forward(&self, forward: u32) -> Result<(), ClientError> {
        let conns = {
            let mut state = self.state.lock().expect("state lock");
            if state.forwards.remove(&forward).is_none() {
                return Ok(()); // already closed
            }
            state.conns.forget_forward(forward)
        };
        // Dropping the entries drops their abort guards: each pump stops now.
        drop(conns);
        self.send(Frame::Unlisten { forward }).await
    }

    /// Forgets a connection whose pump ended, so frames still on the wire for it are
    /// ignored. False if the mux had forgotten it already (the relay closed it, or its
    /// forward or the session closed): then the relay must not be told.
    pub(crate) fn forget_conn(&self, conn: u32) -> bool {
        let handle = self.state.lock().expect("state lock").conns.forget(conn);
        handle.is_some()
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

/// Frames -> transport, flushing once per batch of ready frames, until the session
/// is closing or ended (closed, abandoned, or ended by either side) or the queue ends;
/// then it closes the transport, which ends the relay's session and everything it holds.
async fn write_loop<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<Frame>,
    grants: Arc<UrgentGrants>,
    end: End,
) where
    S: futures::Sink<Bytes, Error = TransportError> + Unpin,
{
    let closing = end.wait_closing();
    tokio::pin!(closing);
    loop {
        let mut next = tokio::select! {
            biased;
            () = &mut closing => break,
            () = grants.ready() => None,
            frame = rx.recv() => match frame {
                Some(frame) => Some(frame),
                None => break,
            },
        };
        loop {
            // Waiting grants go first: behind bulk data they would starve the relay.
            for grant in grants.take() {
                if sink
                    .feed(tabtunnel_proto::encode_to_bytes(&grant))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let Some(frame) = next.take() else { break };
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
async fn ssh_outbound(mut pipe: tokio::io::ReadHalf<DuplexStream>, out: mpsc::Sender<Frame>) {
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
    mut pipe: tokio::io::WriteHalf<DuplexStream>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) {
    while let Some(data) = rx.recv().await {
        if pipe.write_all(&data).await.is_err() {
            return;
        }
    }
    let _ = pipe.shutdown().await;
}

/// Where the demultiplexer hands what is not its own. It owns these ends, so they
/// close when it ends: russh sees its stream end, the accept queue drains and stops.
struct Links {
    ssh_in: mpsc::UnboundedSender<Bytes>,
    accepted: mpsc::UnboundedSender<Accepted>,
}

/// Reads frames from the relay and routes them until the transport ends or the
/// session ends otherwise.
async fn demux<S>(mut stream: S, mux: Arc<Mux>, links: Links)
where
    S: futures::Stream<Item = Result<Bytes, TransportError>> + Unpin,
{
    let ended = mux.end.wait();
    tokio::pin!(ended);
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut ended => break,
            next = next_frame(&mut stream) => next,
        };
        let result = match next {
            Ok(Some(frame)) => route(&mux, &links, frame),
            Ok(None) => Err(ClientError::Transport(
                "the relay closed the connection".into(),
            )),
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            let code = match &err {
                ClientError::Relay { code, .. } => Some(*code),
                _ => None,
            };
            mux.end.end(err.to_string(), code);
            break;
        }
    }
    if let Some(ended) = mux.end.ended() {
        debug!("session ends: {}", ended.reason);
    }
    drop(links);
    // Fail pending requests and stop every connection.
    let conns = {
        let mut state = mux.state.lock().expect("state lock");
        state.pending.clear();
        state.conns.forget_all()
    };
    drop(conns); // drops every abort guard
}

/// Handles one frame without waiting, so no stream can hold up another.
fn route(mux: &Mux, links: &Links, frame: Frame) -> Result<(), ClientError> {
    let mut state = mux.state.lock().expect("state lock");
    match frame {
        Frame::Ssh(data) => {
            mux.ssh_frames.fetch_add(1, Ordering::Relaxed);
            let _ = links.ssh_in.send(data);
        }
        Frame::WebForward { forward, url } => {
            // Kept until the Listening that follows; one for no pending Listen is stale.
            if let Some(pending) = state.pending.get_mut(&forward) {
                pending.web_url = Some(url);
            }
        }
        Frame::Listening { forward, address } => {
            if let Some(pending) = state.pending.remove(&forward) {
                let stats = pending.stats.unwrap_or_default();
                state.forwards.insert(
                    forward,
                    ForwardEntry {
                        kind: pending.kind,
                        stats: stats.clone(),
                    },
                );
                let listened = Listened {
                    address,
                    web_url: pending.web_url,
                    stats,
                };
                if pending.reply.send(Ok(listened)).is_err() {
                    // The caller gave up waiting; do not leave a listener behind.
                    state.forwards.remove(&forward);
                    let _ = mux.out.try_send(Frame::Unlisten { forward });
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
                entry.stats.fail(message);
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
            if entry.kind.remote().is_some() {
                return Err(ClientError::Protocol(format!(
                    "the relay sent an Accept for forward {forward}, a remote forward, whose connections the tab opens"
                )));
            }
            let Some(spec) = entry.kind.local() else {
                return Err(ClientError::Protocol(format!(
                    "the relay sent an Accept for forward {forward}, a dynamic forward, which takes Connects"
                )));
            };
            let (host, port) = (spec.host.clone(), spec.host_port);
            let stats = entry.stats.clone();
            hand_out(&mut state, links, opening, (host, port, false), peer, stats);
        }
        Frame::Connect {
            conn,
            forward,
            host,
            port,
            peer,
        } => {
            let opening = state.conns.accept(conn, forward).map_err(broken)?;
            let Some(entry) = state.forwards.get(&forward) else {
                return Ok(());
            };
            if entry.kind.local().is_some() {
                return Err(ClientError::Protocol(format!(
                    "the relay sent a Connect for forward {forward}, a local forward, which takes Accepts"
                )));
            }
            if !entry.kind.is_dynamic() {
                return Err(ClientError::Protocol(format!(
                    "the relay sent a Connect for forward {forward}, a remote forward, whose connections the tab opens"
                )));
            }
            let stats = entry.stats.clone();
            hand_out(&mut state, links, opening, (host, port, true), peer, stats);
        }
        Frame::OpenFailed {
            conn,
            failure,
            message,
        } => apply(
            state
                .conns
                .handle_open_failed(conn, failure, message)
                .map_err(broken)?,
        ),
        Frame::Data { conn, data } => apply(state.conns.handle_data(conn, &data).map_err(broken)?),
        Frame::Credit { conn, bytes } => state.conns.handle_credit(conn, bytes).map_err(broken)?,
        Frame::Blocked { conn } => {
            if let Some(bytes) = state.conns.handle_blocked(conn).map_err(broken)? {
                mux.grant(conn, bytes);
            }
        }
        Frame::Eof { conn } => apply(state.conns.handle_eof(conn).map_err(broken)?),
        Frame::Close { conn, reason } => {
            apply(state.conns.handle_close(conn, reason).map_err(broken)?);
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

/// Starts a connection the relay opened: its entry in the table, and its pump's end on
/// the queue. `destination`: host, port, and whether a SOCKS client asked for it.
fn hand_out(
    state: &mut MuxState,
    links: &Links,
    opening: tabtunnel_proto::Opening,
    destination: (String, u16, bool),
    peer: String,
    stats: Arc<ForwardStats>,
) {
    let (host, port, socks) = destination;
    let (input, input_rx) = mpsc::unbounded_channel();
    let (abort, abort_rx) = oneshot::channel();
    let accepted = Accepted {
        conn: opening.conn,
        host,
        port,
        socks,
        peer,
        stats,
        flow: opening.flow().clone(),
        input: input_rx,
        abort: abort_rx,
    };
    state.conns.insert(opening, ConnHandle { input, abort });
    let _ = links.accepted.send(accepted);
}

/// Does what the connection table answered to a frame.
fn apply(action: Action<'_, ConnHandle>) {
    match action {
        Action::Ignore => {}
        Action::Data(conn, data) => {
            let _ = conn.input.send(ConnInput::Data(data));
        }
        Action::Eof(conn) => {
            let _ = conn.input.send(ConnInput::Eof);
        }
        // Orderly: bytes queued before the Close still reach the channel.
        Action::Close(conn) => {
            let _ = conn.input.send(ConnInput::Close(conn.abort));
        }
        // Dropping the handle aborts the pump now.
        Action::Abort(conn, reason) => {
            debug!(%reason, "relay aborted a connection");
            drop(conn);
        }
        Action::Refused(conn, failure, message) => {
            debug!(?failure, %message, "relay could not open a connection");
            // Its pump reads why before it sees the abort.
            let _ = conn.input.send(ConnInput::Refused(message));
            drop(conn);
        }
    }
}

/// The relay broke a rule of a connection: the session ends.
fn broken(err: ConnError) -> ClientError {
    ClientError::Protocol(err.to_string())
}

mod remote;
pub(crate) use remote::Dialled;

#[cfg(test)]
mod tests;
