//! The mux over an in-memory transport: the test plays the relay with hand-made
//! frames. Stops at stream 0's bytes (russh's handshake needs a real SSH server).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc as chan;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tabtunnel_proto::{ErrorCode, Frame, VERSION, decode, encode_to_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Opened, open};
use crate::end::Ended;
use crate::error::ClientError;
use crate::kind::ForwardKind;
use crate::spec::parse_forward;
use crate::transport::TransportError;

/// Every wait in these tests is bounded by this.
const DEADLINE: Duration = Duration::from_secs(5);

/// The tab's end of an in-memory WebSocket.
struct MemoryTransport {
    incoming: chan::UnboundedReceiver<Result<Bytes, TransportError>>,
    outgoing: chan::UnboundedSender<Bytes>,
}

impl Stream for MemoryTransport {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_next_unpin(cx)
    }
}

impl Sink<Bytes> for MemoryTransport {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outgoing.poll_ready_unpin(cx).map_err(gone)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), Self::Error> {
        self.outgoing.start_send_unpin(item).map_err(gone)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outgoing.poll_flush_unpin(cx).map_err(gone)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outgoing.poll_close_unpin(cx).map_err(gone)
    }
}

fn gone(_: chan::SendError) -> TransportError {
    TransportError("the in-memory relay is gone".into())
}

/// The relay's end, played by the test.
struct FakeRelay {
    to_tab: chan::UnboundedSender<Result<Bytes, TransportError>>,
    from_tab: chan::UnboundedReceiver<Bytes>,
}

impl FakeRelay {
    fn send(&self, frame: Frame) {
        self.to_tab
            .unbounded_send(Ok(encode_to_bytes(&frame)))
            .expect("the tab's transport is open");
    }

    /// The next frame from the tab; `None` when the tab closed the transport.
    async fn recv(&mut self) -> Option<Frame> {
        let message = tokio::time::timeout(DEADLINE, self.from_tab.next())
            .await
            .expect("the tab sent nothing in time")?;
        Some(decode(message).expect("the tab sends valid frames"))
    }

    /// Waits until the tab closes the transport, skipping what it still sends.
    async fn closed_by_tab(&mut self) {
        for _ in 0..64 {
            if self.recv().await.is_none() {
                return;
            }
        }
        panic!("the tab kept sending and never closed the transport");
    }
}

fn memory_pair() -> (MemoryTransport, FakeRelay) {
    let (to_tab, incoming) = chan::unbounded();
    let (outgoing, from_tab) = chan::unbounded();
    (
        MemoryTransport { incoming, outgoing },
        FakeRelay { to_tab, from_tab },
    )
}

fn hello() -> Frame {
    Frame::Hello {
        version: VERSION,
        target: "lab".into(),
        token: "secret".into(),
        resume: None,
    }
}

/// Opens a mux and answers its Hello as `answer` says.
async fn open_with(answer: Frame) -> (Result<Opened, ClientError>, FakeRelay) {
    let (transport, mut relay) = memory_pair();
    let opening = tokio::spawn(open(transport, hello()));
    assert_eq!(relay.recv().await, Some(hello()));
    relay.send(answer);
    let opened = tokio::time::timeout(DEADLINE, opening)
        .await
        .expect("open answered in time")
        .expect("open did not panic");
    (opened, relay)
}

/// A mux the relay welcomed, with no pinned keys.
async fn welcomed() -> (Opened, FakeRelay) {
    let (opened, relay) = open_with(Frame::Welcome {
        version: VERSION,
        pinned_host_keys: Vec::new(),
        resume: None,
        resumed: false,
    })
    .await;
    (opened.expect("welcomed"), relay)
}

async fn ended(opened: &Opened) -> Ended {
    tokio::time::timeout(DEADLINE, opened.owner.end().wait())
        .await
        .expect("the session ended in time")
}

#[tokio::test]
async fn hello_then_welcome_opens_with_the_relays_pins() {
    let pins = vec!["SHA256:abc".to_owned()];
    let (opened, _relay) = open_with(Frame::Welcome {
        version: VERSION,
        pinned_host_keys: pins.clone(),
        resume: None,
        resumed: false,
    })
    .await;
    let opened = opened.expect("welcomed");
    assert_eq!(opened.pinned, pins);
    assert_eq!(opened.owner.end().ended(), None);
}

