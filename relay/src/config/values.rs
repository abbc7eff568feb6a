//! The value types of the relay's settings, each with the one parser that reads it from
//! the config file and from the command line alike (`FromStr`, which serde and clap both
//! call), and one message that says what to write instead.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Why a setting's text is not a value of its type; the message says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

/// Deserializes a TOML string through the type's `FromStr`, so the file and the flags
/// share one parser; `expecting` names the form when the value is not a string at all.
fn deserialize_parsed<'de, D, T>(deserializer: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = InvalidValue>,
{
    struct Parsed<T>(&'static str, PhantomData<T>);
    impl<T: FromStr<Err = InvalidValue>> Visitor<'_> for Parsed<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            text.parse().map_err(E::custom)
        }
    }
    deserializer.deserialize_str(Parsed(expecting, PhantomData))
}

macro_rules! deserialize_from_str {
    ($($ty:ty => $expecting:literal),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_parsed(deserializer, $expecting)
            }
        }
    )*};
}

deserialize_from_str! {
    PortRange => "a port range like \"10000-10999\"",
    BindAddr => "an IP address like \"0.0.0.0\", or \"*\"",
    SourceNet => "a network like \"10.0.0.0/8\"",
    IdleTimeout => "a duration like \"8h\", or \"off\"",
    TargetName => "a target name",
    TargetAddr => "a target address like \"ssh.example.com:22\"",
    HostKeyFingerprint => "a fingerprint like \"SHA256:abc...\"",
    Origin => "an origin like \"https://lab.example.com\"",
    HostName => "a host name like \"relay.lab.example.com\"",
    PublicHost => "a host name or IP address like \"relay.lab.example.com\"",
    RemoteDestination => "a destination like \"127.0.0.1:3000\"",
}

/// Ports forwards may listen on: `LOW-HIGH`, or a single port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange(pub RangeInclusive<u16>);

impl FromStr for PortRange {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let port = |s: &str| {
            s.trim().parse::<u16>().map_err(|_| {
                InvalidValue(format!(
                    "{s:?} is not a port number (1-65535); expected a range like 10000-10999"
                ))
            })
        };
        let (lo, hi) = match text.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(text)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(InvalidValue(format!(
                "range {lo}-{hi} is empty; write the lower port first"
            )));
        }
        Ok(Self(lo..=hi))
    }
}

/// An address a forward listens on, as `ssh -L` writes it: empty or `localhost` for
/// loopback (both families), `*` for every IPv4 address, or an IP (IPv6 with or without
/// brackets). The tab's Listen and the operator's `allowed_binds` both use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindAddr {
    Localhost,
    Ip(IpAddr),
}

impl BindAddr {
    /// The address to check and bind first: IPv4 loopback for `localhost`.
    pub fn ip(self) -> IpAddr {
        match self {
            Self::Localhost => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Self::Ip(ip) => ip,
        }
    }
}

impl FromStr for BindAddr {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        match text {
            "" | "localhost" => Ok(Self::Localhost),
            "*" => Ok(Self::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
            other => other
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map(Self::Ip)
                .map_err(|_| {
                    InvalidValue(format!(
                        "bind address {other:?} is not an IP address; use an IP, localhost or * \
                         (examples: 0.0.0.0, 192.0.2.7, ::1)"
                    ))
                }),
        }
    }
}

/// A network in CIDR form (`10.0.0.0/8`, `fd00::/8`) or a single address (`192.0.2.7`,
/// `::1`), as `forward_allowed_sources` and `trusted_proxies` hold them. Host bits after
/// the prefix are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceNet(pub IpNet);

impl FromStr for SourceNet {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let text = text.trim();
        let net = match text.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => text
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| {
                    InvalidValue(format!(
                        "{text:?} is not a network or address; write it like 10.0.0.0/8, 192.0.2.7/32 or fd00::/8"
                    ))
                })?,
        };
        // IPv4 clients are checked as IPv4 addresses (see `Config::source_allowed`), so
        // an IPv4-mapped IPv6 network would never match anyone.
        if let IpNet::V6(v6) = net
            && v6.addr().to_ipv4_mapped().is_some()
        {
            return Err(InvalidValue(format!(
                "{text:?} is an IPv4-mapped IPv6 network, which never matches: write the IPv4 network instead (like 10.0.0.0/8)"
            )));
        }
        Ok(Self(net))
    }
}

