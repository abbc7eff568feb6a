//! The front door: TCP connections, HTTP requests and TLS handshakes held without
//! credentials, and the client address behind trusted proxies.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use tabtunnel_client::{ClientError, ErrorCode};
use tabtunnel_e2e::fake_tab::{FakeTab, socket_from};
use tabtunnel_e2e::nginx::Nginx;
use tabtunnel_e2e::relay::{Relay, RelayProcess, TEST_FORWARD_PORTS, web_dir};
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{init_logging, log_in, sshd_login, wait_for, wait_until_steady};
use tabtunnel_relay::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config() -> Config {
    Config {
        forward_ports: TEST_FORWARD_PORTS,
        web_dir: Some(web_dir()),
        ..Config::default()
    }
}

/// A TCP connection to `addr` from the loopback address `source` (127.0.0.x).
async fn connect_from(source: &str, addr: SocketAddr) -> Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    Ok(socket.connect(addr).await?)
}

/// `GET /healthz` from `source`; the whole response.
async fn healthz_from(source: &str, addr: SocketAddr) -> Result<String> {
    let mut stream = connect_from(source, addr).await?;
    stream
        .write_all(format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// Opens `n` connections to `addr` (from 127.0.0.1) that send nothing, as std sockets
/// (non-blocking) so that [`still_open`] can look at each without waiting.
async fn silent_connections(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpStream>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await?.into_std()?);
    }
    Ok(held)
}

/// Whether the relay has not closed `stream` (what it sent before closing is read away).
fn still_open(mut stream: &std::net::TcpStream) -> bool {
    let mut buf = [0u8; 512];
    for _ in 0..64 {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    false
}

fn count_open(held: &[std::net::TcpStream]) -> u64 {
    held.iter().filter(|s| still_open(s)).count() as u64
}

/// Reads until the relay closes `stream`; how many bytes came. Fails if it stays open
/// for `within`.
async fn closed_by_relay(stream: &mut TcpStream, what: &str, within: Duration) -> Result<Vec<u8>> {
    let mut got = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut got)).await {
        Ok(_) => Ok(got),
        Err(_) => anyhow::bail!("the relay kept {what} open for {within:?}"),
    }
}