#[tokio::test]
async fn a_welcome_of_another_version_is_refused_and_the_transport_closes() {
    let (opened, mut relay) = open_with(Frame::Welcome {
        version: VERSION + 1,
        pinned_host_keys: Vec::new(),
        resume: None,
        resumed: false,
    })
    .await;
    let Err(err) = opened else {
        panic!("another version was welcomed")
    };
    assert_eq!(err.code(), "protocol");
    assert_eq!(
        err.to_string(),
        format!(
            "protocol error: the relay speaks protocol version {}, this page {VERSION}: reload the page",
            VERSION + 1
        )
    );
    relay.closed_by_tab().await;
}

#[tokio::test]
async fn an_error_instead_of_a_welcome_is_the_relays_refusal() {
    let (opened, mut relay) = open_with(Frame::Error {
        code: ErrorCode::Unauthorized,
        message: "this relay needs an access token".into(),
    })
    .await;
    let Err(ClientError::Relay { code, message }) = opened else {
        panic!("not the relay's refusal: {:?}", opened.map(|_| ()))
    };
    assert_eq!(code, ErrorCode::Unauthorized);
    assert_eq!(message, "this relay needs an access token");
    relay.closed_by_tab().await;
}

#[tokio::test]
async fn any_other_first_answer_is_a_protocol_error() {
    let (opened, _relay) = open_with(Frame::Ssh(Bytes::from_static(b"SSH-2.0-x\r\n"))).await;
    let Err(err) = opened else {
        panic!("opened without a Welcome")
    };
    assert_eq!(err.to_string(), "protocol error: expected Welcome, got Ssh");
}

#[tokio::test]
async fn an_error_frame_ends_the_session_with_its_code_and_message() {
    let (opened, mut relay) = welcomed().await;
    relay.send(Frame::Error {
        code: ErrorCode::SshClosed,
        message: "the SSH server closed the connection".into(),
    });
    assert_eq!(
        ended(&opened).await,
        Ended {
            reason: "the SSH server closed the connection".into(),
            code: Some(ErrorCode::SshClosed),
        }
    );
    // The writer closes the transport when the session ends.
    relay.closed_by_tab().await;
    assert_eq!(
        opened.owner.closed_error().to_string(),
        "the session is closed: the SSH server closed the connection"
    );
}

#[tokio::test]
async fn frames_for_connections_never_opened_end_the_session() {
    let cases = [
        (
            Frame::Data {
                conn: 7,
                data: Bytes::from_static(b"x"),
            },
            "Data",
        ),
        (Frame::Credit { conn: 7, bytes: 10 }, "Credit"),
        (Frame::Eof { conn: 7 }, "Eof"),
        (
            Frame::Close {
                conn: 7,
                reason: String::new(),
            },
            "Close",
        ),
    ];
    for (frame, name) in cases {
        let (opened, mut relay) = welcomed().await;
        relay.send(frame);
        let end = ended(&opened).await;
        assert_eq!(
            end.reason,
            format!(
                "protocol error: the relay sent a {name} frame for connection 7, which it never opened"
            )
        );
        assert_eq!(end.code, None);
        relay.closed_by_tab().await;
    }
}

#[tokio::test]
async fn a_frame_only_the_tab_may_send_ends_the_session() {
    let (opened, relay) = welcomed().await;
    relay.send(Frame::Unlisten { forward: 1 });
    assert_eq!(
        ended(&opened).await.reason,
        "protocol error: the relay sent a Unlisten frame, which only the tab may send"
    );
}

#[tokio::test]
async fn the_end_keeps_the_first_reason() {
    let (opened, relay) = welcomed().await;
    relay.send(Frame::Error {
        code: ErrorCode::Idle,
        message: "idle".into(),
    });
    let first = ended(&opened).await;
    // Later endings, the transport's included, change nothing.
    assert!(!opened.owner.end().end("later", None));
    drop(relay);
    tokio::task::yield_now().await;
    assert_eq!(opened.owner.end().ended(), Some(first));
}

#[tokio::test]
async fn the_relay_closing_the_transport_ends_the_session() {
    let (opened, relay) = welcomed().await;
    drop(relay.to_tab);
    assert_eq!(
        ended(&opened).await,
        Ended {
            reason: "the relay closed the connection".into(),
            code: None,
        }
    );
}

