//! The rules of a web forward's requests, without sockets: which forward a path names,
//! the key in the first link, the forward's cookie, which requests other pages may send,
//! and what of a request or an answer must not pass the proxy. Unit tests below, one rule each.

use axum::http::Method;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use subtle::ConstantTimeEq;

use crate::config::is_web_forward_id;

/// The query parameter of the first link that carries the forward's key.
pub const KEY_PARAM: &str = "tabtunnel_key";

/// Where path mode serves forward `id`: `/f/<id>`.
pub fn path_prefix(id: &str) -> String {
    format!("/f/{id}")
}

/// A path under `/f/` in path mode.
#[derive(Debug, PartialEq, Eq)]
pub enum PathTarget<'a> {
    /// `/f/<id>`: redirected to `/f/<id>/`, so the app's relative links resolve inside.
    Bare(&'a str),
    /// `/f/<id>/rest`: `rest` (from its `/`) goes to the app.
    Inside { id: &'a str, rest: &'a str },
}

/// The forward a path names in path mode, if it is `/f/<id>` or starts with `/f/<id>/`.
pub fn path_target(path: &str) -> Option<PathTarget<'_>> {
    let after = path.strip_prefix("/f/")?;
    let (id, rest) = match after.find('/') {
        Some(i) => (&after[..i], Some(&after[i..])),
        None => (after, None),
    };
    if !is_web_forward_id(id) {
        return None;
    }
    Some(match rest {
        Some(rest) => PathTarget::Inside { id, rest },
        None => PathTarget::Bare(id),
    })
}

/// The forward's cookie name: one per forward in path mode, where every forward shares
/// the relay's origin (each scoped to its own path as well); one name in subdomain mode,
/// where the cookie is host-only on the forward's own name.
pub fn cookie_name(path_mode_id: Option<&str>) -> String {
    match path_mode_id {
        Some(id) => format!("tabtunnel_fwd_{id}"),
        None => "tabtunnel_fwd".into(),
    }
}

/// The `Set-Cookie` value the key link answers with: host-only (no Domain), not
/// for scripts, sent on top-level navigations from other sites but not on their
/// subrequests or form posts, and `Secure` under TLS.
pub fn set_cookie(name: &str, value: &str, path: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax{secure}")
}

/// Whether any cookie called `name` in the request carries `value`, compared in
/// constant time. Any of several: a sibling app in subdomain mode may have set a cookie
/// of the same name on the parent domain, and must not be able to shadow this one.
pub fn holds_cookie(headers: &HeaderMap, name: &str, value: &str) -> bool {
    let mut found = false;
    for pair in cookies(headers) {
        if let Some((n, v)) = pair.split_once('=')
            && n.trim() == name
            && !v.trim().is_empty()
        {
            found |= bool::from(v.trim().as_bytes().ct_eq(value.as_bytes()));
        }
    }
    found
}

/// Whether `presented` (a link's key) is the forward's `key`, in constant time.
pub fn key_matches(presented: &str, key: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(key.as_bytes()))
}

/// Why a request that acts on the forward was refused: another page sent it.
#[derive(Debug, PartialEq, Eq)]
pub enum ForeignSender {
    /// Its `Origin` is not the forward's own (the value as sent).
    Origin(String),
    /// Its `Sec-Fetch-Site` says `same-site` or `cross-site`.
    Site(String),
}

