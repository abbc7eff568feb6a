//! The validated configuration every session is checked against, and the checks that
//! span keys.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::values::{self, AccessToken};

/// A configuration problem, reported at start with the key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

pub(super) fn invalid(key: impl Into<String>, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.to_string(),
    }
}

/// One SSH server the relay may connect tabs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` of the SSH server, as the relay host resolves it.
    pub address: String,
    /// Host-key fingerprints (`SHA256:...`) the tab must see; empty: the user decides.
    pub pinned_host_keys: Vec<String>,
}

/// The validated policy every session is checked against.
#[derive(Debug, Clone)]
pub struct Config {
    pub targets: BTreeMap<String, Target>,
    /// Ports forwards may listen on.
    pub forward_ports: RangeInclusive<u16>,
    /// With tokens: the size of each token holder's own block of `forward_ports`, in
    /// token-file order; `None`: everyone shares the whole range.
    pub forward_ports_per_user: Option<u16>,
    /// Non-loopback addresses forwards may bind to (loopback is always allowed).
    /// `0.0.0.0` or `::` here allows the wildcard bind (`*`), like sshd's GatewayPorts.
    pub allowed_binds: Vec<IpAddr>,
    /// Networks whose TCP clients may connect to forwards; empty: anyone who can reach
    /// the listener. Others are closed at accept, before the tab hears of them.
    pub forward_allowed_sources: Vec<IpNet>,
    /// What remote forwards (`ssh -R`) may connect to from the relay host; empty (the
    /// default): remote forwards are refused.
    pub remote_destinations: Vec<values::RemoteDestination>,
    /// Whether ports below 1024 may be used (needs CAP_NET_BIND_SERVICE).
    pub allow_privileged_ports: bool,
    /// Folder served at `/` instead of the page built into the binary: the page and its
    /// `pkg/` wasm bundle (for developers); `None`: the embedded page.
    pub web_dir: Option<PathBuf>,
    /// How often the relay pings each tab's WebSocket. A tab silent for three
    /// intervals (a closed laptop, a lost network) is ended with its listeners.
    pub ping_interval: std::time::Duration,
    /// How long a tab has to send its Hello after its WebSocket opens, and a SOCKS
    /// forward's client to name its destination after it connects.
    pub handshake_timeout: std::time::Duration,
    /// A session with no forwarded connection for this long is ended; `None`: never
    /// (like `ssh -L`). Open connections keep a session alive, however quiet.
    pub idle_timeout: Option<std::time::Duration>,
    /// How long a session counts as logging in to its target's SSH server (against
    /// `limits.logins_per_target`) if it sends no Listen: a little over sshd's
    /// LoginGraceTime, after which sshd has closed a connection that did not log in.
    pub login_grace: std::time::Duration,
    /// How long a session that was lost (its WebSocket dropped or went silent, its SSH
    /// server's connection ended) keeps its forwards parked for its tab to resume; zero:
    /// everything is freed at once. See `parked`.
    pub resume_grace: std::time::Duration,
    /// How long a draining relay (SIGTERM, Ctrl-C) lets sessions with open connections
    /// finish before it ends them; see `drain`.
    pub drain_timeout: std::time::Duration,
    /// Access tokens by name; empty: no token needed.
    pub tokens: Vec<AccessToken>,
    /// Check the Origin of WebSocket upgrades (same origin, plus `allowed_origins`).
    pub check_origin: bool,
    /// Pages on other origins allowed to open sessions, e.g. `https://lab.example.com`.
    pub allowed_origins: Vec<String>,
    /// Names the relay answers to besides IP literals, `localhost` and `public_host`,
    /// lower case without a trailing dot (see [`Config::host_allowed`]).
    pub allowed_hosts: Vec<String>,
    pub limits: Limits,
    /// PEM certificate chain and private key: with both, the relay serves HTTPS and `wss://`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The name (or IP) users reach the relay host by, for the page to show with each
    /// forward's port when the relay sits behind NAT or has several addresses.
    pub public_host: Option<String>,
    /// Reverse proxies whose `Forwarded`/`X-Forwarded-For` headers name the real client
    /// (see `client_addr`); from anyone else those headers are ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// Connections from `trusted_proxies` start with a PROXY protocol header (v1 or v2)
    /// naming the client; a connection from them without one is closed.
    pub proxy_protocol: bool,
    /// How long a client has to send a request's headers, counted from when the relay
    /// starts waiting for them: a new connection, or the end of the previous response on
    /// a kept-alive one (so it also closes idle keep-alive connections).
    pub http_header_timeout: std::time::Duration,
    /// An HTTP connection with a request in progress that moves no byte either way for
    /// this long (a response the client does not read, a body that stopped) is closed.
    /// WebSocket sessions are not affected: they have their own pings.
    pub http_idle_timeout: std::time::Duration,
    /// With TLS: how long a new connection has to send its first byte (the ClientHello).
    pub tls_first_byte_timeout: std::time::Duration,
    /// With TLS: how long a whole TLS handshake may take.
    pub tls_handshake_timeout: std::time::Duration,
    /// Web forwards by name: each forward is also served at `f-<id>.<this domain>`
    /// (the operator points the wildcard `*.<domain>` at the relay). See `web_forward`.
    pub web_forward_domain: Option<String>,
    /// Web forwards by path, `/f/<id>/` on the relay's own names: off unless the
    /// operator turns it on, since the forwarded app then shares the page's origin.
    pub web_forward_paths: bool,
    /// How the relay writes its log: for people, or one JSON object a line.
    pub log_format: LogFormat,
}

