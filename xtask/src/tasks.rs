//! `wasm`, `package`, `demo`, `bench`, `fuzz` and `test`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;
use crate::fuzz;
use crate::package;
use crate::setup::{self, WASM_TARGET};

/// The cargo target directory: `CARGO_TARGET_DIR` (made absolute) or `<repo>/target`.
pub fn target_dir(root: &Path) -> Result<PathBuf> {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                Ok(dir)
            } else {
                Ok(std::env::current_dir()
                    .context("current directory")?
                    .join(dir))
            }
        }
        None => Ok(root.join("target")),
    }
}

pub fn cargo(root: &Path) -> Result<Cmd> {
    let mut cmd = Cmd::new("cargo").current_dir(root);
    // Relative CARGO_TARGET_DIR is resolved against our cwd; pass it on absolute so that the
    // children (which run in the repo root) use the same directory.
    if std::env::var_os("CARGO_TARGET_DIR").is_some_and(|v| !v.is_empty()) {
        cmd = cmd.env("CARGO_TARGET_DIR", target_dir(root)?);
    }
    Ok(cmd)
}

/// The cargo profile of the wasm client (Cargo.toml: small code, hot crates fast).
const WASM_PROFILE: &str = "wasm";

/// wasm-opt's optimisation: -Os is both the smaller and, for ring's ChaCha20-Poly1305,
/// as fast as -O3 (the hot crates are already at opt-level 3).
const WASM_OPT_LEVEL: &str = "-Os";

/// The wasm features wasm-opt may keep and use: what rustc's wasm32 target enables by
/// default, plus SIMD (.cargo/config.toml).
const WASM_FEATURES: &[&str] = &[
    "--enable-simd",
    "--enable-bulk-memory",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-reference-types",
    "--enable-multivalue",
];

/// Whether the bundle keeps its function names (for profiling) or drops them (for size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmNames {
    Strip,
    Keep,
}

/// `cargo xtask wasm`: wasm setup, then build, bind and optimise the client.
pub fn wasm(root: &Path, names: WasmNames) -> Result<()> {
    let tools = setup::wasm_only(root)?;
    build_wasm(root)?;
    bind_wasm(root, &tools, names)
}

/// A cargo command for the wasm32 target. RUSTFLAGS from the environment would replace the
/// target's flags in .cargo/config.toml (SIMD), so they are not passed on.
fn cargo_wasm32(root: &Path) -> Result<Cmd> {
    let mut cmd = cargo(root)?;
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        if std::env::var_os(var).is_some() {
            println!(
                "note: ignoring {var} for the wasm32 build (.cargo/config.toml sets its flags)"
            );
            cmd = cmd.env_remove(var);
        }
    }
    Ok(cmd)
}

pub fn build_wasm(root: &Path) -> Result<()> {
    cargo_wasm32(root)?
        .args([
            "build",
            "-p",
            "client-wasm",
            "--target",
            WASM_TARGET,
            "--profile",
            WASM_PROFILE,
        ])
        .run()
}

pub fn bind_wasm(root: &Path, tools: &setup::WasmTools, names: WasmNames) -> Result<()> {
    let input = target_dir(root)?
        .join(WASM_TARGET)
        .join(WASM_PROFILE)
        .join("client_wasm.wasm");
    if !input.is_file() {
        bail!(
            "{} does not exist; did the client-wasm build succeed?",
            input.display()
        );
    }
    Cmd::new(&tools.wasm_bindgen)
        .args(["--target", "web", "--no-typescript", "--out-dir", "web/pkg"])
        .arg(&input)
        .current_dir(root)
        .run()?;
    let out = root.join("web/pkg/client_wasm_bg.wasm");
    let mut opt = Cmd::new(&tools.wasm_opt)
        .arg(WASM_OPT_LEVEL)
        .args(WASM_FEATURES)
        .args(["--strip-debug", "--strip-producers"]);
    if names == WasmNames::Keep {
        opt = opt.arg("--debuginfo");
    }
    opt.arg(&out).arg("-o").arg(&out).current_dir(root).run()?;
    let size = std::fs::metadata(&out)
        .with_context(|| format!("{} was not written", out.display()))?
        .len();
    println!("{}: {:.1} KiB", out.display(), size as f64 / 1024.0);
    Ok(())
}