#[tokio::test]
async fn a_transport_error_ends_the_session_with_its_words() {
    let (opened, relay) = welcomed().await;
    relay
        .to_tab
        .unbounded_send(Err(TransportError(
            "the relay went away (code 1011)".into(),
        )))
        .expect("open");
    assert_eq!(
        ended(&opened).await.reason,
        "the relay went away (code 1011)"
    );
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_transport() {
    let (opened, mut relay) = welcomed().await;
    let Opened {
        owner, ssh_stream, ..
    } = opened;
    let second = owner.clone();
    let end = owner.end().clone();
    drop(owner);
    // Another handle still holds the session.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), relay.from_tab.next())
            .await
            .is_err(),
        "the transport closed while a handle was left"
    );
    drop(second);
    relay.closed_by_tab().await;
    // The relay then closes its side, and the session ends with the transport's words.
    drop(relay);
    let ending = tokio::time::timeout(DEADLINE, end.wait())
        .await
        .expect("ended");
    assert_eq!(ending.reason, "the relay closed the connection");
    drop(ssh_stream);
}

#[tokio::test]
async fn stream_0_carries_ssh_bytes_both_ways() {
    let (opened, mut relay) = welcomed().await;
    let mut ssh = opened.ssh_stream;
    relay.send(Frame::Ssh(Bytes::from_static(b"SSH-2.0-relayed\r\n")));
    let mut banner = [0u8; 17];
    tokio::time::timeout(DEADLINE, ssh.read_exact(&mut banner))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&banner, b"SSH-2.0-relayed\r\n");
    assert_eq!(
        opened
            .owner
            .ssh_frames()
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    ssh.write_all(b"SSH-2.0-tab\r\n").await.expect("write");
    assert_eq!(
        relay.recv().await,
        Some(Frame::Ssh(Bytes::from_static(b"SSH-2.0-tab\r\n")))
    );
    // When the session ends, russh's side of the pipe reaches its end.
    relay.send(Frame::Error {
        code: ErrorCode::Internal,
        message: "bye".into(),
    });
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, ssh.read_to_end(&mut rest))
        .await
        .expect("the pipe ended in time")
        .expect("read");
    assert!(rest.is_empty());
}

/// Opens forward 1 on a welcomed mux, as the relay answers it.
async fn listening(
    opened: &Opened,
    relay: &mut FakeRelay,
) -> (u32, String, Arc<crate::stats::ForwardStats>) {
    let spec = Arc::new(ForwardKind::Local(
        parse_forward("127.0.0.1:0:db.internal:5432").expect("spec"),
    ));
    let owner = opened.owner.clone();
    let listen = tokio::spawn(async move { owner.listen(spec).await });
    assert_eq!(
        relay.recv().await,
        Some(Frame::Listen {
            forward: 1,
            bind: "127.0.0.1".into(),
            port: 0,
        })
    );
    relay.send(Frame::Listening {
        forward: 1,
        address: "127.0.0.1:10080".into(),
    });
    let (id, listened) = tokio::time::timeout(DEADLINE, listen)
        .await
        .expect("in time")
        .expect("no panic")
        .expect("listening");
    assert_eq!(listened.web_url, None, "the relay sent no WebForward");
    (id, listened.address, listened.stats)
}

#[tokio::test]
async fn a_web_forwards_url_comes_with_its_listening() {
    let (opened, mut relay) = welcomed().await;
    let spec = Arc::new(ForwardKind::Local(
        parse_forward("0:localhost:8888").expect("spec"),
    ));
    let owner = opened.owner.clone();
    let listen = tokio::spawn(async move { owner.listen(spec).await });
    assert!(matches!(
        relay.recv().await,
        Some(Frame::Listen { forward: 1, .. })
    ));
    // A WebForward for a forward nobody asked for is stale and ignored.
    relay.send(Frame::WebForward {
        forward: 7,
        url: "http://f-7/".into(),
    });
    let url = "https://f-0123456789abcdef.tunnel.example.edu/?tabtunnel_key=00";
    relay.send(Frame::WebForward {
        forward: 1,
        url: url.into(),
    });
    relay.send(Frame::Listening {
        forward: 1,
        address: "127.0.0.1:10080".into(),
    });
    let (id, listened) = tokio::time::timeout(DEADLINE, listen)
        .await
        .expect("in time")
        .expect("no panic")
        .expect("listening");
    assert_eq!((id, listened.web_url.as_deref()), (1, Some(url)));
    assert_eq!(listened.address, "127.0.0.1:10080");
}

