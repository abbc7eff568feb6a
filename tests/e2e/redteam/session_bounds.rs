//! Bounds inside a session: memory per connection, Listen cost, loopback families,
//! WebSocket protocol violations, idle time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::{SinkExt, StreamExt};
use tabtunnel_e2e::fake_tab::FakeTab;
use tabtunnel_e2e::lab::{Lab, echo_forward};
use tabtunnel_e2e::relay::{Relay, RelayProcess};
use tabtunnel_e2e::services::exchange;
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{init_logging, log_in, process_memory, sshd_login};
use tabtunnel_proto::{CONNECTION_WINDOW, ErrorCode, Frame, MAX_DATA, decode, encode_to_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const MIB: f64 = (1 << 20) as f64;
/// Stalled connections of one session in the memory attack.
const STALLED: usize = 4;
/// What four stalled connections may cost the relay, whatever the frame sizes: four
/// windows of 256 KiB and their bookkeeping fit many times over.
const MEMORY_BOUND: u64 = 8 << 20;

/// What the relay did with a flood of one-byte Data frames to connections whose TCP
/// clients never read.
#[derive(Debug)]
struct Flood {
    /// Full Data frames it took to stall the connections.
    full_frames: usize,
    /// The relay's peak resident memory over its resident memory before the flood, with
    /// the connections stalled by full frames, and after the one-byte frames.
    full_growth: u64,
    tiny_growth: u64,
    /// One-byte Data frames the tab got onto the wire before the relay hung up (or all
    /// it meant to send).
    tiny_frames: usize,
    /// The relay's Error frame and close code, if it ended the session.
    error: Option<(ErrorCode, String)>,
    close: Option<u16>,
}

/// Bytes in flight per connection while stalling it: over half a window, so that when
/// no credit comes back the relay holds Data it cannot write (it grants in half-window
/// steps), and under a window by enough for a thousand frames' overhead however the
/// relay counts them.
const STALL_IN_FLIGHT: u32 = CONNECTION_WINDOW / 2 + 64;

/// A relay process with [`STALLED`] connections of one forward, each filled with full
/// Data frames until the relay's writes to its TCP client are stuck (see
/// [`STALL_IN_FLIGHT`]), and one more connection the tab has closed.
struct Stalled {
    relay: RelayProcess,
    pid: u32,
    tab: FakeTab,
    /// The TCP clients, which never read.
    clients: Vec<TcpStream>,
    conns: Vec<u32>,
    /// A connection the tab closed: Data for it is read, then dropped.
    closed_conn: u32,
    /// The relay's resident memory before the stalling, and its peak after.
    base: u64,
    full_frames: usize,
    full_peak: u64,
}

async fn stall_connections(sshd: &Sshd) -> Result<Stalled> {
    let target = format!("sshd={}", sshd.address());
    let relay = RelayProcess::start(&["--target", &target], "warn").await?;
    let pid = relay.pid()?;
    // A tab speaking frames by hand (no SSH), with one forward.
    let mut tab = FakeTab::hello(&relay.ws_url(), "sshd", "").await?;
    tab.next_matching(|f| matches!(f, Frame::Welcome { .. }).then_some(()))
        .await?;
    let address = tab.listening("").await?;

    let mut clients = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..=STALLED {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        clients.push(socket.connect(address.parse()?).await?);
        let conn = tab
            .next_matching(|f| match f {
                Frame::Accept { conn, .. } => Some(conn),
                _ => None,
            })
            .await?;
        // As a tab does once its SSH channel is open; the TCP client sends nothing.
        let credit = Frame::Credit {
            conn,
            bytes: CONNECTION_WINDOW,
        };
        tab.send(&credit).await?;
        conns.push(conn);
    }
    let closed_conn = conns.pop().context("no connection")?;
    let close = Frame::Close {
        conn: closed_conn,
        reason: String::new(),
    };
    tab.send(&close).await?;
    let (base, _) = process_memory(pid)?;

    let payload = bytes::Bytes::from(vec![b'x'; MAX_DATA]);
    let mut full_frames = 0;
    for &conn in &conns {
        // Bytes sent and not yet granted back.
        let mut in_flight = 0u32;
        let mut frames = 0;
        loop {
            while in_flight < STALL_IN_FLIGHT {
                let n = (STALL_IN_FLIGHT - in_flight).min(MAX_DATA as u32);
                let data = payload.slice(..n as usize);
                tab.send(&Frame::Data { conn, data }).await?;
                in_flight += n;
                frames += 1;
            }
            anyhow::ensure!(frames < 1000, "connection {conn} never stalled");
            // Stalled when no credit comes back for a second.
            let granted = tokio::time::timeout(
                Duration::from_secs(1),
                tab.next_matching(|f| match f {
                    Frame::Credit { conn: c, bytes } if c == conn => Some(bytes),
                    _ => None,
                }),
            )
            .await;
            match granted {
                Ok(bytes) => in_flight = in_flight.saturating_sub(bytes?),
                Err(_) => break,
            }
        }
        full_frames += frames;
    }
    let (_, full_peak) = process_memory(pid)?;
    Ok(Stalled {
        relay,
        pid,
        tab,
        clients,
        conns,
        closed_conn,
        base,
        full_frames,
        full_peak,
    })
}

/// Opens [`STALLED`] connections to a forward of a fresh relay process, whose TCP
/// clients never read. Fills each with full Data frames, within credit and keeping
/// [`STALL_IN_FLIGHT`] bytes in flight, until the relay stops granting credit: its
/// writes to the TCP client are stuck, and the kernel's buffers are full. Then sends
/// the connections, in turns, one-byte frames for the rest of their credit counted in
/// payload bytes, and reads the relay's peak memory once it has processed them all,
/// or ended the session.
async fn flood_stalled_connections(sshd: &Sshd) -> Result<Flood> {
    let Stalled {
        relay: _relay,
        pid,
        tab: FakeTab { ws, .. },
        clients,
        conns,
        base,
        full_frames,
        full_peak,
        ..
    } = stall_connections(sshd).await?;
    let payload = bytes::Bytes::from(vec![b'x'; MAX_DATA]);

    let (mut tx, mut rx) = ws.split();
    let closed = Arc::new(AtomicBool::new(false));
    let closed_by_relay = closed.clone();
    // Collects the relay's goodbye and its answer to the tab's barrier ping.
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<()>(1);
    let reader = tokio::spawn(async move {
        let (mut error, mut close) = (None, None);
        while let Some(Ok(message)) = rx.next().await {
            match message {
                Message::Binary(data) => {
                    if let Ok(Frame::Error { code, message }) = decode(data) {
                        error = Some((code, message));
                    }
                }
                Message::Pong(data) if &data[..] == b"barrier" => {
                    let _ = pong_tx.try_send(());
                }
                Message::Close(frame) => {
                    close = frame.map(|f| u16::from(f.code));
                    break;
                }
                _ => {}
            }
        }
        closed_by_relay.store(true, Ordering::SeqCst);
        (error, close)
    });

    // What is left of the window, counted in payload bytes: as many one-byte frames, and
    // then some. The kernel takes a share first: one-byte writes to a stalled socket are
    // appended to the tail of its send queue (up to a segment of 64 KiB each), and the
    // relay rightly counts bytes the kernel took as consumed. So the tab keeps sending
    // until the relay hangs up, bounded at four times what the old rule allowed.
    let left = (CONNECTION_WINDOW - STALL_IN_FLIGHT) as usize;
    let mut tiny_frames = 0;
    'flood: for _ in 0..left * 4 {
        for &conn in &conns {
            if closed.load(Ordering::SeqCst) {
                break 'flood;
            }
            let data = payload.slice(..1);
            let frame = Frame::Data { conn, data };
            if tx
                .feed(Message::Binary(encode_to_bytes(&frame)))
                .await
                .is_err()
            {
                break 'flood;
            }
            tiny_frames += 1;
            if tiny_frames % 256 == 0 && tx.flush().await.is_err() {
                break 'flood;
            }
        }
    }
    // The relay answers a ping after it has processed every frame sent before it.
    let _ = tx.send(Message::Ping(b"barrier".to_vec().into())).await;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            _ = pong_rx.recv() => {}
            _ = async { while !closed.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            } } => {}
        }
    })
    .await;
    let (_, tiny_peak) = process_memory(pid)?;
    ended.context("the relay neither answered the barrier ping nor hung up within 20 s")?;
    let (error, close) = if closed.load(Ordering::SeqCst) {
        reader.await?
    } else {
        reader.abort();
        (None, None)
    };
    drop(clients);
    Ok(Flood {
        full_frames,
        full_growth: full_peak.saturating_sub(base),
        tiny_growth: tiny_peak.saturating_sub(base),
        tiny_frames,
        error,
        close,
    })
}

