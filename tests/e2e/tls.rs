//! The relay over TLS: a self-signed certificate for 127.0.0.1 made per test, the native
//! client over wss:// to a real sshd, plain HTTP on the TLS port, bad certificate and
//! key settings refused at start, SIGTERM, and the page over https:// in Chromium with
//! what it tells users about reaching a forward.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64ct::Encoding;
use fantoccini::Locator;
use tabtunnel_client::native::NativeTransport;
use tabtunnel_client::{ConnectOptions, Session};
use tabtunnel_e2e::browser::Browser;
use tabtunnel_e2e::lab::{Lab, echo_forward};
use tabtunnel_e2e::page::{browser_turn, log_in_with_password, row_listen_address};
use tabtunnel_e2e::relay::{RelayProcess, relay_binary};
use tabtunnel_e2e::services::{EchoServer, exchange};
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{init_logging, pattern, sshd_login, wait_for, wait_until_port_free};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files.
struct TestCert {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
    /// SHA-256 of the public key, base64: what Chromium's SPKI allow-list takes.
    spki_sha256: String,
}

impl TestCert {
    fn new() -> Result<Self> {
        use sha2::Digest;
        let pair = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])?;
        let dir = tempfile::tempdir()?;
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, pair.cert.pem())?;
        std::fs::write(&key, pair.signing_key.serialize_pem())?;
        let spki_sha256 = base64ct::Base64::encode_string(&sha2::Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&pair.signing_key),
        ));
        Ok(Self {
            dir,
            cert,
            key,
            der: pair.cert.der().clone(),
            spki_sha256,
        })
    }

    /// A client that trusts this certificate only.
    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone())?;
        Ok(Arc::new(client_config(roots)?))
    }

    fn path_str(path: &Path) -> &str {
        path.to_str().expect("temp paths are UTF-8")
    }
}

fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

async fn log_in_tls(
    ws_url: &str,
    options: ConnectOptions,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Session> {
    let transport = NativeTransport::connect_tls(ws_url, tls).await?;
    Ok(tabtunnel_client::connect(transport, options).await?)
}

/// A lab whose relay serves HTTPS and wss:// with `cert`.
async fn tls_lab(cert: &TestCert) -> Result<Lab> {
    let (tls_cert, tls_key) = (cert.cert.clone(), cert.key.clone());
    Lab::builder()
        .configure(move |config| {
            config.tls_cert = Some(tls_cert);
            config.tls_key = Some(tls_key);
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_client_forwards_over_wss() -> Result<()> {
    let cert = TestCert::new()?;
    let Lab { sshd, relay, .. } = tls_lab(&cert).await?;
    assert!(relay.ws_url().starts_with("wss://127.0.0.1:"));

    let session = log_in_tls(&relay.ws_url(), sshd_login(&sshd), cert.client_config()?).await?;
    let (_echo, fwd) = echo_forward(&session).await?;
    let data = pattern(7, 1 << 20);
    let back = exchange(fwd.listen(), &data).await?;
    assert!(
        back == data,
        "1 MiB came back changed ({} bytes)",
        back.len()
    );
    session.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_untrusting_clients_fail_cleanly_and_the_relay_serves_on() -> Result<()> {
    let cert = TestCert::new()?;
    let Lab { sshd, relay, .. } = tls_lab(&cert).await?;

    // http:// to the TLS port: a readable answer, not a hang or a garbled handshake.
    let mut tcp = tokio::net::TcpStream::connect(relay.addr).await?;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer))
        .await
        .context("the relay did not answer plain HTTP")??;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("HTTPS only: use https://"), "{answer}");

    // ws:// likewise: the client sees the refusal as an HTTP status.
    let plain_ws = format!("ws://{}/ws", relay.addr);
    match tokio_tungstenite::connect_async(&plain_ws).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
        }
        other => anyhow::bail!("ws:// to the TLS port: expected HTTP 400, got {other:?}"),
    }

    // A client that does not trust the certificate is refused by its own TLS.
    let untrusting = Arc::new(client_config(rustls::RootCertStore::empty())?);
    let err = NativeTransport::connect_tls(&relay.ws_url(), untrusting)
        .await
        .expect_err("a certificate nobody vouches for is refused");
    assert!(err.to_string().contains("certificate"), "{err}");

    // The relay serves on.
    let session = log_in_tls(&relay.ws_url(), sshd_login(&sshd), cert.client_config()?).await?;
    let (_echo, fwd) = echo_forward(&session).await?;
    assert_eq!(exchange(fwd.listen(), b"still here").await?, b"still here");
    Ok(())
}