#[tokio::test]
async fn idle_half_sent_and_kept_alive_connections_are_closed() -> Result<()> {
    init_logging();
    let relay = Relay::start_with(Config {
        http_header_timeout: Duration::from_secs(1),
        http_idle_timeout: Duration::from_secs(1),
        ..config()
    })
    .await?;
    let within = Duration::from_secs(15);
    let mut idle = TcpStream::connect(relay.addr).await?;
    let mut half = TcpStream::connect(relay.addr).await?;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await?;
    let mut kept = TcpStream::connect(relay.addr).await?;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let started = std::time::Instant::now();
    closed_by_relay(&mut idle, "a connection that never sent a request", within).await?;
    closed_by_relay(&mut half, "a half-sent request", within).await?;
    let answer = closed_by_relay(&mut kept, "an idle kept-alive connection", within).await?;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "the request was answered first: {answer}"
    );
    eprintln!(
        "idle, half-sent and kept-alive connections closed after {:?} (header timeout 1 s)",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_websocket_session_outlives_the_http_timeouts() -> Result<()> {
    init_logging();
    // A WebSocket that stays quiet past the HTTP timeouts is the session's, not HTTP's:
    // it is still open when the session's own Hello timeout ends it, with its message.
    let relay = Relay::start_with(Config {
        http_header_timeout: Duration::from_secs(1),
        http_idle_timeout: Duration::from_secs(1),
        handshake_timeout: Duration::from_secs(3),
        ..config()
    })
    .await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(relay.ws_url()).await?;
    let started = std::time::Instant::now();
    let message = tokio::time::timeout(Duration::from_secs(15), ws.next())
        .await
        .context("the session said nothing")?
        .context("the WebSocket ended without a message")??;
    let data = message.into_data();
    let frame = tabtunnel_proto::decode(data.clone())
        .map_err(|err| anyhow::anyhow!("not a frame ({err:?}): {data:?}"))?;
    assert!(
        matches!(frame, tabtunnel_proto::Frame::Error { .. }),
        "{frame:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the session, not the HTTP timeouts, ended it: {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn idle_connections_beyond_one_address_cap_do_not_lock_out_another() -> Result<()> {
    init_logging();
    let relay = Relay::start_with(Config {
        // Long enough that only the cap can close them while the test runs.
        http_header_timeout: Duration::from_secs(60),
        ..config()
    })
    .await?;
    let cap = relay_limits().connections_per_ip as u64;
    let held = silent_connections(relay.addr, 200).await?;
    let open = wait_until_steady(
        "the relay to close connections over the cap",
        Duration::from_secs(20),
        || count_open(&held),
    )
    .await?;
    assert!(
        open <= cap,
        "{open} idle connections from 127.0.0.1 stay open; the cap is {cap}"
    );
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        healthz_from("127.0.0.2", relay.addr),
    )
    .await
    .context("/healthz from 127.0.0.2 did not answer")??;
    assert!(answer.ends_with("ok\n"), "{answer}");
    eprintln!("200 idle connections from 127.0.0.1: {open} stay open; 127.0.0.2 is served");
    Ok(())
}

fn relay_limits() -> tabtunnel_relay::config::Limits {
    tabtunnel_relay::config::Limits::default()
}

#[tokio::test]
async fn with_256_open_files_258_idle_connections_do_not_silence_the_relay() -> Result<()> {
    init_logging();
    // The finding: under `ulimit -n 256`, 258 idle connections made accept() fail with
    // "Too many open files" for everyone and /healthz went silent.
    let relay =
        RelayProcess::start_limited(&["--target", "x=127.0.0.1:22"], "warn", Some(256)).await?;
    let addr: SocketAddr = relay.addr.parse()?;
    let held = silent_connections(addr, 258).await?;
    let open = wait_until_steady(
        "the relay to close connections over the cap",
        Duration::from_secs(20),
        || count_open(&held),
    )
    .await?;
    let answer = tokio::time::timeout(Duration::from_secs(10), healthz_from("127.0.0.2", addr))
        .await
        .context("/healthz from 127.0.0.2 did not answer")??;
    assert!(answer.ends_with("ok\n"), "{answer}");
    assert!(
        open <= relay_limits().connections_per_ip as u64,
        "{open} of 258 stay open"
    );
    let output = relay.kill().await?;
    assert!(
        output
            .iter()
            .any(|line| line.contains("open-files limit (256)")),
        "the relay says it lowered its connection cap: {output:#?}"
    );
    assert!(
        !output
            .iter()
            .any(|line| line.contains("Too many open files")),
        "{output:#?}"
    );
    Ok(())
}

/// A self-signed certificate for 127.0.0.1 and a client that trusts only it.
fn tls_files(dir: &std::path::Path) -> Result<(Config, Arc<rustls::ClientConfig>)> {
    let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, pair.cert.pem())?;
    std::fs::write(&key, pair.signing_key.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pair.cert.der().clone())?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let config = Config {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..config()
    };
    Ok((config, Arc::new(client)))
}

