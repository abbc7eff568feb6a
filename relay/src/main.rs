//! The `relay` binary: flags, logging, config, then `tabtunnel_relay::run`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use tabtunnel_relay::config::Flags;
use tabtunnel_relay::demo::DemoServer;
use tabtunnel_relay::{AppState, Config};
use tracing_subscriber::EnvFilter;

/// Relay for tabtunnel: SSH port forwards started from a browser tab.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
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
async fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    // Each session holds a few descriptors (WebSocket, SSH connection, forward listeners
    // and their connections), so the usual soft limit of 1024 caps a relay at a few
    // hundred sessions although the hard limit allows far more: take what the hard
    // limit allows, as servers commonly do.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(err) => tracing::warn!("cannot raise the open-files limit: {err}"),
    }
    let mut config = Config::load(args.config.as_deref(), args.settings)?;
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
    for note in tabtunnel_relay::ports::sizing_warnings(&config) {
        tracing::warn!("{note}");
    }
    for note in tabtunnel_relay::web_forward::shared_site_warnings(&config) {
        tracing::warn!("{note}");
    }
    if config.targets.is_empty() {
        anyhow::bail!(
            "no SSH targets: add --target NAME=HOST:PORT, a [targets] table in --config, or --demo"
        );
    }
    if !config.web_dir.join("pkg").join("client_wasm.js").exists() {
        tracing::warn!(
            "{} has no pkg/client_wasm.js: the page will not load; build it with `cargo xtask wasm`",
            config.web_dir.display()
        );
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
    tabtunnel_relay::run(listener, state, shutdown_signal()).await?;
    Ok(())
}

/// Logs as `RUST_LOG` says (default `info`), except the WebSocket library's TRACE lines:
/// tungstenite logs every message it receives, in text and in hex, and a tab's Hello
/// carries its access token. No RUST_LOG setting turns those on, so an operator who
/// traces a problem cannot leak tokens into the log.
fn init_logging() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let no_wire_trace = tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() < tracing::Level::TRACE || !meta.target().contains("tungstenite")
    });
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(env.and(no_wire_trace)))
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
