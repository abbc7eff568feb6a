//! Encoding and decoding of frames. One WebSocket message holds exactly one frame, so
//! `decode` parses a whole buffer and never waits for more bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::{ErrorCode, Frame, Kind, OpenFailure, RESUME_SECRET_LEN, ResumeSecret};
use crate::{
    HEADER_LEN, MAX_CREDENTIAL, MAX_DATA, MAX_FRAME, MAX_PINNED_KEYS, MAX_TEXT, STREAM_SESSION,
};

/// Why a buffer is not a valid frame. Each variant says enough to find the sender's bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLong { len: usize },
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("{frame} frame is truncated: its {field} is missing")]
    Truncated {
        frame: &'static str,
        field: &'static str,
    },
    #[error("{frame} frame has {extra} unexpected trailing bytes")]
    TrailingBytes { frame: &'static str, extra: usize },
    #[error("{frame} frame's {field} is not valid UTF-8")]
    BadUtf8 {
        frame: &'static str,
        field: &'static str,
    },
    #[error("{frame} frame's {field} is {len} bytes, over the {MAX_TEXT}-byte limit")]
    TextTooLong {
        frame: &'static str,
        field: &'static str,
        len: usize,
    },
    #[error("{frame} frame must use stream 0, not {stream}")]
    NonZeroStream { frame: &'static str, stream: u32 },
    #[error("{frame} frame may not use stream 0")]
    ZeroStream { frame: &'static str },
    #[error("Welcome frame carries {count} pinned host keys, over the {MAX_PINNED_KEYS}-key limit")]
    TooManyKeys { count: u16 },
    #[error(
        "{frame} frame's resume secret is {len} bytes; it must be 0 (none) or {RESUME_SECRET_LEN}"
    )]
    BadResumeLength { frame: &'static str, len: u8 },
    #[error("OpenFailed frame's failure is {number}; it must be 1-6")]
    UnknownFailure { number: u8 },
    #[error("{frame} frame's {field} is {value}; it must be 0 or 1")]
    BadFlag {
        frame: &'static str,
        field: &'static str,
        value: u8,
    },
}

/// Appends the encoding of `frame` to `out`.
///
/// Text fields longer than [`MAX_TEXT`] are cut at a character boundary (they may quote
/// what a peer sent, so their length is not always ours to choose).
///
/// # Panics
/// If a Data or Ssh payload is larger than [`MAX_DATA`]: senders chunk data, so this is
/// a bug in the caller.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let stream = match frame {
        Frame::Hello { .. } | Frame::Welcome { .. } | Frame::Error { .. } | Frame::Ssh(_) => {
            STREAM_SESSION
        }
        Frame::Listen { forward, .. }
        | Frame::Listening { forward, .. }
        | Frame::WebForward { forward, .. }
        | Frame::ListenFailed { forward, .. }
        | Frame::ListenSocks { forward, .. }
        | Frame::RemoteForward { forward, .. }
        | Frame::Unlisten { forward } => *forward,
        Frame::Accept { conn, .. }
        | Frame::Connect { conn, .. }
        | Frame::Dial { conn, .. }
        | Frame::OpenFailed { conn, .. }
        | Frame::Data { conn, .. }
        | Frame::Credit { conn, .. }
        | Frame::Eof { conn }
        | Frame::Blocked { conn }
        | Frame::Close { conn, .. } => *conn,
    };
    out.reserve(HEADER_LEN + payload_len_hint(frame));
    out.put_u8(frame.kind());
    out.put_u32(stream);
    match frame {
        Frame::Hello {
            version,
            target,
            token,
            resume,
        } => {
            out.put_u16(*version);
            let target = truncate(target);
            out.put_u16(target.len() as u16);
            out.put_slice(target.as_bytes());
            put_secret(out, resume.as_ref());
            put_text(out, token);
        }
        Frame::Welcome {
            version,
            pinned_host_keys,
            resume,
            resumed,
        } => {
            out.put_u16(*version);
            let keys = &pinned_host_keys[..pinned_host_keys.len().min(MAX_PINNED_KEYS)];
            out.put_u16(keys.len() as u16);
            for key in keys {
                let key = truncate(key);
                out.put_u16(key.len() as u16);
                out.put_slice(key.as_bytes());
            }
            put_secret(out, resume.as_ref());
            out.put_u8(u8::from(*resumed));
        }
        Frame::Error { code, message } | Frame::ListenFailed { code, message, .. } => {
            out.put_u16(code.to_u16());
            put_text(out, message);
        }
        Frame::Ssh(data) | Frame::Data { data, .. } => {
            assert!(
                data.len() <= MAX_DATA,
                "payload of {} bytes over MAX_DATA",
                data.len()
            );
            out.put_slice(data);
        }
        Frame::Listen { bind, port, .. } => {
            out.put_u16(*port);
            put_text(out, bind);
        }
        Frame::Listening { address, .. } => put_text(out, address),
        Frame::WebForward { url, .. } => put_text(out, url),
        Frame::Unlisten { .. } | Frame::Eof { .. } | Frame::Blocked { .. } => {}
        Frame::Accept { forward, peer, .. } => {
            out.put_u32(*forward);
            put_text(out, peer);
        }
        Frame::Credit { bytes, .. } => out.put_u32(*bytes),
        Frame::Close { reason, .. } => put_text(out, reason),
        Frame::ListenSocks {
            bind,
            port,
            username,
            password,
            ..
        } => {
            out.put_u16(*port);
            put_sized_text(out, bind);
            put_credential(out, username);
            put_credential(out, password);
        }
        Frame::Connect {
            forward,
            host,
            port,
            peer,
            ..
        } => {
            out.put_u32(*forward);
            out.put_u16(*port);
            put_sized_text(out, host);
            put_text(out, peer);
        }
        Frame::RemoteForward { host, port, .. } => {
            out.put_u16(*port);
            put_text(out, host);
        }
        Frame::Dial { forward, peer, .. } => {
            out.put_u32(*forward);
            put_text(out, peer);
        }
        Frame::OpenFailed {
            failure, message, ..
        } => {
            out.put_u8(failure.number());
            put_text(out, message);
        }
    }
}