/// `GET /healthz` over HTTPS from `source`; the whole response.
async fn https_healthz_from(
    source: &str,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<String> {
    let tcp = connect_from(source, addr).await?.into_std()?;
    tokio::task::spawn_blocking(move || -> Result<String> {
        tcp.set_nonblocking(false)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let conn = rustls::ClientConnection::new(tls, name)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        stream.write_all(format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut response = String::new();
        // A relay that closes without close_notify ends the read with an error.
        let _ = stream.read_to_string(&mut response);
        Ok(response)
    })
    .await?
}

#[tokio::test]
async fn silent_connections_from_one_address_do_not_stall_tls_for_another() -> Result<()> {
    init_logging();
    let dir = tempfile::tempdir()?;
    let (config, client) = tls_files(dir.path())?;
    let relay = Relay::start_with(Config {
        // Long, so that the attack stays in force for the whole test: only the caps,
        // not a timeout, may let 127.0.0.2 through.
        tls_first_byte_timeout: Duration::from_secs(40),
        tls_handshake_timeout: Duration::from_secs(40),
        ..config
    })
    .await?;
    // More than the 256 handshakes the relay used to take at once.
    let held = silent_connections(relay.addr, 300).await?;
    let open = wait_until_steady(
        "the relay to close connections over the cap",
        Duration::from_secs(20),
        || count_open(&held),
    )
    .await?;
    let attackers: Vec<_> = held.iter().filter(|s| still_open(s)).collect();
    assert!(!attackers.is_empty(), "some handshakes are waiting");
    let started = std::time::Instant::now();
    let answer = https_healthz_from("127.0.0.2", relay.addr, client).await?;
    let took = started.elapsed();
    assert!(answer.ends_with("ok\n"), "{answer:?}");
    let still = attackers.iter().filter(|s| still_open(s)).count();
    assert_eq!(
        still,
        attackers.len(),
        "127.0.0.2 was served only after the relay gave up on {} silent connections ({took:?})",
        attackers.len() - still
    );
    eprintln!(
        "300 silent connections from 127.0.0.1 ({open} held by the relay): HTTPS from 127.0.0.2 took {took:?}"
    );
    Ok(())
}

/// What a [`Proxy`] tells the relay about its client.
#[derive(Debug, Clone)]
enum Names {
    /// A header line added to the first request, e.g. `X-Forwarded-For: 198.51.100.1`.
    Header(String),
    /// A PROXY protocol v1 line sent before the request, e.g.
    /// `PROXY TCP4 198.51.100.1 127.0.0.1 5555 80`.
    ProxyProtocol(String),
}

/// A reverse proxy, as far as the relay can tell: accepts on a loopback port, connects to
/// the relay from `source`, names the client as `names` says (and sets the relay's own
/// Host) on each connection's first request, then carries bytes both ways. Stopped on
/// drop.
struct Proxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(relay: SocketAddr, source: &'static str, names: Names) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let names = names.clone();
                conns.spawn(async move {
                    let _ = Self::carry(client, relay, source, &names).await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    async fn carry(
        mut client: TcpStream,
        relay: SocketAddr,
        source: &str,
        names: &Names,
    ) -> Result<()> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            anyhow::ensure!(head.len() < 16 * 1024, "request head too long");
            client.read_exact(&mut byte).await?;
            head.push(byte[0]);
        }
        let text = String::from_utf8(head)?;
        let mut lines: Vec<&str> = text
            .trim_end()
            .split("\r\n")
            .filter(|line| !line.to_ascii_lowercase().starts_with("host:"))
            .collect();
        let host = format!("Host: {relay}");
        lines.insert(1, &host);
        let mut upstream = connect_from(source, relay).await?;
        match names {
            Names::Header(header) => lines.push(header),
            Names::ProxyProtocol(line) => {
                upstream.write_all(format!("{line}\r\n").as_bytes()).await?
            }
        }
        upstream
            .write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())
            .await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        Ok(())
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The relay's output without the terminal colours its log has on.
fn plain_output(relay: &RelayProcess) -> Vec<String> {
    relay
        .output()
        .iter()
        .map(|line| {
            let mut plain = String::with_capacity(line.len());
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    // ESC [ ... m
                    for c in chars.by_ref() {
                        if c == 'm' {
                            break;
                        }
                    }
                } else {
                    plain.push(c);
                }
            }
            plain
        })
        .collect()
}

/// A relay for `sshd` that trusts 127.0.0.1 as its proxy (by header, or by the PROXY
/// protocol with `proxy_protocol`), with one session per client address.
async fn relay_behind_proxy(sshd: &Sshd, proxy_protocol: bool) -> Result<Relay> {
    let mut config = Config {
        trusted_proxies: vec!["127.0.0.1/32".parse()?],
        proxy_protocol,
        limits: tabtunnel_relay::config::Limits {
            sessions_per_ip: 1,
            ..relay_limits()
        },
        ..config()
    };
    config.add_target("sshd", &sshd.address(), "test")?;
    Relay::start_with(config).await
}

fn limit_message(err: &ClientError) -> Option<String> {
    match err {
        ClientError::Relay {
            code: ErrorCode::Limit,
            message,
        } => Some(message.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_limits_and_logs_see_the_real_client() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "[limits]\nsessions_per_ip = 1\n")?;
    let target = format!("sshd={}", sshd.address());
    let relay = RelayProcess::start(
        &[
            "--target",
            &target,
            "--config",
            file.to_str().context("temp paths are UTF-8")?,
            "--trust-proxy",
            "127.0.0.1/32",
        ],
        "info",
    )
    .await?;
    let addr: SocketAddr = relay.addr.parse()?;
    // Two users behind the trusted proxy (on 127.0.0.1), one per header form.
    let alice = Proxy::start(
        addr,
        "127.0.0.1",
        Names::Header("X-Forwarded-For: 198.51.100.1".into()),
    )
    .await?;
    let bob = Proxy::start(
        addr,
        "127.0.0.1",
        Names::Header(r#"Forwarded: for="[2001:db8::7]:4711";proto=http"#.into()),
    )
    .await?;
    let first = log_in(&alice.ws_url(), sshd_login(&sshd)).await?;
    let err = log_in(&alice.ws_url(), sshd_login(&sshd))
        .await
        .err()
        .context("a second session from 198.51.100.1 is over sessions_per_ip = 1")?;
    let message = limit_message(&err).with_context(|| format!("{err:?}"))?;
    assert!(message.contains("(198.51.100.1)"), "{message}");
    // Another user behind the same proxy has a place of their own.
    let second = log_in(&bob.ws_url(), sshd_login(&sshd)).await?;

    // From an untrusted peer (127.0.0.2) the header is ignored: the peer is the client,
    // and claiming alice's address takes nothing from her.
    let spoofer = Proxy::start(
        addr,
        "127.0.0.2",
        Names::Header("X-Forwarded-For: 198.51.100.9".into()),
    )
    .await?;
    let third = log_in(&spoofer.ws_url(), sshd_login(&sshd)).await?;
    let err = log_in(&spoofer.ws_url(), sshd_login(&sshd))
        .await
        .err()
        .context("a second session from 127.0.0.2 is over the limit")?;
    let message = limit_message(&err).with_context(|| format!("{err:?}"))?;
    assert!(message.contains("(127.0.0.2)"), "{message}");

    let logged = |needle: &'static str| {
        let output = plain_output(&relay);
        async move {
            output
                .iter()
                .any(|line| line.contains(needle))
                .then_some(())
        }
    };
    for needle in [
        "peer=198.51.100.1",
        "peer=[2001:db8::7]:4711",
        "peer=127.0.0.2:",
    ] {
        wait_for(
            &format!("a session log line with {needle}"),
            Duration::from_secs(10),
            || logged(needle),
        )
        .await
        .with_context(|| format!("{:#?}", plain_output(&relay)))?;
    }
    assert!(
        !plain_output(&relay)
            .iter()
            .any(|line| line.contains("198.51.100.9")),
        "an untrusted peer's header never reaches the log"
    );
    first.close().await;
    second.close().await;
    third.close().await;
    Ok(())
}

#[tokio::test]
async fn a_trusted_proxy_is_not_capped_per_address_but_others_are() -> Result<()> {
    init_logging();
    let relay = Relay::start_with(Config {
        http_header_timeout: Duration::from_secs(60),
        trusted_proxies: vec!["127.0.0.1/32".parse()?],
        limits: tabtunnel_relay::config::Limits {
            connections_per_ip: 4,
            ..relay_limits()
        },
        ..config()
    })
    .await?;
    // Every user arrives from the proxy: its connections are many, and all are kept.
    let proxy = silent_connections(relay.addr, 10).await?;
    let mut others = Vec::new();
    for _ in 0..10 {
        others.push(connect_from("127.0.0.2", relay.addr).await?.into_std()?);
    }
    let open = wait_until_steady(
        "the relay to close connections over the cap",
        Duration::from_secs(20),
        || count_open(&others),
    )
    .await?;
    assert_eq!(open, 4, "127.0.0.2 keeps its 4");
    assert_eq!(
        count_open(&proxy),
        10,
        "the trusted proxy keeps all its connections"
    );
    let mut metrics = connect_from("127.0.0.3", relay.addr).await?;
    metrics
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", relay.addr).as_bytes())
        .await?;
    let mut text = String::new();
    metrics.read_to_string(&mut text).await?;
    assert!(
        text.contains("tabtunnel_refusals_total{reason=\"connections\"} 6"),
        "{text}"
    );
    Ok(())
}

/// The TCP state of the relay's side of the connection from local port `client` to
/// `relay`, from /proc/net/tcp (`01` established, `04` FIN-WAIT-1: closed by the relay
/// with data still unsent).
fn relay_side_state(relay: SocketAddr, client: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{:04X}", relay.port());
    let remote = format!(":{client:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() > 3 && fields[1].ends_with(&local) && fields[2].ends_with(&remote))
            .then(|| fields[3].to_owned())
    })
}

#[tokio::test]
async fn a_response_the_client_does_not_read_is_dropped_after_the_idle_timeout() -> Result<()> {
    init_logging();
    let web = tempfile::tempdir()?;
    let size = 8 << 20;
    std::fs::write(web.path().join("big.bin"), tabtunnel_e2e::pattern(7, size))?;
    let relay = Relay::start_with(Config {
        web_dir: Some(web.path().to_owned()),
        http_header_timeout: Duration::from_secs(60),
        http_idle_timeout: Duration::from_secs(1),
        ..config()
    })
    .await?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(relay.addr).await?;
    let port = stream.local_addr()?.port();
    stream
        .write_all(format!("GET /big.bin HTTP/1.1\r\nHost: {}\r\n\r\n", relay.addr).as_bytes())
        .await?;
    // The client reads nothing: the relay's writes stall, and the watchdog closes it.
    wait_for(
        "the relay to close the stalled connection",
        Duration::from_secs(20),
        || async { (relay_side_state(relay.addr, port)? != "01").then_some(()) },
    )
    .await?;
    let got = closed_by_relay(&mut stream, "a stalled response", Duration::from_secs(20)).await?;
    assert!(
        got.len() < size,
        "the response was cut: {} bytes",
        got.len()
    );
    Ok(())
}

#[tokio::test]
async fn the_proxy_protocol_from_a_trusted_proxy_names_the_client() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = relay_behind_proxy(&sshd, true).await?;
    let line = |client: &str| {
        Names::ProxyProtocol(format!(
            "PROXY TCP4 {client} 127.0.0.1 5555 {}",
            relay.addr.port()
        ))
    };
    let alice = Proxy::start(relay.addr, "127.0.0.1", line("198.51.100.1")).await?;
    let bob = Proxy::start(relay.addr, "127.0.0.1", line("198.51.100.2")).await?;
    let first = log_in(&alice.ws_url(), sshd_login(&sshd)).await?;
    let err = log_in(&alice.ws_url(), sshd_login(&sshd))
        .await
        .err()
        .context("a second session from 198.51.100.1 is over sessions_per_ip = 1")?;
    let message = limit_message(&err).with_context(|| format!("{err:?}"))?;
    assert!(message.contains("(198.51.100.1)"), "{message}");
    let second = log_in(&bob.ws_url(), sshd_login(&sshd)).await?;
    // From the trusted proxy, a connection without the header is closed unanswered; from
    // anyone else no header is expected.
    let unnamed = healthz_from("127.0.0.1", relay.addr).await;
    assert!(
        unnamed.as_ref().map_or(true, |answer| answer.is_empty()),
        "closed without an answer (a reset is fine): {unnamed:?}"
    );
    let direct = healthz_from("127.0.0.2", relay.addr).await?;
    assert!(direct.ends_with("ok\n"), "{direct}");
    first.close().await;
    second.close().await;
    Ok(())
}

