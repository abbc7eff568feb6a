use proptest::prelude::*;

use super::*;

fn open() -> Handshake {
    Handshake::new(Credentials::None)
}

fn with_password() -> Handshake {
    Handshake::new(Credentials::Password {
        username: "alice".into(),
        password: "s3cret".into(),
    })
}

fn more(reply: &[u8]) -> Result<Progress, Refusal> {
    Ok(Progress::More {
        reply: reply.to_vec(),
    })
}

fn request(version: Version, host: Host, port: u16) -> Request {
    Request {
        version,
        host,
        port,
    }
}

/// Feeds `input` whole and expects a request.
fn requested(mut handshake: Handshake, input: &[u8]) -> (Vec<u8>, Request, Vec<u8>) {
    match handshake.feed(input) {
        Ok(Progress::Request {
            reply,
            request,
            rest,
        }) => (reply, request, rest),
        other => panic!("{other:?}"),
    }
}

fn refused(mut handshake: Handshake, input: &[u8]) -> Refusal {
    match handshake.feed(input) {
        Err(refusal) => refusal,
        other => panic!("{other:?}"),
    }
}

fn socks5_connect(kind: u8, addr: &[u8], port: u16) -> Vec<u8> {
    let mut message = vec![5, 1, 0, kind];
    message.extend_from_slice(addr);
    message.extend_from_slice(&port.to_be_bytes());
    message
}

