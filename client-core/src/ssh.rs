//! The russh side: host-key verification and authentication.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};

use crate::end::End;
use crate::error::ClientError;

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

/// The SSH connection, once the handshake is done.
pub(crate) type SshHandle = client::Handle<SshHandler>;

/// The russh client handler. Its futures must be `Send` (a russh requirement), so the
/// callback answers through a boxed future that the platform glue builds.
pub(crate) struct SshHandler {
    policy: HostKeyPolicy,
    /// The session's end: a host-key question still open then is refused.
    closed: End,
    pub(crate) verdict: Arc<Mutex<Option<HostKeyVerdict>>>,
}

impl SshHandler {
    pub(crate) fn new(policy: HostKeyPolicy, closed: End) -> Self {
        Self {
            policy,
            closed,
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
            // Refused if the session ends while the user still looks at the question.
            Some(ask) => Some(
                until_closed(ask(info.clone()), self.closed.clone())
                    .await
                    .unwrap_or(false),
            ),
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

/// One way to prove who the user is; see [`Credentials`] for several at once.
#[derive(Clone)]
pub enum Auth {
    Password(String),
    /// An OpenSSH, PEM or PKCS#8 private key, and its passphrase if it is encrypted.
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

/// The questions of one keyboard-interactive round, as the server sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRequest {
    pub name: String,
    pub instructions: String,
    pub prompts: Vec<PromptField>,
}

/// One question; `echo` says whether the answer may be shown while typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptField {
    pub prompt: String,
    pub echo: bool,
}

/// Answers a keyboard-interactive round, one answer per prompt; `None` cancels.
pub type PromptCallback =
    Box<dyn FnMut(PromptRequest) -> BoxFuture<'static, Option<Vec<String>>> + Send>;

/// What the user can prove. Any combination: the client offers what the server asks
/// for, in OpenSSH's order (publickey, keyboard-interactive, password), and goes on
/// while the server reports partial success (`AuthenticationMethods a,b`). Lives only
/// in memory; never logged.
#[derive(Default)]
pub struct Credentials {
    pub password: Option<String>,
    pub private_key: Option<Auth>,
    /// Answers keyboard-interactive questions. Without it, a single hidden prompt is
    /// answered with the password, as a PAM "Password:" prompt expects.
    pub prompt: Option<PromptCallback>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("prompt", &self.prompt.is_some())
            .finish()
    }
}

impl From<Auth> for Credentials {
    fn from(auth: Auth) -> Self {
        match auth {
            Auth::Password(password) => Credentials {
                password: Some(password),
                ..Credentials::default()
            },
            key @ Auth::PrivateKey { .. } => Credentials {
                private_key: Some(key),
                ..Credentials::default()
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    PublicKey,
    KeyboardInteractive,
    Password,
}

impl Method {
    /// The method's name in SSH (and in the server's list of methods).
    fn name(self) -> &'static str {
        match self {
            Method::PublicKey => "publickey",
            Method::KeyboardInteractive => "keyboard-interactive",
            Method::Password => "password",
        }
    }
}

/// How one method attempt ended.
enum Outcome {
    Success,
    Failure {
        remaining: Vec<String>,
        partial: bool,
    },
}

fn method_names(set: &russh::MethodSet) -> Vec<String> {
    set.iter().map(|m| String::from(<&str>::from(m))).collect()
}

pub(crate) async fn authenticate(
    handle: &mut client::Handle<SshHandler>,
    user: &str,
    credentials: Credentials,
    closed: End,
) -> Result<(), ClientError> {
    let Credentials {
        password,
        private_key,
        mut prompt,
    } = credentials;
    let key = match private_key {
        Some(Auth::PrivateKey { pem, passphrase }) => {
            Some(Arc::new(crate::keys::decode(&pem, passphrase.as_deref())?))
        }
        Some(Auth::Password(_)) | None => None,
    };
    let mut have = Vec::new();
    if key.is_some() {
        have.push(Method::PublicKey);
    }
    if prompt.is_some() || password.is_some() {
        have.push(Method::KeyboardInteractive);
    }
    if password.is_some() || prompt.is_some() {
        // Without a password, ask for one when the server wants it, as ssh does.
        have.push(Method::Password);
    }
    if have.is_empty() {
        return Err(ClientError::NoCredentials);
    }
    let mut offered: Option<Vec<String>> = None;
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    let mut note = None;
    loop {
        let next = have.iter().copied().find(|m| {
            !done.contains(m)
                && !failed.contains(m)
                && offered
                    .as_ref()
                    .is_none_or(|o| o.iter().any(|name| name == m.name()))
        });
        let Some(method) = next else {
            return Err(ClientError::AuthFailed {
                user: user.to_owned(),
                methods: offered.map(|o| o.join(", ")).unwrap_or_default(),
                refused: failed
                    .iter()
                    .map(|m: &Method| m.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                accepted: done
                    .iter()
                    .map(|m: &Method| m.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                note: note.unwrap_or_default(),
            });
        };
        let outcome = match method {
            Method::PublicKey => {
                let key = key.clone().expect("publickey is tried only with a key");
                let hash = if key.algorithm().is_rsa() {
                    handle
                        .best_supported_rsa_hash()
                        .await
                        .map_err(ssh_error)?
                        .flatten()
                } else {
                    None
                };
                let result = handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
                    .await
                    .map_err(ssh_error)?;
                outcome_of(result)
            }
            Method::Password => {
                let password = match &password {
                    Some(password) => password.clone(),
                    None => ask_password(&mut prompt, user, closed.clone()).await?,
                };
                outcome_of(
                    handle
                        .authenticate_password(user, password)
                        .await
                        .map_err(ssh_error)?,
                )
            }
            Method::KeyboardInteractive => {
                let closed = closed.clone();
                keyboard_interactive(
                    handle,
                    user,
                    &mut prompt,
                    password.as_deref(),
                    &mut note,
                    closed,
                )
                .await?
            }
        };
        match outcome {
            Outcome::Success => return Ok(()),
            Outcome::Failure { remaining, partial } => {
                if partial {
                    done.push(method);
                } else {
                    failed.push(method);
                }
                offered = Some(remaining);
            }
        }
    }
}

/// Asks the prompt callback for the password, as `ssh` asks "user's password:".
async fn ask_password(
    prompt: &mut Option<PromptCallback>,
    user: &str,
    closed: End,
) -> Result<String, ClientError> {
    let ask = prompt.as_mut().ok_or(ClientError::NoCredentials)?;
    let request = PromptRequest {
        name: "password".into(),
        instructions: String::new(),
        prompts: vec![PromptField {
            prompt: format!("{user}'s password: "),
            echo: false,
        }],
    };
    match until_closed(ask(request), closed).await? {
        Some(mut answers) if answers.len() == 1 => Ok(answers.remove(0)),
        Some(_) => Err(ClientError::Ssh(
            "onPrompt must give one answer per prompt".into(),
        )),
        None => Err(ClientError::AuthCancelled),
    }
}

/// Waits for the user's answer unless the session ends first (the server may close a
/// login that takes too long), so a forgotten prompt does not hang the login forever.
async fn until_closed<T>(answer: BoxFuture<'static, T>, closed: End) -> Result<T, ClientError> {
    tokio::select! {
        answer = answer => Ok(answer),
        ended = closed.wait() => Err(ClientError::Closed(ended.reason)),
    }
}

fn outcome_of(result: client::AuthResult) -> Outcome {
    match result {
        client::AuthResult::Success => Outcome::Success,
        client::AuthResult::Failure {
            remaining_methods,
            partial_success,
        } => Outcome::Failure {
            remaining: method_names(&remaining_methods),
            partial: partial_success,
        },
    }
}

/// Runs keyboard-interactive rounds until the server decides.
async fn keyboard_interactive(
    handle: &mut client::Handle<SshHandler>,
    user: &str,
    prompt: &mut Option<PromptCallback>,
    password: Option<&str>,
    note: &mut Option<String>,
    closed: End,
) -> Result<Outcome, ClientError> {
    use client::KeyboardInteractiveAuthResponse as R;
    let mut password_unused = password;
    let mut response = handle
        .authenticate_keyboard_interactive_start(user, None)
        .await
        .map_err(ssh_error)?;
    // A server may ask any number of rounds; a bound keeps a broken one from looping.
    for _round in 0..16 {
        let (name, instructions, prompts) = match response {
            R::Success => return Ok(Outcome::Success),
            R::Failure {
                remaining_methods,
                partial_success,
            } => {
                return Ok(Outcome::Failure {
                    remaining: method_names(&remaining_methods),
                    partial: partial_success,
                });
            }
            R::InfoRequest {
                name,
                instructions,
                prompts,
            } => (name, instructions, prompts),
        };
        let fields: Vec<PromptField> = prompts
            .into_iter()
            .map(|p| PromptField {
                prompt: p.prompt,
                echo: p.echo,
            })
            .collect();
        let password_fits = matches!(fields.as_slice(), [field] if !field.echo);
        let answers = if fields.is_empty() {
            Vec::new()
        } else if let (Some(password), true) =
            (password_unused.take_if(|_| password_fits), password_fits)
        {
            // PAM's "Password:": the password the user gave, once per attempt, before
            // asking anything (a second hidden prompt is another question, e.g. a code).
            vec![password.to_owned()]
        } else if let Some(ask) = prompt.as_mut() {
            let count = fields.len();
            let request = PromptRequest {
                name,
                instructions,
                prompts: fields,
            };
            match until_closed(ask(request), closed.clone()).await? {
                Some(answers) if answers.len() == count => answers,
                Some(answers) => {
                    return Err(ClientError::Ssh(format!(
                        "onPrompt gave {} answers to {count} prompts; give one per prompt",
                        answers.len()
                    )));
                }
                None => return Err(ClientError::AuthCancelled),
            }
        } else {
            *note = Some(format!(
                "the server asked {} keyboard-interactive question(s) ({}), and no onPrompt was given to answer them",
                fields.len(),
                fields
                    .iter()
                    .map(|f| f.prompt.trim())
                    .collect::<Vec<_>>()
                    .join(" / ")
            ));
            vec![String::new(); fields.len()]
        };
        response = handle
            .authenticate_keyboard_interactive_respond(answers)
            .await
            .map_err(ssh_error)?;
    }
    Err(ClientError::Ssh(
        "the server asked more than 16 rounds of keyboard-interactive questions".into(),
    ))
}

pub(crate) fn ssh_error(err: russh::Error) -> ClientError {
    ClientError::Ssh(err.to_string())
}
