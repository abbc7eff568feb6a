//! `ssh -D`: dynamic forwards through a real sshd, with curl as the SOCKS client (SOCKS5
//! with names resolved by the proxy's side, SOCKS5 with an address, SOCKS4a), sshd's
//! refusals as SOCKS reply codes, malformed handshakes, and SOCKS credentials on a wide
//! bind.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tabtunnel_client::{ClientError, ErrorCode, ForwardOptions, Session, SocksLogin};
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::pattern;
use tabtunnel_e2e::services::{EchoServer, exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long one curl or one exchange may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// A web server on 127.0.0.1 that answers every request with `body`.
struct Web {
    port: u16,
    task: JoinHandle<()>,
}

impl Web {
    async fn start(body: &'static str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // The request's head is all a GET sends; then one answer and close.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok(Self { port, task })
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What curl printed, and whether it succeeded.
#[derive(Debug)]
struct Curl {
    ok: bool,
    body: String,
    error: String,
}

/// `curl <proxy flag> <proxy> <url>` (plus `extra`), killed if it outlives the deadline.
async fn curl(flag: &str, proxy: &str, url: &str, extra: &[&str]) -> Result<Curl> {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-sS", "--max-time", "20", flag, proxy])
        .args(extra)
        .arg(url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .context("curl did not finish in time")?
        .context("curl could not start (is it installed?)")?;
    Ok(Curl {
        ok: output.status.success(),
        body: String::from_utf8_lossy(&output.stdout).into_owned(),
        error: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

async fn setup(sshd_config: &[&str], relay_toml: &str) -> Result<(Lab, Session)> {
    let mut lab = Lab::builder().relay_toml(relay_toml);
    for line in sshd_config {
        lab = lab.sshd_config(*line);
    }
    let lab = lab.start().await?;
    let session = lab.log_in().await?;
    Ok((lab, session))
}

#[tokio::test]
async fn curl_reaches_a_destination_by_address_and_one_by_a_name_only_sshd_resolves() -> Result<()>
{
    let by_ip = Web::start("reached by address").await?;
    let by_name = Web::start("reached by name").await?;
    // sshd matches PermitOpen against the host as the request names it. `localhost` is
    // allowed for the second server, its address is not: the name gets through only if it
    // reaches sshd as a name, unresolved by curl, the relay or the tab.
    let permit = format!(
        "PermitOpen 127.0.0.1:{} localhost:{}",
        by_ip.port, by_name.port
    );
    let (_lab, session) = setup(&[&permit], "").await?;
    let socks = session.forward("-D 0").await?;
    let proxy = socks.listen().to_owned();
    ensure!(proxy.starts_with("127.0.0.1:"), "{proxy}");

    let ip_url = format!("http://127.0.0.1:{}/", by_ip.port);
    let name_url = format!("http://localhost:{}/", by_name.port);
    for flag in ["--socks5-hostname", "--socks5", "--socks4a", "--socks4"] {
        let got = curl(flag, &proxy, &ip_url, &[]).await?;
        ensure!(
            got.ok && got.body == "reached by address",
            "{flag}: {got:?}"
        );
    }
    for flag in ["--socks5-hostname", "--socks4a"] {
        let got = curl(flag, &proxy, &name_url, &[]).await?;
        ensure!(got.ok && got.body == "reached by name", "{flag}: {got:?}");
    }
    // Resolved by curl, the name becomes an address, which PermitOpen does not allow:
    // sshd's "administratively prohibited" is SOCKS5's "not allowed by ruleset" (2).
    let got = curl("--socks5", &proxy, &name_url, &[]).await?;
    ensure!(
        !got.ok && got.error.contains("(2)"),
        "expected reply code 2: {got:?}"
    );
    // The row lists what each open connection reached; all are closed now.
    let stats = socks.stats();
    ensure!(stats.connections >= 7, "{stats:?}");
    ensure!(stats.live.is_empty(), "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn sshds_refusals_are_the_clients_socks_reply_codes() -> Result<()> {
    let web = Web::start("unreachable").await?;
    let (_lab, session) = setup(&["AllowTcpForwarding no"], "").await?;
    let socks = session.forward("-D 0").await?;
    let url = format!("http://127.0.0.1:{}/", web.port);
    let got = curl("--socks5", socks.listen(), &url, &[]).await?;
    ensure!(
        !got.ok && got.error.contains("(2)"),
        "AllowTcpForwarding no is reply code 2: {got:?}"
    );
    let got = curl("--socks4a", socks.listen(), &url, &[]).await?;
    ensure!(!got.ok, "SOCKS4 has one code for every refusal: {got:?}");
    let stats = socks.stats();
    ensure!(stats.failures >= 2, "{stats:?}");
    ensure!(
        stats
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("AllowTcpForwarding")),
        "{stats:?}"
    );

    // A port nobody listens on: sshd's "Connection refused" is reply code 5.
    let (_lab, session) = setup(&[], "").await?;
    let socks = session.forward("-D 0").await?;
    let closed = {
        let probe = TcpListener::bind("127.0.0.1:0").await?;
        probe.local_addr()?.port()
    };
    let got = curl(
        "--socks5",
        socks.listen(),
        &format!("http://127.0.0.1:{closed}/"),
        &[],
    )
    .await?;
    ensure!(
        !got.ok && got.error.contains("(5)"),
        "a refused connection is reply code 5: {got:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_handshakes_get_an_error_reply_and_harm_nothing_else() -> Result<()> {
    const SIZE: usize = 8 << 20;
    let lab = Lab::start().await?;
    // Another session's transfer runs while the SOCKS port is fed garbage.
    let other = lab.log_in().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let busy = other.forward(&format!("0:{}", echo.addr)).await?;
    let upload = pattern(7, SIZE);
    let transfer = tokio::spawn({
        let (listen, upload) = (busy.listen().to_owned(), upload.clone());
        async move { exchange(&listen, &upload).await }
    });

    let session = lab.log_in().await?;
    let socks = session.forward("-D 0").await?;
    let garbage: [(&[u8], &[u8]); 5] = [
        // HTTP where SOCKS was expected: no reply, closed.
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),
        // SOCKS5 offering no method.
        (b"\x05\x00", b"\x05\xff"),
        // SOCKS5 BIND: command not supported (7).
        (
            b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50",
            b"\x05\x00\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00",
        ),
        // SOCKS5 address type 9: not supported (8).
        (
            b"\x05\x01\x00\x05\x01\x00\x09",
            b"\x05\x00\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00",
        ),
        // SOCKS4 user id without its end: rejected (0x5B).
        (&[b'u'; 300], b""),
    ];
    for round in 0..10 {
        for (i, (input, reply)) in garbage.iter().enumerate() {
            let mut client = TcpStream::connect(socks.listen()).await?;
            let input: Vec<u8> = if i == 4 {
                [&b"\x04\x01\x00\x50\x7f\x00\x00\x01"[..], input].concat()
            } else {
                input.to_vec()
            };
            let expected: &[u8] = if i == 4 {
                b"\x00\x5b\x00\x00\x00\x00\x00\x00"
            } else {
                reply
            };
            let _ = client.write_all(&input).await;
            let mut got = Vec::new();
            tokio::time::timeout(DEADLINE, client.read_to_end(&mut got))
                .await
                .context("the relay did not close a malformed handshake")??;
            ensure!(got == expected, "round {round}, case {i}: got {got:?}");
        }
    }
    ensure!(
        socks.stats().connections == 0,
        "no malformed client reached the tab"
    );
    // Counted for the operator, under a reason of their own.
    let metrics = lab.relay.get("/metrics").await?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.contains("reason=\"socks-handshake\"") && l.ends_with(" 50")),
        "{metrics}"
    );
    let echoed = tokio::time::timeout(Duration::from_secs(120), transfer)
        .await
        .context("the other session's transfer did not finish")???;
    ensure!(echoed == upload, "the other session's transfer was harmed");
    // And the SOCKS forward still serves a well-formed client.
    let web = Web::start("still here").await?;
    let got = curl(
        "--socks5-hostname",
        socks.listen(),
        &format!("http://127.0.0.1:{}/", web.port),
        &[],
    )
    .await?;
    ensure!(got.ok && got.body == "still here", "{got:?}");
    Ok(())
}

#[tokio::test]
async fn a_wide_bind_needs_socks_credentials_and_its_clients_must_give_them() -> Result<()> {
    let (_lab, session) = setup(&[], "allowed_binds = [\"0.0.0.0\"]").await?;
    // Without credentials, it would be an open proxy for every host that reaches it.
    match session.forward("-D 0.0.0.0:0").await {
        Err(ClientError::Relay { code, message }) => {
            ensure!(code == ErrorCode::BindNotAllowed, "{code:?}: {message}");
            ensure!(
                message.contains("open proxy") && message.contains("username and password"),
                "{message}"
            );
        }
        other => anyhow::bail!("expected a refusal, got {other:?}"),
    }
    let options = ForwardOptions {
        socks_login: Some(SocksLogin {
            username: "alice".into(),
            password: "s3cret".into(),
        }),
        ..Default::default()
    };
    let socks = session.forward_with("-D 0.0.0.0:0", options).await?;
    let port = socks.listen().rsplit_once(':').context("a port")?.1;
    let proxy = format!("127.0.0.1:{port}");
    let web = Web::start("with a login").await?;
    let url = format!("http://127.0.0.1:{}/", web.port);
    let got = curl(
        "--socks5-hostname",
        &proxy,
        &url,
        &["--proxy-user", "alice:s3cret"],
    )
    .await?;
    ensure!(got.ok && got.body == "with a login", "{got:?}");
    let got = curl(
        "--socks5-hostname",
        &proxy,
        &url,
        &["--proxy-user", "alice:wrong"],
    )
    .await?;
    ensure!(!got.ok, "a wrong password got through: {got:?}");
    let got = curl("--socks5-hostname", &proxy, &url, &[]).await?;
    ensure!(!got.ok, "no login got through: {got:?}");
    let got = curl("--socks4a", &proxy, &url, &[]).await?;
    ensure!(
        !got.ok,
        "SOCKS4 (which has no password) got through: {got:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_session_gets_its_socks_forward_back_on_the_same_port() -> Result<()> {
    use std::sync::{Arc, Mutex};
    use tabtunnel_client::{ConnectionState, Reconnect, ReconnectOptions, connect_resilient};

    let lab = Lab::start().await?;
    let restored = Arc::new(Mutex::new(0usize));
    let options = ReconnectOptions {
        policy: Reconnect {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            give_up_after: Duration::from_secs(60),
        },
        on_state: Some(Arc::new({
            let restored = restored.clone();
            move |state| {
                if matches!(state, ConnectionState::Restored { .. }) {
                    *restored.lock().expect("count") += 1;
                }
            }
        })),
    };
    // Through a proxy the test cuts, as a network drop would: the session's WebSocket
    // is lost, the relay parks the forward, and the client resumes it.
    let proxy = tabtunnel_e2e::proxy::CutProxy::start(lab.relay.addr).await?;
    let session =
        connect_resilient(tabtunnel_e2e::dial(&proxy.ws_url()), lab.login(), options).await?;
    let socks = session.forward("-D 0").await?;
    let listen = socks.listen().to_owned();
    let web = Web::start("after the drop").await?;
    let url = format!("http://127.0.0.1:{}/", web.port);

    ensure!(
        proxy.cut() > 0,
        "the session's WebSocket went through the proxy"
    );
    tabtunnel_e2e::wait_for("the session to be restored", DEADLINE, || async {
        (*restored.lock().expect("count") > 0).then_some(())
    })
    .await?;
    ensure!(socks.listen() == listen, "the SOCKS forward moved");
    let got = curl("--socks5-hostname", socks.listen(), &url, &[]).await?;
    ensure!(got.ok && got.body == "after the drop", "{got:?}");
    Ok(())
}
