//! `decode` on arbitrary bytes, and `encode` on arbitrary frames.
//!
//! Properties, for every input:
//! 1. `decode(bytes)` returns (never panics). When it gives a frame `f`, `encode(f)` is
//!    exactly `bytes` (the format has one encoding per frame, and `decode` enforces every
//!    limit that `encode` would otherwise cut to), so `decode(encode(f)) == f` too.
//! 2. The same bytes, read as a frame built in memory (`g`, texts of any length, any
//!    number of pinned keys), encode without panicking, and `decode(encode(g))` is `g`
//!    with each text cut to `MAX_TEXT` bytes at a character boundary and the pinned keys
//!    cut to `MAX_PINNED_KEYS`; or, when `g` names stream 0 where a forward or connection
//!    id belongs, a `ZeroStream` error (the receiver's check of that sender bug).

#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tabtunnel_proto::codec::{truncate, truncate_to};
use tabtunnel_proto::{
    DecodeError, ErrorCode, Frame, MAX_CREDENTIAL, MAX_DATA, MAX_PINNED_KEYS, OpenFailure,
    ResumeSecret, decode, encode_to_bytes,
};

fuzz_target!(|input: &[u8]| {
    decoded_frames_re_encode_exactly(input);
    if let Ok(frame) = arbitrary_frame(&mut Unstructured::new(input)) {
        encoded_frames_decode_to_themselves(frame);
    }
});

fn decoded_frames_re_encode_exactly(input: &[u8]) {
    let Ok(frame) = decode(Bytes::copy_from_slice(input)) else {
        return;
    };
    let wire = encode_to_bytes(&frame);
    assert_eq!(&wire[..], input, "{frame:?} re-encodes differently");
    assert_eq!(decode(wire), Ok(frame));
}

fn encoded_frames_decode_to_themselves(frame: Frame) {
    let decoded = decode(encode_to_bytes(&frame));
    let zero_id = match &frame {
        Frame::Listen { forward, .. }
        | Frame::Listening { forward, .. }
        | Frame::WebForward { forward, .. }
        | Frame::ListenFailed { forward, .. }
        | Frame::ListenSocks { forward, .. }
        | Frame::RemoteForward { forward, .. }
        | Frame::Unlisten { forward } => *forward == 0,
        Frame::Accept { conn, .. }
        | Frame::Connect { conn, .. }
        | Frame::Dial { conn, .. }
        | Frame::OpenFailed { conn, .. }
        | Frame::Data { conn, .. }
        | Frame::Credit { conn, .. }
        | Frame::Eof { conn }
        | Frame::Blocked { conn }
        | Frame::Close { conn, .. } => *conn == 0,
        _ => false,
    };
    if zero_id {
        assert_eq!(
            decoded,
            Err(DecodeError::ZeroStream {
                frame: frame.name()
            })
        );
    } else {
        assert_eq!(decoded, Ok(cut_to_limits(frame)));
    }
}

/// What the receiver gets for `frame`: `encode` cuts over-long texts and key lists.
fn cut_to_limits(frame: Frame) -> Frame {
    let cut = |s: String| truncate(&s).to_owned();
    match frame {
        Frame::Hello {
            version,
            target,
            token,
            resume,
        } => Frame::Hello {
            version,
            target: cut(target),
            token: cut(token),
            resume,
        },
        Frame::Welcome {
            version,
            pinned_host_keys,
            resume,
            resumed,
        } => Frame::Welcome {
            version,
            resume,
            resumed,
            pinned_host_keys: pinned_host_keys
                .into_iter()
                .take(MAX_PINNED_KEYS)
                .map(cut)
                .collect(),
        },
        Frame::Error { code, message } => Frame::Error {
            code,
            message: cut(message),
        },
        Frame::Listen {
            forward,
            bind,
            port,
        } => Frame::Listen {
            forward,
            bind: cut(bind),
            port,
        },
        Frame::Listening { forward, address } => Frame::Listening {
            forward,
            address: cut(address),
        },
        Frame::WebForward { forward, url } => Frame::WebForward {
            forward,
            url: cut(url),
        },
        Frame::ListenFailed {
            forward,
            code,
            message,
        } => Frame::ListenFailed {
            forward,
            code,
            message: cut(message),
        },
        Frame::Accept {
            conn,
            forward,
            peer,
        } => Frame::Accept {
            conn,
            forward,
            peer: cut(peer),
        },
        Frame::Close { conn, reason } => Frame::Close {
            conn,
            reason: cut(reason),
        },
        Frame::ListenSocks {
            forward,
            bind,
            port,
            username,
            password,
        } => Frame::ListenSocks {
            forward,
            bind: cut(bind),
            port,
            username: truncate_to(&username, MAX_CREDENTIAL).to_owned(),
            password: truncate_to(&password, MAX_CREDENTIAL).to_owned(),
        },
        Frame::Connect {
            conn,
            forward,
            host,
            port,
            peer,
        } => Frame::Connect {
            conn,
            forward,
            host: cut(host),
            port,
            peer: cut(peer),
        },
        Frame::RemoteForward {
            forward,
            host,
            port,
        } => Frame::RemoteForward {
            forward,
            host: cut(host),
            port,
        },
        Frame::Dial {
            conn,
            forward,
            peer,
        } => Frame::Dial {
            conn,
            forward,
            peer: cut(peer),
        },
        Frame::OpenFailed {
            conn,
            failure,
            message,
        } => Frame::OpenFailed {
            conn,
            failure,
            message: cut(message),
        },
        other => other,
    }
}

