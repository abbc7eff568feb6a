//! How a relay told to stop (SIGTERM, Ctrl-C) lets its sessions go, so that a rolling
//! restart behind a load balancer loses no byte of a transfer that finishes in time.
//!
//! The drain's rules, and where each is applied:
//! - `/healthz` answers 503 (`lib.rs`): a load balancer's health check sends new
//!   sessions elsewhere.
//! - A new session is refused after its Hello with `Error{ShuttingDown}`, which a tab
//!   takes as "try again" (`session.rs`).
//! - A session with no open forwarded connection ends at once with `ShuttingDown`, so its
//!   tab reconnects (through the load balancer, to another relay). One with open
//!   connections stops accepting TCP clients (its listeners close) and opens no forward;
//!   it ends when its last connection closes (`session.rs`).
//! - Parked sessions are dropped: their tabs cannot resume them on another relay.
//! - At `drain_timeout`, or at a second signal, whatever is left ends with
//!   `ShuttingDown` ([`Shutdown::stop_now`]); then `run` returns and the process exits 0.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::metrics::Metrics;
use crate::parked::Parking;

/// The relay's two stop signals, shared by the accept loop, the routes and every
/// session: the drain has started; the rest must end now.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    draining: CancellationToken,
    stop: CancellationToken,
}

impl Shutdown {
    /// Starts the drain (again: nothing).
    pub fn drain(&self) {
        self.draining.cancel();
    }

    /// Ends every session now (and starts the drain if it had not).
    pub fn stop_now(&self) {
        self.draining.cancel();
        self.stop.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Resolves when the drain starts.
    pub async fn draining(&self) {
        self.draining.cancelled().await;
    }

    /// Resolves when every session must end.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }
}

/// Drains the relay: starts the drain, drops the parked sessions, and waits until every
/// session has ended, `timeout` passes or [`Shutdown::stop_now`] is called; then ends the
/// rest. Logs the start and the end with counts, and shows the drain in `/metrics`.
pub(crate) async fn drain(
    shutdown: &Shutdown,
    sessions: &TaskTracker,
    parking: &Parking,
    metrics: &Metrics,
    timeout: Duration,
) {
    let started = Instant::now();
    info!(
        sessions = metrics.sessions_active.get(),
        connections = metrics.connections_active.get(),
        parked = parking.len(),
        timeout = %humantime::format_duration(timeout),
        "draining: new sessions refused, sessions with no open connection end now, the others when their connections close"
    );
    shutdown.drain();
    metrics.draining.set(1);
    parking.clear();
    // Closed, the tracker's wait ends when the last session does (sessions refused
    // meanwhile come and go).
    sessions.close();
    let how = tokio::select! {
        () = sessions.wait() => "every session ended",
        () = tokio::time::sleep(timeout) => "the drain timeout passed",
        () = shutdown.stopped() => "a second signal",
    };
    let (left, connections) = (
        metrics.sessions_active.get(),
        metrics.connections_active.get(),
    );
    shutdown.stop_now();
    info!(
        seconds = format_args!("{:.1}", started.elapsed().as_secs_f64()),
        ended_now = left,
        connections_cut = connections,
        "drain over ({how}); the relay stops"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> (Shutdown, TaskTracker, std::sync::Arc<Parking>, Metrics) {
        let metrics = Metrics::default();
        let parking = Parking::new(Duration::from_secs(60), &metrics);
        (Shutdown::default(), TaskTracker::new(), parking, metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_ends_when_the_last_session_does() {
        let (shutdown, sessions, parking, metrics) = parts();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        sessions.spawn(async move {
            let _ = done_rx.await;
        });
        let drain = drain(
            &shutdown,
            &sessions,
            &parking,
            &metrics,
            Duration::from_secs(30),
        );
        tokio::pin!(drain);
        // Started, not over: a session is still open.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), &mut drain)
                .await
                .is_err()
        );
        assert!(shutdown.is_draining());
        assert_eq!(metrics.draining.get(), 1);
        assert!(!shutdown.stop.is_cancelled(), "nothing is cut yet");
        drop(done_tx);
        let started = Instant::now();
        drain.await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not the deadline"
        );
        assert!(shutdown.stop.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_deadline_the_rest_is_ended() {
        let (shutdown, sessions, parking, metrics) = parts();
        let stopped = shutdown.clone();
        // A session that ends only when told to.
        sessions.spawn(async move { stopped.stopped().await });
        let started = Instant::now();
        drain(
            &shutdown,
            &sessions,
            &parking,
            &metrics,
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert!(shutdown.stop.is_cancelled());
        tokio::time::timeout(Duration::from_secs(1), sessions.wait())
            .await
            .expect("the session ended when told");
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_ends_the_drain_at_once() {
        let (shutdown, sessions, parking, metrics) = parts();
        let stopped = shutdown.clone();
        sessions.spawn(async move { stopped.stopped().await });
        let second = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            second.stop_now();
        });
        let started = Instant::now();
        drain(
            &shutdown,
            &sessions,
            &parking,
            &metrics,
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