#[tokio::test]
async fn a_forward_listens_accepts_and_closes_through_the_mux() {
    let (mut opened, mut relay) = welcomed().await;
    let (forward, address, stats) = listening(&opened, &mut relay).await;
    assert_eq!((forward, address.as_str()), (1, "127.0.0.1:10080"));

    relay.send(Frame::Accept {
        conn: 1,
        forward: 1,
        peer: "127.0.0.1:5555".into(),
    });
    let mut accepted = tokio::time::timeout(DEADLINE, opened.accepted.recv())
        .await
        .expect("in time")
        .expect("accepted");
    assert_eq!(
        (accepted.conn, accepted.peer.as_str()),
        (1, "127.0.0.1:5555")
    );
    assert_eq!(accepted.host, "db.internal");
    assert!(Arc::ptr_eq(&accepted.stats, &stats));

    // The relay's bytes reach the connection's input, in order.
    relay.send(Frame::Data {
        conn: 1,
        data: Bytes::from_static(b"hello"),
    });
    relay.send(Frame::Eof { conn: 1 });
    let Some(super::ConnInput::Data(data)) = accepted.input.recv().await else {
        panic!("no data")
    };
    assert_eq!(&data[..], b"hello");
    assert!(matches!(
        accepted.input.recv().await,
        Some(super::ConnInput::Eof)
    ));

    // A refused client of a live forward is counted; the forward stays.
    relay.send(Frame::ListenFailed {
        forward: 1,
        code: ErrorCode::SourceNotAllowed,
        message: "10.0.0.9 is not an allowed source".into(),
    });
    relay.send(Frame::Credit { conn: 1, bytes: 1 }); // a round trip through the demux
    for _ in 0..100 {
        if stats.snapshot().failures == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.failures, 1);
    assert_eq!(
        snapshot.last_error.as_deref(),
        Some("10.0.0.9 is not an allowed source")
    );

    // Closing the forward drops its connections (their pumps stop) and tells the relay.
    opened.owner.close_forward(1).await.expect("closed");
    assert_eq!(relay.recv().await, Some(Frame::Unlisten { forward: 1 }));
    tokio::time::timeout(DEADLINE, &mut accepted.abort)
        .await
        .expect("the connection was dropped in time")
        .expect_err("dropped, not signalled");
    // The connection is forgotten: the pump must not tell the relay again, and frames
    // still on the wire for it are ignored.
    assert!(!opened.owner.forget_conn(1));
    relay.send(Frame::Credit { conn: 1, bytes: 1 });
    relay.send(Frame::Close {
        conn: 1,
        reason: "reset".into(),
    });
    // Closing again is a no-op.
    opened.owner.close_forward(1).await.expect("no-op");
    relay.send(Frame::Error {
        code: ErrorCode::Internal,
        message: "done".into(),
    });
    assert_eq!(ended(&opened).await.reason, "done");
}

#[tokio::test]
async fn a_connection_the_pump_forgets_is_forgotten_once() {
    let (opened, relay, accepted) = with_connection(3).await;
    assert!(opened.owner.forget_conn(accepted.conn));
    assert!(!opened.owner.forget_conn(accepted.conn));
    // A reused id is a protocol error, even for a forgotten connection.
    relay.send(Frame::Accept {
        conn: 3,
        forward: 1,
        peer: "127.0.0.1:5556".into(),
    });
    assert_eq!(
        ended(&opened).await.reason,
        "protocol error: the relay reused connection id 3"
    );
}

