//! The HTTP side of web forwards: the one-time key link and the cookie, the other pages'
//! requests refused, the bounds, and the proxy itself. Requests go through hyper-util's client (keep-alive pooling) whose
//! connector opens a forwarded connection through the forward's session, exactly as a
//! TCP client of the forward's listener would (the session admits it under the same
//! limits, with the browser's address as its source).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::DuplexStream;
use tracing::debug;

use super::registry::{Busy, Slot, WebForwards};
use super::request::{self as rules, ForeignSender, PathTarget};
use crate::ClientAddr;
use crate::config::Config;
use crate::connection::Client as ForwardClient;
use crate::listen::Accepted;
use crate::metrics::Metrics;

/// What the proxy needs: the config, the book of web forwards, and the client pool.
#[derive(Debug, Clone)]
pub struct WebProxy {
    pub(super) config: Arc<Config>,
    forwards: Arc<WebForwards>,
    metrics: Arc<Metrics>,
    client: ForwardClientPool,
}

impl WebProxy {
    pub fn new(config: Arc<Config>, forwards: Arc<WebForwards>, metrics: Arc<Metrics>) -> Self {
        Self {
            client: client(forwards.clone()),
            config,
            forwards,
            metrics,
        }
    }
}

/// Bytes buffered in the pipe between the proxy and a forwarded connection, each way.
const PIPE_BUFFER: usize = 64 * 1024;
/// How long an unused kept-alive connection to a forward stays open for the next request.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Unused kept-alive connections per forward and address: each holds one of the
/// forward's connections (`connections_per_forward`) and an SSH channel.
const POOL_IDLE_PER_KEY: usize = 8;

/// hyper-util's client over forwarded connections.
pub(crate) type ForwardClientPool = Client<Connector, Body>;

pub(crate) fn client(forwards: Arc<WebForwards>) -> ForwardClientPool {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_IDLE_PER_KEY)
        // The request keeps the browser's Host: the app sees the name it is served at.
        .set_host(false)
        .build(Connector { forwards })
}

/// The pool keys connections by URI authority, which the proxy writes as
/// `<forward id>-<client address in hex>`: a kept-alive connection serves only the
/// forward and address it was opened for (admitted by that address's rules).
fn authority(id: &str, ip: IpAddr) -> String {
    let octets = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let hex: String = octets.iter().map(|b| format!("{b:02x}")).collect();
    format!("{id}-{hex}")
}

fn parse_authority(authority: &str) -> Option<(&str, IpAddr)> {
    let (id, hex) = authority.split_once('-')?;
    if hex.len() != 32 {
        return None;
    }
    let bits = u128::from_str_radix(hex, 16).ok()?;
    Some((id, std::net::Ipv6Addr::from(bits).to_canonical()))
}

/// Opens a forwarded connection through the forward's session, as its connector.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    forwards: Arc<WebForwards>,
}

/// Why no connection to a forward could be opened; the proxy answers with the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotOpened(String);

impl tower::Service<Uri> for Connector {
    type Response = PipeIo;
    type Error = NotOpened;
    type Future = Pin<Box<dyn Future<Output = Result<PipeIo, NotOpened>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), NotOpened>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let forwards = self.forwards.clone();
        Box::pin(async move {
            let closed = || NotOpened("this forward is closed".into());
            let (id, ip) = uri
                .authority()
                .and_then(|a| parse_authority(a.as_str()))
                .ok_or_else(closed)?;
            let opener = forwards.opener(id).ok_or_else(closed)?;
            let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
            let (admitted, answer) = tokio::sync::oneshot::channel();
            opener
                .accepted
                .send(Accepted {
                    forward: opener.forward,
                    stream: ForwardClient::Web(theirs),
                    peer: SocketAddr::new(ip, 0),
                    admitted: Some(admitted),
                })
                .await
                .map_err(|_| closed())?;
            match answer.await {
                Ok(Ok(())) => Ok(PipeIo(TokioIo::new(ours))),
                Ok(Err(why)) => Err(NotOpened(why)),
                Err(_) => Err(closed()),
            }
        })
    }
}

