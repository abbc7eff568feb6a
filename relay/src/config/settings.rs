//! The settings as the config file gives them, every value already parsed by its type;
//! the flags overlay them, and [`Settings::into_config`] turns them into a [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::flags::Flags;
use super::policy::{Config, ConfigError, Limits, LogFormat, Target, invalid};
use super::values::{
    BindAddr, DrainTimeout, HandshakeTimeout, HostKeyFingerprint, HostName, HttpTimeout,
    IdleTimeout, LoginGrace, Origin, PingInterval, PortRange, PublicHost, RemoteDestination,
    ResumeGrace, SourceNet, TargetAddr, TargetName, TlsFirstByteTimeout,
};

/// The config file's shape; every key is documented in `relay.example.toml`. A flag of
/// the same name (in kebab case) overlays each key: see [`Settings::overlay`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    targets: BTreeMap<TargetName, FileTarget>,
    forward_ports: Option<PortRange>,
    forward_ports_per_user: Option<u16>,
    #[serde(default)]
    allowed_binds: Vec<BindAddr>,
    #[serde(default)]
    forward_allowed_sources: Vec<SourceNet>,
    #[serde(default)]
    remote_destinations: Vec<RemoteDestination>,
    allow_privileged_ports: Option<bool>,
    web_dir: Option<PathBuf>,
    ping_interval: Option<PingInterval>,
    /// The old spelling of `ping_interval`, in whole seconds; still read.
    ping_interval_secs: Option<u64>,
    handshake_timeout: Option<HandshakeTimeout>,
    idle_timeout: Option<IdleTimeout>,
    login_grace: Option<LoginGrace>,
    resume_grace: Option<ResumeGrace>,
    drain_timeout: Option<DrainTimeout>,
    token_file: Option<PathBuf>,
    check_origin: Option<bool>,
    #[serde(default)]
    allowed_origins: Vec<Origin>,
    #[serde(default)]
    allowed_hosts: Vec<HostName>,
    limits: Option<Limits>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    public_host: Option<PublicHost>,
    #[serde(default)]
    trusted_proxies: Vec<SourceNet>,
    proxy_protocol: Option<bool>,
    http_header_timeout: Option<HttpTimeout>,
    http_idle_timeout: Option<HttpTimeout>,
    tls_first_byte_timeout: Option<TlsFirstByteTimeout>,
    tls_handshake_timeout: Option<HttpTimeout>,
    web_forward_domain: Option<HostName>,
    web_forward_paths: Option<bool>,
    log_format: Option<LogFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTarget {
    address: TargetAddr,
    #[serde(default)]
    pinned_host_keys: Vec<HostKeyFingerprint>,
}

