//! The tabtunnel relay: serves the page and its wasm bundle, carries each tab's SSH bytes
//! to an SSH server its operator configured, and opens forward listeners for live
//! sessions. See `docs/ARCHITECTURE.md` for the whole picture.

pub mod client_addr;
pub mod config;
mod connection;
pub mod demo;
mod limits;
pub mod listen;
pub mod log_limit;
pub mod metrics;
mod outgoing;
pub mod ports;
mod proxy_protocol;
mod rate;
mod serve;
mod session;
mod ssh_pipe;
pub mod tls;
mod token_check;
pub mod web_guard;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tabtunnel_proto::MAX_FRAME;

use crate::metrics::Metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;

pub use client_addr::ClientAddr;
pub use config::Config;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    config: Arc<Config>,
    next_session: Arc<AtomicU64>,
    /// Cancelled when the relay shuts down: every session tells its tab and ends.
    shutdown: CancellationToken,
    /// The sessions, so shutdown can wait for them to say goodbye.
    sessions: TaskTracker,
    /// Every place a session takes (waiting for Hello, session, login), by limit.
    admission: Arc<limits::Admission>,
    metrics: Arc<Metrics>,
    /// The forward ports the relay holds, and the caps on forwards across sessions.
    ports: Arc<ports::PortBook>,
    /// Set when the config names a certificate and key: `run` then serves HTTPS only.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Failed token checks of `/api/targets`, by source.
    token_checks: Arc<token_check::TokenChecks>,
}

impl AppState {
    /// Loads the TLS certificate and key if the config names them, so a bad pair stops
    /// the relay before it listens.
    pub fn new(config: Config) -> Result<Self, tls::TlsError> {
        let metrics = Arc::<Metrics>::default();
        Ok(Self {
            tls: config.load_tls()?,
            config: Arc::new(config),
            next_session: Arc::new(AtomicU64::new(1)),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            admission: Arc::default(),
            ports: Arc::new(ports::PortBook::new(metrics.forward_binds.clone())),
            metrics,
            token_checks: Arc::default(),
        })
    }

    /// Whether `run` serves HTTPS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// How long shutdown waits for sessions to tell their tabs.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The relay's HTTP routes: `/ws` (sessions), `/api/targets`, and the page at `/`.
pub fn app(state: AppState) -> Router {
    // Compressed when the browser accepts it: the wasm bundle shrinks about threefold.
    let static_files = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(state.config.web_dir.clone()),
            web_guard::static_files,
        ))
        .layer(CompressionLayer::new())
        .service(ServeDir::new(&state.config.web_dir).append_index_html_on_directories(true));
    Router::new()
        .route("/ws", get(websocket))
        .route("/api/targets", get(targets))
        .route("/healthz", get(|| async { "ok\n" }))
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
        .with_state(state)
}

/// Serves `app` on `listener` (HTTPS if the state has TLS) until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (token, sessions) = (state.shutdown.clone(), state.sessions.clone());
    let (config, tls, metrics) = (
        state.config.clone(),
        state.tls.clone(),
        state.metrics.clone(),
    );
    // The relay's own accept loop: connection caps, TLS, HTTP timeouts (see serve.rs).
    let result = serve::serve(listener, app(state), config, tls, metrics, token, shutdown).await;
    sessions.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, sessions.wait()).await;
    result
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

