//! The session's one end signal. Anything may end the session (the relay, the
//! transport, the keepalive, a protocol error); everything that must stop waits here.

use tabtunnel_proto::ErrorCode;
use tokio::sync::watch;

/// How the session ended: the first reason given, and the relay's code when the relay
/// said why (an Error frame). Programs decide from the code, people read the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    pub(crate) reason: String,
    pub(crate) code: Option<ErrorCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Live,
    /// A user closed or abandoned the session: the writer closes the transport, and
    /// the reason comes from how the transport then ends.
    Closing,
    Ended(Ended),
}

/// Cloneable; every clone sees the same state. It only moves forward
/// (live, closing, ended) and keeps the first reason.
#[derive(Debug, Clone)]
pub(crate) struct End {
    state: std::sync::Arc<watch::Sender<State>>,
}

impl Default for End {
    fn default() -> Self {
        Self {
            state: std::sync::Arc::new(watch::Sender::new(State::Live)),
        }
    }
}

impl End {
    /// Ends the session with `reason` unless it already ended; true if this was the
    /// first reason. Wakes every waiter and tells the writer to close the transport.
    pub(crate) fn end(&self, reason: impl Into<String>, code: Option<ErrorCode>) -> bool {
        let reason = reason.into();
        self.state.send_if_modified(|state| {
            if matches!(state, State::Ended(_)) {
                return false;
            }
            *state = State::Ended(Ended { reason, code });
            true
        })
    }

    /// Asks the writer to close the transport; the session ends when the transport
    /// does (or something else ends it first).
    pub(crate) fn close_transport(&self) {
        self.state.send_if_modified(|state| {
            if *state != State::Live {
                return false;
            }
            *state = State::Closing;
            true
        });
    }

    /// Whether closing was asked (and the session has not ended yet).
    pub(crate) fn closing(&self) -> bool {
        *self.state.borrow() == State::Closing
    }

    /// How the session ended; `None` while it is live (or still closing).
    pub(crate) fn ended(&self) -> Option<Ended> {
        match &*self.state.borrow() {
            State::Ended(ended) => Some(ended.clone()),
            State::Live | State::Closing => None,
        }
    }

    /// Resolves when the session has ended. Holds only the signal, not the session.
    pub(crate) fn wait(&self) -> impl std::future::Future<Output = Ended> + Send + 'static {
        let mut rx = self.state.subscribe();
        async move {
            match rx.wait_for(|s| matches!(s, State::Ended(_))).await {
                Ok(state) => match &*state {
                    State::Ended(ended) => ended.clone(),
                    State::Live | State::Closing => unreachable!("waited for Ended"),
                },
                // Every clone dropped without an ending: nothing is left to end.
                Err(_) => Ended {
                    reason: "the session ended".into(),
                    code: None,
                },
            }
        }
    }

    /// Resolves when the transport should close: closing was asked, or the session
    /// ended.
    pub(crate) fn wait_closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.state.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s != State::Live).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_wakes_every_waiter() {
        let end = End::default();
        let waiters = [end.wait(), end.clone().wait()];
        assert_eq!(end.ended(), None);
        assert!(end.end("first", Some(ErrorCode::Idle)));
        assert!(!end.clone().end("second", None));
        let first = Ended {
            reason: "first".into(),
            code: Some(ErrorCode::Idle),
        };
        for waiter in waiters {
            assert_eq!(waiter.await, first);
        }
        assert_eq!(end.ended(), Some(first.clone()));
        // A waiter that comes late sees the same ending at once.
        assert_eq!(end.wait().await, first);
    }

    #[tokio::test]
    async fn closing_wakes_the_writer_but_does_not_end() {
        let end = End::default();
        let closing = end.wait_closing();
        end.close_transport();
        closing.await;
        assert_eq!(end.ended(), None);
        assert!(end.end("the relay closed the connection", None));
        // Closing again after the end changes nothing.
        end.close_transport();
        assert_eq!(
            end.ended().map(|e| e.reason),
            Some("the relay closed the connection".into())
        );
    }

    #[tokio::test]
    async fn an_ending_also_closes_the_transport() {
        let end = End::default();
        let closing = end.wait_closing();
        end.end("gone", None);
        closing.await;
    }
}