/// A frame as a sender might build it. Only Data and Ssh payloads are kept within
/// `MAX_DATA`: a larger one is a documented panic of `encode` (senders chunk).
fn arbitrary_frame(u: &mut Unstructured<'_>) -> Result<Frame> {
    let code = |u: &mut Unstructured<'_>| Ok(ErrorCode::from_u16(u.arbitrary()?));
    let resume = |u: &mut Unstructured<'_>| -> Result<Option<ResumeSecret>> {
        Ok(Option::<[u8; 32]>::arbitrary(u)?.map(ResumeSecret))
    };
    let data = |u: &mut Unstructured<'_>| -> Result<Bytes> {
        let len = u.int_in_range(0..=MAX_DATA)?;
        Ok(Bytes::copy_from_slice(u.bytes(len.min(u.len()))?))
    };
    Ok(match u.int_in_range(1..=20u8)? {
        1 => Frame::Hello {
            version: u.arbitrary()?,
            target: u.arbitrary()?,
            token: u.arbitrary()?,
            resume: resume(u)?,
        },
        2 => Frame::Welcome {
            version: u.arbitrary()?,
            pinned_host_keys: u.arbitrary()?,
            resume: resume(u)?,
            resumed: u.arbitrary()?,
        },
        3 => Frame::Error {
            code: code(u)?,
            message: u.arbitrary()?,
        },
        4 => Frame::Ssh(data(u)?),
        5 => Frame::Listen {
            forward: u.arbitrary()?,
            bind: u.arbitrary()?,
            port: u.arbitrary()?,
        },
        6 => Frame::Listening {
            forward: u.arbitrary()?,
            address: u.arbitrary()?,
        },
        7 => Frame::ListenFailed {
            forward: u.arbitrary()?,
            code: code(u)?,
            message: u.arbitrary()?,
        },
        8 => Frame::Unlisten {
            forward: u.arbitrary()?,
        },
        9 => Frame::Accept {
            conn: u.arbitrary()?,
            forward: u.arbitrary()?,
            peer: u.arbitrary()?,
        },
        10 => Frame::Data {
            conn: u.arbitrary()?,
            data: data(u)?,
        },
        11 => Frame::Credit {
            conn: u.arbitrary()?,
            bytes: u.arbitrary()?,
        },
        12 => Frame::Eof {
            conn: u.arbitrary()?,
        },
        14 => Frame::Blocked {
            conn: u.arbitrary()?,
        },
        15 => Frame::WebForward {
            forward: u.arbitrary()?,
            url: u.arbitrary()?,
        },
        16 => Frame::ListenSocks {
            forward: u.arbitrary()?,
            bind: u.arbitrary()?,
            port: u.arbitrary()?,
            username: u.arbitrary()?,
            password: u.arbitrary()?,
        },
        17 => Frame::Connect {
            conn: u.arbitrary()?,
            forward: u.arbitrary()?,
            host: u.arbitrary()?,
            port: u.arbitrary()?,
            peer: u.arbitrary()?,
        },
        18 => Frame::RemoteForward {
            forward: u.arbitrary()?,
            host: u.arbitrary()?,
            port: u.arbitrary()?,
        },
        19 => Frame::Dial {
            conn: u.arbitrary()?,
            forward: u.arbitrary()?,
            peer: u.arbitrary()?,
        },
        20 => Frame::OpenFailed {
            conn: u.arbitrary()?,
            failure: *u.choose(OpenFailure::ALL)?,
            message: u.arbitrary()?,
        },
        _ => Frame::Close {
            conn: u.arbitrary()?,
            reason: u.arbitrary()?,
        },
    })
}
