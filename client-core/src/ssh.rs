//! The russh side: host-key verification and authentication.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};

use crate::end::End;
use crate::error::ClientError;
use crate::known_hosts::{HostKeyFacts, KnownHostsCheck, Remembered, Trust, decide};

/// What the tab learns about the server's host key before trusting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyInfo {
    /// `SHA256:...` exactly as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The key's algorithm, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// The relay's operator pinned this key for the target (and it matched).
    pub pinned: bool,
    /// Other key types the known-hosts store has for the target: a question about this
    /// key comes with a warning (see [`Trust::AskNewKeyType`]).
    pub known_types: Vec<String>,
}

/// Asks the user (or a test) whether to trust a host key seen for the first time.
pub type HostKeyCallback = Box<dyn FnOnce(HostKeyInfo) -> BoxFuture<'static, bool> + Send>;

/// What decides whether a host key is trusted; the rules are [`decide`]'s.
pub struct HostKeyPolicy {
    /// The operator's pins, from the relay's Welcome (`connect` fills them in).
    pub pinned: Vec<String>,
    /// The one fingerprint to accept, if the caller knows it.
    pub expected: Option<String>,
    /// Asks the user; with a store, only about keys it does not know yet.
    pub ask: Option<HostKeyCallback>,
    /// Where accepted keys are remembered, and looked up on the next connection.
    pub known_hosts: Option<KnownHostsCheck>,
}

impl std::fmt::Debug for HostKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeyPolicy")
            .field("pinned", &self.pinned)
            .field("expected", &self.expected)
            .field("ask", &self.ask.is_some())
            .field("known_hosts", &self.known_hosts)
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
    /// The relay's name for the server: known-hosts entries are per target.
    target: String,
    /// The session's end: a host-key question still open then is refused.
    closed: End,
    pub(crate) verdict: Arc<Mutex<Option<HostKeyVerdict>>>,
    /// Where channels the server forwards for remote forwards (`ssh -R`) go; `None`:
    /// they are refused.
    forwarded: Option<tokio::sync::mpsc::Sender<ForwardedChannel>>,
}

/// A connection the SSH server took on a port it listens on for us (`tcpip-forward`):
/// its channel, not yet accepted, and where the server says it arrived. Accepting or
/// rejecting it is the remote forward's business (see `remote`).
pub(crate) struct ForwardedChannel {
    pub(crate) channel: russh::Channel<client::Msg>,
    pub(crate) reply: client::ChannelOpenHandle,
    /// The address and port the server listened on, as it reports them.
    pub(crate) address: String,
    pub(crate) port: u32,
    /// Who connected to it, as `host:port`.
    pub(crate) originator: String,
}

impl SshHandler {
    pub(crate) fn new(policy: HostKeyPolicy, target: String, closed: End) -> Self {
        Self {
            policy,
            target,
            closed,
            verdict: Arc::default(),
            forwarded: None,
        }
    }

    /// Hands the channels the server forwards to `forwarded`. A channel that finds the
    /// queue full is refused: the queue bounds what a server's flood of connections
    /// can make the tab hold.
    pub(crate) fn forwarding_to(
        mut self,
        forwarded: tokio::sync::mpsc::Sender<ForwardedChannel>,
    ) -> Self {
        self.forwarded = Some(forwarded);
        self
    }

