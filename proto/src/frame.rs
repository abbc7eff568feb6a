//! The frames of the tab <-> relay protocol. See the crate documentation for the table.

use bytes::Bytes;

/// One message of the protocol. Payload bytes are `Bytes`, so decoding a Data frame
/// does not copy it. Its Debug hides the access token and a web forward's URL (both
/// capabilities) and shows payloads by length only, so a frame logged whole leaks
/// nothing.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame of a session: the protocol version, the relay target to reach, and
    /// the relay access token (empty when the relay needs none). The token travels
    /// here, not in the URL, so it never reaches proxy or access logs.
    ///
    /// `resume` is the secret a previous session's Welcome gave (`None` for a fresh
    /// session): the relay then hands that session's parked forwards to this one.
    Hello {
        version: u16,
        target: String,
        token: String,
        resume: Option<ResumeSecret>,
    },
    /// The relay reached the target; SSH bytes may flow. Carries the operator's pinned
    /// host-key fingerprints for this target (empty: none pinned), the secret that
    /// resumes this session if it is lost (`None`: the relay parks nothing), and
    /// whether this session resumed a parked one.
    Welcome {
        version: u16,
        pinned_host_keys: Vec<String>,
        resume: Option<ResumeSecret>,
        resumed: bool,
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
    /// The sender of connection `conn` spent all the credit it was granted and waits
    /// for more: the receiver may grow the window (see [`crate::credit`]).
    Blocked { conn: u32 },
    /// Forward `forward` can also be opened in a browser at `url` (the relay's web
    /// forwards are on). Sent just before the forward's Listening, so the tab knows it
    /// by the time the forward is open. The URL carries the forward's capability: only
    /// the tab that opened the forward learns it (see the relay's `web_forward`).
    WebForward { forward: u32, url: String },
    /// Ask the relay to run a SOCKS proxy on `bind:port` for dynamic forward `forward`
    /// (`ssh -D`). Empty `username`: SOCKS clients need no credentials, which the relay
    /// allows on loopback binds only; else SOCKS5 clients must give these (RFC 1929)
    /// and SOCKS4 clients are refused. Answered like Listen: Listening or ListenFailed.
    ListenSocks {
        forward: u32,
        bind: String,
        port: u16,
        username: String,
        password: String,
    },
    /// A SOCKS client of dynamic forward `forward` asks for `host:port` (a name is the
    /// SSH server's to resolve). Opens connection `conn` like Accept: the tab answers
    /// with a Credit once its SSH channel is open (the relay then tells the client it
    /// succeeded), or with OpenFailed.
    Connect {
        conn: u32,
        forward: u32,
        host: String,
        port: u16,
        peer: String,
    },
    /// Register remote forward `forward` (`ssh -R`): the relay dials `host:port` for
    /// each connection the SSH server forwards to the tab. Answered with Listening (its
    /// `address` is the destination) or ListenFailed (the operator does not allow it:
    /// [`ErrorCode::DestinationNotAllowed`]).
    RemoteForward {
        forward: u32,
        host: String,
        port: u16,
    },
    /// The SSH server forwarded a connection from `peer` to remote forward `forward`:
    /// the tab opens connection `conn` (an id in the tab's space, see [`crate::conn`])
    /// and asks the relay to dial the forward's destination. The relay answers with a
    /// Credit once connected, or with OpenFailed.
    Dial {
        conn: u32,
        forward: u32,
        peer: String,
    },
    /// The receiver of a Connect or Dial could not open connection `conn`: both sides
    /// forget it. `failure` says why in terms a SOCKS reply can carry.
    OpenFailed {
        conn: u32,
        failure: OpenFailure,
        message: String,
    },
}

/// Why a connection could not be opened: the SOCKS5 reply codes (RFC 1928) that an SSH
/// channel's open failure or a relay's dial can map to. The wire number is the SOCKS5
/// code, so the relay's reply to a SOCKS client is the number itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpenFailure {
    /// Anything else.
    General = 1,
    /// A rule forbids it: sshd's PermitOpen or AllowTcpForwarding, the relay's allowlist.
    NotAllowed = 2,
    NetworkUnreachable = 3,
    /// Unreachable, or its name did not resolve.
    HostUnreachable = 4,
    Refused = 5,
    TimedOut = 6,
}