/// The proxy's end of a forwarded connection, as hyper's client wants it.
#[derive(Debug)]
pub(crate) struct PipeIo(TokioIo<DuplexStream>);

impl Connection for PipeIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for PipeIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for PipeIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A response body that holds its request's place until the body ends or is dropped.
struct Held {
    body: Incoming,
    _slot: Slot,
}

impl hyper::body::Body for Held {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An answer the relay itself gives for a web forward, with the relay's security
/// headers (the app's own answers keep the app's headers). `title` and `text` are
/// plain text: escaped, so a text that ever quotes the request (or the app's answer)
/// cannot put markup on the forward's origin.
fn relay_answer(status: StatusCode, title: &str, text: &str) -> Response {
    let (title, text) = (escape_html(title), escape_html(text));
    let page = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>{title}</title><h1>{title}</h1><p>{text}</p>\n"
    );
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response();
    let headers = response.headers_mut();
    crate::web_guard::add_security_headers(headers);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Text as HTML text or attribute content. Five characters: no crate in the tree
/// does it, and one for this alone would weigh more than the function.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Longest piece of a refused request's Origin repeated in the answer.
const SHOWN_ORIGIN_LEN: usize = 80;

fn foreign(sender: &ForeignSender) -> Response {
    let from = match sender {
        ForeignSender::Origin(origin) => {
            let shown: String = origin.chars().take(SHOWN_ORIGIN_LEN).collect();
            format!("This one came from {shown}.")
        }
        ForeignSender::Site(site) => {
            format!("This one came from a page of another site (Sec-Fetch-Site: {site}).")
        }
    };
    relay_answer(
        StatusCode::FORBIDDEN,
        "Refused: sent by another page",
        &format!(
            "A web forward takes WebSockets, and requests other than GET, HEAD and OPTIONS, only from its own pages: the browser would send this forward's cookie with them from another page too, on that page's behalf. {from}"
        ),
    )
}

fn closed() -> Response {
    relay_answer(
        StatusCode::NOT_FOUND,
        "This forward is closed",
        "This web forward is closed: the tab that opened it closed the forward or its session ended (or the address is wrong). Open the forward again from that tab.",
    )
}

impl WebProxy {
    /// Serves one request for web forward `id`, which came for `host` (its one Host);
    /// `path_mode` when it came as `/f/<id>/`.
    pub(crate) async fn serve(
        &self,
        id: &str,
        host: &str,
        path_mode: bool,
        mut request: Request,
    ) -> Response {
        let client = request
            .extensions()
            .get::<ClientAddr>()
            .copied()
            .map(|c| c.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let Some(access) = self.forwards.access(id) else {
            self.metrics.refused("web-closed");
            return closed();
        };
        let secure = access.secure;
        // Before the key too: another page's post must not spend it.
        let own_origin = format!("{}://{host}", if secure { "https" } else { "http" });
        if let Some(sender) =
            rules::foreign_sender(request.method(), request.headers(), &own_origin)
        {
            self.metrics.refused("web-origin");
            debug!(?sender, "web forward request refused: sent by another page");
            return foreign(&sender);
        }
        let prefix = path_mode.then(|| rules::path_prefix(id));
        let cookie = rules::cookie_name(path_mode.then_some(id));
        let path = request.uri().path().to_owned();
        let (key, rest_query) = rules::take_key(request.uri().query());
        if let Some(key) = key {
            if !rules::key_matches(&key, &access.key) {
                self.metrics.refused("web-key");
                return relay_answer(
                    StatusCode::FORBIDDEN,
                    "This link is not valid",
                    "This link's key does not open this forward. Use the Open button of the forward in the tab that opened it.",
                );
            }
            // The same URL without the key, so it stays out of the app, its logs and the
            // Referer. The browser let in already (its tab's Open followed again) just
            // goes there; the first to come with the key is given the cookie and spends
            // the key; anyone after that is refused.
            let location = match rest_query {
                Some(query) => format!("{path}?{query}"),
                None => path.clone(),
            };
            let Ok(location) = HeaderValue::from_str(&location) else {
                return relay_answer(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "The request's path is not valid.",
                );
            };
            let set = if rules::holds_cookie(request.headers(), &cookie, &access.cookie) {
                None
            } else if self.forwards.use_key(id) {
                let cookie_path = prefix.as_deref().map_or("/".into(), |p| format!("{p}/"));
                Some(rules::set_cookie(
                    &cookie,
                    &access.cookie,
                    &cookie_path,
                    secure,
                ))
            } else {
                self.metrics.refused("web-key-used");
                return relay_answer(
                    StatusCode::FORBIDDEN,
                    "This link was used already",
                    "A web forward's link lets in one browser: the first to follow it, which keeps a cookie for the forward. This link has been followed already, and this browser does not hold that cookie. If the forward is yours, open it in the browser you first opened it in; to open it in this one, remove the forward in the tab that owns it and add it again, which gives it a new link.",
                );
            };
            let mut response = relay_answer(StatusCode::FOUND, "Opening the forward", "Opening…");
            let headers = response.headers_mut();
            headers.insert(header::LOCATION, location);
            if let Some(set) = set.and_then(|s| HeaderValue::from_str(&s).ok()) {
                headers.insert(header::SET_COOKIE, set);
            }
            return response;
        }
        if !rules::holds_cookie(request.headers(), &cookie, &access.cookie) {
            self.metrics.refused("web-cookie");
            return relay_answer(
                StatusCode::FORBIDDEN,
                "This forward is private",
                "This web forward belongs to the browser tab that opened it, and this browser has not been given its link. Open it with the forward's Open button in that tab.",
            );
        }
        let upgrade = rules::is_upgrade(request.headers());
        let key = crate::client_addr::limit_key(client);
        let slot = match self.forwards.begin(id, key, upgrade, &self.config.limits) {
            None => return closed(),
            Some(Ok(slot)) => slot,
            Some(Err(busy)) => return self.busy(busy, upgrade),
        };

        // What reaches the app: the request without the forward's cookie, hop-by-hop
        // headers or (in path mode) the prefix.
        let inner_path = match (&prefix, rules::path_target(&path)) {
            (Some(_), Some(PathTarget::Inside { rest, .. })) => rest.to_owned(),
            _ => path.clone(),
        };
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{inner_path}?{query}"),
            None => inner_path,
        };
        let Ok(uri) = format!("http://{}{path_and_query}", authority(id, client)).parse::<Uri>()
        else {
            return relay_answer(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The request's path is not valid.",
            );
        };
        let server_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        parts.uri = uri;
        parts.version = axum::http::Version::HTTP_11;
        parts.extensions = Default::default();
        rules::strip_cookie(&mut parts.headers, &cookie);
        rules::strip_hop_by_hop(&mut parts.headers, upgrade);
        rules::set_forwarded(
            &mut parts.headers,
            &rules::Forwarded {
                client,
                proto: if secure { "https" } else { "http" },
                prefix: prefix.as_deref(),
            },
        );
        let outgoing = Request::from_parts(parts, body);

        let mut response = match self.client.request(outgoing).await {
            Ok(response) => response,
            Err(err) => return self.unreachable(&err),
        };
        let (mut parts, body) = {
            if let (Some(server), StatusCode::SWITCHING_PROTOCOLS) =
                (server_upgrade, response.status())
            {
                let app = hyper::upgrade::on(&mut response);
                tokio::spawn(join_upgraded(server, app, slot));
                let (parts, _) = response.into_parts();
                (parts, Body::empty())
            } else {
                let (parts, body) = response.into_parts();
                (parts, Body::new(Held { body, _slot: slot }))
            }
        };
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        rules::strip_hop_by_hop(&mut parts.headers, switching);
        if let Some(prefix) = &prefix {
            // An app on the relay's origin must not widen its service worker's scope
            // past its own path (to the relay's page), nor redirect out of its prefix.
            parts.headers.remove("service-worker-allowed");
            if let Some(location) = parts.headers.get(header::LOCATION)
                && let Some(moved) = location
                    .to_str()
                    .ok()
                    .and_then(|l| rules::rewrite_location(l, prefix))
                && let Ok(value) = HeaderValue::from_str(&moved)
            {
                parts.headers.insert(header::LOCATION, value);
            }
        }
        Response::from_parts(parts, body)
    }

