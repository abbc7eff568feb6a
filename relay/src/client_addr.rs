//! The address a request comes from: the TCP peer, or, when that peer is one of the
//! operator's `trusted_proxies`, the client the proxy names in `Forwarded: for=`
//! (RFC 7239) or `X-Forwarded-For`. Per-address limits and logs use this one value.
//!
//! Each proxy appends the address it received the request from, so the header's entries
//! read left to right from the client towards the relay, and everything left of the
//! entry our own proxy added may be made up by the client. The client is therefore the
//! rightmost entry that is not itself a trusted proxy; entries further left are never
//! believed. A proxy may append to either header and pass the other on untouched (nginx
//! passes a client's `Forwarded`), so when both are present they must name the same
//! client; otherwise, or when the entry that counts is malformed or hidden
//! (`unknown`, `_obfuscated`), the TCP peer is used and the reason logged at debug.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::config::Config;

/// Where a request comes from. Handlers take it as an extractor; the relay's accept loop
/// works it out for every request (a proxy's kept-alive connection carries many users).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client's address, IPv4-mapped IPv6 written as IPv4: what limits are keyed on.
    ip: IpAddr,
    /// The client's port when known: the TCP peer's, or the one a proxy named.
    port: Option<u16>,
    /// The trusted proxy the request came through, if it named the client.
    via: Option<SocketAddr>,
}

impl ClientAddr {
    /// The request's client, from its TCP `peer` and its headers (read only when `peer`
    /// is a trusted proxy of `config`).
    pub fn resolve(peer: SocketAddr, headers: &HeaderMap, config: &Config) -> Self {
        let direct = Self {
            ip: peer.ip().to_canonical(),
            port: Some(peer.port()),
            via: None,
        };
        if !config.proxy_trusted(peer.ip()) {
            return direct;
        }
        match forwarded_client(headers, |ip| config.proxy_trusted(ip)) {
            Ok(None) => direct,
            Ok(Some((ip, port))) => Self {
                ip: ip.to_canonical(),
                port,
                via: Some(peer),
            },
            Err(reason) => {
                tracing::debug!(%peer, "using the proxy's own address: {reason}");
                direct
            }
        }
    }

    /// The client's IP address, the key of every per-address limit.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The trusted proxy the request came through, if a proxy named the client.
    pub fn via(&self) -> Option<SocketAddr> {
        self.via
    }
}

/// `203.0.113.7:51234`, or `203.0.113.7` when a proxy named no port.
impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => SocketAddr::new(self.ip, port).fmt(f),
            None => self.ip.fmt(f),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        if let Some(client) = parts.extensions.get::<ClientAddr>() {
            return Ok(*client);
        }
        // Only a router driven without the relay's accept loop (unit tests) lacks it.
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|info| info.0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        Ok(Self {
            ip: peer.ip().to_canonical(),
            port: Some(peer.port()),
            via: None,
        })
    }
}

/// The client the proxy headers name: `Ok(None)` when there are none, `Err` with the
/// reason when they cannot be believed.
fn forwarded_client(
    headers: &HeaderMap,
    trusted: impl Fn(IpAddr) -> bool,
) -> Result<Option<(IpAddr, Option<u16>)>, String> {
    let forwarded = joined(headers, "forwarded")?
        .map(|text| rightmost_untrusted(parse_forwarded(&text)?, &trusted, "Forwarded"))
        .transpose()?;
    let x_forwarded_for = joined(headers, "x-forwarded-for")?
        .map(|text| rightmost_untrusted(parse_x_forwarded_for(&text)?, &trusted, "X-Forwarded-For"))
        .transpose()?;
    match (forwarded, x_forwarded_for) {
        (Some(a), Some(b)) if a.0.to_canonical() != b.0.to_canonical() => Err(format!(
            "Forwarded names {} but X-Forwarded-For names {}; one of them was made up by the client",
            a.0, b.0
        )),
        // Prefer the one with a port; the address is the same.
        (Some(a), Some(b)) => Ok(Some(if a.1.is_some() { a } else { b })),
        (a, b) => Ok(a.or(b)),
    }
}

/// All lines of header `name` joined with commas, as RFC 9110 allows a list to be split.
fn joined(headers: &HeaderMap, name: &str) -> Result<Option<String>, String> {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut text = String::new();
    for value in values {
        let value = value
            .to_str()
            .map_err(|_| format!("{name} holds bytes that are not visible ASCII"))?;
        if !text.is_empty() {
            text.push(',');
        }
        text.push_str(value);
    }
    Ok(Some(text))
}

/// One hop as a header names it: an address, or why it names none.
type Hop = Result<(IpAddr, Option<u16>), String>;

/// The rightmost hop whose address is not a trusted proxy; if every hop is one, the
/// leftmost (a user on the proxies' own network).
fn rightmost_untrusted(
    hops: Vec<Hop>,
    trusted: &impl Fn(IpAddr) -> bool,
    header: &str,
) -> Result<(IpAddr, Option<u16>), String> {
    let mut leftmost = None;
    for hop in hops.into_iter().rev() {
        let (ip, port) = hop.map_err(|reason| format!("{header}: {reason}"))?;
        if !trusted(ip) {
            return Ok((ip, port));
        }
        leftmost = Some((ip, port));
    }
    leftmost.ok_or_else(|| format!("{header} is empty"))
}

