//! The server side of a SOCKS handshake, as the relay speaks it for a dynamic forward
//! (`ssh -D`): SOCKS5 (RFC 1928) with CONNECT to an IPv4 or IPv6 address or a domain
//! name, its username/password method (RFC 1929), and SOCKS4 and 4a.
//!
//! A [`Handshake`] does no I/O (quinn-proto's model): the caller feeds it the bytes a
//! client sent ([`Handshake::feed`]) and writes out the replies it answers, until it
//! yields the client's [`Request`] or a [`Refusal`]. The request's reply waits for the
//! caller: the relay first asks the tab to open the SSH channel, then writes
//! [`Request::success_reply`] or [`Request::failure_reply`] with the reason the SSH
//! server gave.
//!
//! A name the client asks for stays a name ([`Host::Name`]): the SSH server resolves
//! it, as OpenSSH's `-D` does, never the relay.
//!
//! Every message has a bounded size (a name or a SOCKS4 user id at most 255 bytes), and
//! the handshake buffers at most [`MAX_BUFFERED`] bytes. Each malformed input is an error
//! whose reply is the one its protocol has for it (a SOCKS5 "command not supported", a
//! SOCKS4 "rejected"), or none where the client's protocol is unknown.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use tabtunnel_proto::OpenFailure;

/// Most bytes a handshake holds while a message is incomplete. The longest message (a
/// SOCKS4a request with a 255-byte user id and name) is 520 bytes; the rest is room for
/// one read of [`READ_CHUNK`] beyond it.
pub const MAX_BUFFERED: usize = 1100;

/// Most bytes a caller should read from the client at a time during the handshake: what
/// it read beyond the request is handed back as [`Progress::Request`]'s `rest`.
pub const READ_CHUNK: usize = 512;

/// The longest SOCKS4 user id or domain name (SOCKS5 gives names a one-byte length).
const MAX_FIELD: usize = 255;

const SOCKS4: u8 = 4;
const SOCKS5: u8 = 5;
const CONNECT: u8 = 1;
const NO_AUTH: u8 = 0;
const USER_PASS: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xFF;
const USER_PASS_VERSION: u8 = 1;
const SOCKS4_GRANTED: u8 = 0x5A;
const SOCKS4_REJECTED: u8 = 0x5B;
/// SOCKS5 reply codes beyond [`OpenFailure`]'s 1-6.
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;

/// What a forward asks of its SOCKS clients.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing: any client may connect (the relay allows this on loopback binds only).
    None,
    /// A SOCKS5 username and password (RFC 1929); SOCKS4 clients, which cannot give
    /// them, are refused.
    Password { username: String, password: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// The protocol a client spoke, which its replies must speak too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Socks4,
    Socks5,
}

/// The destination a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    /// A name, unresolved: the SSH server resolves it. UTF-8 without spaces or control
    /// characters, 1-255 bytes.
    Name(String),
}

/// Shown as an SSH `direct-tcpip` request names a host: an IPv6 address without
/// brackets.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::V4(ip) => ip.fmt(f),
            Host::V6(ip) => ip.fmt(f),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A client's CONNECT request: where it wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub version: Version,
    pub host: Host,
    pub port: u16,
}

impl Request {
    /// The reply that tells the client its connection is open; its bytes may flow next.
    /// The bound address is all zeros, as OpenSSH's `-D` answers: the connection is
    /// bound on the SSH server's side, which the client has no use for.
    pub fn success_reply(&self) -> Vec<u8> {
        match self.version {
            Version::Socks4 => socks4_reply(SOCKS4_GRANTED),
            Version::Socks5 => socks5_reply(0),
        }
    }

    /// The reply that tells the client its connection could not be opened, and why as
    /// far as its protocol can say (SOCKS4 has one code for every failure).
    pub fn failure_reply(&self, failure: OpenFailure) -> Vec<u8> {
        match self.version {
            Version::Socks4 => socks4_reply(SOCKS4_REJECTED),
            Version::Socks5 => socks5_reply(failure.number()),
        }
    }
}

