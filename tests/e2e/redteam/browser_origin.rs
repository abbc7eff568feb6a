//! Browser-origin attacks: DNS rebinding, framing, what the page is served with.
//!
//! A page the user merely visits can point its own DNS name at the relay's address (DNS
//! rebinding): the browser then treats the relay as that page's own origin, Origin and
//! Host both carry the attacker's name, and only the name itself tells the attack apart.
//! The relay answers only to its own names (IP literals, localhost, public_host,
//! allowed_hosts). It also serves its page with a Content-Security-Policy that fits it and
//! forbids framing, and serves nothing from web_dir that a dot hides or a symlink leads
//! out of the folder.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use fantoccini::Locator;
use serde_json::{Value, json};
use tabtunnel_e2e::browser::Browser;
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::page::{browser_turn, log_in_with_password, page};
use tabtunnel_e2e::relay::{Relay, TEST_FORWARD_PORTS};
use tabtunnel_e2e::{init_logging, wait_for};
use tabtunnel_proto::Frame;
use tabtunnel_relay::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP answer read by hand: status line, headers and body as text.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// The value of header `name` (case-insensitive), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `request` exactly as written on a new connection (so it may lack a Host, or
/// name any) and reads the answer: its headers, then its Content-Length of body (none
/// for a 101), or up to the close.
async fn exchange(addr: SocketAddr, request: &str) -> Result<Answer> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(request.as_bytes()).await?;
    let mut data = Vec::new();
    let read = async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = tcp.read(&mut buf).await?;
            data.extend_from_slice(&buf[..n]);
            if n == 0 || complete(&data) {
                return anyhow::Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .context("no complete answer within 10 s")??;
    let text = String::from_utf8_lossy(&data).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    Ok(Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Whether `data` holds a whole answer: headers, and the body Content-Length names.
fn complete(data: &[u8]) -> bool {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    if head.starts_with("http/1.1 101") {
        return true;
    }
    let length = head.lines().find_map(|line| {
        line.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    length.is_some_and(|length| data.len() >= end + 4 + length)
}

/// `GET path` over HTTP/1.1 with Host `host` (none if `None`) and `extra` header lines.
async fn get(addr: SocketAddr, path: &str, host: Option<&str>, extra: &str) -> Result<Answer> {
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\n{host}{extra}Connection: close\r\n\r\n"),
    )
    .await
}

/// A WebSocket upgrade of `/ws` with Host `host` and, if given, Origin `origin`.
async fn upgrade(addr: SocketAddr, host: &str, origin: Option<&str>) -> Result<Answer> {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    exchange(
        addr,
        &format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\n{origin}Connection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    )
    .await
}

/// A relay serving `web_dir`, with test ports and `change` applied to its config.
async fn relay_serving(web_dir: &Path, change: impl FnOnce(&mut Config)) -> Result<Relay> {
    let mut config = Config {
        forward_ports: TEST_FORWARD_PORTS,
        web_dir: Some(web_dir.to_owned()),
        ..Config::default()
    };
    config.add_target("sshd", "127.0.0.1:22", "test")?;
    change(&mut config);
    Relay::start_with(config).await
}

/// A web_dir with a page, a wasm file and a script.
fn small_web_dir() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("pkg"))?;
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>relay page</title>",
    )?;
    std::fs::write(dir.path().join("app.js"), "// the page's script\n")?;
    std::fs::write(
        dir.path().join("pkg/client_wasm_bg.wasm"),
        b"\0asm\x01\0\0\0",
    )?;
    Ok(dir)
}

