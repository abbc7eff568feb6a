//! Web forwards: a forward opened in a browser tab through the relay's own HTTP(S)
//! address, for users who can reach nothing else on the relay host.
//!
//! - By name (`web_forward_domain`): forward `<id>` is served at `f-<id>.<domain>`, an
//!   origin of its own, so the app works at `/` and cannot touch the relay's page.
//! - By path (`web_forward_paths`, off unless the operator turns it on): at
//!   `/f/<id>/` on the relay's names, the prefix removed before the app sees the path.
//!   The app then shares the relay page's origin; see the README for what that allows.
//!
//! Each forward has a key (256 random bits) that only its tab learns, in the URL of a
//! `WebForward` frame, and that lets in one browser: the first visit with it gets a
//! host-only, HttpOnly, SameSite=Lax cookie (another 256 random bits) and a redirect to
//! the same URL without the key, and spends the key; a browser that holds the cookie is
//! redirected again, any other refused. Every other request needs the cookie (403
//! without), and one that acts (a WebSocket, a POST) must come from the forward's own
//! origin. Neither key nor cookie reaches the app. Closing the forward or its
//! session drops its [`Registration`], and its URL answers 404 from then on. Requests
//! are proxied with hyper into the forward: each connection is opened through the
//! forward's session like a TCP client of its listener (`proxy`).

mod proxy;
mod registry;
pub mod request;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::config::WebForwardMode;
use crate::listen::Accepted;

pub use proxy::WebProxy;
pub use registry::{Registration, WebForwards};