#[tokio::test]
async fn a_refused_listen_answers_its_caller_with_the_relays_code() {
    let (opened, mut relay) = welcomed().await;
    let spec = Arc::new(ForwardKind::Local(
        parse_forward("10080:localhost:22").expect("spec"),
    ));
    let owner = opened.owner.clone();
    let listen = tokio::spawn(async move { owner.listen(spec).await });
    let Some(Frame::Listen { forward, .. }) = relay.recv().await else {
        panic!("no Listen")
    };
    relay.send(Frame::ListenFailed {
        forward,
        code: ErrorCode::PortInUse,
        message: "port 10080 is in use".into(),
    });
    let result = tokio::time::timeout(DEADLINE, listen)
        .await
        .expect("in time")
        .expect("no panic");
    let Err(ClientError::Relay { code, message }) = result else {
        panic!("not refused")
    };
    assert_eq!(code, ErrorCode::PortInUse);
    assert_eq!(message, "port 10080 is in use");
}

#[tokio::test]
async fn a_listen_waiting_when_the_session_ends_fails_with_the_reason() {
    let (opened, mut relay) = welcomed().await;
    let spec = Arc::new(ForwardKind::Local(
        parse_forward("10080:localhost:22").expect("spec"),
    ));
    let owner = opened.owner.clone();
    let listen = tokio::spawn(async move { owner.listen(spec).await });
    assert!(matches!(relay.recv().await, Some(Frame::Listen { .. })));
    relay.send(Frame::Error {
        code: ErrorCode::ShuttingDown,
        message: "the relay is shutting down".into(),
    });
    let result = tokio::time::timeout(DEADLINE, listen)
        .await
        .expect("in time")
        .expect("no panic");
    assert_eq!(
        result.map(|_| ()).unwrap_err().to_string(),
        "the session is closed: the relay is shutting down"
    );
}

/// A welcomed mux with forward 1 listening and connection `conn` accepted on it.
async fn with_connection(conn: u32) -> (Opened, FakeRelay, super::Accepted) {
    let (mut opened, mut relay) = welcomed().await;
    listening(&opened, &mut relay).await;
    relay.send(Frame::Accept {
        conn,
        forward: 1,
        peer: "127.0.0.1:5555".into(),
    });
    let accepted = tokio::time::timeout(DEADLINE, opened.accepted.recv())
        .await
        .expect("in time")
        .expect("accepted");
    (opened, relay, accepted)
}

#[tokio::test]
async fn an_orderly_close_comes_after_what_was_queued_and_an_aborting_one_stops_at_once() {
    let (opened, relay, mut first) = with_connection(1).await;
    relay.send(Frame::Data {
        conn: 1,
        data: Bytes::from_static(b"last words"),
    });
    relay.send(Frame::Close {
        conn: 1,
        reason: String::new(),
    });
    assert!(matches!(
        first.input.recv().await,
        Some(super::ConnInput::Data(_))
    ));
    let Some(super::ConnInput::Close(guard)) = first.input.recv().await else {
        panic!("no orderly Close")
    };
    // The abort guard travels with the Close, so the pump stops only once it is done.
    assert!(first.abort.try_recv().expect("not dropped").is_none());
    drop(guard);

    relay.send(Frame::Accept {
        conn: 2,
        forward: 1,
        peer: "127.0.0.1:5556".into(),
    });
    let mut opened = opened;
    let mut second = tokio::time::timeout(DEADLINE, opened.accepted.recv())
        .await
        .expect("in time")
        .expect("accepted");
    relay.send(Frame::Close {
        conn: 2,
        reason: "the TCP client reset the connection".into(),
    });
    tokio::time::timeout(DEADLINE, &mut second.abort)
        .await
        .expect("aborted in time")
        .expect_err("aborted by dropping the guard");
    // Both are forgotten: the pumps must not send Close.
    assert!(!opened.owner.forget_conn(1));
    assert!(!opened.owner.forget_conn(2));
    assert_eq!(opened.owner.end().ended(), None);
}

#[tokio::test]
async fn a_connection_rule_the_relay_breaks_ends_the_session() {
    let (opened, relay, _accepted) = with_connection(4).await;
    relay.send(Frame::Eof { conn: 4 });
    relay.send(Frame::Eof { conn: 4 });
    assert_eq!(
        ended(&opened).await.reason,
        "protocol error: connection 4: the relay sent a second Eof"
    );
}

