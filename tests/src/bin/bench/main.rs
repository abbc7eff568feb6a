//! `cargo xtask bench`: throughput of one forward, measured three ways over the same
//! loopback sshd, the size of the page's wasm bundle, and the relay under load. Prints
//! tables.
//!
//! - native: the client core (release build) over tokio-tungstenite, through the relay;
//! - browser: the real page in headless Chromium, through the relay;
//! - ssh -L: OpenSSH's own client, the reference (no relay, no WebSocket);
//! - load: many sessions at once through the relay process, see [`load`].
//!
//! `bench --load` runs only the load section (it needs no browser and no wasm bundle).
//! Figures depend on this machine; compare rows of one run, not runs of different machines.

mod load;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tabtunnel_client::ConnectOptions;
use tabtunnel_client::native::NativeTransport;
use tabtunnel_e2e::browser::Browser;
use tabtunnel_e2e::page::open_forwards_with_key;
use tabtunnel_e2e::relay::{Relay, web_dir};
use tabtunnel_e2e::services::BulkServer;
use tabtunnel_e2e::sshd::{Sshd, free_port};
use tabtunnel_e2e::{pattern, sha256_hex, sshd_key_login, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

#[derive(Debug)]
struct Row {
    path: &'static str,
    direction: &'static str,
    mib: usize,
    seconds: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut load_only = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--load" => load_only = true,
            other => anyhow::bail!("unknown argument {other:?}: the bench takes only --load"),
        }
    }
    let load = load::LoadOptions::from_env()?;
    if !load_only {
        throughput().await?;
    }
    load::run(&load).await
}

/// The throughput table and the bundle's size.
async fn throughput() -> Result<()> {
    let size: usize = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let sshd = Sshd::start().await?;
    let relay = Relay::start(&[("sshd", &sshd.address())]).await?;
    let mut rows = Vec::new();

    // Native client core through the relay.
    let transport = NativeTransport::connect(&relay.ws_url()).await?;
    let options = ConnectOptions {
        keepalive: Some(Default::default()),
        ..sshd_key_login(&sshd)
    };
    let session = tabtunnel_client::connect(transport, options).await?;
    for direction in ["download", "upload"] {
        let (mut bulk, bytes) = destination(direction, size).await?;
        let fwd = session
            .forward(&format!("0:127.0.0.1:{}", bulk.addr.port()))
            .await?;
        let seconds = transfer(fwd.listen(), direction, &bytes, &mut bulk, size).await?;
        rows.push(Row {
            path: "native client -> relay -> sshd",
            direction,
            mib: size,
            seconds,
        });
        fwd.close().await?;
    }
    session.close().await;

    // The page in Chromium through the relay.
    let browser = Browser::start().await?;
    browser.client.goto(&relay.http_url()).await?;
    for direction in ["download", "upload"] {
        let (mut bulk, bytes) = destination(direction, size).await?;
        let specs = [format!("0:127.0.0.1:{}", bulk.addr.port())];
        let listen = open_forwards_with_key(&browser, &sshd, &specs)
            .await?
            .remove(0);
        let seconds = transfer(&listen, direction, &bytes, &mut bulk, size).await?;
        rows.push(Row {
            path: "browser tab -> relay -> sshd",
            direction,
            mib: size,
            seconds,
        });
    }
    browser.stop().await;

    // OpenSSH's ssh -L to the same sshd: the reference.
    for cipher in ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"] {
        for direction in ["download", "upload"] {
            let (mut bulk, bytes) = destination(direction, size).await?;
            let port = free_port()?;
            let ssh = OpenSsh::forward(&sshd, cipher, port, bulk.addr.port()).await?;
            let seconds = transfer(
                &format!("127.0.0.1:{port}"),
                direction,
                &bytes,
                &mut bulk,
                size,
            )
            .await?;
            rows.push(Row {
                path: if cipher.starts_with("chacha") {
                    "ssh -L (chacha20-poly1305)"
                } else {
                    "ssh -L (aes128-gcm)"
                },
                direction,
                mib: size,
                seconds,
            });
            drop(ssh);
        }
    }

    println!();
    println!(
        "{:<34} {:>9} {:>7} {:>9} {:>9}",
        "path", "direction", "MiB", "seconds", "MiB/s"
    );
    println!("{}", "-".repeat(72));
    for row in &rows {
        println!(
            "{:<34} {:>9} {:>7} {:>9.2} {:>9.1}",
            row.path,
            row.direction,
            row.mib,
            row.seconds,
            row.mib as f64 / row.seconds
        );
    }
    let wasm = web_dir().join("pkg/client_wasm_bg.wasm");
    let raw = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    println!();
    println!(
        "wasm bundle: {} KiB raw, {} KiB gzip (as the relay serves it to browsers that accept gzip)",
        raw.len() / 1024,
        gzip_len(&raw)? / 1024
    );
    Ok(())
}

/// A destination that sends `size` MiB (download) or receives them (upload).
async fn destination(direction: &str, size: usize) -> Result<(BulkServer, Vec<u8>)> {
    let (send, upload) = match direction {
        "download" => (size * MIB, Vec::new()),
        _ => (0, pattern(3, size * MIB)),
    };
    Ok((BulkServer::start(send, 9).await?, upload))
}

/// One transfer through `listen`; returns seconds until the last byte arrived.
async fn transfer(
    listen: &str,
    direction: &str,
    upload: &[u8],
    bulk: &mut BulkServer,
    size: usize,
) -> Result<f64> {
    let mut stream = tokio::net::TcpStream::connect(listen).await?;
    let started = Instant::now();
    if direction == "download" {
        stream.shutdown().await?;
        let mut received = Vec::with_capacity(size * MIB);
        stream.read_to_end(&mut received).await?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            sha256_hex(&received) == bulk.sent_sha256,
            "download corrupted"
        );
        Ok(seconds)
    } else {
        stream.write_all(upload).await?;
        stream.shutdown().await?;
        let report = tokio::time::timeout(Duration::from_secs(300), bulk.report())
            .await?
            .context("no report")?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            report.received_sha256 == sha256_hex(upload),
            "upload corrupted"
        );
        Ok(seconds)
    }
}

/// `ssh -N -L` to the bench's sshd, killed on drop.
struct OpenSsh(std::process::Child);

impl OpenSsh {
    async fn forward(sshd: &Sshd, cipher: &str, local: u16, remote: u16) -> Result<Self> {
        let key = sshd.dir().join("client_ed25519");
        let child = std::process::Command::new("ssh")
            .args([
                "-N",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "LogLevel=ERROR", "-c", cipher, "-i"])
            .arg(&key)
            .args([
                "-p",
                &sshd.port.to_string(),
                "-L",
                &format!("127.0.0.1:{local}:127.0.0.1:{remote}"),
            ])
            .arg(format!("{}@127.0.0.1", sshd.user))
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("starting ssh (openssh-client)")?;
        let guard = Self(child);
        // Probe by binding, not connecting: a connection would be forwarded for real.
        wait_for("ssh -L to listen", Duration::from_secs(20), || async {
            std::net::TcpListener::bind(("127.0.0.1", local))
                .is_err()
                .then_some(())
        })
        .await?;
        Ok(guard)
    }
}

impl Drop for OpenSsh {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gzip_len(data: &[u8]) -> Result<usize> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data)?;
    Ok(encoder.finish()?.len())
}
