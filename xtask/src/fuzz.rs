//! `cargo xtask fuzz`: the cargo-fuzz targets in fuzz/, on the stable toolchain.
//!
//! cargo-fuzz passes nightly-only flags (`-Zsanitizer=address`, `-Cpasses=sancov-module`)
//! to rustc. The toolchain is pinned to stable, so they are unlocked with
//! `RUSTC_BOOTSTRAP=1`, for the fuzz build only.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};

use crate::cmd::{Cmd, probe, quote_path};

/// cargo-fuzz is installed at exactly this version, project-locally, like wasm-bindgen-cli.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// A fuzz target in fuzz/fuzz_targets/ and how to run it.
#[derive(Debug)]
pub struct Target {
    pub name: &'static str,
    /// Step name in `cargo xtask test`'s summary.
    pub step: &'static str,
    /// libFuzzer's `-max_len`: large enough to reach every length check of the code.
    pub max_len: usize,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "frame_decode",
        step: "fuzz frame_decode",
        // Just over MAX_FRAME (64 KiB + 5), so that the too-long check is reached too.
        max_len: 65_600,
    },
    Target {
        name: "forward_spec",
        step: "fuzz forward_spec",
        // Host names stop at 253 bytes; a few times that covers every field's limit.
        max_len: 4096,
    },
    Target {
        name: "ssh_command",
        step: "fuzz ssh_command",
        max_len: 4096,
    },
    Target {
        name: "conn_table",
        step: "fuzz conn_table",
        // Each step takes a few bytes; a few thousand steps make long exchanges.
        max_len: 8192,
    },
    Target {
        name: "socks_handshake",
        step: "fuzz socks_handshake",
        // The longest SOCKS message is 520 bytes; a few of them, pipelined, and junk after.
        max_len: 4096,
    },
];

/// Largest resident memory a target may use before libFuzzer calls it a failure.
const RSS_LIMIT_MB: u32 = 2048;
/// One input running longer than this is a hang, and a failure.
const INPUT_TIMEOUT_SECS: u32 = 10;

pub fn target(name: &str) -> Result<&'static Target> {
    match TARGETS.iter().find(|t| t.name == name) {
        Some(t) => Ok(t),
        None => bail!(
            "there is no fuzz target {name:?}; the targets are: {}",
            TARGETS
                .iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Finds or installs cargo-fuzz at [`CARGO_FUZZ_VERSION`] in `.tools/`; returns its path.
pub fn cargo_fuzz(root: &Path) -> Result<PathBuf> {
    let version = CARGO_FUZZ_VERSION;
    let rel_root = PathBuf::from(".tools").join(format!("cargo-fuzz-{version}"));
    let local = root.join(&rel_root).join("bin/cargo-fuzz");
    let is_it = || probe(&local, &["--version"]) == Some(format!("cargo-fuzz {version}"));
    if is_it() {
        println!("ok: using {} ({version}, project-local)", local.display());
        return Ok(local);
    }
    println!(
        "installing cargo-fuzz {version} into {}",
        quote_path(&rel_root)
    );
    // `--force`: a half-finished earlier install may have left a stale record behind.
    Cmd::new("cargo")
        .args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            version,
            "--force",
            "--root",
        ])
        .arg(&rel_root)
        .current_dir(root)
        .run()?;
    if !is_it() {
        bail!(
            "after installing, {} --version does not print cargo-fuzz {version}",
            local.display()
        );
    }
    Ok(local)
}

/// cargo-fuzz's command with what every call needs: the stable-toolchain unlock and a
/// target directory inside the project's (so that `CARGO_TARGET_DIR` is honoured).
fn fuzz_cmd(root: &Path, cargo_fuzz: &Path, target_dir: &Path, sub: &str) -> Cmd {
    Cmd::new(cargo_fuzz)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", sub, "--target-dir"])
        .arg(target_dir.join("fuzz"))
        .current_dir(root)
}

/// Builds every target with AddressSanitizer.
pub fn build(root: &Path, cargo_fuzz: &Path, target_dir: &Path) -> Result<()> {
    fuzz_cmd(root, cargo_fuzz, target_dir, "build").run()
}

