//! The embedded page through the whole router (so with the guard's headers), and the
//! folder override.

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::{AppState, Config, app};

fn relay(web_dir: Option<&Path>) -> Router {
    let config = Config {
        web_dir: web_dir.map(Path::to_owned),
        ..Config::default()
    };
    app(AppState::new(config).unwrap())
}

async fn get(app: &Router, path: &str, headers: &[(header::HeaderName, &str)]) -> Response {
    let mut request = Request::get(path).header(header::HOST, "127.0.0.1");
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    app.clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn body(response: Response) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut brotli::Decompressor::new(bytes, 4096), &mut out).unwrap();
    out
}

#[tokio::test]
async fn each_file_has_its_content_type_and_the_security_headers() {
    let app = relay(None);
    for (path, wanted) in [
        ("/", "text/html; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/main.js", "text/javascript; charset=utf-8"),
        ("/client_worker.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
    ] {
        let response = get(&app, path, &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], wanted, "{path}");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(
            response.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
    }
    // The bundle is there only once `cargo xtask wasm` has run: its type by name.
    assert_eq!(content_type("/pkg/client_wasm_bg.wasm"), "application/wasm");
    assert_eq!(
        content_type("/pkg/client_wasm.js"),
        "text/javascript; charset=utf-8"
    );
    let index = body(get(&app, "/", &[]).await).await;
    assert_eq!(&index[..], find("/index.html").unwrap().identity);
}

#[tokio::test]
async fn the_form_sent_is_the_smallest_the_client_accepts_and_compressed_at_build_time() {
    let app = relay(None);
    let file = find("/main.js").unwrap();
    for (accept, wanted) in [
        (None, None),
        (Some("gzip"), Some("gzip")),
        (Some("gzip, deflate, br"), Some("br")),
        (Some("br;q=0, gzip;q=0.5"), Some("gzip")),
        (Some("gzip;q=0"), None),
        (Some("*"), Some("br")),
        (Some("identity"), None),
        (Some("*;q=0, gzip"), Some("gzip")),
    ] {
        let headers: Vec<_> = accept
            .map(|a| (header::ACCEPT_ENCODING, a))
            .into_iter()
            .collect();
        let response = get(&app, "/main.js", &headers).await;
        assert_eq!(response.status(), StatusCode::OK, "{accept:?}");
        assert_eq!(response.headers()[header::VARY], "accept-encoding");
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap()),
            wanted,
            "{accept:?}"
        );
        let sent = body(response).await;
        let plain = match wanted {
            Some("gzip") => gunzip(&sent),
            Some("br") => unbrotli(&sent),
            _ => sent.to_vec(),
        };
        assert_eq!(plain, file.identity, "{accept:?}");
        if wanted.is_some() {
            assert!(sent.len() < file.identity.len() / 2, "{accept:?}");
        }
    }
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304_and_each_form_has_its_own_etag() {
    let app = relay(None);
    let gzip = [(header::ACCEPT_ENCODING, "gzip")];
    let first = get(&app, "/style.css", &gzip).await;
    let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with("-gzip\""), "{etag}");
    let plain = get(&app, "/style.css", &[]).await;
    let plain_etag = plain.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert_ne!(etag, plain_etag);

    let again = get(
        &app,
        "/style.css",
        &[
            (header::ACCEPT_ENCODING, "gzip"),
            (header::IF_NONE_MATCH, &etag),
        ],
    )
    .await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[header::ETAG], etag.as_str());
    assert_eq!(again.headers()[header::CACHE_CONTROL], "no-cache");
    assert!(body(again).await.is_empty());
    let weak = format!("\"other\", W/{etag}");
    let weakly = get(
        &app,
        "/style.css",
        &[
            (header::ACCEPT_ENCODING, "gzip"),
            (header::IF_NONE_MATCH, &weak),
        ],
    )
    .await;
    assert_eq!(weakly.status(), StatusCode::NOT_MODIFIED);
    // Another form, another file, or a changed file: the whole answer.
    for (path, accept, tag) in [
        ("/style.css", "identity", etag.as_str()),
        ("/main.js", "gzip", etag.as_str()),
        ("/style.css", "gzip", "\"0123\""),
    ] {
        let response = get(
            &app,
            path,
            &[
                (header::ACCEPT_ENCODING, accept),
                (header::IF_NONE_MATCH, tag),
            ],
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{path} {accept} {tag}");
    }
}

#[tokio::test]
async fn paths_that_are_not_the_page_are_404() {
    let app = relay(None);
    for path in [
        "/nothing.js",
        "/pkg",
        "/test/modules.test.js",
        "/package.json",
        "/.gitignore",
        "/../Cargo.toml",
        "/index.html/",
    ] {
        let response = get(&app, path, &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let post = app
        .oneshot(
            Request::post("/index.html")
                .header(header::HOST, "127.0.0.1")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_web_dir_replaces_the_embedded_page_and_stays_guarded() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<!doctype html>folder").unwrap();
    std::fs::write(dir.path().join(".env"), "e").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("out")).unwrap();
    let app = relay(Some(dir.path()));
    let index = get(&app, "/", &[]).await;
    assert_eq!(index.status(), StatusCode::OK);
    assert!(
        index
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY)
    );
    assert_eq!(&body(index).await[..], b"<!doctype html>folder");
    // Not in the folder, though in the binary; and what the guard refuses.
    for path in ["/main.js", "/.env", "/out", "/%2eenv"] {
        let response = get(&app, path, &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[test]
fn the_start_says_what_to_do_when_the_page_cannot_load() {
    let dir = tempfile::tempdir().unwrap();
    let folder = Source::of(Some(dir.path()));
    assert_eq!(
        folder,
        Source::Folder {
            dir: dir.path(),
            bundle: false
        }
    );
    assert!(folder.warning().unwrap().contains("cargo xtask wasm"));
    std::fs::create_dir(dir.path().join("pkg")).unwrap();
    std::fs::write(dir.path().join("pkg/client_wasm.js"), "").unwrap();
    assert_eq!(Source::of(Some(dir.path())).warning(), None);
    let bare = Source::Embedded {
        files: 3,
        bundle: false,
    };
    let warning = bare.warning().unwrap();
    for what in ["carries no client bundle", "cargo xtask dist", "--web-dir"] {
        assert!(warning.contains(what), "{warning}");
    }
    assert!(bare.to_string().contains("WITHOUT the wasm client"));
    let embedded = Source::of(None);
    assert!(matches!(embedded, Source::Embedded { files, .. } if files > 10));
}
