//! The tabtunnel relay: serves the page and its wasm bundle, carries each tab's SSH bytes
//! to an SSH server its operator configured, and opens forward listeners for live
//! sessions. See `docs/ARCHITECTURE.md` for the whole picture.

mod api_targets;
pub mod client_addr;
pub mod config;
mod connection;
pub mod demo;
mod dial;
pub mod drain;
mod limits;
pub mod listen;
pub mod log_limit;
pub mod metrics;
mod outgoing;
pub mod page;
pub mod parked;
pub mod ports;
mod proxy_protocol;
mod rate;
mod serve;
mod session;
mod socks_forward;
mod ssh_pipe;
pub mod tls;
pub mod token_check;
pub mod web_forward;
pub mod web_guard;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tabtunnel_proto::MAX_FRAME;

use crate::metrics::Metrics;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

pub use client_addr::ClientAddr;
pub use config::Config;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    config: Arc<Config>,
    next_session: Arc<AtomicU64>,
    /// The drain and the stop: sessions, `/healthz` and the accept loop follow them.
    shutdown: drain::Shutdown,
    /// The sessions, so shutdown can wait for them to say goodbye.
    sessions: TaskTracker,
    /// Every place a session takes (waiting for Hello, session, login), by limit.
    admission: Arc<limits::Admission>,
    metrics: Arc<Metrics>,
    /// The forward ports the relay holds, and the caps on forwards across sessions.
    ports: Arc<ports::PortBook>,
    /// Lost sessions' forwards, held for their tabs to resume.
    parking: Arc<parked::Parking>,
    /// Set when the config names a certificate and key: `run` then serves HTTPS only.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The forwards open as web apps (when the config turns web forwards on).
    web_forwards: Arc<web_forward::WebForwards>,
}

impl AppState {
    /// Loads the TLS certificate and key if the config names them, so a bad pair stops
    /// the relay before it listens.
    pub fn new(config: Config) -> Result<Self, tls::TlsError> {
        let metrics = Arc::<Metrics>::default();
        Ok(Self {
            tls: config.load_tls()?,
            parking: parked::Parking::new(config.resume_grace, &metrics),
            config: Arc::new(config),
            next_session: Arc::new(AtomicU64::new(1)),
            shutdown: drain::Shutdown::default(),
            sessions: TaskTracker::new(),
            admission: Arc::default(),
            ports: Arc::new(ports::PortBook::new(metrics.forward_binds.clone())),
            metrics,
            web_forwards: Arc::default(),
        })
    }

    /// Whether `run` serves HTTPS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The relay's drain and stop signals, for the binary's second signal.
    pub fn shutdown(&self) -> drain::Shutdown {
        self.shutdown.clone()
    }
}

/// How long the stop waits for sessions to tell their tabs.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The relay's HTTP routes: `/ws` (sessions), `/api/targets`, and the page at `/` (see
/// `page`: built into the binary, or `web_dir`).
pub fn app(state: AppState) -> Router {
    let static_files = page::service(state.config.web_dir.as_deref());
    let web_proxy = web_forward::WebProxy::new(
        state.config.clone(),
        state.web_forwards.clone(),
        state.metrics.clone(),
    );
    Router::new()
        .route("/ws", get(websocket))
        .route(
            "/api/targets",
            get(api_targets::targets).with_state(api_targets::TargetsApi {
                config: state.config.clone(),
                metrics: state.metrics.clone(),
                admission: state.admission.clone(),
            }),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback_service(static_files)
        // Last, so it wraps every route and the fallback: Host check and security headers.
        .layer(axum::middleware::from_fn_with_state(
            web_guard::Guard {
                config: state.config.clone(),
                metrics: state.metrics.clone(),
            },
            web_guard::guard,
        ))
        // Outermost: a web forward's requests go to its app, never to the relay's routes.
        .layer(axum::middleware::from_fn_with_state(
            web_proxy,
            web_forward::dispatch,
        ))
        .with_state(state)
}

/// Serves `app` on `listener` (HTTPS if the state has TLS); when `shutdown` resolves,
/// drains (see `drain`: up to `drain_timeout`, or until the state's
/// [`drain::Shutdown::stop_now`]), then stops.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sessions = state.sessions.clone();
    let parking = state.parking.clone();
    let (config, tls, metrics) = (
        state.config.clone(),
        state.tls.clone(),
        state.metrics.clone(),
    );
    let drained = {
        let (stop, sessions, parking, metrics) = (
            state.shutdown.clone(),
            sessions.clone(),
            parking.clone(),
            metrics.clone(),
        );
        let timeout = config.drain_timeout;
        async move {
            shutdown.await;
            drain::drain(&stop, &sessions, &parking, &metrics, timeout).await;
        }
    };
    // The relay's own accept loop: connection caps, TLS, HTTP timeouts (see serve.rs).
    // It keeps serving while the relay drains: /healthz says so, new sessions are told.
    let result = serve::serve(listener, app(state), config, tls, metrics, drained).await;
    sessions.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, sessions.wait()).await;
    // A shutdown is an orderly end: nobody will come back to this process.
    parking.clear();
    result
}