impl Settings {
    /// Reads a TOML config file; errors name the file and the key.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|err| match err {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                key: format!("{}: {key}", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// Parses TOML text. A value its type refuses is reported as `KEY: why`, the key
    /// written as in the file (`limits.sessions`, `allowed_binds[1]`).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let parse_error = |source| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            source: Box::new(source),
        };
        let document = toml::Deserializer::parse(text).map_err(parse_error)?;
        let mut settings: Self = serde_path_to_error::deserialize(document).map_err(|err| {
            let key = err.path().to_string();
            let source = err.into_inner();
            // No key: the document itself is wrong (an unknown top-level key).
            if key == "." {
                parse_error(source)
            } else {
                invalid(key, source.message())
            }
        })?;
        settings.read_old_keys()?;
        Ok(settings)
    }

    /// Old spellings that took another type: `ping_interval_secs = 20` is
    /// `ping_interval = "20s"`. Both at once would leave the reader guessing.
    fn read_old_keys(&mut self) -> Result<(), ConfigError> {
        let Some(secs) = self.ping_interval_secs.take() else {
            return Ok(());
        };
        let key = "ping_interval_secs";
        if self.ping_interval.is_some() {
            return Err(invalid(
                key,
                "is the old spelling of ping_interval, which is set too; keep only ping_interval",
            ));
        }
        let interval = std::time::Duration::from_secs(secs);
        if !(PingInterval::MIN..=PingInterval::MAX).contains(&interval) {
            return Err(invalid(key, format!("{secs} is not 1-3600 seconds")));
        }
        self.ping_interval = Some(super::values::DurationWithin(interval));
        Ok(())
    }

    /// Lays the flags over the file: a flag given replaces the file's value; a list flag
    /// adds to the file's list, and a target flag adds (or replaces) one target.
    pub fn overlay(&mut self, flags: Flags) {
        let Flags {
            targets,
            forward_ports,
            allowed_binds,
            allow_privileged_ports,
            forward_allowed_sources,
            remote_destinations,
            trusted_proxies,
            idle_timeout,
            resume_grace,
            drain_timeout,
            token_file,
            allowed_origins,
            allowed_hosts,
            web_dir,
            tls_cert,
            tls_key,
            public_host,
            web_forward_domain,
            web_forward_paths,
            log_format,
        } = flags;
        for spec in targets {
            self.targets.insert(
                spec.name,
                FileTarget {
                    address: spec.address,
                    pinned_host_keys: Vec::new(),
                },
            );
        }
        replace(&mut self.forward_ports, forward_ports);
        self.allowed_binds.extend(allowed_binds);
        if allow_privileged_ports {
            self.allow_privileged_ports = Some(true);
        }
        self.forward_allowed_sources.extend(forward_allowed_sources);
        self.remote_destinations.extend(remote_destinations);
        self.trusted_proxies.extend(trusted_proxies);
        replace(&mut self.idle_timeout, idle_timeout);
        replace(&mut self.resume_grace, resume_grace);
        replace(&mut self.drain_timeout, drain_timeout);
        replace(&mut self.token_file, token_file);
        self.allowed_origins.extend(allowed_origins);
        self.allowed_hosts.extend(allowed_hosts);
        replace(&mut self.web_dir, web_dir);
        replace(&mut self.tls_cert, tls_cert);
        replace(&mut self.tls_key, tls_key);
        replace(&mut self.public_host, public_host);
        replace(&mut self.web_forward_domain, web_forward_domain);
        if web_forward_paths {
            self.web_forward_paths = Some(true);
        }
        replace(&mut self.log_format, log_format);
    }

    /// The relay's settings: the defaults, with what was given laid over them, and the
    /// token file read. Rules that span keys are [`Config::validate`]'s.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let default = Config::default();
        let targets = self
            .targets
            .into_iter()
            .map(|(TargetName(name), target)| {
                let pinned_host_keys = target.pinned_host_keys.into_iter().map(|f| f.0).collect();
                let address = target.address.0;
                (
                    name,
                    Target {
                        address,
                        pinned_host_keys,
                    },
                )
            })
            .collect();
        let mut config = Config {
            targets,
            forward_ports: self.forward_ports.map_or(default.forward_ports, |r| r.0),
            forward_ports_per_user: self.forward_ports_per_user,
            allowed_binds: self.allowed_binds.into_iter().map(BindAddr::ip).collect(),
            forward_allowed_sources: nets(self.forward_allowed_sources),
            remote_destinations: self.remote_destinations,
            allow_privileged_ports: self
                .allow_privileged_ports
                .unwrap_or(default.allow_privileged_ports),
            web_dir: self.web_dir.or(default.web_dir),
            ping_interval: self.ping_interval.map_or(default.ping_interval, |d| d.0),
            handshake_timeout: self
                .handshake_timeout
                .map_or(default.handshake_timeout, |d| d.0),
            idle_timeout: self.idle_timeout.map_or(default.idle_timeout, |d| d.0),
            login_grace: self.login_grace.map_or(default.login_grace, |d| d.0),
            resume_grace: self.resume_grace.map_or(default.resume_grace, |d| d.0),
            drain_timeout: self.drain_timeout.map_or(default.drain_timeout, |d| d.0),
            tokens: default.tokens,
            check_origin: self.check_origin.unwrap_or(default.check_origin),
            allowed_origins: self.allowed_origins.into_iter().map(|o| o.0).collect(),
            allowed_hosts: self.allowed_hosts.into_iter().map(|h| h.0).collect(),
            limits: self.limits.unwrap_or(default.limits),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            public_host: self.public_host.map(|h| h.0),
            trusted_proxies: nets(self.trusted_proxies),
            proxy_protocol: self.proxy_protocol.unwrap_or(default.proxy_protocol),
            http_header_timeout: self
                .http_header_timeout
                .map_or(default.http_header_timeout, |d| d.0),
            http_idle_timeout: self
                .http_idle_timeout
                .map_or(default.http_idle_timeout, |d| d.0),
            tls_first_byte_timeout: self
                .tls_first_byte_timeout
                .map_or(default.tls_first_byte_timeout, |d| d.0),
            tls_handshake_timeout: self
                .tls_handshake_timeout
                .map_or(default.tls_handshake_timeout, |d| d.0),
            web_forward_domain: self.web_forward_domain.map(|h| h.0),
            web_forward_paths: self.web_forward_paths.unwrap_or(default.web_forward_paths),
            log_format: self.log_format.unwrap_or(default.log_format),
        };
        if let Some(path) = &self.token_file {
            config.load_tokens(path)?;
        }
        Ok(config)
    }
}