/// Encodes `frame` into a fresh buffer, ready to be one WebSocket message.
pub fn encode_to_bytes(frame: &Frame) -> Bytes {
    let mut out = BytesMut::new();
    encode(frame, &mut out);
    out.freeze()
}

fn payload_len_hint(frame: &Frame) -> usize {
    match frame {
        Frame::Ssh(data) | Frame::Data { data, .. } => data.len(),
        _ => 32,
    }
}

/// A resume secret: its length (0 for none), then its bytes.
fn put_secret(out: &mut BytesMut, secret: Option<&ResumeSecret>) {
    match secret {
        None => out.put_u8(0),
        Some(secret) => {
            out.put_u8(RESUME_SECRET_LEN as u8);
            out.put_slice(&secret.0);
        }
    }
}

/// A text field before others: its length (u16), then its bytes.
fn put_sized_text(out: &mut BytesMut, text: &str) {
    let text = truncate(text);
    out.put_u16(text.len() as u16);
    out.put_slice(text.as_bytes());
}

/// A SOCKS5 username or password: its length (u8), then its bytes. RFC 1929 allows at
/// most 255 bytes; the tab refuses longer ones before they reach a frame.
fn put_credential(out: &mut BytesMut, text: &str) {
    let text = truncate_to(text, MAX_CREDENTIAL);
    out.put_u8(text.len() as u8);
    out.put_slice(text.as_bytes());
}

/// Text fields run to the end of the frame; their length is implied.
fn put_text(out: &mut BytesMut, text: &str) {
    out.put_slice(truncate(text).as_bytes());
}

/// `text` cut to at most [`MAX_TEXT`] bytes at a character boundary.
pub fn truncate(text: &str) -> &str {
    truncate_to(text, MAX_TEXT)
}

