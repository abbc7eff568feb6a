//! Security property 1: credentials never leave the tab. A session with a known password,
//! and one with a private key, through the real relay binary logging at TRACE; a proxy
//! records every WebSocket payload the relay received, unmasked. Neither the password
//! nor any piece of the key appears in what the relay received or logged. The relay's
//! access token reaches the relay (it is checked there) but never its log, in text or hex.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tabtunnel_client::native::NativeTransport;
use tabtunnel_client::{Auth, ConnectOptions, connect};
use tabtunnel_e2e::relay::RelayProcess;
use tabtunnel_e2e::services::{EchoServer, exchange};
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{init_logging, sshd_login};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Forwards TCP to `upstream` and records the payload of every WebSocket frame the
/// client sent, unmasked, as the relay saw it.
async fn recording_proxy(upstream: String) -> Result<(String, Arc<Mutex<Vec<u8>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await; // pass the relay's close on
                });
                let mut raw = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    raw.extend_from_slice(&buf[..n]);
                }
                let _ = sw.shutdown().await; // and the client's
                record
                    .lock()
                    .expect("record")
                    .extend(unmask_client_frames(&raw));
                let _ = tokio::time::timeout(Duration::from_secs(5), down).await;
            });
        }
    });
    Ok((addr, seen))
}

/// The payloads of the client's WebSocket frames after the HTTP upgrade, unmasked.
fn unmask_client_frames(raw: &[u8]) -> Vec<u8> {
    let Some(start) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Vec::new();
    };
    let mut out = raw[..start].to_vec(); // the upgrade request itself, in clear
    let mut i = start + 4;
    while i + 2 <= raw.len() {
        let masked = raw[i + 1] & 0x80 != 0;
        let mut len = u64::from(raw[i + 1] & 0x7f);
        i += 2;
        if len == 126 && i + 2 <= raw.len() {
            len = u64::from(u16::from_be_bytes([raw[i], raw[i + 1]]));
            i += 2;
        } else if len == 127 && i + 8 <= raw.len() {
            len = u64::from_be_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
            i += 8;
        }
        let key = if masked && i + 4 <= raw.len() {
            let key = [raw[i], raw[i + 1], raw[i + 2], raw[i + 3]];
            i += 4;
            key
        } else {
            [0; 4]
        };
        let end = (i + len as usize).min(raw.len());
        out.extend(raw[i..end].iter().enumerate().map(|(j, b)| b ^ key[j % 4]));
        i = end;
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every 16-byte window of the secret seed of an unencrypted OpenSSH ed25519 key file.
/// The file's public parts (format header, algorithm name, public key) also appear in
/// any SSH handshake or are public anyway, so they prove nothing and are left out.
fn key_pieces(pem: &str) -> Vec<Vec<u8>> {
    use base64ct::{Base64, Encoding};
    fn take<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
        let len = u32::from_be_bytes(rest[..4].try_into().expect("length")) as usize;
        let value = &rest[4..4 + len];
        *rest = &rest[4 + len..];
        value
    }
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let blob = Base64::decode_vec(&body).expect("key body");
    let mut rest = &blob[b"openssh-key-v1\0".len()..];
    assert_eq!(take(&mut rest), b"none", "the test key is unencrypted");
    let (_kdf, _kdf_options) = (take(&mut rest), take(&mut rest));
    rest = &rest[4..]; // number of keys
    let _public = take(&mut rest);
    let mut private = &take(&mut rest)[8..]; // after two check integers
    assert_eq!(take(&mut private), b"ssh-ed25519");
    let _public_half = take(&mut private);
    let secret = take(&mut private); // seed (32 bytes) then the public half
    assert_eq!(secret.len(), 64);
    secret[..32].windows(16).map(<[u8]>::to_vec).collect()
}

#[tokio::test]
async fn neither_password_nor_key_reaches_the_relay_or_its_logs() -> Result<()> {
    sessions_leak_nothing(&[]).await.map(drop)
}

/// The same, with `--log-format json`; and every log line is a JSON object.
#[tokio::test]
async fn neither_password_nor_key_reaches_the_relays_json_logs() -> Result<()> {
    let logs = sessions_leak_nothing(&["--log-format", "json"]).await?;
    let mut objects = 0;
    for line in &logs {
        // The one line that is not a log line: where the relay serves, for people.
        if line.starts_with("tabtunnel relay: open ") {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|err| anyhow::anyhow!("not JSON ({err}): {line}"))?;
        assert!(
            value.get("level").is_some() && value.get("fields").is_some(),
            "{line}"
        );
        objects += 1;
    }
    assert!(objects >= 10, "{objects} JSON log lines");
    Ok(())
}

