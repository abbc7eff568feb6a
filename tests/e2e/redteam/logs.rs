//! Log volume and secrets in logs: refusals are aggregated, tokens never logged (the
//! token half is `no_leaks.rs` of this suite, which reads the relay's TRACE log).

use std::time::Duration;

use anyhow::Result;
use tabtunnel_e2e::fake_tab::FakeTab;
use tabtunnel_e2e::init_logging;
use tabtunnel_e2e::relay::RelayProcess;
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_proto::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Refusals one source may cause in this test, per kind.
const ATTEMPTS: usize = 300;
/// Lines a kind of refusal from one source may log in the few seconds the test takes:
/// the source's burst, plus a line or two of refill.
const MOST_LINES: usize = 15;

const TOKEN: &str = "frank-0f1e2d3c4b5a6978";

/// A WebSocket upgrade from another site's page, answered 403.
async fn foreign_origin_upgrade(addr: &str) -> Result<String> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut head)).await??;
    Ok(String::from_utf8_lossy(&head[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Reads until the relay closes the WebSocket (bounded).
async fn until_closed(tab: &mut FakeTab) {
    let _ = tab.goodbye(Duration::from_secs(10)).await;
}

/// The value of `tabtunnel_refusals_total{reason="<reason>"}` in /metrics.
async fn refusals(addr: &str, reason: &str) -> Result<u64> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut body)).await??;
    let label = format!("tabtunnel_refusals_total{{reason=\"{reason}\"}} ");
    Ok(body
        .lines()
        .find_map(|line| line.strip_prefix(&label))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

/// One unauthenticated client refused hundreds of times (foreign Origins, wrong tokens,
/// Listens outside the range) is counted in full in /metrics, but logged only a few
/// times: before, every refusal was an info line, and one client could write megabytes
/// of log a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_is_counted_in_full_and_logged_a_few_times() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("frank {TOKEN}\n"))?;
    let target = format!("sshd={}", sshd.address());
    let token_file = tokens.to_string_lossy().into_owned();
    let relay =
        RelayProcess::start(&["--target", &target, "--token-file", &token_file], "info").await?;

    for _ in 0..ATTEMPTS {
        let status = foreign_origin_upgrade(&relay.addr).await?;
        assert!(status.contains(" 403 "), "refused: {status}");
    }
    // Listens outside the forward range, from sessions with a valid token; a session that
    // asks for too many refused Listens may be ended, so the attacker starts another.
    let mut listens = 0;
    for _ in 0..ATTEMPTS {
        if listens >= ATTEMPTS {
            break;
        }
        let mut tab = FakeTab::hello(&relay.ws_url(), "sshd", TOKEN).await?;
        for forward in 1..=100u32 {
            let listen = Frame::Listen {
                forward,
                bind: "127.0.0.1".into(),
                port: 80,
            };
            if tab.send(&listen).await.is_err() {
                break;
            }
            listens += 1;
        }
        let _ = tab.ws.close(None).await;
        until_closed(&mut tab).await;
    }

    // Wrong tokens last: once a few have failed, this address's budget of token checks is
    // spent, and then even Frank's token is not compared for a while.
    for _ in 0..ATTEMPTS {
        let mut tab = FakeTab::hello(&relay.ws_url(), "sshd", "not-frank-0000000000").await?;
        until_closed(&mut tab).await;
    }

    let origin = refusals(&relay.addr, "origin").await?;
    let unauthorized = refusals(&relay.addr, "unauthorized").await?;
    let over_budget = refusals(&relay.addr, "limit").await?;
    let port = refusals(&relay.addr, "port-not-allowed").await?;
    let lines = relay.kill().await?;
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    let (origin_lines, token_lines, listen_lines) = (
        count("origin not allowed"),
        count("access token is not valid") + count("too many wrong access tokens"),
        count("listen refused"),
    );
    eprintln!(
        "refusals counted: origin {origin}, unauthorized {unauthorized}, port {port}; \
         over the token budget {over_budget}; \
         lines logged: origin {origin_lines}, token {token_lines}, listen {listen_lines}; \
         {bytes} bytes of log in all"
    );
    assert!(
        origin >= ATTEMPTS as u64,
        "every refused Origin is counted: {origin}"
    );
    assert_eq!(
        unauthorized,
        u64::from(tabtunnel_relay::token_check::FAILED_CHECK_BURST),
        "the first wrong tokens are compared and refused as such"
    );
    assert!(
        unauthorized + over_budget >= ATTEMPTS as u64,
        "every wrong token is counted: {unauthorized} refused, {over_budget} over the budget"
    );
    assert!(port >= 1, "refused Listens are counted: {port}");
    for (what, n) in [
        ("refused Origins", origin_lines),
        ("wrong tokens", token_lines),
        ("refused Listens", listen_lines),
    ] {
        assert!(n >= 1, "the first {what} are logged");
        assert!(n <= MOST_LINES, "{n} lines for {what} from one source");
    }
    Ok(())
}
