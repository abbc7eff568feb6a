//! Many connections at once through a path's echo forward, each sending `mib` MiB and
//! reading it back: the wall time until all are done, and every connection that failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use tabtunnel_e2e::pattern;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::paths::MIB;

/// Longest all connections together may take; the unfinished ones count as errors.
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Concurrent {
    pub seconds: f64,
    /// Failed connections' messages (any fails the bench).
    pub errors: Vec<String>,
}

pub async fn run(echo: &str, connections: usize, mib: usize) -> Concurrent {
    let data: Arc<[u8]> = pattern(11, mib * MIB).into();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        tasks.spawn(echo_once(echo.to_owned(), data.clone()));
    }
    let mut errors = Vec::new();
    let all = tokio::time::timeout(TIMEOUT, async {
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(err)) => errors.push(format!("{err:#}")),
                Err(err) => errors.push(format!("task: {err}")),
            }
        }
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    if all.is_err() {
        errors.extend(std::iter::repeat_n(
            format!("not done within {TIMEOUT:?}"),
            tasks.len(),
        ));
    }
    Concurrent { seconds, errors }
}

/// Sends `data` then EOF while reading everything back; the echo must be the same bytes.
async fn echo_once(echo: String, data: Arc<[u8]>) -> Result<()> {
    let stream = tokio::net::TcpStream::connect(&echo).await?;
    let (mut reader, mut writer) = stream.into_split();
    let sent = data.clone();
    let write = async move {
        writer.write_all(&sent).await?;
        writer.shutdown().await
    };
    let mut received = Vec::with_capacity(data.len());
    let read = reader.read_to_end(&mut received);
    let (written, read) = tokio::join!(write, read);
    written?;
    read?;
    ensure!(
        received[..] == data[..],
        "echoed {} bytes of {}, or different ones",
        received.len(),
        data.len()
    );
    Ok(())
}
