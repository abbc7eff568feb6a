//! The settings a relay runs with, every value after file, flags and defaults, written
//! for `relay --check-config` in a TOML-like form an operator can read (and mostly paste
//! back). Token secrets never appear: only how many tokens there are and their holders.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::policy::Config;

impl Config {
    /// Every setting, one `key = value` a line; unset optional values as comments.
    pub fn effective_settings(&self) -> String {
        let mut out = String::new();
        self.write_effective(&mut out)
            .expect("writing to a String cannot fail");
        out
    }

    fn write_effective(&self, out: &mut String) -> fmt::Result {
        writeln!(
            out,
            "# the effective settings (config file, flags, defaults)"
        )?;
        let r = &self.forward_ports;
        writeln!(
            out,
            "forward_ports = {}",
            quoted(&format!("{}-{}", r.start(), r.end()))
        )?;
        optional(out, "forward_ports_per_user", self.forward_ports_per_user)?;
        writeln!(
            out,
            "allowed_binds = {}",
            list(self.allowed_binds.iter().map(IpAddr::to_string))
        )?;
        writeln!(
            out,
            "forward_allowed_sources = {}",
            list(self.forward_allowed_sources.iter().map(ToString::to_string))
        )?;
        writeln!(
            out,
            "remote_destinations = {}",
            list(self.remote_destinations.iter().map(ToString::to_string))
        )?;
        writeln!(
            out,
            "allow_privileged_ports = {}",
            self.allow_privileged_ports
        )?;
        match &self.web_dir {
            Some(dir) => writeln!(out, "web_dir = {}", path(dir))?,
            None => writeln!(out, "# web_dir: not set (the page built into the binary)")?,
        }
        writeln!(out, "ping_interval = {}", duration(self.ping_interval))?;
        writeln!(
            out,
            "handshake_timeout = {}",
            duration(self.handshake_timeout)
        )?;
        match self.idle_timeout {
            Some(idle) => writeln!(out, "idle_timeout = {}", duration(idle))?,
            None => writeln!(out, "idle_timeout = \"off\"")?,
        }
        writeln!(out, "login_grace = {}", duration(self.login_grace))?;
        writeln!(out, "resume_grace = {}", duration(self.resume_grace))?;
        writeln!(out, "drain_timeout = {}", duration(self.drain_timeout))?;
        if self.tokens.is_empty() {
            writeln!(out, "# access tokens: none (no token needed)")?;
        } else {
            writeln!(
                out,
                "# access tokens: {} (secrets not shown)",
                self.tokens.len()
            )?;
            writeln!(
                out,
                "token_holders = {}",
                list(self.tokens.iter().map(|t| t.name.clone()))
            )?;
        }
        writeln!(out, "check_origin = {}", self.check_origin)?;
        writeln!(
            out,
            "allowed_origins = {}",
            list(self.allowed_origins.iter().cloned())
        )?;
        writeln!(
            out,
            "allowed_hosts = {}",
            list(self.allowed_hosts.iter().cloned())
        )?;
        optional(out, "tls_cert", self.tls_cert.as_deref().map(path))?;
        optional(out, "tls_key", self.tls_key.as_deref().map(path))?;
        optional(out, "public_host", self.public_host.as_deref().map(quoted))?;
        writeln!(
            out,
            "trusted_proxies = {}",
            list(self.trusted_proxies.iter().map(ToString::to_string))
        )?;
        writeln!(out, "proxy_protocol = {}", self.proxy_protocol)?;
        writeln!(
            out,
            "http_header_timeout = {}",
            duration(self.http_header_timeout)
        )?;
        writeln!(
            out,
            "http_idle_timeout = {}",
            duration(self.http_idle_timeout)
        )?;
        writeln!(
            out,
            "tls_first_byte_timeout = {}",
            duration(self.tls_first_byte_timeout)
        )?;
        writeln!(
            out,
            "tls_handshake_timeout = {}",
            duration(self.tls_handshake_timeout)
        )?;
        optional(
            out,
            "web_forward_domain",
            self.web_forward_domain.as_deref().map(quoted),
        )?;
        writeln!(out, "web_forward_paths = {}", self.web_forward_paths)?;
        writeln!(out, "log_format = {}", quoted(self.log_format.name()))?;
        writeln!(out, "\n[limits]")?;
        out.push_str(&toml::to_string(&self.limits).map_err(|_| fmt::Error)?);
        if self.targets.is_empty() {
            writeln!(out, "\n# targets: none")?;
        }
        for (name, target) in &self.targets {
            writeln!(out, "\n[targets.{}]", quoted(name))?;
            writeln!(out, "address = {}", quoted(&target.address))?;
            writeln!(
                out,
                "pinned_host_keys = {}",
                list(target.pinned_host_keys.iter().cloned())
            )?;
        }
        Ok(())
    }
}

