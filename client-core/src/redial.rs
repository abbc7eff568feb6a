//! The supervisor of a session that reconnects: it waits for the link to drop, and
//! after a transient end tries again on the [`Reconnect`] schedule: a new transport, the
//! Hello with the resume secret, the very host key the first connection accepted, the
//! credentials it still holds in memory (asking through the prompt callback if the
//! server wants a prompt, or no longer takes them), then every forward on the port it
//! had. Connections that were open end with the old link; forwards' handles and counters
//! carry on.
//!
//! It holds the session's [`Link`] only weakly: when the user's handles are gone, the
//! link closes, and the supervisor stops with it (and drops the credentials).

use std::sync::{Arc, Mutex, Weak};

use futures::future::BoxFuture;
use tabtunnel_proto::ResumeSecret;

use crate::end::End;
use crate::error::ClientError;
use crate::link::{Established, Link, Login, establish};
use crate::reconnect::{
    ConnectionState, Reconnect, StateCallback, transient_end, transient_failure,
};
use crate::rt;
use crate::ssh::{Auth, Credentials, HostKeyPolicy, PromptCallback};
use crate::transport::{Transport, TransportError};

/// Opens a new transport to the relay, each time it is called.
pub type Dial<T> = Arc<dyn Fn() -> BoxFuture<'static, Result<T, TransportError>> + Send + Sync>;

/// What a reconnect needs, kept in the supervisor's memory only.
pub(crate) struct Redial<T> {
    pub(crate) dial: Dial<T>,
    pub(crate) login: Login,
    pub(crate) password: Option<String>,
    pub(crate) private_key: Option<Auth>,
    pub(crate) prompt: Option<SharedPrompt>,
    /// The host key the first connection accepted: the only one accepted again.
    pub(crate) fingerprint: String,
    /// The secret of the relay's session to take back.
    pub(crate) resume: Option<ResumeSecret>,
    pub(crate) policy: Reconnect,
    pub(crate) on_state: Option<StateCallback>,
}

/// The user's prompt callback, shared by every login of the session.
pub(crate) type SharedPrompt = Arc<Mutex<PromptCallback>>;

impl<T: Transport> Redial<T> {
    /// One login of this session on `transport`, with the credentials it holds and its
    /// latest resume secret (updated from the Welcome), the host key checked by `host_key`.
    pub(crate) async fn establish(
        &mut self,
        transport: T,
        host_key: HostKeyPolicy,
    ) -> Result<Established, ClientError> {
        let credentials = self.credentials();
        establish(
            transport,
            &self.login,
            credentials,
            host_key,
            &mut self.resume,
        )
        .await
    }
}

impl<T> Redial<T> {
    pub(crate) fn credentials(&self) -> Credentials {
        Credentials {
            password: self.password.clone(),
            private_key: self.private_key.clone(),
            prompt: self.prompt.clone().map(|shared| {
                Box::new(move |request| (shared.lock().expect("prompt lock"))(request))
                    as PromptCallback
            }),
        }
    }

    /// Whether a login refused with the credentials held may ask instead: there is a
    /// prompt callback and something held to drop.
    fn may_ask_instead(&self) -> bool {
        self.prompt.is_some() && (self.password.is_some() || self.private_key.is_some())
    }

    /// Drops the password and key the server refused: the next logins ask through the
    /// prompt callback, as `ssh` asks for a password once its keys are refused. What the
    /// user answers is not kept either.
    fn forget_refused_credentials(&mut self) {
        self.password = None;
        self.private_key = None;
    }

    fn tell(&self, state: ConnectionState) {
        if let Some(on_state) = &self.on_state {
            on_state(state);
        }
    }
}

/// Watches the session's link until the session ends for good.
pub(crate) async fn supervise<T: Transport>(
    link: Weak<Link>,
    mut link_end: End,
    mut redial: Redial<T>,
) {
    loop {
        let ended = link_end.wait().await;
        let Some(session_end) = link.upgrade().map(|l| l.end().clone()) else {
            return; // abandoned: nobody is left to tell
        };
        if session_end.closing() || !transient_end(ended.code) {
            if !session_end.closing() {
                redial.tell(ConnectionState::GaveUp {
                    reason: ended.reason.clone(),
                });
            }
            session_end.end(ended.reason, ended.code);
            return;
        }
        tracing::info!(reason = %ended.reason, "the session dropped; reconnecting");
        match reconnect(&link, &session_end, &mut redial, ended.reason).await {
            Some(end) => link_end = end,
            None => return,
        }
    }
}

/// Tries again until a new link is up (its end returned), or the session ends.
async fn reconnect<T: Transport>(
    link: &Weak<Link>,
    session_end: &End,
    redial: &mut Redial<T>,
    mut last: String,
) -> Option<End> {
    let mut schedule = redial.policy.schedule();
    loop {
        let Some((attempt, wait)) = schedule.next(random_unit()) else {
            let reason = format!(
                "gave up reconnecting after {} attempts: {last}",
                schedule.attempts()
            );
            redial.tell(ConnectionState::GaveUp {
                reason: reason.clone(),
            });
            session_end.end(reason, None);
            return None;
        };
        redial.tell(ConnectionState::Reconnecting {
            attempt,
            next_try_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            reason: last.clone(),
        });
        tokio::select! {
            () = rt::sleep(wait) => {}
            () = session_end.wait_closing() => {
                session_end.end("the session was closed while reconnecting", None);
                return None;
            }
        }
        let link = link.upgrade()?;
        let result = tokio::select! {
            result = try_once(&link, redial) => result,
            () = session_end.wait_closing() => {
                // A link the attempt may have put in place closes too.
                link.owner().end().close_transport();
                session_end.end("the session was closed while reconnecting", None);
                return None;
            }
        };
        match result {
            Ok(end) => return Some(end),
            Err(err) if transient_failure(&err) => {
                tracing::debug!(attempt, "reconnecting failed: {err}");
                last = err.to_string();
            }
            // The credentials held no longer work (a changed password, a revoked key):
            // ask on the next try rather than give up.
            Err(err @ ClientError::AuthFailed { .. }) if redial.may_ask_instead() => {
                tracing::info!(attempt, "the credentials held were refused; asking instead");
                redial.forget_refused_credentials();
                last = err.to_string();
            }
            Err(err) => {
                let code = match &err {
                    ClientError::Relay { code, .. } => Some(*code),
                    _ => None,
                };
                let reason = err.to_string();
                redial.tell(ConnectionState::GaveUp {
                    reason: reason.clone(),
                });
                session_end.end(reason, code);
                return None;
            }
        }
    }
}

/// One attempt: a new link in place of the old, and the forwards on it again.
async fn try_once<T: Transport>(link: &Link, redial: &mut Redial<T>) -> Result<End, ClientError> {
    let transport = (redial.dial)()
        .await
        .map_err(|err| ClientError::Transport(err.0))?;
    let host_key = HostKeyPolicy {
        pinned: Vec::new(),
        expected: Some(redial.fingerprint.clone()),
        ask: None,
        known_hosts: None,
    };
    let established = redial.establish(transport, host_key).await?;
    let end = established.end.clone();
    link.replace(established.live);
    let restored = link.restore().await;
    if let Some(ended) = end.ended() {
        return Err(ClientError::Closed(ended.reason));
    }
    tracing::info!(
        restored,
        resumed = established.resumed,
        "reconnected; forwards listening again"
    );
    redial.tell(ConnectionState::Restored {
        resumed: established.resumed,
    });
    Ok(end)
}

/// A uniform number in [0, 1) for the backoff's jitter, from the system's randomness
/// (the browser's crypto in the tab).
fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}
