//! The stalled reader through the real page: a TCP client stops reading while the far side
//! sends 1 GiB. The relay process's memory and the tab's (JS heap and wasm memory) grow by
//! about a window, not by the flood, and another connection of the same session keeps
//! moving meanwhile.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tabtunnel_e2e::browser::Browser;
use tabtunnel_e2e::page::{browser_turn, open, open_forwards_with_key};
use tabtunnel_e2e::relay::{RelayProcess, web_dir};
use tabtunnel_e2e::services::{EchoServer, FloodServer, exchange};
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{pattern, process_memory, wait_until_steady};
use tokio::io::AsyncReadExt;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// What a stalled connection may cost each of relay and tab: its SSH window (2 MiB) and
/// credit window (256 KiB), with room for allocator slack. The flood is 1 GiB.
const BOUND: u64 = 8 * MIB;

#[derive(Debug, Clone, Copy)]
struct Memory {
    relay_rss: u64,
    js_heap: u64,
    wasm: u64,
}

impl Memory {
    async fn read(browser: &Browser, relay: &RelayProcess) -> Result<Self> {
        let tab = browser
            .run_js(
                r#"
                if (typeof gc !== "function") throw new Error("gc() is missing: start Chromium with --js-flags=--expose-gc");
                gc();
                await new Promise((resolve) => setTimeout(resolve, 0));
                gc();
                const wasm = await m.default();
                return { heap: performance.memory.usedJSHeapSize, wasm: wasm.memory.buffer.byteLength };
                "#,
                vec![],
            )
            .await?;
        let number = |v: &Value| v.as_u64().context("a memory figure");
        Ok(Self {
            relay_rss: process_memory(relay.pid()?)?.0,
            js_heap: number(&tab["heap"])?,
            wasm: number(&tab["wasm"])?,
        })
    }

    fn growth_since(&self, base: &Memory) -> [(&'static str, i64); 3] {
        let d = |a: u64, b: u64| a as i64 - b as i64;
        [
            ("relay RSS", d(self.relay_rss, base.relay_rss)),
            ("tab JS heap", d(self.js_heap, base.js_heap)),
            ("tab wasm memory", d(self.wasm, base.wasm)),
        ]
    }
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / MIB as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_costs_the_relay_and_the_tab_about_a_window() -> Result<()> {
    let _one = browser_turn().await?;
    let sshd = Sshd::start().await?;
    let target = format!("sshd={}", sshd.address());
    let web = web_dir().display().to_string();
    let relay = RelayProcess::start(&["--target", &target, "--web-dir", &web], "warn").await?;
    let flood = FloodServer::start(GIB).await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let browser = open(&relay.http_url()).await?;
    let specs = [
        format!("0:127.0.0.1:{}", flood.addr.port()),
        format!("0:127.0.0.1:{}", echo.addr.port()),
    ];
    let [flood_listen, echo_listen]: [String; 2] = open_forwards_with_key(&browser, &sshd, &specs)
        .await?
        .try_into()
        .map_err(|l| anyhow::anyhow!("two forwards, got {l:?}"))?;

    // Warm up with ordinary traffic, so buffers that any transfer needs are counted in the
    // baseline, not against the stalled reader.
    let data = pattern(9, 8 << 20);
    assert!(exchange(&echo_listen, &data).await? == data);
    let base = Memory::read(&browser, &relay).await?;

    let mut stalled = tokio::net::TcpStream::connect(&flood_listen).await?;
    let mut first = vec![0u8; 64 * 1024];
    stalled.read_exact(&mut first).await?;
    let held = wait_until_steady("the flood", Duration::from_secs(60), || flood.sent()).await?;
    let stalled_mem = Memory::read(&browser, &relay).await?;

    // Another connection of the same session moves 8 MiB each way meanwhile.
    let echoed = tokio::time::timeout(Duration::from_secs(120), exchange(&echo_listen, &data))
        .await
        .context("a connection of the same session was stuck behind the stalled reader")??;
    assert!(echoed == data, "the echo came back different");
    let after_echo = Memory::read(&browser, &relay).await?;

    eprintln!(
        "stalled reader (1 GiB offered): the far side sent {:.1} MiB; baseline relay RSS {:.1} MiB, \
         tab JS heap {:.1} MiB, wasm memory {:.1} MiB",
        held as f64 / MIB as f64,
        mib(base.relay_rss as i64),
        mib(base.js_heap as i64),
        mib(base.wasm as i64),
    );
    for (when, memory) in [
        ("while stalled", &stalled_mem),
        ("after 8 MiB echo", &after_echo),
    ] {
        eprintln!(
            "  {when}: relay RSS {:.1} MiB, tab JS heap {:.1} MiB, wasm memory {:.1} MiB",
            mib(memory.relay_rss as i64),
            mib(memory.js_heap as i64),
            mib(memory.wasm as i64),
        );
        for (what, growth) in memory.growth_since(&base) {
            eprintln!("  {when}: {what} grew {:.2} MiB", mib(growth));
            assert!(
                growth < BOUND as i64,
                "{when}: {what} grew {:.1} MiB, more than {} MiB for one stalled connection",
                mib(growth),
                BOUND / MIB
            );
        }
    }
    assert!(
        held < 64 * MIB,
        "the far side sent {held} bytes to a reader that stopped: nothing held it back"
    );

    let mut more = vec![0u8; 8 << 20];
    tokio::time::timeout(Duration::from_secs(120), stalled.read_exact(&mut more))
        .await
        .context("the stalled connection did not resume when its reader did")??;
    drop(stalled);
    browser.stop().await;
    drop(sshd);
    Ok(())
}