/// The relay's log format: `human` (the default) for a terminal or journald, `json`
/// (one object a line) for log pipelines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl LogFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Json => "json",
        }
    }
}

/// How forwards are offered to browsers as web apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebForwardMode<'a> {
    /// `https://f-<id>.<domain>/`: each app on an origin of its own.
    Subdomain(&'a str),
    /// `https://<relay>/f/<id>/`: on the relay page's origin (see the README's limits).
    Path,
}

/// Length of a web forward's id: 64 random bits in lower-case hex. Not a secret (the
/// capability is); it only has to be unique and fit a DNS label.
pub const WEB_FORWARD_ID_LEN: usize = 16;

/// Whether `id` is written as the relay writes web forward ids.
pub fn is_web_forward_id(id: &str) -> bool {
    id.len() == WEB_FORWARD_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Caps that keep one user (or one script) from taking the relay from everyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Sessions open at once, in total.
    #[serde(deserialize_with = "values::at_least_one")]
    pub sessions: usize,
    /// Sessions open at once from one source IP address.
    #[serde(deserialize_with = "values::at_least_one")]
    pub sessions_per_ip: usize,
    /// Sessions open at once with one access token (when the relay has a token file).
    #[serde(deserialize_with = "values::at_least_one")]
    pub sessions_per_user: usize,
    /// WebSockets open without a Hello yet, in total; beyond it the oldest of the
    /// address with the most waiting is closed.
    #[serde(deserialize_with = "values::at_least_one")]
    pub hellos: usize,
    /// WebSockets open without a Hello yet from one address; beyond it that address's
    /// oldest is closed.
    #[serde(deserialize_with = "values::at_least_one")]
    pub hellos_per_ip: usize,
    /// Sessions logging in at once to one target's SSH server (connected, no Listen yet,
    /// younger than `login_grace`): keep it below sshd's MaxStartups.
    #[serde(deserialize_with = "values::at_least_one")]
    pub logins_per_target: usize,
    /// Sessions logging in at once from one source address (to any target).
    #[serde(deserialize_with = "values::at_least_one")]
    pub logins_per_ip: usize,
    /// Sessions logging in at once with one access token (to any target).
    #[serde(deserialize_with = "values::at_least_one")]
    pub logins_per_user: usize,
    /// Forwards (listeners) one session may have.
    #[serde(deserialize_with = "values::at_least_one")]
    pub forwards_per_session: usize,
    /// Forwards open at once, in total (all sessions).
    #[serde(deserialize_with = "values::at_least_one")]
    pub forwards: usize,
    /// Forwards open at once for one source IP address (all its sessions).
    #[serde(deserialize_with = "values::at_least_one")]
    pub forwards_per_ip: usize,
    /// Forwards open at once for one token holder (all their sessions).
    #[serde(deserialize_with = "values::at_least_one")]
    pub forwards_per_user: usize,
    /// TCP connections open at once through one forward.
    #[serde(deserialize_with = "values::at_least_one")]
    pub connections_per_forward: usize,
    /// TCP connections of one forward that wait for the tab to open their SSH channel.
    #[serde(deserialize_with = "values::at_least_one")]
    pub pending_accepts_per_forward: usize,
    /// TCP connections to the relay's HTTP(S) port open at once, in total (WebSocket
    /// sessions included). Also kept below what the open-files limit leaves room for.
    #[serde(deserialize_with = "values::at_least_one")]
    pub connections: usize,
    /// TCP connections to the relay's HTTP(S) port open at once from one address.
    /// Trusted proxies are exempt (every user arrives from them).
    #[serde(deserialize_with = "values::at_least_one")]
    pub connections_per_ip: usize,
    /// TLS handshakes in progress at once from one address (trusted proxies exempt).
    #[serde(deserialize_with = "values::at_least_one")]
    pub tls_handshakes_per_ip: usize,
    /// HTTP requests in progress at once through one web forward (a response being
    /// streamed counts until its end); beyond it, 503.
    #[serde(deserialize_with = "values::at_least_one")]
    pub web_requests_per_forward: usize,
    /// HTTP requests in progress at once from one address, through all web forwards;
    /// beyond it, 429.
    #[serde(deserialize_with = "values::at_least_one")]
    pub web_requests_per_ip: usize,
    /// Upgraded connections (WebSockets) open at once through one web forward.
    #[serde(deserialize_with = "values::at_least_one")]
    pub web_sockets_per_forward: usize,
    /// Upgraded connections open at once from one address, through all web forwards.
    #[serde(deserialize_with = "values::at_least_one")]
    pub web_sockets_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sessions: 1000,
            sessions_per_ip: 10,
            sessions_per_user: 10,
            hellos: 256,
            hellos_per_ip: 8,
            logins_per_target: 8,
            logins_per_ip: 4,
            logins_per_user: 4,
            forwards_per_session: 10,
            forwards: 500,
            forwards_per_ip: 50,
            forwards_per_user: 50,
            connections_per_forward: 200,
            pending_accepts_per_forward: 64,
            connections: 4096,
            connections_per_ip: 64,
            tls_handshakes_per_ip: 16,
            web_requests_per_forward: 64,
            web_requests_per_ip: 128,
            web_sockets_per_forward: 32,
            web_sockets_per_ip: 64,
        }
    }
}