    /// Applies [`decide`] to the offered key, asks when it says so, and remembers what
    /// was accepted. russh calls this once, at the first key exchange; re-keys run
    /// inside the encryption that exchange set up.
    async fn judge(&mut self, mut info: HostKeyInfo) -> HostKeyVerdict {
        let known = self.policy.known_hosts.as_ref();
        let remembered =
            known.map(|k| Remembered::read(k.store.as_ref(), &k.id(&self.target, &info.algorithm)));
        let trust = decide(&HostKeyFacts {
            fingerprint: &info.fingerprint,
            pinned: &self.policy.pinned,
            expected: self.policy.expected.as_deref(),
            remembered: remembered.as_ref(),
            can_ask: self.policy.ask.is_some(),
        });
        info.pinned = !self.policy.pinned.is_empty();
        let got = info.fingerprint.clone();
        let question = match trust {
            Trust::Known => return HostKeyVerdict::Accepted(info),
            Trust::Pinned => {
                self.remember(&info);
                return HostKeyVerdict::Accepted(info);
            }
            Trust::AskFirstUse => info.clone(),
            Trust::AskNewKeyType { known_types } => HostKeyInfo {
                known_types,
                ..info.clone()
            },
            Trust::Changed { remembered } => {
                return HostKeyVerdict::Refused(ClientError::HostKeyChanged {
                    algorithm: info.algorithm,
                    remembered,
                    offered: got,
                });
            }
            Trust::NotExpected { expected } => {
                return HostKeyVerdict::Refused(ClientError::HostKeyMismatch {
                    expected,
                    got,
                    pin: "",
                });
            }
            Trust::NotPinned { pinned } => {
                return HostKeyVerdict::Refused(ClientError::HostKeyMismatch {
                    expected: pinned.join(" or "),
                    got,
                    pin: " (pinned by the relay's operator)",
                });
            }
            Trust::Unknown => {
                return HostKeyVerdict::Refused(ClientError::HostKeyUnknown { fingerprint: got });
            }
        };
        let Some(ask) = self.policy.ask.take() else {
            return HostKeyVerdict::Refused(ClientError::HostKeyUnknown { fingerprint: got });
        };
        // Refused if the session ends while the user still looks at the question.
        let yes = until_closed(ask(question.clone()), self.closed.clone())
            .await
            .unwrap_or(false);
        if !yes {
            return HostKeyVerdict::Refused(ClientError::HostKeyRejected { fingerprint: got });
        }
        self.remember(&question);
        HostKeyVerdict::Accepted(question)
    }

    /// Remembers an accepted key, if there is a store. A store that cannot save (storage
    /// full or disabled) costs a question next time, not this connection.
    fn remember(&mut self, info: &HostKeyInfo) {
        if let Some(known) = self.policy.known_hosts.as_mut() {
            let id = known.id(&self.target, &info.algorithm);
            if let Err(err) = known.store.put(&id, &info.fingerprint) {
                tracing::warn!(%err, "host key accepted but not remembered");
            }
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
            known_types: Vec::new(),
        };
        let verdict = self.judge(info).await;
        let accepted = matches!(verdict, HostKeyVerdict::Accepted(_));
        *self.verdict.lock().expect("verdict lock") = Some(verdict);
        Ok(accepted)
    }

