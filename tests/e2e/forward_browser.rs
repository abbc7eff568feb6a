//! The real page in headless Chromium: the wasm client over a browser WebSocket, through
//! the relay, to a real sshd (and to the relay binary's --demo server). Proves the glue,
//! and that the relay binary alone, in an empty folder, serves the page it carries.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fantoccini::Locator;
use serde_json::json;
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::page::{
    ONE_BROWSER, accept_host_key, add_forward_in_form, browser_turn, log_in_with_password, open,
    open_forwards_with_key, page, page_with, row_listen_address, wait_until_connected,
};
use tabtunnel_e2e::relay::{Relay, RelayProcess, web_dir};
use tabtunnel_e2e::services::{BulkServer, EchoServer, exchange};
use tabtunnel_e2e::sshd::{Sshd, SshdOptions};
use tabtunnel_e2e::{init_logging, pattern, sha256_hex, wait_for, wait_until_port_free};
use tabtunnel_relay::demo::{DemoOptions, DemoServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_login_and_16_mib_each_way_through_the_page() -> Result<()> {
    const SIZE: usize = 16 << 20;
    let (browser, sshd, _relay, _one) = page().await?;
    let mut bulk = BulkServer::start(SIZE, 5).await?;

    let opened = browser
        .run_js(
            r#"
            const [user, key, fingerprint, spec] = args;
            const session = await m.connect({ target: "sshd", username: user, privateKey: key, hostKey: fingerprint });
            const fwd = await session.forward(spec);
            window.__session = session;
            window.__fwd = fwd;
            return { listen: fwd.listen, fingerprint: session.hostKeyFingerprint };
            "#,
            vec![
                json!(sshd.user),
                json!(sshd.client_key),
                json!(sshd.host_key_fingerprint),
                json!(format!("0:127.0.0.1:{}", bulk.addr.port())),
            ],
        )
        .await?;
    assert_eq!(opened["fingerprint"], json!(sshd.host_key_fingerprint));
    let listen = opened["listen"]
        .as_str()
        .context("listen address")?
        .to_owned();
    assert!(listen.starts_with("127.0.0.1:"), "{listen}");

    let upload = pattern(21, SIZE);
    let started = Instant::now();
    let received = exchange(&listen, &upload).await?;
    let elapsed = started.elapsed();
    let report = bulk.report().await.context("bulk report")?;
    assert_eq!(report.received, SIZE);
    assert_eq!(
        report.received_sha256,
        sha256_hex(&upload),
        "upload through the tab arrived intact"
    );
    assert_eq!(received.len(), SIZE);
    assert_eq!(
        sha256_hex(&received),
        bulk.sent_sha256,
        "download through the tab arrived intact"
    );
    let mib_s = (2 * SIZE) as f64 / (1 << 20) as f64 / elapsed.as_secs_f64();
    eprintln!(
        "browser: 16 MiB each way (concurrently) in {elapsed:.2?}: {mib_s:.1} MiB/s combined"
    );

    let stats = browser
        .run_js("return window.__fwd.stats();", vec![])
        .await?;
    assert_eq!(stats["connections"], json!(1));
    assert_eq!(stats["bytesUp"], json!(SIZE));
    assert_eq!(stats["bytesDown"], json!(SIZE));
    browser
        .run_js("await window.__session.close();", vec![])
        .await?;
    wait_until_port_free(&listen).await?;
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_with_host_key_callback_and_clear_errors() -> Result<()> {
    let (browser, sshd, _relay, _one) = page().await?;
    let echo = EchoServer::start("127.0.0.1").await?;

    let opened = browser
        .run_js(
            r#"
            const [user, password, spec] = args;
            const seen = [];
            const session = await m.connect({
                target: "sshd", username: user, password,
                onHostKey: async (fingerprint, algorithm) => { seen.push([fingerprint, algorithm]); return true; },
            });
            const fwd = await session.forward(spec);
            window.__fwd = fwd;
            return { listen: fwd.listen, seen, fingerprint: session.hostKeyFingerprint };
            "#,
            vec![json!(sshd.user), json!(sshd.password), json!(format!("0:127.0.0.1:{}", echo.addr.port()))],
        )
        .await?;
    assert_eq!(
        opened["seen"],
        json!([[sshd.host_key_fingerprint, "ssh-ed25519"]])
    );
    let listen = opened["listen"].as_str().context("listen")?;
    assert_eq!(
        exchange(listen, b"through the tab").await?,
        b"through the tab"
    );

    // A port in the relay's range that another process holds.
    let taken = tabtunnel_e2e::relay::occupy_forward_port()?;
    let taken_port = taken.local_addr()?.port();

    // Failures reject with an Error whose message says what to do.
    let refusals = browser
        .run_js(
            r#"
            const [user, password, takenPort] = args;
            const out = {};
            const attempt = async (name, f) => { try { await f(); out[name] = "no error"; } catch (e) { out[name] = [e.code, e.message]; } };
            await attempt("wrongPassword", () => m.connect({ target: "sshd", username: user, password: "nope", onHostKey: () => true }));
            await attempt("refusedKey", () => m.connect({ target: "sshd", username: user, password, onHostKey: () => false }));
            await attempt("unknownTarget", () => m.connect({ target: "nowhere", username: user, password }));
            const session = await m.connect({ target: "sshd", username: user, password, onHostKey: () => true });
            await attempt("outOfRange", () => session.forward("8080:127.0.0.1:22"));
            await attempt("badSpec", () => session.forward("8080:nohostport"));
            await attempt("inUse", () => session.forward(takenPort + ":127.0.0.1:22"));
            const first = await session.forward("0:127.0.0.1:22");
            await attempt("sameSession", () => session.forward(first.listen.split(":")[1] + ":127.0.0.1:22"));
            return out;
            "#,
            vec![json!(sshd.user), json!(sshd.password), json!(taken_port)],
        )
        .await?;
    let check = |name: &str, code: &str, words: &str| {
        let got = &refusals[name];
        assert_eq!(got[0], json!(code), "{name}: {got}");
        let message = got[1].as_str().unwrap_or_default();
        assert!(
            message.contains(words),
            "{name}: {message:?} lacks {words:?}"
        );
    };
    check(
        "wrongPassword",
        "auth-failed",
        "the server accepts: publickey, password",
    );
    check(
        "refusedKey",
        "host-key-rejected",
        &sshd.host_key_fingerprint,
    );
    check("unknownTarget", "unknown-target", "this relay offers: sshd");
    check(
        "outOfRange",
        "port-not-allowed",
        "outside this relay's forward range",
    );
    check("badSpec", "bad-spec", "[bind_address:]port:host:hostport");
    check("inUse", "port-in-use", "already in use on the relay host");
    check(
        "sameSession",
        "duplicate-forward",
        "this session already forwards",
    );
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_fills_the_form_and_clicks() -> Result<()> {
    let (browser, sshd, _relay, _one) = page().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let c = &browser.client;

    // The target list comes from /api/targets.
    let target = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#target option[value='sshd']"))
        .await?;
    target.click().await?;
    c.find(Locator::Id("username"))
        .await?
        .send_keys(sshd.user)
        .await?;
    c.find(Locator::Id("auth-password")).await?.click().await?;
    c.find(Locator::Id("password"))
        .await?
        .send_keys(sshd.password)
        .await?;
    c.find(Locator::Id("connect")).await?.click().await?;

    // First use: the page shows the fingerprint and asks.
    let fingerprint = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("hostkey-fingerprint"))
        .await?;
    wait_for("the host-key dialog", Duration::from_secs(30), || async {
        let text = fingerprint.text().await.ok()?;
        text.contains(&sshd.host_key_fingerprint).then_some(())
    })
    .await?;
    c.find(Locator::Id("hostkey-accept")).await?.click().await?;
    wait_until_connected(c).await?;
    let remembered = browser
        .run_js(
            "return localStorage.getItem('tabtunnel.knownHosts');",
            vec![],
        )
        .await?;
    assert!(
        remembered
            .as_str()
            .unwrap_or_default()
            .contains(&sshd.host_key_fingerprint),
        "{remembered}"
    );

    // Add a forward in ssh -L syntax and read its row.
    let spec = format!("0:127.0.0.1:{}", echo.addr.port());
    c.find(Locator::Id("forward-spec"))
        .await?
        .send_keys(&spec)
        .await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    let listen = row_listen_address(c, ".forward-row").await?;
    let mut stream = tokio::net::TcpStream::connect(&listen).await?;
    stream.write_all(b"clicked through").await?;
    stream.shutdown().await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    assert_eq!(reply, b"clicked through");
    let stats = c.find(Locator::Css(".forward-row .stats")).await?;
    wait_for("the row's counters", Duration::from_secs(10), || async {
        let text = stats.attr("data-text").await.ok()??;
        (text == "connections 1 · active 0 · up 15 B · down 15 B").then_some(())
    })
    .await?;

    // A destination nobody listens on: the connection fails, the row says why.
    let closed_port = tabtunnel_e2e::sshd::free_port()?;
    let spec = format!("0:127.0.0.1:{closed_port}");
    let spec_input = c.find(Locator::Id("forward-spec")).await?;
    spec_input.clear().await?;
    spec_input.send_keys(&spec).await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    let row = format!(".forward-row[data-spec='{spec}']");
    let failing = row_listen_address(c, &row).await?;
    let mut doomed = tokio::net::TcpStream::connect(&failing).await?;
    let mut buf = [0u8; 8];
    let ended = tokio::time::timeout(Duration::from_secs(10), doomed.read(&mut buf)).await?;
    assert!(
        matches!(ended, Ok(0) | Err(_)),
        "the TCP client is closed at once: {ended:?}"
    );
    let why = wait_for("the row's error", Duration::from_secs(10), || async {
        c.find(Locator::Css(&format!("{row} .last-error")))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })
    .await?;
    assert!(why.contains("could not connect"), "{why}");

    // Disconnect closes the listener.
    c.find(Locator::Id("connect")).await?.click().await?;
    wait_until_port_free(&listen).await?;
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_ssh_command_fills_the_form_and_its_forwards_open_on_connect() -> Result<()> {
    let (browser, sshd, _relay, _one) = page().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let c = &browser.client;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#target option[value='sshd']"))
        .await?;

    let spec = format!("0:127.0.0.1:{}", echo.addr.port());
    let command = format!("ssh -N -p 2222 -L {spec} {}@sshd", sshd.user);
    c.find(Locator::Id("paste-command"))
        .await?
        .send_keys(&command)
        .await?;
    c.find(Locator::Id("paste-fill")).await?.click().await?;
    let result = c.find(Locator::Id("paste-result")).await?;
    let said = wait_for("the paste result", Duration::from_secs(20), || async {
        let text = result.text().await.ok()?;
        text.contains("queued").then_some(text)
    })
    .await?;
    assert!(said.contains("ignored: -N"), "{said}");
    assert!(
        said.contains("-p 2222: the port is fixed by the relay's target config"),
        "{said}"
    );
    let username = c.find(Locator::Id("username")).await?.prop("value").await?;
    assert_eq!(username.as_deref(), Some(sshd.user));
    let target = c.find(Locator::Id("target")).await?.prop("value").await?;
    assert_eq!(target.as_deref(), Some("sshd"));

    // Log in with a key this time (pasted into the textarea), accepting the host key.
    c.find(Locator::Id("auth-key")).await?.click().await?;
    browser
        .run_js(
            "document.getElementById('private-key').value = args[0];",
            vec![json!(sshd.client_key)],
        )
        .await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    accept_host_key(c).await?;
    let listen = row_listen_address(c, &format!(".forward-row[data-spec='{spec}']")).await?;
    assert_eq!(exchange(&listen, b"pasted").await?, b"pasted");
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_interactive_questions_are_asked_in_the_page() -> Result<()> {
    let _one = browser_turn().await?;
    let demo = DemoServer::start_with(DemoOptions {
        second_factor: Some("4242".into()),
        ..DemoOptions::default()
    })
    .await?;
    let relay = Relay::start(&[("demo", &demo.ssh_addr.to_string())]).await?;
    let browser = open(&relay.http_url()).await?;
    let c = &browser.client;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#target option[value='demo']"))
        .await?
        .click()
        .await?;
    c.find(Locator::Id("username"))
        .await?
        .send_keys("demo")
        .await?;
    c.find(Locator::Id("connect")).await?.click().await?; // no password: the server will ask
    accept_host_key(c).await?;
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#prompt-dialog:not([hidden]) #prompt-input-1"))
        .await?;
    let title = c.find(Locator::Id("prompt-title")).await?.text().await?;
    assert_eq!(title, "demo: tabtunnel demo");
    let labels = c
        .find_all(Locator::Css("#prompt-fields .prompt-label"))
        .await?;
    let mut texts = Vec::new();
    for label in &labels {
        texts.push(label.text().await?);
    }
    assert_eq!(texts, ["Password:", "Verification code:"]);
    let password = c.find(Locator::Id("prompt-input-0")).await?;
    let code = c.find(Locator::Id("prompt-input-1")).await?;
    assert_eq!(
        password.attr("type").await?.as_deref(),
        Some("password"),
        "hidden answer"
    );
    assert_eq!(
        code.attr("type").await?.as_deref(),
        Some("text"),
        "echoed answer"
    );
    password.send_keys(&demo.password).await?;
    code.send_keys("4242").await?;
    c.find(Locator::Id("prompt-submit")).await?.click().await?;
    wait_until_connected(c).await?;
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_the_server_stopped_waiting_for_is_taken_away() -> Result<()> {
    let options = SshdOptions {
        extra_config: vec!["LoginGraceTime 2".into()],
    };
    let (browser, sshd, _relay, _one) = page_with(options).await?;
    let c = &browser.client;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#target option[value='sshd']"))
        .await?
        .click()
        .await?;
    c.find(Locator::Id("username"))
        .await?
        .send_keys(sshd.user)
        .await?;
    c.find(Locator::Id("connect")).await?.click().await?; // no password: it will be asked
    accept_host_key(c).await?;
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#prompt-dialog:not([hidden]) #prompt-input-0"))
        .await?;
    // Nobody answers; after LoginGraceTime the server hangs up, and the page says so
    // and takes the question away.
    let error = c.find(Locator::Id("session-error")).await?;
    let shown = wait_for("the reason", Duration::from_secs(30), || async {
        let text = error.text().await.ok()?;
        text.contains("LoginGraceTime").then_some(text)
    })
    .await?;
    assert!(shown.contains("during login"), "{shown}");
    let dialog = c.find(Locator::Id("prompt-dialog")).await?;
    assert!(dialog.attr("hidden").await?.is_some(), "the prompt is gone");
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_link_lets_the_page_in_and_keeps_the_token_out_of_the_address() -> Result<()> {
    let _one = browser_turn().await?;
    let Lab { sshd, relay, .. } = Lab::builder()
        .tokens("carol carol-0123456789abcdef\n")
        .start()
        .await?;
    let browser = open(&format!(
        "{}/#token=carol-0123456789abcdef",
        relay.http_url()
    ))
    .await?;
    let c = &browser.client;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#token-field:not([hidden])"))
        .await?;
    let url = c.current_url().await?;
    assert!(
        !url.as_str().contains("carol-0123"),
        "the token left the address bar: {url}"
    );
    log_in_with_password(c, "sshd", sshd.user, sshd.password).await?;
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_forbids_forwarding_is_named_in_the_page() -> Result<()> {
    let options = SshdOptions {
        extra_config: vec!["AllowTcpForwarding no".into()],
    };
    let (browser, sshd, _relay, _one) = page_with(options).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let c = &browser.client;
    log_in_with_password(c, "sshd", sshd.user, sshd.password).await?;

    let spec = format!("0:127.0.0.1:{}", echo.addr.port());
    c.find(Locator::Id("forward-spec"))
        .await?
        .send_keys(&spec)
        .await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    let row = format!(".forward-row[data-spec='{spec}']");
    let listen = row_listen_address(c, &row).await?;
    let mut client = tokio::net::TcpStream::connect(&listen).await?;
    let mut buf = [0u8; 8];
    let ended = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf)).await?;
    assert!(matches!(ended, Ok(0) | Err(_)), "closed at once: {ended:?}");
    let why = wait_for("the row's error", Duration::from_secs(10), || async {
        c.find(Locator::Css(&format!("{row} .last-error")))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })
    .await?;
    assert!(
        why.contains("the SSH server does not allow forwarding to that destination"),
        "{why}"
    );

    // With the check box ticked, adding the forward itself fails with the same words.
    c.find(Locator::Id("forward-check")).await?.click().await?;
    let other = format!("0:127.0.0.1:{}", echo.addr.port() ^ 1);
    let input = c.find(Locator::Id("forward-spec")).await?;
    input.clear().await?;
    input.send_keys(&other).await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    let error = c.find(Locator::Id("forward-error")).await?;
    let shown = wait_for("the form's error", Duration::from_secs(10), || async {
        let text = error.text().await.ok()?;
        text.contains("does not allow forwarding").then_some(text)
    })
    .await?;
    assert!(shown.contains("refused the channel"), "{shown}");
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_demo_mode_works_end_to_end_in_the_browser() -> Result<()> {
    let _one = browser_turn().await?;
    let web = web_dir().display().to_string();
    let relay = RelayProcess::start(&["--demo", "--web-dir", &web], "warn").await?;
    // The demo banner: "  password:      XYZ   (new at every start)", "  try forward:   SPEC   (...)".
    let field = |name: &str| {
        relay.output().iter().find_map(|line| {
            let value = line.trim().strip_prefix(name)?;
            value.split_whitespace().next().map(str::to_owned)
        })
    };
    let url = relay.http_url();
    let password = field("password:").context("demo banner has no password")?;
    let forward = field("try forward:").context("demo banner has no suggested forward")?;

    let browser = open(&url).await?;
    let opened = browser
        .run_js(
            r#"
            const [password, spec] = args;
            const session = await m.connect({ target: "demo", username: "demo", password, onHostKey: () => true });
            const fwd = await session.forward(spec);
            window.__session = session;
            return fwd.listen;
            "#,
            vec![json!(password), json!(forward)],
        )
        .await?;
    let listen = opened.as_str().context("listen")?;
    let page = exchange(listen, b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n").await?;
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1."), "{page}");
    assert!(page.contains("tabtunnel demo service"), "{page}");
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_tab_frees_its_listeners_within_a_second() -> Result<()> {
    let (browser, sshd, _relay, _one) = page().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let specs = [format!("0:127.0.0.1:{}", echo.addr.port())];
    let listen = open_forwards_with_key(&browser, &sshd, &specs)
        .await?
        .remove(0);
    assert_eq!(exchange(&listen, b"open").await?, b"open");

    // Close the tab the session lives in (another tab keeps the browser running).
    let c = &browser.client;
    let other = c.new_window(true).await?;
    c.close_window().await?;
    let closed = Instant::now();
    c.switch_to_window(other.handle).await?;
    wait_for("the listener to close", Duration::from_secs(1), || async {
        std::net::TcpListener::bind(&listen).ok().map(drop)
    })
    .await?;
    eprintln!(
        "the forward's port was free {:?} after its tab closed",
        closed.elapsed()
    );
    browser.stop().await;
    Ok(())
}

/// What "one binary" promises: the relay copied alone into an empty folder and started
/// there with no --web-dir serves the page it carries (the wasm client as
/// application/wasm, compressed), and through it a forward over a real sshd carries bytes.
/// `TABTUNNEL_RELAY_BIN=target/dist/relay` makes it the dist file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_binary_alone_in_an_empty_folder_serves_its_page_and_forwards() -> Result<()> {
    // Not `browser_turn`: that checks web/pkg, which this relay must not need.
    let _one = ONE_BROWSER.lock().await;
    init_logging();
    let sshd = Sshd::start().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let folder = tempfile::tempdir()?;
    let target = format!("sshd={}", sshd.address());
    let relay = RelayProcess::start_alone_in(folder.path(), &["--target", &target], "warn").await?;
    let files: Vec<_> = std::fs::read_dir(folder.path())?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    assert_eq!(files, ["relay"], "the folder holds the binary alone");
    let output = relay.output().join("\n");
    assert!(!output.contains("no client bundle"), "{output}");

    let mut http = tokio::net::TcpStream::connect(&relay.addr).await?;
    http.write_all(b"GET /pkg/client_wasm_bg.wasm HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip, br\r\n\r\n")
        .await?;
    let mut wasm = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), http.read_to_end(&mut wasm)).await??;
    let end = wasm
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the answer's end of headers")?;
    let head = String::from_utf8_lossy(&wasm[..end]).to_ascii_lowercase();
    for wanted in [
        " 200 ",
        "content-type: application/wasm",
        "content-encoding: br",
        "cache-control: no-cache",
        "etag: \"",
    ] {
        assert!(head.contains(wanted), "{wanted}: {head}");
    }

    let browser = open(&relay.http_url()).await?;
    let c = &browser.client;
    log_in_with_password(c, "sshd", sshd.user, sshd.password).await?;
    let listen = add_forward_in_form(c, &format!("0:127.0.0.1:{}", echo.addr.port())).await?;
    let sent = pattern(7, 256 << 10);
    assert_eq!(
        exchange(&listen, &sent).await?,
        sent,
        "through the tab and back"
    );
    browser.stop().await;
    Ok(())
}
