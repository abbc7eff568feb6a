use bytes::Bytes;
use tabtunnel_proto::{
    DecodeError, ErrorCode, Frame, MAX_DATA, MAX_FRAME, OpenFailure, ResumeSecret, decode,
    encode_to_bytes,
};

fn every_variant() -> Vec<Frame> {
    vec![
        Frame::Hello {
            version: 1,
            target: "demo".into(),
            token: String::new(),
            resume: None,
        },
        Frame::Hello {
            version: 7,
            target: String::new(),
            token: "tok-en:ä".into(),
            resume: Some(ResumeSecret([0xA5; 32])),
        },
        Frame::Welcome {
            version: 1,
            pinned_host_keys: vec![],
            resume: None,
            resumed: false,
        },
        Frame::Welcome {
            version: 1,
            pinned_host_keys: vec!["SHA256:abc".into(), "SHA256:dé".into()],
            resume: Some(ResumeSecret([7; 32])),
            resumed: true,
        },
        Frame::Error {
            code: ErrorCode::UnknownTarget,
            message: "no target \"x\"".into(),
        },
        Frame::Error {
            code: ErrorCode::Unknown(999),
            message: String::new(),
        },
        Frame::Ssh(Bytes::from_static(b"SSH-2.0-x\r\n")),
        Frame::Ssh(Bytes::from(vec![0xAB; MAX_DATA])),
        Frame::Listen {
            forward: 1,
            bind: "127.0.0.1".into(),
            port: 10080,
        },
        Frame::Listen {
            forward: u32::MAX,
            bind: "::1".into(),
            port: 0,
        },
        Frame::Listening {
            forward: 3,
            address: "[::1]:10001".into(),
        },
        Frame::ListenFailed {
            forward: 3,
            code: ErrorCode::PortInUse,
            message: "busy".into(),
        },
        Frame::Unlisten { forward: 3 },
        Frame::Accept {
            conn: 9,
            forward: 3,
            peer: "127.0.0.1:5555".into(),
        },
        Frame::Data {
            conn: 9,
            data: Bytes::new(),
        },
        Frame::Data {
            conn: 9,
            data: Bytes::from(vec![1u8; MAX_DATA]),
        },
        Frame::Credit {
            conn: 9,
            bytes: u32::MAX,
        },
        Frame::Eof { conn: 9 },
        Frame::Blocked { conn: 9 },
        Frame::WebForward {
            forward: 3,
            url: "https://f-0123456789abcdef.tunnel.example.edu/?tabtunnel_key=00ff".into(),
        },
        Frame::Close {
            conn: 9,
            reason: String::new(),
        },
        Frame::Close {
            conn: 9,
            reason: "connection reset".into(),
        },
        Frame::ListenSocks {
            forward: 4,
            bind: String::new(),
            port: 1080,
            username: String::new(),
            password: String::new(),
        },
        Frame::ListenSocks {
            forward: 4,
            bind: "[::1]".into(),
            port: 0,
            username: "ann".into(),
            password: "pä ss".into(),
        },
        Frame::Connect {
            conn: 10,
            forward: 4,
            host: "db.internal".into(),
            port: 5432,
            peer: "127.0.0.1:50000".into(),
        },
        Frame::Connect {
            conn: 11,
            forward: 4,
            host: "2001:db8::1".into(),
            port: 443,
            peer: String::new(),
        },
        Frame::RemoteForward {
            forward: 5,
            host: "127.0.0.1".into(),
            port: 3000,
        },
        Frame::Dial {
            conn: 0x8000_0001,
            forward: 5,
            peer: "10.0.0.7:41000".into(),
        },
        Frame::OpenFailed {
            conn: 10,
            failure: OpenFailure::NotAllowed,
            message: "administratively prohibited: open failed".into(),
        },
        Frame::OpenFailed {
            conn: 0x8000_0001,
            failure: OpenFailure::Refused,
            message: String::new(),
        },
    ]
}

