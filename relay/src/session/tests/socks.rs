//! Dynamic forwards in the session loop: real SOCKS clients on loopback, the tab's
//! frames by hand.

use tabtunnel_proto::OpenFailure;

use super::*;

/// A session past its Welcome whose forwards listen in a range of their own: the other
/// session tests check that ports they free are free at once, and these must not take
/// them meanwhile.
async fn welcomed_socks(extra_toml: &str, adjust: impl FnOnce(&mut Config)) -> (Lab, TcpStream) {
    let mut lab = lab(extra_toml, |config| {
        config.forward_ports = 43000..=43999;
        adjust(config);
    })
    .await;
    let welcome = lab.tab.hello("lab").await;
    assert!(matches!(welcome, Frame::Welcome { .. }), "{welcome:?}");
    let (ssh, _) = tokio::time::timeout(DEADLINE, lab.sshd.accept())
        .await
        .unwrap()
        .unwrap();
    (lab, ssh)
}

/// Opens dynamic forward 1 on a free loopback port; returns its address.
async fn listen_socks(tab: &mut Tab, username: &str, password: &str) -> SocketAddr {
    tab.send(Frame::ListenSocks {
        forward: 1,
        bind: "127.0.0.1".into(),
        port: 0,
        username: username.into(),
        password: password.into(),
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

fn socks5_request(kind: u8, addr: &[u8], port: u16) -> Vec<u8> {
    let mut message = vec![5, 1, 0, kind];
    message.extend_from_slice(addr);
    message.extend_from_slice(&port.to_be_bytes());
    message
}

/// A SOCKS5 client past its greeting (no authentication).
async fn greeted(address: SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(address).await.unwrap();
    client.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(read_exactly(&mut client, 2).await, [5, 0]);
    client
}

/// The tab's Connect and the relay's Credit for it.
async fn connect_frame(tab: &mut Tab) -> (u32, String, u16) {
    let Frame::Connect {
        conn,
        forward: 1,
        host,
        port,
        peer,
    } = tab.frame().await
    else {
        panic!("expected Connect");
    };
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    assert_eq!(
        tab.frame().await,
        Frame::Credit {
            conn,
            bytes: CONNECTION_WINDOW
        }
    );
    (conn, host, port)
}

const SUCCESS: [u8; 10] = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];

#[tokio::test]
async fn a_socks5_client_names_its_destination_and_is_answered_when_the_tab_opens_it() {
    let (mut lab, _ssh) = welcomed_socks("", |_| {}).await;
    let address = listen_socks(&mut lab.tab, "", "").await;
    let mut client = greeted(address).await;
    // A name no resolver knows: the relay passes it on as it came, for the SSH server.
    let mut request = socks5_request(3, b"\x0fno-such.invalid", 8080);
    request.extend_from_slice(b"early");
    client.write_all(&request).await.unwrap();
    let (conn, host, port) = connect_frame(&mut lab.tab).await;
    assert_eq!((conn, host.as_str(), port), (1, "no-such.invalid", 8080));
    // The tab opened its channel: its Credit is the client's success, and its bytes
    // follow the reply.
    lab.tab
        .send(Frame::Credit {
            conn,
            bytes: CONNECTION_WINDOW,
        })
        .await;
    lab.tab
        .send(Frame::Data {
            conn,
            data: Bytes::from_static(b"pong"),
        })
        .await;
    assert_eq!(
        read_exactly(&mut client, 14).await,
        [&SUCCESS[..], b"pong"].concat()
    );
    // What the client sent after its request, before the reply, is its first bytes.
    assert_eq!(
        lab.tab.frame().await,
        Frame::Data {
            conn,
            data: Bytes::from_static(b"early")
        }
    );
    client.write_all(b"ping").await.unwrap();
    assert_eq!(
        lab.tab.frame().await,
        Frame::Data {
            conn,
            data: Bytes::from_static(b"ping")
        }
    );
    lab.tab.send(Frame::Eof { conn }).await;
    assert_eq!(read_to_end(&mut client).await.unwrap(), b"");
}

#[tokio::test]
async fn the_tabs_open_failure_is_the_clients_reply_code() {
    let (mut lab, _ssh) = welcomed_socks("", |_| {}).await;
    let address = listen_socks(&mut lab.tab, "", "").await;
    for (failure, code) in [
        (OpenFailure::NotAllowed, 2),
        (OpenFailure::Refused, 5),
        (OpenFailure::HostUnreachable, 4),
    ] {
        let mut client = greeted(address).await;
        client
            .write_all(&socks5_request(1, &[10, 0, 0, 1], 22))
            .await
            .unwrap();
        let (conn, host, _) = connect_frame(&mut lab.tab).await;
        assert_eq!(host, "10.0.0.1");
        lab.tab
            .send(Frame::OpenFailed {
                conn,
                failure,
                message: "administratively prohibited".into(),
            })
            .await;
        let reply = read_to_end(&mut client).await.unwrap();
        assert_eq!(reply, [5, code, 0, 1, 0, 0, 0, 0, 0, 0], "{failure:?}");
    }
    // SOCKS4a: one code for every failure; the name travels as it came.
    let mut client = TcpStream::connect(address).await.unwrap();
    client
        .write_all(b"\x04\x01\x00\x50\x00\x00\x00\x01me\x00localhost\x00")
        .await
        .unwrap();
    let (conn, host, port) = connect_frame(&mut lab.tab).await;
    assert_eq!((host.as_str(), port), ("localhost", 80));
    lab.tab
        .send(Frame::OpenFailed {
            conn,
            failure: OpenFailure::Refused,
            message: "Connection refused".into(),
        })
        .await;
    assert_eq!(
        read_to_end(&mut client).await.unwrap(),
        [0, 0x5B, 0, 0, 0, 0, 0, 0]
    );
    // An OpenFailed for a connection the tab already took breaks the rules.
    let mut client = greeted(address).await;
    client
        .write_all(&socks5_request(1, &[10, 0, 0, 1], 22))
        .await
        .unwrap();
    let (conn, _, _) = connect_frame(&mut lab.tab).await;
    lab.tab.send(Frame::Credit { conn, bytes: 1000 }).await;
    assert_eq!(read_exactly(&mut client, 10).await, SUCCESS);
    lab.tab
        .send(Frame::OpenFailed {
            conn,
            failure: OpenFailure::General,
            message: String::new(),
        })
        .await;
    let (code, message, _) = lab.tab.error().await;
    assert_eq!(code, ErrorCode::Protocol);
    assert!(message.contains("already taken"), "{message}");
}

#[tokio::test]
async fn a_malformed_handshake_gets_its_error_reply_and_costs_the_session_nothing() {
    let (mut lab, _ssh) = welcomed_socks("", |_| {}).await;
    let address = listen_socks(&mut lab.tab, "", "").await;
    let mut bad = greeted(address).await;
    bad.write_all(&[5, 2, 0, 1, 1, 2, 3, 4, 0, 80])
        .await
        .unwrap(); // BIND
    assert_eq!(
        read_to_end(&mut bad).await.unwrap(),
        [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]
    );
    let mut http = TcpStream::connect(address).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(read_to_end(&mut http).await.map_or(true, |b| b.is_empty()));
    // The tab heard of neither; the next good client is connection 1.
    let mut good = greeted(address).await;
    good.write_all(&socks5_request(1, &[127, 0, 0, 1], 80))
        .await
        .unwrap();
    let (conn, _, _) = connect_frame(&mut lab.tab).await;
    assert_eq!(conn, 1);
}

#[tokio::test]
async fn a_wide_bind_needs_credentials_and_its_clients_must_give_them() {
    let (mut lab, _ssh) = welcomed_socks("allowed_binds = [\"0.0.0.0\"]", |_| {}).await;
    lab.tab
        .send(Frame::ListenSocks {
            forward: 1,
            bind: "0.0.0.0".into(),
            port: 0,
            username: String::new(),
            password: String::new(),
        })
        .await;
    let Frame::ListenFailed {
        forward: 1,
        code,
        message,
    } = lab.tab.frame().await
    else {
        panic!("expected ListenFailed");
    };
    assert_eq!(code, ErrorCode::BindNotAllowed);
    assert!(
        message.contains("open proxy") && message.contains("username and password"),
        "{message}"
    );
    lab.tab
        .send(Frame::ListenSocks {
            forward: 2,
            bind: "0.0.0.0".into(),
            port: 0,
            username: "alice".into(),
            password: "s3cret".into(),
        })
        .await;
    let Frame::Listening {
        forward: 2,
        address,
    } = lab.tab.frame().await
    else {
        panic!("expected Listening");
    };
    let port = address.parse::<SocketAddr>().unwrap().port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    // No authentication offered: refused.
    let mut client = TcpStream::connect(address).await.unwrap();
    client.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(read_to_end(&mut client).await.unwrap(), [5, 0xFF]);
    // A wrong password: refused.
    let mut client = TcpStream::connect(address).await.unwrap();
    client
        .write_all(b"\x05\x01\x02\x01\x05alice\x06s3creT")
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut client).await.unwrap(), [5, 2, 1, 1]);
    // SOCKS4 cannot give one: refused.
    let mut client = TcpStream::connect(address).await.unwrap();
    client
        .write_all(b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00")
        .await
        .unwrap();
    assert_eq!(
        read_to_end(&mut client).await.unwrap(),
        [0, 0x5B, 0, 0, 0, 0, 0, 0]
    );
    // The right ones: through.
    let mut client = TcpStream::connect(address).await.unwrap();
    client
        .write_all(b"\x05\x01\x02\x01\x05alice\x06s3cret")
        .await
        .unwrap();
    assert_eq!(read_exactly(&mut client, 4).await, [5, 2, 1, 0]);
    client
        .write_all(&socks5_request(
            4,
            &std::net::Ipv6Addr::LOCALHOST.octets(),
            443,
        ))
        .await
        .unwrap();
    let Frame::Connect { forward, host, .. } = lab.tab.frame().await else {
        panic!("expected Connect");
    };
    assert_eq!((forward, host.as_str()), (2, "::1"));
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_the_deadline_and_counts_as_waiting_meanwhile() {
    let (mut lab, _ssh) = welcomed_socks("[limits]\npending_accepts_per_forward = 1", |config| {
        config.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let address = listen_socks(&mut lab.tab, "", "").await;
    let mut silent = TcpStream::connect(address).await.unwrap();
    // Wait until the relay took it into its handshake: a greeting answered proves it.
    silent.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(read_exactly(&mut silent, 2).await, [5, 0]);
    // It holds the forward's one waiting place: the next client is refused at once.
    let mut second = TcpStream::connect(address).await.unwrap();
    let Frame::ListenFailed {
        forward: 1, code, ..
    } = lab.tab.frame().await
    else {
        panic!("expected the refusal notice");
    };
    assert_eq!(code, ErrorCode::Limit);
    assert!(
        read_to_end(&mut second)
            .await
            .map_or(true, |b| b.is_empty())
    );
    // The silent one is closed at the deadline, and its place is free again.
    assert!(
        read_to_end(&mut silent)
            .await
            .map_or(true, |b| b.is_empty())
    );
    let mut third = greeted(address).await;
    third
        .write_all(&socks5_request(1, &[127, 0, 0, 1], 80))
        .await
        .unwrap();
    connect_frame(&mut lab.tab).await;
}

#[tokio::test]
async fn a_lost_tab_gets_its_socks_forward_back_on_the_same_listener() {
    let relay = Relay::with(Duration::from_secs(60), |config| {
        config.forward_ports = 43000..=43999;
    })
    .await;
    let (mut tab, secret, _, first) = relay.session(1, None).await;
    let address = listen_socks(&mut tab, "", "").await;
    drop(tab); // lost: the forward is parked
    tokio::time::timeout(DEADLINE, first)
        .await
        .unwrap()
        .unwrap();
    parked(&relay, 1).await;
    // A SOCKS client that comes meanwhile waits in the listen backlog, its greeting sent.
    let mut waiting = TcpStream::connect(address).await.unwrap();
    waiting.write_all(&[5, 1, 0]).await.unwrap();
    let (mut tab, _, resumed, _second) = relay.session(2, secret).await;
    assert!(resumed);
    tab.send(Frame::ListenSocks {
        forward: 9,
        bind: "127.0.0.1".into(),
        port: address.port(),
        username: String::new(),
        password: String::new(),
    })
    .await;
    assert_eq!(
        tab.frame().await,
        Frame::Listening {
            forward: 9,
            address: address.to_string()
        }
    );
    // The waiting client's handshake goes on with the resumed forward.
    assert_eq!(read_exactly(&mut waiting, 2).await, [5, 0]);
    waiting
        .write_all(&socks5_request(3, b"\x09localhost", 22))
        .await
        .unwrap();
    let Frame::Connect { forward, host, .. } = tab.frame().await else {
        panic!("expected Connect");
    };
    assert_eq!((forward, host.as_str()), (9, "localhost"));
}

#[tokio::test]
async fn wrong_logins_spend_the_forwards_budget_and_then_nobody_may_try() {
    let (mut lab, _ssh) = welcomed_socks("", |_| {}).await;
    let address = listen_socks(&mut lab.tab, "alice", "s3cret").await;
    let burst = crate::socks_forward::WRONG_LOGIN_BURST as usize;
    for guess in 0..burst {
        let mut client = TcpStream::connect(address).await.unwrap();
        let login = format!("\x05\x01\x02\x01\x05alice\x06guess{guess}");
        client.write_all(login.as_bytes()).await.unwrap();
        assert_eq!(read_to_end(&mut client).await.unwrap(), [5, 2, 1, 1]);
    }
    // Spent: even the right password is not looked at now; the client is closed at once.
    let mut client = TcpStream::connect(address).await.unwrap();
    let _ = client
        .write_all(b"\x05\x01\x02\x01\x05alice\x06s3cret")
        .await;
    assert!(
        read_to_end(&mut client)
            .await
            .map_or(true, |b| b.is_empty())
    );
}
