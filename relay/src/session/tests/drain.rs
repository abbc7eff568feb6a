//! The drain's rules as one session applies them (see `crate::drain`): refused after
//! the Hello, ended at once with no open connection, finishing its connections (and
//! taking no new client or forward) with some, ended at the stop, parking nothing.

use super::*;

const SHUTTING_DOWN: &str = "the relay is shutting down; connect again when it is back";

/// A session with forward 1 and one accepted connection whose SSH channel is open
/// (both sides granted credit): the forward's address, the TCP client and its id.
async fn busy(lab: &mut Lab) -> (SocketAddr, TcpStream, u32) {
    let address = listen(&mut lab.tab).await;
    let client = TcpStream::connect(address).await.unwrap();
    let Frame::Accept { conn, .. } = lab.tab.frame().await else {
        panic!("expected Accept");
    };
    assert!(matches!(lab.tab.frame().await, Frame::Credit { .. }));
    lab.tab
        .send(Frame::Credit {
            conn,
            bytes: CONNECTION_WINDOW,
        })
        .await;
    (address, client, conn)
}

/// Waits, within the deadline, until nothing accepts on `address` any more.
async fn refused(address: SocketAddr) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect(address).await {
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{address} still accepts"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_draining_relay_refuses_a_new_session_after_its_hello() {
    let mut lab = lab("", |_| {}).await;
    lab.shutdown.drain();
    let Frame::Error { code, message } = lab.tab.hello("lab").await else {
        panic!("expected an Error frame");
    };
    assert_eq!(code, ErrorCode::ShuttingDown);
    assert_eq!(
        message,
        "the relay is shutting down and takes no new sessions; connect again in a moment"
    );
    assert_eq!(lab.tab.close().await.0, 1001);
    // Refused before reaching the SSH server.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), lab.sshd.accept())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_session_with_no_open_connection_ends_at_once_and_frees_its_port() {
    let (mut lab, _ssh) = welcomed("").await;
    let address = listen(&mut lab.tab).await;
    lab.shutdown.drain();
    let (code, message, close) = lab.tab.error().await;
    assert_eq!(code, ErrorCode::ShuttingDown);
    assert_eq!(message, SHUTTING_DOWN);
    assert_eq!(close, 1001);
    tokio::time::timeout(DEADLINE, lab.session)
        .await
        .unwrap()
        .unwrap();
    TcpListener::bind(address)
        .await
        .expect("the forward's port is free");
}

#[tokio::test]
async fn a_busy_session_finishes_its_transfer_takes_nothing_new_and_then_ends() {
    let (mut lab, _ssh) = welcomed("").await;
    let (address, mut client, conn) = busy(&mut lab).await;
    lab.shutdown.drain();
    // No new TCP client: the listener closes (refused clients cost no frame).
    refused(address).await;
    // No new forward either.
    lab.tab
        .send(Frame::Listen {
            forward: 2,
            bind: "127.0.0.1".into(),
            port: 0,
        })
        .await;
    let Frame::ListenFailed { forward, code, .. } = lab.tab.frame().await else {
        panic!("expected ListenFailed");
    };
    assert_eq!((forward, code), (2, ErrorCode::ShuttingDown));
    // The open connection carries on both ways, to its orderly end.
    client.write_all(b"still flowing").await.unwrap();
    assert_eq!(
        lab.tab.frame().await,
        Frame::Data {
            conn,
            data: Bytes::from_static(b"still flowing")
        }
    );
    lab.tab
        .send(Frame::Data {
            conn,
            data: Bytes::from_static(b"the answer"),
        })
        .await;
    lab.tab.send(Frame::Eof { conn }).await;
    assert_eq!(read_to_end(&mut client).await.unwrap(), b"the answer");
    client.shutdown().await.unwrap();
    assert_eq!(lab.tab.frame().await, Frame::Eof { conn });
    assert_eq!(
        lab.tab.frame().await,
        Frame::Close {
            conn,
            reason: String::new()
        }
    );
    // Its last connection closed: the session ends, and its tab is told why.
    let (code, message, close) = lab.tab.error().await;
    assert_eq!(code, ErrorCode::ShuttingDown);
    assert_eq!(message, SHUTTING_DOWN);
    assert_eq!(close, 1001);
}

#[tokio::test]
async fn bytes_before_the_tabs_close_reach_the_client_before_a_draining_session_ends() {
    let (mut lab, _ssh) = welcomed("").await;
    let (_address, mut client, conn) = busy(&mut lab).await;
    lab.shutdown.drain();
    // A last answer bigger than a socket buffer takes, then the tab's orderly Close: the
    // table forgets the connection at once, while its task still writes.
    let answer = vec![7u8; 48 * 1024];
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
    // Read slowly at first, so that the session's last words come while bytes wait.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(read_to_end(&mut client).await.unwrap(), answer);
    let (code, _, _) = lab.tab.error().await;
    assert_eq!(code, ErrorCode::ShuttingDown);
}

#[tokio::test]
async fn at_the_stop_a_busy_session_ends_with_its_connections() {
    let (mut lab, _ssh) = welcomed("").await;
    let (_address, mut client, _conn) = busy(&mut lab).await;
    lab.shutdown.drain();
    // Still open while the drain lasts.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), lab.tab.from_relay.next())
            .await
            .map_or(true, |message| matches!(message, Some(Message::Ping(_)))),
        "the busy session said something"
    );
    lab.shutdown.stop_now();
    let (code, message, close) = lab.tab.error().await;
    assert_eq!(code, ErrorCode::ShuttingDown);
    assert_eq!(message, SHUTTING_DOWN);
    assert_eq!(close, 1001);
    // The TCP client's connection ends with the session.
    let _ = read_to_end(&mut client).await;
}

#[tokio::test]
async fn a_session_lost_while_the_relay_drains_parks_nothing() {
    let relay = Relay::new(Duration::from_secs(60)).await;
    let (mut tab, secret, _, task) = relay.session(1, None).await;
    assert!(secret.is_some(), "parking is on");
    let address = listen_on(&mut tab, 1, 0).await.unwrap();
    // An open connection keeps the session through the drain's start.
    let _client = TcpStream::connect(address).await.unwrap();
    assert!(matches!(tab.frame().await, Frame::Accept { .. }));
    relay.shutdown.drain();
    // The WebSocket drops without a Close: lost, yet nothing is parked.
    drop(tab);
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    assert!(relay.parts.parking.is_empty());
    assert_eq!(relay.parts.metrics.sessions_parked.get(), 0);
    TcpListener::bind(address)
        .await
        .expect("the forward's port is free");
}

#[tokio::test]
async fn the_drain_drops_parked_sessions_and_frees_their_ports() {
    let relay = Relay::new(Duration::from_secs(60)).await;
    let (mut tab, _, _, task) = relay.session(1, None).await;
    let address = listen_on(&mut tab, 1, 0).await.unwrap();
    // Lost before the drain: parked, its port held.
    drop(tab);
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    parked(&relay, 1).await;
    assert!(
        TcpListener::bind(address).await.is_err(),
        "the port is held"
    );
    crate::drain::drain(
        &relay.shutdown,
        &tokio_util::task::TaskTracker::new(),
        &relay.parts.parking,
        &relay.parts.metrics,
        DEADLINE,
    )
    .await;
    assert!(relay.parts.parking.is_empty());
    TcpListener::bind(address)
        .await
        .expect("the parked forward's port is free");
}