/// Whether a request that acts on the forward (a WebSocket, or any method but GET, HEAD
/// and OPTIONS) comes from a page of another origin than the forward's own
/// (`own_origin`, `scheme://host[:port]` as the browser sees it). The browser sends the
/// forward's `SameSite=Lax` cookie on such requests from any page of the same *site*, and
/// every forward under the domain is one site: a sibling forward's page could otherwise
/// post into this one, or open a WebSocket and read its answers (WebSockets have no
/// CORS). GETs pass: what a page of another origin reads of them is CORS's and the app's
/// business. A request without `Origin` or `Sec-Fetch-Site` (a client that is not a
/// browser, an old browser's GET) passes too: no page sent it on this browser's behalf.
pub fn foreign_sender(
    method: &Method,
    headers: &HeaderMap,
    own_origin: &str,
) -> Option<ForeignSender> {
    let acts =
        is_upgrade(headers) || ![Method::GET, Method::HEAD, Method::OPTIONS].contains(method);
    if !acts {
        return None;
    }
    for origin in headers.get_all(header::ORIGIN) {
        match origin.to_str() {
            Ok(origin) if origin.eq_ignore_ascii_case(own_origin) => {}
            Ok(origin) => return Some(ForeignSender::Origin(origin.to_owned())),
            Err(_) => return Some(ForeignSender::Origin("(not text)".into())),
        }
    }
    headers
        .get_all("sec-fetch-site")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|site| {
            ["same-site", "cross-site"]
                .iter()
                .any(|s| site.trim().eq_ignore_ascii_case(s))
        })
        .map(|site| ForeignSender::Site(site.to_owned()))
}

fn cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
}

/// Removes every cookie called `name` from the request's Cookie headers (joined into
/// one, as HTTP/1.1 wants), so the app never sees the forward's cookie.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<&str> = cookies(headers)
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').is_none_or(|(n, _)| n.trim() != name))
        .collect();
    let joined = kept.join("; ");
    headers.remove(header::COOKIE);
    if !joined.is_empty()
        && let Ok(value) = HeaderValue::from_str(&joined)
    {
        headers.insert(header::COOKIE, value);
    }
}

/// Splits the key out of a query: the key (if the query has one) and the query
/// without it (`None` when nothing is left). Only the first key counts; every
/// `tabtunnel_key` parameter is removed.
pub fn take_key(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(query) = query else {
        return (None, None);
    };
    let mut key = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((KEY_PARAM, value)) => {
                key.get_or_insert_with(|| value.to_owned());
            }
            None if pair == KEY_PARAM => {
                key.get_or_insert_with(String::new);
            }
            _ => rest.push(pair),
        }
    }
    let rest = (!rest.is_empty()).then(|| rest.join("&"));
    (key, rest)
}

/// Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection, not the message,
/// so a proxy drops them, and the headers the Connection header names. `Upgrade` and
/// `Connection: upgrade` are kept when the request is an upgrade: the app must see them.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// What the proxy tells the app about the request, as reverse proxies do.
#[derive(Debug)]
pub struct Forwarded<'a> {
    /// The browser's address (behind trusted proxies, the client they name).
    pub client: std::net::IpAddr,
    /// `https` when the browser reached the relay over https.
    pub proto: &'static str,
    /// The path mode's `/f/<id>`, which the app's paths no longer carry.
    pub prefix: Option<&'a str>,
}