/// Target names, never their addresses; what the page needs to tell users how to reach a
/// forward (the relay host's public name, the source networks forwards accept) and how
/// many forwards a session may open. With `Authorization: Bearer TOKEN` (the page sends
/// the token it holds; see `token_check` for the bound on failed checks), also the
/// token's holder and their block of forward ports: 401 for a token that is not this
/// relay's, 429 when the source failed too often, each with the rest of the answer and a
/// `token_error` the page shows.
async fn targets(
    State(state): State<AppState>,
    peer: ClientAddr,
    headers: axum::http::HeaderMap,
) -> Response {
    use axum::http::{StatusCode, header};
    let config = &state.config;
    let targets: Vec<_> = config
        .targets
        .keys()
        .map(|name| serde_json::json!({ "name": name }))
        .collect();
    let sources: Vec<String> = config
        .forward_allowed_sources
        .iter()
        .map(|net| net.to_string())
        .collect();
    let mut answer = serde_json::json!({
        "targets": targets,
        "token_required": !config.tokens.is_empty(),
        "public_host": config.public_host,
        "forward_allowed_sources": sources,
        "forwards_per_session": config.limits.forwards_per_session,
    });
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return Json(answer).into_response();
    };
    if config.tokens.is_empty() {
        // Nothing to check: the relay asks for no token.
        return Json(answer).into_response();
    }
    let token = authorization
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    let (status, error) = match state.token_checks.check(config, peer.ip(), token) {
        token_check::TokenCheck::Holder(holder) => {
            let block = ports::block_of(config, Some(holder))
                .map(|b| serde_json::json!({ "first": b.start(), "last": b.end() }));
            answer["token_holder"] = holder.into();
            answer["port_block"] = block.unwrap_or_default();
            (StatusCode::OK, None)
        }
        token_check::TokenCheck::Wrong => (
            StatusCode::UNAUTHORIZED,
            Some("this access token is not valid here: check it with your relay's operator"),
        ),
        token_check::TokenCheck::TooMany => (
            StatusCode::TOO_MANY_REQUESTS,
            Some(
                "too many wrong access tokens from your address of late, so this one was not checked: wait a minute and reload the page",
            ),
        ),
    };
    if let Some(error) = error {
        state.metrics.refused("token_check");
        // Only that a check failed, and from where: never the token.
        if let Some(suppressed) = state.metrics.refusal_log.admit(peer.ip(), "token_check") {
            tracing::info!(%peer, suppressed, %status, "token check of /api/targets failed");
        }
        answer["token_error"] = error.into();
    }
    let mut response = (
        status,
        // The answer names the token's holder: for this client only.
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::VARY, "Authorization"),
        ],
        Json(answer),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            token_check::FAILED_CHECK_REFILL.as_secs().into(),
        );
    }
    response
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
                ws_tx, ws_rx, config, metrics, peer, shutdown, holder, waiting,
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
            web_dir: dir.to_owned(),
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

    /// A relay with a block of 10 forward ports for each of alice and bob.
    fn state_with_port_blocks() -> AppState {
        let mut config = Config {
            forward_ports: 20000..=20099,
            forward_ports_per_user: Some(10),
            ..Config::default()
        };
        config.add_target("lab", "10.1.2.3:2222", "test").unwrap();
        for (name, secret) in [
            ("alice", "alice-0123456789abcdef"),
            ("bob", "bob-0123456789abcdef"),
        ] {
            config.tokens.push(config::AccessToken {
                name: name.into(),
                secret: secret.into(),
            });
        }
        config.validate().unwrap();
        AppState::new(config).unwrap()
    }

    /// `GET /api/targets` with `authorization`: the status and the JSON answer.
    async fn ask_targets(
        app: &Router,
        authorization: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::get("/api/targets").header(header::HOST, "127.0.0.1");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_token_holder_learns_their_own_block_and_two_blocks_never_meet() {
        let app = app(state_with_port_blocks());
        let (status, alice) = ask_targets(&app, Some("Bearer alice-0123456789abcdef")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(alice["token_holder"], "alice");
        assert_eq!(
            alice["port_block"],
            serde_json::json!({ "first": 20000, "last": 20009 })
        );
        assert_eq!(alice["targets"], serde_json::json!([{ "name": "lab" }]));
        let (_, bob) = ask_targets(&app, Some("bearer bob-0123456789abcdef")).await;
        assert_eq!(bob["token_holder"], "bob");
        assert_eq!(
            bob["port_block"],
            serde_json::json!({ "first": 20010, "last": 20019 })
        );
        // Without a token: the public answer, as before, and no holder or block.
        let (status, public) = ask_targets(&app, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(public["token_required"], true);
        assert!(public.get("token_holder").is_none() && public.get("port_block").is_none());
    }

    #[tokio::test]
    async fn wrong_tokens_are_refused_then_no_longer_checked() {
        let app = app(state_with_port_blocks());
        for guess in [
            "Bearer alice-0123456789abcdeX",
            "Basic YWxpY2U6eA==",
            "Bearer",
        ] {
            let (status, answer) = ask_targets(&app, Some(guess)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{guess}");
            assert!(
                answer["token_error"]
                    .as_str()
                    .unwrap()
                    .contains("not valid here")
            );
            // The page still gets what it needs to offer the targets.
            assert_eq!(answer["targets"], serde_json::json!([{ "name": "lab" }]));
            assert!(answer.get("port_block").is_none());
        }
        for _ in 3..token_check::FAILED_CHECK_BURST {
            ask_targets(&app, Some("Bearer guess")).await;
        }
        // Budget spent: the right token is not even compared now.
        let (status, answer) = ask_targets(&app, Some("Bearer alice-0123456789abcdef")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            answer["token_error"]
                .as_str()
                .unwrap()
                .contains("too many wrong access tokens")
        );
        assert!(answer.get("token_holder").is_none());
        let response = app
            .oneshot(
                Request::get("/api/targets")
                    .header(header::HOST, "127.0.0.1")
                    .header(header::AUTHORIZATION, "Bearer guess")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "12");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    }

    #[tokio::test]
    async fn a_failed_token_check_never_logs_the_token() {
        let (logs, _logging) = capture_logs();
        let app = app(state_with_port_blocks());
        ask_targets(&app, Some("Bearer not-a-token-secret-4242")).await;
        let logged = logs.lock().unwrap().clone();
        let logged = String::from_utf8_lossy(&logged);
        assert!(
            logged.contains("token check of /api/targets failed"),
            "{logged}"
        );
        assert!(!logged.contains("secret-4242"), "{logged}");
    }

    /// What this thread logs (a `#[tokio::test]` runs on one), in one buffer, while the
    /// guard lives.
    fn capture_logs() -> (
        std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        tracing::subscriber::DefaultGuard,
    ) {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || LogWriter(writer.clone()))
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (buffer, tracing::subscriber::set_default(subscriber))
    }

    struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for LogWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
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