/// `X-Forwarded-For: client, proxy1, proxy2`: addresses, some proxies add a port.
fn parse_x_forwarded_for(text: &str) -> Result<Vec<Hop>, String> {
    Ok(text.split(',').map(|entry| node(entry.trim())).collect())
}

/// `Forwarded: for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8::1]:4711"`
/// (RFC 7239): one element per hop, `;`-separated pairs, values a token or a quoted
/// string (in which `,` and `;` do not separate). A hop without `for` names no client.
fn parse_forwarded(text: &str) -> Result<Vec<Hop>, String> {
    let mut hops = Vec::new();
    let mut chars = text.chars().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::Chars>| {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
    };
    let mut end = false;
    while !end {
        let mut hop: Option<Hop> = None;
        let mut empty = true;
        // One element: `;`-separated pairs until a comma or the end.
        loop {
            skip_space(&mut chars);
            let name: String = std::iter::from_fn(|| chars.next_if(|c| is_tchar(*c))).collect();
            if name.is_empty() {
                match chars.next() {
                    None => end = true,
                    Some(',') => {}
                    Some(c) => return Err(format!("Forwarded has {c:?} where a name belongs")),
                }
                break;
            }
            empty = false;
            if chars.next() != Some('=') {
                return Err(format!("Forwarded: {name} has no value"));
            }
            let value = if chars.next_if_eq(&'"').is_some() {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => value.extend(chars.next()),
                        Some(c) => value.push(c),
                        None => return Err("Forwarded has an unterminated quote".to_owned()),
                    }
                }
                value
            } else {
                std::iter::from_fn(|| chars.next_if(|c| is_tchar(*c))).collect()
            };
            if name.eq_ignore_ascii_case("for") {
                hop = Some(node(&value));
            }
            skip_space(&mut chars);
            match chars.next() {
                Some(';') => {}
                Some(',') => break,
                None => {
                    end = true;
                    break;
                }
                Some(c) => return Err(format!("Forwarded has {c:?} where ; or , belongs")),
            }
        }
        if !empty {
            hops.push(hop.unwrap_or_else(|| Err("a hop names no client (no for=)".to_owned())));
        }
    }
    Ok(hops)
}

/// A `token` character of RFC 9110 (what an unquoted name or value is made of).
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A node as proxies write it: `192.0.2.7`, `192.0.2.7:80`, `2001:db8::1`, `[2001:db8::1]`
/// or `[2001:db8::1]:80`; `unknown` and obfuscated `_names` name no address.
fn node(text: &str) -> Hop {
    if text.eq_ignore_ascii_case("unknown") || text.starts_with('_') {
        return Err(format!("the client is hidden ({text:?})"));
    }
    let bad = || Err(format!("{text:?} is not an address"));
    let port = |p: &str| -> Result<Option<u16>, String> {
        // An obfuscated port (`_abc`) says nothing about the address; keep the address.
        if p.starts_with('_') {
            Ok(None)
        } else {
            p.parse()
                .map(Some)
                .map_err(|_| format!("{text:?} has a bad port"))
        }
    };
    if let Some(rest) = text.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return bad();
        };
        let Ok(ip) = ip.parse::<std::net::Ipv6Addr>() else {
            return bad();
        };
        return match after {
            "" => Ok((IpAddr::V6(ip), None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((IpAddr::V6(ip), port(p)?)),
                None => bad(),
            },
        };
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    match text.rsplit_once(':') {
        Some((ip, p)) => match ip.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => Ok((IpAddr::V4(ip), port(p)?)),
            Err(_) => bad(),
        },
        None => bad(),
    }
}

