//! Errors a user can act on. Messages never include a password or key.

use tabtunnel_proto::ErrorCode;

/// Everything that can go wrong in a session, in words the page shows as they are.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket to the relay failed; the text says how (it names the relay's URL
    /// when opening failed).
    #[error("{0}")]
    Transport(String),
    /// The relay refused the session or a request (unknown target, port in use...).
    #[error("{message}")]
    Relay { code: ErrorCode, message: String },
    /// `methods`: what the server still accepts; `accepted`: methods that succeeded
    /// partially (the server wants more); `refused`: methods tried and refused;
    /// `note`: why a method could not be used.
    #[error("{}", describe_auth_failure(user, methods, accepted, refused, note))]
    AuthFailed {
        user: String,
        methods: String,
        accepted: String,
        refused: String,
        note: String,
    },
    #[error("authentication was cancelled: the server's questions were not answered")]
    AuthCancelled,
    #[error("no credentials: give a password, a private key, or an onPrompt callback")]
    NoCredentials,
    #[error("cannot use the private key: {0}")]
    BadKey(String),
    #[error(
        "the passphrase of the private key is wrong; type it again (it is the one given when the key was made, e.g. by ssh-keygen)"
    )]
    WrongPassphrase,
    #[error(
        "host key refused: the server's key {fingerprint} was not accepted, so nothing was sent to it"
    )]
    HostKeyRejected { fingerprint: String },
    #[error(
        "the server's host key {fingerprint} is not known, so nothing was sent to it; pass its fingerprint as hostKey, or an onHostKey callback that asks the user"
    )]
    HostKeyUnknown { fingerprint: String },
    #[error(
        "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! The server's host key is {got}, but {expected} was expected{pin}. Someone may be intercepting the connection; the session was stopped before logging in."
    )]
    HostKeyMismatch {
        expected: String,
        got: String,
        pin: &'static str,
    },
    /// The key differs from the one remembered for this relay, target and key type.
    #[error(
        "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! The server's {algorithm} host key is {offered}, but {remembered} is remembered for it. Someone may be intercepting the connection; the session was stopped before logging in. If the server's operator confirms the key was changed, forget the old key and connect again."
    )]
    HostKeyChanged {
        algorithm: String,
        remembered: String,
        offered: String,
    },
    #[error("invalid forward: {0}")]
    BadSpec(#[from] crate::spec::ParseError),
    #[error("the SSH server refused the channel to {destination}: {reason}")]
    ChannelRefused { destination: String, reason: String },
    /// The SSH server would not listen for a remote forward (`ssh -R`).
    #[error("the SSH server refused to listen on {listen} for the remote forward: {reason}")]
    RemoteListenRefused { listen: String, reason: String },
    #[error("SSH error: {0}")]
    Ssh(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the session is closed: {0}")]
    Closed(String),
}

impl ClientError {
    /// A stable identifier for programs (the JS API's `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Transport(_) => "transport",
            ClientError::Relay { code, .. } => code.as_str(),
            ClientError::AuthFailed { .. } => "auth-failed",
            ClientError::AuthCancelled => "auth-cancelled",
            ClientError::NoCredentials => "no-credentials",
            ClientError::BadKey(_) => "bad-key",
            ClientError::WrongPassphrase => "wrong-passphrase",
            ClientError::HostKeyRejected { .. } => "host-key-rejected",
            ClientError::HostKeyUnknown { .. } => "host-key-unknown",
            ClientError::HostKeyMismatch { .. } => "host-key-mismatch",
            ClientError::HostKeyChanged { .. } => "host-key-changed",
            ClientError::BadSpec(_) => "bad-spec",
            ClientError::ChannelRefused { .. } => "channel-refused",
            ClientError::RemoteListenRefused { .. } => "remote-listen-refused",
            ClientError::Ssh(_) => "ssh",
            ClientError::Protocol(_) => "protocol",
            ClientError::Closed(_) => "closed",
        }
    }
}

fn describe_auth_failure(
    user: &str,
    methods: &str,
    accepted: &str,
    refused: &str,
    note: &str,
) -> String {
    let mut text = format!("authentication failed for user {user:?}");
    if !refused.is_empty() {
        text.push_str(&format!(": the {refused} given was refused"));
    }
    if accepted.is_empty() {
        text.push_str(&format!("; the server accepts: {methods}"));
    } else {
        text.push_str(&format!(
            "; the server accepted {accepted} but also requires {methods}"
        ));
    }
    if !note.is_empty() {
        text.push_str(&format!(" ({note})"));
    }
    text
}
