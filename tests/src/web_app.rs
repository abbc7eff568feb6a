//! A small real web app (axum on loopback) to open through web forwards: a page with
//! links, a redirect, a form that posts, a large streamed body, an upload it hashes, a
//! response that waits for ever (to hold a request in progress), the request's headers
//! as text, and a WebSocket echo with a page that uses it.

use std::net::SocketAddr;

use anyhow::Result;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Form, Query};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use tokio::task::JoinHandle;

/// The app, served on 127.0.0.1 until dropped.
#[derive(Debug)]
pub struct WebApp {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

/// The home page: what a browser test reads first.
pub const HOME_TITLE: &str = "Forwarded app";

impl WebApp {
    pub async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/", get(home))
            .route("/redirect", get(|| async { Redirect::to("landed") }))
            .route("/absolute", get(|| async { Redirect::to("/landed") }))
            .route(
                "/landed",
                get(|| async { Html(page("Landed", "<p id=\"landed\">after the redirect</p>")) }),
            )
            .route("/form", get(form))
            .route("/submit", post(submit))
            .route("/big", get(big))
            .route("/upload", post(upload))
            .route("/hold", get(hold))
            .route("/headers", get(headers))
            .route("/ws", get(ws))
            .route("/echo", get(echo_page));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, task })
    }
}

impl Drop for WebApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn page(title: &str, body: &str) -> String {
    format!("<!doctype html><meta charset=\"utf-8\"><title>{title}</title><h1>{title}</h1>{body}\n")
}

async fn home() -> Html<String> {
    Html(page(
        HOME_TITLE,
        "<ul><li><a id=\"to-redirect\" href=\"redirect\">redirect</a>\
         <li><a id=\"to-form\" href=\"form\">form</a><li><a id=\"to-echo\" href=\"echo\">echo</a></ul>",
    ))
}

async fn form() -> Html<String> {
    Html(page(
        "Form",
        "<form method=\"post\" action=\"submit\"><input id=\"name\" name=\"name\">\
         <button id=\"send\" type=\"submit\">Send</button></form>",
    ))
}

#[derive(serde::Deserialize)]
struct Submitted {
    name: String,
}

async fn submit(Form(form): Form<Submitted>) -> Html<String> {
    let name: String = form
        .name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect();
    Html(page(
        "Submitted",
        &format!("<p id=\"greeting\">Hello, {name}</p>"),
    ))
}

#[derive(serde::Deserialize)]
struct Size {
    bytes: usize,
}

/// `bytes` of [`crate::pattern`] (seed 5), streamed in 64 KiB chunks.
async fn big(Query(size): Query<Size>) -> Response {
    const CHUNK: usize = 64 * 1024;
    let data = Bytes::from(crate::pattern(5, size.bytes));
    let chunks = (0..size.bytes.div_ceil(CHUNK)).map(move |i| {
        let end = ((i + 1) * CHUNK).min(data.len());
        Ok::<_, std::io::Error>(data.slice(i * CHUNK..end))
    });
    Body::from_stream(futures::stream::iter(chunks)).into_response()
}

/// The upload's length and SHA-256, read as it streams in.
async fn upload(body: Body) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    let mut len = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        len += chunk.len();
        hash.update(&chunk);
    }
    format!("{len} {}", crate::hex(&hash.finalize()))
}

/// Sends its head and one line, then never ends: a request held in progress.
async fn hold() -> Response {
    let first = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("held\n")) });
    Body::from_stream(first.chain(futures::stream::pending())).into_response()
}

/// The request's headers, one `name: value` a line, names in lower case.
async fn headers(headers: HeaderMap) -> String {
    let mut lines: Vec<String> = headers
        .iter()
        .map(|(n, v)| format!("{}: {}", n, v.to_str().unwrap_or("?")))
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.next().await {
        let reply = match message {
            Message::Text(text) => Message::Text(format!("echo: {}", text.as_str()).into()),
            Message::Binary(data) => Message::Binary(data),
            Message::Close(_) => return,
            _ => continue,
        };
        if futures::SinkExt::send(&mut socket, reply).await.is_err() {
            return;
        }
    }
}

/// A page that sends what is typed over a WebSocket to `ws` (relative to the page, so it
/// works by name and by path) and shows the answers.
async fn echo_page() -> impl IntoResponse {
    let body = page(
        "Echo",
        r#"<input id="say"><button id="go">Send</button><p id="state">connecting</p><ol id="answers"></ol>
<script>
const url = new URL("ws", location.href);
url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
const socket = new WebSocket(url);
socket.onopen = () => { document.getElementById("state").textContent = "open"; };
socket.onclose = () => { document.getElementById("state").textContent = "closed"; };
socket.onmessage = (event) => {
  const li = document.createElement("li");
  li.textContent = event.data;
  document.getElementById("answers").append(li);
};
document.getElementById("go").onclick = () => socket.send(document.getElementById("say").value);
</script>"#,
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body)
}