/// `text` cut to at most `max` bytes at a character boundary.
pub fn truncate_to(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Decodes one whole WebSocket message. Data and Ssh payloads share `message`'s memory.
pub fn decode(message: Bytes) -> Result<Frame, DecodeError> {
    let len = message.len();
    if len < HEADER_LEN {
        return Err(DecodeError::TooShort { len });
    }
    if len > MAX_FRAME {
        return Err(DecodeError::TooLong { len });
    }
    let mut buf = message;
    let kind = buf.get_u8();
    let stream = buf.get_u32();
    let kind = Kind::from_u8(kind).ok_or(DecodeError::UnknownKind { kind })?;
    let mut r = Reader {
        buf,
        frame: kind.name(),
    };
    let frame = match kind {
        Kind::Hello => {
            r.session(stream)?;
            let version = r.u16("version")?;
            let target_len = usize::from(r.u16("target length")?);
            let target = r.text(target_len, "target")?;
            let resume = r.secret()?;
            Frame::Hello {
                version,
                target,
                resume,
                token: r.rest_text("token")?,
            }
        }
        Kind::Welcome => {
            r.session(stream)?;
            let version = r.u16("version")?;
            let count = r.u16("key count")?;
            // The limit `encode` cuts to: a longer list would not survive a re-encoding.
            if usize::from(count) > MAX_PINNED_KEYS {
                return Err(DecodeError::TooManyKeys { count });
            }
            let mut pinned_host_keys = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let key_len = usize::from(r.u16("key length")?);
                pinned_host_keys.push(r.text(key_len, "pinned key")?);
            }
            let resume = r.secret()?;
            let resumed = r.flag("resumed flag")?;
            r.end()?;
            Frame::Welcome {
                version,
                pinned_host_keys,
                resume,
                resumed,
            }
        }
        Kind::Error => {
            r.session(stream)?;
            let code = ErrorCode::from_u16(r.u16("code")?);
            Frame::Error {
                code,
                message: r.rest_text("message")?,
            }
        }
        Kind::Ssh => {
            r.session(stream)?;
            Frame::Ssh(r.buf)
        }
        Kind::Listen => {
            let forward = r.stream(stream)?;
            let port = r.u16("port")?;
            Frame::Listen {
                forward,
                port,
                bind: r.rest_text("bind address")?,
            }
        }
        Kind::Listening => {
            let forward = r.stream(stream)?;
            Frame::Listening {
                forward,
                address: r.rest_text("address")?,
            }
        }
        Kind::WebForward => {
            let forward = r.stream(stream)?;
            Frame::WebForward {
                forward,
                url: r.rest_text("url")?,
            }
        }
        Kind::ListenFailed => {
            let forward = r.stream(stream)?;
            let code = ErrorCode::from_u16(r.u16("code")?);
            Frame::ListenFailed {
                forward,
                code,
                message: r.rest_text("message")?,
            }
        }
        Kind::Unlisten => {
            let forward = r.stream(stream)?;
            r.end()?;
            Frame::Unlisten { forward }
        }
        Kind::Accept => {
            let conn = r.stream(stream)?;
            let forward = r.u32("forward id")?;
            Frame::Accept {
                conn,
                forward,
                peer: r.rest_text("peer address")?,
            }
        }
        Kind::Data => {
            let conn = r.stream(stream)?;
            Frame::Data { conn, data: r.buf }
        }
        Kind::Credit => {
            let conn = r.stream(stream)?;
            let bytes = r.u32("credit")?;
            r.end()?;
            Frame::Credit { conn, bytes }
        }
        Kind::Eof => {
            let conn = r.stream(stream)?;
            r.end()?;
            Frame::Eof { conn }
        }
        Kind::Blocked => {
            let conn = r.stream(stream)?;
            r.end()?;
            Frame::Blocked { conn }
        }
        Kind::Close => {
            let conn = r.stream(stream)?;
            Frame::Close {
                conn,
                reason: r.rest_text("reason")?,
            }
        }
        Kind::ListenSocks => {
            let forward = r.stream(stream)?;
            let port = r.u16("port")?;
            let bind_len = usize::from(r.u16("bind address length")?);
            let bind = r.text(bind_len, "bind address")?;
            let username_len = usize::from(r.u8("username length")?);
            let username = r.text(username_len, "username")?;
            let password_len = usize::from(r.u8("password length")?);
            let password = r.text(password_len, "password")?;
            r.end()?;
            Frame::ListenSocks {
                forward,
                bind,
                port,
                username,
                password,
            }
        }
        Kind::Connect => {
            let conn = r.stream(stream)?;
            let forward = r.u32("forward id")?;
            let port = r.u16("port")?;
            let host_len = usize::from(r.u16("host length")?);
            let host = r.text(host_len, "host")?;
            Frame::Connect {
                conn,
                forward,
                host,
                port,
                peer: r.rest_text("peer address")?,
            }
        }
        Kind::RemoteForward => {
            let forward = r.stream(stream)?;
            let port = r.u16("port")?;
            Frame::RemoteForward {
                forward,
                port,
                host: r.rest_text("host")?,
            }
        }
        Kind::Dial => {
            let conn = r.stream(stream)?;
            let forward = r.u32("forward id")?;
            Frame::Dial {
                conn,
                forward,
                peer: r.rest_text("peer address")?,
            }
        }
        Kind::OpenFailed => {
            let conn = r.stream(stream)?;
            let number = r.u8("failure")?;
            let failure =
                OpenFailure::from_u8(number).ok_or(DecodeError::UnknownFailure { number })?;
            Frame::OpenFailed {
                conn,
                failure,
                message: r.rest_text("message")?,
            }
        }
    };
    Ok(frame)
}