#[tokio::test]
async fn a_blocked_relay_whose_data_was_written_out_gets_a_window_twice_as_large() {
    use tabtunnel_proto::{CONNECTION_WINDOW, DATA_FRAME_OVERHEAD};
    let (opened, mut relay, mut accepted) = with_connection(3).await;
    // The relay spends the tab's whole window; the pump writes it all out, returning
    // credit as the pump does.
    let len = CONNECTION_WINDOW as usize / 4 - DATA_FRAME_OVERHEAD as usize;
    for _ in 0..4 {
        relay.send(Frame::Data {
            conn: 3,
            data: Bytes::from(vec![0u8; len]),
        });
    }
    for _ in 0..4 {
        let item = tokio::time::timeout(DEADLINE, accepted.input.recv()).await;
        assert!(matches!(item, Ok(Some(super::ConnInput::Data(_)))));
        if let Some(bytes) = accepted.flow.consumed(len) {
            opened.owner.mux().grant(3, bytes);
        }
    }
    relay.send(Frame::Blocked { conn: 3 });
    // The refills (one window) and the growth (another) come back as Credit.
    let mut granted = 0u64;
    while granted < 2 * u64::from(CONNECTION_WINDOW) {
        match relay.recv().await {
            Some(Frame::Credit { conn: 3, bytes }) => granted += u64::from(bytes),
            other => panic!("expected Credit, got {other:?}"),
        }
    }
    assert_eq!(granted, 2 * u64::from(CONNECTION_WINDOW));
    assert_eq!(accepted.flow.window(), 2 * CONNECTION_WINDOW);
}

/// Opens dynamic forward 1 (with a SOCKS login) on a welcomed mux.
async fn listening_socks(opened: &Opened, relay: &mut FakeRelay) {
    let kind = Arc::new(ForwardKind::Dynamic {
        spec: crate::spec::parse_dynamic("0").expect("spec"),
        login: Some(crate::kind::SocksLogin {
            username: "alice".into(),
            password: "s3cret".into(),
        }),
    });
    let owner = opened.owner.clone();
    let listen = tokio::spawn(async move { owner.listen(kind).await });
    assert_eq!(
        relay.recv().await,
        Some(Frame::ListenSocks {
            forward: 1,
            bind: String::new(),
            port: 0,
            username: "alice".into(),
            password: "s3cret".into(),
        })
    );
    relay.send(Frame::Listening {
        forward: 1,
        address: "127.0.0.1:1080".into(),
    });
    tokio::time::timeout(DEADLINE, listen)
        .await
        .expect("in time")
        .expect("no panic")
        .expect("listening");
}

#[tokio::test]
async fn a_dynamic_forwards_connect_goes_where_its_client_asked() {
    let (mut opened, mut relay) = welcomed().await;
    listening_socks(&opened, &mut relay).await;
    relay.send(Frame::Connect {
        conn: 1,
        forward: 1,
        host: "intranet.example".into(),
        port: 8443,
        peer: "127.0.0.1:5555".into(),
    });
    let accepted = tokio::time::timeout(DEADLINE, opened.accepted.recv())
        .await
        .expect("in time")
        .expect("accepted");
    assert_eq!(
        (accepted.host.as_str(), accepted.port, accepted.socks),
        ("intranet.example", 8443, true)
    );
    // A dynamic forward takes no Accept: the relay broke the protocol.
    relay.send(Frame::Accept {
        conn: 2,
        forward: 1,
        peer: "127.0.0.1:5556".into(),
    });
    let end = ended(&opened).await;
    assert!(
        end.reason
            .contains("Accept for forward 1, a dynamic forward"),
        "{}",
        end.reason
    );
}

#[tokio::test]
async fn a_local_forward_takes_no_connect_and_the_relay_refuses_none_of_its_own() {
    let (opened, mut relay) = welcomed().await;
    listening(&opened, &mut relay).await;
    relay.send(Frame::Connect {
        conn: 1,
        forward: 1,
        host: "elsewhere".into(),
        port: 1,
        peer: "127.0.0.1:5555".into(),
    });
    let end = ended(&opened).await;
    assert!(end.reason.contains("a local forward"), "{}", end.reason);

    // OpenFailed from the relay is for connections the tab opened (-R) only.
    let (opened, mut relay) = welcomed().await;
    listening(&opened, &mut relay).await;
    relay.send(Frame::Accept {
        conn: 1,
        forward: 1,
        peer: "127.0.0.1:5555".into(),
    });
    relay.send(Frame::OpenFailed {
        conn: 1,
        failure: tabtunnel_proto::OpenFailure::Refused,
        message: String::new(),
    });
    let end = ended(&opened).await;
    assert!(end.reason.contains("OpenFailed"), "{}", end.reason);
}

