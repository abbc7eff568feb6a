//! Bulk transfers: `runs` downloads and uploads of `mib` MiB each through one path, their
//! median speed each way, and the CPU time each of the path's processes spent on them.
//! A path with a `-D` forward then moves the same bytes through it by SOCKS5 (not in the
//! CPU figures).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tabtunnel_e2e::sha256_hex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::options::Options;
use crate::paths::{Destinations, MIB, Path, Role};

/// Longest one transfer may take (a stalled path fails the bench instead of hanging it).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Bulk {
    /// Median MiB/s.
    pub upload: f64,
    pub download: f64,
    /// CPU milliseconds per MiB moved, by role, over all runs both ways.
    pub cpu_ms_per_mib: BTreeMap<Role, f64>,
    /// The same through the path's `-D` forward, if it has one.
    pub socks: Option<Speeds>,
}

/// Median MiB/s each way.
#[derive(Debug, Clone, Copy)]
pub struct Speeds {
    pub upload: f64,
    pub download: f64,
}

pub async fn run(path: &Path, to: &mut Destinations, options: &Options) -> Result<Bulk> {
    let before: Vec<_> = path.processes.iter().map(|(_, g)| g.cpu()).collect();
    let (mut uploads, mut downloads) = (Vec::new(), Vec::new());
    for _ in 0..options.runs {
        let seconds = download(&path.forwards.download, to, options.mib).await?;
        downloads.push(options.mib as f64 / seconds);
        let seconds = upload(&path.forwards.upload, to).await?;
        uploads.push(options.mib as f64 / seconds);
    }
    let moved = (options.mib * options.runs * 2) as f64;
    let cpu_ms_per_mib = path
        .processes
        .iter()
        .zip(&before)
        .map(|((role, group), before)| (*role, group.cpu().since(before) * 1000.0 / moved))
        .collect();
    let socks = match &path.socks {
        Some(proxy) => Some(through_socks(proxy, to, options).await?),
        None => None,
    };
    Ok(Bulk {
        upload: median(uploads),
        download: median(downloads),
        cpu_ms_per_mib,
        socks,
    })
}

/// The downloads and uploads again, each connection asking `proxy` for its destination.
async fn through_socks(proxy: &str, to: &mut Destinations, options: &Options) -> Result<Speeds> {
    let (mut uploads, mut downloads) = (Vec::new(), Vec::new());
    for _ in 0..options.runs {
        let stream = tokio::net::TcpStream::connect(proxy).await?;
        let started = Instant::now();
        let stream = socks5_connect(stream, to.download.addr).await?;
        let seconds = download_on(stream, started, to, options.mib).await?;
        downloads.push(options.mib as f64 / seconds);
        let stream = tokio::net::TcpStream::connect(proxy).await?;
        let started = Instant::now();
        let stream = socks5_connect(stream, to.upload.addr).await?;
        let seconds = upload_on(stream, started, to).await?;
        uploads.push(options.mib as f64 / seconds);
    }
    Ok(Speeds {
        upload: median(uploads),
        download: median(downloads),
    })
}

/// A SOCKS5 CONNECT (no authentication) to `to`, answered with success.
async fn socks5_connect(
    mut stream: tokio::net::TcpStream,
    to: std::net::SocketAddr,
) -> Result<tokio::net::TcpStream> {
    let std::net::IpAddr::V4(ip) = to.ip() else {
        anyhow::bail!("the destinations listen on IPv4");
    };
    stream.write_all(&[5, 1, 0]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    ensure!(choice == [5, 0], "the SOCKS server chose {choice:?}");
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&ip.octets());
    request.extend_from_slice(&to.port().to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).await?;
    ensure!(
        reply[1] == 0,
        "the SOCKS server refused with code {}",
        reply[1]
    );
    Ok(stream)
}

/// Seconds until the last byte of the download arrived; checked whole afterwards.
async fn download(listen: &str, to: &Destinations, mib: usize) -> Result<f64> {
    let stream = tokio::net::TcpStream::connect(listen).await?;
    download_on(stream, Instant::now(), to, mib).await
}

async fn download_on(
    mut stream: tokio::net::TcpStream,
    started: Instant,
    to: &Destinations,
    mib: usize,
) -> Result<f64> {
    stream.shutdown().await?;
    let mut received = Vec::with_capacity(mib * MIB);
    tokio::time::timeout(TRANSFER_TIMEOUT, stream.read_to_end(&mut received))
        .await
        .context("the download stalled")??;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        sha256_hex(&received) == to.download.sent_sha256,
        "download corrupted ({} of {} bytes)",
        received.len(),
        mib * MIB
    );
    Ok(seconds)
}

/// Seconds until the destination had every byte of the upload (it hashes as it reads).
async fn upload(listen: &str, to: &mut Destinations) -> Result<f64> {
    let stream = tokio::net::TcpStream::connect(listen).await?;
    upload_on(stream, Instant::now(), to).await
}

async fn upload_on(
    mut stream: tokio::net::TcpStream,
    started: Instant,
    to: &mut Destinations,
) -> Result<f64> {
    stream.write_all(&to.upload_data).await?;
    stream.shutdown().await?;
    let report = tokio::time::timeout(TRANSFER_TIMEOUT, to.upload.report())
        .await
        .context("the upload stalled")?
        .context("the upload destination stopped")?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.received_sha256 == to.upload_sha256,
        "upload corrupted ({} of {} bytes)",
        report.received,
        to.upload_data.len()
    );
    Ok(seconds)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
