//! A session's link to its SSH server through the relay (one WebSocket: its mux and the
//! russh handle on it), how one is established, and the forwards a new link must
//! listen for again. A reconnect replaces the link under the session's and forwards'
//! handles, which reach it only through [`Link`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use russh::client;
use tabtunnel_proto::{Frame, ResumeSecret, VERSION};

use crate::conn;
use crate::end::End;
use crate::error::ClientError;
use crate::keepalive::{self, Keepalive};
use crate::kind::ForwardKind;
use crate::mux::{self, Listened, Opened, Owner};
use crate::rt;
use crate::ssh::{
    Credentials, HostKeyInfo, HostKeyPolicy, HostKeyVerdict, SshHandle, SshHandler, authenticate,
};
use crate::stats::ForwardStats;
use crate::transport::Transport;

/// One live link: the mux (held as its owner, so the transport closes when the link is
/// dropped) and the SSH session on it.
pub(crate) struct Live {
    pub(crate) owner: Arc<Owner>,
    pub(crate) ssh: Arc<SshHandle>,
}

/// A forward to listen for again on a new link: where it listened (the spec with the
/// port the relay gave it), and its counters, which carry on.
struct Kept {
    kind: Arc<ForwardKind>,
    stats: Arc<ForwardStats>,
    /// Its web URL on the current link: a resumed session keeps it, a fresh one (the
    /// relay restarted) gets a new one.
    web_url: Option<String>,
}

/// The session's current link, shared by its handles.
pub(crate) struct Link {
    live: Mutex<Live>,
    /// The session's end as its handles see it. Without reconnect it is the link's own;
    /// with it, it ends only when the session is closed or gives up.
    end: End,
    /// The session's forwards, by id, to listen for again after a reconnect.
    kept: Mutex<BTreeMap<u32, Kept>>,
}

impl Link {
    pub(crate) fn new(live: Live, end: End) -> Arc<Self> {
        Arc::new(Self {
            live: Mutex::new(live),
            end,
            kept: Mutex::default(),
        })
    }

    pub(crate) fn owner(&self) -> Arc<Owner> {
        self.live.lock().expect("link lock").owner.clone()
    }

    pub(crate) fn ssh(&self) -> Arc<SshHandle> {
        self.live.lock().expect("link lock").ssh.clone()
    }

    pub(crate) fn end(&self) -> &End {
        &self.end
    }

    /// Puts a new link in place of the old, which closes as it is dropped.
    pub(crate) fn replace(&self, live: Live) {
        let old = std::mem::replace(&mut *self.live.lock().expect("link lock"), live);
        drop(old);
    }

    /// Asks the relay to listen for `kind`, and keeps the forward for a reconnect.
    pub(crate) async fn listen(
        &self,
        kind: Arc<ForwardKind>,
    ) -> Result<(u32, Listened), ClientError> {
        let (id, listened) = if kind.remote().is_some() {
            self.listen_as(None, kind.clone(), None).await?
        } else {
            self.owner().listen(kind.clone()).await?
        };
        let address = &listened.address;
        // The same port next time, also for a forward that asked for any (port 0).
        let port = address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(kind.port());
        let again = Arc::new(kind.on_port(port));
        self.kept.lock().expect("kept lock").insert(
            id,
            Kept {
                kind: again,
                stats: listened.stats.clone(),
                web_url: listened.web_url.clone(),
            },
        );
        Ok((id, listened))
    }

    /// Listens for `kind` on the current link (for a remote forward, the SSH server
    /// does), as forward `id` again when given, with its counters.
    async fn listen_as(
        &self,
        id: Option<u32>,
        kind: Arc<ForwardKind>,
        stats: Option<Arc<ForwardStats>>,
    ) -> Result<(u32, Listened), ClientError> {
        let owner = self.owner();
        if kind.remote().is_some() {
            let ssh = self.ssh();
            return crate::remote::listen(&owner, &ssh, id, kind, stats).await;
        }
        owner.listen_as(id, kind, stats).await
    }

    /// Forward `id`'s web URL on the current link, while it is open.
    pub(crate) fn web_url(&self, id: u32) -> Option<String> {
        let kept = self.kept.lock().expect("kept lock");
        kept.get(&id).and_then(|kept| kept.web_url.clone())
    }

    /// Stops the forward, now and after any reconnect.
    pub(crate) async fn close_forward(&self, id: u32) -> Result<(), ClientError> {
        let kept = self.kept.lock().expect("kept lock").remove(&id);
        if let Some(kept) = kept
            && kept.kind.remote().is_some()
        {
            crate::remote::cancel(&self.ssh(), &kept.kind).await;
        }
        self.owner().close_forward(id).await
    }

