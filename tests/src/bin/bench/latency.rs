//! Latency through a path's echo forward: how long a new connection takes to echo its
//! first byte, and 64 B round trips on one connection.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest one connection or turn may take before the bench fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Median and 99th percentile (nearest rank) of some durations.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let rank = |p: usize| {
            let index = (samples.len() * p).div_ceil(100).saturating_sub(1);
            samples.get(index).copied().unwrap_or_default()
        };
        Self {
            p50: rank(50),
            p99: rank(99),
        }
    }
}

/// `count` new connections, one after another: from connect until the first echoed byte
/// is back. Each then half-closes and reads to the end, so no teardown overlaps the next.
pub async fn connect_to_first_byte(echo: &str, count: usize) -> Result<Percentiles> {
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let sample = tokio::time::timeout(STEP_TIMEOUT, async {
            let started = Instant::now();
            let mut stream = TcpStream::connect(echo).await?;
            stream.set_nodelay(true)?;
            stream.write_all(&[i as u8]).await?;
            let mut byte = [0u8];
            stream.read_exact(&mut byte).await?;
            let elapsed = started.elapsed();
            anyhow::ensure!(byte[0] == i as u8, "connection {i} echoed {byte:?}");
            stream.shutdown().await?;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await?;
            anyhow::ensure!(
                rest.is_empty(),
                "connection {i} echoed more than it was sent"
            );
            Ok(elapsed)
        })
        .await
        .with_context(|| format!("connection {i} echoed nothing within {STEP_TIMEOUT:?}"))?
        .with_context(|| format!("connection {i} of {count}"))?;
        samples.push(sample);
    }
    Ok(Percentiles::of(samples))
}

/// `turns` round trips of 64 B on one connection: write, then read the echo back.
pub async fn ping_pong(echo: &str, turns: usize) -> Result<Percentiles> {
    let mut stream = TcpStream::connect(echo).await?;
    stream.set_nodelay(true)?;
    let mut samples = Vec::with_capacity(turns);
    let mut ping = [0u8; 64];
    let mut pong = [0u8; 64];
    for turn in 0..turns {
        ping.fill(turn as u8);
        let started = Instant::now();
        tokio::time::timeout(STEP_TIMEOUT, async {
            stream.write_all(&ping).await?;
            stream.read_exact(&mut pong).await
        })
        .await
        .with_context(|| format!("turn {turn}: no echo within {STEP_TIMEOUT:?}"))??;
        samples.push(started.elapsed());
        anyhow::ensure!(pong == ping, "turn {turn}: the echo differs");
    }
    Ok(Percentiles::of(samples))
}
