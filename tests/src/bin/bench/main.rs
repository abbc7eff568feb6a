//! `cargo xtask bench`: tabtunnel side by side with OpenSSH's `ssh -L`, through the same
//! loopback sshd, then the relay under load. The side-by-side table goes to stdout and,
//! as Markdown, to BENCH_OUT (default `<target dir>/bench-latest.md`).
//!
//! Paths ([`paths`]): the tab (the real page in headless Chromium, through the relay
//! process), the native client core (through the relay process), `ssh -L` with
//! chacha20-poly1305 (the reference) and with aes128-gcm. On each path, in turn:
//!
//! - bulk upload and download, median of BENCH_RUNS, with each process's CPU ([`bulk`]);
//! - the tab's longest main-thread task and JS heap around them ([`tab_probe`]), and the
//!   relay's and renderer's memory ([`footprint`]);
//! - connect to first echoed byte, and 64 B ping-pong ([`latency`]);
//! - many 1 MiB connections at once ([`concurrent`]);
//!
//! then the wasm bundle's size ([`wasm_size`]) and the load section ([`load`]). Any
//! corrupted transfer or failed connection fails the bench (after the table is written).
//!
//! `bench --load` runs only the load section (it needs no browser and no wasm bundle).
//! Figures depend on this machine; compare rows of one run, not runs of different machines.

mod about;
mod bulk;
mod concurrent;
mod footprint;
mod latency;
mod load;
mod options;
mod paths;
mod procs;
mod report;
mod tab_probe;
mod wasm_size;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tabtunnel_e2e::sshd::Sshd;

use crate::options::Options;
use crate::paths::{Column, Destinations, Path};
use crate::report::{Figures, Table};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut load_only = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--load" => load_only = true,
            other => anyhow::bail!("unknown argument {other:?}: the bench takes only --load"),
        }
    }
    let options = Options::from_env()?;
    let load = load::LoadOptions::from_env()?;
    if load_only {
        load::run(&load).await?;
        return Ok(());
    }
    let table = side_by_side(&options).await?;
    let markdown = table.markdown();
    println!("\n{markdown}");
    write(&options, &markdown)?;
    let misses = table.misses();
    if !misses.is_empty() {
        println!("targets missed: {}", misses.join("; "));
    }
    let errors = table.errors();
    anyhow::ensure!(
        errors == 0,
        "{errors} concurrent connections failed (see the table)"
    );
    let load_table = load::run(&load).await?;
    write(
        &options,
        &format!("{markdown}\n### Load (relay process only)\n\n```text{load_table}```\n"),
    )
}

/// Every measure on every path, through one sshd and one relay process.
async fn side_by_side(options: &Options) -> Result<Table> {
    let sshd = Sshd::start().await?;
    let (relay, _relay_config) = paths::start_relay(&sshd).await?;
    let mut to = Destinations::start(options.mib).await?;
    let mut figures = BTreeMap::new();
    for column in Column::ALL {
        println!("measuring {} ...", column.label());
        let path = match column {
            Column::Tab => Path::tab(&relay, &sshd, &to, &options.chromium_args).await,
            Column::Native => Path::native(&relay, &sshd, &to).await,
            Column::SshChacha | Column::SshAes => Path::ssh(column, &sshd, &to).await,
        }
        .with_context(|| format!("setting up the {} path", column.label()))?;
        let measured = measure(&path, &mut to, options).await;
        path.stop().await;
        figures.insert(
            column,
            measured.with_context(|| format!("measuring the {} path", column.label()))?,
        );
    }
    let wasm = wasm_size::measure()?;
    let relay_log = relay.kill().await?;
    for line in relay_log
        .iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .take(5)
    {
        println!("relay: {line}");
    }
    Ok(Table::build(
        about::read(options),
        &figures,
        &wasm,
        options.mib,
    ))
}

/// The measures, in order, on one path.
async fn measure(path: &Path, to: &mut Destinations, options: &Options) -> Result<Figures> {
    // Memory first: its gc() is a task of its own, not the transfer's.
    let before = footprint::read(path).await?;
    if let Some(browser) = &path.browser {
        tab_probe::watch_long_tasks(browser).await?;
    }
    let bulk = bulk::run(path, to, options).await?;
    let longest_task_ms = match &path.browser {
        Some(browser) => Some(tab_probe::longest_task_ms(browser).await?),
        None => None,
    };
    let after = footprint::read(path).await?;
    let connect = latency::connect_to_first_byte(&path.forwards.echo, options.connects).await?;
    let ping = latency::ping_pong(&path.forwards.echo, options.turns).await?;
    let concurrent = concurrent::run(
        &path.forwards.echo,
        options.concurrent,
        options.concurrent_mib,
    )
    .await;
    for error in concurrent.errors.iter().take(3) {
        println!(
            "{}: concurrent connection failed: {error}",
            path.column.label()
        );
    }
    Ok(Figures {
        bulk,
        footprint: (before, after),
        longest_task_ms,
        connect,
        ping,
        concurrent,
    })
}

fn write(options: &Options, markdown: &str) -> Result<()> {
    if let Some(dir) = options.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&options.out, markdown)
        .with_context(|| format!("writing {}", options.out.display()))?;
    println!("table written to {}", options.out.display());
    Ok(())
}
