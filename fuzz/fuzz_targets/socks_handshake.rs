//! The relay's SOCKS handshake (`tabtunnel_socks::Handshake`) on arbitrary client bytes.
//!
//! The first byte picks the forward's credentials (none, or a username and password)
//! and the second the size of the pieces the rest arrives in. Properties: it never
//! panics; it buffers at most `MAX_BUFFERED` bytes; a name it hands out is 1-255 bytes
//! without spaces or control characters; what it keeps after a request came in the
//! piece that completed it; once it ends, every later piece is refused with no reply;
//! and the same bytes fed whole give the same replies and the same outcome.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tabtunnel_socks::{
    Credentials, Handshake, HandshakeError, Host, MAX_BUFFERED, Progress, Refusal,
};

fuzz_target!(|input: &[u8]| {
    let [mode, size, client @ ..] = input else {
        return;
    };
    let credentials = || {
        if mode & 1 == 0 {
            Credentials::None
        } else {
            Credentials::Password {
                username: "alice".into(),
                password: "s3cret".into(),
            }
        }
    };
    let piece = usize::from(*size).max(1);
    let mut handshake = Handshake::new(credentials());
    let mut replies = Vec::new();
    let mut outcome = None;
    let mut used = 0;
    for chunk in client.chunks(piece) {
        let result = handshake.feed(chunk);
        assert!(handshake.buffered() <= MAX_BUFFERED);
        if outcome.is_some() {
            assert_eq!(
                result,
                Err(Refusal {
                    reply: vec![],
                    error: HandshakeError::Finished
                })
            );
            continue;
        }
        used += chunk.len();
        match result {
            Ok(Progress::More { reply }) => replies.extend(reply),
            Ok(Progress::Request {
                reply,
                request,
                rest,
            }) => {
                replies.extend(reply);
                assert!(rest.len() <= chunk.len());
                if let Host::Name(name) = &request.host {
                    assert!(!name.is_empty() && name.len() <= 255, "{name:?}");
                    assert!(!name.chars().any(|c| c.is_whitespace() || c.is_control()));
                }
                outcome = Some(Ok((request, used - rest.len())));
            }
            Err(refusal) => {
                replies.extend(refusal.reply);
                outcome = Some(Err(refusal.error));
            }
        }
    }

    // Fed whole (what the pieces held up to the end), the answers are the same.
    let Some(outcome) = outcome else { return };
    let mut whole = Handshake::new(credentials());
    let (reply, again) = match whole.feed(&client[..used]) {
        Ok(Progress::Request {
            reply,
            request,
            rest,
        }) => (reply, Ok((request, used - rest.len()))),
        Err(refusal) => (refusal.reply, Err(refusal.error)),
        Ok(Progress::More { .. }) => panic!("fed whole, {client:?} did not end"),
    };
    assert_eq!(reply, replies);
    assert_eq!(again, outcome);
});