    /// Listens for every kept forward again on the current link, with its id, address
    /// and counters. A forward the relay refuses now (its port was taken meanwhile) is
    /// dropped, and its counters say why. Returns how many came back.
    pub(crate) async fn restore(&self) -> usize {
        let kept: Vec<(u32, Arc<ForwardKind>, Arc<ForwardStats>)> = self
            .kept
            .lock()
            .expect("kept lock")
            .iter()
            .map(|(id, kept)| (*id, kept.kind.clone(), kept.stats.clone()))
            .collect();
        let mut restored = 0;
        for (id, kind, stats) in kept {
            match self.listen_as(Some(id), kind, Some(stats.clone())).await {
                Ok((_, listened)) => {
                    if let Some(kept) = self.kept.lock().expect("kept lock").get_mut(&id) {
                        kept.web_url = listened.web_url;
                    }
                    restored += 1;
                }
                Err(err) => {
                    stats.fail(format!("could not listen again after reconnecting: {err}"));
                    self.kept.lock().expect("kept lock").remove(&id);
                }
            }
        }
        restored
    }
}

/// What every connection of a session presents, besides its credentials.
#[derive(Debug, Clone)]
pub(crate) struct Login {
    pub(crate) target: String,
    pub(crate) token: Option<String>,
    pub(crate) username: String,
    pub(crate) keepalive: Option<Keepalive>,
}

/// A link that is up: logged in, its connections served, its keepalive running.
pub(crate) struct Established {
    pub(crate) live: Live,
    pub(crate) host_key: HostKeyInfo,
    /// Whether the relay gave this link the forwards of the session `resume` named.
    pub(crate) resumed: bool,
    /// The link's own end.
    pub(crate) end: End,
}

/// Establishes a link: Hello (with `resume`, the secret of the session to take back),
/// the SSH handshake with its host-key check, authentication. `resume` is set to the
/// secret of the new session as soon as the relay's Welcome gives it, even if the
/// login then fails: that session is the one the relay parks if this one drops.
pub(crate) async fn establish<T: Transport>(
    transport: T,
    login: &Login,
    credentials: Credentials,
    host_key: HostKeyPolicy,
    resume: &mut Option<ResumeSecret>,
) -> Result<Established, ClientError> {
    let hello = Frame::Hello {
        version: VERSION,
        target: login.target.clone(),
        token: login.token.clone().unwrap_or_default(),
        resume: *resume,
    };
    // From here on, any early return drops the owner and so closes the transport.
    let Opened {
        owner,
        pinned,
        resume: next,
        resumed,
        ssh_stream,
        accepted,
    } = mux::open(transport, hello).await?;
    *resume = next;
    let end = owner.end().clone();

    let HostKeyPolicy {
        expected,
        ask,
        known_hosts,
        ..
    } = host_key;
    let (forwarded_tx, forwarded) = tokio::sync::mpsc::channel(crate::remote::FORWARDED_QUEUE);
    let handler = SshHandler::new(
        HostKeyPolicy {
            pinned,
            expected,
            ask,
            known_hosts,
        },
        login.target.clone(),
        end.clone(),
    )
    .forwarding_to(forwarded_tx);
    let verdict = handler.verdict.clone();
    let mut handle = client::connect_stream(Arc::new(ssh_config()), ssh_stream, handler)
        .await
        .map_err(|err| match verdict.lock().expect("verdict lock").clone() {
            Some(HostKeyVerdict::Refused(refusal)) => refusal,
            _ if end.ended().is_some() => owner.closed_error(),
            _ => ClientError::Ssh(format!("the SSH handshake failed: {err}")),
        })?;
    let host_key = match verdict.lock().expect("verdict lock").clone() {
        Some(HostKeyVerdict::Accepted(info)) => info,
        _ => {
            return Err(ClientError::Ssh(
                "the server's host key was never checked".into(),
            ));
        }
    };
    authenticate(&mut handle, &login.username, credentials, end.clone())
        .await
        .map_err(|err| login_failure(err, end.ended()))?;
    let ssh = Arc::new(handle);
    rt::spawn(conn::serve(owner.mux(), ssh.clone(), accepted));
    rt::spawn(crate::remote::serve(owner.mux(), ssh.clone(), forwarded));
    if let Some(keepalive) = login.keepalive {
        rt::spawn(keepalive::run(
            keepalive,
            owner.ssh_frames(),
            Arc::downgrade(&ssh),
            end.clone(),
        ));
    }
    Ok(Established {
        live: Live { owner, ssh },
        host_key,
        resumed,
        end,
    })
}

