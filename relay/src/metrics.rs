//! What the relay counts, for `/metrics` (Prometheus text format).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Refusal reason: a TCP client closed at accept because too many connections of its
/// forward wait for the tab to open their SSH channel (`limits.pending_accepts_per_forward`).
pub const PENDING_ACCEPTS: &str = "pending-accepts";

/// Why the relay refused something, as the `reason` label of `refusals_total`: an
/// [`ErrorCode`](tabtunnel_proto::ErrorCode) name (`limit`, `unauthorized`,
/// `source-not-allowed` for a TCP client outside `forward_allowed_sources`, `idle` for
/// a session ended by `idle_timeout`, ...), `origin`, or [`PENDING_ACCEPTS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Refusal {
    pub reason: String,
}

/// The relay's counters. Cheap to share: every metric is an atomic.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sessions_active: Gauge,
    pub sessions_total: Counter,
    pub forwards_active: Gauge,
    pub connections_active: Gauge,
    pub connections_total: Counter,
    /// Bytes from TCP clients towards their destinations.
    pub bytes_up: Counter,
    /// Bytes from destinations to TCP clients.
    pub bytes_down: Counter,
    pub refusals: Family<Refusal, Counter>,
    /// Which refusals are also logged: every one is counted, a flood is not logged.
    pub refusal_log: crate::log_limit::RefusalLog,
    /// `bind()` calls made to open forward listeners (the book of ports counts them).
    pub forward_binds: Counter,
    /// Lost sessions whose forwards were parked for their tab to resume (`parked`).
    pub sessions_parked: Counter,
    /// Parked sessions a tab took back.
    pub sessions_resumed: Counter,
    /// Parked sessions freed unclaimed (their grace ran out, or a newer one of the same
    /// source took their place), and resumed sessions' forwards left unclaimed.
    pub parked_expired: Counter,
    /// Sessions parked now.
    pub sessions_parked_now: Gauge,
    /// 1 while the relay drains (it was told to stop; see `drain`), else 0.
    pub draining: Gauge,
}

impl Metrics {
    /// Counts a refusal under `reason` (an error code's name, e.g. `limit`).
    pub fn refused(&self, reason: &str) {
        self.refusals
            .get_or_create(&Refusal {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("tabtunnel");
        registry.register(
            "sessions_active",
            "Sessions open now",
            self.sessions_active.clone(),
        );
        registry.register("sessions", "Sessions opened", self.sessions_total.clone());
        registry.register(
            "forwards_active",
            "Forward listeners open now",
            self.forwards_active.clone(),
        );
        registry.register(
            "connections_active",
            "Forwarded TCP connections open now",
            self.connections_active.clone(),
        );
        registry.register(
            "connections",
            "Forwarded TCP connections accepted",
            self.connections_total.clone(),
        );
        registry.register(
            "bytes_up",
            "Bytes from TCP clients to destinations",
            self.bytes_up.clone(),
        );
        registry.register(
            "bytes_down",
            "Bytes from destinations to TCP clients",
            self.bytes_down.clone(),
        );
        registry.register(
            "refusals",
            "Requests refused, by reason",
            self.refusals.clone(),
        );
        registry.register(
            "forward_binds",
            "bind() calls made to open forward listeners",
            self.forward_binds.clone(),
        );
        registry.register(
            "sessions_parked",
            "Lost sessions whose forwards were held for their tab to resume",
            self.sessions_parked.clone(),
        );
        registry.register(
            "sessions_resumed",
            "Parked sessions a tab resumed",
            self.sessions_resumed.clone(),
        );
        registry.register(
            "parked_expired",
            "Parked forwards freed because nobody resumed or claimed them in time",
            self.parked_expired.clone(),
        );
        registry.register(
            "sessions_parked_now",
            "Lost sessions whose forwards are held now",
            self.sessions_parked_now.clone(),
        );
        registry.register(
            "draining",
            "1 while the relay drains before it stops (new sessions refused), else 0",
            self.draining.clone(),
        );
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// Holds one unit of a gauge: increments on creation, decrements on drop, so a task that
/// is aborted still gives its unit back.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