fn socks5_reply(code: u8) -> Vec<u8> {
    vec![SOCKS5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

fn socks4_reply(code: u8) -> Vec<u8> {
    vec![0, code, 0, 0, 0, 0, 0, 0]
}

/// Why a handshake failed. The messages name what the client did, for the relay's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "the client spoke neither SOCKS4 nor SOCKS5 (first byte {0:#04x}); is it set to use a SOCKS proxy?"
    )]
    UnknownVersion(u8),
    #[error("the SOCKS5 client offered no authentication method")]
    NoMethods,
    #[error(
        "the SOCKS5 client offered no method this forward accepts (it needs {needed}; the client offered {offered:?})"
    )]
    NoAcceptableMethod {
        needed: &'static str,
        offered: Vec<u8>,
    },
    #[error("this forward needs a SOCKS5 username and password, which a SOCKS4 client cannot give")]
    Socks4NeedsCredentials,
    #[error("the client's username/password message has version {0}, not 1")]
    AuthVersion(u8),
    #[error("wrong SOCKS username or password")]
    WrongCredentials,
    #[error("the client's request has version {0}, not that of its greeting")]
    RequestVersion(u8),
    #[error("the client's request has a reserved byte of {0:#04x}, not 0")]
    Reserved(u8),
    #[error("the client asked for SOCKS command {0}; only CONNECT (1) is supported")]
    UnsupportedCommand(u8),
    #[error("the client asked for address type {0}; only IPv4 (1), a name (3) and IPv6 (4) are")]
    UnsupportedAddressType(u8),
    #[error("the client asked for an empty name")]
    EmptyName,
    #[error("the client asked for a name that is not UTF-8 or holds spaces or control characters")]
    BadName,
    #[error("the client's SOCKS4 {0} is longer than 255 bytes")]
    FieldTooLong(&'static str),
    #[error("the client sent more than {MAX_BUFFERED} bytes without completing a SOCKS message")]
    TooLong,
    #[error("the client sent more after its request was complete")]
    Finished,
}

/// A failed handshake: write `reply` to the client (it may be empty, or hold the
/// replies to the messages before the bad one), then close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct Refusal {
    pub reply: Vec<u8>,
    pub error: HandshakeError,
}

/// What to do after feeding a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Write `reply` to the client (it may be empty), then read more and feed it.
    More { reply: Vec<u8> },
    /// The client asked for `request`. Write `reply` (answers to earlier messages fed at
    /// the same time; usually empty), then answer the request once its connection opens
    /// or fails. `rest` is what the client sent after its request (it may send before
    /// the reply): the first bytes of its connection.
    Request {
        reply: Vec<u8>,
        request: Request,
        rest: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing read yet: the first byte says the protocol.
    Version,
    Greeting5,
    Auth5,
    Request5,
    Request4,
    /// The request was handed out: nothing more to read.
    Done,
}

/// The result of one message's parse.
enum Step {
    /// Not all of it has arrived.
    Incomplete,
    /// A message of `used` bytes, answered with `reply`; the state moved on.
    Answered { used: usize, reply: Vec<u8> },
    /// The request, `used` bytes.
    Request { used: usize, request: Request },
}

/// The server side of one client's SOCKS handshake.
#[derive(Debug)]
pub struct Handshake {
    credentials: Credentials,
    state: State,
    /// What arrived and is not yet a whole message.
    buffer: Vec<u8>,
}