impl Config {
    /// Reads a token file: one `NAME TOKEN` per line; `#` starts a comment.
    pub fn load_tokens(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut tokens: Vec<AccessToken> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let key = format!("{}:{}", path.display(), i + 1);
            let token: AccessToken = line.parse().map_err(|r| invalid(key.as_str(), r))?;
            if tokens.iter().any(|t| t.name == token.name) {
                return Err(invalid(key, format!("{} has a token already", token.name)));
            }
            if tokens.iter().any(|t| t.secret == token.secret) {
                return Err(invalid(key, "this token is given to someone else already"));
            }
            tokens.push(token);
        }
        if tokens.is_empty() {
            return Err(invalid(
                path.display().to_string(),
                "the token file has no tokens",
            ));
        }
        self.tokens = tokens;
        Ok(())
    }

    /// The name of the token's owner, if `token` is one of the configured tokens.
    /// Compares in constant time, so timing reveals nothing of the tokens.
    pub fn token_owner(&self, token: &str) -> Option<&str> {
        use subtle::ConstantTimeEq;
        let mut owner = None;
        for t in &self.tokens {
            if bool::from(t.secret.as_bytes().ct_eq(token.as_bytes())) {
                owner = Some(t.name.as_str());
            }
        }
        owner
    }

    /// Whether a request's Host header (`name`, `name:port`, `[v6]:port`) names this
    /// relay: an IP literal (a DNS-rebinding page always has a DNS name, and an address is
    /// the relay reached by address), `localhost`, `public_host` or one of `allowed_hosts`.
    /// Names compare case-insensitively, a trailing dot and the port ignored. Any other
    /// name may be an attacker's, rebound to this relay's address.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = name.strip_suffix('.').unwrap_or(name);
        let same = |allowed: &str| {
            let allowed = allowed.strip_suffix('.').unwrap_or(allowed);
            allowed.eq_ignore_ascii_case(name)
        };
        same("localhost")
            || self.public_host.as_deref().is_some_and(same)
            || self.allowed_hosts.iter().any(|h| same(h))
    }

    /// How forwards are offered as web apps, if at all.
    pub fn web_forward_mode(&self) -> Option<WebForwardMode<'_>> {
        match (&self.web_forward_domain, self.web_forward_paths) {
            (Some(domain), _) => Some(WebForwardMode::Subdomain(domain)),
            (None, true) => Some(WebForwardMode::Path),
            (None, false) => None,
        }
    }

    /// The web forward a request's Host header names in subdomain mode: exactly
    /// `f-<id>.<web_forward_domain>` (any port, case and trailing dot as in
    /// [`Config::host_allowed`]), the id as the relay writes it. Nothing looser: no deeper
    /// names, no other prefix, not the domain itself. Returns the id in lower case.
    pub fn web_forward_host(&self, host: &str) -> Option<String> {
        let domain = self.web_forward_domain.as_deref()?;
        let name = host_name(host)?;
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let label = name.strip_suffix(domain)?.strip_suffix('.')?;
        let id = label.strip_prefix("f-")?;
        is_web_forward_id(id).then(|| id.to_owned())
    }

    /// Whether a WebSocket upgrade from `origin` (the Origin header) to `host` (the
    /// Host header) may proceed. Browsers always send Origin; other clients may not,
    /// and could forge it anyway, so its absence passes. An origin passes when it is
    /// listed in `allowed_origins`, or when it is the relay's own page: the same
    /// scheme-and-host as the request, and that host one the relay answers to. Matching
    /// the request's own Host alone is not enough: after a DNS rebinding, the attacker's
    /// page and its requests both carry the attacker's name.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        // With TLS on, the relay's own page can only be https; without, it may still be
        // https behind a TLS-terminating proxy.
        let tls = self.tls_cert.is_some();
        !self.check_origin
            || self.allowed_origins.iter().any(|o| o == origin)
            || host.is_some_and(|h| {
                self.host_allowed(h)
                    && ((!tls && origin == format!("http://{h}"))
                        || origin == format!("https://{h}"))
            })
    }
}