/// Fuzzes `target` for `seconds`, starting from its committed seeds and the working
/// corpus left by earlier runs; returns the number of inputs run. A failing input fails
/// the run, with the input's path and how to reproduce it.
pub fn run(
    root: &Path,
    cargo_fuzz: &Path,
    target_dir: &Path,
    target: &Target,
    seconds: u64,
) -> Result<u64> {
    let name = target.name;
    let corpus = PathBuf::from("fuzz/corpus").join(name);
    let seeds = PathBuf::from("fuzz/seeds").join(name);
    std::fs::create_dir_all(root.join(&corpus))?;
    let start = Instant::now();
    // The first corpus directory receives the new inputs, so the seeds stay as committed.
    let (status, stderr) = fuzz_cmd(root, cargo_fuzz, target_dir, "run")
        .arg(name)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={}", target.max_len))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .status_keep_stderr_showing(|line| !is_progress(line))?;
    let took = start.elapsed().as_secs_f64();
    if !status.success() {
        let input = failing_input(&stderr);
        let Some(input) = input else {
            bail!("fuzz target {name} failed ({status}); its output is above");
        };
        bail!(
            "fuzz target {name} found a failing input: {input}\n\
             (the panic or sanitizer report is above). Run just that input with\n    \
             cargo xtask fuzz {name} --input {input}\n\
             Once fixed, add it as a regression test and copy it to {}/.",
            seeds.display()
        );
    }
    let Some(executions) = stat(&stderr, "stat::number_of_executed_units") else {
        bail!("fuzz target {name} printed no `stat::number_of_executed_units`");
    };
    println!(
        "fuzz {name}: {executions} executions in {took:.0} s ({:.0}/s)",
        executions as f64 / took.max(1.0)
    );
    Ok(executions)
}

/// Runs `target` once on `input` (no fuzzing): shows the panic of a failing input.
pub fn run_input(
    root: &Path,
    cargo_fuzz: &Path,
    target_dir: &Path,
    target: &Target,
    input: &Path,
) -> Result<()> {
    fuzz_cmd(root, cargo_fuzz, target_dir, "run")
        .arg(target.name)
        .arg(input)
        .arg("--")
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .run()
}

/// libFuzzer's status lines (`#1024 NEW cov: ...`) and its dictionary suggestions: too
/// many to read, and the final stats say what matters.
fn is_progress(line: &str) -> bool {
    let mut chars = line.chars();
    match chars.next() {
        Some('#') => chars.next().is_some_and(|c| c.is_ascii_digit() || c == '#'),
        Some('"') => line.contains("# Uses:"),
        _ => false,
    }
}

/// The input libFuzzer saved: `... Test unit written to ./crash-...` (or leak-, oom-, timeout-).
fn failing_input(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
}

/// A `stat::NAME: VALUE` line of `-print_final_stats=1`.
fn stat(stderr: &str, name: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
#610317\tDONE   cov: 651 ft: 1518 corp: 197/25Kb lim: 4739 exec/s: 19687 rss: 460Mb
\"\\001\\000\\000\\000\" # Uses: 2207
###### End of recommended dictionary. ######
Done 610317 runs in 31 second(s)
stat::number_of_executed_units: 610317
stat::average_exec_per_sec:     19687
";

    #[test]
    fn final_stats_are_read() {
        assert_eq!(stat(OUTPUT, "stat::number_of_executed_units"), Some(610317));
        assert_eq!(stat(OUTPUT, "stat::average_exec_per_sec"), Some(19687));
        assert_eq!(stat(OUTPUT, "stat::peak_rss_mb"), None);
    }

    #[test]
    fn progress_lines_are_hidden_and_the_rest_shown() {
        let hidden: Vec<bool> = OUTPUT.lines().map(is_progress).collect();
        assert_eq!(hidden, [true, true, true, false, false, false]);
        assert!(!is_progress(
            "thread '<unnamed>' panicked at fuzz_targets/x.rs:1:1:"
        ));
    }

    #[test]
    fn the_failing_input_is_found() {
        let out = "SUMMARY: libFuzzer: deadly signal\n\
                   artifact_prefix='/r/fuzz/artifacts/x/'; Test unit written to /r/fuzz/artifacts/x/crash-0a55\n\
                   Base64: WzAx\n";
        assert_eq!(failing_input(out), Some("/r/fuzz/artifacts/x/crash-0a55"));
        assert_eq!(failing_input(OUTPUT), None);
    }
}