/// A duration written like `30s`, `10m`, `4h` or `1h 30m`, between `MIN_MS` and `MAX_MS`
/// milliseconds: each setting's type names its own bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationWithin<const MIN_MS: u64, const MAX_MS: u64>(pub Duration);

impl<const MIN_MS: u64, const MAX_MS: u64> DurationWithin<MIN_MS, MAX_MS> {
    pub const MIN: Duration = Duration::from_millis(MIN_MS);
    pub const MAX: Duration = Duration::from_millis(MAX_MS);
}

impl<const MIN_MS: u64, const MAX_MS: u64> FromStr for DurationWithin<MIN_MS, MAX_MS> {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let duration = humantime::parse_duration(text.trim()).map_err(|err| {
            InvalidValue(format!(
                "{text:?} is not a duration ({err}); write it like 30s, 10m or 4h"
            ))
        })?;
        if !(Self::MIN..=Self::MAX).contains(&duration) {
            return Err(InvalidValue(format!(
                "{text:?} is not between {} and {}",
                humantime::format_duration(Self::MIN),
                humantime::format_duration(Self::MAX)
            )));
        }
        Ok(Self(duration))
    }
}

impl<'de, const MIN_MS: u64, const MAX_MS: u64> Deserialize<'de>
    for DurationWithin<MIN_MS, MAX_MS>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_parsed(deserializer, "a duration like \"20s\"")
    }
}

/// `ping_interval`: a second is plenty of chatter; beyond an hour a lost tab holds its
/// listeners for hours.
pub type PingInterval = DurationWithin<1_000, 3_600_000>;
/// `handshake_timeout`: a second is plenty on any network; ten minutes is already
/// generous to a stalled client.
pub type HandshakeTimeout = DurationWithin<1_000, 600_000>;
/// `login_grace`: a second (for tests) to an hour (sshd's LoginGraceTime is 2 minutes by
/// default; an hour of counting one silent session against a target is already too long).
pub type LoginGrace = DurationWithin<1_000, 3_600_000>;
/// `resume_grace`: `0s` turns parking off; ten minutes is already long for ports held
/// for a tab that may never come back.
pub type ResumeGrace = DurationWithin<0, 600_000>;
/// `drain_timeout`: `0s` ends every session at the first signal; an hour is already long
/// for a rolling restart to wait on one relay.
pub type DrainTimeout = DurationWithin<0, 3_600_000>;
/// `http_header_timeout`, `http_idle_timeout` and `tls_handshake_timeout`: a second is
/// tight on a slow mobile network already; beyond an hour the bound no longer protects
/// anything.
pub type HttpTimeout = DurationWithin<1_000, 3_600_000>;
/// `tls_first_byte_timeout`: a TLS client sends its ClientHello at once; 100 ms is near a
/// slow network's round trip, and a minute is already generous to a silent connection.
pub type TlsFirstByteTimeout = DurationWithin<100, 60_000>;
/// The bounds of an idle timeout: at least a second; at most 30 days, beyond which `off`
/// says it better (and deadline arithmetic stays far from overflow).
type IdleDuration = DurationWithin<1_000, 2_592_000_000>;

/// `idle_timeout`: a duration, or `off` (`None`) to never end an idle session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleTimeout(pub Option<Duration>);

impl FromStr for IdleTimeout {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        if text.trim() == "off" {
            return Ok(Self(None));
        }
        let DurationWithin(duration) =
            text.parse::<IdleDuration>()
                .map_err(|InvalidValue(reason)| {
                    InvalidValue(format!("{reason}; or write off to never end idle sessions"))
                })?;
        Ok(Self(Some(duration)))
    }
}

/// The name tabs know a target by: 1-64 letters, digits, `-`, `_` or `.`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetName(pub String);

