//! When and how often a session that dropped tries again, and what it tells the page:
//! the rules alone, with no clock or IO (the session's supervisor applies them).
//!
//! A session reconnects only after a transient end (the transport lost, the relay
//! shutting down or restarting, the SSH server gone, a keepalive timeout), never after
//! the user's own close or a failure that trying again cannot mend (authentication, the
//! host key, the protocol version, a refused token or target).

use std::sync::Arc;
use std::time::Duration;

use tabtunnel_proto::ErrorCode;

use crate::error::ClientError;

/// How a dropped session tries again: exponential backoff with full jitter (each wait is
/// drawn uniformly between zero and the current ceiling, which doubles from
/// `first_delay` up to `max_delay`), until the waits add up to `give_up_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub give_up_after: Duration,
}

impl Default for Reconnect {
    /// 0.5 s doubling to 30 s, for up to 10 minutes.
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            give_up_after: Duration::from_secs(600),
        }
    }
}

impl Reconnect {
    /// The ceiling of attempt `attempt`'s wait (1 for the first).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.first_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }

    /// The waits of one reconnection, attempt after attempt.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            policy: *self,
            attempt: 0,
            waited: Duration::ZERO,
        }
    }
}

/// The attempts of one reconnection: each [`Schedule::next`] is the next attempt's
/// number and how long to wait before it, until the policy gives up.
#[derive(Debug, Clone)]
pub struct Schedule {
    policy: Reconnect,
    attempt: u32,
    waited: Duration,
}

impl Schedule {
    /// The next attempt, given a uniform random number in `[0, 1)` for its jitter;
    /// `None` once the waits would pass `give_up_after`. Time spent in the attempts
    /// themselves is not counted: the browser's timers are all the tab can trust.
    pub fn next(&mut self, unit: f64) -> Option<(u32, Duration)> {
        if self.waited >= self.policy.give_up_after {
            return None;
        }
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.policy.ceiling(self.attempt);
        let wait = ceiling
            .mul_f64(unit.clamp(0.0, 1.0))
            .min(self.policy.give_up_after - self.waited);
        // Counted at its ceiling: full jitter's waits average half of it, and the limit
        // is about the time the user waits in all, not the luck of the draws.
        self.waited = self.waited.saturating_add(ceiling);
        Some((self.attempt, wait))
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// What the page is told about a session's link to its SSH server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected (the first time).
    Live,
    /// The link dropped; attempt `attempt` starts in `next_try_ms` milliseconds.
    Reconnecting {
        attempt: u32,
        next_try_ms: u64,
        /// Why the link dropped, or why the last attempt failed.
        reason: String,
    },
    /// Connected again, with every forward listening where it was. `resumed`: the relay
    /// had kept the forwards' listeners (see the relay's `resume_grace`).
    Restored { resumed: bool },
    /// No more attempts: the session is closed.
    GaveUp { reason: String },
}

/// Called on every change of [`ConnectionState`].
pub type StateCallback = Arc<dyn Fn(ConnectionState) + Send + Sync>;

/// Whether a session that ended with the relay's `code` (`None`: the transport ended,
/// or the tab's keepalive gave up) may try again.
pub fn transient_end(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        None | Some(ErrorCode::SshClosed | ErrorCode::ShuttingDown | ErrorCode::TargetUnreachable)
    )
}

/// Whether a failed attempt is worth another: the relay or its SSH server is not back
/// yet, or busy. Authentication, the host key, the protocol version, a token or target
/// the relay refuses, and protocol errors end the session.
pub fn transient_failure(err: &ClientError) -> bool {
    match err {
        ClientError::Transport(_) | ClientError::Closed(_) | ClientError::Ssh(_) => true,
        ClientError::Relay { code, .. } => {
            transient_end(Some(*code)) || matches!(code, ErrorCode::Limit | ErrorCode::Internal)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_the_first_delay_to_the_maximum() {
        let policy = Reconnect::default();
        let ceilings: Vec<_> = (1..=9).map(|n| policy.ceiling(n).as_millis()).collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(policy.ceiling(u32::MAX), policy.max_delay, "no overflow");
    }

    #[test]
    fn waits_are_full_jitter_within_the_ceiling() {
        let policy = Reconnect::default();
        let mut schedule = policy.schedule();
        assert_eq!(schedule.next(0.0), Some((1, Duration::ZERO)));
        assert_eq!(schedule.next(0.5), Some((2, Duration::from_millis(500))));
        assert_eq!(schedule.next(0.999), Some((3, Duration::from_millis(1998))));
        // Out-of-range draws are clamped, never beyond the ceiling.
        assert_eq!(schedule.next(7.0), Some((4, Duration::from_secs(4))));
        assert_eq!(schedule.attempts(), 4);
    }

    #[test]
    fn the_schedule_gives_up_when_the_waits_reach_the_limit() {
        let policy = Reconnect {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
            give_up_after: Duration::from_secs(10),
        };
        let mut schedule = policy.schedule();
        let mut attempts = Vec::new();
        while let Some((n, wait)) = schedule.next(1.0) {
            attempts.push((n, wait.as_secs()));
            assert!(attempts.len() < 100, "never gave up");
        }
        // 1 + 2 + 4 = 7 s, then the last wait is cut to the 3 s left.
        assert_eq!(attempts, [(1, 1), (2, 2), (3, 4), (4, 3)]);
        assert_eq!(schedule.next(0.5), None, "given up stays given up");
    }

    #[test]
    fn only_transient_ends_and_failures_are_tried_again() {
        for code in [
            None,
            Some(ErrorCode::SshClosed),
            Some(ErrorCode::ShuttingDown),
            Some(ErrorCode::TargetUnreachable),
        ] {
            assert!(transient_end(code), "{code:?}");
        }
        for code in [
            ErrorCode::Protocol,
            ErrorCode::Version,
            ErrorCode::Unauthorized,
            ErrorCode::UnknownTarget,
            ErrorCode::Idle,
            ErrorCode::Limit,
        ] {
            assert!(!transient_end(Some(code)), "{code:?}");
        }
        assert!(transient_failure(&ClientError::Transport("refused".into())));
        assert!(transient_failure(&ClientError::Relay {
            code: ErrorCode::Limit,
            message: "busy".into()
        }));
        assert!(!transient_failure(&ClientError::HostKeyMismatch {
            expected: "a".into(),
            got: "b".into(),
            pin: ""
        }));
        assert!(!transient_failure(&ClientError::AuthCancelled));
        assert!(!transient_failure(&ClientError::Relay {
            code: ErrorCode::Version,
            message: "reload".into()
        }));
        assert!(!transient_failure(&ClientError::Protocol("bad".into())));
    }
}
