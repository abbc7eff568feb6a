//! The page the relay serves at `/`: the copy built into the binary (`build.rs` embeds
//! web/ and web/pkg, compressed once at build time), or a folder given by `web_dir`
//! (`--web-dir`), for developers, served from disk behind [`web_guard::static_files`].
//!
//! Caching: no URL of the page carries a content hash (its ES modules import each other by
//! name, and wasm-bindgen's glue fetches `client_wasm_bg.wasm` by name), so every embedded
//! file is `Cache-Control: no-cache` with a strong ETag from its content hash: a browser
//! revalidates each file at each load (a 304 costs a few hundred bytes) and never mixes a
//! new module with a stale one after an upgrade.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;

use crate::web_guard;

/// One file of the page as the build embedded it.
#[derive(Debug)]
pub(crate) struct EmbeddedFile {
    /// The URL path, `/index.html`, `/pkg/client_wasm_bg.wasm`.
    path: &'static str,
    /// The first 128 bits of the SHA-256 of `identity`, in hex.
    hash: &'static str,
    identity: &'static [u8],
    /// Compressed at build time; `None` where compressing saved nothing.
    gzip: Option<&'static [u8]>,
    brotli: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/embedded_page.rs"));

/// The wasm-bindgen glue, which `cargo xtask wasm` builds: without it the page cannot load.
const BUNDLE: &str = "/pkg/client_wasm.js";

/// Where the page comes from, for `--check-config` and the start's notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// Built into the binary; `bundle`: with the wasm client (web/pkg).
    Embedded { files: usize, bundle: bool },
    /// A folder (`web_dir`); `bundle`: it holds `pkg/client_wasm.js`.
    Folder { dir: &'a Path, bundle: bool },
}

impl<'a> Source<'a> {
    pub fn of(web_dir: Option<&'a Path>) -> Self {
        match web_dir {
            Some(dir) => Self::Folder {
                dir,
                bundle: dir.join(BUNDLE.trim_start_matches('/')).is_file(),
            },
            None => Self::Embedded {
                files: EMBEDDED.len(),
                bundle: find(BUNDLE).is_some(),
            },
        }
    }

    /// A warning for the start when the page will not load, saying what to do.
    pub fn warning(&self) -> Option<String> {
        match *self {
            Self::Embedded { bundle: false, .. } => Some(
                "this relay binary carries no client bundle (it was built before `cargo xtask wasm`): the page will not load; build one that does with `cargo xtask dist`, or run `cargo xtask wasm` and build the relay again, or serve a folder with --web-dir".to_owned(),
            ),
            Self::Folder { dir, bundle: false } => Some(format!(
                "{} has no pkg/client_wasm.js: the page will not load; build it with `cargo xtask wasm`",
                dir.display()
            )),
            _ => None,
        }
    }
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Embedded { files, bundle } => write!(
                f,
                "embedded in this binary ({files} files, {})",
                if bundle {
                    "with the wasm client"
                } else {
                    "WITHOUT the wasm client"
                }
            ),
            Self::Folder { dir, bundle } => write!(
                f,
                "the folder {} (web_dir{})",
                dir.display(),
                if bundle {
                    ""
                } else {
                    ", no pkg/client_wasm.js"
                }
            ),
        }
    }
}

/// The service behind every path no route takes: the folder if `web_dir` names one,
/// else the embedded page.
pub fn service(web_dir: Option<&Path>) -> Router {
    match web_dir {
        // Compressed when the browser accepts it: the wasm bundle shrinks about threefold.
        Some(dir) => Router::new().fallback_service(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    Arc::new(dir.to_owned()),
                    web_guard::static_files,
                ))
                .layer(CompressionLayer::new())
                .service(ServeDir::new(dir).append_index_html_on_directories(true)),
        ),
        // `get` answers HEAD too, and 405 to other methods.
        None => Router::new().fallback(axum::routing::get(embedded)),
    }
}

fn find(path: &str) -> Option<&'static EmbeddedFile> {
    EMBEDDED
        .binary_search_by(|file| file.path.cmp(path))
        .ok()
        .map(|i| &EMBEDDED[i])
}

async fn embedded(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let file = if path.ends_with('/') {
        find(&format!("{path}index.html"))
    } else {
        find(path)
    };
    match file {
        Some(file) => answer(file, &headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The form of a file a request gets: the smallest the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Brotli,
    Gzip,
    Identity,
}

impl Coding {
    /// The ETag suffix and Content-Encoding of each form: a strong ETag names one
    /// representation, so each form has its own.
    fn name(self) -> Option<&'static str> {
        match self {
            Self::Brotli => Some("br"),
            Self::Gzip => Some("gzip"),
            Self::Identity => None,
        }
    }
}

/// Whether the client's Accept-Encoding takes `coding` (named, or `*`, with q above 0).
fn accepts(headers: &HeaderMap, coding: &str) -> bool {
    let mut named = None;
    let mut star = None;
    for item in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let q = parts
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(Some(1.0), |q| q.parse::<f32>().ok())
            .unwrap_or(0.0);
        if name.eq_ignore_ascii_case(coding) {
            named = Some(q > 0.0);
        } else if name == "*" {
            star = Some(q > 0.0);
        }
    }
    named.or(star).unwrap_or(false)
}

fn answer(file: &EmbeddedFile, headers: &HeaderMap) -> Response {
    let (coding, body) = match (file.brotli, file.gzip) {
        (Some(br), _) if accepts(headers, "br") => (Coding::Brotli, br),
        (_, Some(gz)) if accepts(headers, "gzip") => (Coding::Gzip, gz),
        _ => (Coding::Identity, file.identity),
    };
    let etag = match coding.name() {
        Some(name) => format!("\"{}-{name}\"", file.hash),
        None => format!("\"{}\"", file.hash),
    };
    let mut response = if none_match(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = body.into_response();
        let out = response.headers_mut();
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(file.path)),
        );
        if let Some(name) = coding.name() {
            out.insert(header::CONTENT_ENCODING, HeaderValue::from_static(name));
        }
        response
    };
    let out = response.headers_mut();
    out.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex and a coding name"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response
}

/// Whether If-None-Match lists `etag` (or is `*`): the client's copy is current. The
/// comparison is weak, as RFC 9110 wants for If-None-Match.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The Content-Type of a page file by its extension; text in UTF-8.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests;