impl Handshake {
    /// A handshake for a forward that asks `credentials` of its clients.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            state: State::Version,
            buffer: Vec::new(),
        }
    }

    /// Takes bytes the client sent (at most [`READ_CHUNK`] at a time keeps the buffer
    /// within [`MAX_BUFFERED`]; more is refused once a message is that long).
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, Refusal> {
        if self.state == State::Done {
            return Err(Refusal {
                reply: Vec::new(),
                error: HandshakeError::Finished,
            });
        }
        self.buffer.extend_from_slice(input);
        let mut reply = Vec::new();
        loop {
            let step = self.step().map_err(|(answer, error)| {
                self.state = State::Done;
                self.buffer = Vec::new();
                reply.extend_from_slice(&answer);
                Refusal {
                    reply: std::mem::take(&mut reply),
                    error,
                }
            })?;
            match step {
                Step::Incomplete => {
                    if self.buffer.len() > MAX_BUFFERED {
                        self.state = State::Done;
                        self.buffer = Vec::new();
                        return Err(Refusal {
                            reply,
                            error: HandshakeError::TooLong,
                        });
                    }
                    return Ok(Progress::More { reply });
                }
                Step::Answered { used, reply: more } => {
                    self.buffer.drain(..used);
                    reply.extend_from_slice(&more);
                }
                Step::Request { used, request } => {
                    self.state = State::Done;
                    let rest = self.buffer.split_off(used);
                    self.buffer = Vec::new();
                    return Ok(Progress::Request {
                        reply,
                        request,
                        rest,
                    });
                }
            }
        }
    }

    /// Bytes held for a message not yet complete (at most [`MAX_BUFFERED`]).
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Parses the message the state expects from the start of the buffer. An error
    /// carries the reply that refuses it.
    fn step(&mut self) -> Result<Step, (Vec<u8>, HandshakeError)> {
        let buf = &self.buffer[..];
        match self.state {
            State::Version => match buf.first() {
                None => Ok(Step::Incomplete),
                Some(&SOCKS5) => {
                    self.state = State::Greeting5;
                    Ok(Step::Answered {
                        used: 0,
                        reply: Vec::new(),
                    })
                }
                Some(&SOCKS4) if self.credentials != Credentials::None => Err((
                    socks4_reply(SOCKS4_REJECTED),
                    HandshakeError::Socks4NeedsCredentials,
                )),
                Some(&SOCKS4) => {
                    self.state = State::Request4;
                    Ok(Step::Answered {
                        used: 0,
                        reply: Vec::new(),
                    })
                }
                Some(&other) => Err((Vec::new(), HandshakeError::UnknownVersion(other))),
            },
            State::Greeting5 => {
                let Some(&count) = buf.get(1) else {
                    return Ok(Step::Incomplete);
                };
                let Some(methods) = buf.get(2..2 + usize::from(count)) else {
                    return Ok(Step::Incomplete);
                };
                let refuse = |error| Err((vec![SOCKS5, NO_ACCEPTABLE], error));
                if methods.is_empty() {
                    return refuse(HandshakeError::NoMethods);
                }
                let (method, needed, next) = match self.credentials {
                    Credentials::None => (NO_AUTH, "no authentication", State::Request5),
                    Credentials::Password { .. } => {
                        (USER_PASS, "a username and password", State::Auth5)
                    }
                };
                if !methods.contains(&method) {
                    return refuse(HandshakeError::NoAcceptableMethod {
                        needed,
                        offered: methods.to_vec(),
                    });
                }
                self.state = next;
                Ok(Step::Answered {
                    used: 2 + methods.len(),
                    reply: vec![SOCKS5, method],
                })
            }
            State::Auth5 => {
                let refuse = |error| Err((vec![USER_PASS_VERSION, 1], error));
                let Some(&version) = buf.first() else {
                    return Ok(Step::Incomplete);
                };
                if version != USER_PASS_VERSION {
                    return refuse(HandshakeError::AuthVersion(version));
                }
                let Some((username, at)) = length_prefixed(buf, 1) else {
                    return Ok(Step::Incomplete);
                };
                let Some((password, used)) = length_prefixed(buf, at) else {
                    return Ok(Step::Incomplete);
                };
                let Credentials::Password {
                    username: want_user,
                    password: want_password,
                } = &self.credentials
                else {
                    unreachable!("Auth5 follows a password method only")
                };
                // Both compared in full, so the time taken tells nothing of which one,
                // or which byte, was wrong.
                let user_ok = same(username, want_user.as_bytes());
                let password_ok = same(password, want_password.as_bytes());
                if !(user_ok & password_ok) {
                    return refuse(HandshakeError::WrongCredentials);
                }
                self.state = State::Request5;
                Ok(Step::Answered {
                    used,
                    reply: vec![USER_PASS_VERSION, 0],
                })
            }
            State::Request5 => request5(buf),
            State::Request4 => request4(buf),
            State::Done => unreachable!("feed refuses a finished handshake"),
        }
    }
}

/// A one-byte length and that many bytes at `at`; with where the next field starts.
fn length_prefixed(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = usize::from(*buf.get(at)?);
    let field = buf.get(at + 1..at + 1 + len)?;
    Some((field, at + 1 + len))
}

/// Equal, comparing every byte whatever the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    let len_differs = u8::from(a.len() != b.len());
    let bytes_differ = a
        .iter()
        .zip(b.iter().chain(std::iter::repeat(&0)))
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    (len_differs | bytes_differ) == 0
}

/// A name as a client sent it: UTF-8, without spaces or control characters (it ends up
/// in logs and in the SSH server's).
fn name(bytes: &[u8]) -> Result<Host, HandshakeError> {
    if bytes.is_empty() {
        return Err(HandshakeError::EmptyName);
    }
    match std::str::from_utf8(bytes) {
        Ok(name) if !name.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Ok(Host::Name(name.to_owned()))
        }
        _ => Err(HandshakeError::BadName),
    }
}