/// Two sessions (password, key) through the relay binary run with `log_args` at TRACE;
/// asserts nothing secret reached it or its logs, and returns the log lines.
async fn sessions_leak_nothing(log_args: &[&str]) -> Result<Vec<String>> {
    init_logging();
    let sshd = Sshd::start().await?;
    let target = format!("sshd={}", sshd.address());
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens");
    let token = "erin-5e3c0a91d2b74f68";
    std::fs::write(&tokens, format!("erin {token}\n"))?;
    let token_file = tokens.to_string_lossy().into_owned();
    let mut args = vec!["--target", &target, "--token-file", &token_file];
    args.extend_from_slice(log_args);
    let relay = RelayProcess::start(&args, "trace").await?;
    let relay_addr = relay.addr.clone();
    let (proxy, seen) = recording_proxy(relay_addr).await?;
    let echo = EchoServer::start("127.0.0.1").await?;

    for auth in [
        Auth::Password(sshd.password.into()),
        Auth::PrivateKey {
            pem: sshd.client_key.clone(),
            passphrase: None,
        },
    ] {
        let step = |what: &'static str| move |_| anyhow::anyhow!("timed out: {what}");
        let transport = tokio::time::timeout(
            Duration::from_secs(20),
            NativeTransport::connect(&format!("ws://{proxy}/ws")),
        )
        .await
        .map_err(step("open the WebSocket"))??;
        let options = ConnectOptions {
            auth: auth.into(),
            token: Some(token.into()),
            ..sshd_login(&sshd)
        };
        let session = tokio::time::timeout(Duration::from_secs(20), connect(transport, options))
            .await
            .map_err(step("log in"))??;
        let fwd = session
            .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
            .await?;
        let echoed =
            tokio::time::timeout(Duration::from_secs(20), exchange(fwd.listen(), b"payload"))
                .await
                .map_err(step("move bytes"))??;
        assert_eq!(echoed, b"payload");
        tokio::time::timeout(Duration::from_secs(20), session.close())
            .await
            .map_err(step("close"))?;
    }
    // Let the proxy's connections finish recording, then stop the relay for its logs.
    tabtunnel_e2e::wait_for(
        "the proxy to record both sessions",
        Duration::from_secs(10),
        || async {
            let seen = seen.lock().expect("record");
            (contains(&seen, b"\x01\x00\x00\x00\x00")
                && seen.windows(8).filter(|w| w == b"SSH-2.0-").count() >= 2)
                .then_some(())
        },
    )
    .await?;
    let log_lines = relay.kill().await?;
    let logs = log_lines.join("\n").into_bytes();

    let seen = seen.lock().expect("record").clone();
    // Positive controls: the capture really holds the tab's frames, in clear.
    assert!(
        contains(&seen, b"sshd"),
        "the Hello's target name is visible"
    );
    assert!(
        contains(&seen, b"SSH-2.0-"),
        "the tab's SSH banner is visible"
    );
    assert!(
        contains(&seen, token.as_bytes()),
        "the Hello's token is visible"
    );
    assert!(
        logs.len() > 1000,
        "TRACE logging produced {} bytes",
        logs.len()
    );
    for (name, haystack) in [("received traffic", &seen), ("logs", &logs)] {
        assert!(
            !contains(haystack, sshd.password.as_bytes()),
            "the password is in the relay's {name}"
        );
        if name == "logs" {
            let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(
                !contains(haystack, token.as_bytes()) && !contains(haystack, hex.as_bytes()),
                "the access token is in the relay's logs"
            );
            assert!(
                contains(haystack, b"erin"),
                "the token holder's name is logged"
            );
        }
        let leaked: Vec<String> = key_pieces(&sshd.client_key)
            .iter()
            .filter(|p| contains(haystack, p))
            .map(|p| p.escape_ascii().to_string())
            .collect();
        assert!(
            leaked.is_empty(),
            "pieces of the private key are in the relay's {name}: {leaked:?}"
        );
    }
    Ok(log_lines)
}