/// 200 while the relay takes sessions; 503 while it drains, so that a load balancer's
/// health check sends new sessions to another relay.
async fn healthz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_draining() {
        let body = "draining: this relay is shutting down and takes no new sessions\n";
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    } else {
        "ok\n".into_response()
    }
}

/// Counts and totals only: no names, addresses or tokens.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn websocket(
    upgrade: WebSocketUpgrade,
    State(state): State<AppState>,
    peer: ClientAddr,
    headers: axum::http::HeaderMap,
) -> Response {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = header(axum::http::header::ORIGIN);
    if !state
        .config
        .origin_allowed(origin, header(axum::http::header::HOST))
    {
        if let Some(suppressed) = state.metrics.refusal_log.admit(peer.ip(), "origin") {
            let origin = log_limit::clip(origin.unwrap_or_default());
            tracing::info!(%peer, %origin, suppressed, "WebSocket refused: origin not allowed");
        }
        state.metrics.refused("origin");
        let message = format!(
            "WebSocket from origin {} refused: this relay serves its own page; its operator can allow other pages with allowed_origins",
            origin.unwrap_or_default()
        );
        return (axum::http::StatusCode::FORBIDDEN, message).into_response();
    }
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let config = state.config.clone();
    let (shutdown, sessions) = (state.shutdown.clone(), state.sessions.clone());
    let metrics = state.metrics.clone();
    let parking = state.parking.clone();
    let holder = ports::Holder {
        book: state.ports.clone(),
        session: id,
        ip: client_addr::limit_key(peer.ip()),
    };
    // Only a small waiting place until a valid Hello: the session's real places are taken
    // then. Never refused here; at a cap an older silent WebSocket makes room, and is
    // told why in an Error frame (a browser cannot read an HTTP refusal of a WebSocket).
    // Behind a trusted proxy, `peer` is the client it names (see client_addr.rs).
    let waiting = state
        .admission
        .wait_for_hello(client_addr::limit_key(peer.ip()), &state.config.limits);
    let web = web_forward::Offer::for_session(
        &state.config,
        &state.web_forwards,
        state.tls(),
        header(axum::http::header::HOST),
        origin,
    );
    upgrade
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        // tungstenite's default 128 KiB read buffer is zero-filled, so resident, in every
        // session: most of an idle session's memory (the load bench measured 166 KiB per
        // idle session with it, 44 KiB with 16 KiB, at the same throughput).
        .read_buffer_size(16 * 1024)
        .on_upgrade(move |socket| {
            let (ws_tx, ws_rx) = futures::StreamExt::split(socket);
            sessions.track_future(session::run(
                ws_tx, ws_rx, config, metrics, peer, shutdown, holder, waiting, web, parking,
            ))
        })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn state_with_web_dir(dir: &std::path::Path) -> AppState {
        let mut config = Config {
            web_dir: Some(dir.to_owned()),
            ..Config::default()
        };
        config.add_target("lab", "10.1.2.3:2222", "test").unwrap();
        AppState::new(config).unwrap()
    }

    #[tokio::test]
    async fn targets_lists_names_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let response = app(state_with_web_dir(dir.path()))
            .oneshot(
                Request::get("/api/targets")
                    .header(header::HOST, "127.0.0.1")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            br#"{"forward_allowed_sources":[],"forwards_per_session":10,"public_host":null,"targets":[{"name":"lab"}],"token_required":false}"#
        );
    }

    #[tokio::test]
    async fn healthz_answers_503_while_the_relay_drains() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_with_web_dir(dir.path());
        let get = |path: &str| {
            Request::get(path)
                .header(header::HOST, "127.0.0.1")
                .body(Body::empty())
                .unwrap()
        };
        let app = app(state.clone());
        let ok = app.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        state.shutdown().drain();
        let draining = app.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(draining.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = draining.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            b"draining: this relay is shutting down and takes no new sessions\n"
        );
    }

    #[tokio::test]
    async fn the_drain_shows_in_metrics_and_ends_when_no_session_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_with_web_dir(dir.path());
        let metrics = state.metrics.clone();
        assert!(metrics.render().contains("tabtunnel_draining 0\n"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (go, signal) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(run(listener, state, async {
            let _ = signal.await;
        }));
        go.send(()).unwrap();
        // No session: the drain is over at once, long before its 30 s.
        tokio::time::timeout(std::time::Duration::from_secs(10), relay)
            .await
            .expect("the relay stopped")
            .unwrap()
            .unwrap();
        assert!(metrics.render().contains("tabtunnel_draining 1\n"));
    }

    /// The router alone (no session): a forward entered in the book by hand.
    #[tokio::test]
    async fn web_forward_links_set_a_secure_cookie_under_tls_and_route_only_exact_names() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let config = Config {
            web_dir: Some(dir.path().to_owned()),
            tls_cert: Some(cert_path),
            tls_key: Some(key_path),
            web_forward_domain: Some("tunnel.example.edu".into()),
            ..Config::default()
        };
        let state = AppState::new(config).unwrap();
        let offer = web_forward::Offer::for_session(
            &state.config,
            &state.web_forwards,
            state.tls(),
            Some("relay.example.edu"),
            None,
        )
        .unwrap();
        let registration = offer.register(1, tokio::sync::mpsc::channel(1).0);
        let url = offer.url(&registration);
        let host = format!("f-{}.tunnel.example.edu", registration.id());
        assert!(
            url.starts_with(&format!("https://{host}/?tabtunnel_key=")),
            "{url}"
        );
        let app = app(state);
        let get = |host: &str, path: &str| {
            Request::get(path)
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap()
        };
        let key = registration.key().to_owned();
        let link = app
            .clone()
            .oneshot(get(&host, &format!("/?tabtunnel_key={key}")))
            .await
            .unwrap();
        assert_eq!(link.status(), StatusCode::FOUND);
        // The cookie carries a value of its own, not the link's key.
        let set = link.headers()[header::SET_COOKIE].to_str().unwrap();
        let (value, attributes) = set
            .strip_prefix("tabtunnel_fwd=")
            .and_then(|s| s.split_once(';'))
            .unwrap();
        assert_eq!(attributes, " Path=/; HttpOnly; SameSite=Lax; Secure");
        assert_eq!(value.len(), 64, "{set}");
        assert_ne!(value, key);
        let refused = app.clone().oneshot(get(&host, "/")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        // Not exactly a forward's name: the relay's guard refuses it.
        let near = format!("a.{host}");
        let near = app.clone().oneshot(get(&near, "/")).await.unwrap();
        assert_eq!(near.status(), StatusCode::MISDIRECTED_REQUEST);
        // The relay's own routes stay on its own names, even under the forward's path.
        let own = app
            .clone()
            .oneshot(get("127.0.0.1", "/healthz"))
            .await
            .unwrap();
        assert_eq!(own.status(), StatusCode::OK);
        // Revoked with its registration.
        drop(registration);
        let closed = app.oneshot(get(&host, "/")).await.unwrap();
        assert_eq!(closed.status(), StatusCode::NOT_FOUND);
    }

    /// A relay with web forwards under `tunnel.example.edu` (no TLS), one forward entered
    /// by hand, its name and its link's key.
    fn one_web_forward(dir: &std::path::Path) -> (Router, web_forward::Registration, String) {
        let config = Config {
            web_dir: Some(dir.to_owned()),
            web_forward_domain: Some("tunnel.example.edu".into()),
            ..Config::default()
        };
        let state = AppState::new(config).unwrap();
        let offer = web_forward::Offer::for_session(
            &state.config,
            &state.web_forwards,
            state.tls(),
            Some("relay.example.edu"),
            None,
        )
        .unwrap();
        let registration = offer.register(1, tokio::sync::mpsc::channel(1).0);
        let host = format!("f-{}.tunnel.example.edu", registration.id());
        (app(state), registration, host)
    }

    #[tokio::test]
    async fn a_web_forward_request_with_two_host_headers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (app, registration, host) = one_web_forward(dir.path());
        let link = format!("/?tabtunnel_key={}", registration.key());
        let two = |first: &str, second: &str| {
            let mut request = Request::get(&link).body(Body::empty()).unwrap();
            let headers = request.headers_mut();
            headers.append(header::HOST, first.parse().unwrap());
            headers.append(header::HOST, second.parse().unwrap());
            request
        };
        for (first, second) in [
            (host.as_str(), host.as_str()),
            (host.as_str(), "relay.example.edu"),
            ("127.0.0.1", host.as_str()),
        ] {
            let refused = app.clone().oneshot(two(first, second)).await.unwrap();
            assert_eq!(
                refused.status(),
                StatusCode::BAD_REQUEST,
                "{first} {second}"
            );
            assert!(!refused.headers().contains_key(header::SET_COOKIE));
        }
        // The key was not spent by them: one Host header, and the link works.
        let one = Request::get(&link)
            .header(header::HOST, &host)
            .body(Body::empty())
            .unwrap();
        let link = app.oneshot(one).await.unwrap();
        assert_eq!(link.status(), StatusCode::FOUND);
        assert!(link.headers().contains_key(header::SET_COOKIE));
    }

    #[tokio::test]
    async fn another_pages_post_neither_reaches_the_forward_nor_spends_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (app, registration, host) = one_web_forward(dir.path());
        let link = format!("/?tabtunnel_key={}", registration.key());
        let post = |origin: &str| {
            Request::post(&link)
                .header(header::HOST, &host)
                .header(header::ORIGIN, origin)
                .body(Body::empty())
                .unwrap()
        };
        let refused = app
            .clone()
            .oneshot(post("http://f-0123456789abcdef.tunnel.example.edu"))
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(!refused.headers().contains_key(header::SET_COOKIE));
        assert!(
            refused.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
        let own = app.oneshot(post(&format!("http://{host}"))).await.unwrap();
        assert_eq!(own.status(), StatusCode::FOUND);
        assert!(own.headers().contains_key(header::SET_COOKIE));
    }

    #[tokio::test]
    async fn the_bundle_is_served_compressed_as_wasm() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(
            dir.path().join("pkg/client_wasm_bg.wasm"),
            vec![0u8; 100_000],
        )
        .unwrap();
        std::fs::write(
            dir.path().join("index.html"),
            "<!doctype html><title>t</title>",
        )
        .unwrap();
        let app = app(state_with_web_dir(dir.path()));
        let request = Request::get("/pkg/client_wasm_bg.wasm")
            .header(header::HOST, "127.0.0.1")
            .header(header::ACCEPT_ENCODING, "gzip")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/wasm");
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            body.len() < 10_000,
            "100 kB of zeros compress: {} bytes",
            body.len()
        );

        let index = app
            .oneshot(
                Request::get("/")
                    .header(header::HOST, "127.0.0.1")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(index.status(), StatusCode::OK);
    }
}