/// Runs the relay binary with `args` and returns its output, expecting it to refuse to
/// start.
async fn refused(args: &[&str]) -> Result<String> {
    let child = tokio::process::Command::new(relay_binary()?)
        .args(["--listen", "127.0.0.1:0", "--target", "x=127.0.0.1:22"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .with_context(|| format!("relay {args:?} did not stop"))??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(!out.status.success(), "relay {args:?} started: {text}");
    anyhow::ensure!(
        !text.contains("open http"),
        "relay {args:?} listened: {text}"
    );
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_settings_are_refused_at_start() -> Result<()> {
    init_logging();
    let cert = TestCert::new()?;
    let other = TestCert::new()?;
    let dir = cert.dir.path();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")?;
    let missing = dir.join("missing.pem");
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!("tls_key = {:?}\n", TestCert::path_str(&cert.key)),
    )?;
    let (c, k) = (
        TestCert::path_str(&cert.cert),
        TestCert::path_str(&cert.key),
    );
    let (m, g) = (TestCert::path_str(&missing), TestCert::path_str(&garbage));
    let other_key = TestCert::path_str(&other.key);
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--tls-cert", c],
            vec!["tls_cert (--tls-cert) is set but tls_key (--tls-key) is not"],
        ),
        (
            vec!["--config", TestCert::path_str(&config)],
            vec!["tls_key (--tls-key) is set but tls_cert (--tls-cert) is not"],
        ),
        (
            vec!["--tls-cert", m, "--tls-key", k],
            vec!["cannot read the TLS certificate file", m],
        ),
        (
            vec!["--tls-cert", g, "--tls-key", k],
            vec!["holds no certificate", g],
        ),
        (
            vec!["--tls-cert", c, "--tls-key", c],
            vec!["holds no private key", c],
        ),
        (
            vec!["--tls-cert", c, "--tls-key", other_key],
            vec!["does not belong to the certificate", other_key, c],
        ),
        // A key from the file, no certificate anywhere: the missing half is named.
        (
            vec![
                "--config",
                TestCert::path_str(&config),
                "--tls-key",
                other_key,
            ],
            vec!["tls_cert (--tls-cert) is not"],
        ),
        (
            vec!["--public-host", "relay lab.example"],
            vec!["--public-host", "not a host name or IP address"],
        ),
    ];
    for (args, says) in cases {
        let out = refused(&args).await?;
        for s in says {
            assert!(out.contains(s), "relay {args:?} should say {s:?}: {out}");
        }
    }
    // And the good pair starts, with the file's key completed by the flag.
    let relay = RelayProcess::start(
        &[
            "--target",
            "x=127.0.0.1:22",
            "--config",
            TestCert::path_str(&config),
            "--tls-cert",
            c,
        ],
        "warn",
    )
    .await?;
    assert!(relay.tls, "it says https://: {:?}", relay.output());
    relay.kill().await?;
    // A flag replaces the file's value: the file's wrong key alone would be refused.
    let wrong = dir.join("wrong.toml");
    std::fs::write(
        &wrong,
        format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            TestCert::path_str(&cert.cert),
            other_key
        ),
    )?;
    let wrong = TestCert::path_str(&wrong);
    let out = refused(&["--config", wrong]).await?;
    assert!(out.contains("does not belong to the certificate"), "{out}");
    let relay = RelayProcess::start(
        &[
            "--target",
            "x=127.0.0.1:22",
            "--config",
            wrong,
            "--tls-key",
            k,
        ],
        "warn",
    )
    .await?;
    assert!(
        relay.tls,
        "the flag's key replaced the file's: {:?}",
        relay.output()
    );
    relay.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_tls_tells_the_tabs_and_exits_zero() -> Result<()> {
    init_logging();
    let cert = TestCert::new()?;
    let sshd = Sshd::start().await?;
    let target = format!("sshd={}", sshd.address());
    let (c, k) = (
        TestCert::path_str(&cert.cert),
        TestCert::path_str(&cert.key),
    );
    let mut relay = RelayProcess::start(
        &["--target", &target, "--tls-cert", c, "--tls-key", k],
        "warn",
    )
    .await?;
    assert!(relay.ws_url().starts_with("wss://"), "{}", relay.ws_url());
    let session = log_in_tls(&relay.ws_url(), sshd_login(&sshd), cert.client_config()?).await?;
    let (_echo, fwd) = echo_forward(&session).await?;
    assert_eq!(exchange(fwd.listen(), b"before").await?, b"before");

    relay.terminate_cleanly(&session, fwd.listen()).await
}

