//! One accepted TCP connection of a forward: TCP bytes go to the tab within the credit
//! the tab granted; the tab's bytes go to TCP, and credit flows back as they are written.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tabtunnel_proto::{CreditGate, Frame, MAX_DATA, RecvWindow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{Instrument, debug, debug_span};

use crate::metrics::{GaugeGuard, Metrics};
use crate::outgoing::Outgoing;

/// What the session loop passes to a connection, in wire order.
#[derive(Debug)]
pub(crate) enum ToTcp {
    Data(Bytes),
    Eof,
    /// The tab closed the connection in order: write what is queued, then close.
    /// (A Close with a reason aborts the task instead.)
    Close,
}

/// The session loop's view of a live connection.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub forward: u32,
    /// Unbounded, yet bounded: the session checks each Data against `recv_window`
    /// before queueing it, and a frame costs its bytes plus a fixed overhead there, so
    /// at most one window is queued, in bytes and in frames (a 256 KiB window holds at
    /// most 4032 frames, however small).
    pub to_tcp: mpsc::UnboundedSender<ToTcp>,
    pub recv_window: Arc<Mutex<RecvWindow>>,
    pub send_credit: Arc<CreditGate>,
    pub task: AbortHandle,
    /// The tab sent Eof: any later Data or Eof is a protocol error.
    pub eof_received: bool,
    /// The tab opened the SSH channel (it granted credit). Until then the connection
    /// counts against `limits.pending_accepts_per_forward`.
    pub answered: bool,
}

/// How a connection's task ended: the session forgets the connection when it reads
/// this from its set (a task the session aborted has been forgotten already).
#[derive(Debug)]
pub(crate) struct Ended {
    pub conn: u32,
}

/// Where a connection reports to: the tab's queue and the counters.
#[derive(Debug, Clone)]
pub(crate) struct Outlets {
    pub out: mpsc::Sender<Outgoing>,
    pub metrics: Arc<Metrics>,
}

/// Starts the connection's task in the session's set of connections.
pub(crate) fn spawn(
    tasks: &mut JoinSet<Ended>,
    conn: u32,
    forward: u32,
    stream: TcpStream,
    window: RecvWindow,
    outlets: Outlets,
) -> ConnHandle {
    let (to_tcp, input) = mpsc::unbounded_channel();
    let recv_window = Arc::new(Mutex::new(window));
    let send_credit = Arc::new(CreditGate::default());
    let span = debug_span!("conn", conn, forward);
    let task = tasks.spawn(
        run(
            conn,
            stream,
            input,
            recv_window.clone(),
            send_credit.clone(),
            outlets,
        )
        .instrument(span),
    );
    ConnHandle {
        forward,
        to_tcp,
        recv_window,
        send_credit,
        task,
        eof_received: false,
        answered: false,
    }
}

async fn run(
    conn: u32,
    stream: TcpStream,
    mut input: mpsc::UnboundedReceiver<ToTcp>,
    recv_window: Arc<Mutex<RecvWindow>>,
    send_credit: Arc<CreditGate>,
    outlets: Outlets,
) -> Ended {
    let Outlets { out, metrics } = outlets;
    let _active = GaugeGuard::new(&metrics.connections_active);
    let (mut tcp_read, mut tcp_write) = stream.into_split();
    let send = |frame: Frame| out.send(Outgoing::Frame(frame));

    // TCP client -> tab, within credit.
    let upstream = async {
        let mut buf = vec![0u8; MAX_DATA];
        loop {
            // Read only what the tab can take, so nothing waits here for credit.
            let allowed = send_credit.available().await.min(MAX_DATA as u64) as usize;
            let n = tcp_read.read(&mut buf[..allowed]).await?;
            if n == 0 {
                send(Frame::Eof { conn }).await.map_err(|_| gone())?;
                return Ok::<_, std::io::Error>(());
            }
            send_credit.consume(n);
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
                    let grant = recv_window
                        .lock()
                        .expect("window lock")
                        .on_consumed(data.len());
                    if let Some(bytes) = grant {
                        send(Frame::Credit { conn, bytes })
                            .await
                            .map_err(|_| gone())?;
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
                Ok(()) => break None, // the tab closed it and forgot it
                Err(err) => break Some(describe(&err)),
            },
            _ = &mut eof_rx, if !down_done => down_done = true,
        }
        if up_done && down_done {
            break Some(String::new());
        }
    };
    if let Some(reason) = close_reason {
        debug!(%reason, "connection ends");
        let _ = send(Frame::Close { conn, reason }).await;
    }
    Ended { conn }
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
