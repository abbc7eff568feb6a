//! A forward's live counters. Their own leaf: the demultiplexer counts refused clients,
//! connections count bytes, and the forward handle reads them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a forward.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Connections accepted so far.
    pub connections: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
    /// Bytes from TCP clients to the destination.
    pub bytes_up: AtomicU64,
    /// Bytes from the destination to TCP clients.
    pub bytes_down: AtomicU64,
    /// Connections that failed: refused by the relay (source not allowed, a limit) or
    /// the SSH server, or broken before their orderly end.
    pub failures: AtomicU64,
    /// The last such failure, for the page's row.
    pub last_error: Mutex<Option<String>>,
    /// The connections open now, by id, with where each goes (`host:port`): a dynamic
    /// forward's clients each name their own. Bounded by the relay's cap on a forward's
    /// connections.
    pub live: Mutex<BTreeMap<u32, String>>,
}

/// A snapshot of [`ForwardStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections: u64,
    pub active: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Where each open connection goes (`host:port`), oldest first.
    pub live: Vec<String>,
}

impl ForwardStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("stats lock").clone(),
            live: self
                .live
                .lock()
                .expect("stats lock")
                .values()
                .cloned()
                .collect(),
        }
    }

    /// Connection `conn` to `destination` opens.
    pub(crate) fn open(&self, conn: u32, destination: String) {
        self.live
            .lock()
            .expect("stats lock")
            .insert(conn, destination);
    }

    /// Connection `conn` ended.
    pub(crate) fn closed(&self, conn: u32) {
        self.live.lock().expect("stats lock").remove(&conn);
    }

    /// Counts one failed connection and keeps its reason for the page's row.
    pub(crate) fn fail(&self, reason: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("stats lock") = Some(reason);
    }
}