/// Cursor over a frame's payload that names the frame and field in every error.
struct Reader {
    buf: Bytes,
    frame: &'static str,
}

impl Reader {
    fn session(&self, stream: u32) -> Result<(), DecodeError> {
        if stream == STREAM_SESSION {
            Ok(())
        } else {
            Err(DecodeError::NonZeroStream {
                frame: self.frame,
                stream,
            })
        }
    }

    fn stream(&self, stream: u32) -> Result<u32, DecodeError> {
        if stream == STREAM_SESSION {
            Err(DecodeError::ZeroStream { frame: self.frame })
        } else {
            Ok(stream)
        }
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(DecodeError::Truncated {
                frame: self.frame,
                field,
            })
        } else {
            Ok(())
        }
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::BadFlag {
                frame: self.frame,
                field,
                value,
            }),
        }
    }

    /// A resume secret: none, or exactly [`RESUME_SECRET_LEN`] bytes.
    fn secret(&mut self) -> Result<Option<ResumeSecret>, DecodeError> {
        let len = self.u8("resume secret length")?;
        match usize::from(len) {
            0 => Ok(None),
            RESUME_SECRET_LEN => {
                self.need(RESUME_SECRET_LEN, "resume secret")?;
                let mut secret = [0; RESUME_SECRET_LEN];
                self.buf.copy_to_slice(&mut secret);
                Ok(Some(ResumeSecret(secret)))
            }
            _ => Err(DecodeError::BadResumeLength {
                frame: self.frame,
                len,
            }),
        }
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    fn text(&mut self, len: usize, field: &'static str) -> Result<String, DecodeError> {
        if len > MAX_TEXT {
            return Err(DecodeError::TextTooLong {
                frame: self.frame,
                field,
                len,
            });
        }
        self.need(len, field)?;
        let raw = self.buf.split_to(len);
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::BadUtf8 {
            frame: self.frame,
            field,
        })
    }

    fn rest_text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        self.text(self.buf.remaining(), field)
    }

    fn end(&self) -> Result<(), DecodeError> {
        match self.buf.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes {
                frame: self.frame,
                extra,
            }),
        }
    }
}