impl FromStr for TargetName {
    type Err = InvalidValue;
    fn from_str(name: &str) -> Result<Self, InvalidValue> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(InvalidValue(format!(
                "target name {name:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(Self(name.to_owned()))
    }
}

/// A target's SSH server as `HOST:PORT` (IPv6 in brackets), as the relay host resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetAddr(pub String);

impl FromStr for TargetAddr {
    type Err = InvalidValue;
    fn from_str(address: &str) -> Result<Self, InvalidValue> {
        let err = || {
            InvalidValue(format!(
                "target address {address:?} must be HOST:PORT, e.g. ssh.example.com:22 or [::1]:22"
            ))
        };
        let (host, port) = address.rsplit_once(':').ok_or_else(err)?;
        let port: u16 = port.parse().map_err(|_| err())?;
        if host.is_empty() || port == 0 {
            return Err(err());
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(err());
        }
        Ok(Self(address.to_owned()))
    }
}

/// A target on the command line: `NAME=HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub name: TargetName,
    pub address: TargetAddr,
}

impl FromStr for TargetSpec {
    type Err = InvalidValue;
    fn from_str(spec: &str) -> Result<Self, InvalidValue> {
        let (name, address) = spec.split_once('=').ok_or_else(|| {
            InvalidValue(format!(
                "{spec:?}: write it as NAME=HOST:PORT, e.g. lab=10.0.0.5:22"
            ))
        })?;
        Ok(Self {
            name: name.parse()?,
            address: address.parse()?,
        })
    }
}

/// A host-key fingerprint as `ssh-keygen -lf` prints it: `SHA256:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyFingerprint(pub String);

impl FromStr for HostKeyFingerprint {
    type Err = InvalidValue;
    fn from_str(fp: &str) -> Result<Self, InvalidValue> {
        if fp.starts_with("SHA256:") && fp.len() > 7 {
            Ok(Self(fp.to_owned()))
        } else {
            Err(InvalidValue(format!(
                "{fp:?} is not a fingerprint; write it as `ssh-keygen -lf` prints it, e.g. SHA256:abc..."
            )))
        }
    }
}

/// A page origin allowed to open sessions: `https://host[:port]` (or `http://`), no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(pub String);

impl FromStr for Origin {
    type Err = InvalidValue;
    fn from_str(origin: &str) -> Result<Self, InvalidValue> {
        if !(origin.starts_with("http://") || origin.starts_with("https://"))
            || origin.ends_with('/')
        {
            return Err(InvalidValue(format!(
                "{origin:?} is not an origin; write it as https://host[:port], without a path"
            )));
        }
        Ok(Self(origin.to_owned()))
    }
}

/// The name users reach the relay host by: a DNS name or an IP address (IPv6 with or
/// without brackets), kept as the page shows it (IPv6 without brackets, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicHost(pub String);

impl FromStr for PublicHost {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<IpAddr>().is_ok() {
            return Ok(Self(bare.to_owned()));
        }
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let name = text.strip_suffix('.').unwrap_or(text);
        if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
            return Ok(Self(name.to_owned()));
        }
        let hint = if text
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            "; give it without a port, since each forward has its own"
        } else {
            ""
        };
        Err(InvalidValue(format!(
            "{text:?} is not a host name or IP address (examples: relay.lab.example.com, 192.0.2.7, 2001:db8::7){hint}"
        )))
    }
}

/// A destination remote forwards (`ssh -R`) may reach from the relay host
/// (`remote_destinations`): `IP:PORT` (IPv6 in brackets) or `NAME:PORT`. A name is the
/// operator's, resolved by the relay when it connects; a tab's request matches it only
/// by that name (as an IP matches only that IP), so the list says exactly what tabs may
/// ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDestination {
    /// An IP address (IPv6 without brackets) or a name in lower case without a
    /// trailing dot.
    pub host: String,
    pub port: u16,
}