/// One host commonly holds a whole IPv6 /64 and could take a fresh address for every
/// connection: every per-address limit counts a /64 as one address. Shown through a
/// trusted proxy, which names the clients (tests use loopback addresses only).
#[tokio::test]
async fn one_ipv6_64_counts_as_one_address() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = relay_behind_proxy(&sshd, false).await?;
    let via = |client: &str| Names::Header(format!("X-Forwarded-For: {client}"));
    let first = Proxy::start(relay.addr, "127.0.0.1", via("2001:db8:0:7::1")).await?;
    let neighbour = Proxy::start(relay.addr, "127.0.0.1", via("2001:db8:0:7::2")).await?;
    let elsewhere = Proxy::start(relay.addr, "127.0.0.1", via("2001:db8:0:8::1")).await?;
    let session = log_in(&first.ws_url(), sshd_login(&sshd)).await?;
    let err = log_in(&neighbour.ws_url(), sshd_login(&sshd))
        .await
        .err()
        .context("another address of the same /64 is over sessions_per_ip = 1")?;
    let message = limit_message(&err).with_context(|| format!("{err:?}"))?;
    assert!(message.contains("at most 1 sessions"), "{message}");
    let other = log_in(&elsewhere.ws_url(), sshd_login(&sshd)).await?;
    session.close().await;
    other.close().await;
    Ok(())
}

