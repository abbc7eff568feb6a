//! Remote forwards (`ssh -R`): the SSH server listens, and the relay connects each
//! connection it forwards to the tab to the forward's destination.
//!
//! A RemoteForward registers the destination, if the operator allows it
//! (`remote_destinations`, empty by default: `-R` is off), as one of the session's
//! forwards (`limits.forwards_per_session` counts it; it holds no port on the relay
//! host). Each Dial of it takes the tab's connection id (`ConnTable::accept`), within
//! the forward's caps (`limits.connections_per_forward` open, of which
//! `limits.pending_accepts_per_forward` still connecting), and starts its task
//! (`dial::connect_then_run`), which answers with the relay's first Credit or an
//! OpenFailed. A refused Dial is answered with an OpenFailed too: the tab closes the SSH
//! channel it holds for it.
//!
//! While the relay drains, a session opens no forward and takes no new client (see
//! `crate::drain`): a RemoteForward is refused with `ShuttingDown` and a Dial with an
//! OpenFailed, so only the connections already open keep the session.

use tabtunnel_proto::{ErrorCode, Frame, OpenFailure};
use tracing::debug;

use super::{CONNECT_TIMEOUT, Session, SessionError};
use crate::connection;
use crate::dial::{self, RemoteForward};
use crate::metrics::GaugeGuard;

/// Most destinations a refusal lists.
const LISTED: usize = 8;

impl Session {
    /// The frames of remote forwards.
    pub(super) async fn on_remote_frame(&mut self, frame: Frame) -> Result<(), SessionError> {
        match frame {
            Frame::RemoteForward {
                forward,
                host,
                port,
            } => self.remote_forward(forward, &host, port).await,
            Frame::Dial {
                conn,
                forward,
                peer,
            } => self.dial(conn, forward, &peer).await,
            other => Err(SessionError::protocol(format!(
                "the tab sent a {} frame where none was expected",
                other.name()
            ))),
        }
    }

    /// Whether the session has any forward of either kind with id `forward`.
    pub(super) fn has_forward(&self, forward: u32) -> bool {
        self.forwards.contains_key(&forward) || self.remote.contains_key(&forward)
    }

    async fn remote_forward(
        &mut self,
        forward: u32,
        host: &str,
        port: u16,
    ) -> Result<(), SessionError> {
        if self.draining {
            let message = "the relay is shutting down and opens no new forwards".to_owned();
            return self
                .refuse_listen(forward, ErrorCode::ShuttingDown, message)
                .await;
        }
        if self.has_forward(forward) {
            let message = format!("forward id {forward} is already listening");
            return self
                .refuse_listen(forward, ErrorCode::DuplicateForward, message)
                .await;
        }
        let most = self.config.limits.forwards_per_session;
        if self.forwards.len() + self.unclaimed.len() + self.remote.len() >= most {
            let message = format!(
                "a session may have at most {most} forwards on this relay; remove one before adding another"
            );
            return self.refuse_listen(forward, ErrorCode::Limit, message).await;
        }
        let allowed = &self.config.remote_destinations;
        let Some(destination) = allowed.iter().find(|d| d.matches(host, port)).cloned() else {
            let asked = crate::log_limit::clip(host);
            let asked = if asked.contains(':') {
                format!("[{asked}]:{port}")
            } else {
                format!("{asked}:{port}")
            };
            let message = if allowed.is_empty() {
                format!(
                    "this relay does not allow remote forwards (ssh -R), so it will not connect to {asked}: its operator has named no destinations for them (remote_destinations)"
                )
            } else {
                let mut listed: Vec<String> = allowed
                    .iter()
                    .take(LISTED)
                    .map(ToString::to_string)
                    .collect();
                if allowed.len() > LISTED {
                    listed.push(format!("and {} more", allowed.len() - LISTED));
                }
                format!(
                    "this relay does not connect remote forwards (ssh -R) to {asked}; its operator allows only {} (remote_destinations)",
                    listed.join(", ")
                )
            };
            return self
                .refuse_listen(forward, ErrorCode::DestinationNotAllowed, message)
                .await;
        };
        let address = destination.to_string();
        debug!(forward, %address, "remote forward registered");
        let active = GaugeGuard::new(&self.metrics.forwards_active);
        self.remote
            .insert(forward, RemoteForward::new(destination, active));
        self.last_activity = tokio::time::Instant::now();
        // As for a Listen: the page asks only once the SSH login succeeded.
        self.login = None;
        self.send(Frame::Listening { forward, address }).await
    }

    /// Stops remote forward `forward` and its connections; false if there is none.
    pub(super) fn close_remote(&mut self, forward: u32) -> bool {
        if self.remote.remove(&forward).is_none() {
            return false;
        }
        self.last_activity = tokio::time::Instant::now();
        for (_, handle) in self.conns.forget_forward(forward) {
            handle.task.abort();
        }
        debug!(forward, "remote forward closed by the tab");
        true
    }

    async fn dial(&mut self, conn: u32, forward: u32, peer: &str) -> Result<(), SessionError> {
        // The id is the tab's to choose, once: a reused one is a protocol error.
        let opening = self.conns.accept(conn, forward)?;
        let Some(entry) = self.remote.get(&forward) else {
            // Closed meanwhile, or never opened: the id counts as forgotten.
            drop(opening);
            let message = format!("remote forward {forward} is closed");
            return self.refuse_dial(conn, OpenFailure::General, message).await;
        };
        if self.draining {
            drop(opening);
            let message = "the relay is shutting down".to_owned();
            return self.refuse_dial(conn, OpenFailure::General, message).await;
        }
        let limits = &self.config.limits;
        let (open, pending) = (self.conns.count(forward), entry.pending());
        let refusal = if open >= limits.connections_per_forward {
            Some((
                ErrorCode::Limit.as_str(),
                format!(
                    "the relay refused a connection: this forward has its maximum of {} open connections",
                    limits.connections_per_forward
                ),
            ))
        } else if pending >= limits.pending_accepts_per_forward {
            Some((
                crate::metrics::PENDING_ACCEPTS,
                format!(
                    "the relay refused a connection: {pending} connections of this forward are still connecting to {}; check that the relay host can reach it",
                    entry.destination
                ),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = refusal {
            drop(opening);
            self.metrics.refused(reason);
            return self.refuse_dial(conn, OpenFailure::General, message).await;
        }
        let client = entry.dial(CONNECT_TIMEOUT);
        self.last_activity = tokio::time::Instant::now();
        self.metrics.connections_total.inc();
        debug!(conn, forward, peer = %crate::log_limit::clip(peer), "dialling for the tab");
        let handle = dial::spawn(
            &mut self.connections,
            conn,
            forward,
            client,
            opening.flow().clone(),
            connection::Outlets {
                out: self.out.clone(),
                grants: self.grants.clone(),
                metrics: self.metrics.clone(),
            },
        );
        self.conns.insert(opening, handle);
        Ok(())
    }

    async fn refuse_dial(
        &mut self,
        conn: u32,
        failure: OpenFailure,
        message: String,
    ) -> Result<(), SessionError> {
        debug!(conn, ?failure, %message, "dial refused");
        self.send(Frame::OpenFailed {
            conn,
            failure,
            message,
        })
        .await
    }
}
