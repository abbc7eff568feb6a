//! Project automation: `cargo xtask <setup|wasm|package|dist|image|demo|test|imports|bench|fuzz>`.

mod cmd;
mod dist;
mod e2e;
mod fuzz;
mod imports;
mod kubernetes;
mod package;
mod setup;
mod tasks;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "tabtunnel project tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing: wasm32 target, Debian packages, /run/sshd, the e2e test
    /// user, wasm-bindgen-cli (exactly the Cargo.lock version) and wasm-opt (npm binaryen).
    Setup,
    /// Build the wasm client into web/pkg (sets up only the wasm pieces).
    Wasm {
        /// Keep the function names (the wasm name section, about 330 KiB), so that a browser
        /// profile names functions; the code is the same.
        #[arg(long)]
        profiling: bool,
    },
    /// Build the wasm client, then the npm-style package (target/npm/tabtunnel-client) and
    /// the example that embeds it (target/npm/embed, for `relay --web-dir`), type-checked
    /// with tsc.
    Package,
    /// Build the release relay with the page built in (wasm client with the size profile
    /// and wasm-opt) and copy it to <target>/dist/relay; print its size and SHA-256 and the
    /// gzipped wasm size.
    Dist {
        /// A static musl build instead (<target>/dist/relay-static), for the container
        /// image; installs the musl target and Debian's musl-tools if missing.
        #[arg(long = "static")]
        static_build: bool,
    },
    /// `dist --static`, then the container image (deploy/container/Dockerfile) with buildah,
    /// run once and probed for /healthz and the page. Part of `test`, except under CI.
    Image,
    /// Build the wasm client, then run the relay in demo mode.
    Demo {
        /// Address the relay listens on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Setup, wasm, fmt check, clippy (native and wasm32), all tests, the container image
    /// (not under CI), then each fuzz target for FUZZ_SECONDS (60; 0 skips), with timings.
    /// What CI runs (`.ci/run`).
    Test,
    /// The browser tab and the native client side by side with OpenSSH's ssh -L (the
    /// reference) through one sshd: bulk speed and CPU per MiB per process, first byte,
    /// ping-pong, concurrent connections, the tab's longest task and memory, the wasm
    /// bundle's size, each against issue 10's target; then the relay process under load.
    /// The table is printed and written as Markdown to BENCH_OUT (target/bench-latest.md).
    /// BENCH_MIB (256), BENCH_RUNS (3), BENCH_CONNECTS (200), BENCH_TURNS (1000) and
    /// BENCH_CONCURRENT (100) size the table; BENCH_SESSIONS (500), BENCH_RATE_KIB (16),
    /// BENCH_LOAD_SECS (20) and BENCH_LOGIN_PARALLEL (8) shape the load.
    Bench {
        /// Only the load section (needs no browser and no wasm build).
        #[arg(long)]
        load: bool,
    },
    /// Check that no module imports a module that imports it, in any crate (also a step
    /// of `test`).
    Imports,
    /// Fuzz the codec and the command-line parsers with cargo-fuzz (installed into
    /// .tools/ if missing; built with AddressSanitizer on the stable toolchain).
    Fuzz {
        /// How long to fuzz each target.
        #[arg(long, value_name = "N", default_value_t = 60)]
        seconds: u64,
        /// Run the target once on this input instead of fuzzing (to see why it fails).
        #[arg(long, value_name = "FILE", requires = "targets")]
        input: Option<PathBuf>,
        /// Targets to run (default: all): frame_decode, forward_spec, ssh_command, conn_table,
        /// socks_handshake.
        #[arg(value_name = "TARGET")]
        targets: Vec<String>,
    },
}

fn repo_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest directory has no parent")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = repo_root()?;
    match cli.task {
        Task::Setup => {
            let tools = setup::all(&root)?;
            println!(
                "setup complete (wasm-bindgen: {}, wasm-opt: {})",
                tools.wasm_bindgen.display(),
                tools.wasm_opt.display()
            );
            Ok(())
        }
        Task::Wasm { profiling } => tasks::wasm(
            &root,
            if profiling {
                tasks::WasmNames::Keep
            } else {
                tasks::WasmNames::Strip
            },
        ),
        Task::Package => tasks::package(&root),
        Task::Dist { static_build } => dist::dist(
            &root,
            if static_build {
                dist::Linking::Static
            } else {
                dist::Linking::Dynamic
            },
        )
        .map(drop),
        Task::Image => dist::image(&root),
        Task::Demo { listen } => tasks::demo(&root, &listen),
        Task::Test => {
            // The image needs a static release build of its own: minutes when cold, which
            // CI's time budget has no room for (see README, "Development").
            let image = || dist::image(&root);
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            tasks::test(&root, (!in_ci).then_some(&image as &dyn Fn() -> Result<()>))
        }
        Task::Imports => imports::check(&root),
        Task::Bench { load } => tasks::bench(&root, load),
        Task::Fuzz {
            seconds,
            input,
            targets,
        } => tasks::fuzz(&root, seconds, input.as_deref(), &targets),
    }
}