/// The name in a Host header value, without its port and IPv6 brackets: `None` if it is
/// not `name`, `name:port`, `[v6]` or `[v6]:port`.
fn host_name(host: &str) -> Option<&str> {
    let port_ok = |port: &str| port.is_empty() || port.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        return match after.strip_prefix(':') {
            Some(port) if port_ok(port) => Some(inside),
            None if after.is_empty() => Some(inside),
            _ => None,
        };
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port_ok(port) => name,
        _ => host,
    };
    (!name.is_empty() && !name.contains(':')).then_some(name)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            targets: BTreeMap::new(),
            forward_ports: 10000..=10999,
            forward_ports_per_user: None,
            allowed_binds: Vec::new(),
            forward_allowed_sources: Vec::new(),
            remote_destinations: Vec::new(),
            allow_privileged_ports: false,
            web_dir: None,
            ping_interval: std::time::Duration::from_secs(20),
            handshake_timeout: std::time::Duration::from_secs(10),
            idle_timeout: None,
            login_grace: std::time::Duration::from_secs(130),
            resume_grace: std::time::Duration::from_secs(60),
            drain_timeout: std::time::Duration::from_secs(30),
            tokens: Vec::new(),
            check_origin: true,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            limits: Limits::default(),
            tls_cert: None,
            tls_key: None,
            public_host: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            http_header_timeout: std::time::Duration::from_secs(10),
            http_idle_timeout: std::time::Duration::from_secs(60),
            tls_first_byte_timeout: std::time::Duration::from_secs(2),
            tls_handshake_timeout: std::time::Duration::from_secs(10),
            web_forward_domain: None,
            web_forward_paths: false,
            log_format: LogFormat::Human,
        }
    }
}

impl Config {
    /// Adds a target named `name` at `address` (`host:port`); `key` names where it came
    /// from in errors (a flag or a config key).
    pub fn add_target(&mut self, name: &str, address: &str, key: &str) -> Result<(), ConfigError> {
        let values::TargetName(name) = name.parse().map_err(|r| invalid(key, r))?;
        let values::TargetAddr(address) = address.parse().map_err(|r| invalid(key, r))?;
        self.targets.insert(
            name,
            Target {
                address,
                pinned_host_keys: Vec::new(),
            },
        );
        Ok(())
    }