/// `VER CMD RSV ATYP DST.ADDR DST.PORT` (RFC 1928 section 4).
fn request5(buf: &[u8]) -> Result<Step, (Vec<u8>, HandshakeError)> {
    let refuse = |code, error| Err((socks5_reply(code), error));
    let general = OpenFailure::General.number();
    let Some(&[version, command, reserved, kind]) = buf.first_chunk::<4>() else {
        return Ok(Step::Incomplete);
    };
    if version != SOCKS5 {
        return refuse(general, HandshakeError::RequestVersion(version));
    }
    if command != CONNECT {
        return refuse(
            COMMAND_NOT_SUPPORTED,
            HandshakeError::UnsupportedCommand(command),
        );
    }
    if reserved != 0 {
        return refuse(general, HandshakeError::Reserved(reserved));
    }
    let (host, at) = match kind {
        1 => match buf.get(4..8) {
            Some(ip) => (Host::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])), 8),
            None => return Ok(Step::Incomplete),
        },
        4 => match buf.get(4..20).and_then(|ip| <[u8; 16]>::try_from(ip).ok()) {
            Some(ip) => (Host::V6(Ipv6Addr::from(ip)), 20),
            None => return Ok(Step::Incomplete),
        },
        3 => match length_prefixed(buf, 4) {
            Some((bytes, at)) => match name(bytes) {
                Ok(host) => (host, at),
                Err(error) => return refuse(general, error),
            },
            None => return Ok(Step::Incomplete),
        },
        other => {
            return refuse(
                ADDRESS_TYPE_NOT_SUPPORTED,
                HandshakeError::UnsupportedAddressType(other),
            );
        }
    };
    let Some(&port) = buf.get(at..).and_then(|b| b.first_chunk::<2>()) else {
        return Ok(Step::Incomplete);
    };
    Ok(Step::Request {
        used: at + 2,
        request: Request {
            version: Version::Socks5,
            host,
            port: u16::from_be_bytes(port),
        },
    })
}

/// `VN CD DSTPORT DSTIP USERID NUL`, and for SOCKS4a (DSTIP 0.0.0.x, x not 0) the name
/// and a NUL after it.
fn request4(buf: &[u8]) -> Result<Step, (Vec<u8>, HandshakeError)> {
    let refuse = |error| Err((socks4_reply(SOCKS4_REJECTED), error));
    let Some(head) = buf.first_chunk::<8>() else {
        return Ok(Step::Incomplete);
    };
    let command = head[1];
    if command != CONNECT {
        return refuse(HandshakeError::UnsupportedCommand(command));
    }
    let port = u16::from_be_bytes([head[2], head[3]]);
    let ip = Ipv4Addr::new(head[4], head[5], head[6], head[7]);
    // A NUL-terminated field from `at`: its bytes and where the next starts.
    let field = |at: usize, what| -> Result<Option<(&[u8], usize)>, HandshakeError> {
        let rest = buf.get(at..).unwrap_or_default();
        match rest.iter().take(MAX_FIELD + 1).position(|&b| b == 0) {
            Some(len) => Ok(Some((&rest[..len], at + len + 1))),
            None if rest.len() > MAX_FIELD => Err(HandshakeError::FieldTooLong(what)),
            None => Ok(None),
        }
    };
    let after_user = match field(8, "user id") {
        Ok(Some((_user, at))) => at,
        Ok(None) => return Ok(Step::Incomplete),
        Err(error) => return refuse(error),
    };
    // 0.0.0.0 is no destination, and not the 4a marker either: a plain request.
    let [0, 0, 0, 1..=255] = ip.octets() else {
        return Ok(Step::Request {
            used: after_user,
            request: Request {
                version: Version::Socks4,
                host: Host::V4(ip),
                port,
            },
        });
    };
    let (host, used) = match field(after_user, "name") {
        Ok(Some((bytes, at))) => match name(bytes) {
            Ok(host) => (host, at),
            Err(error) => return refuse(error),
        },
        Ok(None) => return Ok(Step::Incomplete),
        Err(error) => return refuse(error),
    };
    Ok(Step::Request {
        used,
        request: Request {
            version: Version::Socks4,
            host,
            port,
        },
    })
}

#[cfg(test)]
mod tests;