#[test]
fn every_variant_round_trips() {
    for frame in every_variant() {
        let wire = encode_to_bytes(&frame);
        assert_eq!(decode(wire).as_ref(), Ok(&frame), "{frame:?}");
    }
}

#[test]
fn every_truncation_is_an_error_or_a_shorter_valid_frame() {
    // A prefix of a frame must never panic; for fixed-size frames it must be an error.
    for frame in every_variant() {
        let wire = encode_to_bytes(&frame);
        for cut in 0..wire.len() {
            let _ = decode(wire.slice(..cut));
        }
    }
    let credit = encode_to_bytes(&Frame::Credit { conn: 1, bytes: 5 });
    assert_eq!(
        decode(credit.slice(..7)),
        Err(DecodeError::Truncated {
            frame: "Credit",
            field: "credit"
        })
    );
}

#[test]
fn malformed_inputs_get_clear_errors() {
    assert_eq!(
        decode(Bytes::from_static(&[4, 0, 0])),
        Err(DecodeError::TooShort { len: 3 })
    );
    assert_eq!(
        decode(Bytes::from_static(&[200, 0, 0, 0, 0])),
        Err(DecodeError::UnknownKind { kind: 200 })
    );
    let too_long = Bytes::from(vec![10u8; MAX_FRAME + 1]);
    let err = decode(too_long).unwrap_err();
    assert_eq!(err, DecodeError::TooLong { len: MAX_FRAME + 1 });
    assert!(err.to_string().contains("exceeds"), "{err}");

    // Data on stream 0, Ssh on a connection stream.
    assert_eq!(
        decode(Bytes::from_static(&[10, 0, 0, 0, 0, 1])),
        Err(DecodeError::ZeroStream { frame: "Data" })
    );
    assert_eq!(
        decode(Bytes::from_static(&[4, 0, 0, 0, 1, 1])),
        Err(DecodeError::NonZeroStream {
            frame: "Ssh",
            stream: 1
        })
    );
    // Invalid UTF-8 in a target name.
    let err = decode(Bytes::from_static(&[1, 0, 0, 0, 0, 0, 1, 0, 2, 0xff, 0xfe])).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadUtf8 {
            frame: "Hello",
            field: "target"
        }
    );
    assert_eq!(err.to_string(), "Hello frame's target is not valid UTF-8");
    // A target length past the end, and a token that is not UTF-8.
    assert_eq!(
        decode(Bytes::from_static(&[1, 0, 0, 0, 0, 0, 1, 0, 9, b'a'])),
        Err(DecodeError::Truncated {
            frame: "Hello",
            field: "target"
        })
    );
    assert_eq!(
        decode(Bytes::from_static(&[
            1, 0, 0, 0, 0, 0, 1, 0, 1, b'a', 0, 0xc3
        ])),
        Err(DecodeError::BadUtf8 {
            frame: "Hello",
            field: "token"
        })
    );
    // Trailing bytes after a fixed-size frame.
    assert_eq!(
        decode(Bytes::from_static(&[12, 0, 0, 0, 1, 9])),
        Err(DecodeError::TrailingBytes {
            frame: "Eof",
            extra: 1
        })
    );
    // A Welcome that promises more keys than it carries.
    assert_eq!(
        decode(Bytes::from_static(&[2, 0, 0, 0, 0, 0, 1, 0, 2, 0, 1, b'a'])),
        Err(DecodeError::Truncated {
            frame: "Welcome",
            field: "key length"
        })
    );
    // More pinned keys than a Welcome may carry, even when all of them are present
    // (found by the frame_decode fuzz target: such a frame did not re-encode to itself).
    let mut too_many = vec![2, 0, 0, 0, 0, 0, 1, 0, 65];
    too_many.extend([0u8; 2 * 65]);
    assert_eq!(
        decode(Bytes::from(too_many)),
        Err(DecodeError::TooManyKeys { count: 65 })
    );
    let mut most = vec![2, 0, 0, 0, 0, 0, 1, 0, 64];
    most.extend([0u8; 2 * 64]);
    most.extend([0, 0]); // no resume secret, not resumed
    let wire = Bytes::from(most);
    let frame = decode(wire.clone()).expect("64 keys is the limit, not over it");
    assert_eq!(encode_to_bytes(&frame), wire);
}

