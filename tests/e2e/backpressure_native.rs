//! Credit and SSH windows end to end: a TCP client that stops reading holds back only its
//! own connection. The far side stops sending after about a window, and every other
//! connection of the same session keeps moving.

use std::time::Duration;

use anyhow::{Context, Result};
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::services::{EchoServer, FloodServer, exchange};
use tabtunnel_e2e::{log_in, pattern, sshd_login, wait_until_steady};
use tokio::io::AsyncReadExt;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_holds_back_only_its_own_connection() -> Result<()> {
    let Lab { sshd, relay, .. } = Lab::start().await?;
    let session = log_in(&relay.ws_url(), sshd_login(&sshd)).await?;
    let flood = FloodServer::start(GIB).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let flood_fwd = session
        .forward(&format!("0:127.0.0.1:{}", flood.addr.port()))
        .await?;
    let echo_fwd = session
        .forward(&format!("0:127.0.0.1:{}", echo.addr.port()))
        .await?;

    // A client that reads a little, then stops reading while the far side sends 1 GiB.
    let mut stalled = tokio::net::TcpStream::connect(flood_fwd.listen()).await?;
    let mut first = vec![0u8; 64 * 1024];
    stalled.read_exact(&mut first).await?;
    let held = wait_until_steady("the flood", Duration::from_secs(60), || flood.sent()).await?;
    let carried = flood_fwd.stats().bytes_down;
    eprintln!(
        "stalled reader: the far side sent {:.1} MiB of 1 GiB, the tab passed on {:.1} MiB",
        held as f64 / MIB as f64,
        carried as f64 / MIB as f64
    );
    // Windows along the way (SSH 2 MiB, credit 256 KiB) plus the kernel's socket buffers
    // at each TCP hop; without flow control the whole GiB would be read.
    assert!(
        held < 64 * MIB,
        "the far side sent {held} bytes to a reader that stopped: nothing held it back"
    );

    // Meanwhile another connection of the same session moves 8 MiB each way.
    let data = pattern(5, 8 << 20);
    let echoed = tokio::time::timeout(Duration::from_secs(120), exchange(echo_fwd.listen(), &data))
        .await
        .context("a connection of the same session was stuck behind the stalled reader")??;
    assert!(echoed == data, "the echo came back different");
    assert!(
        flood.sent() < held + 4 * MIB,
        "the stalled connection kept receiving while the other one ran"
    );

    // The stalled reader resumes where it stopped.
    let mut more = vec![0u8; 8 << 20];
    tokio::time::timeout(Duration::from_secs(120), stalled.read_exact(&mut more))
        .await
        .context("the stalled connection did not resume when its reader did")??;
    assert!(flood.sent() > held, "the far side did not resume sending");
    drop(stalled);
    drop(sshd);
    Ok(())
}