/// The outermost layer of the relay's routes: a request for a web forward (by its name,
/// or by its path on one of the relay's names) goes to the proxy; every other passes on
/// to the Host check and the relay's routes.
pub async fn dispatch(State(proxy): State<WebProxy>, request: Request, next: Next) -> Response {
    let Some(mode) = proxy.config.web_forward_mode() else {
        return next.run(request).await;
    };
    if request
        .headers()
        .get_all(header::HOST)
        .iter()
        .nth(1)
        .is_some()
    {
        // Which one names the forward? Neither: the guard refuses it (400), as it does
        // for the relay's own routes.
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .map(str::to_owned);
    match mode {
        WebForwardMode::Subdomain(_) => {
            if let Some(host) = host.as_deref()
                && let Some(id) = proxy.config.web_forward_host(host)
            {
                return proxy.serve(&id, host, false, request).await;
            }
        }
        WebForwardMode::Path => {
            // Only on the relay's own names: others get the guard's 421.
            if let Some(host) = host.as_deref()
                && proxy.config.host_allowed(host)
            {
                match request::path_target(request.uri().path()) {
                    Some(request::PathTarget::Inside { id, .. }) => {
                        let id = id.to_owned();
                        return proxy.serve(&id, host, true, request).await;
                    }
                    Some(request::PathTarget::Bare(id)) => {
                        let query = request.uri().query().map(|q| format!("?{q}"));
                        let location = format!("/f/{id}/{}", query.unwrap_or_default());
                        let mut response = (
                            StatusCode::MOVED_PERMANENTLY,
                            [(header::LOCATION, location)],
                        )
                            .into_response();
                        crate::web_guard::add_security_headers(response.headers_mut());
                        return response;
                    }
                    None => {}
                }
            }
        }
    }
    next.run(request).await
}

/// Where a session's forwards are offered as web apps: the book, and the scheme and
/// host the tab reached the relay by (`https`, `relay.example.edu:8443`), from which
/// each forward's URL is made.
#[derive(Debug, Clone)]
pub struct Offer {
    pub forwards: Arc<WebForwards>,
    pub scheme: &'static str,
    /// The relay's own name and port as the tab's WebSocket request named them.
    pub host: String,
    /// The subdomain mode's domain; `None` in path mode.
    pub domain: Option<String>,
}

impl Offer {
    /// The offer for a session whose WebSocket came with `host` (its Host header) and
    /// `origin`: web forwards in the config's mode, or `None` when they are off. The
    /// scheme is https under TLS, else the page's own (a TLS-terminating proxy).
    pub fn for_session(
        config: &Config,
        forwards: &Arc<WebForwards>,
        tls: bool,
        host: Option<&str>,
        origin: Option<&str>,
    ) -> Option<Self> {
        let mode = config.web_forward_mode()?;
        let host = host?.to_owned();
        let scheme = if tls || origin.is_some_and(|o| o.starts_with("https://")) {
            "https"
        } else {
            "http"
        };
        Some(Self {
            forwards: forwards.clone(),
            scheme,
            host,
            domain: match mode {
                WebForwardMode::Subdomain(domain) => Some(domain.to_owned()),
                WebForwardMode::Path => None,
            },
        })
    }

    /// Enters forward `forward` of the session whose clients queue on `accepted`.
    pub(crate) fn register(&self, forward: u32, accepted: mpsc::Sender<Accepted>) -> Registration {
        self.forwards.register(self.opener(forward, accepted))
    }

    /// Points a parked forward's `registration` at forward `forward` of the session that
    /// resumed it: the same URL and key, now served through the new session.
    pub(crate) fn reopen(
        &self,
        registration: &Registration,
        forward: u32,
        accepted: mpsc::Sender<Accepted>,
    ) {
        registration.reopen(self.opener(forward, accepted));
    }

    fn opener(&self, forward: u32, accepted: mpsc::Sender<Accepted>) -> registry::Opener {
        registry::Opener {
            forward,
            accepted,
            secure: self.scheme == "https",
        }
    }

    /// The forward's first link, with its key.
    pub fn url(&self, registration: &Registration) -> String {
        let (id, key) = (registration.id(), registration.key());
        let param = request::KEY_PARAM;
        match &self.domain {
            Some(domain) => {
                // The port the tab reached the relay on, if it named one.
                let port = port_of(&self.host)
                    .map(|p| format!(":{p}"))
                    .unwrap_or_default();
                format!("{}://f-{id}.{domain}{port}/?{param}={key}", self.scheme)
            }
            None => format!("{}://{}/f/{id}/?{param}={key}", self.scheme, self.host),
        }
    }
}

/// Warnings for the operator at start: names of the relay (`public_host`,
/// `allowed_hosts`) that end in the same two labels as `web_forward_domain`. An app under
/// the domain can set cookies for every parent domain up to the registrable one: it could
/// fill the relay page's requests with cookies until the relay answers 431, evict the
/// cookies other forwards rely on, or plant cookies on sibling sites. Two labels is a
/// guess at the registrable domain (`example.edu`; for `ac.uk`-style suffixes it warns
/// more than needed, which is the safe side of a guess).
pub fn shared_site_warnings(config: &Config) -> Vec<String> {
    let Some(domain) = config.web_forward_domain.as_deref() else {
        return Vec::new();
    };
    let site = |name: &str| -> Option<String> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.parse::<std::net::IpAddr>().is_ok() {
            return None;
        }
        let labels: Vec<&str> = name.rsplit('.').take(2).collect();
        Some(labels.into_iter().rev().collect::<Vec<_>>().join("."))
    };
    let Some(forwards_site) = site(domain) else {
        return Vec::new();
    };
    let names = config
        .public_host
        .iter()
        .map(|h| ("public_host", h))
        .chain(config.allowed_hosts.iter().map(|h| ("allowed_hosts", h)));
    names
        .filter(|(_, name)| site(name).as_deref() == Some(forwards_site.as_str()))
        .map(|(key, name)| {
            format!(
                "web_forward_domain {domain} and {key} {name} both end in {forwards_site}: if that is their registrable domain, every forwarded app can set cookies for the relay's page (enough of them and the relay answers 431) and for other sites under it, and all forwards are one site; serve forwards under a registrable domain of their own (see the README, \"By name\")"
            )
        })
        .collect()
}

