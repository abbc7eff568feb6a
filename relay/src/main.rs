//! The `relay` binary: flags, logging, config, then `tabtunnel_relay::run`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use tabtunnel_relay::config::{
    parse_allowed_host, parse_bind, parse_idle_timeout, parse_port_range, parse_public_host,
    parse_source,
};
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
    /// An SSH server tabs may reach, as NAME=HOST:PORT (repeatable; adds to the config file's).
    #[arg(long = "target", value_name = "NAME=HOST:PORT")]
    targets: Vec<String>,
    /// Ports forwards may listen on, as LOW-HIGH.
    #[arg(long, value_name = "LOW-HIGH")]
    forward_ports: Option<String>,
    /// Also allow forwards to bind this non-loopback address (repeatable; `*` for all IPv4).
    #[arg(long = "allow-bind", value_name = "ADDR")]
    allow_binds: Vec<String>,
    /// Allow forward ports below 1024 (the relay then needs CAP_NET_BIND_SERVICE).
    #[arg(long)]
    allow_privileged_ports: bool,
    /// Accept forwarded TCP clients only from this network, e.g. 10.0.0.0/8 (repeatable;
    /// adds to forward_allowed_sources; without any, every source is accepted).
    #[arg(long = "allow-source", value_name = "CIDR", value_parser = parse_source)]
    allow_sources: Vec<tabtunnel_relay::config::IpNet>,
    /// Trust this reverse proxy's Forwarded / X-Forwarded-For headers to name the real
    /// client, e.g. 127.0.0.1 or 10.0.0.0/24 (repeatable; adds to trusted_proxies).
    #[arg(long = "trust-proxy", value_name = "CIDR", value_parser = parse_source)]
    trust_proxies: Vec<tabtunnel_relay::config::IpNet>,
    /// End sessions that had no forwarded connection for this long, e.g. 8h, or `off`.
    #[arg(long, value_name = "DURATION", value_parser = |text: &str| parse_idle_timeout(text).map(IdleTimeout))]
    idle_timeout: Option<IdleTimeout>,
    /// Start the embedded demo SSH server and register it as target `demo`.
    #[arg(long)]
    demo: bool,
    /// Read settings from this TOML file (see relay.example.toml); flags add to it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Require an access token: a file of `NAME TOKEN` lines (see relay.example.toml).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Also accept sessions from pages on this origin, e.g. https://lab.example.com (repeatable).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// Also answer to this host name, e.g. relay.lab.example.com (repeatable; adds to
    /// allowed_hosts). IP addresses, localhost and --public-host need no flag.
    #[arg(long = "allow-host", value_name = "NAME", value_parser = parse_allowed_host)]
    allow_hosts: Vec<String>,
    /// Folder with the page and its `pkg/` wasm bundle.
    #[arg(long, value_name = "DIR")]
    web_dir: Option<PathBuf>,
    /// Serve HTTPS (and wss://) with this PEM certificate chain; needs --tls-key.
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// The name or IP users reach this host by; the page shows it with each forward's port.
    #[arg(long, value_name = "NAME")]
    public_host: Option<String>,
}

/// `--idle-timeout`: a duration, or `None` for `off` (a newtype, since clap reads an
/// `Option<Option<_>>` field as a flag whose value may be left out).
#[derive(Debug, Clone, Copy)]
struct IdleTimeout(Option<std::time::Duration>);

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
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    for spec in &args.targets {
        let (name, address) = spec.split_once('=').with_context(|| {
            format!("--target {spec:?}: write it as NAME=HOST:PORT, e.g. lab=10.0.0.5:22")
        })?;
        config.add_target(name, address, &format!("--target {spec}"))?;
    }
    if let Some(range) = &args.forward_ports {
        config.forward_ports =
            parse_port_range(range).map_err(|r| anyhow::anyhow!("--forward-ports: {r}"))?;
    }
    for bind in &args.allow_binds {
        config
            .allowed_binds
            .push(parse_bind(bind).map_err(|r| anyhow::anyhow!("--allow-bind: {r}"))?);
    }
    config.allow_privileged_ports |= args.allow_privileged_ports;
    config
        .forward_allowed_sources
        .extend(args.allow_sources.iter().copied());
    config
        .trusted_proxies
        .extend(args.trust_proxies.iter().copied());
    if let Some(IdleTimeout(idle)) = args.idle_timeout {
        config.idle_timeout = idle;
    }
    if let Some(path) = &args.token_file {
        config.load_tokens(path)?;
    }
    config
        .allowed_origins
        .extend(args.allow_origins.iter().cloned());
    config
        .allowed_hosts
        .extend(args.allow_hosts.iter().cloned());
    if let Some(dir) = args.web_dir {
        config.web_dir = dir;
    }
    if let Some(cert) = args.tls_cert {
        config.tls_cert = Some(cert);
    }
    if let Some(key) = args.tls_key {
        config.tls_key = Some(key);
    }
    if let Some(name) = &args.public_host {
        config.public_host =
            Some(parse_public_host(name).map_err(|r| anyhow::anyhow!("--public-host: {r}"))?);
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
    config.validate()?;
    for note in tabtunnel_relay::ports::sizing_warnings(&config) {
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
