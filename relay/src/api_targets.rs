//! `GET /api/targets`: what the page needs before a session. Public: the target names
//! (never their addresses), how users reach a forward (the relay host's public name, the
//! source networks forwards accept) and how many forwards a session may open. For a
//! token holder, also their name and block of forward ports, which turns the route into a
//! token check (bounded in `token_check`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::client_addr::ClientAddr;
use crate::config::Config;
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::ports;
use crate::token_check::{self, TokenCheck};

/// What the route reads: the config, where it counts refusals, and the admission that
/// keeps the failed token checks by source (one book for the relay, which Hellos charge
/// too).
#[derive(Debug, Clone)]
pub struct TargetsApi {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub admission: Arc<Admission>,
}

/// The public answer; with `Authorization: Bearer TOKEN` (the page sends the token it
/// holds), also the token's holder and their block of forward ports, or 401 for a token
/// that is not this relay's, 429 when the source failed too often (`token_check`), each
/// with the public answer and a `token_error` the page shows.
pub async fn targets(
    State(state): State<TargetsApi>,
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
    let (status, error) = match state
        .admission
        .token_checks()
        .check(config, peer.ip(), token)
    {
        TokenCheck::Holder(holder) => {
            let block = ports::block_of(config, Some(holder))
                .map(|b| serde_json::json!({ "first": b.start(), "last": b.end() }));
            answer["token_holder"] = holder.into();
            answer["port_block"] = block.unwrap_or_default();
            (StatusCode::OK, None)
        }
        TokenCheck::Wrong => (
            StatusCode::UNAUTHORIZED,
            Some("this access token is not valid here: check it with your relay's operator"),
        ),
        TokenCheck::TooMany => (
            StatusCode::TOO_MANY_REQUESTS,
            Some(token_check::TOO_MANY_MESSAGE),
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

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::config;

    /// A relay with a block of 10 forward ports for each of alice and bob.
    fn state_with_port_blocks() -> TargetsApi {
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
        TargetsApi {
            config: Arc::new(config),
            metrics: Arc::default(),
            admission: Arc::default(),
        }
    }

    /// The route alone (the relay's Host guard is tested with the whole app).
    fn app(api: TargetsApi) -> Router {
        Router::new().route("/api/targets", axum::routing::get(targets).with_state(api))
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
}