impl OpenFailure {
    /// Every failure, in wire order.
    pub const ALL: &'static [OpenFailure] = &[
        OpenFailure::General,
        OpenFailure::NotAllowed,
        OpenFailure::NetworkUnreachable,
        OpenFailure::HostUnreachable,
        OpenFailure::Refused,
        OpenFailure::TimedOut,
    ];

    /// Its wire number, which is also its SOCKS5 reply code.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The failure with wire number `number`, if there is one.
    pub fn from_u8(number: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.number() == number)
    }

    /// The failure an SSH server meant by a channel open failure (RFC 4254 section
    /// 5.1): its reason code, and for "connect failed" the description, which OpenSSH
    /// fills with the connect(2) or name-lookup error.
    pub fn from_ssh(reason: u32, description: &str) -> Self {
        const ADMINISTRATIVELY_PROHIBITED: u32 = 1;
        const CONNECT_FAILED: u32 = 2;
        match reason {
            ADMINISTRATIVELY_PROHIBITED => OpenFailure::NotAllowed,
            CONNECT_FAILED => {
                let text = description.to_ascii_lowercase();
                let says = |words: &[&str]| words.iter().any(|w| text.contains(w));
                if says(&["refused"]) {
                    OpenFailure::Refused
                } else if says(&["timed out", "timeout"]) {
                    OpenFailure::TimedOut
                } else if says(&["network is unreachable", "network unreachable"]) {
                    OpenFailure::NetworkUnreachable
                } else if says(&[
                    "no route",
                    "host is unreachable",
                    "host unreachable",
                    "name or service not known",
                    "not known",
                    "name resolution",
                    "lookup",
                    "nodename nor servname",
                ]) {
                    OpenFailure::HostUnreachable
                } else {
                    OpenFailure::General
                }
            }
            _ => OpenFailure::General,
        }
    }

    /// What the page shows.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenFailure::General => "failed",
            OpenFailure::NotAllowed => "not allowed",
            OpenFailure::NetworkUnreachable => "network unreachable",
            OpenFailure::HostUnreachable => "host unreachable",
            OpenFailure::Refused => "connection refused",
            OpenFailure::TimedOut => "timed out",
        }
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        match self {
            Frame::Hello {
                version,
                target,
                token,
                resume,
            } => f
                .debug_struct("Hello")
                .field("version", version)
                .field("target", target)
                .field("token", &redacted(token))
                .field("resume", resume)
                .finish(),
            Frame::Welcome {
                version,
                pinned_host_keys,
                resume,
                resumed,
            } => f
                .debug_struct("Welcome")
                .field("version", version)
                .field("pinned_host_keys", pinned_host_keys)
                .field("resume", resume)
                .field("resumed", resumed)
                .finish(),
            Frame::Error { code, message } => f
                .debug_struct("Error")
                .field("code", code)
                .field("message", message)
                .finish(),
            Frame::Ssh(bytes) => write!(f, "Ssh({} bytes)", bytes.len()),
            Frame::Listen {
                forward,
                bind,
                port,
            } => f
                .debug_struct("Listen")
                .field("forward", forward)
                .field("bind", bind)
                .field("port", port)
                .finish(),
            Frame::Listening { forward, address } => f
                .debug_struct("Listening")
                .field("forward", forward)
                .field("address", address)
                .finish(),
            Frame::ListenFailed {
                forward,
                code,
                message,
            } => f
                .debug_struct("ListenFailed")
                .field("forward", forward)
                .field("code", code)
                .field("message", message)
                .finish(),
            Frame::Unlisten { forward } => f
                .debug_struct("Unlisten")
                .field("forward", forward)
                .finish(),
            Frame::Accept {
                conn,
                forward,
                peer,
            } => f
                .debug_struct("Accept")
                .field("conn", conn)
                .field("forward", forward)
                .field("peer", peer)
                .finish(),
            Frame::Data { conn, data } => {
                write!(f, "Data {{ conn: {conn}, data: {} bytes }}", data.len())
            }
            Frame::Credit { conn, bytes } => f
                .debug_struct("Credit")
                .field("conn", conn)
                .field("bytes", bytes)
                .finish(),
            Frame::Eof { conn } => f.debug_struct("Eof").field("conn", conn).finish(),
            Frame::Close { conn, reason } => f
                .debug_struct("Close")
                .field("conn", conn)
                .field("reason", reason)
                .finish(),
            Frame::Blocked { conn } => f.debug_struct("Blocked").field("conn", conn).finish(),
            Frame::WebForward { forward, url } => f
                .debug_struct("WebForward")
                .field("forward", forward)
                .field("url", &redacted(url))
                .finish(),
            Frame::ListenSocks {
                forward,
                bind,
                port,
                username,
                password,
            } => f
                .debug_struct("ListenSocks")
                .field("forward", forward)
                .field("bind", bind)
                .field("port", port)
                .field("username", username)
                .field("password", &redacted(password))
                .finish(),
            Frame::Connect {
                conn,
                forward,
                host,
                port,
                peer,
            } => f
                .debug_struct("Connect")
                .field("conn", conn)
                .field("forward", forward)
                .field("host", host)
                .field("port", port)
                .field("peer", peer)
                .finish(),
            Frame::RemoteForward {
                forward,
                host,
                port,
            } => f
                .debug_struct("RemoteForward")
                .field("forward", forward)
                .field("host", host)
                .field("port", port)
                .finish(),
            Frame::Dial {
                conn,
                forward,
                peer,
            } => f
                .debug_struct("Dial")
                .field("conn", conn)
                .field("forward", forward)
                .field("peer", peer)
                .finish(),
            Frame::OpenFailed {
                conn,
                failure,
                message,
            } => f
                .debug_struct("OpenFailed")
                .field("conn", conn)
                .field("failure", failure)
                .field("message", message)
                .finish(),
        }
    }
}