#[test]
fn data_payload_shares_the_message_buffer() {
    let wire = encode_to_bytes(&Frame::Data {
        conn: 1,
        data: Bytes::from(vec![7u8; 1000]),
    });
    let start = wire.as_ptr() as usize;
    let Ok(Frame::Data { data, .. }) = decode(wire) else {
        panic!("not data")
    };
    assert_eq!(data.as_ptr() as usize, start + tabtunnel_proto::HEADER_LEN);
}

#[test]
fn error_codes_round_trip_and_unknown_codes_survive() {
    for n in 0..=20u16 {
        assert_eq!(ErrorCode::from_u16(n).to_u16(), n);
    }
    assert_eq!(ErrorCode::PortInUse.as_str(), "port-in-use");
}

#[test]
fn overlong_text_is_cut_at_a_character_boundary_not_a_panic() {
    let long = "é".repeat(tabtunnel_proto::MAX_TEXT); // 2 bytes per character
    let wire = encode_to_bytes(&Frame::Error {
        code: ErrorCode::UnknownTarget,
        message: long.clone(),
    });
    let Ok(Frame::Error { message, .. }) = decode(wire) else {
        panic!("not an Error frame")
    };
    assert_eq!(message.len(), tabtunnel_proto::MAX_TEXT);
    assert!(long.starts_with(&message));
    let keys = vec!["SHA256:x".to_owned(); 100];
    let wire = encode_to_bytes(&Frame::Welcome {
        version: 1,
        pinned_host_keys: keys,
        resume: None,
        resumed: false,
    });
    let Ok(Frame::Welcome {
        pinned_host_keys, ..
    }) = decode(wire)
    else {
        panic!("not a Welcome")
    };
    assert_eq!(pinned_host_keys.len(), tabtunnel_proto::MAX_PINNED_KEYS);
}

