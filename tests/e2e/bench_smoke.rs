//! The bench runs: its binary, on tiny sizes (every measure, every path, and the load
//! section), exits 0 and writes the side-by-side table with a row for every measure and
//! a figure where each row must have one. Its figures are not judged here: speed is the
//! bench's to report, never a test's to assert.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tabtunnel_e2e::page::browser_turn;

/// Columns of the table after the measure's name.
const TAB: usize = 1;
const NATIVE: usize = 2;
const SSH: usize = 3;

/// Every measure of issue 10, as the table names it, and a column that must have a figure.
const ROWS: &[(&str, usize)] = &[
    ("upload MiB/s", TAB),
    ("download MiB/s", TAB),
    ("SOCKS (-D) upload MiB/s", NATIVE),
    ("SOCKS (-D) download MiB/s", NATIVE),
    ("download / upload", TAB),
    ("connect -> first echoed byte p50 (ms)", TAB),
    ("connect -> first echoed byte p99 (ms)", TAB),
    ("64 B ping-pong p50 (us)", TAB),
    ("64 B ping-pong p99 (us)", TAB),
    ("concurrent 1 MiB connections, total (s)", TAB),
    ("concurrent connections, errors", TAB),
    ("CPU ms/MiB: tab renderer", TAB),
    ("CPU ms/MiB: browser network service", TAB),
    ("CPU ms/MiB: relay", TAB),
    ("CPU ms/MiB: sshd", TAB),
    ("CPU ms/MiB: ssh", SSH),
    ("CPU ms/MiB: native client core (estimate)", NATIVE),
    ("CPU ms/MiB: whole pipeline", TAB),
    ("longest main-thread task in bulk (ms)", TAB),
    ("tab JS heap before -> after bulk (MiB)", TAB),
    ("relay RSS before -> after bulk (MiB)", TAB),
    ("wasm bundle raw (KiB)", TAB),
    ("wasm bundle gzip (KiB)", TAB),
];

/// Paths in the table: tab, native, ssh -L chacha20, ssh -L aes128-gcm.
const PATHS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_every_measure_on_a_tiny_size() -> Result<()> {
    // The bench starts a browser of its own: take the browser's turn like any browser test.
    let _one = browser_turn().await?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("bench.md");
    let mut bench = tokio::process::Command::new(env!("CARGO_BIN_EXE_bench"));
    bench
        .envs([
            ("BENCH_MIB", "1"),
            ("BENCH_RUNS", "1"),
            ("BENCH_CONNECTS", "5"),
            ("BENCH_TURNS", "10"),
            ("BENCH_CONCURRENT", "3"),
            ("BENCH_SESSIONS", "5"),
            ("BENCH_LOAD_SECS", "1"),
        ])
        .env("BENCH_OUT", &out)
        .env("TABTUNNEL_WEB_DIR", tabtunnel_e2e::relay::web_dir())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(300), bench.output())
        .await
        .context("the bench did not finish within 300 s")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "the bench exited with {}:\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let table = std::fs::read_to_string(&out)
        .with_context(|| format!("the bench wrote no table to {}", out.display()))?;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter_map(|line| line.strip_prefix('|')?.strip_suffix('|'))
        .map(|line| line.split('|').map(str::trim).collect())
        .collect();
    for (measure, column) in ROWS {
        let row = rows
            .iter()
            .find(|cells| cells.first() == Some(measure))
            .with_context(|| format!("no row {measure:?} in the table:\n{table}"))?;
        ensure!(
            row.len() > PATHS,
            "row {measure:?} has {} cells, fewer than a figure per path: {row:?}",
            row.len()
        );
        let figure = row[*column];
        ensure!(
            !figure.is_empty() && figure != "-",
            "row {measure:?} has no figure in column {column}: {row:?}"
        );
    }
    ensure!(
        table.contains("OpenSSH_") && table.contains("Chromium") && table.contains(" cores"),
        "the table's header lacks the versions or the core count:\n{table}"
    );
    ensure!(
        table.contains("### Load") && table.contains("log in + forward, 5 of 5 sessions"),
        "the table lacks the load section:\n{table}"
    );
    Ok(())
}