/// Text of the element matching `selector`, once there.
async fn text_of(c: &fantoccini::Client, selector: &str) -> Result<String> {
    wait_for(selector, Duration::from_secs(30), || async {
        c.find(Locator::Css(selector)).await.ok()?.text().await.ok()
    })
    .await
}

async fn add_forward(c: &fantoccini::Client, spec: &str) -> Result<()> {
    let input = c.find(Locator::Id("forward-spec")).await?;
    input.clear().await?;
    input.send_keys(spec).await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_over_https_says_where_and_who_can_reach_a_forward() -> Result<()> {
    let _one = browser_turn().await?;
    let cert = TestCert::new()?;
    let (tls_cert, tls_key) = (cert.cert.clone(), cert.key.clone());
    let sources = vec!["127.0.0.0/8".parse()?, "10.0.0.0/8".parse()?];
    let Lab { sshd, relay, .. } = Lab::builder()
        .configure(move |config| {
            config.tls_cert = Some(tls_cert);
            config.tls_key = Some(tls_key);
            config.public_host = Some("relay.lab.example".into());
            config.forward_allowed_sources = sources;
            config.allowed_binds.push("0.0.0.0".parse().unwrap());
        })
        .start()
        .await?;
    // Chromium trusts exactly this certificate's key, nothing else.
    let browser = Browser::start_with_args(&[format!(
        "--ignore-certificate-errors-spki-list={}",
        cert.spki_sha256
    )])
    .await?;
    let c = &browser.client;
    c.goto(&relay.http_url()).await?;
    assert!(
        c.current_url()
            .await?
            .as_str()
            .starts_with("https://127.0.0.1:")
    );
    log_in_with_password(c, "sshd", sshd.user, sshd.password).await?;

    // Bound to every address: the public name, and who may connect.
    let echo = EchoServer::start("127.0.0.1").await?;
    let open_spec = format!("*:0:127.0.0.1:{}", echo.addr.port());
    add_forward(c, &open_spec).await?;
    let row = format!(".forward-row[data-spec='{open_spec}']");
    let listen = text_of(c, &format!("{row} .listen")).await?;
    let port = listen
        .strip_prefix("0.0.0.0:")
        .with_context(|| format!("bound to every address: {listen}"))?;
    let connect = text_of(c, &format!("{row} .connect")).await?;
    assert_eq!(connect, format!("relay.lab.example:{port}"));
    let reach = text_of(c, &format!("{row} .reach")).await?;
    assert_eq!(
        reach,
        format!(
            "Anyone who can reach relay.lab.example:{port} can use this forward, from 127.0.0.0/8 or 10.0.0.0/8 only."
        )
    );
    // The data goes through (the test reaches the wildcard bind on loopback).
    let through = format!("127.0.0.1:{port}");
    assert_eq!(exchange(&through, b"over https").await?, b"over https");
    let stats = c.find(Locator::Css(&format!("{row} .stats"))).await?;
    wait_for("the row's counters", Duration::from_secs(10), || async {
        let text = stats.attr("data-text").await.ok()??;
        text.starts_with("connections 1 ").then_some(())
    })
    .await?;

    // Bound to loopback: only the relay host's own programs.
    let local_spec = format!("0:127.0.0.1:{}", echo.addr.port());
    add_forward(c, &local_spec).await?;
    let row = format!(".forward-row[data-spec='{local_spec}']");
    row_listen_address(c, &row).await?;
    let reach = text_of(c, &format!("{row} .reach")).await?;
    assert_eq!(
        reach,
        "Only programs on the relay host (any user on it) can use this forward, from 127.0.0.0/8 or 10.0.0.0/8 only."
    );
    assert!(
        c.find(Locator::Css(&format!("{row} .connect")))
            .await
            .is_err(),
        "a loopback forward has no other address to give"
    );

    c.find(Locator::Id("connect")).await?.click().await?;
    wait_until_port_free(&through).await?;
    browser.stop().await;
    Ok(())
}
