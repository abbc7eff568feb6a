//! The session loop driven in memory: the tab is a pair of channels carrying hand-made
//! frames, and a plain TCP listener stands in for the SSH server (the relay only carries
//! its bytes). Forwards listen on real loopback sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::drain::Shutdown;
use axum::extract::ws::Message;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use tabtunnel_proto::{
    CONNECTION_WINDOW, DATA_FRAME_OVERHEAD, ErrorCode, Frame, VERSION, decode, encode_to_bytes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::limits::{Admission, HelloSlot};
use crate::metrics::Metrics;
use crate::ports::{Holder, PortBook};

mod remote;
mod socks;

/// Long enough for a loaded 2-core machine; every wait below ends at the first answer.
const DEADLINE: Duration = Duration::from_secs(10);

/// The tab's end of an in-memory WebSocket.
struct Tab {
    to_relay: mpsc::Sender<Result<Message, axum::Error>>,
    from_relay: mpsc::Receiver<Message>,
}

impl Tab {
    async fn send(&mut self, frame: Frame) {
        self.to_relay
            .send(Ok(Message::Binary(encode_to_bytes(&frame))))
            .await
            .expect("the session stopped reading");
    }

    /// The next message that is not a ping.
    async fn message(&mut self) -> Message {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.from_relay.next())
                .await
                .expect("no message from the relay in time")
                .expect("the relay closed the WebSocket without a Close message");
            if !matches!(message, Message::Ping(_)) {
                return message;
            }
        }
    }

    async fn frame(&mut self) -> Frame {
        match self.message().await {
            Message::Binary(bytes) => decode(bytes).expect("the relay sent a malformed frame"),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The Close message's code and reason.
    async fn close(&mut self) -> (u16, String) {
        match self.message().await {
            Message::Close(Some(close)) => (close.code, close.reason.to_string()),
            other => panic!("expected a Close, got {other:?}"),
        }
    }

    /// The session's last words: its Error frame, then its Close.
    async fn error(&mut self) -> (ErrorCode, String, u16) {
        let Frame::Error { code, message } = self.frame().await else {
            panic!("expected an Error frame");
        };
        let (close, _) = self.close().await;
        (code, message, close)
    }

    async fn hello(&mut self, target: &str) -> Frame {
        self.send(Frame::Hello {
            version: VERSION,
            target: target.into(),
            token: String::new(),
            resume: None,
        })
        .await;
        self.frame().await
    }
}

/// A relay session for one tab, with a target "lab" whose SSH server is `sshd`.
struct Lab {
    tab: Tab,
    sshd: TcpListener,
    shutdown: Shutdown,
    session: tokio::task::JoinHandle<()>,
}

/// What a session is started with: a config whose target "lab" is `sshd`, and the
/// places and counters of a relay of its own.
struct Parts {
    config: Arc<Config>,
    client: crate::ClientAddr,
    metrics: Arc<Metrics>,
    hello: HelloSlot,
    holder: Holder,
    parking: Arc<crate::parked::Parking>,
}

fn parts(sshd: &TcpListener, extra_toml: &str, adjust: impl FnOnce(&mut Config)) -> Parts {
    let mut config = Config::from_toml(&format!(
        "forward_ports = \"42000-42999\"\n{extra_toml}\n[targets.lab]\naddress = \"{}\"\npinned_host_keys = [\"SHA256:pinned\"]\n",
        sshd.local_addr().unwrap()
    ))
    .unwrap();
    adjust(&mut config);
    let config = Arc::new(config);
    let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let client = crate::ClientAddr::resolve(peer, &Default::default(), &config);
    let metrics = Arc::<Metrics>::default();
    let hello = Arc::<Admission>::default().wait_for_hello(client.ip(), &config.limits);
    let holder = Holder {
        book: Arc::new(PortBook::new(metrics.forward_binds.clone())),
        session: 1,
        ip: client.ip(),
    };
    let parking = crate::parked::Parking::new(config.resume_grace, &metrics);
    Parts {
        config,
        client,
        metrics,
        hello,
        holder,
        parking,
    }
}

async fn lab(extra_toml: &str, adjust: impl FnOnce(&mut Config)) -> Lab {
    let sshd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Parts {
        config,
        client,
        metrics,
        hello,
        holder,
        parking,
    } = parts(&sshd, extra_toml, adjust);
    let (to_relay, relay_rx) = mpsc::channel(16);
    let (relay_tx, from_relay) = mpsc::channel(16);
    let shutdown = Shutdown::default();
    let session = tokio::spawn(super::run(
        relay_tx,
        relay_rx,
        config,
        metrics,
        client,
        shutdown.clone(),
        holder,
        hello,
        None,
        parking,
    ));
    Lab {
        tab: Tab {
            to_relay,
            from_relay,
        },
        sshd,
        shutdown,
        session,
    }
}

/// A session past its Welcome, with the SSH server's side of its socket.
async fn welcomed(extra_toml: &str) -> (Lab, TcpStream) {
    let mut lab = lab(extra_toml, |_| {}).await;
    let welcome = lab.tab.hello("lab").await;
    assert!(matches!(welcome, Frame::Welcome { .. }), "{welcome:?}");
    let (ssh, _) = tokio::time::timeout(DEADLINE, lab.sshd.accept())
        .await
        .unwrap()
        .unwrap();
    (lab, ssh)
}

/// Opens forward 1 on a free port and returns its address.
async fn listen(tab: &mut Tab) -> SocketAddr {
    tab.send(Frame::Listen {
        forward: 1,
        bind: "127.0.0.1".into(),
        port: 0,
    })
    .await;
    match tab.frame().await {
        Frame::Listening {
            forward: 1,
            address,
        } => address.parse().unwrap(),
        other => panic!("expected Listening, got {other:?}"),
    }
}

async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut buf))
        .await
        .expect("no bytes in time")
        .unwrap();
    buf
}

