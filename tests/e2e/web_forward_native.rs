//! Web forwards with a real HTTP client (hyper, one kept-alive connection per `Http`)
//! against the in-process relay, through the native client and a real sshd, to a real
//! web app: the capability link and its cookie, what the app sees, keep-alive, streamed
//! bodies both ways, WebSockets, the bounds, revocation, and path mode.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tabtunnel_client::{Forward, Session};
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::web_app::WebApp;
use tabtunnel_e2e::{hex, pattern, wait_for};
use tokio_tungstenite::tungstenite::Message;

const DOMAIN: &str = "tabtunnel.localhost";
const DEADLINE: Duration = Duration::from_secs(20);

/// One kept-alive HTTP/1.1 connection to the relay, every request for `host`.
struct Http {
    send: SendRequest<Full<Bytes>>,
    host: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Http {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

impl Http {
    async fn open(relay: SocketAddr, host: &str) -> Result<Self> {
        let tcp = tokio::net::TcpStream::connect(relay).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(Self {
            send,
            host: host.to_owned(),
            task,
        })
    }

    fn request(&self, method: Method, path: &str, cookie: Option<&str>) -> http::request::Builder {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        request
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer> {
        self.send.ready().await?;
        let response = tokio::time::timeout(DEADLINE, self.send.send_request(request))
            .await
            .context("an answer in time")??;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(DEADLINE, body.collect())
            .await
            .context("the body in time")??
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn get(&mut self, path: &str, cookie: Option<&str>) -> Result<Answer> {
        let request = self
            .request(Method::GET, path, cookie)
            .body(Full::default())?;
        self.send(request).await
    }
}

/// A lab whose relay offers web forwards by name under [`DOMAIN`] (or by path), a
/// session, the web app and a forward to it.
struct Setup {
    lab: Lab,
    session: Session,
    app: WebApp,
    forward: Forward,
}

async fn setup(
    paths: bool,
    limits: impl FnOnce(&mut tabtunnel_relay::config::Limits) + Send + 'static,
) -> Result<Setup> {
    let lab = Lab::builder()
        .configure(move |config| {
            if paths {
                config.web_forward_paths = true;
            } else {
                config.web_forward_domain = Some(DOMAIN.into());
            }
            limits(&mut config.limits);
        })
        .start()
        .await?;
    let session = lab.log_in().await?;
    let app = WebApp::start().await?;
    let forward = session.forward(&format!("0:{}", app.addr)).await?;
    Ok(Setup {
        lab,
        session,
        app,
        forward,
    })
}

/// A forward's web URL in parts: the Host to send, the path, and the key's query.
struct WebUrl {
    host: String,
    path: String,
    query: String,
}

fn web_url(forward: &Forward) -> Result<WebUrl> {
    let url = url::Url::parse(&forward.web_url().context("the forward has a web URL")?)?;
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    Ok(WebUrl {
        host,
        path: url.path().to_owned(),
        query: url.query().unwrap_or_default().to_owned(),
    })
}

/// Follows the forward's link once: its cookie (`name=value`).
async fn open_link(http: &mut Http, url: &WebUrl) -> Result<String> {
    let answer = http
        .get(&format!("{}?{}", url.path, url.query), None)
        .await?;
    if answer.status != StatusCode::FOUND {
        bail!("the link answered {}: {}", answer.status, answer.text());
    }
    let set = answer.header(header::SET_COOKIE);
    Ok(set.split(';').next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_sets_a_private_cookie_and_the_app_never_sees_it() -> Result<()> {
    let s = setup(false, |_| {}).await?;
    let url = web_url(&s.forward)?;
    assert!(
        url.host.starts_with("f-") && url.host.contains(&format!(".{DOMAIN}:")),
        "{}",
        url.host
    );
    assert_eq!(url.path, "/");
    let key = url
        .query
        .strip_prefix("tabtunnel_key=")
        .context("key")?
        .to_owned();
    assert_eq!(key.len(), 64, "256 bits in hex");
    let mut http = Http::open(s.lab.relay.addr, &url.host).await?;

    // The link: a cookie, and the same URL without the key (other parameters kept).
    let answer = http
        .get(&format!("/headers?a=1&{}&b=2", url.query), None)
        .await?;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert_eq!(answer.header(header::LOCATION), "/headers?a=1&b=2");
    let set = answer.header(header::SET_COOKIE).to_owned();
    let (value, attributes) = set
        .strip_prefix("tabtunnel_fwd=")
        .and_then(|s| s.split_once(';'))
        .context("the forward's cookie")?;
    assert_eq!(attributes, " Path=/; HttpOnly; SameSite=Lax");
    assert_eq!(value.len(), 64, "{set}");
    assert_ne!(value, key, "the cookie is not the link's key");
    let value = value.to_owned();
    assert!(
        answer
            .header(header::CONTENT_SECURITY_POLICY)
            .contains("frame-ancestors 'none'")
    );
    let cookie = set.split(';').next().unwrap_or_default().to_owned();

    // Without the cookie, or with a wrong key: 403 saying why, under the relay's headers.
    let refused = http.get("/", None).await?;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused
            .text()
            .contains("belongs to the browser tab that opened it"),
        "{}",
        refused.text()
    );
    assert!(
        refused
            .header(header::CONTENT_SECURITY_POLICY)
            .contains("default-src 'self'")
    );
    let wrong = format!("tabtunnel_fwd={}", "0".repeat(64));
    assert_eq!(
        http.get("/", Some(&wrong)).await?.status,
        StatusCode::FORBIDDEN
    );
    let bad_link = http
        .get(&format!("/?tabtunnel_key={}", "0".repeat(64)), None)
        .await?;
    assert_eq!(bad_link.status, StatusCode::FORBIDDEN);
    assert!(bad_link.header(header::SET_COOKIE).is_empty());

    // With it: the app answers, with its own headers, and sees neither key nor cookie.
    let both = format!("a=1; {cookie}; b=2");
    let spoofed = http
        .request(Method::GET, "/headers?x=1", Some(&both))
        .header("x-forwarded-for", "10.9.9.9")
        .body(Full::default())?;
    let seen = http.send(spoofed).await?;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.text());
    let text = seen.text();
    assert!(text.contains("cookie: a=1; b=2\n"), "{text}");
    assert!(!text.contains(&key), "{text}");
    assert!(!text.contains(&value), "{text}");
    assert!(text.contains(&format!("host: {}\n", url.host)), "{text}");
    assert!(text.contains("x-forwarded-for: 127.0.0.1\n"), "{text}");
    assert!(text.contains("x-forwarded-proto: http\n"), "{text}");
    assert!(!text.contains("10.9.9.9"), "{text}");
    assert!(
        seen.header(header::CONTENT_SECURITY_POLICY).is_empty(),
        "the app's headers are its own"
    );
    assert!(seen.header(header::X_FRAME_OPTIONS).is_empty());

    // Redirects pass as the app wrote them; a form posts.
    let redirect = http.get("/redirect", Some(&cookie)).await?;
    assert!(redirect.status.is_redirection());
    assert_eq!(redirect.header(header::LOCATION), "landed");
    let post = http
        .request(Method::POST, "/submit", Some(&cookie))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"name=Ada")))?;
    let posted = http.send(post).await?;
    assert!(posted.text().contains("Hello, Ada"), "{}", posted.text());

    // Another forward's cookie does not open this one, nor this one's the other.
    let other = s.session.forward(&format!("0:{}", s.app.addr)).await?;
    let other_url = web_url(&other)?;
    assert_ne!(other_url.host, url.host);
    let mut other_http = Http::open(s.lab.relay.addr, &other_url.host).await?;
    assert_eq!(
        other_http.get("/", Some(&cookie)).await?.status,
        StatusCode::FORBIDDEN
    );
    let other_cookie = open_link(&mut other_http, &other_url).await?;
    assert_eq!(
        other_http.get("/", Some(&other_cookie)).await?.status,
        StatusCode::OK
    );
    assert_eq!(
        http.get("/", Some(&other_cookie)).await?.status,
        StatusCode::FORBIDDEN
    );

    // Each refusal is counted by its reason.
    let metrics = s.lab.relay.get("/metrics").await?;
    for reason in ["web-cookie", "web-key"] {
        assert!(
            metrics.contains(&format!("tabtunnel_refusals_total{{reason=\"{reason}\"}}")),
            "{reason} in {metrics}"
        );
    }

    // Names close to a forward's are not the relay's.
    let mut near = Http::open(s.lab.relay.addr, &format!("x.{}", url.host)).await?;
    assert_eq!(
        near.get("/", Some(&cookie)).await?.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_streams_both_ways_and_websockets_echo() -> Result<()> {
    const SIZE: usize = 16 << 20;
    let s = setup(false, |_| {}).await?;
    let url = web_url(&s.forward)?;
    let mut http = Http::open(s.lab.relay.addr, &url.host).await?;
    let cookie = open_link(&mut http, &url).await?;

    // Many requests on one browser connection reuse one forwarded connection.
    for _ in 0..5 {
        assert_eq!(http.get("/", Some(&cookie)).await?.status, StatusCode::OK);
    }
    // A large body down, streamed, and one up.
    let big = http
        .get(&format!("/big?bytes={SIZE}"), Some(&cookie))
        .await?;
    assert_eq!(big.status, StatusCode::OK);
    assert_eq!(big.body.len(), SIZE);
    assert!(
        big.body[..] == pattern(5, SIZE)[..],
        "the body arrived intact"
    );
    let upload = pattern(9, SIZE / 2);
    let expected = format!("{} {}", upload.len(), tabtunnel_e2e::sha256_hex(&upload));
    let request = http
        .request(Method::POST, "/upload", Some(&cookie))
        .body(Full::new(Bytes::from(upload)))?;
    assert_eq!(http.send(request).await?.text(), expected);
    let stats = s.forward.stats();
    assert_eq!(
        stats.connections, 1,
        "one kept-alive connection carried them all: {stats:?}"
    );

    // A WebSocket through the forward: the handshake carries the cookie.
    let tcp = tokio::net::TcpStream::connect(s.lab.relay.addr).await?;
    let request = http::Request::builder()
        .uri(format!("ws://{}/ws", url.host))
        .header(header::HOST, &url.host)
        .header(header::COOKIE, &cookie)
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .body(())?;
    let (mut ws, response) = tokio_tungstenite::client_async(request, tcp).await?;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await?;
        let answer = tokio::time::timeout(DEADLINE, ws.next())
            .await?
            .context("an answer")??;
        assert_eq!(answer.into_text()?.as_str(), format!("echo: hello {i}"));
    }
    let blob = pattern(3, 300_000);
    ws.send(Message::binary(blob.clone())).await?;
    let answer = tokio::time::timeout(DEADLINE, ws.next())
        .await?
        .context("an answer")??;
    assert_eq!(hex(&answer.into_data()[..16]), hex(&blob[..16]));
    ws.close(None).await?;

    // Without the cookie, the upgrade is refused like any request.
    let (status, _) = ws_refusal(s.lab.relay.addr, ws_handshake(&url.host, &[])?).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_dies_with_the_forward_and_with_the_session() -> Result<()> {
    let s = setup(false, |_| {}).await?;
    let url = web_url(&s.forward)?;
    let mut http = Http::open(s.lab.relay.addr, &url.host).await?;
    let cookie = open_link(&mut http, &url).await?;
    assert_eq!(http.get("/", Some(&cookie)).await?.status, StatusCode::OK);
    s.forward.close().await?;
    let closed = wait_for("the forward's URL to close", DEADLINE, || async {
        let answer = Http::open(s.lab.relay.addr, &url.host)
            .await
            .ok()?
            .get("/", Some(&cookie))
            .await
            .ok()?;
        (answer.status == StatusCode::NOT_FOUND).then_some(answer)
    })
    .await?;
    assert!(
        closed.text().contains("This forward is closed"),
        "{}",
        closed.text()
    );
    // The link itself no longer sets anything.
    let mut again = Http::open(s.lab.relay.addr, &url.host).await?;
    let link = again.get(&format!("/?{}", url.query), None).await?;
    assert_eq!(link.status, StatusCode::NOT_FOUND);
    assert!(link.header(header::SET_COOKIE).is_empty());

    // A forward whose session ends.
    let forward = s.session.forward(&format!("0:{}", s.app.addr)).await?;
    let url = web_url(&forward)?;
    let mut http = Http::open(s.lab.relay.addr, &url.host).await?;
    let cookie = open_link(&mut http, &url).await?;
    assert_eq!(http.get("/", Some(&cookie)).await?.status, StatusCode::OK);
    s.session.close().await;
    wait_for("the session's forward URL to close", DEADLINE, || async {
        let answer = Http::open(s.lab.relay.addr, &url.host)
            .await
            .ok()?
            .get("/", Some(&cookie))
            .await
            .ok()?;
        (answer.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_websockets_in_progress_are_bounded() -> Result<()> {
    let s = setup(false, |limits| {
        limits.web_requests_per_forward = 2;
        limits.web_requests_per_ip = 3;
        limits.web_sockets_per_forward = 1;
    })
    .await?;
    let url = web_url(&s.forward)?;
    let mut first = Http::open(s.lab.relay.addr, &url.host).await?;
    let cookie = open_link(&mut first, &url).await?;

    // Two requests held in progress (each answered with a head and one line, never ended).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut http = Http::open(s.lab.relay.addr, &url.host).await?;
        http.send.ready().await?;
        let request = http
            .request(Method::GET, "/hold", Some(&cookie))
            .body(Full::default())?;
        let response = tokio::time::timeout(DEADLINE, http.send.send_request(request)).await??;
        assert_eq!(response.status(), StatusCode::OK);
        held.push((http, response));
    }
    let busy = first.get("/", Some(&cookie)).await?;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        busy.text().contains("maximum of 2 requests"),
        "{}",
        busy.text()
    );

    // The address's cap spans forwards: one more on another forward, then 429.
    let other = s.session.forward(&format!("0:{}", s.app.addr)).await?;
    let other_url = web_url(&other)?;
    let mut other_http = Http::open(s.lab.relay.addr, &other_url.host).await?;
    let other_cookie = open_link(&mut other_http, &other_url).await?;
    let mut third = Http::open(s.lab.relay.addr, &other_url.host).await?;
    third.send.ready().await?;
    let request = third
        .request(Method::GET, "/hold", Some(&other_cookie))
        .body(Full::default())?;
    let third_held = tokio::time::timeout(DEADLINE, third.send.send_request(request)).await??;
    let limited = other_http.get("/", Some(&other_cookie)).await?;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        limited
            .text()
            .contains("Your address has its maximum of 3 requests"),
        "{}",
        limited.text()
    );

    // A held response that is dropped gives its place back.
    drop(third_held);
    drop(third);
    held.pop();
    wait_for("a place to come free", DEADLINE, || async {
        let mut http = Http::open(s.lab.relay.addr, &url.host).await.ok()?;
        let answer = http.get("/", Some(&cookie)).await.ok()?;
        (answer.status == StatusCode::OK).then_some(())
    })
    .await?;

    // One WebSocket per forward: the second is refused with 503.
    let handshake = || ws_handshake(&url.host, &[("cookie", cookie.as_str())]);
    let tcp = tokio::net::TcpStream::connect(s.lab.relay.addr).await?;
    let (_ws, _) = tokio_tungstenite::client_async(handshake()?, tcp).await?;
    let (status, _) = ws_refusal(s.lab.relay.addr, handshake()?).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_requests_count_under_the_forwards_connection_limits() -> Result<()> {
    let s = setup(false, |limits| limits.connections_per_forward = 1).await?;
    let url = web_url(&s.forward)?;
    let mut first = Http::open(s.lab.relay.addr, &url.host).await?;
    let cookie = open_link(&mut first, &url).await?;
    // The one connection the forward may have is held by a response in progress.
    first.send.ready().await?;
    let request = first
        .request(Method::GET, "/hold", Some(&cookie))
        .body(Full::default())?;
    let _held = tokio::time::timeout(DEADLINE, first.send.send_request(request)).await??;
    let mut second = Http::open(s.lab.relay.addr, &url.host).await?;
    let refused = second.get("/", Some(&cookie)).await?;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        refused.text().contains("maximum of 1 open connections"),
        "{}",
        refused.text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_mode_serves_under_the_prefix_with_a_cookie_for_it() -> Result<()> {
    let s = setup(true, |_| {}).await?;
    let url = web_url(&s.forward)?;
    assert_eq!(url.host, s.lab.relay.addr.to_string());
    let id = url
        .path
        .strip_prefix("/f/")
        .and_then(|p| p.strip_suffix('/'))
        .context("/f/<id>/")?
        .to_owned();
    let mut http = Http::open(s.lab.relay.addr, &url.host).await?;
    let link = http
        .get(&format!("{}?{}", url.path, url.query), None)
        .await?;
    assert_eq!(link.status, StatusCode::FOUND);
    assert_eq!(link.header(header::LOCATION), url.path);
    let set = link.header(header::SET_COOKIE).to_owned();
    assert!(set.starts_with(&format!("tabtunnel_fwd_{id}=")), "{set}");
    assert!(set.contains(&format!("; Path=/f/{id}/;")), "{set}");
    let cookie = set.split(';').next().unwrap_or_default().to_owned();

    let seen = http.get(&format!("/f/{id}/headers"), Some(&cookie)).await?;
    assert_eq!(seen.status, StatusCode::OK);
    let text = seen.text();
    assert!(
        text.contains(&format!("x-forwarded-prefix: /f/{id}\n")),
        "{text}"
    );
    assert!(!text.contains("cookie:"), "{text}");
    // The app's absolute redirects stay under the prefix; `/f/<id>` gains its slash.
    let absolute = http
        .get(&format!("/f/{id}/absolute"), Some(&cookie))
        .await?;
    assert_eq!(absolute.header(header::LOCATION), format!("/f/{id}/landed"));
    let bare = http.get(&format!("/f/{id}"), None).await?;
    assert_eq!(bare.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(bare.header(header::LOCATION), format!("/f/{id}/"));
    assert_eq!(
        http.get(&format!("/f/{id}/"), None).await?.status,
        StatusCode::FORBIDDEN
    );
    // The relay's own routes are where they were.
    assert_eq!(http.get("/healthz", None).await?.text(), "ok\n");
    // By name there is nothing in path mode.
    let mut by_name = Http::open(s.lab.relay.addr, &format!("f-{id}.{DOMAIN}")).await?;
    assert_eq!(
        by_name.get("/", Some(&cookie)).await?.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_forwards_are_off_unless_the_operator_turns_them_on() -> Result<()> {
    let lab = Lab::start().await?;
    let session = lab.log_in().await?;
    let app = WebApp::start().await?;
    let forward = session.forward(&format!("0:{}", app.addr)).await?;
    assert_eq!(forward.web_url(), None);
    let name = format!("f-0123456789abcdef.{DOMAIN}");
    let mut by_name = Http::open(lab.relay.addr, &name).await?;
    assert_eq!(
        by_name.get("/", None).await?.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    let mut by_path = Http::open(lab.relay.addr, &lab.relay.addr.to_string()).await?;
    assert_eq!(
        by_path.get("/f/0123456789abcdef/", None).await?.status,
        StatusCode::NOT_FOUND
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_keeps_its_web_url_and_the_browsers_cookie() -> Result<()> {
    use tabtunnel_client::{Reconnect, ReconnectOptions, connect_resilient};
    use tabtunnel_e2e::dial;
    use tabtunnel_e2e::proxy::CutProxy;

    let lab = Lab::builder()
        .configure(|config| config.web_forward_domain = Some(DOMAIN.into()))
        .start()
        .await?;
    let proxy = CutProxy::start(lab.relay.addr).await?;
    let fast = Reconnect {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        give_up_after: Duration::from_secs(60),
    };
    let options = ReconnectOptions {
        policy: fast,
        on_state: None,
    };
    let session = connect_resilient(dial(&proxy.ws_url()), lab.login(), options).await?;
    let app = WebApp::start().await?;
    let forward = session.forward(&format!("0:{}", app.addr)).await?;
    let before = forward.web_url().context("a web URL")?;
    let url = web_url(&forward)?;
    let mut http = Http::open(lab.relay.addr, &url.host).await?;
    let cookie = open_link(&mut http, &url).await?;
    assert_eq!(http.get("/", Some(&cookie)).await?.status, StatusCode::OK);

    assert_eq!(proxy.cut(), 1, "the session went through the proxy");
    // Back through the new session: the same URL, and the cookie the browser holds.
    let answer = wait_for("the web forward to answer again", DEADLINE, || async {
        let answer = Http::open(lab.relay.addr, &url.host)
            .await
            .ok()?
            .get("/", Some(&cookie))
            .await
            .ok()?;
        (answer.status == StatusCode::OK).then_some(answer)
    })
    .await?;
    assert!(!answer.body.is_empty());
    wait_for("the session to be resumed", DEADLINE, || async {
        let metrics = lab.relay.get("/metrics").await.ok()?;
        metrics
            .contains("tabtunnel_sessions_resumed_total 1")
            .then_some(())
    })
    .await?;
    assert_eq!(forward.web_url().as_deref(), Some(before.as_str()));
    Ok(())
}

/// A WebSocket handshake for `host`'s `/ws` with `headers` added (Cookie, Origin, ...).
fn ws_handshake(host: &str, headers: &[(&str, &str)]) -> Result<http::Request<()>> {
    let mut request = http::Request::builder()
        .uri(format!("ws://{host}/ws"))
        .header(header::HOST, host)
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Ok(request.body(())?)
}

/// The status and text a WebSocket handshake is refused with; an error if it is accepted.
async fn ws_refusal(relay: SocketAddr, request: http::Request<()>) -> Result<(StatusCode, String)> {
    let tcp = tokio::net::TcpStream::connect(relay).await?;
    match tokio_tungstenite::client_async(request, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let text = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
            Ok((response.status(), text.into_owned()))
        }
        Ok(_) => bail!("the WebSocket was accepted"),
        Err(err) => Err(err.into()),
    }
}

/// A form post of `name` to the app's `/submit` with `headers` added.
fn form_post(
    http: &Http,
    path: &str,
    cookie: &str,
    headers: &[(&str, &str)],
) -> Result<Request<Full<Bytes>>> {
    let mut request = http
        .request(Method::POST, path, Some(cookie))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Ok(request.body(Full::new(Bytes::from_static(b"name=Ada")))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_origins_get_no_websocket_or_post_with_the_cookie() -> Result<()> {
    let s = setup(false, |_| {}).await?;
    let url = web_url(&s.forward)?;
    let relay = s.lab.relay.addr;
    let mut http = Http::open(relay, &url.host).await?;
    // The victim's browser holds the forward's cookie, and sends it on same-site requests.
    let cookie = open_link(&mut http, &url).await?;
    let sibling = format!("http://f-0123456789abcdef.{DOMAIN}:{}", relay.port());
    let own = format!("http://{}", url.host);
    let own_over_https = format!("https://{}", url.host);

    // A sibling forward's page (same site), or any other, cannot open a WebSocket to it...
    for (origin, site) in [
        (Some(sibling.as_str()), Some("same-site")),
        (Some(sibling.as_str()), None),
        (Some("https://evil.example"), Some("cross-site")),
        (Some("null"), None),
        // The origin's scheme is part of it.
        (Some(own_over_https.as_str()), None),
        (None, Some("same-site")),
    ] {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend(origin.map(|o| ("origin", o)));
        headers.extend(site.map(|s| ("sec-fetch-site", s)));
        let (status, text) = ws_refusal(relay, ws_handshake(&url.host, &headers)?).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin:?} {site:?}: {text}");
        assert!(text.contains("another page"), "{text}");
    }
    // ... nor post to it.
    for (origin, site) in [
        (Some(sibling.as_str()), Some("same-site")),
        (Some(sibling.as_str()), None),
        (None, Some("cross-site")),
    ] {
        let mut headers = Vec::new();
        headers.extend(origin.map(|o| ("origin", o)));
        headers.extend(site.map(|s| ("sec-fetch-site", s)));
        let refused = http
            .send(form_post(&http, "/submit", &cookie, &headers)?)
            .await?;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{origin:?} {site:?}");
        assert!(!refused.text().contains("Hello"), "{}", refused.text());
        assert!(
            refused
                .header(header::CONTENT_SECURITY_POLICY)
                .contains("default-src 'self'")
        );
    }
    let metrics = s.lab.relay.get("/metrics").await?;
    assert!(
        metrics.contains("tabtunnel_refusals_total{reason=\"web-origin\"}"),
        "{metrics}"
    );

    // The forward's own pages can, and so can clients that send no Origin.
    let (mut ws, response) = tokio_tungstenite::client_async(
        ws_handshake(
            &url.host,
            &[
                ("cookie", &cookie),
                ("origin", &own),
                ("sec-fetch-site", "same-origin"),
            ],
        )?,
        tokio::net::TcpStream::connect(relay).await?,
    )
    .await?;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("mine")).await?;
    let answer = tokio::time::timeout(DEADLINE, ws.next())
        .await?
        .context("an answer")??;
    assert_eq!(answer.into_text()?.as_str(), "echo: mine");
    ws.close(None).await?;
    for headers in [
        vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        vec![],
    ] {
        let posted = http
            .send(form_post(&http, "/submit", &cookie, &headers)?)
            .await?;
        assert!(posted.text().contains("Hello, Ada"), "{}", posted.text());
    }
    // Reading is for CORS and the app to allow: a GET from another origin passes.
    let get = http
        .request(Method::GET, "/", Some(&cookie))
        .header(header::ORIGIN, &sibling)
        .header("sec-fetch-site", "same-site")
        .body(Full::default())?;
    assert_eq!(http.send(get).await?.status, StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_path_mode_only_the_relays_own_origin_may_post() -> Result<()> {
    let s = setup(true, |_| {}).await?;
    let url = web_url(&s.forward)?;
    let mut http = Http::open(s.lab.relay.addr, &url.host).await?;
    let cookie = open_link(&mut http, &url).await?;
    let submit = format!("{}submit", url.path);
    let own = format!("http://{}", url.host);
    let posted = http
        .send(form_post(&http, &submit, &cookie, &[("origin", &own)])?)
        .await?;
    assert!(posted.text().contains("Hello, Ada"), "{}", posted.text());
    let other = format!("http://localhost:{}", s.lab.relay.addr.port());
    let refused = http
        .send(form_post(&http, &submit, &cookie, &[("origin", &other)])?)
        .await?;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_lets_in_one_browser_and_lets_it_in_again() -> Result<()> {
    let s = setup(false, |_| {}).await?;
    let url = web_url(&s.forward)?;
    let key = url
        .query
        .strip_prefix("tabtunnel_key=")
        .context("key")?
        .to_owned();
    let link = format!("/?{}", url.query);
    let mut first = Http::open(s.lab.relay.addr, &url.host).await?;
    let cookie = open_link(&mut first, &url).await?;
    assert!(
        !cookie.contains(&key),
        "the cookie is not the key: {cookie}"
    );

    // The same browser clicking Open again: sent its cookie, it is let in again.
    let again = first.get(&link, Some(&cookie)).await?;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.text());
    assert_eq!(again.header(header::LOCATION), "/");
    assert!(again.header(header::SET_COOKIE).is_empty());
    assert_eq!(first.get("/", Some(&cookie)).await?.status, StatusCode::OK);

    // Any other browser with the used link is refused, and told why, however often.
    for _ in 0..2 {
        let mut second = Http::open(s.lab.relay.addr, &url.host).await?;
        let refused = second.get(&link, None).await?;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.header(header::SET_COOKIE).is_empty());
        assert!(
            refused.text().contains("used already"),
            "{}",
            refused.text()
        );
    }
    // The key does not work as the cookie either.
    let forged = format!("tabtunnel_fwd={key}");
    let mut third = Http::open(s.lab.relay.addr, &url.host).await?;
    assert_eq!(
        third.get("/", Some(&forged)).await?.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        third.get(&link, Some(&forged)).await?.status,
        StatusCode::FORBIDDEN
    );
    let metrics = s.lab.relay.get("/metrics").await?;
    assert!(
        metrics.contains("tabtunnel_refusals_total{reason=\"web-key-used\"}"),
        "{metrics}"
    );
    Ok(())
}