impl RemoteDestination {
    /// Whether a tab's `host:port` (as its `-R` spec gave it) is this destination.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match (bare.parse::<IpAddr>(), self.host.parse::<IpAddr>()) {
            (Ok(asked), Ok(allowed)) => asked == allowed,
            (Err(_), Err(_)) => {
                let name = bare.strip_suffix('.').unwrap_or(bare);
                name.eq_ignore_ascii_case(&self.host)
            }
            _ => false,
        }
    }

    /// `host:port` as the relay connects to it (IPv6 in brackets).
    pub fn address(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for RemoteDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for RemoteDestination {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let err = |why: &str| {
            InvalidValue(format!(
                "remote destination {text:?} {why}; write it as HOST:PORT, e.g. 127.0.0.1:3000, [::1]:3000 or db.internal:5432"
            ))
        };
        let (host, port) = text
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| err("has no port"))?;
        let port = match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(err("has no port from 1-65535")),
            Ok(port) => port,
        };
        let host = if let Some(inner) = host.strip_prefix('[') {
            let ip = inner
                .strip_suffix(']')
                .and_then(|ip| ip.parse::<std::net::Ipv6Addr>().ok())
                .ok_or_else(|| err("has brackets around something other than an IPv6 address"))?;
            ip.to_string()
        } else if host.contains(':') {
            return Err(err("is an IPv6 address without brackets"));
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            ip.to_string()
        } else {
            let PublicHost(name) = host
                .parse()
                .map_err(|_| err("does not start with an IP address or host name"))?;
            name.to_ascii_lowercase()
        };
        Ok(Self { host, port })
    }
}

/// A DNS name the relay answers to (`allowed_hosts`), in lower case without a trailing
/// dot. An IP address is always allowed, so listing one is a mistake worth saying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName(pub String);

impl FromStr for HostName {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let PublicHost(name) = text.parse().map_err(|_| {
            InvalidValue(format!(
                "{text:?} is not a host name (example: relay.lab.example.com); write the name alone, without a scheme or port"
            ))
        })?;
        if name.parse::<IpAddr>().is_ok() {
            return Err(InvalidValue(format!(
                "{text:?} is an IP address, which the relay always answers to; list only names here"
            )));
        }
        Ok(Self(name.to_ascii_lowercase()))
    }
}

/// Shortest token accepted: guessing one must be hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