#[test]
fn socks5_no_auth_connect_to_each_address_type() {
    let mut handshake = open();
    assert_eq!(handshake.feed(&[5, 2, 0, 2]), more(&[5, 0]));
    assert_eq!(
        handshake.feed(&socks5_connect(1, &[10, 0, 0, 7], 22)),
        Ok(Progress::Request {
            reply: vec![],
            request: request(Version::Socks5, Host::V4([10, 0, 0, 7].into()), 22),
            rest: vec![],
        })
    );

    let mut v6 = vec![5, 1, 0];
    v6.extend(socks5_connect(4, &Ipv6Addr::LOCALHOST.octets(), 443));
    let (reply, req, _) = requested(open(), &v6);
    assert_eq!(reply, [5, 0]);
    assert_eq!(req.host, Host::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(req.host.to_string(), "::1", "no brackets: SSH names it so");

    let mut name = vec![5, 1, 0];
    name.extend(socks5_connect(3, b"\x09localhost", 8080));
    let (_, req, _) = requested(open(), &name);
    assert_eq!(
        req,
        request(Version::Socks5, Host::Name("localhost".into()), 8080),
        "a name stays a name: the SSH server resolves it"
    );
    assert_eq!(req.success_reply(), [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        req.failure_reply(OpenFailure::NotAllowed),
        [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(req.failure_reply(OpenFailure::Refused)[1], 5);
}

#[test]
fn bytes_after_the_request_are_kept_for_the_connection() {
    let mut input = vec![5, 1, 0];
    input.extend(socks5_connect(1, &[127, 0, 0, 1], 80));
    input.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    let (_, _, rest) = requested(open(), &input);
    assert_eq!(rest, b"GET / HTTP/1.0\r\n\r\n");
}

#[test]
fn any_split_of_the_input_gives_the_same_answers() {
    let mut input = vec![5, 1, 2];
    input.extend_from_slice(b"\x01\x05alice\x06s3cret");
    input.extend(socks5_connect(3, b"\x04mail", 25));
    input.extend_from_slice(b"HELO");
    for cut in 0..=input.len() {
        let mut handshake = with_password();
        let mut replies = Vec::new();
        let mut outcome = None;
        for part in [&input[..cut], &input[cut..]] {
            match handshake.feed(part).unwrap() {
                Progress::More { reply } => replies.extend(reply),
                Progress::Request {
                    reply,
                    request,
                    rest,
                } => {
                    replies.extend(reply);
                    outcome = Some((request, rest));
                    break;
                }
            }
        }
        assert_eq!(replies, [5, 2, 1, 0], "cut at {cut}");
        let (request, rest) = outcome.expect("a request");
        assert_eq!(request.host, Host::Name("mail".into()));
        if cut < input.len() - 4 {
            assert_eq!(rest, b"HELO", "cut at {cut}");
        }
    }
}

#[test]
fn a_password_forward_needs_the_right_username_and_password() {
    let mut handshake = with_password();
    assert_eq!(handshake.feed(&[5, 1, 2]), more(&[5, 2]));
    assert_eq!(handshake.feed(b"\x01\x05alice\x06s3cret"), more(&[1, 0]));

    for wrong in [
        &b"\x01\x05alice\x06s3creT"[..],
        b"\x01\x05alicx\x06s3cret",
        b"\x01\x04alic\x06s3cret",
        b"\x01\x05alice\x00",
        b"\x01\x00\x00",
    ] {
        let mut handshake = with_password();
        handshake.feed(&[5, 1, 2]).unwrap();
        let refusal = handshake.feed(wrong).unwrap_err();
        assert_eq!(refusal.reply, [1, 1], "{wrong:?}");
        assert_eq!(refusal.error, HandshakeError::WrongCredentials);
        assert_eq!(refusal.to_string(), "wrong SOCKS username or password");
    }

    // No authentication offered: refused with "no acceptable methods".
    let refusal = refused(with_password(), &[5, 1, 0]);
    assert_eq!(refusal.reply, [5, 0xFF]);
    assert!(
        refusal.to_string().contains("a username and password"),
        "{refusal}"
    );
    // SOCKS4 cannot give a password: refused at once.
    let refusal = refused(with_password(), &[4, 1, 0, 80, 127, 0, 0, 1, 0]);
    assert_eq!(refusal.reply, [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    assert_eq!(refusal.error, HandshakeError::Socks4NeedsCredentials);
    // An open forward does not take a password instead.
    let refusal = refused(open(), &[5, 1, 2]);
    assert_eq!(refusal.reply, [5, 0xFF]);
    assert_eq!(
        format!("{:?}", with_password().credentials),
        "Password { username: \"alice\", password: \"<redacted>\" }"
    );
}

#[test]
fn socks4_and_4a() {
    let (reply, req, rest) = requested(open(), b"\x04\x01\x00\x50\x7f\x00\x00\x01bob\x00tail");
    assert!(reply.is_empty());
    assert_eq!(
        req,
        request(Version::Socks4, Host::V4(Ipv4Addr::LOCALHOST), 80)
    );
    assert_eq!(rest, b"tail");
    assert_eq!(req.success_reply(), [0, 0x5A, 0, 0, 0, 0, 0, 0]);
    for failure in OpenFailure::ALL {
        assert_eq!(req.failure_reply(*failure), [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    }

    let (_, req, rest) = requested(
        open(),
        b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00example.org\x00",
    );
    assert_eq!(
        req,
        request(Version::Socks4, Host::Name("example.org".into()), 443)
    );
    assert!(rest.is_empty());
    // 0.0.0.0 is not the 4a marker.
    let (_, req, _) = requested(open(), b"\x04\x01\x00\x50\x00\x00\x00\x00\x00");
    assert_eq!(req.host, Host::V4(Ipv4Addr::UNSPECIFIED));
}

#[test]
fn malformed_input_gets_its_protocols_error_reply() {
    let general = [5, 1, 0, 1, 0, 0, 0, 0, 0, 0];
    let cases: Vec<(Vec<u8>, Vec<u8>, HandshakeError)> = vec![
        (
            b"GET / HTTP/1.1\r\n".to_vec(),
            vec![],
            HandshakeError::UnknownVersion(b'G'),
        ),
        (vec![5, 0], vec![5, 0xFF], HandshakeError::NoMethods),
        (
            vec![5, 1, 0, 4, 1, 0, 1],
            [vec![5, 0], general.to_vec()].concat(),
            HandshakeError::RequestVersion(4),
        ),
        (
            vec![5, 1, 0, 5, 2, 0, 1],
            vec![5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0],
            HandshakeError::UnsupportedCommand(2),
        ),
        (
            vec![5, 1, 0, 5, 1, 9, 1],
            [vec![5, 0], general.to_vec()].concat(),
            HandshakeError::Reserved(9),
        ),
        (
            vec![5, 1, 0, 5, 1, 0, 2],
            vec![5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0],
            HandshakeError::UnsupportedAddressType(2),
        ),
        (
            vec![5, 1, 0, 5, 1, 0, 3, 0, 0, 80],
            [vec![5, 0], general.to_vec()].concat(),
            HandshakeError::EmptyName,
        ),
        (
            [
                vec![5, 1, 0, 5, 1, 0, 3, 5],
                b"a b\nc".to_vec(),
                vec![0, 80],
            ]
            .concat(),
            [vec![5, 0], general.to_vec()].concat(),
            HandshakeError::BadName,
        ),
        (
            [vec![5, 1, 0, 5, 1, 0, 3, 2], vec![0xC3, 0x28], vec![0, 80]].concat(),
            [vec![5, 0], general.to_vec()].concat(),
            HandshakeError::BadName,
        ),
        (
            vec![4, 2, 0, 80, 1, 2, 3, 4, 0],
            vec![0, 0x5B, 0, 0, 0, 0, 0, 0],
            HandshakeError::UnsupportedCommand(2),
        ),
        (
            [vec![4, 1, 0, 80, 1, 2, 3, 4], vec![b'u'; 256]].concat(),
            vec![0, 0x5B, 0, 0, 0, 0, 0, 0],
            HandshakeError::FieldTooLong("user id"),
        ),
        (
            [vec![4, 1, 0, 80, 0, 0, 0, 1, 0], vec![b'n'; 300]].concat(),
            vec![0, 0x5B, 0, 0, 0, 0, 0, 0],
            HandshakeError::FieldTooLong("name"),
        ),
        (
            vec![4, 1, 0, 80, 0, 0, 0, 1, 0, 0],
            vec![0, 0x5B, 0, 0, 0, 0, 0, 0],
            HandshakeError::EmptyName,
        ),
    ];
    for (input, reply, error) in cases {
        let refusal = refused(open(), &input);
        assert_eq!(refusal.reply, reply, "{input:?}");
        assert_eq!(refusal.error, error, "{input:?}");
    }
}

#[test]
fn a_handshake_ends_once() {
    let mut handshake = open();
    handshake.feed(&[7]).unwrap_err();
    let again = handshake.feed(&[5, 1, 0]).unwrap_err();
    assert_eq!(again.error, HandshakeError::Finished);
    assert!(again.reply.is_empty());

    let mut handshake = open();
    handshake
        .feed(&[4, 1, 0, 80, 127, 0, 0, 1, 0])
        .expect("a request");
    assert_eq!(
        handshake.feed(b"more").unwrap_err().error,
        HandshakeError::Finished
    );
}

#[test]
fn the_buffer_is_bounded() {
    // A SOCKS5 name of 255 bytes arrives a byte at a time: fine.
    let mut input = vec![5, 1, 0, 5, 1, 0, 3, 255];
    input.extend(vec![b'a'; 255]);
    input.extend([0, 80]);
    let mut handshake = open();
    let mut answer = None;
    for byte in &input {
        if let Progress::Request { request, .. } = handshake.feed(&[*byte]).unwrap() {
            answer = Some(request);
        }
    }
    assert_eq!(answer.unwrap().host, Host::Name("a".repeat(255)));
}

proptest! {
    /// Whatever a client sends, in whatever pieces: no panic, the buffer stays bounded,
    /// and once the handshake ends every later feed is refused with no reply.
    #[test]
    fn any_input_is_answered_within_bounds(
        password in any::<bool>(),
        pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..READ_CHUNK), 0..8),
    ) {
        let mut handshake = if password { with_password() } else { open() };
        let mut ended = false;
        for piece in pieces {
            let result = handshake.feed(&piece);
            prop_assert!(handshake.buffer.len() <= MAX_BUFFERED);
            if ended {
                prop_assert_eq!(result, Err(Refusal { reply: vec![], error: HandshakeError::Finished }));
                continue;
            }
            match result {
                Ok(Progress::More { reply }) => prop_assert!(reply.len() <= 4),
                Ok(Progress::Request { request, rest, .. }) => {
                    prop_assert!(rest.len() <= piece.len());
                    if let Host::Name(name) = &request.host {
                        prop_assert!(!name.is_empty() && name.len() <= 255);
                    }
                    ended = true;
                }
                Err(_) => ended = true,
            }
        }
    }
}