/// Replaces whatever the browser sent as `Forwarded`, `X-Forwarded-*` or `X-Real-IP`
/// with what the relay knows: an app behind a local proxy often believes these, and a
/// browser could name any address there. The Host header is the browser's, unchanged.
pub fn set_forwarded(headers: &mut HeaderMap, forwarded: &Forwarded<'_>) {
    for name in [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-prefix",
        "x-real-ip",
    ] {
        headers.remove(name);
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("x-forwarded-for", &forwarded.client.to_string());
    set("x-forwarded-proto", forwarded.proto);
    if let Some(prefix) = forwarded.prefix {
        set("x-forwarded-prefix", prefix);
    }
}

/// Whether a request asks to switch protocols (a WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

/// In path mode an app's redirect to an absolute path (`Location: /login`) would leave
/// the forward for the relay's own page: it is put back under the forward's prefix.
/// Other locations (relative, or with a scheme or host) pass unchanged.
pub fn rewrite_location(location: &str, prefix: &str) -> Option<String> {
    (location.starts_with('/') && !location.starts_with("//"))
        .then(|| format!("{prefix}{location}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef";

    #[test]
    fn paths_name_a_forward_only_in_the_relays_own_form() {
        assert_eq!(
            path_target("/f/0123456789abcdef"),
            Some(PathTarget::Bare(ID))
        );
        assert_eq!(
            path_target("/f/0123456789abcdef/"),
            Some(PathTarget::Inside { id: ID, rest: "/" })
        );
        assert_eq!(
            path_target("/f/0123456789abcdef/a/b?c"),
            Some(PathTarget::Inside {
                id: ID,
                rest: "/a/b?c"
            })
        );
        for other in [
            "/",
            "/f/",
            "/f",
            "/f/0123456789ABCDEF/",
            "/f/0123456789abcde/",
            "/f/0123456789abcdef0/",
            "/f/../x",
            "/fx/0123456789abcdef/",
            "/index.html",
        ] {
            assert_eq!(path_target(other), None, "{other}");
        }
    }

    #[test]
    fn the_key_is_taken_out_of_the_query_and_the_rest_kept() {
        assert_eq!(take_key(None), (None, None));
        assert_eq!(take_key(Some("a=1")), (None, Some("a=1".into())));
        assert_eq!(
            take_key(Some("tabtunnel_key=abc")),
            (Some("abc".into()), None)
        );
        assert_eq!(
            take_key(Some("a=1&tabtunnel_key=abc&b=2&tabtunnel_key=zzz")),
            (Some("abc".into()), Some("a=1&b=2".into()))
        );
        assert_eq!(take_key(Some("tabtunnel_key")), (Some(String::new()), None));
        assert_eq!(
            take_key(Some("xtabtunnel_key=1")),
            (None, Some("xtabtunnel_key=1".into()))
        );
    }

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for c in cookies {
            headers.append(header::COOKIE, HeaderValue::from_str(c).unwrap());
        }
        headers
    }

    #[test]
    fn the_cookie_must_carry_its_value_under_its_own_name() {
        let cap = "c".repeat(64);
        let h = headers(&[&format!("a=1; tabtunnel_fwd={cap}")]);
        assert!(holds_cookie(&h, "tabtunnel_fwd", &cap));
        assert!(!holds_cookie(&h, "tabtunnel_fwd_x", &cap));
        assert!(!holds_cookie(&h, "tabtunnel_fwd", &"d".repeat(64)));
        // A shadowing cookie of the same name (tossed by a sibling app) does not hide it.
        let h = headers(&["tabtunnel_fwd=evil", &format!("tabtunnel_fwd={cap}")]);
        assert!(holds_cookie(&h, "tabtunnel_fwd", &cap));
        // A prefix of the value is not the value.
        let h = headers(&[&format!("tabtunnel_fwd={}", &cap[..63])]);
        assert!(!holds_cookie(&h, "tabtunnel_fwd", &cap));
        assert!(!holds_cookie(&headers(&[]), "tabtunnel_fwd", &cap));
        assert!(!holds_cookie(
            &headers(&["tabtunnel_fwd="]),
            "tabtunnel_fwd",
            ""
        ));
    }

    #[test]
    fn the_forwards_cookie_is_stripped_and_the_apps_kept() {
        let mut h = headers(&["a=1; tabtunnel_fwd=secret", "b=2;tabtunnel_fwd=x"]);
        strip_cookie(&mut h, "tabtunnel_fwd");
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
        let mut h = headers(&["tabtunnel_fwd=secret"]);
        strip_cookie(&mut h, "tabtunnel_fwd");
        assert!(!h.contains_key(header::COOKIE));
    }

    #[test]
    fn the_cookie_is_host_only_http_only_and_lax() {
        let c = set_cookie("tabtunnel_fwd", "k", "/", false);
        assert_eq!(c, "tabtunnel_fwd=k; Path=/; HttpOnly; SameSite=Lax");
        assert!(!c.to_ascii_lowercase().contains("domain"));
        let c = set_cookie("tabtunnel_fwd_x", "k", "/f/x/", true);
        assert!(
            c.ends_with("; Path=/f/x/; HttpOnly; SameSite=Lax; Secure"),
            "{c}"
        );
    }

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_keep_theirs() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(!is_upgrade(&h));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));

        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
    }

    #[test]
    fn the_app_is_told_what_the_relay_knows_not_what_the_browser_claims() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("x-forwarded-for", "10.9.9.9"),
            ("forwarded", "for=10.9.9.9"),
            ("x-real-ip", "10.9.9.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-prefix", "/admin"),
        ] {
            h.insert(name, HeaderValue::from_static(value));
        }
        let client = "192.0.2.7".parse().unwrap();
        set_forwarded(
            &mut h,
            &Forwarded {
                client,
                proto: "http",
                prefix: None,
            },
        );
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        set_forwarded(
            &mut h,
            &Forwarded {
                client,
                proto: "https",
                prefix: Some("/f/0123456789abcdef"),
            },
        );
        assert_eq!(h["x-forwarded-prefix"], "/f/0123456789abcdef");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn only_the_forwards_own_origin_may_post_or_open_websockets() {
        let own = "http://f-0123456789abcdef.tunnel.example.edu:8080";
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.append(*name, HeaderValue::from_static(value));
            }
            h
        };
        let sibling = "http://f-fedcba9876543210.tunnel.example.edu:8080";
        let ws = [("connection", "Upgrade"), ("upgrade", "websocket")];
        let origin = |o: &str| Some(ForeignSender::Origin(o.into()));
        // Acting requests from another origin, or from a page of another site.
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let h = with(&[("origin", sibling)]);
            assert_eq!(
                foreign_sender(&method, &h, own),
                origin(sibling),
                "{method}"
            );
        }
        let h = with(&[ws[0], ws[1], ("origin", sibling)]);
        assert_eq!(foreign_sender(&Method::GET, &h, own), origin(sibling));
        for other in [
            "null",
            "https://f-0123456789abcdef.tunnel.example.edu:8080",
            "http://f-0123456789abcdef.tunnel.example.edu",
            "http://f-0123456789abcdef.tunnel.example.edu:8080/",
        ] {
            let h = with(&[("origin", other)]);
            assert_eq!(foreign_sender(&Method::POST, &h, own), origin(other));
        }
        for site in ["same-site", "cross-site", "Cross-Site"] {
            let h = with(&[("sec-fetch-site", site)]);
            assert_eq!(
                foreign_sender(&Method::POST, &h, own),
                Some(ForeignSender::Site(site.into()))
            );
            let h = with(&[ws[0], ws[1], ("origin", own), ("sec-fetch-site", site)]);
            assert!(foreign_sender(&Method::GET, &h, own).is_some(), "{site}");
        }
        // Two Origins: each must be the forward's own.
        let h = with(&[("origin", own), ("origin", sibling)]);
        assert_eq!(foreign_sender(&Method::POST, &h, own), origin(sibling));
        // The forward's own pages, clients that send neither header, and reads pass.
        let upper = "HTTP://F-0123456789ABCDEF.TUNNEL.EXAMPLE.EDU:8080";
        for pairs in [
            vec![("origin", own), ("sec-fetch-site", "same-origin")],
            vec![("origin", upper)],
            vec![("sec-fetch-site", "none")],
            vec![],
        ] {
            let h = with(&pairs);
            assert_eq!(foreign_sender(&Method::POST, &h, own), None, "{pairs:?}");
            let mut h = h;
            h.extend(with(&ws));
            assert_eq!(foreign_sender(&Method::GET, &h, own), None, "{pairs:?}");
        }
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            let h = with(&[("origin", sibling), ("sec-fetch-site", "cross-site")]);
            assert_eq!(foreign_sender(&method, &h, own), None, "{method}");
        }
    }

    #[test]
    fn absolute_path_redirects_stay_under_the_prefix() {
        let p = "/f/0123456789abcdef";
        assert_eq!(
            rewrite_location("/login?x=1", p).as_deref(),
            Some("/f/0123456789abcdef/login?x=1")
        );
        assert_eq!(rewrite_location("login", p), None);
        assert_eq!(rewrite_location("//evil.example/", p), None);
        assert_eq!(rewrite_location("https://example.com/", p), None);
    }
}