/// What every per-address limit counts on: the address, except that all of an IPv6 /64
/// counts as one. One host commonly holds a whole /64 (SLAAC, an ISP's prefix) and could
/// otherwise take a fresh address for every connection; like a NAT, a /64 is one source.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn config(proxies: &[&str]) -> Config {
        Config {
            trusted_proxies: proxies
                .iter()
                .map(|p| p.parse::<crate::config::values::SourceNet>().unwrap().0)
                .collect(),
            ..Config::default()
        }
    }

    fn client(peer: &str, headers: &[(&str, &str)], proxies: &[&str]) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        ClientAddr::resolve(peer.parse().unwrap(), &map, &config(proxies)).to_string()
    }

    const PROXY: &str = "10.0.0.2:40000";
    const TRUSTED: &[&str] = &["10.0.0.0/24"];

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        for header in ["forwarded", "x-forwarded-for"] {
            let value = if header == "forwarded" {
                "for=203.0.113.7"
            } else {
                "203.0.113.7"
            };
            assert_eq!(
                client("192.0.2.9:5555", &[(header, value)], TRUSTED),
                "192.0.2.9:5555"
            );
            assert_eq!(
                client(PROXY, &[(header, value)], &[]),
                PROXY,
                "no trusted proxies"
            );
        }
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        assert_eq!(
            client(PROXY, &[("x-forwarded-for", "203.0.113.7")], TRUSTED),
            "203.0.113.7"
        );
        assert_eq!(
            client(PROXY, &[("forwarded", "for=203.0.113.7")], TRUSTED),
            "203.0.113.7"
        );
        assert_eq!(client(PROXY, &[], TRUSTED), PROXY, "no header: the proxy");
        assert_eq!(
            client(
                "[::ffff:10.0.0.2]:40000",
                &[("x-forwarded-for", "203.0.113.7")],
                TRUSTED
            ),
            "203.0.113.7",
            "a dual-stack listener's IPv4 peer"
        );
    }

    #[test]
    fn forwarded_quotes_brackets_ports_and_case() {
        for (value, expected) in [
            (
                r#"for="[2001:db8:cafe::17]:4711""#,
                "[2001:db8:cafe::17]:4711",
            ),
            (r#"for="[2001:db8:cafe::17]""#, "2001:db8:cafe::17"),
            (r#"For="192.0.2.60:8080""#, "192.0.2.60:8080"),
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("proto=https; for=192.0.2.60", "192.0.2.60"),
            (r#"for="192.0.2.60:_hidden""#, "192.0.2.60"),
            (r#"for=192.0.2.60;host="a,b;c""#, "192.0.2.60"),
            (
                r#"for=192.0.2.43, for="[2001:db8:cafe::17]""#,
                "2001:db8:cafe::17",
            ),
            (r#"for="[::ffff:192.0.2.1]""#, "192.0.2.1"),
        ] {
            assert_eq!(
                client(PROXY, &[("forwarded", value)], TRUSTED),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn x_forwarded_for_ports_and_brackets() {
        for (value, expected) in [
            ("192.0.2.60:8080", "192.0.2.60:8080"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]:443", "[2001:db8::1]:443"),
            ("  192.0.2.60  ", "192.0.2.60"),
        ] {
            assert_eq!(
                client(PROXY, &[("x-forwarded-for", value)], TRUSTED),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn the_rightmost_untrusted_hop_wins_and_spoofed_entries_are_ignored() {
        // The client made up the leftmost entries; our proxy appended the real one.
        assert_eq!(
            client(
                PROXY,
                &[("x-forwarded-for", "1.1.1.1, 10.0.0.9, 203.0.113.7")],
                TRUSTED
            ),
            "203.0.113.7"
        );
        // Two trusted proxies in a row: skip both.
        assert_eq!(
            client(
                PROXY,
                &[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.3")],
                TRUSTED
            ),
            "203.0.113.7"
        );
        assert_eq!(
            client(
                PROXY,
                &[(
                    "forwarded",
                    "for=1.1.1.1, for=203.0.113.7;by=10.0.0.3, for=10.0.0.3"
                )],
                TRUSTED
            ),
            "203.0.113.7"
        );
        // Split over two header lines, in order.
        assert_eq!(
            client(
                PROXY,
                &[
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "203.0.113.7")
                ],
                TRUSTED
            ),
            "203.0.113.7"
        );
        // Every hop trusted: a user on the proxies' own network.
        assert_eq!(
            client(PROXY, &[("x-forwarded-for", "10.0.0.7, 10.0.0.3")], TRUSTED),
            "10.0.0.7"
        );
        // A spoofed entry beyond a hidden one is never reached.
        assert_eq!(
            client(PROXY, &[("forwarded", "for=1.1.1.1, for=unknown")], TRUSTED),
            PROXY
        );
    }

    #[test]
    fn both_headers_must_agree() {
        // nginx appends to X-Forwarded-For and passes the client's Forwarded on.
        assert_eq!(
            client(
                PROXY,
                &[
                    ("forwarded", "for=1.1.1.1"),
                    ("x-forwarded-for", "203.0.113.7")
                ],
                TRUSTED
            ),
            PROXY
        );
        assert_eq!(
            client(
                PROXY,
                &[
                    ("forwarded", r#"for="203.0.113.7:4000""#),
                    ("x-forwarded-for", "203.0.113.7")
                ],
                TRUSTED
            ),
            "203.0.113.7:4000"
        );
    }

    #[test]
    fn hidden_and_malformed_entries_fall_back_to_the_proxy() {
        for (header, value) in [
            ("forwarded", "for=unknown"),
            ("forwarded", "for=_hidden"),
            ("forwarded", "proto=https"),
            ("forwarded", r#"for="[2001:db8::1"#),
            ("forwarded", "for=[2001:db8::1]"),
            ("forwarded", "for=2001:db8::1"),
            ("forwarded", "for"),
            ("forwarded", "for=1.2.3.4 junk"),
            ("forwarded", ""),
            ("x-forwarded-for", "not-an-ip"),
            ("x-forwarded-for", "203.0.113.7, "),
            ("x-forwarded-for", "203.0.113.7:99999"),
            ("x-forwarded-for", "[2001:db8::1]x"),
            ("x-forwarded-for", ""),
        ] {
            assert_eq!(
                client(PROXY, &[(header, value)], TRUSTED),
                PROXY,
                "{header}: {value}"
            );
        }
    }
}