fn nets(nets: Vec<SourceNet>) -> Vec<ipnet::IpNet> {
    nets.into_iter().map(|n| n.0).collect()
}

/// A flag given replaces the file's value.
fn replace<T>(file: &mut Option<T>, flag: Option<T>) {
    if flag.is_some() {
        *file = flag;
    }
}

impl Config {
    /// Reads a TOML config file (see [`Settings::from_file`]), without the checks that
    /// span keys ([`Config::validate`]).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Settings::from_file(path)?.into_config()
    }

    /// Parses TOML text (the same rules as a file), without the checks that span keys.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Settings::from_toml(text)?.into_config()
    }

    /// The relay's configuration: the file at `file` if any, the flags laid over it, and
    /// every check passed.
    pub fn load(file: Option<&Path>, flags: Flags) -> Result<Self, ConfigError> {
        let mut settings = match file {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        settings.overlay(flags);
        let config = settings.into_config()?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    /// The relay's flags alone, as `relay` reads them.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        flags: Flags,
    }

    fn flags(args: &[&str]) -> Flags {
        Cli::try_parse_from(std::iter::once("relay").chain(args.iter().copied()))
            .unwrap()
            .flags
    }

    /// `toml` with `args` laid over it, as `relay --config FILE ARGS` builds its config.
    fn overlaid(toml: &str, args: &[&str]) -> Config {
        let mut settings = Settings::from_toml(toml).unwrap();
        settings.overlay(flags(args));
        settings.into_config().unwrap()
    }

    #[test]
    fn a_flag_replaces_the_files_value() {
        let file = "forward_ports = \"20000-20010\"\nidle_timeout = \"8h\"\npublic_host = \"a.example\"\n\
                    web_dir = \"/srv/page\"\ntls_cert = \"file.pem\"\n";
        let config = overlaid(file, &[]);
        assert_eq!(config.forward_ports, 20000..=20010);
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(8 * 3600)));
        let config = overlaid(
            file,
            &[
                "--forward-ports",
                "30000-30001",
                "--idle-timeout",
                "off",
                "--public-host",
                "B.example.",
                "--web-dir",
                "web",
                "--tls-cert",
                "flag.pem",
            ],
        );
        assert_eq!(config.forward_ports, 30000..=30001);
        assert_eq!(config.idle_timeout, None, "off from the flag wins");
        assert_eq!(config.public_host.as_deref(), Some("B.example"));
        assert_eq!(config.web_dir, Some(PathBuf::from("web")));
        assert_eq!(config.tls_cert, Some(PathBuf::from("flag.pem")));
        // A flag left out keeps the file's value; both left out keep the default.
        let config = overlaid("", &["--idle-timeout", "2h"]);
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(7200)));
        assert_eq!(config.forward_ports, Config::default().forward_ports);
        let config = overlaid("resume_grace = \"2m\"", &["--resume-grace", "0s"]);
        assert_eq!(config.resume_grace, Duration::ZERO, "0s from the flag wins");
        let config = overlaid("resume_grace = \"2m\"", &[]);
        assert_eq!(config.resume_grace, Duration::from_secs(120));
        let config = overlaid("drain_timeout = \"2m\"", &["--drain-timeout", "5s"]);
        assert_eq!(
            config.drain_timeout,
            Duration::from_secs(5),
            "the flag wins"
        );
        let config = overlaid("", &[]);
        assert_eq!(config.drain_timeout, Duration::from_secs(30), "the default");
    }

    #[test]
    fn list_flags_add_to_the_files_lists_and_targets() {
        let config = overlaid(
            "allowed_binds = [\"192.0.2.7\"]\nforward_allowed_sources = [\"10.0.0.0/8\"]\n\
             trusted_proxies = [\"127.0.0.1\"]\nallowed_origins = [\"https://a.example\"]\n\
             allowed_hosts = [\"a.example\"]\n[targets.lab]\naddress = \"10.0.0.5:22\"\n\
             pinned_host_keys = [\"SHA256:abc\"]\n[targets.kept]\naddress = \"10.0.0.6:22\"\n\
             pinned_host_keys = [\"SHA256:def\"]\n",
            &[
                "--allowed-binds",
                "*,::",
                "--forward-allowed-sources",
                "fd00::/8",
                "--trusted-proxies",
                "10.1.0.0/16",
                "--allowed-origins",
                "https://b.example",
                "--allowed-hosts",
                "B.example",
                "--targets",
                "lab=10.0.0.9:2222,extra=[::1]:22",
            ],
        );
        assert_eq!(
            config.allowed_binds,
            ["192.0.2.7", "0.0.0.0", "::"].map(|ip| ip.parse::<std::net::IpAddr>().unwrap())
        );
        assert_eq!(config.forward_allowed_sources.len(), 2);
        assert_eq!(config.trusted_proxies[1].to_string(), "10.1.0.0/16");
        assert_eq!(
            config.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(config.allowed_hosts, ["a.example", "b.example"]);
        let remote = overlaid(
            "remote_destinations = [\"127.0.0.1:3000\"]",
            &["--remote-destinations", "[::1]:80,db.lab:5432"],
        );
        assert_eq!(
            remote
                .remote_destinations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["127.0.0.1:3000", "[::1]:80", "db.lab:5432"]
        );
        let err = Settings::from_toml("remote_destinations = [\"127.0.0.1\"]")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("remote_destinations[0]: remote destination \"127.0.0.1\" has no port"),
            "{err}"
        );
        // A flag's target replaces the file's of the same name, pins and all.
        assert_eq!(config.targets["lab"].address, "10.0.0.9:2222");
        assert!(config.targets["lab"].pinned_host_keys.is_empty());
        assert_eq!(config.targets["kept"].pinned_host_keys, ["SHA256:def"]);
        assert_eq!(config.targets["extra"].address, "[::1]:22");
        // A bool flag turns on; leaving it out never turns the file's off.
        let on = overlaid("allow_privileged_ports = true", &[]);
        assert!(on.allow_privileged_ports);
        assert!(overlaid("", &["--allow-privileged-ports"]).allow_privileged_ports);
    }

    #[test]
    fn old_flag_spellings_still_work() {
        let config = overlaid(
            "",
            &[
                "--target",
                "lab=10.0.0.5:22",
                "--allow-bind",
                "0.0.0.0",
                "--allow-source",
                "10.0.0.0/8",
                "--trust-proxy",
                "127.0.0.1",
                "--allow-origin",
                "https://lab.example.com",
                "--allow-host",
                "relay.lab.example.com",
                "--target",
                "b=10.0.0.6:22",
            ],
        );
        assert_eq!(config.targets.len(), 2);
        assert!(config.bind_allowed("192.0.2.1".parse().unwrap()));
        assert!(config.source_allowed("10.9.9.9".parse().unwrap()));
        assert!(!config.source_allowed("192.0.2.1".parse().unwrap()));
        assert!(config.proxy_trusted("127.0.0.1".parse().unwrap()));
        assert_eq!(config.allowed_origins, ["https://lab.example.com"]);
        assert_eq!(config.allowed_hosts, ["relay.lab.example.com"]);
    }

    #[test]
    fn flags_are_checked_by_the_same_parsers_as_keys() {
        for (args, says) in [
            (["--forward-ports", "9-3"], "write the lower port first"),
            (["--allow-bind", "lab"], "is not an IP address"),
            (
                ["--allow-source", "10.0.0.0/33"],
                "is not a network or address",
            ),
            (["--allow-origin", "lab.example.com"], "is not an origin"),
            (["--allow-host", "192.0.2.7"], "always answers to"),
            (
                ["--public-host", "relay lab.example"],
                "not a host name or IP address",
            ),
            (["--idle-timeout", "soon"], "or write off"),
            (["--target", "lab"], "write it as NAME=HOST:PORT"),
            (["--target", "lab=nohost"], "must be HOST:PORT"),
        ] {
            let err = Cli::try_parse_from(std::iter::once("relay").chain(args))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{args:?}: {err}");
            assert!(
                err.contains(&format!("'{}", args[1])),
                "{args:?} names the value: {err}"
            );
        }
    }

    #[test]
    fn durations_are_written_like_20s_and_the_old_integer_key_still_reads() {
        let old = Config::from_toml("ping_interval_secs = 45").unwrap();
        assert_eq!(old.ping_interval, Duration::from_secs(45));
        let new = Config::from_toml("ping_interval = \"45s\"").unwrap();
        assert_eq!(new.ping_interval, old.ping_interval);
        assert_eq!(
            Config::from_toml("").unwrap().ping_interval,
            Duration::from_secs(20)
        );
        for (text, says) in [
            (
                "ping_interval_secs = 0",
                "ping_interval_secs: 0 is not 1-3600 seconds",
            ),
            (
                "ping_interval_secs = 3601",
                "ping_interval_secs: 3601 is not 1-3600 seconds",
            ),
            (
                "ping_interval = \"2h\"",
                "ping_interval: \"2h\" is not between 1s and 1h",
            ),
            (
                "ping_interval = 20",
                "ping_interval: invalid type: integer `20`, expected a duration like \"20s\"",
            ),
            (
                "ping_interval = \"20s\"\nping_interval_secs = 20",
                "ping_interval_secs: is the old spelling of ping_interval, which is set too",
            ),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn file_errors_name_the_key_as_written() {
        for (text, key) in [
            (
                "allowed_binds = [\"0.0.0.0\", \"lab\"]",
                "allowed_binds[1]: bind address \"lab\"",
            ),
            (
                "[targets.x]\naddress = \"h:22\"\npinned_host_keys = [\"md5\"]",
                "targets.x.pinned_host_keys[0]: \"md5\"",
            ),
            (
                "[limits]\nsessions = 0",
                "limits.sessions: must be 1 or more",
            ),
            (
                "[limits]\nsession = 1",
                "limits.session: unknown field `session`",
            ),
            ("colour = 1", "colour: unknown field `colour`"),
            (
                "public_host = \"relay example\"",
                "public_host: \"relay example\" is not a host name",
            ),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.starts_with(key), "{text}: {err}");
        }
        let err = Config::from_toml("forward_ports =")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config file <config>: TOML parse error at line 1"),
            "{err}"
        );
    }

    #[test]
    fn load_reads_the_file_lays_the_flags_over_it_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "forward_ports = \"80-90\"\n[targets.lab]\naddress = \"10.0.0.5:22\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), Flags::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("CAP_NET_BIND_SERVICE"), "validated: {err}");
        let config = Config::load(Some(&path), flags(&["--forward-ports", "20000-20001"])).unwrap();
        assert_eq!(config.forward_ports, 20000..=20001);
        assert_eq!(config.targets["lab"].address, "10.0.0.5:22");
        std::fs::write(&path, "forward_ports = \"1-\"\n").unwrap();
        let err = Config::load(Some(&path), Flags::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}: forward_ports: ", path.display())),
            "{err}"
        );
        let config = Config::load(None, Flags::default()).unwrap();
        assert!(config.targets.is_empty());
    }

    #[test]
    fn a_token_file_flag_replaces_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "alice 0123456789abcdef0123\n").unwrap();
        std::fs::write(&b, "bob fedcba9876543210fedc\n").unwrap();
        let file = format!("token_file = {:?}", a.display().to_string());
        assert_eq!(
            overlaid(&file, &[]).token_owner("0123456789abcdef0123"),
            Some("alice")
        );
        let config = overlaid(&file, &["--token-file", b.to_str().unwrap()]);
        assert_eq!(config.token_owner("0123456789abcdef0123"), None);
        assert_eq!(config.token_owner("fedcba9876543210fedc"), Some("bob"));
    }
}