/// Finding 11: the window counted payload bytes only, so a tab could queue 256 Ki
/// one-byte frames per connection in the relay (a slot and a buffer each): +65 MiB for
/// four stalled connections, where full frames cost +1.6 MiB. Each frame now costs its
/// bytes plus a fixed overhead, and the relay ends the session of a tab that sends more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_data_frames_cannot_outgrow_the_window() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let flood = flood_stalled_connections(&sshd).await?;
    eprintln!(
        "{STALLED} connections stalled by {} full frames: relay RSS +{:.2} MiB; then {} one-byte \
         frames: relay RSS +{:.2} MiB; error {:?}, close {:?}",
        flood.full_frames,
        flood.full_growth as f64 / MIB,
        flood.tiny_frames,
        flood.tiny_growth as f64 / MIB,
        flood.error,
        flood.close
    );
    let (code, message) = flood.error.clone().with_context(|| {
        format!(
            "the relay queued {} one-byte frames without complaint, and grew by {:.1} MiB",
            flood.tiny_frames,
            flood.tiny_growth as f64 / MIB
        )
    })?;
    assert_eq!(code, ErrorCode::Protocol);
    assert!(message.contains("beyond its credit"), "{message}");
    assert_eq!(flood.close, Some(1002));
    assert!(
        flood.tiny_growth < MEMORY_BOUND,
        "four stalled connections grew the relay by {:.1} MiB",
        flood.tiny_growth as f64 / MIB
    );
    Ok(())
}