/// One person's access token, a line `NAME TOKEN` of the token file. `Debug` never
/// shows the secret, nor does any parse error.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub name: String,
    pub secret: String,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl FromStr for AccessToken {
    type Err = InvalidValue;
    fn from_str(line: &str) -> Result<Self, InvalidValue> {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(secret), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(InvalidValue("write each line as NAME TOKEN".into()));
        };
        if secret.len() < MIN_TOKEN_LEN {
            return Err(InvalidValue(format!(
                "the token of {name} is shorter than {MIN_TOKEN_LEN} characters; make one with `openssl rand -hex 16`"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// A limit of `[limits]`: a count of 1 or more (0 would shut everyone out).
pub(super) fn at_least_one<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    match usize::deserialize(deserializer)? {
        0 => Err(de::Error::custom("must be 1 or more")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message `text` is refused with, as `T`.
    fn refusal<T: FromStr<Err = InvalidValue> + fmt::Debug>(text: &str) -> String {
        text.parse::<T>().unwrap_err().to_string()
    }

    #[test]
    fn remote_destinations_are_host_and_port_and_match_exactly() {
        let dest = |text: &str| text.parse::<RemoteDestination>().unwrap();
        assert_eq!(dest("127.0.0.1:3000").to_string(), "127.0.0.1:3000");
        assert_eq!(dest("[::1]:3000").to_string(), "[::1]:3000");
        assert_eq!(dest("[0:0::1]:3000").host, "::1");
        assert_eq!(dest("DB.Internal.:5432").to_string(), "db.internal:5432");
        assert!(dest("127.0.0.1:3000").matches("127.0.0.1", 3000));
        assert!(!dest("127.0.0.1:3000").matches("127.0.0.1", 3001));
        assert!(dest("[::1]:3000").matches("::1", 3000));
        assert!(dest("[::1]:3000").matches("[0::1]", 3000));
        assert!(dest("db.internal:5432").matches("DB.internal.", 5432));
        // A name is not its address, nor an address a name: the list says exactly what
        // may be asked for.
        assert!(!dest("localhost:3000").matches("127.0.0.1", 3000));
        assert!(!dest("127.0.0.1:3000").matches("localhost", 3000));
        assert!(!dest("db.internal:5432").matches("db.internal.evil", 5432));
        for (bad, why) in [
            ("127.0.0.1", "has no port"),
            ("127.0.0.1:0", "has no port from 1-65535"),
            ("127.0.0.1:http", "has no port from 1-65535"),
            ("::1:3000", "IPv6 address without brackets"),
            ("[db]:3000", "brackets around something other"),
            ("a b:80", "does not start with an IP address or host name"),
            (":80", "does not start with an IP address or host name"),
        ] {
            let err = refusal::<RemoteDestination>(bad);
            assert!(
                err.contains(why) && err.contains("HOST:PORT"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn port_ranges_are_low_high_or_one_port() {
        assert_eq!("10000-10999".parse::<PortRange>().unwrap().0, 10000..=10999);
        assert_eq!(
            " 20000 - 20001 ".parse::<PortRange>().unwrap().0,
            20000..=20001
        );
        assert_eq!("8080".parse::<PortRange>().unwrap().0, 8080..=8080);
        assert_eq!("65535-65535".parse::<PortRange>().unwrap().0, 65535..=65535);
        assert!(
            refusal::<PortRange>("9-3").contains("range 9-3 is empty; write the lower port first")
        );
        for bad in ["", "10000-", "-10999", "1-65536", "ten", "1-2-3"] {
            let err = refusal::<PortRange>(bad);
            assert!(
                err.contains("is not a port number (1-65535)"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn bind_addresses_are_read_as_ssh_does() {
        assert_eq!("".parse::<BindAddr>().unwrap(), BindAddr::Localhost);
        assert_eq!(
            "localhost".parse::<BindAddr>().unwrap(),
            BindAddr::Localhost
        );
        assert_eq!(BindAddr::Localhost.ip(), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            "*".parse::<BindAddr>().unwrap().ip(),
            IpAddr::from([0, 0, 0, 0])
        );
        assert_eq!(
            "[::1]".parse::<BindAddr>().unwrap().ip(),
            "::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            "::".parse::<BindAddr>().unwrap().ip(),
            "::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            "192.0.2.7".parse::<BindAddr>().unwrap().ip(),
            IpAddr::from([192, 0, 2, 7])
        );
        for bad in [
            "mail.example.com",
            "0.0.0.0:80",
            "**",
            "LOCALHOST",
            "10.0.0.0/8",
        ] {
            let err = refusal::<BindAddr>(bad);
            assert!(
                err.contains("is not an IP address; use an IP, localhost or *"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn source_networks_drop_host_bits() {
        assert_eq!(
            "10.1.2.3/8".parse::<SourceNet>().unwrap().0.to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "192.0.2.7".parse::<SourceNet>().unwrap().0.to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            "[::1]".parse::<SourceNet>().unwrap().0.to_string(),
            "::1/128"
        );
        assert_eq!(
            " fd00::/8 ".parse::<SourceNet>().unwrap().0.to_string(),
            "fd00::/8"
        );
        for bad in ["10.0.0.0/33", "lab", "", "10.0.0.0/8/8"] {
            let err = refusal::<SourceNet>(bad);
            assert!(
                err.contains("is not a network or address"),
                "{bad:?}: {err}"
            );
            assert!(err.contains("10.0.0.0/8"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn an_ipv4_mapped_source_network_is_refused_with_the_ipv4_form() {
        let err = "::ffff:10.0.0.0/104"
            .parse::<SourceNet>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("IPv4-mapped") && err.contains("10.0.0.0/8"),
            "{err}"
        );
        assert!("fd00::/8".parse::<SourceNet>().is_ok());
    }

    #[test]
    fn durations_are_written_like_20s_within_their_bounds() {
        assert_eq!(
            "20s".parse::<PingInterval>().unwrap().0,
            Duration::from_secs(20)
        );
        assert_eq!(
            "1m 30s".parse::<LoginGrace>().unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            "1s".parse::<HandshakeTimeout>().unwrap().0,
            HandshakeTimeout::MIN
        );
        assert_eq!(
            "10m".parse::<HandshakeTimeout>().unwrap().0,
            HandshakeTimeout::MAX
        );
        assert_eq!(
            "100ms".parse::<TlsFirstByteTimeout>().unwrap().0,
            Duration::from_millis(100)
        );
        let err = refusal::<HandshakeTimeout>("11m");
        assert_eq!(err, "\"11m\" is not between 1s and 10m");
        let err = refusal::<TlsFirstByteTimeout>("99ms");
        assert_eq!(err, "\"99ms\" is not between 100ms and 1m");
        for bad in ["20", "soon", "", "-1s"] {
            let err = refusal::<HttpTimeout>(bad);
            assert!(
                err.contains("is not a duration") && err.contains("30s, 10m or 4h"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn idle_timeouts_are_a_duration_or_off() {
        assert_eq!("off".parse::<IdleTimeout>().unwrap().0, None);
        assert_eq!(" off ".parse::<IdleTimeout>().unwrap().0, None);
        assert_eq!(
            "8h".parse::<IdleTimeout>().unwrap().0,
            Some(Duration::from_secs(8 * 3600))
        );
        assert_eq!(
            "30days".parse::<IdleTimeout>().unwrap().0,
            Some(Duration::from_secs(30 * 86400))
        );
        for (bad, says) in [
            ("0s", "between 1s and 30days"),
            ("31days", "between 1s and 30days"),
            ("never", "30s, 10m or 4h"),
            ("OFF", "30s, 10m or 4h"),
        ] {
            let err = refusal::<IdleTimeout>(bad);
            assert!(err.contains(says), "{bad:?}: {err}");
            assert!(
                err.ends_with("; or write off to never end idle sessions"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn targets_are_a_name_and_host_port() {
        assert_eq!("lab-2_b.x".parse::<TargetName>().unwrap().0, "lab-2_b.x");
        assert!("a".repeat(64).parse::<TargetName>().is_ok());
        for bad in ["", "lab 2", "lab/2", "läb", &"a".repeat(65)] {
            let err = refusal::<TargetName>(bad);
            assert!(err.contains("must be 1-64 characters"), "{bad:?}: {err}");
        }
        for good in [
            "ssh.example.com:22",
            "10.0.0.5:2222",
            "[::1]:22",
            "[2001:db8::5]:22",
        ] {
            assert_eq!(good.parse::<TargetAddr>().unwrap().0, good);
        }
        for bad in [
            "nohost",
            ":22",
            "host:0",
            "host:65536",
            "host:ssh",
            "::1:22",
            "host",
        ] {
            let err = refusal::<TargetAddr>(bad);
            assert!(
                err.contains("must be HOST:PORT, e.g. ssh.example.com:22"),
                "{bad:?}: {err}"
            );
        }
        let spec: TargetSpec = "lab=10.0.0.5:22".parse().unwrap();
        assert_eq!(
            (spec.name.0.as_str(), spec.address.0.as_str()),
            ("lab", "10.0.0.5:22")
        );
        let err = refusal::<TargetSpec>("10.0.0.5:22");
        assert!(
            err.contains("write it as NAME=HOST:PORT, e.g. lab=10.0.0.5:22"),
            "{err}"
        );
        assert!(refusal::<TargetSpec>("l b=10.0.0.5:22").contains("target name"));
        assert!(refusal::<TargetSpec>("lab=10.0.0.5").contains("target address"));
    }

    #[test]
    fn fingerprints_are_sha256() {
        assert!(
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
                .parse::<HostKeyFingerprint>()
                .is_ok()
        );
        for bad in ["SHA256:", "MD5:ab:cd", "uNiVztks", ""] {
            let err = refusal::<HostKeyFingerprint>(bad);
            assert!(
                err.contains("is not a fingerprint; write it as `ssh-keygen -lf` prints it"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn origins_have_a_scheme_and_no_path() {
        for good in ["https://lab.example.com", "http://127.0.0.1:8080"] {
            assert_eq!(good.parse::<Origin>().unwrap().0, good);
        }
        for bad in [
            "lab.example.com",
            "https://lab.example.com/",
            "ftp://lab.example.com",
            "",
        ] {
            let err = refusal::<Origin>(bad);
            assert!(
                err.contains("is not an origin; write it as https://host[:port]"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn public_host_is_a_name_or_an_address() {
        for (given, kept) in [
            ("relay.lab.example.com", "relay.lab.example.com"),
            ("relay.lab.example.com.", "relay.lab.example.com"),
            ("localhost", "localhost"),
            ("192.0.2.7", "192.0.2.7"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
        ] {
            assert_eq!(given.parse::<PublicHost>().unwrap().0, kept);
        }
        for bad in [
            "",
            "relay lab",
            "-relay.example",
            "relay..example",
            "https://relay.example",
            "a_b.example",
        ] {
            let err = bad.parse::<PublicHost>().unwrap_err().to_string();
            assert!(
                err.contains("not a host name or IP address"),
                "{bad:?}: {err}"
            );
        }
        let err = "relay.example:8080"
            .parse::<PublicHost>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("without a port"), "{err}");
    }

    #[test]
    fn host_names_are_lower_case_names_not_addresses() {
        assert_eq!(
            "Relay.Lab.Example.com.".parse::<HostName>().unwrap().0,
            "relay.lab.example.com"
        );
        assert_eq!("localhost".parse::<HostName>().unwrap().0, "localhost");
        for (bad, says) in [
            ("relay.example.com:8080", "without a scheme or port"),
            ("https://relay.example.com", "not a host name"),
            (
                "192.0.2.7",
                "is an IP address, which the relay always answers to",
            ),
            (
                "[::1]",
                "is an IP address, which the relay always answers to",
            ),
        ] {
            let err = refusal::<HostName>(bad);
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn token_lines_are_a_name_and_a_long_secret_never_shown() {
        let token: AccessToken = "alice  0123456789abcdef".parse().unwrap();
        assert_eq!(
            (token.name.as_str(), token.secret.as_str()),
            ("alice", "0123456789abcdef")
        );
        assert!(!format!("{token:?}").contains("0123"), "{token:?}");
        for (bad, says) in [
            ("alice", "write each line as NAME TOKEN"),
            (
                "alice 0123456789abcdef extra",
                "write each line as NAME TOKEN",
            ),
            (
                "alice 0123456789abcde",
                "the token of alice is shorter than 16 characters",
            ),
        ] {
            let err = refusal::<AccessToken>(bad);
            assert!(err.contains(says), "{bad:?}: {err}");
            assert!(
                !err.contains("0123"),
                "the secret stays out of messages: {err}"
            );
        }
    }

    #[test]
    fn the_file_reads_values_through_the_same_parsers() {
        #[derive(Debug, serde::Deserialize)]
        struct File {
            ports: PortRange,
            grace: LoginGrace,
            #[serde(deserialize_with = "at_least_one")]
            count: usize,
        }
        let file: File = toml::from_str("ports = \"1-2\"\ngrace = \"2s\"\ncount = 1").unwrap();
        assert_eq!(
            (file.ports.0, file.grace.0, file.count),
            (1..=2, Duration::from_secs(2), 1)
        );
        for (text, says) in [
            (
                "ports = \"2-1\"\ngrace = \"2s\"\ncount = 1",
                "write the lower port first",
            ),
            (
                "ports = 5\ngrace = \"2s\"\ncount = 1",
                "expected a port range like \"10000-10999\"",
            ),
            (
                "ports = \"1-2\"\ngrace = 2\ncount = 1",
                "expected a duration like \"20s\"",
            ),
            (
                "ports = \"1-2\"\ngrace = \"2s\"\ncount = 0",
                "must be 1 or more",
            ),
        ] {
            let err = toml::from_str::<File>(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
