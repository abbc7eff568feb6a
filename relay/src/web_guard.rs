//! What a browser may make of the relay's HTTP answers. Three guards, applied in
//! [`crate::app`]:
//!
//! - [`guard`], on every route: the Host header must name this relay
//!   ([`Config::host_allowed`]), or the answer is 421. A page that rebinds its own DNS
//!   name to the relay's address is same-origin with the relay in the browser's eyes, so
//!   only the name it carries tells it apart.
//! - The same layer puts the security headers on every answer, refusals included: a
//!   Content-Security-Policy that allows what the page loads and nothing else, and no
//!   framing (the host-key dialog must not be clickjacked).
//! - [`static_files`], before `ServeDir`: no dotfiles, no symlinks out of `web_dir`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::metrics::Metrics;

/// What the page loads, and from where (web/index.html, its ES modules and wasm-bindgen's
/// `client_wasm.js`): its own scripts and styles (no inline ones), the SSH client's
/// worker (`/client_worker.js`; said outright rather than left to the `script-src`
/// fallback, and never `blob:`), the wasm bundle, which needs `'wasm-unsafe-eval'` to
/// be compiled, `fetch('/api/targets')` and the WebSocket to `/ws` (CSP3's `'self'`
/// covers ws:/wss: of the page's own host). The worker's own answer carries this policy
/// too, so inside it the same holds. No
/// plugins, no `<base>`, no form posts (the forms are handled in script; a form sent
/// before the script runs would put the password in the URL), and no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; \
     script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The headers every answer carries. `X-Frame-Options` is for browsers that predate
/// `frame-ancestors`.
const SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// Longest piece of a refused Host header repeated in answers and logs.
const SHOWN_HOST_LEN: usize = 80;

/// What the guard reads: the allowed names, and where it counts refusals.
#[derive(Debug, Clone)]
pub struct Guard {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
}

/// Refuses requests for names that are not the relay's, then adds the security headers
/// to whatever the answer is.
pub async fn guard(State(state): State<Guard>, request: Request, next: Next) -> Response {
    let mut response = match check_host(&state.config, &request) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            state.metrics.refused("host");
            refusal.into_response()
        }
    };
    add_security_headers(response.headers_mut());
    response
}

/// Puts the relay's security headers on an answer of its own. Web forwards add them to
/// their refusals and redirects, never to what the forwarded app answers.
pub fn add_security_headers(headers: &mut axum::http::HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// Why a request's host was refused; the answer says what the operator can do.
#[derive(Debug, thiserror::Error)]
enum HostRefusal {
    #[error(
        "This relay does not answer to the name {0}: a page under a name the relay does not know could be a DNS-rebinding attack. If it is a name of this relay, its operator adds it to allowed_hosts in the config file (or starts the relay with --allow-host NAME).\n"
    )]
    Unknown(String),
    #[error("HTTP/1.1 requests must name the host they are for in one Host header.\n")]
    Missing,
    #[error("The request has more than one Host header; send exactly one.\n")]
    Several,
}

impl IntoResponse for HostRefusal {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Unknown(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::Missing | Self::Several => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// Checks every name the request gives for its host: the Host header and, in HTTP/2 or
/// an absolute-form request line, the URI's authority. HTTP/1.0 may leave both out: no
/// browser does, but simple health checks (HAProxy's default `httpchk`) do.
fn check_host(config: &Config, request: &Request) -> Result<(), HostRefusal> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(HostRefusal::Several);
    }
    let authority = request.uri().authority().map(|a| a.as_str());
    if header.is_none() && authority.is_none() {
        return match request.version() {
            Version::HTTP_09 | Version::HTTP_10 => Ok(()),
            _ => Err(HostRefusal::Missing),
        };
    }
    let header = header.map(|h| h.to_str().map_err(|_| "(not text)"));
    for host in header.into_iter().chain(authority.map(Ok)) {
        match host {
            Ok(host) if config.host_allowed(host) => {}
            Ok(host) => {
                let shown: String = host.chars().take(SHOWN_HOST_LEN).collect();
                tracing::debug!(host = shown, "request refused: not a name of this relay");
                return Err(HostRefusal::Unknown(format!("{shown:?}")));
            }
            Err(shown) => return Err(HostRefusal::Unknown(shown.to_owned())),
        }
    }
    Ok(())
}

/// Lets through to `ServeDir` only paths that stay inside `web_dir` once resolved: no
/// segment starting with `.` (`.git/`, `.env`, and `..`, which `ServeDir` refuses too),
/// and nothing a symlink leads out of the folder (`ServeDir` follows symlinks anywhere).
/// Refusals are the same empty 404 as a missing file, so they reveal nothing.
pub async fn static_files(
    State(web_dir): State<Arc<PathBuf>>,
    request: Request,
    next: Next,
) -> Response {
    if inside_web_dir(&web_dir, request.uri().path()).await {
        next.run(request).await
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// Whether URI path `path` names a file or folder inside `web_dir`, symlinks resolved,
/// with no dotted segment. A folder's `index.html` must be inside too, since `ServeDir`
/// serves it for the folder.
async fn inside_web_dir(web_dir: &Path, path: &str) -> bool {
    let Ok(decoded) = percent_encoding::percent_decode_str(path).decode_utf8() else {
        return false;
    };
    let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    if segments
        .iter()
        .any(|s| s.starts_with('.') || s.contains('\\'))
    {
        return false;
    }
    let Ok(root) = tokio::fs::canonicalize(web_dir).await else {
        return false;
    };
    let Ok(resolved) = tokio::fs::canonicalize(root.join(segments.join("/"))).await else {
        return false;
    };
    if !resolved.starts_with(&root) {
        return false;
    }
    if resolved.is_dir() {
        return match tokio::fs::canonicalize(resolved.join("index.html")).await {
            Ok(index) => index.starts_with(&root),
            // No index: ServeDir answers 404 itself.
            Err(_) => true,
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_page_its_own_worker_and_nothing_more() {
        let directives: Vec<&str> = CONTENT_SECURITY_POLICY.split("; ").collect();
        for wanted in [
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "worker-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(
                directives.contains(&wanted),
                "{CONTENT_SECURITY_POLICY} lacks {wanted}"
            );
        }
        for loose in [
            "unsafe-inline",
            "'unsafe-eval'",
            "blob:",
            "data:",
            "*",
            "child-src",
        ] {
            assert!(
                !CONTENT_SECURITY_POLICY.contains(loose),
                "{CONTENT_SECURITY_POLICY} allows {loose}"
            );
        }
    }

    #[tokio::test]
    async fn only_paths_that_stay_in_the_folder_pass() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path();
        std::fs::create_dir_all(web.join("pkg")).unwrap();
        std::fs::write(web.join("index.html"), "i").unwrap();
        std::fs::write(web.join("pkg/a.js"), "a").unwrap();
        std::fs::write(web.join(".env"), "e").unwrap();
        std::os::unix::fs::symlink(web.join("pkg/a.js"), web.join("inside.js")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), web.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path(), web.join("outdir")).unwrap();
        for (path, allowed) in [
            ("/", true),
            ("/index.html", true),
            ("/pkg/a.js", true),
            ("/pkg/", true),
            ("/inside.js", true),
            ("/missing", false),
            ("/.env", false),
            ("/%2eenv", false),
            ("/pkg/../.env", false),
            ("/out", false),
            ("/outdir/secret", false),
            ("/outdir/", false),
            ("/%ff", false),
        ] {
            assert_eq!(inside_web_dir(web, path).await, allowed, "{path}");
        }
    }
}