/// Behind a proxy that sends the PROXY protocol, the connection caps count the client the
/// header names, not the proxy (which is exempt): otherwise one client behind it could
/// take every connection place of the relay.
#[tokio::test]
async fn proxy_protocol_clients_are_capped_per_address() -> Result<()> {
    init_logging();
    let config = Config {
        trusted_proxies: vec!["127.0.0.1/32".parse()?],
        proxy_protocol: true,
        limits: tabtunnel_relay::config::Limits {
            connections_per_ip: 2,
            ..relay_limits()
        },
        ..config()
    };
    let relay = Relay::start_with(config).await?;
    let port = relay.addr.port();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from("127.0.0.1", relay.addr).await?;
        stream
            .write_all(format!("PROXY TCP4 198.51.100.9 127.0.0.1 5555 {port}\r\n").as_bytes())
            .await?;
        held.push(stream);
    }
    // The third connection of 198.51.100.9 is over its cap of 2 and closed at once.
    let mut third = held.pop().context("three connections")?;
    closed_by_relay(
        &mut third,
        "a third connection of one client",
        Duration::from_secs(5),
    )
    .await?;
    // The first two are still open, and another client behind the proxy is served.
    let held: Vec<std::net::TcpStream> = held
        .into_iter()
        .map(|s| s.into_std())
        .collect::<std::io::Result<_>>()?;
    assert_eq!(
        count_open(&held),
        2,
        "the client's first two connections stay"
    );
    let mut other = connect_from("127.0.0.1", relay.addr).await?;
    other
        .write_all(
            format!(
                "PROXY TCP4 198.51.100.10 127.0.0.1 5555 {port}\r\nGET /healthz HTTP/1.0\r\nHost: {}\r\n\r\n",
                relay.addr
            )
            .as_bytes(),
        )
        .await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), other.read_to_string(&mut answer)).await??;
    assert!(answer.ends_with("ok\n"), "{answer}");
    Ok(())
}

