//! One connection of a remote forward (`ssh -R`): the SSH server forwarded a connection
//! to the tab, and the tab's Dial asks the relay to connect to the forward's
//! destination. The task connects (within the relay's connect timeout), answers the tab
//! with its first Credit (connected) or an OpenFailed (why not), and then pumps the bytes
//! like any other connection (`connection::run`). Which destinations may be dialled, and
//! how many at once, is the session's to decide (see `session::remote`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tabtunnel_proto::{ConnFlow, Frame, OpenFailure};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug_span};

use crate::config::values::RemoteDestination;
use crate::connection::{ConnHandle, Ended, Outlets, ToTcp};
use crate::metrics::GaugeGuard;
use crate::outgoing::Outgoing;

/// A remote forward the relay agreed to dial for: its destination and its dials in
/// progress.
pub(crate) struct RemoteForward {
    pub destination: RemoteDestination,
    pending: Arc<AtomicUsize>,
    _active: GaugeGuard,
}

impl RemoteForward {
    /// `active` counts it among the relay's open forwards while it lives.
    pub fn new(destination: RemoteDestination, active: GaugeGuard) -> Self {
        Self {
            destination,
            pending: Arc::default(),
            _active: active,
        }
    }

    /// Its dials still connecting.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// A dial of its destination, counted as pending until it connects or fails.
    pub fn dial(&self, timeout: Duration) -> DialClient {
        DialClient {
            address: self.destination.address(),
            timeout,
            pending: PendingDial::new(&self.pending),
        }
    }
}

/// Starts a dial's task in the session's set of connections.
pub(crate) fn spawn(
    tasks: &mut JoinSet<Ended>,
    conn: u32,
    forward: u32,
    client: DialClient,
    flow: Arc<ConnFlow>,
    outlets: Outlets,
) -> ConnHandle {
    let (to_tcp, input) = mpsc::unbounded_channel();
    let span = debug_span!("conn", conn, forward);
    let task = tasks.spawn(connect_then_run(conn, client, input, flow, outlets).instrument(span));
    ConnHandle { to_tcp, task }
}

/// What a Dial connects to.
#[derive(Debug)]
pub(crate) struct DialClient {
    /// `host:port` as the operator wrote it in `remote_destinations` (a name is resolved
    /// here, by the relay).
    pub address: String,
    /// How long the connect may take, name lookup included.
    pub timeout: Duration,
    /// Held while connecting: the forward counts its dials in progress.
    pub pending: PendingDial,
}

/// One dial in progress of a remote forward, counted until it connects or fails.
#[derive(Debug)]
pub(crate) struct PendingDial(Arc<AtomicUsize>);

impl PendingDial {
    /// Counts one more dial in `count`, until the guard is dropped.
    pub fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for PendingDial {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connects, answers the tab, and pumps the connection until it ends.
pub(crate) async fn connect_then_run(
    conn: u32,
    client: DialClient,
    mut input: mpsc::UnboundedReceiver<ToTcp>,
    flow: Arc<ConnFlow>,
    outlets: Outlets,
) -> Ended {
    let DialClient {
        address,
        timeout,
        pending,
    } = client;
    let connected = tokio::select! {
        connected = tokio::time::timeout(timeout, TcpStream::connect(&address)) => connected,
        // The tab's answer is awaited first: it sends nothing but a Close before it.
        item = input.recv() => {
            let close = match item {
                // Closed by the tab (it forgot the connection): nothing to answer.
                Some(ToTcp::Close) | None => None,
                Some(_) => Some("the tab sent data before the relay connected".to_owned()),
            };
            return Ended { conn, close };
        }
    };
    drop(pending);
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            let failure = failure_of(&err);
            let message = format!("the relay could not connect to {address}: {err}");
            return refuse(conn, failure, message, &outlets).await;
        }
        Err(_) => {
            let message = format!(
                "the relay could not connect to {address}: no answer within {}",
                humantime::format_duration(timeout)
            );
            return refuse(conn, OpenFailure::TimedOut, message, &outlets).await;
        }
    };
    let _ = stream.set_nodelay(true);
    // The first Credit says the relay connected; the tab pumps once it has it.
    let grant = Frame::Credit {
        conn,
        bytes: flow.initial_grant(),
    };
    if outlets.out.send(Outgoing::Frame(grant)).await.is_err() {
        return Ended { conn, close: None };
    }
    let (read, write) = stream.into_split();
    crate::connection::run(conn, read, write, input, flow, outlets).await
}

/// Tells the tab why the connection could not be opened; the session then forgets it
/// with no Close, as the tab does on OpenFailed.
async fn refuse(conn: u32, failure: OpenFailure, message: String, outlets: &Outlets) -> Ended {
    tracing::debug!(conn, ?failure, %message, "dial failed");
    let frame = Frame::OpenFailed {
        conn,
        failure,
        message,
    };
    let _ = outlets.out.send(Outgoing::Frame(frame)).await;
    Ended { conn, close: None }
}

/// What a failed connect means, in the terms an OpenFailed carries.
fn failure_of(err: &std::io::Error) -> OpenFailure {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::ConnectionRefused => OpenFailure::Refused,
        ErrorKind::TimedOut => OpenFailure::TimedOut,
        ErrorKind::NetworkUnreachable => OpenFailure::NetworkUnreachable,
        ErrorKind::HostUnreachable => OpenFailure::HostUnreachable,
        ErrorKind::PermissionDenied => OpenFailure::NotAllowed,
        // A name that did not resolve comes as an uncategorized error with its words.
        _ if err.to_string().contains("lookup") => OpenFailure::HostUnreachable,
        _ => OpenFailure::General,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_map_to_open_failures() {
        use std::io::{Error, ErrorKind};
        let of = |kind| failure_of(&Error::from(kind));
        assert_eq!(of(ErrorKind::ConnectionRefused), OpenFailure::Refused);
        assert_eq!(of(ErrorKind::TimedOut), OpenFailure::TimedOut);
        assert_eq!(
            of(ErrorKind::NetworkUnreachable),
            OpenFailure::NetworkUnreachable
        );
        assert_eq!(of(ErrorKind::HostUnreachable), OpenFailure::HostUnreachable);
        assert_eq!(of(ErrorKind::Other), OpenFailure::General);
        let lookup =
            Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(failure_of(&lookup), OpenFailure::HostUnreachable);
    }

    #[test]
    fn a_pending_dial_counts_until_dropped() {
        let count = Arc::new(AtomicUsize::new(0));
        let one = PendingDial::new(&count);
        let two = PendingDial::new(&count);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        drop(one);
        drop(two);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
