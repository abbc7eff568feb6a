//! Headless Chromium driven through chromedriver (WebDriver), both started per test
//! and stopped on drop. Flags are the ones that work on these machines (DESIGN.md).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser session: chromedriver process, its Chromium, and the WebDriver client.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Result<Self> {
        Self::start_with_args(&[]).await
    }

    /// [`Browser::start`] with more Chromium flags, e.g. to trust a test certificate.
    pub async fn start_with_args(extra: &[String]) -> Result<Self> {
        for path in [CHROMIUM, CHROMEDRIVER] {
            if !std::path::Path::new(path).exists() {
                bail!(
                    "{path} is missing: install chromium and chromium-driver (run `cargo xtask setup`)"
                );
            }
        }
        let port = crate::sshd::free_port()?;
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        let ready = crate::wait_for(
            "chromedriver to listen",
            Duration::from_secs(20),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
        if let Err(err) = ready {
            let _ = driver.kill();
            let _ = driver.wait();
            return Err(err);
        }
        let profile = tempfile::Builder::new()
            .prefix("tabtunnel-chromium-")
            .tempdir()?;
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1200,900",
            // Exact performance.memory figures and a gc() to call before reading them,
            // for the memory-bound tests.
            "--enable-precise-memory-info",
            "--js-flags=--expose-gc",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .chain(extra.iter().cloned())
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        // The relay builds rustls with ring and fantoccini with aws-lc-rs: with both in the
        // build, rustls wants the process to pick one before a client is made.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match ClientBuilder::rustls()?
            .capabilities(caps)
            .connect(&url)
            .await
        {
            Ok(client) => client,
            Err(err) => {
                let _ = driver.kill();
                let _ = driver.wait();
                bail!("cannot start Chromium through chromedriver: {err}");
            }
        };
        Ok(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Runs `body` (an async function body, with `m` bound to the loaded wasm module)
    /// in the page and returns its value, or an error carrying the JS error's message.
    pub async fn run_js(&self, body: &str, args: Vec<Value>) -> Result<Value> {
        let script = format!(
            r#"
            const done = arguments[arguments.length - 1];
            const args = Array.from(arguments).slice(0, -1);
            (async () => {{
                const m = await import("/pkg/client_wasm.js");
                await m.default();
                {body}
            }})().then(
                (value) => done({{ ok: value === undefined ? null : value }}),
                (e) => done({{ error: String(e && e.message || e), code: e && e.code || null }}),
            );
            "#
        );
        let result = self.client.execute_async(&script, args).await?;
        if let Some(error) = result.get("error") {
            bail!(
                "{} (code {})",
                error.as_str().unwrap_or("?"),
                result["code"]
            );
        }
        Ok(result["ok"].clone())
    }

    /// The browser's console messages since the last call, as (level, message):
    /// chromedriver's `se/log` (the `goog:loggingPrefs` capability asks for all levels).
    pub async fn console_log(&self) -> Result<Vec<(String, String)>> {
        let entries = self.client.issue_cmd(ConsoleLog).await?;
        let entries = entries
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("chromedriver's log is not a list: {entries}"))?;
        Ok(entries
            .iter()
            .map(|e| {
                let field = |name: &str| e[name].as_str().unwrap_or_default().to_owned();
                (field("level"), field("message"))
            })
            .collect())
    }

    /// chromedriver's process id: Chromium's processes are below it (the bench reads
    /// their CPU time from /proc).
    pub fn driver_pid(&self) -> u32 {
        self.driver.id()
    }

    /// Stops the browser and chromedriver.
    pub async fn stop(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A killed chromedriver can leave its Chromium behind; the profile folder is
        // unique to this browser, so it names exactly our processes.
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self._profile.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// chromedriver's command for the browser's console log, which WebDriver itself lacks.
#[derive(Debug)]
struct ConsoleLog;

impl fantoccini::wd::WebDriverCompatibleCommand for ConsoleLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}
