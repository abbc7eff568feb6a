//! Property tests: every frame round-trips; decoding arbitrary bytes never panics and
//! either fails cleanly or yields a frame that encodes back to the same bytes.

use bytes::Bytes;
use proptest::prelude::*;
use tabtunnel_proto::{
    ErrorCode, Frame, MAX_DATA, OpenFailure, RecvWindow, ResumeSecret, SendCredit, WindowBudget,
    decode, encode_to_bytes, frame_cost,
};

fn text() -> impl Strategy<Value = String> {
    // Up to 1024 bytes even with 4-byte characters: within MAX_TEXT.
    proptest::collection::vec(any::<char>(), 0..256).prop_map(|c| c.into_iter().collect())
}

fn credential() -> impl Strategy<Value = String> {
    // Up to 252 bytes even with 4-byte characters: within MAX_CREDENTIAL.
    proptest::collection::vec(any::<char>(), 0..64).prop_map(|c| c.into_iter().collect())
}

fn data() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..2048).prop_map(Bytes::from)
}

fn resume() -> impl Strategy<Value = Option<ResumeSecret>> {
    proptest::option::of(any::<[u8; 32]>().prop_map(ResumeSecret))
}

fn id() -> impl Strategy<Value = u32> {
    1..=u32::MAX
}

fn frame() -> impl Strategy<Value = Frame> {
    let code = any::<u16>().prop_map(ErrorCode::from_u16);
    prop_oneof![
        (
            any::<u16>(),
            text().prop_filter("target fits", |t| t.len() <= 1024),
            text(),
            resume()
        )
            .prop_map(|(version, target, token, resume)| Frame::Hello {
                version,
                target,
                token,
                resume
            }),
        (
            any::<u16>(),
            proptest::collection::vec(text(), 0..8),
            resume(),
            any::<bool>()
        )
            .prop_map(
                |(version, pinned_host_keys, resume, resumed)| Frame::Welcome {
                    version,
                    pinned_host_keys,
                    resume,
                    resumed
                }
            ),
        (code.clone(), text()).prop_map(|(code, message)| Frame::Error { code, message }),
        data().prop_map(Frame::Ssh),
        (id(), text(), any::<u16>()).prop_map(|(forward, bind, port)| Frame::Listen {
            forward,
            bind,
            port
        }),
        (id(), text()).prop_map(|(forward, address)| Frame::Listening { forward, address }),
        (id(), text()).prop_map(|(forward, url)| Frame::WebForward { forward, url }),
        (id(), code, text()).prop_map(|(forward, code, message)| Frame::ListenFailed {
            forward,
            code,
            message
        }),
        id().prop_map(|forward| Frame::Unlisten { forward }),
        (id(), any::<u32>(), text()).prop_map(|(conn, forward, peer)| Frame::Accept {
            conn,
            forward,
            peer
        }),
        (id(), data()).prop_map(|(conn, data)| Frame::Data { conn, data }),
        (id(), any::<u32>()).prop_map(|(conn, bytes)| Frame::Credit { conn, bytes }),
        id().prop_map(|conn| Frame::Eof { conn }),
        id().prop_map(|conn| Frame::Blocked { conn }),
        (id(), text()).prop_map(|(conn, reason)| Frame::Close { conn, reason }),
        (id(), text(), any::<u16>(), credential(), credential()).prop_map(
            |(forward, bind, port, username, password)| Frame::ListenSocks {
                forward,
                bind,
                port,
                username,
                password
            }
        ),
        (id(), any::<u32>(), text(), any::<u16>(), text()).prop_map(
            |(conn, forward, host, port, peer)| Frame::Connect {
                conn,
                forward,
                host,
                port,
                peer
            }
        ),
        (id(), text(), any::<u16>()).prop_map(|(forward, host, port)| Frame::RemoteForward {
            forward,
            host,
            port
        }),
        (id(), any::<u32>(), text()).prop_map(|(conn, forward, peer)| Frame::Dial {
            conn,
            forward,
            peer
        }),
        (id(), proptest::sample::select(OpenFailure::ALL), text()).prop_map(
            |(conn, failure, message)| Frame::OpenFailed {
                conn,
                failure,
                message
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_frame_round_trips(frame in frame()) {
        let wire = encode_to_bytes(&frame);
        prop_assert_eq!(decode(wire), Ok(frame));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..(MAX_DATA / 16))) {
        if let Ok(frame) = decode(Bytes::from(raw.clone())) {
            // What decodes must encode back to exactly the same message.
            prop_assert_eq!(&encode_to_bytes(&frame)[..], &raw[..]);
        }
    }

    #[test]
    fn decoding_mutated_frames_never_panics(frame in frame(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut raw = encode_to_bytes(&frame).to_vec();
        for (at, xor) in flips {
            let at = at % raw.len();
            raw[at] ^= xor;
        }
        let _ = decode(Bytes::from(raw));
    }
}

proptest! {
    // Each case is a whole exchange of up to 400 frames.
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the frame sizes and however slowly the receiver writes frames out, an
    /// honest sender never overruns the receiver's window, the receiver never holds more
    /// than its window of credit (frame overheads included), a window grows only within
    /// its largest size and its session's budget, and credit keeps flowing.
    #[test]
    fn an_honest_sender_never_overruns_and_never_stalls(
        base in (2 * (tabtunnel_proto::DATA_FRAME_OVERHEAD + 1))..=(1u32 << 20),
        growth in 0u32..4,
        budget in prop_oneof![Just(0u64), 0u64..(8 << 20)],
        steps in proptest::collection::vec((prop_oneof![1usize..=8, 1usize..=MAX_DATA], 0u8..4), 1..400),
    ) {
        let max = base.saturating_mul(1 << growth);
        let budget = WindowBudget::new(budget);
        let start = budget.left();
        let mut sender = SendCredit::new();
        let mut receiver = RecvWindow::growing(base, max);
        sender.grant(receiver.initial_grant()).unwrap();
        let mut queue = std::collections::VecDeque::new();
        let mut queued = 0u64; // the credit the queued frames cost
        for (want, drain) in steps {
            let sent = sender.take(want);
            if sent > 0 {
                prop_assert!(receiver.on_data(sent).is_ok());
                queue.push_back(sent);
                queued += frame_cost(sent);
            }
            if sender.ran_dry()
                && let Some(grant) = receiver.on_dry(&budget)
            {
                sender.grant(grant).unwrap();
            }
            prop_assert!(queued <= u64::from(receiver.window()));
            prop_assert!(receiver.window() >= base && receiver.window() <= max);
            prop_assert_eq!(budget.left() + receiver.growth(), start);
            // The receiver writes out 0 to 3 frames, or everything when the sender waits.
            let drain = if sent == 0 { queue.len() } else { usize::from(drain) };
            for _ in 0..drain {
                let Some(len) = queue.pop_front() else { break };
                queued -= frame_cost(len);
                if let Some(grant) = receiver.on_consumed(len, &budget) {
                    sender.grant(grant).unwrap();
                }
            }
            // With everything written out, the sender can always send again.
            if queue.is_empty() {
                prop_assert!(sender.available() > 0, "the sender waits for ever");
            }
        }
    }
}