/// The secret that resumes a lost session: 256 random bits the relay chose. Its Debug
/// never shows it, since it is a capability to take the session's ports.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResumeSecret(pub [u8; RESUME_SECRET_LEN]);

/// Bytes in a [`ResumeSecret`].
pub const RESUME_SECRET_LEN: usize = 32;

impl std::fmt::Debug for ResumeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeSecret(<redacted>)")
    }
}

/// Declares the frame kinds once: each row is a frame's wire number and its `Frame`
/// variant, whose name is also the kind's name in logs and errors. From it come
/// [`Kind`], its number and name, and [`Frame::kind`] (the style of the `http` crate's
/// status-code table: one row per code, no parallel match arms to keep in step).
macro_rules! frame_kinds {
    ($( ($number:literal, $name:ident); )+) => {
        /// What a frame is, as the first byte of its encoding says.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Kind {
            $( #[doc = concat!("See [`Frame::", stringify!($name), "`].")] $name = $number, )+
        }

        impl Kind {
            /// Every kind, in wire order.
            pub const ALL: &'static [Kind] = &[$(Kind::$name),+];

            /// The kind with wire number `number`, if there is one.
            pub fn from_u8(number: u8) -> Option<Kind> {
                match number {
                    $( $number => Some(Kind::$name), )+
                    _ => None,
                }
            }

            /// Its wire number.
            pub fn number(self) -> u8 {
                self as u8
            }

            /// Short name for logs and error messages.
            pub fn name(self) -> &'static str {
                match self {
                    $( Kind::$name => stringify!($name), )+
                }
            }
        }

        impl Frame {
            /// What this frame is.
            pub fn frame_kind(&self) -> Kind {
                match self {
                    $( Frame::$name { .. } => Kind::$name, )+
                }
            }
        }
    };
}

frame_kinds! {
    (1, Hello);
    (2, Welcome);
    (3, Error);
    (4, Ssh);
    (5, Listen);
    (6, Listening);
    (7, ListenFailed);
    (8, Unlisten);
    (9, Accept);
    (10, Data);
    (11, Credit);
    (12, Eof);
    (13, Close);
    (14, Blocked);
    (15, WebForward);
    (16, ListenSocks);
    (17, Connect);
    (18, RemoteForward);
    (19, Dial);
    (20, OpenFailed);
}

impl Frame {
    /// Wire kind byte of this frame.
    pub fn kind(&self) -> u8 {
        self.frame_kind().number()
    }

    /// Short name for logs and error messages.
    pub fn name(&self) -> &'static str {
        self.frame_kind().name()
    }
}