/// A queued Data frame must hold no more memory than it is charged for. A frame read
/// from the WebSocket shares the buffer it was read into (tungstenite reads 128 KiB at
/// a time), so one one-byte frame queued for a stalled connection, read with 128 KiB
/// of frames that went elsewhere, kept that whole buffer alive: a window's worth of
/// such frames could hold hundreds of MiB. What a connection queues is its own copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_one_byte_frame_does_not_pin_its_read_buffer() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let Stalled {
        relay: _relay,
        pid,
        tab: FakeTab { mut ws, .. },
        clients: _clients,
        conns,
        closed_conn,
        ..
    } = stall_connections(&sshd).await?;
    let (before, _) = process_memory(pid)?;
    // Well within the stalled connections' credit, however the relay counts it.
    const ROUNDS: usize = 1000;
    let payload = bytes::Bytes::from(vec![b'x'; MAX_DATA]);
    for round in 0..ROUNDS {
        let conn = conns[round % STALLED];
        let tiny = Frame::Data {
            conn,
            data: payload.slice(..1),
        };
        ws.feed(Message::Binary(encode_to_bytes(&tiny))).await?;
        // Read, then dropped: the connection is closed.
        for _ in 0..2 {
            let full = Frame::Data {
                conn: closed_conn,
                data: payload.clone(),
            };
            ws.feed(Message::Binary(encode_to_bytes(&full))).await?;
        }
        if round % 16 == 0 {
            ws.flush().await?;
        }
    }
    // The relay answers a ping after it has processed every frame sent before it.
    ws.send(Message::Ping(b"barrier".to_vec().into())).await?;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws
                .next()
                .await
                .context("the relay closed the WebSocket")??
            {
                Message::Pong(data) if &data[..] == b"barrier" => return Ok(()),
                Message::Binary(data) => {
                    if let Frame::Error { code, message } = decode(data)? {
                        anyhow::bail!("the relay refused: {code:?} {message}");
                    }
                }
                Message::Close(frame) => anyhow::bail!("the relay closed: {frame:?}"),
                _ => {}
            }
        }
    })
    .await
    .context("the relay did not answer the barrier ping within 30 s")??;
    let (_, peak) = process_memory(pid)?;
    let growth = peak.saturating_sub(before);
    eprintln!(
        "{ROUNDS} one-byte frames queued for {STALLED} stalled connections, each read with \
         128 KiB of other frames: relay RSS +{:.2} MiB",
        growth as f64 / MIB
    );
    assert!(
        growth < MEMORY_BOUND,
        "{ROUNDS} queued one-byte frames grew the relay by {:.1} MiB",
        growth as f64 / MIB
    );
    Ok(())
}