/// Reads until the peer closes; returns what came, or the error.
async fn read_to_end(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf))
        .await
        .expect("the connection did not end in time")?;
    Ok(buf)
}

#[tokio::test]
async fn a_hello_is_welcomed_with_the_pins_and_ssh_bytes_flow_both_ways() {
    // Without parking, the Welcome carries no resume secret.
    let mut lab = lab("", |c| c.resume_grace = Duration::ZERO).await;
    assert_eq!(
        lab.tab.hello("lab").await,
        Frame::Welcome {
            version: VERSION,
            pinned_host_keys: vec!["SHA256:pinned".into()],
            resume: None,
            resumed: false,
        }
    );
    let (mut ssh, _) = lab.sshd.accept().await.unwrap();
    lab.tab
        .send(Frame::Ssh(Bytes::from_static(b"SSH-2.0-tab\r\n")))
        .await;
    assert_eq!(read_exactly(&mut ssh, 13).await, b"SSH-2.0-tab\r\n");
    ssh.write_all(b"SSH-2.0-sshd\r\n").await.unwrap();
    assert_eq!(
        lab.tab.frame().await,
        Frame::Ssh(Bytes::from_static(b"SSH-2.0-sshd\r\n"))
    );
}

#[tokio::test]
async fn a_frame_before_the_hello_ends_the_session_as_a_protocol_error() {
    let mut lab = lab("", |_| {}).await;
    lab.tab.send(Frame::Unlisten { forward: 1 }).await;
    let (code, message, close) = lab.tab.error().await;
    assert_eq!(code, ErrorCode::Protocol);
    assert_eq!(message, "expected Hello first, got Unlisten");
    assert_eq!(close, 1002);
}

#[tokio::test]
async fn another_protocol_version_is_told_to_reload() {
    let mut lab = lab("", |_| {}).await;
    lab.tab
        .send(Frame::Hello {
            version: VERSION + 1,
            target: "lab".into(),
            token: String::new(),
            resume: None,
        })
        .await;
    let (code, message, close) = lab.tab.error().await;
    assert_eq!(code, ErrorCode::Version);
    assert!(message.ends_with("reload the page"), "{message}");
    assert_eq!(close, 1002);
}

#[tokio::test]
async fn an_unknown_target_is_refused_naming_the_offered_ones() {
    let mut lab = lab("", |_| {}).await;
    let Frame::Error { code, message } = lab.tab.hello("elsewhere").await else {
        panic!("expected an Error frame");
    };
    assert_eq!(code, ErrorCode::UnknownTarget);
    assert_eq!(
        message,
        "unknown target \"elsewhere\"; this relay offers: lab"
    );
    assert_eq!(lab.tab.close().await.0, 1008);
}

