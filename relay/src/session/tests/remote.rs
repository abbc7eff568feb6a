//! Remote forwards in the session loop: the tab's RemoteForward and Dial frames by
//! hand, real TCP destinations on loopback.

use tabtunnel_proto::{OpenFailure, TAB_OPENED};

use super::*;

/// A session past its Welcome whose relay lets remote forwards reach `destinations`.
async fn welcomed_remote(destinations: &[String], adjust: impl FnOnce(&mut Config)) -> Lab {
    let list: Vec<String> = destinations.iter().map(|d| format!("{d:?}")).collect();
    let toml = format!("remote_destinations = [{}]", list.join(", "));
    let mut lab = lab(&toml, adjust).await;
    let welcome = lab.tab.hello("lab").await;
    assert!(matches!(welcome, Frame::Welcome { .. }), "{welcome:?}");
    lab
}

async fn remote_forward(tab: &mut Tab, forward: u32, host: &str, port: u16) -> Frame {
    tab.send(Frame::RemoteForward {
        forward,
        host: host.into(),
        port,
    })
    .await;
    tab.frame().await
}

/// The tab's Dial for connection `conn` of `forward`, with its first grant, as the tab
/// sends them.
async fn dial(tab: &mut Tab, conn: u32, forward: u32) {
    tab.send(Frame::Dial {
        conn,
        forward,
        peer: "127.0.0.1:40000".into(),
    })
    .await;
    tab.send(Frame::Credit {
        conn,
        bytes: CONNECTION_WINDOW,
    })
    .await;
}

#[tokio::test]
async fn by_default_a_remote_forward_is_refused_naming_the_setting_and_its_dials_fail() {
    let mut lab = welcomed_remote(&[], |_| {}).await;
    let Frame::ListenFailed {
        forward: 3,
        code,
        message,
    } = remote_forward(&mut lab.tab, 3, "127.0.0.1", 3000).await
    else {
        panic!("expected ListenFailed");
    };
    assert_eq!(code, ErrorCode::DestinationNotAllowed);
    assert_eq!(
        message,
        "this relay does not allow remote forwards (ssh -R), so it will not connect to 127.0.0.1:3000: its operator has named no destinations for them (remote_destinations)"
    );
    // A Dial for it is answered, not a protocol error: the tab may not know yet.
    let conn = TAB_OPENED + 1;
    dial(&mut lab.tab, conn, 3).await;
    let Frame::OpenFailed {
        conn: c, message, ..
    } = lab.tab.frame().await
    else {
        panic!("expected OpenFailed");
    };
    assert_eq!((c, message.as_str()), (conn, "remote forward 3 is closed"));
}

#[tokio::test]
async fn a_destination_not_listed_is_refused_with_the_ones_that_are() {
    let mut lab = welcomed_remote(&["127.0.0.1:3000".into(), "[::1]:3000".into()], |_| {}).await;
    for (host, port) in [("localhost", 3000), ("127.0.0.1", 3001), ("10.0.0.1", 3000)] {
        let Frame::ListenFailed { code, message, .. } =
            remote_forward(&mut lab.tab, 1, host, port).await
        else {
            panic!("expected ListenFailed");
        };
        assert_eq!(code, ErrorCode::DestinationNotAllowed);
        assert_eq!(
            message,
            format!(
                "this relay does not connect remote forwards (ssh -R) to {host}:{port}; its operator allows only 127.0.0.1:3000, [::1]:3000 (remote_destinations)"
            )
        );
    }
    let listening = remote_forward(&mut lab.tab, 1, "::1", 3000).await;
    assert_eq!(
        listening,
        Frame::Listening {
            forward: 1,
            address: "[::1]:3000".into()
        }
    );
}

