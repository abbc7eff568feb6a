//! One accepted connection of a forward: its bytes go to the tab within the credit the
//! tab granted; the tab's bytes go to it, and credit flows back as they are written. The
//! client is a TCP client of the forward's listener, a web forward's request (an
//! in-memory pipe to the relay's HTTP proxy), or a SOCKS client of a dynamic forward
//! that has asked for its destination; all are pumped alike, the SOCKS one once the tab's
//! answer became its reply. A remote forward's connection, which the relay dials for the
//! tab, is pumped by `run` too, once it connected (see `dial`).
//! What the tab's frames mean is the session's `ConnTable`'s to decide; this task only
//! moves the bytes and reports how the connection ended.

use std::sync::Arc;

use bytes::Bytes;
use tabtunnel_proto::{ConnFlow, DATA_CHUNK, Frame, OpenFailure, UrgentGrants};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{Instrument, debug, debug_span};

use crate::metrics::{GaugeGuard, Metrics};
use crate::outgoing::Outgoing;

/// The client side of a forwarded connection.
#[derive(Debug)]
pub(crate) enum Client {
    /// A TCP client of the forward's listener.
    Tcp(TcpStream),
    /// The relay's web proxy, through an in-memory pipe (see `web_forward`).
    Web(DuplexStream),
    /// A SOCKS client of a dynamic forward, past its handshake: its reply waits for the
    /// tab's answer to the Connect.
    Socks(Box<SocksClient>),
}

/// A SOCKS client that asked for a destination, and what it sent after asking.
#[derive(Debug)]
pub(crate) struct SocksClient {
    pub stream: TcpStream,
    pub request: tabtunnel_socks::Request,
    /// Bytes the client sent after its request, before any reply: its first bytes.
    pub rest: Vec<u8>,
}

/// What the session loop passes to a connection, in wire order.
#[derive(Debug)]
pub(crate) enum ToTcp {
    Data(Bytes),
    Eof,
    /// The tab closed the connection in order: write what is queued, then close.
    /// (A Close with a reason aborts the task instead.)
    Close,
    /// The tab could not open the connection (OpenFailed): a SOCKS client is told why,
    /// then the connection closes.
    Refused(OpenFailure),
}

/// The session loop's handle to a live connection, kept in its `ConnTable`.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    /// Unbounded, yet bounded: the session's table checks each Data against the
    /// connection's window before it is queued, and a frame costs its bytes plus a
    /// fixed overhead there, so at most one window is queued, in bytes and in frames
    /// (a 256 KiB window holds at most 4032 frames, however small).
    pub to_tcp: mpsc::UnboundedSender<ToTcp>,
    pub task: AbortHandle,
}

/// How a connection's task ended: the session forgets the connection when it reads
/// this from its set (a task the session aborted has been forgotten already), and sends
/// the tab `close` only if it still knew the connection (the tab may have closed it
/// meanwhile).
#[derive(Debug)]
pub(crate) struct Ended {
    pub conn: u32,
    /// The Close to send (an empty reason when both directions finished); `None` when
    /// the tab closed the connection.
    pub close: Option<String>,
}

/// Where a connection reports to: the tab's queue and the counters.
#[derive(Debug, Clone)]
pub(crate) struct Outlets {
    pub out: mpsc::Sender<Outgoing>,
    /// Credit refills, sent ahead of the queue.
    pub grants: Arc<UrgentGrants>,
    pub metrics: Arc<Metrics>,
}

/// Starts the connection's task in the session's set of connections.
pub(crate) fn spawn(
    tasks: &mut JoinSet<Ended>,
    conn: u32,
    forward: u32,
    client: Client,
    flow: Arc<ConnFlow>,
    outlets: Outlets,
) -> ConnHandle {
    let (to_tcp, input) = mpsc::unbounded_channel();
    let span = debug_span!("conn", conn, forward);
    let task = match client {
        // A TCP stream splits into owned halves without a lock.
        Client::Tcp(stream) => {
            let (read, write) = stream.into_split();
            tasks.spawn(run(conn, read, write, input, flow, outlets).instrument(span))
        }
        Client::Web(pipe) => {
            let (read, write) = tokio::io::split(pipe);
            tasks.spawn(run(conn, read, write, input, flow, outlets).instrument(span))
        }
        Client::Socks(client) => {
            tasks.spawn(answer_socks(conn, *client, input, flow, outlets).instrument(span))
        }
    };
    ConnHandle { to_tcp, task }
}