    fn busy(&self, busy: Busy, upgrade: bool) -> Response {
        let what = if upgrade { "WebSockets" } else { "requests" };
        match busy {
            Busy::Forward(most) => {
                self.metrics.refused("web-forward-busy");
                relay_answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "This forward is busy",
                    &format!(
                        "This web forward has its maximum of {most} {what} in progress; try again when some have finished."
                    ),
                )
            }
            Busy::Address(most) => {
                self.metrics.refused("web-address-busy");
                relay_answer(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests",
                    &format!(
                        "Your address has its maximum of {most} {what} in progress through this relay's web forwards; try again when some have finished."
                    ),
                )
            }
        }
    }

    /// The forward could not carry the request: refused by the session's limits, closed,
    /// or the app did not answer.
    fn unreachable(&self, err: &hyper_util::client::legacy::Error) -> Response {
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            if let Some(NotOpened(why)) = inner.downcast_ref::<NotOpened>() {
                self.metrics.refused("web-refused");
                return relay_answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The forward refused this request",
                    why,
                );
            }
            source = inner.source();
        }
        debug!("web forward request failed: {err}");
        relay_answer(
            StatusCode::BAD_GATEWAY,
            "The forwarded app did not answer",
            "The forward is open, but nothing answered at its destination: check that the app is running there and speaks HTTP.",
        )
    }
}

