//! What one bench run does: each figure has an environment variable, so a smoke test can
//! run every measure on a tiny size.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The side-by-side section's sizes and where its table goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// BENCH_MIB: MiB each bulk transfer moves, up and down.
    pub mib: usize,
    /// BENCH_RUNS: bulk transfers each way; the table shows the median.
    pub runs: usize,
    /// BENCH_CONNECTS: new connections timed from connect to the first echoed byte.
    pub connects: usize,
    /// BENCH_TURNS: 64 B round trips on one connection.
    pub turns: usize,
    /// BENCH_CONCURRENT: connections at once, each echoing [`Options::concurrent_mib`].
    pub concurrent: usize,
    /// MiB each concurrent connection sends and gets back.
    pub concurrent_mib: usize,
    /// BENCH_CHROMIUM_ARGS: more Chromium flags for the tab's browser, separated by
    /// spaces; a later `--js-flags=...` replaces the default one. For profiling, e.g.
    /// `--js-flags=--expose-gc\ --perf-basic-prof` (see docs/PERFORMANCE.md).
    pub chromium_args: Vec<String>,
    /// BENCH_OUT: the Markdown file the table is written to (default
    /// `<cargo target dir>/bench-latest.md`).
    pub out: PathBuf,
}

impl Options {
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            mib: env_number("BENCH_MIB", 256)?,
            runs: env_number("BENCH_RUNS", 3)?,
            connects: env_number("BENCH_CONNECTS", 200)?,
            turns: env_number("BENCH_TURNS", 1000)?,
            concurrent: env_number("BENCH_CONCURRENT", 100)?,
            concurrent_mib: 1,
            chromium_args: chromium_args(&std::env::var("BENCH_CHROMIUM_ARGS").unwrap_or_default()),
            out: match std::env::var_os("BENCH_OUT") {
                Some(path) => PathBuf::from(path),
                None => default_out()?,
            },
        })
    }
}

/// Flags separated by spaces; a backslash keeps the space after it inside a flag
/// (`--js-flags=--expose-gc\ --perf-basic-prof` is one flag).
fn chromium_args(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            c if c.is_whitespace() => {
                if !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    args
}

/// `bench-latest.md` in the cargo target folder this bench was built into (it runs from
/// `<target>/<profile>/bench`), so CARGO_TARGET_DIR is respected.
fn default_out() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(|profile| profile.parent())
        .context("the bench binary has no target folder above it; set BENCH_OUT")?;
    Ok(target.join("bench-latest.md"))
}

/// A whole number above 0 from `name`, or `default` when it is unset.
pub fn env_number<T: std::str::FromStr + PartialOrd + Default + Copy>(
    name: &str,
    default: T,
) -> Result<T> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => match text.trim().parse::<T>() {
            Ok(value) if value > T::default() => Ok(value),
            _ => {
                bail!("{name}={text:?}: give a whole number above 0 (or unset it for the default)")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::chromium_args;

    #[test]
    fn chromium_args_split_on_spaces_but_not_escaped_ones() {
        assert!(chromium_args("  ").is_empty());
        assert_eq!(
            chromium_args(r"--a  --js-flags=--expose-gc\ --perf-basic-prof --b"),
            ["--a", "--js-flags=--expose-gc --perf-basic-prof", "--b"]
        );
    }
}