#[tokio::test]
async fn the_relay_answers_only_to_its_own_names() -> Result<()> {
    init_logging();
    let web = small_web_dir()?;
    let relay = relay_serving(web.path(), |c| {
        c.public_host = Some("relay.example.com".into());
        c.allowed_hosts.push("lab.example.org".into());
    })
    .await?;
    let (addr, port) = (relay.addr, relay.addr.port());
    let paths = ["/", "/api/targets", "/healthz", "/metrics"];
    let own = [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".into(),
        format!("10.1.2.3:{port}"),
        format!("[::1]:{port}"),
        "[::1]".into(),
        format!("[2001:db8::7]:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST.".into(),
        format!("relay.example.com:{port}"),
        "Relay.Example.COM.".into(),
        format!("lab.example.org:{port}"),
        "LAB.example.org".into(),
    ];
    for (i, host) in own.iter().enumerate() {
        for path in paths {
            let answer = get(addr, path, Some(host), "").await?;
            assert_eq!(answer.status, 200, "Host {host}, {path}: {answer:?}");
        }
        // Every other one: each upgrade holds a place until the relay sees it close.
        if i % 2 == 0 {
            assert_eq!(upgrade(addr, host, None).await?.status, 101, "Host {host}");
        }
    }
    let foreign = [
        format!("attacker.test:{port}"),
        "attacker.test".into(),
        format!("localhost.attacker.test:{port}"),
        format!("127.0.0.1.attacker.test:{port}"),
        format!("relay.example.com.attacker.test:{port}"),
        format!("relay.example.co:{port}"),
    ];
    for host in &foreign {
        for path in paths {
            let answer = get(addr, path, Some(host), "").await?;
            assert_eq!(answer.status, 421, "Host {host}, {path}: {answer:?}");
            assert!(
                answer.body.contains("does not answer to the name")
                    && answer.body.contains("allowed_hosts")
                    && answer.body.contains("--allow-host"),
                "the refusal says what the operator sets: {}",
                answer.body
            );
            assert!(!answer.body.contains("sshd"), "{}", answer.body);
        }
        let answer = upgrade(addr, host, Some(&format!("http://{host}"))).await?;
        assert_eq!(answer.status, 421, "Host {host}, /ws: {answer:?}");
    }

    // HTTP/1.1 must name its host; HTTP/1.0 health checks (HAProxy's default) need not.
    let answer = get(addr, "/healthz", None, "").await?;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("Host header"), "{}", answer.body);
    let answer = exchange(addr, "GET /healthz HTTP/1.0\r\n\r\n").await?;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = exchange(
        addr,
        "GET /api/targets HTTP/1.0\r\nHost: attacker.test\r\n\r\n",
    )
    .await?;
    assert_eq!(answer.status, 421, "{answer:?}");
    let two = format!("Host: attacker.test:{port}\r\n");
    let answer = get(
        addr,
        "/api/targets",
        Some(&format!("127.0.0.1:{port}")),
        &two,
    )
    .await?;
    assert_eq!(answer.status, 400, "two Host headers: {answer:?}");
    // An absolute-form request line names the host too, and is checked like Host.
    let answer = exchange(
        addr,
        &format!(
            "GET http://attacker.test:{port}/api/targets HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await?;
    assert_eq!(answer.status, 421, "absolute form: {answer:?}");
    Ok(())
}

#[tokio::test]
async fn websocket_origins_must_be_the_relays_own_page_under_its_own_name() -> Result<()> {
    init_logging();
    let web = small_web_dir()?;
    let relay = relay_serving(web.path(), |c| {
        c.allowed_origins.push("https://lab.example.com".into());
    })
    .await?;
    let (addr, port) = (relay.addr, relay.addr.port());
    let own = format!("127.0.0.1:{port}");
    let local = format!("localhost:{port}");
    let rebound = format!("attacker.test:{port}");
    for (host, origin, status) in [
        (&own, None, 101),
        (&own, Some(format!("http://{own}")), 101),
        (&local, Some(format!("http://{local}")), 101),
        (&own, Some("https://lab.example.com".to_owned()), 101),
        // Another web server on the same machine is another origin.
        (&own, Some(format!("http://127.0.0.1:{}", port ^ 1)), 403),
        (&own, Some(format!("http://{local}")), 403),
        (&own, Some("null".to_owned()), 403),
        (&own, Some(format!("HTTP://{own}")), 403),
        (&own, Some("https://LAB.example.com".to_owned()), 403),
        (&own, Some("https://evil.example".to_owned()), 403),
        // DNS rebinding: the attacker's page, its Origin and its Host all agree.
        (&rebound, Some(format!("http://{rebound}")), 421),
        (&rebound, Some("https://lab.example.com".to_owned()), 421),
    ] {
        let answer = upgrade(addr, host, origin.as_deref()).await?;
        assert_eq!(
            answer.status, status,
            "Host {host}, Origin {origin:?}: {answer:?}"
        );
        if status == 403 {
            assert!(answer.body.contains("allowed_origins"), "{}", answer.body);
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() -> Result<()> {
    init_logging();
    let web = small_web_dir()?;
    let relay = relay_serving(web.path(), |_| {}).await?;
    let addr = relay.addr;
    let own = format!("127.0.0.1:{}", addr.port());
    for (path, host, status) in [
        ("/", own.as_str(), 200),
        ("/pkg/client_wasm_bg.wasm", &own, 200),
        ("/app.js", &own, 200),
        ("/api/targets", &own, 200),
        ("/healthz", &own, 200),
        ("/no-such-file", &own, 404),
        ("/", "attacker.test", 421),
    ] {
        let answer = get(addr, path, Some(host), "").await?;
        assert_eq!(answer.status, status, "{path}: {answer:?}");
        let csp = answer
            .header("content-security-policy")
            .with_context(|| format!("{path} has no Content-Security-Policy: {}", answer.head))?;
        for directive in [
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("x-frame-options", "DENY"),
        ] {
            assert_eq!(answer.header(name), Some(value), "{path}: {}", answer.head);
        }
    }
    let wasm = get(addr, "/pkg/client_wasm_bg.wasm", Some(&own), "").await?;
    assert_eq!(wasm.header("content-type"), Some("application/wasm"));
    Ok(())
}

#[tokio::test]
async fn web_dir_serves_no_dotfiles_and_nothing_a_symlink_leads_out_to() -> Result<()> {
    init_logging();
    let root = tempfile::tempdir()?;
    let secret = "SECRET-OUTSIDE-WEB-DIR";
    std::fs::write(root.path().join("secret"), secret)?;
    let web = root.path().join("web");
    std::fs::create_dir_all(web.join("pkg"))?;
    std::fs::create_dir_all(web.join(".git"))?;
    std::fs::write(web.join("index.html"), "<!doctype html><title>page</title>")?;
    std::fs::write(web.join("app.js"), "// app")?;
    for hidden in [".env", ".git/config", "pkg/.hidden"] {
        std::fs::write(web.join(hidden), secret)?;
    }
    let link = |to: &str, at: &str| std::os::unix::fs::symlink(to, web.join(at));
    link("/etc/passwd", "passwd")?;
    link("../secret", "up")?;
    link(root.path().to_str().context("temp path")?, "outdir")?;
    link("app.js", "alias.js")?;
    link("../app.js", "pkg/linked.js")?;
    let relay = relay_serving(&web, |_| {}).await?;
    let own = format!("127.0.0.1:{}", relay.addr.port());
    for path in [
        "/.env",
        "/%2Eenv",
        "/.git/config",
        "/.git/",
        "/pkg/.hidden",
        "/pkg/%2ehidden",
        "/passwd",
        "/up",
        "/outdir/secret",
        "/outdir/",
        "/pkg/../.env",
        "/../secret",
        "/%2e%2e/secret",
    ] {
        let answer = get(relay.addr, path, Some(&own), "").await?;
        assert!(
            (400..500).contains(&answer.status),
            "{path} must not be served: {answer:?}"
        );
        assert!(
            !answer.body.contains(secret) && !answer.body.contains("root:"),
            "{path}: {}",
            answer.body
        );
    }
    // Symlinks that stay inside the folder are served, and so is the page.
    for (path, body) in [
        ("/alias.js", "// app"),
        ("/pkg/linked.js", "// app"),
        ("/", "<title>page</title>"),
    ] {
        let answer = get(relay.addr, path, Some(&own), "").await?;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert!(answer.body.contains(body), "{path}: {}", answer.body);
    }
    Ok(())
}

/// What a page could do with the relay from its own origin, as `probe_from_page`
/// returns it.
#[derive(Debug, Default)]
struct Reach {
    page: Value,
    targets: Value,
    targets_body: String,
    socket: String,
    frames: Vec<&'static str>,
    listening: Option<String>,
}

/// From the page loaded in `browser`, with only what any page may do: fetch `/` and
/// `/api/targets`, open a WebSocket to `/ws` and send a Hello for target `sshd`, then a
/// Listen (port 0) after the first answer. Waits until the socket is refused or closed,
/// or a Listening came back.
async fn probe_from_page(browser: &Browser) -> Result<Reach> {
    let hello = tabtunnel_proto::encode_to_bytes(&Frame::Hello {
        version: tabtunnel_proto::VERSION,
        target: "sshd".into(),
        token: String::new(),
        resume: None,
    });
    let listen = tabtunnel_proto::encode_to_bytes(&Frame::Listen {
        forward: 1,
        bind: "127.0.0.1".into(),
        port: 0,
    });
    let out = browser
        .client
        .execute_async(
            r#"
            const [hello, listen, done] = arguments;
            (async () => {
              const out = {};
              try { out.page = (await fetch("/", { cache: "no-store" })).status; }
              catch (e) { out.page = String(e); }
              try {
                const r = await fetch("/api/targets", { cache: "no-store" });
                out.targets = r.status;
                out.targetsBody = await r.text();
              } catch (e) { out.targets = String(e); }
              window.__frames = [];
              window.__socket = "connecting";
              const ws = new WebSocket(`ws://${location.host}/ws`);
              window.__ws = ws;
              ws.binaryType = "arraybuffer";
              ws.onopen = () => { window.__socket = "open"; ws.send(new Uint8Array(hello)); };
              ws.onmessage = (e) => {
                window.__frames.push(Array.from(new Uint8Array(e.data)));
                if (window.__frames.length === 1) ws.send(new Uint8Array(listen));
              };
              ws.onclose = (e) => {
                window.__socket = window.__socket === "connecting" ? "refused" : `closed ${e.code}`;
              };
              return out;
            })().then(done, (e) => done({ error: String(e) }));
            "#,
            vec![json!(hello.to_vec()), json!(listen.to_vec())],
        )
        .await?;
    let mut reach = Reach {
        page: out["page"].clone(),
        targets: out["targets"].clone(),
        targets_body: out["targetsBody"].as_str().unwrap_or_default().to_owned(),
        ..Reach::default()
    };
    let (socket, frames) = wait_for(
        "the WebSocket to be refused or closed, or a Listening",
        Duration::from_secs(20),
        || async {
            let now = browser
                .client
                .execute("return [window.__socket, window.__frames];", vec![])
                .await
                .ok()?;
            let socket = now[0].as_str()?.to_owned();
            let frames: Vec<Frame> = now[1]
                .as_array()?
                .iter()
                .filter_map(|f| {
                    let bytes: Vec<u8> = serde_json::from_value(f.clone()).ok()?;
                    tabtunnel_proto::decode(bytes.into()).ok()
                })
                .collect();
            let listening = frames.iter().any(|f| matches!(f, Frame::Listening { .. }));
            (socket == "refused" || socket.starts_with("closed") || listening)
                .then_some((socket, frames))
        },
    )
    .await?;
    reach.socket = socket;
    for frame in &frames {
        if let Frame::Listening { address, .. } = frame {
            reach.listening = Some(address.clone());
        }
    }
    reach.frames = frames.iter().map(Frame::name).collect();
    let _ = browser
        .client
        .execute("window.__ws && window.__ws.close();", vec![])
        .await;
    Ok(reach)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_under_a_rebound_name_gets_nothing_from_the_relay() -> Result<()> {
    let _one = browser_turn().await?;
    let Lab {
        sshd: _sshd, relay, ..
    } = Lab::start().await?;
    // attacker.test resolves to the relay's address, as the attacker's DNS answers once
    // its page is loaded: the page's origin is http://attacker.test:PORT.
    let browser =
        Browser::start_with_args(&["--host-resolver-rules=MAP attacker.test 127.0.0.1".into()])
            .await?;
    let page = format!("http://attacker.test:{}/", relay.addr.port());
    browser.client.goto(&page).await?;
    let reach = probe_from_page(&browser).await?;
    browser.stop().await;
    assert_eq!(reach.page, json!(421), "{reach:?}");
    assert_eq!(reach.targets, json!(421), "{reach:?}");
    assert!(!reach.targets_body.contains("sshd"), "{reach:?}");
    assert_eq!(reach.socket, "refused", "{reach:?}");
    assert!(
        reach.frames.is_empty() && reach.listening.is_none(),
        "{reach:?}"
    );
    Ok(())
}

/// A page on another origin (another loopback port) that frames `url`, served to any
/// request until dropped.
struct Framer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Framer {
    async fn start(url: &str) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let html = format!(
            "<!doctype html><title>another site</title>\
             <iframe id=f src=\"{url}\" width=800 height=600 onload=\"window.__loaded = true\"></iframe>"
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
            html.len()
        );
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
                    let _ = tcp.write_all(answer.as_bytes()).await;
                });
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for Framer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_site_cannot_frame_the_relays_page() -> Result<()> {
    let (browser, _sshd, relay, _one) = page().await?;
    let framer = Framer::start(&format!("{}/", relay.http_url())).await?;
    let c = &browser.client;
    c.goto(&format!("http://{}/", framer.addr)).await?;
    wait_for("the frame to load", Duration::from_secs(20), || async {
        let loaded = c.execute("return window.__loaded === true;", vec![]).await;
        (loaded.ok()? == json!(true)).then_some(())
    })
    .await?;
    // WebDriver may look into a cross-origin frame, which the framing page itself cannot.
    c.enter_frame(0).await?;
    let inside = c
        .execute(
            "return { url: document.URL, form: document.getElementById('connect-form') !== null };",
            vec![],
        )
        .await?;
    c.enter_parent_frame().await?;
    let log = browser.console_log().await?;
    browser.stop().await;
    assert_eq!(
        inside["form"],
        json!(false),
        "the relay's page rendered inside another site's frame: {inside}"
    );
    assert!(
        log.iter().any(|(_, m)| m.contains("frame-ancestors")),
        "Chromium names the directive that blocked the frame: {log:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_works_under_its_policy_without_a_violation() -> Result<()> {
    let (browser, sshd, _relay, _one) = page().await?;
    let c = &browser.client;
    // The whole page at work: the target list, the wasm bundle, the form, the WebSocket.
    log_in_with_password(c, "sshd", sshd.user, sshd.password).await?;
    c.find(Locator::Id("forward-spec"))
        .await?
        .send_keys("0:127.0.0.1:9")
        .await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    tabtunnel_e2e::page::row_listen_address(c, ".forward-row").await?;
    let csp = c
        .execute_async(
            "const done = arguments[0]; fetch('/').then((r) => done(r.headers.get('content-security-policy')));",
            vec![],
        )
        .await?;
    let log = browser.console_log().await?;
    let violations: Vec<_> = log
        .iter()
        .filter(|(_, m)| m.contains("Content Security Policy") || m.contains("Refused to"))
        .collect();
    assert!(
        csp.as_str().is_some_and(|p| p.contains("frame-ancestors")),
        "the page is served with a policy: {csp}"
    );
    assert!(violations.is_empty(), "{violations:?}");
    // The log does show violations: an image from elsewhere is one.
    c.execute(
        "const i = new Image(); i.src = 'http://127.0.0.2:9/x.png'; document.body.append(i);",
        vec![],
    )
    .await?;
    wait_for(
        "the console to report the image",
        Duration::from_secs(10),
        || async {
            // Each read returns what is new since the last.
            browser
                .console_log()
                .await
                .ok()?
                .iter()
                .any(|(_, m)| m.contains("img-src") && m.contains("127.0.0.2"))
                .then_some(())
        },
    )
    .await?;
    browser.stop().await;
    Ok(())
}