#[tokio::test]
async fn a_dial_connects_to_the_destination_and_carries_bytes_both_ways() {
    let service = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let destination = service.local_addr().unwrap();
    let mut lab = welcomed_remote(&[destination.to_string()], |_| {}).await;
    let listening = remote_forward(&mut lab.tab, 2, "127.0.0.1", destination.port()).await;
    assert_eq!(
        listening,
        Frame::Listening {
            forward: 2,
            address: destination.to_string()
        }
    );
    let conn = TAB_OPENED + 1;
    dial(&mut lab.tab, conn, 2).await;
    let (mut server, _) = tokio::time::timeout(DEADLINE, service.accept())
        .await
        .unwrap()
        .unwrap();
    // The relay's first Credit says it connected.
    assert_eq!(
        lab.tab.frame().await,
        Frame::Credit {
            conn,
            bytes: CONNECTION_WINDOW
        }
    );
    lab.tab
        .send(Frame::Data {
            conn,
            data: Bytes::from_static(b"ping"),
        })
        .await;
    assert_eq!(read_exactly(&mut server, 4).await, b"ping");
    server.write_all(b"pong").await.unwrap();
    assert_eq!(
        lab.tab.frame().await,
        Frame::Data {
            conn,
            data: Bytes::from_static(b"pong")
        }
    );
    // Half-closes pass on each way, then the connection ends in order.
    lab.tab.send(Frame::Eof { conn }).await;
    assert_eq!(read_to_end(&mut server).await.unwrap(), b"");
    drop(server);
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
async fn a_destination_that_refuses_is_an_open_failure_saying_so() {
    // A port nobody listens on: bound, then freed.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut lab = welcomed_remote(&[closed.to_string()], |_| {}).await;
    remote_forward(&mut lab.tab, 1, "127.0.0.1", closed.port()).await;
    let conn = TAB_OPENED + 1;
    dial(&mut lab.tab, conn, 1).await;
    let Frame::OpenFailed {
        conn: c,
        failure,
        message,
    } = lab.tab.frame().await
    else {
        panic!("expected OpenFailed");
    };
    assert_eq!((c, failure), (conn, OpenFailure::Refused));
    assert!(
        message.starts_with(&format!("the relay could not connect to {closed}: ")),
        "{message}"
    );
    // The relay forgot it: the next id works, and nothing else comes for this one.
    dial(&mut lab.tab, conn + 1, 1).await;
    let Frame::OpenFailed { conn: c, .. } = lab.tab.frame().await else {
        panic!("expected OpenFailed");
    };
    assert_eq!(c, conn + 1);
}

#[tokio::test]
async fn dials_beyond_the_forwards_cap_are_refused_and_a_closed_forward_takes_none() {
    let service = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let destination = service.local_addr().unwrap();
    let mut lab = welcomed_remote(&[destination.to_string()], |c| {
        c.limits.connections_per_forward = 1;
    })
    .await;
    remote_forward(&mut lab.tab, 1, "127.0.0.1", destination.port()).await;
    let first = TAB_OPENED + 1;
    dial(&mut lab.tab, first, 1).await;
    let (_server, _) = service.accept().await.unwrap();
    assert!(matches!(lab.tab.frame().await, Frame::Credit { conn, .. } if conn == first));
    dial(&mut lab.tab, first + 1, 1).await;
    let Frame::OpenFailed { conn, message, .. } = lab.tab.frame().await else {
        panic!("expected OpenFailed");
    };
    assert_eq!(conn, first + 1);
    assert!(
        message.contains("maximum of 1 open connections"),
        "{message}"
    );
    // Closing the forward ends its connection and refuses later dials.
    lab.tab.send(Frame::Unlisten { forward: 1 }).await;
    dial(&mut lab.tab, first + 2, 1).await;
    let Frame::OpenFailed { conn, message, .. } = lab.tab.frame().await else {
        panic!("expected OpenFailed");
    };
    assert_eq!(
        (conn, message.as_str()),
        (first + 2, "remote forward 1 is closed")
    );
}

#[tokio::test]
async fn remote_forwards_count_toward_the_forwards_per_session_cap_and_ids_are_shared() {
    let mut lab = welcomed_remote(&["127.0.0.1:3000".into()], |c| {
        c.limits.forwards_per_session = 1;
    })
    .await;
    assert!(matches!(
        remote_forward(&mut lab.tab, 1, "127.0.0.1", 3000).await,
        Frame::Listening { forward: 1, .. }
    ));
    let Frame::ListenFailed { code, .. } = remote_forward(&mut lab.tab, 1, "127.0.0.1", 3000).await
    else {
        panic!("expected ListenFailed");
    };
    assert_eq!(code, ErrorCode::DuplicateForward);
    lab.tab
        .send(Frame::Listen {
            forward: 2,
            bind: "127.0.0.1".into(),
            port: 0,
        })
        .await;
    let Frame::ListenFailed { code, message, .. } = lab.tab.frame().await else {
        panic!("expected ListenFailed");
    };
    assert_eq!(code, ErrorCode::Limit);
    assert!(message.contains("at most 1 forwards"), "{message}");
}

#[tokio::test]
async fn a_dial_with_a_reused_or_relay_side_id_ends_the_session() {
    let mut lab = welcomed_remote(&["127.0.0.1:3000".into()], |_| {}).await;
    remote_forward(&mut lab.tab, 1, "127.0.0.1", 3000).await;
    lab.tab
        .send(Frame::Dial {
            conn: 5,
            forward: 1,
            peer: String::new(),
        })
        .await;
    let (code, message, close) = lab.tab.error().await;
    assert_eq!((code, close), (ErrorCode::Protocol, 1002));
    assert!(message.contains("an id only the relay opens"), "{message}");
}

#[tokio::test]
async fn dials_still_connecting_are_capped_per_forward() {
    // A destination whose accept queue is full: the kernel drops further SYNs, so a
    // connect to it hangs (until the relay's connect timeout).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let destination = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        let connect = TcpStream::connect(destination);
        match tokio::time::timeout(Duration::from_millis(300), connect).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    assert!(fillers.len() < 16, "the accept queue never filled");
    let mut lab = welcomed_remote(&[destination.to_string()], |c| {
        c.limits.pending_accepts_per_forward = 1;
    })
    .await;
    remote_forward(&mut lab.tab, 1, "127.0.0.1", destination.port()).await;
    let first = TAB_OPENED + 1;
    dial(&mut lab.tab, first, 1).await;
    dial(&mut lab.tab, first + 1, 1).await;
    let Frame::OpenFailed { conn, message, .. } = lab.tab.frame().await else {
        panic!("expected OpenFailed");
    };
    assert_eq!(conn, first + 1, "the first one is still connecting");
    assert!(
        message.contains("1 connections of this forward are still connecting"),
        "{message}"
    );
}

#[tokio::test]
async fn a_draining_session_opens_no_remote_forward_and_dials_nothing_new() {
    let service = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let destination = service.local_addr().unwrap();
    let mut lab = welcomed_remote(&[destination.to_string()], |_| {}).await;
    remote_forward(&mut lab.tab, 1, "127.0.0.1", destination.port()).await;
    // An open connection keeps the session through the drain.
    let first = TAB_OPENED + 1;
    dial(&mut lab.tab, first, 1).await;
    let (mut server, _) = tokio::time::timeout(DEADLINE, service.accept())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(lab.tab.frame().await, Frame::Credit { conn, .. } if conn == first));
    lab.shutdown.drain();
    // The drain has reached the session once a new forward is refused for it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut forward = 2;
    loop {
        match remote_forward(&mut lab.tab, forward, "127.0.0.1", destination.port()).await {
            Frame::ListenFailed { code, message, .. } => {
                assert_eq!(code, ErrorCode::ShuttingDown);
                assert_eq!(
                    message,
                    "the relay is shutting down and opens no new forwards"
                );
                break;
            }
            Frame::Listening { .. } => {
                assert!(tokio::time::Instant::now() < deadline, "still opening");
                lab.tab.send(Frame::Unlisten { forward }).await;
                forward += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("expected ListenFailed, got {other:?}"),
        }
    }
    // The forward's next connection is refused, and the relay connects to nothing.
    dial(&mut lab.tab, first + 1, 1).await;
    let Frame::OpenFailed { conn, message, .. } = lab.tab.frame().await else {
        panic!("expected OpenFailed");
    };
    assert_eq!(
        (conn, message.as_str()),
        (first + 1, "the relay is shutting down")
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), service.accept())
            .await
            .is_err()
    );
    // The open one still carries bytes.
    lab.tab
        .send(Frame::Data {
            conn: first,
            data: Bytes::from_static(b"still flowing"),
        })
        .await;
    assert_eq!(read_exactly(&mut server, 13).await, b"still flowing");
}
