//! The `relay` binary: flags, logging, config, then `tabtunnel_relay::run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use tabtunnel_relay::config::{Flags, LogFormat};
use tabtunnel_relay::demo::DemoServer;
use tabtunnel_relay::page;
use tabtunnel_relay::{AppState, Config};
use tracing_subscriber::EnvFilter;

/// The crate version and the git revision it was built from (see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TABTUNNEL_GIT_REVISION"),
    ")"
);

/// Relay for tabtunnel: SSH port forwards started from a browser tab.
#[derive(Debug, Parser)]
#[command(version = VERSION, about)]
struct Args {
    /// Check the configuration as a start would, print the effective settings and exit
    /// (0: it would start; otherwise each problem is printed). Listens on nothing.
    #[arg(long)]
    check_config: bool,
    /// Address the page and WebSocket are served on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Start the embedded demo SSH server and register it as target `demo`.
    #[arg(long)]
    demo: bool,
    /// Read settings from this TOML file (see relay.example.toml); flags overlay it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The settings of the config file, by the same names.
    #[command(flatten)]
    settings: Flags,
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    if args.check_config {
        return Ok(check_config(&args));
    }
    let mut config = Config::load(args.config.as_deref(), args.settings)?;
    init_logging(config.log_format);
    // Each session holds a few descriptors (WebSocket, SSH connection, forward listeners
    // and their connections), so the usual soft limit of 1024 caps a relay at a few
    // hundred sessions although the hard limit allows far more: take what the hard
    // limit allows, as servers commonly do.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(err) => tracing::warn!("cannot raise the open-files limit: {err}"),
    }
    let _demo = if args.demo {
        let demo = DemoServer::start()
            .await
            .context("starting the demo SSH server")?;
        config.add_target("demo", &demo.ssh_addr.to_string(), "--demo")?;
        println!("{}", demo.banner());
        Some(demo)
    } else {
        None
    };
    for note in preflight(&config, args.demo)? {
        tracing::warn!("{note}");
    }
    // Before listening: a bad certificate or key stops the relay here.
    let state = AppState::new(config)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let scheme = if state.tls() { "https" } else { "http" };
    println!(
        "tabtunnel relay: open {scheme}://{}/ in a browser",
        listener.local_addr()?
    );
    // The first SIGTERM or Ctrl-C drains the relay (see drain.rs); a second ends it now.
    let mut signals = Signals::new()?;
    let stop = state.shutdown();
    let first = async move {
        signals.next().await;
        tokio::spawn(async move {
            signals.next().await;
            tracing::warn!("a second signal: ending every session now");
            stop.stop_now();
        });
    };
    tabtunnel_relay::run(listener, state, first).await?;
    Ok(ExitCode::SUCCESS)
}

/// The checks a start makes after loading the config, before listening: an error
/// stops the relay; the notes are warnings it starts with. `demo`: `--demo` adds a
/// target (at start its server's address; a check starts no server).
fn preflight(config: &Config, demo: bool) -> Result<Vec<String>> {
    if config.targets.is_empty() && !demo {
        anyhow::bail!(
            "no SSH targets: add --target NAME=HOST:PORT, a [targets] table in --config, or --demo"
        );
    }
    let mut notes = tabtunnel_relay::ports::sizing_warnings(config);
    notes.extend(tabtunnel_relay::web_forward::shared_site_warnings(config));
    notes.extend(config.open_remote_destinations_warning());
    notes.extend(page::Source::of(config.web_dir.as_deref()).warning());
    Ok(notes)
}

/// `--check-config`: the start's own steps (load, preflight, TLS files) without the
/// demo server, the open-files limit or a listener, then the effective settings on
/// stdout, or each problem on stderr and exit code 2.
fn check_config(args: &Args) -> ExitCode {
    let config = match Config::load(args.config.as_deref(), args.settings.clone()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            eprintln!("the relay would not start: fix the config file or flags and check again");
            return ExitCode::from(2);
        }
    };
    let mut errors = Vec::new();
    match preflight(&config, args.demo) {
        Ok(notes) => notes.iter().for_each(|note| eprintln!("warning: {note}")),
        Err(err) => errors.push(format!("{err:#}")),
    }
    if let Err(err) = AppState::new(config.clone()) {
        errors.push(format!("{err:#}"));
    }
    if !errors.is_empty() {
        for err in &errors {
            eprintln!("error: {err}");
        }
        eprintln!("the relay would not start: fix the config file or flags and check again");
        return ExitCode::from(2);
    }
    print!("{}", config.effective_settings());
    println!("# page: {}", page::Source::of(config.web_dir.as_deref()));
    if args.demo {
        println!("# --demo: target \"demo\" is added at start (an embedded SSH server)");
    }
    println!("# listen = \"{}\"", args.listen);
    println!("# configuration OK");
    ExitCode::SUCCESS
}

/// Logs as `RUST_LOG` says (default `info`), except the WebSocket library's TRACE lines:
/// tungstenite logs every message it receives, in text and in hex, and a tab's Hello
/// carries its access token. No RUST_LOG setting turns those on, so an operator who
/// traces a problem cannot leak tokens into the log.
/// `format`: for people, or one JSON object a line (the same filter either way).
fn init_logging(format: LogFormat) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let no_wire_trace = tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() < tracing::Level::TRACE || !meta.target().contains("tungstenite")
    });
    let filter = env.and(no_wire_trace);
    let layer = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer().with_filter(filter).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry().with(layer).init();
}

/// SIGTERM and SIGINT (Ctrl-C), registered once at start so that a second signal during
/// the drain is never missed.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate()).context("handling SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("handling SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