/// Charging frames their overhead changed what credit means, so it is protocol version
/// 2: a page of version 1 (cached in a browser) would overrun the relay's windows. The
/// relay refuses it at the Hello and says to reload.
#[tokio::test]
async fn a_page_of_the_previous_protocol_version_is_told_to_reload() -> Result<()> {
    init_logging();
    let relay = Relay::start(&[("sshd", "127.0.0.1:9")]).await?;
    let mut tab = FakeTab::connect(&relay.ws_url()).await?;
    let hello = Frame::Hello {
        version: 1,
        target: "sshd".into(),
        token: String::new(),
        resume: None,
    };
    tab.send(&hello).await?;
    let (error, close) = tab.goodbye(Duration::from_secs(20)).await?;
    let (code, message) = error.context("no Error frame")?;
    assert_eq!(code, ErrorCode::Version);
    assert!(
        message.contains("protocol version 1") && message.contains("reload the page"),
        "{message}"
    );
    assert_eq!(close, Some(1002));
    Ok(())
}

/// Finding 13: a tab that breaks the WebSocket protocol (RFC 6455) is told so with
/// `Error{Protocol}` and close code 1002, not an orderly 1000.
#[tokio::test]
async fn websocket_protocol_violations_end_the_session_with_1002() -> Result<()> {
    let Lab { sshd, relay, .. } = Lab::start().await?;
    let good = log_in(&relay.ws_url(), sshd_login(&sshd)).await?;
    let (_echo, fwd) = echo_forward(&good).await?;

    let binary = encode_to_bytes(&Frame::Ssh(bytes::Bytes::from_static(b"x")));
    let violations: [(&str, Vec<u8>); 5] = [
        ("an unmasked binary frame", ws_frame(0x82, &binary, None)),
        (
            "a masked frame with RSV1 set",
            ws_frame(0x82 | 0x40, &binary, Some(MASK)),
        ),
        ("a reserved opcode", ws_frame(0x83, &binary, Some(MASK))),
        ("a fragmented ping", ws_frame(0x09, b"ping", Some(MASK))),
        (
            "a close reason that is not UTF-8",
            ws_frame(0x88, &[0x03, 0xe8, 0xff, 0xfe], Some(MASK)),
        ),
    ];
    let mut endings = Vec::new();
    for (what, frame) in violations {
        let (error, close) = violate(&relay, &frame).await.context(what)?;
        eprintln!("{what}: close {close:?}, error {error:?}");
        endings.push((what, error, close));
    }
    for (what, error, close) in endings {
        assert_eq!(close, Some(1002), "{what}: close code");
        let (code, message) = error.with_context(|| format!("{what}: no Error frame"))?;
        assert_eq!(code, ErrorCode::Protocol, "{what}");
        assert!(
            message.contains("the tab broke the WebSocket protocol"),
            "{what}: {message}"
        );
    }

    // The well-behaved session on the same relay did not notice.
    assert_eq!(exchange(fwd.listen(), b"unaffected").await?, b"unaffected");
    assert!(good.closed_reason().is_none());
    Ok(())
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One WebSocket frame as a client writes it: `first` is FIN, RSV and opcode; `mask`
/// masks the payload (RFC 6455 requires it of clients). Payloads under 126 bytes.
fn ws_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut out = vec![first, payload.len() as u8];
    match mask {
        Some(mask) => {
            out[1] |= 0x80;
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A tab whose WebSocket is written by hand: the upgrade, a masked Hello, the Welcome,
/// then `bad`. Returns the relay's Error frame and close code.
async fn violate(relay: &Relay, bad: &[u8]) -> Result<(Option<(ErrorCode, String)>, Option<u16>)> {
    let mut tcp = TcpStream::connect(relay.addr).await?;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        relay.addr
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(head.len() < 4096, "no end to the upgrade response");
        head.push(tcp.read_u8().await?);
    }
    let head = String::from_utf8_lossy(&head);
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");

    let hello = encode_to_bytes(&Frame::Hello {
        version: tabtunnel_proto::VERSION,
        target: "sshd".into(),
        token: String::new(),
        resume: None,
    });
    tcp.write_all(&ws_frame(0x82, &hello, Some(MASK))).await?;
    let read = async {
        let (mut welcomed, mut error, mut close) = (false, None, None);
        while let Some((opcode, payload)) = read_ws_frame(&mut tcp).await? {
            match opcode {
                0x2 => match decode(payload.into())? {
                    Frame::Welcome { .. } if !welcomed => {
                        welcomed = true;
                        tcp.write_all(bad).await?;
                    }
                    Frame::Error { code, message } => error = Some((code, message)),
                    _ => {}
                },
                0x8 => {
                    close = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    break;
                }
                _ => {}
            }
        }
        anyhow::ensure!(welcomed, "the relay closed before its Welcome");
        Ok((error, close))
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .context("the relay did not close the WebSocket within 20 s")?
}

/// One frame from the relay (unmasked, unfragmented as the relay sends them):
/// opcode and payload; `None` at the end of the stream.
async fn read_ws_frame(tcp: &mut TcpStream) -> Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 2];
    match tcp.read_exact(&mut head).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
        Err(err) => return Err(err.into()),
    }
    let len = match head[1] & 0x7f {
        126 => u64::from(tcp.read_u16().await?),
        127 => tcp.read_u64().await?,
        n => u64::from(n),
    };
    anyhow::ensure!(len <= 1 << 20, "a {len}-byte frame from the relay");
    let mut payload = vec![0u8; len as usize];
    tcp.read_exact(&mut payload).await?;
    Ok(Some((head[0] & 0x0f, payload)))
}