/// `cargo xtask package`: wasm, then the npm-style package and the example that embeds it,
/// type-checked with tsc.
pub fn package(root: &Path) -> Result<()> {
    wasm(root, WasmNames::Strip)?;
    let example = package::write(root, &target_dir(root)?)?;
    package::type_check(&example, &setup::tsc(root)?)
}

/// `cargo xtask demo`: build the client, then become the relay in demo mode.
pub fn demo(root: &Path, listen: &str) -> Result<()> {
    wasm(root, WasmNames::Strip)?;
    cargo(root)?
        .args([
            "run",
            "--release",
            "-p",
            "tabtunnel-relay",
            "--bin",
            "relay",
            "--",
        ])
        .args(["--listen", listen, "--demo", "--web-dir", "web"])
        .exec()?;
    Ok(())
}

/// `cargo xtask bench`: everything the benchmark needs, then the release-built bench,
/// which prints its tables and writes the side-by-side one to BENCH_OUT (default
/// `<target dir>/bench-latest.md`). Both sections run the release `relay` binary (built
/// here, since `cargo run` builds only the bench). `load_only`: just the load section.
pub fn bench(root: &Path, load_only: bool) -> Result<()> {
    setup::all(root)?;
    if !load_only {
        wasm(root, WasmNames::Strip)?;
    }
    cargo(root)?
        .args([
            "build",
            "--release",
            "-p",
            "tabtunnel-relay",
            "--bin",
            "relay",
        ])
        .run()?;
    let mut cmd = cargo(root)?
        .args(["run", "--release", "-p", "tabtunnel-e2e", "--bin", "bench"])
        .env("TABTUNNEL_WEB_DIR", root.join("web"));
    if load_only {
        cmd = cmd.args(["--", "--load"]);
    }
    cmd.run()
}

/// `cargo xtask fuzz`: each target (all if none named) for `seconds`, or once on `input`.
pub fn fuzz(root: &Path, seconds: u64, input: Option<&Path>, names: &[String]) -> Result<()> {
    let targets: Vec<&fuzz::Target> = if names.is_empty() {
        fuzz::TARGETS.iter().collect()
    } else {
        names
            .iter()
            .map(|n| fuzz::target(n))
            .collect::<Result<_>>()?
    };
    let cargo_fuzz = fuzz::cargo_fuzz(root)?;
    let target_dir = target_dir(root)?;
    if let Some(input) = input {
        // cargo-fuzz runs in the repository root; the path was relative to our cwd.
        let input = std::path::absolute(input)
            .with_context(|| format!("the input path {}", input.display()))?;
        if !input.is_file() {
            bail!("the input {} is not a file", input.display());
        }
        for target in targets {
            fuzz::run_input(root, &cargo_fuzz, &target_dir, target, &input)?;
        }
        return Ok(());
    }
    let mut counts = Vec::new();
    for target in targets {
        let n = fuzz::run(root, &cargo_fuzz, &target_dir, target, seconds)?;
        counts.push((target.name, n));
    }
    println!();
    for (name, n) in counts {
        println!("{name:<14} {n:>12} executions in {seconds} s");
    }
    Ok(())
}

/// Seconds `cargo xtask test` fuzzes each target: `FUZZ_SECONDS`, or 60.
fn fuzz_seconds() -> Result<u64> {
    match std::env::var("FUZZ_SECONDS") {
        Ok(v) => v.trim().parse().with_context(|| {
            format!("FUZZ_SECONDS={v:?} is not a number of seconds (0 skips fuzzing)")
        }),
        Err(_) => Ok(60),
    }
}

/// Step names and wall times for the final summary.
#[derive(Debug, Default)]
struct Steps {
    done: Vec<(&'static str, Duration, bool)>,
}

impl Steps {
    fn run(&mut self, name: &'static str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        println!("\n==> step `{name}`");
        let start = Instant::now();
        let result = f();
        let took = start.elapsed();
        self.done.push((name, took, result.is_ok()));
        match &result {
            Ok(()) => println!("<== step `{name}` ok in {}", secs(took)),
            Err(_) => println!("<== step `{name}` FAILED after {}", secs(took)),
        }
        result.with_context(|| format!("step `{name}` failed"))
    }