/// A Hello through nginx from the loopback address `source`: `Ok` for a Welcome, else
/// the Error's message.
async fn hello_through(nginx: &Nginx, source: &str) -> Result<(FakeTab, Result<(), String>)> {
    let socket = socket_from(source.parse()?)?;
    let mut ws = FakeTab::connect_with(socket, &format!("ws://{}/ws", nginx.addr)).await?;
    ws.send_hello("sshd", "").await?;
    let answer = ws
        .welcome()
        .await
        .context("no answer to the Hello through nginx")?
        .map_err(|(_, message)| message);
    Ok((ws, answer))
}

/// Finding 10 through a real reverse proxy: behind nginx every client arrives from
/// nginx's address, so without `trusted_proxies` one user's sessions use up the whole
/// class's per-address limit. With nginx trusted, each client is counted on its own.
#[tokio::test]
async fn behind_nginx_each_client_has_its_own_limits() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = relay_behind_proxy(&sshd, false).await?;
    let nginx = Nginx::proxy(relay.addr).await?;
    let (_alice, welcome) = hello_through(&nginx, "127.0.0.2").await?;
    assert_eq!(welcome, Ok(()), "alice's first session");
    let (_bob, welcome) = hello_through(&nginx, "127.0.0.3").await?;
    assert_eq!(
        welcome,
        Ok(()),
        "bob, behind the same nginx, has a place of his own"
    );
    let (_again, refused) = hello_through(&nginx, "127.0.0.2").await?;
    let message = refused
        .err()
        .context("alice's second session is over sessions_per_ip = 1")?;
    assert!(message.contains("(127.0.0.2)"), "{message}");
    Ok(())
}