/// A relay turned against its tabs: it passes Ssh bytes between the tab and a real
/// sshd and answers the tab's Listen; then it accepts one connection, and once the tab
/// has opened its SSH channel and granted credit, stops reading the tab (so the tab's
/// writes to the channel stall) and sends `frames` one-byte Data frames. Returns how
/// many went out before the tab hung up, and the WebSocket's reading half, which keeps
/// it open (a reset would end the tab's session for another reason).
async fn rogue_relay(
    listener: tokio::net::TcpListener,
    sshd: String,
    frames: usize,
) -> Result<(
    usize,
    futures::stream::SplitStream<WebSocketStream<MaybeTlsStream<TcpStream>>>,
)> {
    let (tcp, _) = listener.accept().await?;
    let ws = tokio_tungstenite::accept_async(MaybeTlsStream::Plain(tcp)).await?;
    let (mut tx, mut rx) = ws.split();
    let (out, mut outgoing) = tokio::sync::mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        while let Some(frame) = outgoing.recv().await {
            let data = matches!(frame, Frame::Data { .. });
            if tx
                .feed(Message::Binary(encode_to_bytes(&frame)))
                .await
                .is_err()
            {
                break;
            }
            sent += usize::from(data);
            if outgoing.is_empty() && tx.flush().await.is_err() {
                break;
            }
        }
        sent
    });
    let Some(Ok(Message::Binary(hello))) = rx.next().await else {
        anyhow::bail!("no Hello");
    };
    anyhow::ensure!(matches!(decode(hello)?, Frame::Hello { .. }), "not a Hello");
    let (mut ssh_read, mut ssh_write) = TcpStream::connect(&sshd).await?.into_split();
    out.send(Frame::Welcome {
        version: tabtunnel_proto::VERSION,
        pinned_host_keys: vec![],
        resume: None,
        resumed: false,
    })
    .await?;
    let to_tab = out.clone();
    let from_sshd = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = ssh_read.read(&mut buf).await {
            let data = bytes::Bytes::copy_from_slice(&buf[..n]);
            if to_tab.send(Frame::Ssh(data)).await.is_err() {
                break;
            }
        }
    });
    // The tab's side until it grants credit for the accepted connection.
    let conn = 1;
    loop {
        let message = rx.next().await.context("the tab left")??;
        let Message::Binary(data) = message else {
            continue;
        };
        match decode(data)? {
            Frame::Ssh(bytes) => ssh_write.write_all(&bytes).await?,
            Frame::Listen { forward, .. } => {
                out.send(Frame::Listening {
                    forward,
                    address: "127.0.0.1:9".into(),
                })
                .await?;
                out.send(Frame::Accept {
                    conn,
                    forward,
                    peer: "127.0.0.1:40000".into(),
                })
                .await?;
            }
            Frame::Credit { conn: 1, .. } => break,
            _ => {}
        }
    }
    // From here on the tab's frames go unread: its SSH writes back up, and so do the
    // connection's frames in the tab, within whatever its window allows.
    for _ in 0..frames {
        let data = bytes::Bytes::from_static(b"x");
        if out.send(Frame::Data { conn, data }).await.is_err() {
            break;
        }
    }
    drop(out);
    // The writer ends when every sender is gone, sshd's pump's included.
    from_sshd.abort();
    let _ = from_sshd.await;
    let sent = tokio::time::timeout(Duration::from_secs(30), writer).await??;
    Ok((sent, rx))
}

