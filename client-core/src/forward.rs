//! A forward's handle: where the relay listens for it, its counters, and `close`.

use std::sync::Arc;

use crate::error::ClientError;
use crate::kind::ForwardKind;
use crate::link::Link;
use crate::mux::Listened;
use crate::stats::{ForwardStats, StatsSnapshot};

/// A forward the relay listens for. After a reconnect it listens at the same address,
/// and its counters carry on.
#[derive(Clone)]
pub struct Forward {
    link: Arc<Link>,
    id: u32,
    kind: Arc<ForwardKind>,
    listen: String,
    stats: Arc<ForwardStats>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("listen", &self.listen)
            .finish()
    }
}

impl Forward {
    pub(crate) fn new(
        link: Arc<Link>,
        id: u32,
        kind: Arc<ForwardKind>,
        listened: Listened,
    ) -> Self {
        Self {
            link,
            id,
            kind,
            listen: listened.address,
            stats: listened.stats,
        }
    }

    /// Where TCP clients connect, on the relay host (`127.0.0.1:10080`).
    pub fn listen(&self) -> &str {
        &self.listen
    }

    /// Where a browser opens this forward as a web app, when the relay has web forwards
    /// on (`https://f-<id>.lab-forwards.net/?tabtunnel_key=...`). It works once: the first
    /// browser to follow it gets a cookie for the forward, and only that browser gets in
    /// with the link again; hand it to no one you would not give the forward itself.
    ///
    /// A session that reconnects keeps it when the relay resumed the session, and gets a
    /// new one when it did not (the relay restarted), so ask again after a restore.
    pub fn web_url(&self) -> Option<String> {
        self.link.web_url(self.id)
    }

    /// What was asked for: a `-L` spec, or a `-D` one.
    pub fn kind(&self) -> &ForwardKind {
        &self.kind
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops listening and ends this forward's connections.
    pub async fn close(&self) -> Result<(), ClientError> {
        self.link.close_forward(self.id).await
    }
}