/// Copies both ways between the browser's upgraded connection and the app's, holding
/// the socket's place until both ends are done.
async fn join_upgraded(
    server: hyper::upgrade::OnUpgrade,
    app: hyper::upgrade::OnUpgrade,
    _slot: Slot,
) {
    let (Ok(server), Ok(app)) = tokio::join!(server, app) else {
        return;
    };
    let (mut server, mut app) = (TokioIo::new(server), TokioIo::new(app));
    if let Err(err) = tokio::io::copy_bidirectional(&mut server, &mut app).await {
        debug!("web forward upgrade ended: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_relays_pages_show_text_never_markup() {
        use http_body_util::BodyExt;
        let answer = relay_answer(
            StatusCode::FORBIDDEN,
            "<b>\"t\" & 'u'</b>",
            "<script>alert(1)</script><img src=x onerror=alert(2)>",
        );
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        let page = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            page.contains("<title>&lt;b&gt;&quot;t&quot; &amp; &#39;u&#39;&lt;/b&gt;</title>"),
            "{page}"
        );
        assert!(
            page.contains(
                "<p>&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;</p>"
            ),
            "{page}"
        );
        // The refusal that quotes the request's Origin quotes it as text, clipped.
        let evil = format!("<script>{}</script>", "x".repeat(200));
        let refused = foreign(&ForeignSender::Origin(evil));
        let body = refused.into_body().collect().await.unwrap().to_bytes();
        let page = String::from_utf8(body.to_vec()).unwrap();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("came from &lt;script&gt;xxx"), "{page}");
        assert!(!page.contains(&"x".repeat(SHOWN_ORIGIN_LEN)), "{page}");
    }

    #[test]
    fn pool_keys_carry_the_forward_and_the_address() {
        for ip in ["127.0.0.1", "::1", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            let key = authority("0123456789abcdef", ip);
            assert!(key.parse::<axum::http::uri::Authority>().is_ok(), "{key}");
            assert_eq!(parse_authority(&key), Some(("0123456789abcdef", ip)));
        }
        assert_eq!(parse_authority("0123456789abcdef"), None);
        assert_eq!(parse_authority("x-zz"), None);
    }
}