/// The port of a Host header value (`name:port`, `[v6]:port`), if it has one.
fn port_of(host: &str) -> Option<&str> {
    let after = match host.rfind(']') {
        Some(i) => &host[i + 1..],
        None => host,
    };
    let (_, port) = after.rsplit_once(':')?;
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())).then_some(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(domain: Option<&str>, host: &str) -> (Offer, Registration) {
        let forwards = Arc::new(WebForwards::default());
        let offer = Offer {
            forwards: forwards.clone(),
            scheme: "https",
            host: host.into(),
            domain: domain.map(str::to_owned),
        };
        let registration = offer.register(1, mpsc::channel(1).0);
        (offer, registration)
    }

    #[test]
    fn urls_carry_the_id_the_key_and_the_tabs_port() {
        let (o, r) = offer(Some("tunnel.example.edu"), "relay.example.edu");
        let (id, key) = (r.id().to_owned(), r.key().to_owned());
        assert_eq!(
            o.url(&r),
            format!("https://f-{id}.tunnel.example.edu/?tabtunnel_key={key}")
        );
        let (o, r) = offer(Some("tabtunnel.localhost"), "127.0.0.1:8080");
        assert!(
            o.url(&r)
                .starts_with(&format!("https://f-{}.tabtunnel.localhost:8080/?", r.id()))
        );
        let (o, r) = offer(None, "[::1]:8080");
        assert_eq!(
            o.url(&r),
            format!("https://[::1]:8080/f/{}/?tabtunnel_key={}", r.id(), r.key())
        );
    }

    #[test]
    fn relay_names_sharing_the_forwards_last_two_labels_are_warned_about() {
        let config = |domain: Option<&str>, public: Option<&str>, allowed: &[&str]| Config {
            web_forward_domain: domain.map(str::to_owned),
            public_host: public.map(str::to_owned),
            allowed_hosts: allowed.iter().map(|h| (*h).to_owned()).collect(),
            ..Config::default()
        };
        let warned = |c: &Config| shared_site_warnings(c).len();
        // The README's old layout: page and forwards under example.edu.
        let c = config(
            Some("tunnel.example.edu"),
            Some("relay.example.edu"),
            &["Other.EXAMPLE.edu.", "relay.example-tunnel.edu"],
        );
        let notes = shared_site_warnings(&c);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("public_host relay.example.edu"),
            "{notes:?}"
        );
        assert!(notes[0].contains("end in example.edu"), "{notes:?}");
        assert!(
            notes[1].contains("allowed_hosts Other.EXAMPLE.edu."),
            "{notes:?}"
        );
        // The domain itself a registrable one, the page under it.
        assert_eq!(
            warned(&config(Some("example.edu"), None, &["relay.example.edu"])),
            1
        );
        // A registrable domain of their own; addresses; no web forwards by name.
        assert_eq!(
            warned(&config(
                Some("example-tunnel.edu"),
                Some("relay.example.edu"),
                &["example.edu", "127.0.0.1", "::1"]
            )),
            0
        );
        assert_eq!(
            warned(&config(Some("tabtunnel.localhost"), None, &["localhost"])),
            0
        );
        assert_eq!(warned(&config(None, Some("relay.example.edu"), &[])), 0);
    }

    #[test]
    fn only_the_sessions_mode_gives_an_offer() {
        let forwards = Arc::new(WebForwards::default());
        let off = Config::default();
        assert!(Offer::for_session(&off, &forwards, false, Some("h"), None).is_none());
        let paths = Config {
            web_forward_paths: true,
            ..Config::default()
        };
        let o =
            Offer::for_session(&paths, &forwards, false, Some("h:1"), Some("https://h:1")).unwrap();
        assert_eq!((o.scheme, o.domain.as_deref()), ("https", None));
        let o =
            Offer::for_session(&paths, &forwards, false, Some("h:1"), Some("http://h:1")).unwrap();
        assert_eq!(o.scheme, "http");
        let o = Offer::for_session(&paths, &forwards, true, Some("h:1"), None).unwrap();
        assert_eq!(o.scheme, "https");
    }

    #[test]
    fn the_cookie_is_secure_whenever_the_url_is_https() {
        let forwards = Arc::new(WebForwards::default());
        let paths = Config {
            web_forward_paths: true,
            ..Config::default()
        };
        // Behind a TLS-terminating proxy: no TLS here, but the page came over https.
        for (origin, secure) in [("https://h", true), ("http://h", false)] {
            let offer =
                Offer::for_session(&paths, &forwards, false, Some("h"), Some(origin)).unwrap();
            let registration = offer.register(1, mpsc::channel(1).0);
            let access = forwards.access(registration.id()).unwrap();
            assert_eq!(access.secure, secure, "{origin}");
        }
    }
}