/// Declares the error codes once: each row is a code's wire number, its variant (with
/// its documentation) and the stable identifier programs see. Numbers this build does
/// not know travel as [`ErrorCode::Unknown`], so a newer peer's codes survive.
macro_rules! error_codes {
    ($( $(#[$doc:meta])* ($number:literal, $name:ident, $id:literal); )+) => {
        /// Why the relay refused something. Sent in Error and ListenFailed; the message
        /// that travels with it is for people, the code is for programs.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )+
            /// A code this build does not know (from a newer peer).
            Unknown(u16),
        }

        impl ErrorCode {
            /// Every code this build knows, in wire order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),+];

            /// The code's number on the wire.
            pub fn to_u16(self) -> u16 {
                match self {
                    $( ErrorCode::$name => $number, )+
                    ErrorCode::Unknown(n) => n,
                }
            }

            /// The code for a wire number; numbers this build does not know are kept
            /// as `Unknown`.
            pub fn from_u16(n: u16) -> Self {
                match n {
                    $( $number => ErrorCode::$name, )+
                    n => ErrorCode::Unknown(n),
                }
            }

            /// A stable identifier for programs (the page, the JS API's `code`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => $id, )+
                    ErrorCode::Unknown(_) => "unknown",
                }
            }
        }
    };
}

error_codes! {
    /// The peer broke the protocol (bad frame, credit overrun, unknown id).
    (1, Protocol, "protocol");
    /// The Hello's version is not one the relay speaks.
    (2, Version, "version");
    /// The Hello named a target the relay's operator did not configure.
    (3, UnknownTarget, "unknown-target");
    /// The relay could not reach the target's SSH server.
    (4, TargetUnreachable, "target-unreachable");
    /// The requested listen port is outside the operator's range, or privileged.
    (5, PortNotAllowed, "port-not-allowed");
    /// The requested listen port is taken.
    (6, PortInUse, "port-in-use");
    /// The requested bind address is not allowed by the operator.
    (7, BindNotAllowed, "bind-not-allowed");
    /// A forward id was reused while still active.
    (8, DuplicateForward, "duplicate-forward");
    /// An operator limit was reached.
    (9, Limit, "limit");
    /// The relay is shutting down.
    (10, ShuttingDown, "shutting-down");
    /// Anything else; the message says what.
    (11, Internal, "internal");
    /// The relay needs an access token, and none or a wrong one was given.
    (12, Unauthorized, "unauthorized");
    /// A TCP client's source address is not in the operator's allowed sources.
    (13, SourceNotAllowed, "source-not-allowed");
    /// The session carried no connection for the operator's idle timeout.
    (14, Idle, "idle");
    /// The SSH server closed the connection (the session then ends in order): the tab
    /// tells a login cut short by this code, not by the message's words.
    (15, SshClosed, "ssh-closed");
    /// A remote forward (`ssh -R`) named a destination the relay's operator does not let
    /// it connect to (`remote_destinations`).
    (16, DestinationNotAllowed, "destination-not-allowed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_capabilities_and_payloads() {
        let hello = Frame::Hello {
            version: 4,
            target: "lab".into(),
            token: "sekrit-token".into(),
            resume: Some(ResumeSecret([7; RESUME_SECRET_LEN])),
        };
        let web = Frame::WebForward {
            forward: 1,
            url: "https://relay.example/w/sekrit-key/".into(),
        };
        let data = Frame::Data {
            conn: 3,
            data: Bytes::from_static(b"sekrit payload"),
        };
        let ssh = Frame::Ssh(Bytes::from_static(b"sekrit ssh"));
        for frame in [&hello, &web, &data, &ssh] {
            let shown = format!("{frame:?}");
            assert!(!shown.contains("sekrit"), "{shown}");
        }
        assert!(format!("{hello:?}").contains("target: \"lab\""));
        assert!(format!("{data:?}").contains("14 bytes"));
        let no_token = Frame::Hello {
            version: 4,
            target: "lab".into(),
            token: String::new(),
            resume: None,
        };
        assert!(format!("{no_token:?}").contains("token: \"\""));
    }

    #[test]
    fn kinds_have_distinct_numbers_and_names_and_round_trip() {
        let mut numbers = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for &kind in Kind::ALL {
            assert!(numbers.insert(kind.number()), "{kind:?}");
            assert!(names.insert(kind.name()), "{kind:?}");
            assert_eq!(Kind::from_u8(kind.number()), Some(kind));
        }
        assert_eq!(Kind::from_u8(0), None);
        assert_eq!(Kind::from_u8(21), None);
    }

    #[test]
    fn error_codes_have_distinct_numbers_and_identifiers_and_round_trip() {
        let mut numbers = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(numbers.insert(code.to_u16()), "{code:?}");
            assert!(ids.insert(code.as_str()), "{code:?}");
            assert_eq!(ErrorCode::from_u16(code.to_u16()), code);
        }
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Unknown(999));
        assert_eq!(ErrorCode::Unknown(999).as_str(), "unknown");
    }
}