/// What a login that failed reports. When the session ended under it, the ending is
/// the cause; an SSH server that closed the connection then most likely ran out of
/// login time or attempts, which the relay says by its code.
pub(crate) fn login_failure(err: ClientError, ended: Option<crate::end::Ended>) -> ClientError {
    use tabtunnel_proto::ErrorCode;
    match (err, ended) {
        (ClientError::Ssh(_) | ClientError::Closed(_), Some(ended)) => {
            if ended.code == Some(ErrorCode::SshClosed) {
                ClientError::Closed(format!(
                    "{} during login; SSH servers allow a login limited time and attempts (LoginGraceTime, MaxAuthTries)",
                    ended.reason
                ))
            } else {
                ClientError::Closed(ended.reason)
            }
        }
        (other, _) => other,
    }
}

/// The cipher the client asks for first: the fastest where it runs (ring's, 32 KiB packets).
/// In wasm there are no AES instructions: ChaCha20-Poly1305 (with SIMD) runs at about
/// 450 MiB/s, AES-256-GCM at about 40. Natively, with AES-NI, AES-256-GCM is about 7x
/// ChaCha20-Poly1305 (8.3 GiB/s against 1.1).
#[cfg(target_arch = "wasm32")]
pub(crate) const FIRST_CIPHER: russh::cipher::Name = russh::cipher::CHACHA20_POLY1305;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) const FIRST_CIPHER: russh::cipher::Name = russh::cipher::AES_256_GCM;

/// russh settings for the tab. No keepalive or inactivity timers: russh drives those
/// with tokio timers, which do not exist in the browser.
pub(crate) fn ssh_config() -> client::Config {
    let mut config = client::Config::default();
    // russh's other ciphers follow, in its order, for servers that lack the first.
    let mut ciphers = vec![FIRST_CIPHER];
    ciphers.extend(
        config
            .preferred
            .cipher
            .iter()
            .filter(|c| **c != FIRST_CIPHER),
    );
    config.preferred.cipher = ciphers.into();
    // Each channel queues at most this many messages (each up to a 32 KiB packet), which
    // bounds what a slow TCP client can make the tab hold.
    config.channel_buffer_size = 32;
    // What sshd may put in one packet to us: two packets' ciphertext then fit one 64 KiB
    // read of the relay, so no tiny Ssh frame follows every second packet (see
    // `tabtunnel_proto::SSH_PACKET_DATA`, the same rule for the tab's own packets).
    config.maximum_packet_size = tabtunnel_proto::SSH_PACKET_DATA as u32;
    config
}

#[cfg(test)]
mod tests {
    use tabtunnel_proto::ErrorCode;

    use super::*;
    use crate::end::Ended;

    fn ended(reason: &str, code: Option<ErrorCode>) -> Option<Ended> {
        Some(Ended {
            reason: reason.into(),
            code,
        })
    }

    #[test]
    fn the_fastest_cipher_comes_first_and_every_default_one_is_still_offered() {
        let ciphers = ssh_config().preferred.cipher;
        assert_eq!(ciphers[0], FIRST_CIPHER);
        let defaults = russh::Preferred::DEFAULT.cipher;
        assert_eq!(ciphers.len(), defaults.len());
        assert!(defaults.iter().all(|c| ciphers.contains(c)));
        assert!(ciphers.contains(&russh::cipher::CHACHA20_POLY1305));
    }

    #[test]
    fn a_login_the_ssh_server_closed_names_its_limits() {
        let err = login_failure(
            ClientError::Ssh("disconnected".into()),
            ended(
                "the SSH server closed the connection",
                Some(ErrorCode::SshClosed),
            ),
        );
        assert_eq!(
            err.to_string(),
            "the session is closed: the SSH server closed the connection during login; SSH servers allow a login limited time and attempts (LoginGraceTime, MaxAuthTries)"
        );
    }

    #[test]
    fn other_endings_during_login_are_reported_as_they_are() {
        // The same words without the code: decided by the code, not the text.
        for code in [None, Some(ErrorCode::Idle)] {
            let err = login_failure(
                ClientError::Closed("x".into()),
                ended("the SSH server closed the connection", code),
            );
            assert_eq!(
                err.to_string(),
                "the session is closed: the SSH server closed the connection"
            );
        }
        // A login that failed by itself keeps its own error.
        let err = login_failure(ClientError::AuthCancelled, ended("gone", None));
        assert_eq!(err.code(), "auth-cancelled");
        let err = login_failure(ClientError::Ssh("handshake".into()), None);
        assert_eq!(err.to_string(), "SSH error: handshake");
    }
}