    /// Checks rules that span keys; call after flags have been applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (lo, hi) = (*self.forward_ports.start(), *self.forward_ports.end());
        if lo == 0 {
            return Err(invalid(
                "forward_ports",
                "port 0 is not a port; start the range at 1 or above",
            ));
        }
        if lo < 1024 && !self.allow_privileged_ports {
            return Err(invalid(
                "forward_ports",
                format!(
                    "range {lo}-{hi} includes ports below 1024, which need root-level privilege \
                     (CAP_NET_BIND_SERVICE); start it at 1024 or set allow_privileged_ports"
                ),
            ));
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return Err(invalid(
                "proxy_protocol",
                "is on but trusted_proxies is empty: name the proxies (--trust-proxy) whose connections start with a PROXY header",
            ));
        }
        if self.tls_first_byte_timeout > self.tls_handshake_timeout {
            return Err(invalid(
                "tls_first_byte_timeout",
                format!(
                    "{} is longer than tls_handshake_timeout ({}), which includes it; shorten it or lengthen tls_handshake_timeout",
                    humantime::format_duration(self.tls_first_byte_timeout),
                    humantime::format_duration(self.tls_handshake_timeout)
                ),
            ));
        }
        self.validate_port_blocks()?;
        if self.web_forward_domain.is_some() && self.web_forward_paths {
            return Err(invalid(
                "web_forward_paths",
                "is on, and so is web_forward_domain: choose one (names are the safe mode; see the README)",
            ));
        }
        Ok(())
    }

    /// `forward_ports_per_user`: a block per token holder, all inside the range.
    fn validate_port_blocks(&self) -> Result<(), ConfigError> {
        let Some(block) = self.forward_ports_per_user else {
            return Ok(());
        };
        let key = "forward_ports_per_user";
        if block == 0 {
            return Err(invalid(
                key,
                "must be 1 or more; leave it out to let everyone share the whole range",
            ));
        }
        if self.tokens.is_empty() {
            return Err(invalid(
                key,
                "gives each token holder a block of forward_ports, so it needs token_file \
                 (--token-file); set one, or leave this out",
            ));
        }
        let (lo, hi) = (*self.forward_ports.start(), *self.forward_ports.end());
        let span = usize::from(hi - lo) + 1;
        let holders = self.tokens.len();
        let needed = holders * usize::from(block);
        if needed > span {
            let smaller = match span / holders {
                0 => String::new(),
                most => format!(", or set forward_ports_per_user to at most {most}"),
            };
            return Err(invalid(
                key,
                format!(
                    "{holders} token holders x {block} ports = {needed} ports, more than the {span} of \
                     forward_ports {lo}-{hi}; widen forward_ports to {needed} ports or more{smaller}"
                ),
            ));
        }
        Ok(())
    }

    /// Whether a TCP peer at `ip` is one of the `trusted_proxies`. IPv4 peers of a
    /// dual-stack listener arrive as `::ffff:a.b.c.d`; they are checked as IPv4.
    pub fn proxy_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Whether a TCP client from `ip` may use a forward. IPv4 clients of a dual-stack
    /// listener arrive as `::ffff:a.b.c.d`; they are checked as the IPv4 address.
    pub fn source_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.forward_allowed_sources.is_empty()
            || self
                .forward_allowed_sources
                .iter()
                .any(|net| net.contains(&ip))
    }

    /// The TLS server settings when `tls_cert` and `tls_key` are set, checked: both
    /// given, readable, PEM, and the key the certificate's.
    pub fn load_tls(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, crate::tls::TlsError> {
        use crate::tls::TlsError::Half;
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(Half {
                given: "tls_cert (--tls-cert)",
                missing: "tls_key (--tls-key)",
            }),
            (None, Some(_)) => Err(Half {
                given: "tls_key (--tls-key)",
                missing: "tls_cert (--tls-cert)",
            }),
            (Some(cert), Some(key)) => crate::tls::load(cert, key).map(Some),
        }
    }

    /// Whether a forward may bind `ip`.
    pub fn bind_allowed(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || self.allowed_binds.iter().any(|allowed| {
                *allowed == ip || (allowed.is_unspecified() && allowed.is_ipv4() == ip.is_ipv4())
            })
    }

    /// The warning a start gives when `-R` destinations are open to anyone: the relay
    /// cannot see whether a tab logged in to its SSH server, so with no access token any
    /// visitor of the page can have the relay connect to them.
    pub fn open_remote_destinations_warning(&self) -> Option<String> {
        if self.remote_destinations.is_empty() || !self.tokens.is_empty() {
            return None;
        }
        let list: Vec<String> = self
            .remote_destinations
            .iter()
            .map(ToString::to_string)
            .collect();
        Some(format!(
            "remote_destinations ({}) with no token_file: anyone who can open the relay's page \
             can have the relay connect there, logged in to SSH or not; set token_file, or keep \
             the relay where only its users reach it",
            list.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_destinations_without_a_token_are_warned_about() {
        let mut config = Config::default();
        assert_eq!(config.open_remote_destinations_warning(), None);
        config.remote_destinations = vec![values::RemoteDestination {
            host: "127.0.0.1".into(),
            port: 3000,
        }];
        let warning = config
            .open_remote_destinations_warning()
            .expect("a warning");
        assert!(
            warning.starts_with("remote_destinations (127.0.0.1:3000) with no token_file"),
            "{warning}"
        );
        config.tokens = vec![values::AccessToken {
            name: "ann".into(),
            secret: "a-long-enough-token-value".into(),
        }];
        assert_eq!(config.open_remote_destinations_warning(), None);
    }

    #[test]
    fn a_full_file_parses() {
        let config = Config::from_toml(
            r#"
            forward_ports = "20000-20010"
            allowed_binds = ["0.0.0.0"]
            [targets.lab]
            address = "10.0.0.5:2222"
            pinned_host_keys = ["SHA256:abcdef"]
            "#,
        )
        .unwrap();
        assert_eq!(config.forward_ports, 20000..=20010);
        assert_eq!(config.targets["lab"].address, "10.0.0.5:2222");
        assert_eq!(
            config.targets["lab"].pinned_host_keys,
            vec!["SHA256:abcdef"]
        );
        assert!(config.bind_allowed("192.0.2.1".parse().unwrap()));
        assert!(!config.bind_allowed("::2".parse().unwrap()));
    }

    #[test]
    fn bad_input_names_the_key_and_the_fix() {
        let err = Config::from_toml("forward_ports = \"9-3\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("forward_ports") && err.contains("lower port first"),
            "{err}"
        );
        let err = Config::from_toml("[targets.x]\naddress = \"nohost\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("targets.x") && err.contains("HOST:PORT"),
            "{err}"
        );
        let err = Config::from_toml("colour = 1").unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        let mut config = Config {
            forward_ports: 80..=90,
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("CAP_NET_BIND_SERVICE"), "{err}");
        config.allow_privileged_ports = true;
        config.validate().unwrap();
    }

    #[test]
    fn web_forward_names_are_exactly_f_id_under_the_domain() {
        let config = Config {
            web_forward_domain: Some("tunnel.example.edu".into()),
            ..Config::default()
        };
        let id = "0123456789abcdef";
        for (host, named) in [
            ("f-0123456789abcdef.tunnel.example.edu", true),
            ("f-0123456789abcdef.tunnel.example.edu:8443", true),
            ("F-0123456789ABCDEF.Tunnel.Example.Edu.", true),
            ("tunnel.example.edu", false),
            ("f-0123456789abcdef.example.edu", false),
            ("x.f-0123456789abcdef.tunnel.example.edu", false),
            ("f-0123456789abcdef.x.tunnel.example.edu", false),
            ("f-0123456789abcdef.eviltunnel.example.edu", false),
            ("f-0123456789abcdef-tunnel.example.edu", false),
            ("g-0123456789abcdef.tunnel.example.edu", false),
            ("f-0123456789abcde.tunnel.example.edu", false),
            ("f-0123456789abcdeg.tunnel.example.edu", false),
            ("f-.tunnel.example.edu", false),
            ("f-0123456789abcdef.tunnel.example.edu:x", false),
        ] {
            assert_eq!(
                config.web_forward_host(host).as_deref(),
                named.then_some(id),
                "{host}"
            );
        }
        // The relay's own routes never answer to these names.
        assert!(!config.host_allowed("f-0123456789abcdef.tunnel.example.edu"));
        assert_eq!(
            Config::default().web_forward_host("f-0123456789abcdef.tunnel.example.edu"),
            None,
            "off without a domain"
        );
    }

    #[test]
    fn web_forward_modes_are_one_or_the_other() {
        assert_eq!(Config::default().web_forward_mode(), None);
        let config = Config::from_toml("web_forward_domain = \"Tunnel.Example.edu\"").unwrap();
        assert_eq!(
            config.web_forward_mode(),
            Some(WebForwardMode::Subdomain("tunnel.example.edu"))
        );
        let config = Config::from_toml("web_forward_paths = true").unwrap();
        assert_eq!(config.web_forward_mode(), Some(WebForwardMode::Path));
        let err = Config::from_toml(
            "web_forward_paths = true\nweb_forward_domain = \"tunnel.example.edu\"",
        )
        .and_then(|c| c.validate())
        .unwrap_err()
        .to_string();
        assert!(err.contains("choose one"), "{err}");
        let err = Config::from_toml("web_forward_domain = \"192.0.2.1\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("web_forward_domain"), "{err}");
    }

    #[test]
    fn the_documented_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("relay.example.toml");
        let config = Config::from_file(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.targets.len(), 2);
        assert_eq!(config.targets["bastion"].address, "10.0.0.5:2222");
        assert_eq!(config.targets["lab"].pinned_host_keys.len(), 1);
        assert_eq!(
            config.idle_timeout,
            Some(std::time::Duration::from_secs(8 * 3600))
        );
        assert!(config.forward_allowed_sources.is_empty());
        assert_eq!(config.limits.pending_accepts_per_forward, 64);
        assert_eq!(
            config.limits,
            Limits::default(),
            "the example shows the defaults"
        );
        assert_eq!(config.login_grace, std::time::Duration::from_secs(130));
        assert_eq!(config.resume_grace, std::time::Duration::from_secs(60));
        let off = Config::from_toml("resume_grace = \"0s\"").unwrap();
        assert_eq!(off.resume_grace, std::time::Duration::ZERO);
        assert_eq!(config.ping_interval, Config::default().ping_interval);
    }

    #[test]
    fn allowed_sources_are_networks_of_either_family() {
        let config = Config::from_toml(
            r#"forward_allowed_sources = ["127.0.0.1/32", "10.1.2.3/8", "fd00::/8", "192.0.2.7", "::1"]"#,
        )
        .unwrap();
        assert_eq!(
            config.forward_allowed_sources[1].to_string(),
            "10.0.0.0/8",
            "host bits are dropped"
        );
        let allowed = |ip: &str| config.source_allowed(ip.parse().unwrap());
        assert!(allowed("127.0.0.1"));
        assert!(!allowed("127.0.0.2"));
        assert!(allowed("10.200.0.1"));
        assert!(allowed("fd12::1"));
        assert!(allowed("192.0.2.7"));
        assert!(allowed("::1"));
        assert!(!allowed("2001:db8::1"));
        assert!(
            allowed("::ffff:10.9.9.9"),
            "IPv4 through a dual-stack listener"
        );
        assert!(!allowed("::ffff:192.0.2.8"));
        assert!(Config::default().source_allowed("203.0.113.9".parse().unwrap()));
        let err = Config::from_toml(r#"forward_allowed_sources = ["10.0.0.0/33"]"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("forward_allowed_sources") && err.contains("10.0.0.0/8"),
            "{err}"
        );
    }

    #[test]
    fn durations_are_checked_with_their_key() {
        let config =
            Config::from_toml("idle_timeout = \"1h 30m\"\nhandshake_timeout = \"3s\"").unwrap();
        assert_eq!(
            config.idle_timeout,
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(config.handshake_timeout, std::time::Duration::from_secs(3));
        assert_eq!(
            Config::from_toml("idle_timeout = \"off\"")
                .unwrap()
                .idle_timeout,
            None
        );
        assert_eq!(Config::default().idle_timeout, None);
        for (text, key, says) in [
            ("idle_timeout = \"soon\"", "idle_timeout", "30s, 10m or 4h"),
            ("idle_timeout = \"0s\"", "idle_timeout", "write off"),
            ("idle_timeout = \"900y\"", "idle_timeout", "between 1s and"),
            (
                "handshake_timeout = \"1h\"",
                "handshake_timeout",
                "between 1s and 10m",
            ),
            (
                "[limits]\npending_accepts_per_forward = 0",
                "limits.pending_accepts_per_forward",
                "1 or more",
            ),
            (
                "[limits]\nlogins_per_target = 0",
                "limits.logins_per_target",
                "1 or more",
            ),
            ("login_grace = \"0s\"", "login_grace", "between 1s and 1h"),
            (
                "resume_grace = \"1h\"",
                "resume_grace",
                "between 0s and 10m",
            ),
            ("resume_grace = 60", "resume_grace", "a duration like"),
            (
                "drain_timeout = \"2h\"",
                "drain_timeout",
                "between 0s and 1h",
            ),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn front_door_keys_parse_and_are_checked() {
        let config = Config::from_toml(
            "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/24\"]\nhttp_header_timeout = \"5s\"\n\
             http_idle_timeout = \"2m\"\ntls_first_byte_timeout = \"500ms\"\n\
             tls_handshake_timeout = \"3s\"\n[limits]\nconnections = 100\nconnections_per_ip = 7\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert!(config.proxy_trusted("10.0.0.9".parse().unwrap()));
        assert!(config.proxy_trusted("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!config.proxy_trusted("127.0.0.2".parse().unwrap()));
        assert!(!Config::default().proxy_trusted("127.0.0.1".parse().unwrap()));
        assert_eq!(
            config.http_header_timeout,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(
            config.http_idle_timeout,
            std::time::Duration::from_secs(120)
        );
        assert_eq!(
            config.tls_first_byte_timeout,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(config.limits.connections_per_ip, 7);
        assert_eq!(config.limits.tls_handshakes_per_ip, 16);
        for (text, key, says) in [
            (
                "trusted_proxies = [\"proxy\"]",
                "trusted_proxies",
                "10.0.0.0/8",
            ),
            (
                "http_header_timeout = \"0s\"",
                "http_header_timeout",
                "between 1s",
            ),
            (
                "http_idle_timeout = \"soon\"",
                "http_idle_timeout",
                "30s, 10m",
            ),
            (
                "tls_first_byte_timeout = \"2m\"",
                "tls_first_byte_timeout",
                "1m",
            ),
            (
                "[limits]\nconnections_per_ip = 0",
                "limits.connections_per_ip",
                "1 or more",
            ),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says), "{text}: {err}");
        }
        let config =
            Config::from_toml("tls_first_byte_timeout = \"20s\"\ntls_handshake_timeout = \"5s\"")
                .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("longer than tls_handshake_timeout"), "{err}");
        let config = Config::from_toml("proxy_protocol = true").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("proxy_protocol") && err.contains("trusted_proxies is empty"),
            "{err}"
        );
    }

    #[test]
    fn token_files_are_checked_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "# students\nalice 0123456789abcdef0123\nbob   fedcba9876543210fedc # lab 2\n",
        )
        .unwrap();
        let mut config = Config::default();
        config.load_tokens(&path).unwrap();
        assert_eq!(config.token_owner("fedcba9876543210fedc"), Some("bob"));
        assert_eq!(config.token_owner("fedcba9876543210fedd"), None);
        assert_eq!(config.token_owner(""), None);
        assert!(
            !format!("{:?}", config.tokens).contains("0123456789"),
            "Debug hides tokens"
        );
        for (text, says) in [
            ("alice short", "shorter than 16"),
            ("alice", "NAME TOKEN"),
            (
                "a 0123456789abcdef0123\na 0123456789abcdef0124",
                "has a token already",
            ),
            (
                "a 0123456789abcdef0123\nb 0123456789abcdef0123",
                "someone else",
            ),
            ("# nothing", "no tokens"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Config::default()
                .load_tokens(&path)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn origins_are_same_site_or_listed() {
        // The relay answers to this name: its own page may open sessions.
        let mut config = Config {
            public_host: Some("relay.example.com".into()),
            ..Config::default()
        };
        let host = Some("relay.example.com:8080");
        assert!(
            config.origin_allowed(None, host),
            "non-browser clients send none"
        );
        assert!(config.origin_allowed(Some("http://relay.example.com:8080"), host));
        assert!(config.origin_allowed(Some("https://relay.example.com:8080"), host));
        assert!(!config.origin_allowed(Some("https://evil.example"), host));
        config
            .allowed_origins
            .push("https://lab.example.com".into());
        assert!(config.origin_allowed(Some("https://lab.example.com"), host));
        config.check_origin = false;
        assert!(config.origin_allowed(Some("https://evil.example"), host));
    }

    #[test]
    fn hosts_are_addresses_loopback_names_and_listed_names() {
        let mut config = Config {
            public_host: Some("relay.example.com".into()),
            ..Config::default()
        };
        config.allowed_hosts.push("lab.example.org".into());
        for host in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "192.0.2.7:80",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::7]:443",
            "localhost",
            "LOCALHOST.:8080",
            "relay.example.com",
            "Relay.Example.COM.:8443",
            "lab.example.org:8080",
            "LAB.example.org",
            "localhost:",
        ] {
            assert!(config.host_allowed(host), "{host}");
        }
        for host in [
            "attacker.test",
            "attacker.test:8080",
            "localhost.attacker.test",
            "relay.example.com.attacker.test",
            "127.0.0.1.attacker.test",
            "",
            ":8080",
            "::1",
            "[::1",
            "[attacker.test]:80",
            "[::1]x",
            "localhost:80:80",
            "localhost:http",
        ] {
            assert!(!config.host_allowed(host), "{host:?}");
        }
        assert!(!Config::default().host_allowed("relay.example.com"));
    }

    #[test]
    fn the_page_of_a_rebound_name_or_another_port_is_not_the_relays_own() {
        let mut config = Config::default();
        // DNS rebinding: the attacker's page and its request carry the attacker's name.
        let rebound = Some("attacker.test:8080");
        assert!(!config.origin_allowed(Some("http://attacker.test:8080"), rebound));
        assert!(!config.origin_allowed(Some("https://attacker.test:8080"), rebound));
        // Another web server on the same machine is another origin.
        let own = Some("127.0.0.1:8080");
        assert!(config.origin_allowed(Some("http://127.0.0.1:8080"), own));
        assert!(!config.origin_allowed(Some("http://127.0.0.1:3000"), own));
        assert!(!config.origin_allowed(Some("http://localhost:8080"), own));
        assert!(config.origin_allowed(Some("http://localhost:8080"), Some("localhost:8080")));
        assert!(config.origin_allowed(Some("http://[::1]:8080"), Some("[::1]:8080")));
        assert!(!config.origin_allowed(Some("null"), own));
        assert!(!config.origin_allowed(Some("HTTP://127.0.0.1:8080"), own));
        assert!(!config.origin_allowed(Some("http://127.0.0.1:8080"), None));
        // A listed origin passes whatever the Host.
        config
            .allowed_origins
            .push("https://lab.example.com".into());
        assert!(config.origin_allowed(Some("https://lab.example.com"), rebound));
        // A listed host is the relay's own.
        config.allowed_hosts.push("relay.lab.test".into());
        let named = Some("relay.lab.test:8080");
        assert!(config.origin_allowed(Some("http://relay.lab.test:8080"), named));
        assert!(!config.origin_allowed(Some("http://attacker.test:8080"), named));
    }

    #[test]
    fn allowed_hosts_are_names() {
        let config =
            Config::from_toml(r#"allowed_hosts = ["Relay.Lab.Example.com.", "localhost"]"#)
                .unwrap();
        assert_eq!(config.allowed_hosts, ["relay.lab.example.com", "localhost"]);
        for (bad, says) in [
            ("relay.example.com:8080", "without a scheme or port"),
            ("https://relay.example.com", "not a host name"),
            ("192.0.2.7", "always answers to"),
            ("[::1]", "always answers to"),
        ] {
            let err = Config::from_toml(&format!("allowed_hosts = [{bad:?}]"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("allowed_hosts") && err.contains(says),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn with_tls_only_the_https_origin_is_the_relays_own() {
        let config = Config {
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            ..Config::default()
        };
        let host = Some("127.0.0.1:8443");
        assert!(config.origin_allowed(Some("https://127.0.0.1:8443"), host));
        assert!(!config.origin_allowed(Some("http://127.0.0.1:8443"), host));
    }

    #[test]
    fn tls_needs_both_files() {
        let config = Config {
            tls_cert: Some("cert.pem".into()),
            ..Config::default()
        };
        let err = config.load_tls().unwrap_err().to_string();
        assert!(
            err.contains("tls_cert (--tls-cert) is set but tls_key (--tls-key) is not"),
            "{err}"
        );
        let config = Config {
            tls_key: Some("key.pem".into()),
            ..Config::default()
        };
        let err = config.load_tls().unwrap_err().to_string();
        assert!(err.contains("tls_cert (--tls-cert) is not"), "{err}");
        assert!(Config::default().load_tls().unwrap().is_none());
    }

    #[test]
    fn forward_port_blocks_need_tokens_and_fit_the_range() {
        let mut config = Config::from_toml(
            "forward_ports = \"20000-20049\"\nforward_ports_per_user = 20\n[limits]\nforwards_per_user = 5",
        )
        .unwrap();
        assert_eq!(config.forward_ports_per_user, Some(20));
        assert_eq!(config.limits.forwards_per_user, 5);
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("forward_ports_per_user") && err.contains("needs token_file"),
            "{err}"
        );
        for name in ["a", "b", "c"] {
            config.tokens.push(AccessToken {
                name: name.into(),
                secret: format!("{name}-0123456789abcdef"),
            });
        }
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("3 token holders x 20 ports = 60 ports, more than the 50")
                && err.contains("at most 16"),
            "{err}"
        );
        config.forward_ports_per_user = Some(16);
        config.validate().unwrap();
        config.forward_ports_per_user = Some(0);
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("1 or more")
        );
        let err = Config::from_toml("[limits]\nforwards_per_ip = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.forwards_per_ip"), "{err}");
    }

    #[test]
    fn only_loopback_binds_by_default() {
        let config = Config::default();
        assert!(config.bind_allowed("127.0.0.1".parse().unwrap()));
        assert!(config.bind_allowed("::1".parse().unwrap()));
        assert!(!config.bind_allowed("0.0.0.0".parse().unwrap()));
    }
}