    fn summary(&self, total: Duration) {
        let width = self
            .done
            .iter()
            .map(|(n, ..)| n.len())
            .max()
            .unwrap_or(0)
            .max(5);
        println!("\n{:<width$}  {:>9}  result", "step", "time");
        println!("{}", "-".repeat(width + 19));
        for (name, took, ok) in &self.done {
            println!(
                "{name:<width$}  {:>9}  {}",
                secs(*took),
                if *ok { "ok" } else { "FAILED" }
            );
        }
        println!("{}", "-".repeat(width + 19));
        println!("{:<width$}  {:>9}", "total", secs(total));
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `cargo xtask test`: setup, wasm, fmt, clippy, tests (the end-to-end suite is one binary,
/// `tabtunnel-e2e`'s `e2e`), the container `image` step when given one, then fuzzing.
pub fn test(root: &Path, image: Option<&dyn Fn() -> Result<()>>) -> Result<()> {
    let start = Instant::now();
    let mut steps = Steps::default();
    let result = test_steps(root, &mut steps, image);
    steps.summary(start.elapsed());
    result
}

fn test_steps(
    root: &Path,
    steps: &mut Steps,
    image: Option<&dyn Fn() -> Result<()>>,
) -> Result<()> {
    // Read first, so that a bad value fails before the long steps.
    let fuzz_seconds = fuzz_seconds()?;
    let mut tools = None;
    steps.run("setup", || {
        tools = Some(setup::all(root)?);
        Ok(())
    })?;
    let tools = tools.context("setup returned no tools")?;
    steps.run("wasm build", || build_wasm(root))?;
    steps.run("wasm-bindgen, wasm-opt", || {
        bind_wasm(root, &tools, WasmNames::Strip)
    })?;
    let mut example = PathBuf::new();
    steps.run("npm package, example types", || {
        example = package::write(root, &target_dir(root)?)?;
        package::type_check(&example, &setup::tsc(root)?)
    })?;
    steps.run("kubernetes example", || {
        crate::kubernetes::check(root, &crate::kubernetes::validator(root)?)
    })?;
    steps.run("fmt", || {
        cargo(root)?.args(["fmt", "--all", "--check"]).run()?;
        // fuzz/ is its own workspace, so `--all` does not reach it.
        cargo(root)?
            .args(["fmt", "--check", "--manifest-path", "fuzz/Cargo.toml"])
            .run()
    })?;
    steps.run("imports", || crate::imports::check(root))?;
    steps.run("clippy", || {
        cargo(root)?
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .run()
    })?;
    steps.run("clippy wasm32", || {
        cargo_wasm32(root)?
            .args([
                "clippy",
                "-p",
                "client-wasm",
                "--target",
                WASM_TARGET,
                "--",
                "-D",
                "warnings",
            ])
            .run()
    })?;
    steps.run("page modules", || {
        Cmd::new("node")
            .args(["--test", "test/"])
            .current_dir(&root.join("web"))
            .run()
    })?;
    steps.run("test", || {
        cargo(root)?
            .env("TABTUNNEL_WEB_DIR", root.join("web"))
            .env("TABTUNNEL_EMBED_DIR", &example)
            .args(["test", "--workspace", "--no-fail-fast"])
            .run()
    })?;
    match image {
        Some(image) => steps.run("container image", image)?,
        None => println!(
            "\nCI: not building the container image (a cold static release build takes several \
             minutes, beyond CI's time budget); `cargo xtask image` builds, runs and probes it"
        ),
    }
    if fuzz_seconds == 0 {
        println!("\nFUZZ_SECONDS=0: not fuzzing");
        return Ok(());
    }
    let target_dir = target_dir(root)?;
    let mut cargo_fuzz = PathBuf::new();
    steps.run("fuzz build", || {
        cargo_fuzz = fuzz::cargo_fuzz(root)?;
        // The targets are not in the workspace, so the clippy step above did not see them.
        cargo(root)?
            .args(["clippy", "--manifest-path", "fuzz/Cargo.toml", "--bins"])
            .args(["--", "-D", "warnings"])
            .run()?;
        fuzz::build(root, &cargo_fuzz, &target_dir)
    })?;
    for target in fuzz::TARGETS {
        steps.run(target.step, || {
            fuzz::run(root, &cargo_fuzz, &target_dir, target, fuzz_seconds).map(|_| ())
        })?;
    }
    Ok(())
}