/// Opens remote forward `-R spec` on the relay's side, as forward 1 or the next.
async fn remote_listening(opened: &Opened, relay: &mut FakeRelay, spec: &str) -> u32 {
    let kind = Arc::new(ForwardKind::Remote(
        crate::spec::parse_remote(spec).expect("spec"),
    ));
    let owner = opened.owner.clone();
    let listen = tokio::spawn(async move { owner.listen(kind).await });
    let Some(Frame::RemoteForward { forward, .. }) = relay.recv().await else {
        panic!("expected RemoteForward");
    };
    relay.send(Frame::Listening {
        forward,
        address: "127.0.0.1:3000".into(),
    });
    let (id, _) = tokio::time::timeout(DEADLINE, listen)
        .await
        .expect("in time")
        .expect("no panic")
        .expect("listening");
    id
}

#[tokio::test]
async fn a_forwarded_connection_finds_its_remote_forward_by_where_the_server_listens() {
    let (opened, mut relay) = welcomed().await;
    let owner = &opened.owner;
    let first = remote_listening(&opened, &mut relay, "8080:127.0.0.1:3000").await;
    let second = remote_listening(&opened, &mut relay, "10.0.0.1:8080:127.0.0.1:3000").await;
    let third = remote_listening(&opened, &mut relay, "0:127.0.0.1:3000").await;
    owner.sshd_listening(first, "localhost".into(), 8080);
    owner.sshd_listening(second, "10.0.0.1".into(), 8080);
    owner.sshd_listening(third, "localhost".into(), 41234);
    let found = |address: &str, port| owner.sshd_forward(address, port).map(|(f, _, _)| f);
    assert_eq!(found("localhost", 8080), Some(first));
    assert_eq!(found("10.0.0.1", 8080), Some(second));
    // Reported in another form: the one forward on that port, if there is only one.
    assert_eq!(found("127.0.0.1", 41234), Some(third));
    assert_eq!(found("127.0.0.1", 8080), None, "two listen on 8080");
    assert_eq!(found("localhost", 9999), None);
    // A closed forward takes no more connections.
    owner.close_forward(third).await.unwrap();
    assert_eq!(found("localhost", 41234), None);
}

#[tokio::test]
async fn a_dial_opens_an_id_in_the_tabs_half_and_a_refusal_reaches_its_pump() {
    let (opened, mut relay) = welcomed().await;
    let forward = remote_listening(&opened, &mut relay, "8080:127.0.0.1:3000").await;
    let mut dialled = opened
        .owner
        .dial(forward, "127.0.0.1:5555".into())
        .await
        .unwrap();
    let conn = dialled.conn;
    assert_eq!(conn, tabtunnel_proto::TAB_OPENED + 1);
    assert_eq!(
        relay.recv().await,
        Some(Frame::Dial {
            conn,
            forward,
            peer: "127.0.0.1:5555".into()
        })
    );
    assert_eq!(
        relay.recv().await,
        Some(Frame::Credit {
            conn,
            bytes: tabtunnel_proto::CONNECTION_WINDOW
        })
    );
    relay.send(Frame::OpenFailed {
        conn,
        failure: tabtunnel_proto::OpenFailure::Refused,
        message: "the relay could not connect to 127.0.0.1:3000: refused".into(),
    });
    let input = tokio::time::timeout(DEADLINE, dialled.input.recv())
        .await
        .unwrap();
    assert!(
        matches!(&input, Some(super::ConnInput::Refused(why)) if why.ends_with("refused")),
        "{input:?}"
    );
    assert!(
        tokio::time::timeout(DEADLINE, &mut dialled.abort)
            .await
            .is_ok()
    );
    // An Accept for a remote forward breaks the protocol.
    relay.send(Frame::Accept {
        conn: 1,
        forward,
        peer: "127.0.0.1:1".into(),
    });
    let end = ended(&opened).await;
    assert!(end.reason.contains("a remote forward"), "{}", end.reason);
}