/// A TOML string, escaped as TOML escapes it.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn path(path: &Path) -> String {
    quoted(&path.display().to_string())
}

fn duration(duration: Duration) -> String {
    quoted(&humantime::format_duration(duration).to_string())
}

fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.map(|item| quoted(&item)).collect();
    format!("[{}]", items.join(", "))
}

fn optional(out: &mut String, key: &str, value: Option<impl fmt::Display>) -> fmt::Result {
    match value {
        Some(value) => writeln!(out, "{key} = {value}"),
        None => writeln!(out, "# {key}: not set"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::values::AccessToken;
    use super::*;

    #[test]
    fn effective_settings_name_token_holders_but_never_their_secrets() {
        let mut config = Config::from_toml(
            "public_host = \"relay.example.com\"\nidle_timeout = \"8h\"\n[targets.lab]\naddress = \"10.0.0.5:22\"\n",
        )
        .unwrap();
        config.tokens = vec![
            AccessToken {
                name: "erin".into(),
                secret: "erin-5e3c0a91d2b74f68".into(),
            },
            AccessToken {
                name: "frank".into(),
                secret: "frank-0b9e4471c2aa31d5".into(),
            },
        ];
        let shown = config.effective_settings();
        assert!(!shown.contains("5e3c0a91d2b74f68"), "{shown}");
        assert!(!shown.contains("0b9e4471c2aa31d5"), "{shown}");
        assert!(
            shown.contains("# access tokens: 2 (secrets not shown)"),
            "{shown}"
        );
        assert!(
            shown.contains("token_holders = [\"erin\", \"frank\"]"),
            "{shown}"
        );
        assert!(
            shown.contains("public_host = \"relay.example.com\""),
            "{shown}"
        );
        assert!(shown.contains("idle_timeout = \"8h\""), "{shown}");
        assert!(
            shown.contains("forward_ports = \"10000-10999\""),
            "defaults shown: {shown}"
        );
        assert!(shown.contains("log_format = \"human\""), "{shown}");
        assert!(
            shown.contains("[targets.\"lab\"]\naddress = \"10.0.0.5:22\""),
            "{shown}"
        );
        assert!(shown.contains("\n[limits]\nsessions = "), "{shown}");
        assert!(shown.contains("# tls_cert: not set"), "{shown}");
    }

    #[test]
    fn effective_settings_parse_back_as_toml() {
        let config = Config::from_toml(
            "log_format = \"json\"\nweb_dir = \"/srv/a \\\"b\\\"\"\n[targets.lab]\naddress = \"10.0.0.5:22\"\n",
        )
        .unwrap();
        let shown = config.effective_settings();
        let parsed: toml::Table = shown.parse().unwrap_or_else(|e| panic!("{e}\n{shown}"));
        assert_eq!(parsed["web_dir"].as_str(), Some("/srv/a \"b\""));
        assert_eq!(parsed["log_format"].as_str(), Some("json"));
        assert_eq!(
            parsed["targets"]["lab"]["address"].as_str(),
            Some("10.0.0.5:22")
        );
    }

    #[test]
    fn effective_settings_show_remote_destinations_off_by_default() {
        let off = Config::from_toml("").unwrap().effective_settings();
        assert!(off.contains("\nremote_destinations = []\n"), "{off}");
        let on = Config::from_toml("remote_destinations = [\"127.0.0.1:3000\", \"[::1]:80\"]")
            .unwrap()
            .effective_settings();
        assert!(
            on.contains("remote_destinations = [\"127.0.0.1:3000\", \"[::1]:80\"]"),
            "{on}"
        );
        let parsed: toml::Table = on.parse().unwrap();
        assert_eq!(parsed["remote_destinations"][1].as_str(), Some("[::1]:80"));
    }
}
