//! A session's handle and `connect`: Hello, the SSH handshake with its host-key
//! check, authentication; then forwards on request.

use std::sync::Arc;

use russh::client;
use tabtunnel_proto::{ErrorCode, Frame, VERSION};

use crate::conn::{self, describe_open_failure};
use crate::end::Ended;
use crate::error::ClientError;
use crate::forward::Forward;
use crate::keepalive::{self, Keepalive};
use crate::mux::{self, Opened, Owner};
use crate::rt;
use crate::spec::{ForwardSpec, parse_forward};
use crate::ssh::{
    Credentials, HostKeyInfo, HostKeyPolicy, HostKeyVerdict, SshHandle, SshHandler, authenticate,
};
use crate::transport::Transport;

/// What `connect` needs besides the transport.
#[derive(Debug)]
pub struct ConnectOptions {
    /// The relay's name for the SSH server.
    pub target: String,
    pub username: String,
    pub auth: Credentials,
    pub host_key: HostKeyPolicy,
    /// Detects a dead SSH server or relay; `None` turns it off.
    pub keepalive: Option<Keepalive>,
    /// The relay's access token, when its operator requires one.
    pub token: Option<String>,
}

/// Options of one forward.
#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    /// Open one test channel to the destination before listening, and fail the forward
    /// if the SSH server refuses it or cannot connect (like ssh's ExitOnForwardFailure,
    /// for the destination). The destination sees one connection open and close.
    pub check_destination: bool,
}

/// A live session. Cheap to clone; the session ends when `close` is called or the
/// relay or SSH server goes away.
#[derive(Clone)]
pub struct Session {
    owner: Arc<Owner>,
    ssh: Arc<SshHandle>,
    host_key: HostKeyInfo,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

/// Opens a session: Hello to the relay, SSH handshake with host-key check, then
/// authentication. On success the session is ready for `forward`.
pub async fn connect<T: Transport>(
    transport: T,
    options: ConnectOptions,
) -> Result<Session, ClientError> {
    let hello = Frame::Hello {
        version: VERSION,
        target: options.target.clone(),
        token: options.token.clone().unwrap_or_default(),
        resume: None,
    };
    // From here on, any early return drops the owner and so closes the transport.
    let Opened {
        owner,
        pinned,
        ssh_stream,
        accepted,
    } = mux::open(transport, hello).await?;
    let end = owner.end().clone();

    let HostKeyPolicy {
        expected,
        ask,
        known_hosts,
        ..
    } = options.host_key;
    let handler = SshHandler::new(
        HostKeyPolicy {
            pinned,
            expected,
            ask,
            known_hosts,
        },
        options.target.clone(),
        end.clone(),
    );
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
    authenticate(&mut handle, &options.username, options.auth, end.clone())
        .await
        .map_err(|err| login_failure(err, end.ended()))?;
    let ssh = Arc::new(handle);
    rt::spawn(conn::serve(owner.mux(), ssh.clone(), accepted));
    if let Some(keepalive) = options.keepalive {
        rt::spawn(keepalive::run(
            keepalive,
            owner.ssh_frames(),
            Arc::downgrade(&ssh),
            end,
        ));
    }
    Ok(Session {
        owner,
        ssh,
        host_key,
    })
}

/// What a login that failed reports. When the session ended under it, the ending is
/// the cause; an SSH server that closed the connection then most likely ran out of
/// login time or attempts, which the relay says by its code.
fn login_failure(err: ClientError, ended: Option<Ended>) -> ClientError {
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
const FIRST_CIPHER: russh::cipher::Name = russh::cipher::CHACHA20_POLY1305;
#[cfg(not(target_arch = "wasm32"))]
const FIRST_CIPHER: russh::cipher::Name = russh::cipher::AES_256_GCM;

/// russh settings for the tab. No keepalive or inactivity timers: russh drives those
/// with tokio timers, which do not exist in the browser.
fn ssh_config() -> client::Config {
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

impl Session {
    /// The server's host-key fingerprint (`SHA256:...`), as accepted.
    pub fn host_key(&self) -> &HostKeyInfo {
        &self.host_key
    }

    /// Opens a local forward like `ssh -L spec`: the relay listens, and each TCP client
    /// that connects is carried through a direct-tcpip channel to the destination.
    pub async fn forward(&self, spec: &str) -> Result<Forward, ClientError> {
        self.forward_with(spec, ForwardOptions::default()).await
    }

    /// [`Session::forward`] with options.
    pub async fn forward_with(
        &self,
        spec: &str,
        options: ForwardOptions,
    ) -> Result<Forward, ClientError> {
        let spec = Arc::new(parse_forward(spec)?);
        if options.check_destination {
            self.check_destination(&spec).await?;
        }
        let (id, address, stats) = self.owner.listen(spec.clone()).await?;
        Ok(Forward::new(self.owner.clone(), id, spec, address, stats))
    }

    /// Opens and closes one channel to the spec's destination, so a destination the
    /// SSH server refuses or cannot reach fails the forward now, not its first client.
    async fn check_destination(&self, spec: &ForwardSpec) -> Result<(), ClientError> {
        let channel = self
            .ssh
            .channel_open_direct_tcpip(
                spec.host.as_str(),
                u32::from(spec.host_port),
                "127.0.0.1",
                0,
            )
            .await
            .map_err(|err| ClientError::ChannelRefused {
                destination: format!("{}:{}", spec.host, spec.host_port),
                reason: describe_open_failure(&err),
            })?;
        let _ = channel.close().await;
        Ok(())
    }

    /// Why the session ended, once it has; `None` while it is live.
    pub fn closed_reason(&self) -> Option<String> {
        self.owner.end().ended().map(|ended| ended.reason)
    }

    /// Waits until the session ends and returns why.
    pub async fn closed(&self) -> String {
        self.closed_signal().await
    }

    /// Resolves, with the reason, when the session ends. Unlike [`Session::closed`] it
    /// does not hold the session: an abandoned session still closes when its last
    /// handle goes, and this then resolves.
    pub fn closed_signal(&self) -> impl std::future::Future<Output = String> + 'static {
        let ended = self.owner.end().wait();
        async move { ended.await.reason }
    }

    /// Ends the session: the relay then closes every listener and connection of it.
    pub async fn close(&self) {
        let _ = self
            .ssh
            .disconnect(russh::Disconnect::ByApplication, "closed by the user", "en")
            .await;
        // The writer closes the WebSocket; the transport's end then ends the session.
        self.owner.end().close_transport();
        self.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
