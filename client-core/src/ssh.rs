//! The russh side: host-key verification and authentication.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};

use crate::ClientError;

/// What the tab learns about the server's host key before trusting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyInfo {
    /// `SHA256:...` exactly as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The key's algorithm, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// The relay's operator pinned this key for the target (and it matched).
    pub pinned: bool,
}

/// Asks the user (or a test) whether to trust a host key seen for the first time.
pub type HostKeyCallback = Box<dyn FnOnce(HostKeyInfo) -> BoxFuture<'static, bool> + Send>;

/// The rules for trusting a host key, strongest first: operator pins, then the
/// caller's expected fingerprint, then the callback; with none of them, refuse.
pub struct HostKeyPolicy {
    pub pinned: Vec<String>,
    pub expected: Option<String>,
    pub ask: Option<HostKeyCallback>,
}

impl std::fmt::Debug for HostKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeyPolicy")
            .field("pinned", &self.pinned)
            .field("expected", &self.expected)
            .field("ask", &self.ask.is_some())
            .finish()
    }
}

/// How the host-key check ended; read after russh reports a failed handshake.
#[derive(Debug, Clone)]
pub(crate) enum HostKeyVerdict {
    Accepted(HostKeyInfo),
    Refused(ClientError),
}

/// The russh client handler. Its futures must be `Send` (a russh requirement), so the
/// callback answers through a boxed future that the platform glue builds.
pub(crate) struct SshHandler {
    policy: HostKeyPolicy,
    pub(crate) verdict: Arc<Mutex<Option<HostKeyVerdict>>>,
}

impl SshHandler {
    pub(crate) fn new(policy: HostKeyPolicy) -> Self {
        Self {
            policy,
            verdict: Arc::default(),
        }
    }

    /// Operator pins narrow what is acceptable; they never replace the tab's own check
    /// (a relay that could choose the pins must not be able to vouch for its own key).
    /// russh calls this once, at the first key exchange; re-keys run inside the
    /// encryption that exchange set up.
    async fn judge(&mut self, mut info: HostKeyInfo) -> HostKeyVerdict {
        let fingerprint = info.fingerprint.clone();
        if !self.policy.pinned.is_empty() {
            if !self.policy.pinned.contains(&fingerprint) {
                return HostKeyVerdict::Refused(ClientError::HostKeyMismatch {
                    expected: self.policy.pinned.join(" or "),
                    got: fingerprint,
                    pin: " (pinned by the relay's operator)",
                });
            }
            info.pinned = true;
        }
        if let Some(expected) = &self.policy.expected {
            return if *expected == fingerprint {
                HostKeyVerdict::Accepted(info)
            } else {
                HostKeyVerdict::Refused(ClientError::HostKeyMismatch {
                    expected: expected.clone(),
                    got: fingerprint,
                    pin: "",
                })
            };
        }
        let answer = match self.policy.ask.take() {
            Some(ask) => Some(ask(info.clone()).await),
            None => None,
        };
        match answer {
            Some(true) => HostKeyVerdict::Accepted(info),
            Some(false) => HostKeyVerdict::Refused(ClientError::HostKeyRejected { fingerprint }),
            // With no way to ask, only an operator pin makes a key known.
            None if info.pinned => HostKeyVerdict::Accepted(info),
            None => HostKeyVerdict::Refused(ClientError::HostKeyUnknown { fingerprint }),
        }
    }
}

impl client::Handler for SshHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            let verdict = HostKeyVerdict::Refused(ClientError::Ssh(
                "the server presented a host certificate; tabtunnel checks plain host keys only"
                    .into(),
            ));
            *self.verdict.lock().expect("verdict lock") = Some(verdict);
            return Ok(false);
        };
        let info = HostKeyInfo {
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            algorithm: key.algorithm().as_str().to_owned(),
            pinned: false,
        };
        let verdict = self.judge(info).await;
        let accepted = matches!(verdict, HostKeyVerdict::Accepted(_));
        *self.verdict.lock().expect("verdict lock") = Some(verdict);
        Ok(accepted)
    }
}

/// How the user proves who they are. Lives only in memory; never logged.
#[derive(Clone)]
pub enum Auth {
    Password(String),
    /// An OpenSSH or PEM private key, and its passphrase if it is encrypted.
    PrivateKey {
        pem: String,
        passphrase: Option<String>,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Password(_) => "Auth::Password(<redacted>)",
            Auth::PrivateKey { .. } => "Auth::PrivateKey(<redacted>)",
        })
    }
}

pub(crate) async fn authenticate(
    handle: &mut client::Handle<SshHandler>,
    user: &str,
    auth: &Auth,
) -> Result<(), ClientError> {
    let result = match auth {
        Auth::Password(password) => handle.authenticate_password(user, password.as_str()).await,
        Auth::PrivateKey { pem, passphrase } => {
            let key = crate::keys::decode(pem, passphrase.as_deref())?;
            let hash = if key.algorithm().is_rsa() {
                handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(ssh_error)?
                    .flatten()
            } else {
                None
            };
            handle
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await
        }
    }
    .map_err(ssh_error)?;
    match result {
        client::AuthResult::Success => Ok(()),
        client::AuthResult::Failure {
            remaining_methods, ..
        } => {
            let methods: Vec<String> = remaining_methods
                .iter()
                .map(|m| String::from(<&str>::from(m)))
                .collect();
            let methods = if methods.is_empty() {
                "none".to_owned()
            } else {
                methods.join(", ")
            };
            Err(ClientError::AuthFailed {
                user: user.to_owned(),
                methods,
            })
        }
    }
}

pub(crate) fn ssh_error(err: russh::Error) -> ClientError {
    ClientError::Ssh(err.to_string())
}