    /// Passed on without waiting: the answer (accept once the relay connected, or
    /// reject) comes later from the remote forward, and russh's loop must not wait for
    /// it. Dropping `reply` rejects the channel.
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let originator = if originator_address.contains(':') {
            format!("[{originator_address}]:{originator_port}")
        } else {
            format!("{originator_address}:{originator_port}")
        };
        let forwarded = ForwardedChannel {
            channel,
            reply,
            address: connected_address.to_owned(),
            port: connected_port,
            originator,
        };
        if let Some(queue) = &self.forwarded
            && let Err(full) = queue.try_send(forwarded)
        {
            tracing::debug!("refused a forwarded connection: {full}");
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::FutureExt;

    use super::*;
    use crate::known_hosts::{KnownHostId, KnownHosts, KnownHostsError, MemoryKnownHosts};

    /// A store the test keeps a handle on while the handler owns it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<MemoryKnownHosts>>);

    impl KnownHosts for Shared {
        fn get(&self, id: &KnownHostId) -> Option<String> {
            self.0.lock().unwrap().get(id)
        }
        fn put(&mut self, id: &KnownHostId, fingerprint: &str) -> Result<(), KnownHostsError> {
            self.0.lock().unwrap().put(id, fingerprint)
        }
        fn forget(&mut self, id: &KnownHostId) -> Result<(), KnownHostsError> {
            self.0.lock().unwrap().forget(id)
        }
        fn algorithms(&self, relay: &str, target: &str) -> Vec<String> {
            self.0.lock().unwrap().algorithms(relay, target)
        }
    }

    const RELAY: &str = "http://127.0.0.1:8080";

    fn offered(fingerprint: &str, algorithm: &str) -> HostKeyInfo {
        HostKeyInfo {
            fingerprint: fingerprint.into(),
            algorithm: algorithm.into(),
            pinned: false,
            known_types: Vec::new(),
        }
    }

    /// Judges `key` with `store` and `pins`; `answer` is the user's (None: no one to ask).
    /// Returns the verdict and what the question showed, if one was asked.
    async fn judge(
        store: &Shared,
        pins: &[&str],
        answer: Option<bool>,
        key: HostKeyInfo,
    ) -> (HostKeyVerdict, Option<HostKeyInfo>) {
        let asked = Arc::new(Mutex::new(None));
        let ask = answer.map(|yes| {
            let asked = asked.clone();
            Box::new(move |info: HostKeyInfo| {
                *asked.lock().unwrap() = Some(info);
                async move { yes }.boxed()
            }) as HostKeyCallback
        });
        let policy = HostKeyPolicy {
            pinned: pins.iter().map(|p| p.to_string()).collect(),
            expected: None,
            ask,
            known_hosts: Some(KnownHostsCheck {
                store: Box::new(store.clone()),
                relay: RELAY.into(),
            }),
        };
        let mut handler = SshHandler::new(policy, "lab".into(), End::default());
        let verdict = handler.judge(key).await;
        let question = asked.lock().unwrap().take();
        (verdict, question)
    }

    #[tokio::test]
    async fn an_accepted_key_is_remembered_and_not_asked_again() {
        let store = Shared::default();
        let (verdict, asked) =
            judge(&store, &[], Some(true), offered("SHA256:a", "ssh-ed25519")).await;
        assert!(
            matches!(verdict, HostKeyVerdict::Accepted(_)),
            "{verdict:?}"
        );
        assert_eq!(asked.unwrap().known_types, Vec::<String>::new());
        let (verdict, asked) = judge(&store, &[], None, offered("SHA256:a", "ssh-ed25519")).await;
        assert!(
            matches!(verdict, HostKeyVerdict::Accepted(_)),
            "{verdict:?}"
        );
        assert!(asked.is_none());
    }

    #[tokio::test]
    async fn a_refused_key_is_not_remembered() {
        let store = Shared::default();
        let (verdict, _) =
            judge(&store, &[], Some(false), offered("SHA256:a", "ssh-ed25519")).await;
        assert!(
            matches!(
                verdict,
                HostKeyVerdict::Refused(ClientError::HostKeyRejected { .. })
            ),
            "{verdict:?}"
        );
        assert!(store.algorithms(RELAY, "lab").is_empty());
    }

    #[tokio::test]
    async fn a_changed_key_is_refused_with_both_fingerprints() {
        let store = Shared::default();
        judge(
            &store,
            &[],
            Some(true),
            offered("SHA256:old", "ssh-ed25519"),
        )
        .await;
        let (verdict, asked) = judge(
            &store,
            &["SHA256:new"],
            Some(true),
            offered("SHA256:new", "ssh-ed25519"),
        )
        .await;
        assert!(asked.is_none(), "a changed key is not a question");
        let HostKeyVerdict::Refused(err) = verdict else {
            panic!("accepted a changed key");
        };
        assert_eq!(err.code(), "host-key-changed");
        let text = err.to_string();
        assert!(
            text.contains("SHA256:old") && text.contains("SHA256:new"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_pinned_key_is_remembered_without_asking_but_a_new_type_is_asked_with_a_warning() {
        let store = Shared::default();
        let (verdict, asked) = judge(
            &store,
            &["SHA256:ecdsa"],
            Some(true),
            offered("SHA256:ecdsa", "ecdsa-sha2-nistp256"),
        )
        .await;
        assert!(
            matches!(verdict, HostKeyVerdict::Accepted(ref i) if i.pinned),
            "{verdict:?}"
        );
        assert!(asked.is_none());
        let (verdict, asked) = judge(
            &store,
            &["SHA256:ed"],
            Some(false),
            offered("SHA256:ed", "ssh-ed25519"),
        )
        .await;
        assert!(
            matches!(
                verdict,
                HostKeyVerdict::Refused(ClientError::HostKeyRejected { .. })
            ),
            "{verdict:?}"
        );
        let asked = asked.expect("a new key type is asked");
        assert_eq!(asked.known_types, vec!["ecdsa-sha2-nistp256".to_owned()]);
        assert!(asked.pinned);
    }
}