#[tokio::test]
async fn a_forwarded_connection_carries_bytes_and_half_closes_each_way() {
    let (mut lab, _ssh) = welcomed("").await;
    let address = listen(&mut lab.tab).await;
    let mut client = TcpStream::connect(address).await.unwrap();
    let Frame::Accept { conn, forward, .. } = lab.tab.frame().await else {
        panic!("expected Accept");
    };
    assert_eq!((conn, forward), (1, 1));
    assert_eq!(
        lab.tab.frame().await,
        Frame::Credit {
            conn,
            bytes: CONNECTION_WINDOW
        }
    );
    // The tab opened its SSH channel: it grants the relay credit.
    lab.tab
        .send(Frame::Credit {
            conn,
            bytes: CONNECTION_WINDOW,
        })
        .await;
    client.write_all(b"ping").await.unwrap();
    assert_eq!(
        lab.tab.frame().await,
        Frame::Data {
            conn,
            data: Bytes::from_static(b"ping")
        }
    );
    lab.tab
        .send(Frame::Data {
            conn,
            data: Bytes::from_static(b"pong"),
        })
        .await;
    lab.tab.send(Frame::Eof { conn }).await;
    // The tab's Eof is the TCP client's end of stream, after the bytes before it.
    assert_eq!(read_to_end(&mut client).await.unwrap(), b"pong");
    client.shutdown().await.unwrap();
    assert_eq!(lab.tab.frame().await, Frame::Eof { conn });
    assert_eq!(
        lab.tab.frame().await,
        Frame::Close {
            conn,
            reason: String::new()
        }
    );
}

#[tokio::test]
async fn a_frame_for_a_connection_never_opened_ends_the_session() {
    let (mut lab, _ssh) = welcomed("").await;
    lab.tab
        .send(Frame::Data {
            conn: 7,
            data: Bytes::from_static(b"x"),
        })
        .await;
    let (code, message, close) = lab.tab.error().await;
    assert_eq!(code, ErrorCode::Protocol);
    assert!(message.contains("connection 7"), "{message}");
    assert!(message.contains("never opened"), "{message}");
    assert_eq!(close, 1002);
}

#[tokio::test]
async fn a_client_from_a_source_not_allowed_is_closed_and_the_tab_told() {
    let (mut lab, _ssh) = welcomed("forward_allowed_sources = [\"192.0.2.0/24\"]").await;
    let address = listen(&mut lab.tab).await;
    let mut client = TcpStream::connect(address).await.unwrap();
    let Frame::ListenFailed {
        forward,
        code,
        message,
    } = lab.tab.frame().await
    else {
        panic!("expected ListenFailed");
    };
    assert_eq!((forward, code), (1, ErrorCode::SourceNotAllowed));
    assert!(message.contains("forward_allowed_sources"), "{message}");
    // Closed without a byte, and the listener stays: the next client is told too.
    assert!(
        read_to_end(&mut client)
            .await
            .map_or(true, |b| b.is_empty())
    );
    let _second = TcpStream::connect(address).await.unwrap();
    assert!(matches!(
        lab.tab.frame().await,
        Frame::ListenFailed { forward: 1, .. }
    ));
}

