//! A forward's handle: where the relay listens for it, its counters, and `close`.

use std::sync::Arc;

use crate::error::ClientError;
use crate::mux::{Listened, Owner};
use crate::spec::ForwardSpec;
use crate::stats::{ForwardStats, StatsSnapshot};

/// A forward the relay listens for.
#[derive(Clone)]
pub struct Forward {
    owner: Arc<Owner>,
    id: u32,
    spec: Arc<ForwardSpec>,
    listen: String,
    /// Carries the forward's capability: kept out of `Debug`.
    web_url: Option<String>,
    stats: Arc<ForwardStats>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("id", &self.id)
            .field("spec", &self.spec)
            .field("listen", &self.listen)
            .field("web_url", &self.web_url.as_ref().map(|_| "(redacted)"))
            .finish()
    }
}

impl Forward {
    pub(crate) fn new(
        owner: Arc<Owner>,
        id: u32,
        spec: Arc<ForwardSpec>,
        listened: Listened,
    ) -> Self {
        Self {
            owner,
            id,
            spec,
            listen: listened.address,
            web_url: listened.web_url,
            stats: listened.stats,
        }
    }

    /// Where TCP clients connect, on the relay host (`127.0.0.1:10080`).
    pub fn listen(&self) -> &str {
        &self.listen
    }

    /// Where a browser opens this forward as a web app, when the relay has web forwards
    /// on (`https://f-<id>.tunnel.example.edu/?tabtunnel_key=...`). The first visit with
    /// it sets a cookie for that browser only: hand it to no one you would not give the
    /// forward itself.
    pub fn web_url(&self) -> Option<&str> {
        self.web_url.as_deref()
    }

    pub fn spec(&self) -> &ForwardSpec {
        &self.spec
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops listening and ends this forward's connections.
    pub async fn close(&self) -> Result<(), ClientError> {
        self.owner.close_forward(self.id).await
    }
}
