//! The frames of the tab <-> relay protocol. See the crate documentation for the table.

use bytes::Bytes;

/// One message of the protocol. Payload bytes are `Bytes`, so decoding a Data frame
/// does not copy it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame of a session: the protocol version, the relay target to reach, and
    /// the relay access token (empty when the relay needs none). The token travels
    /// here, not in the URL, so it never reaches proxy or access logs.
    Hello {
        version: u16,
        target: String,
        token: String,
    },
    /// The relay reached the target; SSH bytes may flow. Carries the operator's pinned
    /// host-key fingerprints for this target (empty: none pinned).
    Welcome {
        version: u16,
        pinned_host_keys: Vec<String>,
    },
    /// A session-level failure; the relay closes the WebSocket after sending it.
    Error { code: ErrorCode, message: String },
    /// SSH transport bytes between the tab and the SSH server.
    Ssh(Bytes),
    /// Ask the relay to listen on `bind:port` (port 0: any free port in its range).
    Listen {
        forward: u32,
        bind: String,
        port: u16,
    },
    /// The relay listens for forward `forward` at `address`.
    Listening { forward: u32, address: String },
    /// The relay could not listen for forward `forward`. Sent for a forward that is
    /// already listening, it tells that the relay refused one TCP client of it (source
    /// address not allowed, too many waiting): the listener stays open.
    ListenFailed {
        forward: u32,
        code: ErrorCode,
        message: String,
    },
    /// Stop forward `forward`: close its listener and its connections.
    Unlisten { forward: u32 },
    /// A TCP client connected to forward `forward`; `conn` names the connection.
    Accept {
        conn: u32,
        forward: u32,
        peer: String,
    },
    /// Bytes of connection `conn`.
    Data { conn: u32, data: Bytes },
    /// The receiver of connection `conn` may take `bytes` more.
    Credit { conn: u32, bytes: u32 },
    /// No more Data from this side of connection `conn` (TCP half-close).
    Eof { conn: u32 },
    /// Connection `conn` is over; the sender forgets it. Empty reason: orderly end.
    Close { conn: u32, reason: String },
}

impl Frame {
    /// Wire kind byte of this frame.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => 1,
            Frame::Welcome { .. } => 2,
            Frame::Error { .. } => 3,
            Frame::Ssh(_) => 4,
            Frame::Listen { .. } => 5,
            Frame::Listening { .. } => 6,
            Frame::ListenFailed { .. } => 7,
            Frame::Unlisten { .. } => 8,
            Frame::Accept { .. } => 9,
            Frame::Data { .. } => 10,
            Frame::Credit { .. } => 11,
            Frame::Eof { .. } => 12,
            Frame::Close { .. } => 13,
        }
    }

    /// Short name for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Welcome { .. } => "Welcome",
            Frame::Error { .. } => "Error",
            Frame::Ssh(_) => "Ssh",
            Frame::Listen { .. } => "Listen",
            Frame::Listening { .. } => "Listening",
            Frame::ListenFailed { .. } => "ListenFailed",
            Frame::Unlisten { .. } => "Unlisten",
            Frame::Accept { .. } => "Accept",
            Frame::Data { .. } => "Data",
            Frame::Credit { .. } => "Credit",
            Frame::Eof { .. } => "Eof",
            Frame::Close { .. } => "Close",
        }
    }
}

/// Why the relay refused something. Sent in Error and ListenFailed; the message that
/// travels with it is for people, the code is for programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The peer broke the protocol (bad frame, credit overrun, unknown id).
    Protocol,
    /// The Hello's version is not one the relay speaks.
    Version,
    /// The Hello named a target the relay's operator did not configure.
    UnknownTarget,
    /// The relay could not reach the target's SSH server.
    TargetUnreachable,
    /// The requested listen port is outside the operator's range, or privileged.
    PortNotAllowed,
    /// The requested listen port is taken.
    PortInUse,
    /// The requested bind address is not allowed by the operator.
    BindNotAllowed,
    /// A forward id was reused while still active.
    DuplicateForward,
    /// An operator limit was reached.
    Limit,
    /// The relay is shutting down.
    ShuttingDown,
    /// Anything else; the message says what.
    Internal,
    /// The relay needs an access token, and none or a wrong one was given.
    Unauthorized,
    /// A TCP client's source address is not in the operator's allowed sources.
    SourceNotAllowed,
    /// The session carried no connection for the operator's idle timeout.
    Idle,
    /// The SSH server closed the connection (the session then ends in order).
    SshClosed,
    /// A code this build does not know (from a newer peer).
    Unknown(u16),
}

impl ErrorCode {
    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Protocol => 1,
            ErrorCode::Version => 2,
            ErrorCode::UnknownTarget => 3,
            ErrorCode::TargetUnreachable => 4,
            ErrorCode::PortNotAllowed => 5,
            ErrorCode::PortInUse => 6,
            ErrorCode::BindNotAllowed => 7,
            ErrorCode::DuplicateForward => 8,
            ErrorCode::Limit => 9,
            ErrorCode::ShuttingDown => 10,
            ErrorCode::Internal => 11,
            ErrorCode::Unauthorized => 12,
            ErrorCode::SourceNotAllowed => 13,
            ErrorCode::Idle => 14,
            ErrorCode::SshClosed => 15,
            ErrorCode::Unknown(n) => n,
        }
    }

    /// The code for a wire number; numbers this build does not know are kept as `Unknown`.
    pub fn from_u16(n: u16) -> Self {
        match n {
            1 => ErrorCode::Protocol,
            2 => ErrorCode::Version,
            3 => ErrorCode::UnknownTarget,
            4 => ErrorCode::TargetUnreachable,
            5 => ErrorCode::PortNotAllowed,
            6 => ErrorCode::PortInUse,
            7 => ErrorCode::BindNotAllowed,
            8 => ErrorCode::DuplicateForward,
            9 => ErrorCode::Limit,
            10 => ErrorCode::ShuttingDown,
            11 => ErrorCode::Internal,
            12 => ErrorCode::Unauthorized,
            13 => ErrorCode::SourceNotAllowed,
            14 => ErrorCode::Idle,
            15 => ErrorCode::SshClosed,
            n => ErrorCode::Unknown(n),
        }
    }

    /// A stable identifier for programs (the page, the JS API's `code`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Protocol => "protocol",
            ErrorCode::Version => "version",
            ErrorCode::UnknownTarget => "unknown-target",
            ErrorCode::TargetUnreachable => "target-unreachable",
            ErrorCode::PortNotAllowed => "port-not-allowed",
            ErrorCode::PortInUse => "port-in-use",
            ErrorCode::BindNotAllowed => "bind-not-allowed",
            ErrorCode::DuplicateForward => "duplicate-forward",
            ErrorCode::Limit => "limit",
            ErrorCode::ShuttingDown => "shutting-down",
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::SourceNotAllowed => "source-not-allowed",
            ErrorCode::Idle => "idle",
            ErrorCode::SshClosed => "ssh-closed",
            ErrorCode::Unknown(_) => "unknown",
        }
    }
}