#[tokio::test]
async fn the_ssh_server_closing_ends_the_session_in_order() {
    let (mut lab, ssh) = welcomed("").await;
    drop(ssh);
    // Said by its code first, so the tab can tell a login cut short.
    assert_eq!(
        lab.tab.frame().await,
        Frame::Error {
            code: ErrorCode::SshClosed,
            message: "the SSH server closed the connection".into()
        }
    );
    assert_eq!(
        lab.tab.close().await,
        (1000, "the SSH server closed the connection".into())
    );
    tokio::time::timeout(DEADLINE, lab.session)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bytes_before_the_tabs_close_reach_the_client_when_the_tab_leaves_at_once() {
    let (mut lab, _ssh) = welcomed("").await;
    let address = listen(&mut lab.tab).await;
    let mut client = TcpStream::connect(address).await.unwrap();
    let Frame::Accept { conn, .. } = lab.tab.frame().await else {
        panic!("expected Accept");
    };
    assert!(matches!(lab.tab.frame().await, Frame::Credit { .. }));
    // The tab's last answer, its orderly Close, and at once the end of the WebSocket (a
    // page closed right after a download): the table forgets the connection at the Close
    // while its task still writes, and the session then ends.
    let answer: Vec<u8> = (0..192 * 1024).map(|i| (i % 251) as u8).collect();
    for piece in answer.chunks(16 * 1024) {
        lab.tab
            .send(Frame::Data {
                conn,
                data: Bytes::copy_from_slice(piece),
            })
            .await;
    }
    lab.tab
        .send(Frame::Close {
            conn,
            reason: String::new(),
        })
        .await;
    lab.tab
        .to_relay
        .send(Ok(Message::Close(None)))
        .await
        .unwrap();
    // The relay may still grant credit for what it wrote before its Close.
    let close = loop {
        match lab.tab.message().await {
            Message::Binary(_) => continue,
            Message::Close(Some(close)) => break (close.code, close.reason.to_string()),
            other => panic!("expected a Close, got {other:?}"),
        }
    };
    assert_eq!(close, (1000, "the tab closed the WebSocket".into()));
    // Only now does the client read: everything sent before the Close arrives, then EOF.
    assert_eq!(read_to_end(&mut client).await.unwrap(), answer);
    tokio::time::timeout(DEADLINE, lab.session)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_tab_leaving_ends_the_session_and_frees_its_forward_port() {
    let (mut lab, mut ssh) = welcomed("").await;
    let address = listen(&mut lab.tab).await;
    lab.tab
        .to_relay
        .send(Ok(Message::Close(None)))
        .await
        .unwrap();
    assert_eq!(
        lab.tab.close().await,
        (1000, "the tab closed the WebSocket".into())
    );
    tokio::time::timeout(DEADLINE, lab.session)
        .await
        .unwrap()
        .unwrap();
    // Everything the session held is gone: its SSH socket and its listener.
    assert!(read_to_end(&mut ssh).await.map_or(true, |b| b.is_empty()));
    TcpListener::bind(address)
        .await
        .expect("the forward's port is still held");
}

#[tokio::test]
async fn the_relay_shutting_down_tells_the_tab() {
    let (mut lab, _ssh) = welcomed("").await;
    lab.shutdown.stop_now();
    let (code, message, close) = lab.tab.error().await;
    assert_eq!(code, ErrorCode::ShuttingDown);
    assert_eq!(
        message,
        "the relay is shutting down; connect again when it is back"
    );
    assert_eq!(close, 1001);
}

#[tokio::test]
async fn a_session_with_no_connection_ends_when_idle() {
    let mut lab = lab("", |config| {
        config.idle_timeout = Some(Duration::from_millis(200))
    })
    .await;
    assert!(matches!(lab.tab.hello("lab").await, Frame::Welcome { .. }));
    let (code, message, close) = lab.tab.error().await;
    assert_eq!(code, ErrorCode::Idle);
    assert!(
        message.starts_with("the relay ended this session: idle for 200ms"),
        "{message}"
    );
    assert_eq!(close, 1008);
}

#[tokio::test]
async fn a_tab_that_answers_nothing_is_ended_by_the_watchdog() {
    let mut lab = lab("", |config| {
        config.ping_interval = Duration::from_millis(100)
    })
    .await;
    assert!(matches!(lab.tab.hello("lab").await, Frame::Welcome { .. }));
    // The tab sends nothing, pongs included: after three ping intervals it is gone.
    let (close, reason) = lab.tab.close().await;
    assert_eq!(close, 1000);
    assert!(reason.starts_with("the tab stopped answering"), "{reason}");
}

#[tokio::test]
async fn the_ssh_reader_stopping_for_a_gone_writer_does_not_panic_the_loop() {
    let (lab, mut ssh) = welcomed("").await;
    let Lab {
        tab, mut session, ..
    } = lab;
    let Tab {
        mut to_relay,
        from_relay,
    } = tab;
    // The tab stops taking messages: the writer fails at its next one, and the SSH
    // reader then finds the queue to the tab closed and stops (it is gone, not closed).
    drop(from_relay);
    // Each round gives the reader bytes it cannot pass on and makes the loop go round
    // again; the SSH server reading the tab's byte proves the loop handled the frame.
    for _ in 0..20 {
        if ssh.write_all(b"x").await.is_err() || session.is_finished() {
            break;
        }
        let frame = Frame::Ssh(Bytes::from_static(b"y"));
        if to_relay
            .send(Ok(Message::Binary(encode_to_bytes(&frame))))
            .await
            .is_err()
        {
            break;
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(DEADLINE, ssh.read(&mut byte)).await {
            Ok(Ok(1)) => {}
            _ => break,
        }
    }
    assert!(!session.is_finished(), "the session ended early");
    drop(to_relay);
    tokio::time::timeout(DEADLINE, &mut session)
        .await
        .expect("the session did not end")
        .expect("the session's task panicked");
}

#[tokio::test]
async fn forwards_opened_and_closed_over_and_over_leave_no_listener_task_behind() {
    let sshd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Parts {
        config,
        metrics,
        hello,
        holder,
        parking,
        ..
    } = parts(&sshd, "", |_| {});
    let (mut to_relay, mut relay_rx) = mpsc::channel(16);
    let (out, mut from_relay) = tokio::sync::mpsc::channel(crate::outgoing::OUT_QUEUE);
    let frame = |frame: Frame| Ok(Message::Binary(encode_to_bytes(&frame)));
    to_relay
        .send(frame(Frame::Hello {
            version: VERSION,
            target: "lab".into(),
            token: String::new(),
            resume: None,
        }))
        .await
        .unwrap();
    let mut session = super::Session::start(
        &mut relay_rx,
        out,
        Default::default(),
        config,
        metrics,
        holder,
        hello,
        parking,
        &Shutdown::default(),
    )
    .await
    .expect("the session started");
    let (_ssh, _) = sshd.accept().await.unwrap();
    let heard = std::sync::Mutex::new(tokio::time::Instant::now());
    // The tab opens and closes a forward again and again, as any tab may; then leaves.
    let tab = async move {
        for _ in 0..50 {
            to_relay
                .send(frame(Frame::Listen {
                    forward: 1,
                    bind: "127.0.0.1".into(),
                    port: 0,
                }))
                .await
                .unwrap();
            loop {
                let message = tokio::time::timeout(DEADLINE, from_relay.recv())
                    .await
                    .expect("no Listening in time")
                    .expect("the session stopped");
                if let crate::outgoing::Outgoing::Frame(Frame::Listening { .. }) = message {
                    break;
                }
            }
            to_relay
                .send(frame(Frame::Unlisten { forward: 1 }))
                .await
                .unwrap();
        }
        to_relay.send(Ok(Message::Close(None))).await.unwrap();
        from_relay
    };
    let shutdown = Shutdown::default();
    let (ended, _from_relay) = tokio::join!(session.run(&mut relay_rx, &heard, &shutdown), tab);
    assert_eq!(ended.unwrap(), "the tab closed the WebSocket");
    // Each closed forward's accept loop was aborted; the session must not keep them.
    assert!(
        session.listeners.len() <= 1,
        "the session holds {} listener tasks for its one forward",
        session.listeners.len()
    );
}

/// Accepts a TCP client on forward 1 and takes the connection as the tab does: reads
/// Accept and the relay's first Credit, and grants the relay `grant`.
async fn connected(lab: &mut Lab, grant: u32) -> (TcpStream, u32) {
    let address = listen(&mut lab.tab).await;
    let client = TcpStream::connect(address).await.unwrap();
    let Frame::Accept { conn, .. } = lab.tab.frame().await else {
        panic!("expected Accept");
    };
    assert_eq!(
        lab.tab.frame().await,
        Frame::Credit {
            conn,
            bytes: CONNECTION_WINDOW
        }
    );
    lab.tab.send(Frame::Credit { conn, bytes: grant }).await;
    (client, conn)
}

#[tokio::test]
async fn a_tab_that_runs_dry_while_the_client_keeps_up_gets_a_window_twice_as_large() {
    let (mut lab, _ssh) = welcomed("").await;
    let (mut client, conn) = connected(&mut lab, CONNECTION_WINDOW).await;
    // The tab spends the whole window in four frames (each costs 64 bytes of overhead)
    // and the client reads it all.
    let len = CONNECTION_WINDOW as usize / 4 - DATA_FRAME_OVERHEAD as usize;
    for _ in 0..4 {
        let data = Bytes::from(vec![7u8; len]);
        lab.tab.send(Frame::Data { conn, data }).await;
    }
    assert_eq!(read_exactly(&mut client, 4 * len).await.len(), 4 * len);
    // The relay refills what was written out, half a window at a time.
    let mut granted = 0u64;
    while granted < u64::from(CONNECTION_WINDOW) {
        match lab.tab.frame().await {
            Frame::Credit { conn: c, bytes } if c == conn => granted += u64::from(bytes),
            other => panic!("expected Credit, got {other:?}"),
        }
    }
    // Credit stuck behind other traffic would leave the tab waiting: it says so, and
    // as the client keeps up, the relay doubles the window, granting the growth at once.
    lab.tab.send(Frame::Blocked { conn }).await;
    while granted < 2 * u64::from(CONNECTION_WINDOW) {
        match lab.tab.frame().await {
            Frame::Credit { conn: c, bytes } if c == conn => granted += u64::from(bytes),
            other => panic!("expected Credit, got {other:?}"),
        }
    }
    assert_eq!(granted, 2 * u64::from(CONNECTION_WINDOW));
}

#[tokio::test]
async fn the_relay_says_blocked_once_it_spent_the_tabs_credit() {
    let (mut lab, _ssh) = welcomed("").await;
    let grant = 3 * (DATA_FRAME_OVERHEAD + 1000);
    let (mut client, conn) = connected(&mut lab, grant).await;
    client.write_all(&[1u8; 5000]).await.unwrap();
    let (mut spent, mut received) = (0u64, 0u64);
    loop {
        match lab.tab.frame().await {
            Frame::Data { conn: c, data } if c == conn => {
                spent += tabtunnel_proto::frame_cost(data.len());
                received += data.len() as u64;
            }
            Frame::Blocked { conn: c } if c == conn => break,
            other => panic!("expected Data or Blocked, got {other:?}"),
        }
    }
    assert_eq!(
        spent,
        u64::from(grant),
        "Blocked comes only after all credit is spent"
    );
    // More credit, and the rest flows.
    lab.tab
        .send(Frame::Credit {
            conn,
            bytes: 10_000,
        })
        .await;
    while received < 5000 {
        match lab.tab.frame().await {
            Frame::Data { conn: c, data } if c == conn => received += data.len() as u64,
            other => panic!("expected Data, got {other:?}"),
        }
    }
    assert_eq!(received, 5000);
}

#[tokio::test]
async fn a_credit_refill_goes_ahead_of_the_ssh_bytes_queued_for_the_tab() {
    let (mut lab, mut ssh) = welcomed("").await;
    let (mut client, conn) = connected(&mut lab, CONNECTION_WINDOW).await;
    // The SSH server sends more than the tab reads, until everything between them is
    // full: the socket, the SSH reader, the session's queue and the WebSocket.
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = tokio::spawn({
        let written = written.clone();
        async move {
            let chunk = vec![0u8; 64 * 1024];
            for _ in 0..1024 {
                if ssh.write_all(&chunk).await.is_err() {
                    return;
                }
                written.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let mut last = usize::MAX;
    let mut unchanged = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = written.load(std::sync::atomic::Ordering::Relaxed);
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
        if unchanged == 3 {
            break;
        }
    }
    assert_eq!(unchanged, 3, "the SSH server's writes never stalled");
    // Half a window written out to the TCP client: the relay refills the tab's credit.
    let len = CONNECTION_WINDOW as usize / 4 - DATA_FRAME_OVERHEAD as usize;
    for _ in 0..2 {
        let data = Bytes::from(vec![1u8; len]);
        lab.tab.send(Frame::Data { conn, data }).await;
    }
    read_exactly(&mut client, 2 * len).await;
    let mut ssh_frames_first = 0;
    loop {
        match lab.tab.frame().await {
            Frame::Ssh(_) => ssh_frames_first += 1,
            Frame::Credit { conn: c, .. } if c == conn => break,
            other => panic!("expected Ssh or Credit, got {other:?}"),
        }
        assert!(ssh_frames_first < 1000, "no Credit");
    }
    // Only what the WebSocket writer had in hand; the session's queue was full.
    assert!(
        ssh_frames_first < crate::outgoing::OUT_QUEUE,
        "the Credit came after {ssh_frames_first} Ssh frames"
    );
    flood.abort();
}

/// Two tabs' sessions, one after the other, on one relay: one config, book of ports and
/// parking registry, as `AppState` shares them.
struct Relay {
    parts: Parts,
    sshd: TcpListener,
    /// The relay's drain and stop, shared by its sessions.
    shutdown: Shutdown,
    /// The SSH server's side of each session's socket, kept open: closing one ends its
    /// session (as lost).
    ssh: std::sync::Mutex<Vec<TcpStream>>,
}

impl Relay {
    async fn new(grace: Duration) -> Self {
        Self::with(grace, |_| {}).await
    }

    async fn with(grace: Duration, adjust: impl FnOnce(&mut Config)) -> Self {
        let sshd = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let parts = parts(&sshd, "", |c| {
            c.resume_grace = grace;
            adjust(c);
        });
        Self {
            parts,
            sshd,
            shutdown: Shutdown::default(),
            ssh: Default::default(),
        }
    }

    /// Starts a session (session id `id`) and says Hello with `resume`; returns its tab
    /// and the Welcome's secret and resumed flag.
    async fn session(
        &self,
        id: u64,
        resume: Option<tabtunnel_proto::ResumeSecret>,
    ) -> (
        Tab,
        Option<tabtunnel_proto::ResumeSecret>,
        bool,
        tokio::task::JoinHandle<()>,
    ) {
        let (to_relay, relay_rx) = mpsc::channel(16);
        let (relay_tx, from_relay) = mpsc::channel(16);
        let p = &self.parts;
        let hello = Arc::<Admission>::default().wait_for_hello(p.client.ip(), &p.config.limits);
        let holder = Holder {
            session: id,
            ..p.holder.clone()
        };
        let task = tokio::spawn(super::run(
            relay_tx,
            relay_rx,
            p.config.clone(),
            p.metrics.clone(),
            p.client,
            self.shutdown.clone(),
            holder,
            hello,
            None,
            p.parking.clone(),
        ));
        let mut tab = Tab {
            to_relay,
            from_relay,
        };
        tab.send(Frame::Hello {
            version: VERSION,
            target: "lab".into(),
            token: String::new(),
            resume,
        })
        .await;
        let Frame::Welcome {
            resume, resumed, ..
        } = tab.frame().await
        else {
            panic!("expected a Welcome");
        };
        let (ssh, _) = tokio::time::timeout(DEADLINE, self.sshd.accept())
            .await
            .expect("the session reached the SSH server")
            .unwrap();
        self.ssh.lock().unwrap().push(ssh);
        (tab, resume, resumed, task)
    }
}

async fn listen_on(
    tab: &mut Tab,
    forward: u32,
    port: u16,
) -> Result<SocketAddr, (ErrorCode, String)> {
    tab.send(Frame::Listen {
        forward,
        bind: "127.0.0.1".into(),
        port,
    })
    .await;
    match tab.frame().await {
        Frame::Listening { address, .. } => Ok(address.parse().unwrap()),
        Frame::ListenFailed { code, message, .. } => Err((code, message)),
        other => panic!("expected Listening, got {other:?}"),
    }
}

/// Waits, within the deadline, until the registry holds `n` parked sessions.
async fn parked(relay: &Relay, n: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while relay.parts.parking.len() != n {
        assert!(tokio::time::Instant::now() < deadline, "never {n} parked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_lost_tab_resumes_its_forward_on_the_same_listener_and_waiting_clients_get_through() {
    let relay = Relay::new(Duration::from_secs(60)).await;
    let (mut tab, secret, resumed, first) = relay.session(1, None).await;
    assert!(!resumed);
    let secret = secret.expect("parking is on: the Welcome carries a secret");
    let address = listen_on(&mut tab, 1, 0).await.unwrap();
    let binds = relay.parts.holder.book.binds();
    // The WebSocket drops without a Close: the session is lost, its forward parked.
    drop(tab);
    tokio::time::timeout(DEADLINE, first)
        .await
        .unwrap()
        .unwrap();
    parked(&relay, 1).await;
    // A TCP client that comes meanwhile waits in the listen backlog.
    let mut waiting = tokio::time::timeout(DEADLINE, TcpStream::connect(address))
        .await
        .unwrap()
        .expect("the parked listener still takes connections into its backlog");
    // Nobody else can take the port: another session is told it is in use.
    let (mut other, _, resumed, _other) = relay.session(2, None).await;
    assert!(!resumed);
    let (code, message) = listen_on(&mut other, 1, address.port()).await.unwrap_err();
    assert_eq!(code, ErrorCode::PortInUse, "{message}");
    // The tab comes back with its secret and asks for the same address.
    let (mut tab, again, resumed, _second) = relay.session(3, Some(secret)).await;
    assert!(resumed, "the Welcome says the session resumed");
    assert!(
        again.is_some() && again != Some(secret),
        "a fresh secret each time"
    );
    assert_eq!(
        listen_on(&mut tab, 7, address.port()).await.unwrap(),
        address
    );
    assert_eq!(relay.parts.holder.book.binds(), binds, "no new bind()");
    // The client that waited is accepted now, for the new forward id.
    match tab.frame().await {
        Frame::Accept { forward: 7, .. } => {}
        other => panic!("expected an Accept, got {other:?}"),
    }
    let Frame::Credit { .. } = tab.frame().await else {
        panic!("expected the Accept's Credit");
    };
    waiting.write_all(b"x").await.unwrap();
    assert!(relay.parts.parking.is_empty());
    assert_eq!(relay.parts.metrics.sessions_resumed.get(), 1);
    // The secret worked once.
    let (_tab, _, resumed, _third) = relay.session(4, Some(secret)).await;
    assert!(!resumed, "a used secret is a fresh session");
}

#[tokio::test]
async fn an_orderly_end_frees_at_once_and_a_wrong_secret_resumes_nothing() {
    let relay = Relay::new(Duration::from_secs(60)).await;
    // The tab's own close (a Close with 1000): nothing is parked.
    let (mut tab, _, _, first) = relay.session(1, None).await;
    let address = listen_on(&mut tab, 1, 0).await.unwrap();
    tab.to_relay
        .send(Ok(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        }))))
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, first)
        .await
        .unwrap()
        .unwrap();
    assert!(relay.parts.parking.is_empty());
    std::net::TcpListener::bind(address).expect("the port is free at once");
    // A lost one is parked; a wrong secret resumes nothing, and the right one still works.
    let (mut tab, secret, _, second) = relay.session(2, None).await;
    let address = listen_on(&mut tab, 1, 0).await.unwrap();
    drop(tab);
    tokio::time::timeout(DEADLINE, second)
        .await
        .unwrap()
        .unwrap();
    parked(&relay, 1).await;
    let wrong = tabtunnel_proto::ResumeSecret([0x42; 32]);
    let (mut tab, _, resumed, _third) = relay.session(3, Some(wrong)).await;
    assert!(!resumed);
    let (code, _) = listen_on(&mut tab, 1, address.port()).await.unwrap_err();
    assert_eq!(code, ErrorCode::PortInUse);
    let (_tab, _, resumed, _fourth) = relay.session(4, secret).await;
    assert!(resumed);
}

#[tokio::test]
async fn a_resumed_session_frees_what_it_does_not_claim_within_the_grace() {
    let grace = Duration::from_secs(1);
    let relay = Relay::new(grace).await;
    let (mut tab, secret, _, first) = relay.session(1, None).await;
    let address = listen_on(&mut tab, 1, 0).await.unwrap();
    drop(tab);
    tokio::time::timeout(DEADLINE, first)
        .await
        .unwrap()
        .unwrap();
    parked(&relay, 1).await;
    let (_tab, _, resumed, _second) = relay.session(2, secret).await;
    assert!(resumed);
    // Never claimed: after the grace the port is free again.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while std::net::TcpListener::bind(address).is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(relay.parts.metrics.parked_expired.get(), 1);
}

#[tokio::test]
async fn with_parking_off_a_lost_session_frees_its_ports() {
    let relay = Relay::new(Duration::ZERO).await;
    let (mut tab, secret, _, first) = relay.session(1, None).await;
    assert!(secret.is_none());
    let address = listen_on(&mut tab, 1, 0).await.unwrap();
    drop(tab);
    tokio::time::timeout(DEADLINE, first)
        .await
        .unwrap()
        .unwrap();
    assert!(relay.parts.parking.is_empty());
    std::net::TcpListener::bind(address).expect("the port is free at once");
}

#[tokio::test]
async fn a_tab_back_before_its_loss_was_noticed_takes_its_live_session_over() {
    let relay = Relay::new(Duration::from_secs(60)).await;
    let (mut old, secret, _, first) = relay.session(1, None).await;
    let address = listen_on(&mut old, 1, 0).await.unwrap();
    // The old WebSocket is still open (a network gone silent): the tab comes back anyway.
    let (mut tab, _, resumed, _second) = relay.session(2, secret).await;
    assert!(resumed, "the live session was ended and its forwards taken");
    tokio::time::timeout(DEADLINE, first)
        .await
        .expect("the old session ended")
        .unwrap();
    assert_eq!(
        listen_on(&mut tab, 1, address.port()).await.unwrap(),
        address
    );
    drop(old);
}

#[tokio::test]
async fn unclaimed_forwards_count_toward_the_forwards_per_session_cap() {
    let relay = Relay::with(Duration::from_secs(60), |c| {
        c.limits.forwards_per_session = 1;
    })
    .await;
    let (mut tab, secret, _, first) = relay.session(1, None).await;
    let address = listen_on(&mut tab, 1, 0).await.unwrap();
    drop(tab);
    tokio::time::timeout(DEADLINE, first)
        .await
        .unwrap()
        .unwrap();
    parked(&relay, 1).await;
    let (mut tab, _, resumed, _second) = relay.session(2, secret).await;
    assert!(resumed);
    // Another forward first: the unclaimed one still holds the session's only place.
    let (code, message) = listen_on(&mut tab, 1, 0).await.unwrap_err();
    assert_eq!(code, ErrorCode::Limit, "{message}");
    // Claiming it needs no new place.
    assert_eq!(
        listen_on(&mut tab, 2, address.port()).await.unwrap(),
        address
    );
}

mod drain;
