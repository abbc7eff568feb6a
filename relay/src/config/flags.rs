//! The command-line flags that overlay the config file. Each is named as its key, in
//! kebab case (`--allowed-binds` for `allowed_binds`); list flags repeat or take
//! comma-separated values. Older spellings stay accepted as visible aliases.

use std::path::PathBuf;

use super::policy::LogFormat;

use super::values::{
    BindAddr, DrainTimeout, HostName, IdleTimeout, Origin, PortRange, PublicHost,
    RemoteDestination, ResumeGrace, SourceNet, TargetSpec,
};

#[derive(Debug, Default, Clone, clap::Args)]
pub struct Flags {
    /// An SSH server tabs may reach, as NAME=HOST:PORT (repeatable; adds to the config
    /// file's targets, replacing one of the same name).
    #[arg(
        long,
        visible_alias = "target",
        value_name = "NAME=HOST:PORT",
        value_delimiter = ','
    )]
    pub targets: Vec<TargetSpec>,
    /// Ports forwards may listen on, as LOW-HIGH.
    #[arg(long, value_name = "LOW-HIGH")]
    pub forward_ports: Option<PortRange>,
    /// Also allow forwards to bind this non-loopback address (repeatable; `*` for all IPv4;
    /// adds to allowed_binds).
    #[arg(
        long,
        visible_alias = "allow-bind",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub allowed_binds: Vec<BindAddr>,
    /// Allow forward ports below 1024 (the relay then needs CAP_NET_BIND_SERVICE).
    #[arg(long)]
    pub allow_privileged_ports: bool,
    /// Accept forwarded TCP clients only from this network, e.g. 10.0.0.0/8 (repeatable;
    /// adds to forward_allowed_sources; without any, every source is accepted).
    #[arg(
        long,
        visible_alias = "allow-source",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub forward_allowed_sources: Vec<SourceNet>,
    /// Let remote forwards (`ssh -R`) connect to this HOST:PORT from the relay host, e.g.
    /// 127.0.0.1:3000 (repeatable; adds to remote_destinations; without any, -R is off).
    #[arg(
        long,
        visible_alias = "allow-remote-destination",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub remote_destinations: Vec<RemoteDestination>,
    /// Trust this reverse proxy's Forwarded / X-Forwarded-For headers to name the real
    /// client, e.g. 127.0.0.1 or 10.0.0.0/24 (repeatable; adds to trusted_proxies).
    #[arg(
        long,
        visible_alias = "trust-proxy",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<SourceNet>,
    /// End sessions that had no forwarded connection for this long, e.g. 8h, or `off`.
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<IdleTimeout>,
    /// Keep a lost session's forward ports reserved this long for its tab to come back
    /// and take them again, e.g. 60s; 0s frees them at once.
    #[arg(long, value_name = "DURATION")]
    pub resume_grace: Option<ResumeGrace>,
    /// On SIGTERM or Ctrl-C, let sessions with open connections finish for up to this
    /// long (new sessions are refused, idle ones end at once), e.g. 30s; then end the rest.
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<DrainTimeout>,
    /// Require an access token: a file of `NAME TOKEN` lines (see relay.example.toml).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Also accept sessions from pages on this origin, e.g. https://lab.example.com
    /// (repeatable; adds to allowed_origins).
    #[arg(
        long,
        visible_alias = "allow-origin",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<Origin>,
    /// Also answer to this host name, e.g. relay.lab.example.com (repeatable; adds to
    /// allowed_hosts). IP addresses, localhost and --public-host need no flag.
    #[arg(
        long,
        visible_alias = "allow-host",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<HostName>,
    /// Serve the page from this folder (with its `pkg/` wasm bundle) instead of the copy
    /// built into the binary: for developers.
    #[arg(long, value_name = "DIR")]
    pub web_dir: Option<PathBuf>,
    /// Serve HTTPS (and wss://) with this PEM certificate chain; needs --tls-key.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// The name or IP users reach this host by; the page shows it with each forward's port.
    #[arg(long, value_name = "NAME")]
    pub public_host: Option<PublicHost>,
    /// Open forwards in the browser at https://f-<id>.DOMAIN/ (point the wildcard
    /// *.DOMAIN at this relay), e.g. lab-forwards.net: a registrable domain of its own,
    /// not one the relay's page or other sites share (see the README).
    #[arg(long, value_name = "DOMAIN")]
    pub web_forward_domain: Option<HostName>,
    /// Open forwards in the browser at /f/<id>/ on the relay's own names. The app then
    /// shares the relay page's origin: see the README before turning this on.
    #[arg(long)]
    pub web_forward_paths: bool,
    /// Write the log for people (`human`, the default) or as one JSON object a line
    /// (`json`) for log pipelines.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}