/// A tab that stops reading while the relay has frames for it, then breaks the protocol:
/// the relay's writer is stuck on the full socket. The session must still let go of the
/// socket, and so of its connection's place, within its goodbye time; a detached writer
/// used to hold both for ever.
#[tokio::test]
async fn a_tab_that_stops_reading_does_not_keep_its_connection_place() -> Result<()> {
    use futures::SinkExt;
    use tabtunnel_proto::Frame;
    use tokio_tungstenite::tungstenite::Message;
    init_logging();
    let sshd = Sshd::start().await?;
    let mut config = Config {
        limits: tabtunnel_relay::config::Limits {
            connections_per_ip: 1,
            ..relay_limits()
        },
        ..config()
    };
    config.add_target("sshd", &sshd.address(), "test")?;
    let relay = Relay::start_with(config).await?;

    // The tab, from 127.0.0.2 with a small receive buffer, takes that address's only place.
    let socket = socket_from("127.0.0.2".parse()?)?;
    socket.set_recv_buffer_size(4096)?;
    let mut tab = FakeTab::connect_with(socket, &relay.ws_url()).await?;
    tab.send_hello("sshd", "").await?;
    let address = tab.listening("127.0.0.1").await?;
    // A TCP client of the forward offers 64 MiB and the tab grants all of it, then reads no
    // more: the relay's sends fill its socket's buffers and its writer is stuck.
    let mut client = TcpStream::connect(&address).await?;
    let conn = tab
        .next_matching(|f| match f {
            Frame::Accept { conn, .. } => Some(conn),
            _ => None,
        })
        .await?;
    tab.send(&Frame::Credit {
        conn,
        bytes: 64 << 20,
    })
    .await?;
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..1024 {
            if client.write_all(&chunk).await.is_err() {
                break;
            }
        }
        client
    });
    // Stuck: what the relay read from the TCP client for the tab stops growing.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut last = 0;
    loop {
        let bytes = metric(relay.addr, "tabtunnel_bytes_up_total").await?;
        if bytes == last && bytes > 1 << 20 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the relay still sends to a tab that reads nothing ({bytes} bytes)"
        );
        last = bytes;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tab.ws.send(Message::Text("not a frame".into())).await?;
    let _ = healthz_from("127.0.0.2", relay.addr).await; // refused while the tab holds it
    wait_for(
        "the relay to let go of the stuck tab's connection place",
        Duration::from_secs(30),
        || async {
            healthz_from("127.0.0.2", relay.addr)
                .await
                .ok()
                .filter(|answer| answer.ends_with("ok\n"))
        },
    )
    .await?;
    writer.abort();
    drop(tab);
    Ok(())
}

/// A counter of the relay's /metrics, read from 127.0.0.1.
async fn metric(addr: SocketAddr, name: &str) -> Result<u64> {
    let mut stream = connect_from("127.0.0.1", addr).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("{name} is not in /metrics"))
}