/// Pumps a connection's bytes both ways until it ends.
pub(crate) async fn run<R, W>(
    conn: u32,
    mut tcp_read: R,
    mut tcp_write: W,
    mut input: mpsc::UnboundedReceiver<ToTcp>,
    flow: Arc<ConnFlow>,
    outlets: Outlets,
) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Outlets {
        out,
        grants,
        metrics,
    } = outlets;
    let _active = GaugeGuard::new(&metrics.connections_active);
    let send = |frame: Frame| out.send(Outgoing::Frame(frame));

    // TCP client -> tab, within credit.
    let upstream = async {
        let mut buf = vec![0u8; DATA_CHUNK];
        loop {
            // Read only what the tab can take, so nothing waits here for credit. Having
            // spent it all, say so: the tab may grow the window.
            if flow.credit().ran_dry() {
                send(Frame::Blocked { conn }).await.map_err(|_| gone())?;
            }
            let allowed = flow.credit().available().await.min(DATA_CHUNK as u64) as usize;
            let n = tcp_read.read(&mut buf[..allowed]).await?;
            if n == 0 {
                send(Frame::Eof { conn }).await.map_err(|_| gone())?;
                return Ok::<_, std::io::Error>(());
            }
            flow.credit().consume(n);
            metrics.bytes_up.inc_by(n as u64);
            let data = Bytes::copy_from_slice(&buf[..n]);
            send(Frame::Data { conn, data }).await.map_err(|_| gone())?;
        }
    };

    // Tab -> TCP client, returning credit as bytes are written. It keeps reading after
    // the tab's Eof, so a later Close is seen; the Eof itself is signalled separately.
    let (eof_tx, mut eof_rx) = tokio::sync::oneshot::channel::<()>();
    let downstream = async {
        let mut eof_tx = Some(eof_tx);
        while let Some(item) = input.recv().await {
            match item {
                ToTcp::Data(data) => {
                    tcp_write.write_all(&data).await?;
                    metrics.bytes_down.inc_by(data.len() as u64);
                    if let Some(bytes) = flow.consumed(data.len()) {
                        grants.push(conn, bytes);
                    }
                }
                ToTcp::Eof => {
                    tcp_write.shutdown().await?;
                    if let Some(eof) = eof_tx.take() {
                        let _ = eof.send(());
                    }
                }
                ToTcp::Close => {
                    // An orderly close: what was queued before it has been written.
                    let _ = tcp_write.shutdown().await;
                    return Ok(());
                }
                // Only a connection not yet answered can be refused: a SOCKS one, which
                // waits for its answer before it is pumped.
                ToTcp::Refused(_) => return Ok(()),
            }
        }
        Err(gone()) // the session dropped us
    };

    tokio::pin!(upstream, downstream);
    let (mut up_done, mut down_done) = (false, false);
    let close_reason = loop {
        tokio::select! {
            result = &mut upstream, if !up_done => match result {
                Ok(()) => up_done = true,
                Err(err) => break Some(describe(&err)),
            },
            result = &mut downstream => match result {
                Ok(()) => break None, // the tab closed it: no Close back
                Err(err) => break Some(describe(&err)),
            },
            _ = &mut eof_rx, if !down_done => down_done = true,
        }
        if up_done && down_done {
            break Some(String::new());
        }
    };
    if let Some(reason) = &close_reason {
        debug!(%reason, "connection ends");
    }
    Ended {
        conn,
        close: close_reason,
    }
}

/// A SOCKS client's connection: waits for the tab's answer to its Connect, replies
/// with it, and then is pumped like any other. The tab answers with its first Credit
/// (its SSH channel is open) or an OpenFailed (the reason the SSH server gave); it sends
/// no Data before its Credit. The bytes the client sent after its request go first.
async fn answer_socks(
    conn: u32,
    client: SocksClient,
    mut input: mpsc::UnboundedReceiver<ToTcp>,
    flow: Arc<ConnFlow>,
    outlets: Outlets,
) -> Ended {
    let SocksClient {
        mut stream,
        request,
        rest,
    } = client;
    let refused = tokio::select! {
        // The credit first: the tab's Data may be queued already when the task wakes,
        // and its Credit, which came before it, is the answer.
        biased;
        // `available` takes nothing: the pump spends the credit.
        _ = flow.credit().available() => None,
        item = input.recv() => Some(match item {
            Some(ToTcp::Refused(failure)) => failure,
            // Anything else before the answer breaks the rule above; the tab's table has
            // not forgotten it, so the Close goes back.
            Some(ToTcp::Data(_) | ToTcp::Eof) => {
                let _ = stream.write_all(&request.failure_reply(OpenFailure::General)).await;
                return Ended {
                    conn,
                    close: Some("the tab sent data before it opened the connection".into()),
                };
            }
            // Closed by the tab before its answer (it forgot the connection).
            Some(ToTcp::Close) | None => OpenFailure::General,
        }),
    };
    if let Some(failure) = refused {
        // Best effort: the client may be gone already. The tab forgot the connection.
        let _ = stream.write_all(&request.failure_reply(failure)).await;
        let _ = stream.shutdown().await;
        return Ended { conn, close: None };
    }
    if let Err(err) = stream.write_all(&request.success_reply()).await {
        return Ended {
            conn,
            close: Some(describe(&err)),
        };
    }
    let (read, write) = stream.into_split();
    let read = std::io::Cursor::new(rest).chain(read);
    run(conn, read, write, input, flow, outlets).await
}

fn gone() -> std::io::Error {
    std::io::Error::other("session ended")
}

fn describe(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::ConnectionReset => "the TCP client reset the connection".into(),
        std::io::ErrorKind::BrokenPipe => "the TCP client stopped reading".into(),
        _ => format!("TCP connection failed: {err}"),
    }
}