/// Finding 11, the other way: a relay (or whatever sits between) that sends a tab
/// one-byte Data frames within a window counted in payload bytes could queue 256 Ki of
/// them per connection in the tab. The tab charges each frame's overhead too, and ends
/// the session once the relay sends more than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_does_not_queue_a_flood_of_one_byte_frames() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    // A destination that accepts and never reads.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_port = sink.local_addr()?.port();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = sink.accept().await {
            held.push(stream);
        }
    });
    // A small receive buffer: the tab's writes back up soon after the rogue stops reading.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let listener = socket.listen(1)?;
    let url = format!("ws://{}/ws", listener.local_addr()?);
    let frames = CONNECTION_WINDOW as usize;
    let rogue = tokio::spawn(rogue_relay(listener, sshd.address(), frames));

    let session = log_in(&url, sshd_login(&sshd)).await?;
    // The tab is this process: its memory, for the record (other tests share it).
    let (base, _) = process_memory(std::process::id())?;
    let _fwd = session.forward(&format!("0:127.0.0.1:{sink_port}")).await?;
    let (sent, _open) = tokio::time::timeout(Duration::from_secs(60), rogue).await???;
    let (_, peak) = process_memory(std::process::id())?;
    eprintln!(
        "the rogue relay sent {sent} one-byte frames; the tab's process grew by {:.2} MiB",
        peak.saturating_sub(base) as f64 / MIB
    );
    let reason = tokio::time::timeout(Duration::from_secs(10), session.closed())
        .await
        .with_context(|| {
            format!("the tab took {sent} one-byte Data frames for a stalled connection without complaint")
        })?;
    eprintln!("the tab ended the session: {reason}");
    assert!(reason.contains("beyond its credit"), "{reason}");
    held.abort();
    Ok(())
}