#[test]
fn resume_secrets_are_none_or_32_bytes_and_flags_0_or_1() {
    // Hello: version 1, target "a", then the secret's length.
    let hello = |rest: &[u8]| {
        let mut wire = vec![1, 0, 0, 0, 0, 0, 1, 0, 1, b'a'];
        wire.extend_from_slice(rest);
        decode(Bytes::from(wire))
    };
    let err = hello(&[16]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadResumeLength {
            frame: "Hello",
            len: 16
        }
    );
    assert_eq!(
        err.to_string(),
        "Hello frame's resume secret is 16 bytes; it must be 0 (none) or 32"
    );
    assert_eq!(
        hello(&[]),
        Err(DecodeError::Truncated {
            frame: "Hello",
            field: "resume secret length"
        })
    );
    let mut short = vec![32];
    short.extend([9u8; 31]);
    assert_eq!(
        hello(&short),
        Err(DecodeError::Truncated {
            frame: "Hello",
            field: "resume secret"
        })
    );
    let mut whole = vec![32];
    whole.extend([9u8; 32]);
    whole.extend(b"tok");
    assert_eq!(
        hello(&whole),
        Ok(Frame::Hello {
            version: 1,
            target: "a".into(),
            token: "tok".into(),
            resume: Some(ResumeSecret([9; 32])),
        })
    );
    // Welcome: version 1, no keys, no secret, then the resumed flag.
    let welcome = |rest: &[u8]| {
        let mut wire = vec![2, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        wire.extend_from_slice(rest);
        decode(Bytes::from(wire))
    };
    let err = welcome(&[2]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Welcome frame's resumed flag is 2; it must be 0 or 1"
    );
    assert_eq!(
        welcome(&[]),
        Err(DecodeError::Truncated {
            frame: "Welcome",
            field: "resumed flag"
        })
    );
    assert_eq!(
        welcome(&[1, 0]),
        Err(DecodeError::TrailingBytes {
            frame: "Welcome",
            extra: 1
        })
    );
    // The secret never shows in logs.
    let debug = format!("{:?}", ResumeSecret([0xAB; 32]));
    assert!(!debug.contains("171") && !debug.contains("ab"), "{debug}");
}

#[test]
fn the_new_frames_of_version_5_refuse_what_they_cannot_mean() {
    // OpenFailed with a failure code that is not a SOCKS5 one.
    let err = decode(Bytes::from(vec![20, 0, 0, 0, 1, 9, b'x'])).unwrap_err();
    assert_eq!(err, DecodeError::UnknownFailure { number: 9 });
    assert_eq!(
        err.to_string(),
        "OpenFailed frame's failure is 9; it must be 1-6"
    );
    // ListenSocks: port, bind (u16 length), username and password (u8 lengths), nothing
    // after.
    let socks = |rest: &[u8]| {
        let mut wire = vec![16, 0, 0, 0, 1, 0x04, 0x38];
        wire.extend_from_slice(rest);
        decode(Bytes::from(wire))
    };
    assert_eq!(
        socks(&[0, 0, 1, b'u', 1, b'p']),
        Ok(Frame::ListenSocks {
            forward: 1,
            bind: String::new(),
            port: 1080,
            username: "u".into(),
            password: "p".into(),
        })
    );
    assert_eq!(
        socks(&[0, 0, 1, b'u']),
        Err(DecodeError::Truncated {
            frame: "ListenSocks",
            field: "password length"
        })
    );
    assert_eq!(
        socks(&[0, 0, 0, 0, 7]),
        Err(DecodeError::TrailingBytes {
            frame: "ListenSocks",
            extra: 1
        })
    );
    // A connection frame on stream 0 is refused, as for the others.
    assert_eq!(
        decode(Bytes::from(vec![19, 0, 0, 0, 0, 0, 0, 0, 1])),
        Err(DecodeError::ZeroStream { frame: "Dial" })
    );
    // Credentials longer than RFC 1929 allows are cut by the encoder (the tab refuses
    // them first), never wrapped around a one-byte length.
    let long = Frame::ListenSocks {
        forward: 1,
        bind: String::new(),
        port: 1,
        username: "u".repeat(300),
        password: "p".into(),
    };
    let Ok(Frame::ListenSocks { username, .. }) = decode(encode_to_bytes(&long)) else {
        panic!("a cut ListenSocks still decodes");
    };
    assert_eq!(username.len(), 255);
    // The password never shows in logs.
    let debug = format!(
        "{:?}",
        Frame::ListenSocks {
            forward: 1,
            bind: String::new(),
            port: 1,
            username: "ann".into(),
            password: "hunter2".into(),
        }
    );
    assert!(
        !debug.contains("hunter2") && debug.contains("ann"),
        "{debug}"
    );
}

#[test]
fn ssh_open_failures_map_to_socks_reasons() {
    let cases = [
        (1, "open failed", OpenFailure::NotAllowed),
        (2, "Connection refused", OpenFailure::Refused),
        (
            2,
            "connect failed: Connection timed out",
            OpenFailure::TimedOut,
        ),
        (2, "Network is unreachable", OpenFailure::NetworkUnreachable),
        (2, "No route to host", OpenFailure::HostUnreachable),
        (
            2,
            "getaddrinfo: Name or service not known",
            OpenFailure::HostUnreachable,
        ),
        (2, "something else", OpenFailure::General),
        (3, "unknown channel type", OpenFailure::General),
        (4, "resource shortage", OpenFailure::General),
    ];
    for (reason, description, want) in cases {
        assert_eq!(
            OpenFailure::from_ssh(reason, description),
            want,
            "{reason} {description:?}"
        );
    }
    for &failure in OpenFailure::ALL {
        assert_eq!(OpenFailure::from_u8(failure.number()), Some(failure));
    }
    assert_eq!(OpenFailure::from_u8(0), None);
    assert_eq!(OpenFailure::from_u8(7), None);
}
