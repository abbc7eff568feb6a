//! tabtunnel's JS API (`/pkg/client_wasm.js`): thin glue from the page to the portable
//! client in `tabtunnel-client`. No protocol logic lives here.
//!
//! ```js
//! import init, { connect } from "/pkg/client_wasm.js";
//! await init();
//! const session = await connect({ target, username, password | privateKey, passphrase,
//!                                 hostKey, onHostKey, knownHosts, onClose, relay,
//!                                 onStateChange, reconnect });
//! const fwd = await session.forward("127.0.0.1:10080:mail.example.com:110");
//! const socks = await session.forward("-D 1080"); // a SOCKS proxy, as ssh -D
//! fwd.listen; fwd.stats(); await fwd.close(); await session.close();
//! ```

mod known_hosts;
mod websocket;

use futures::FutureExt;
use js_sys::{Array, Function, Object, Promise, Reflect};
use send_wrapper::SendWrapper;
use tabtunnel_client::{
    Auth, ClientError, ConnectOptions, ConnectionState, Credentials, Dial, HostKeyCallback,
    HostKeyInfo, HostKeyPolicy, KnownHosts, KnownHostsCheck, PromptCallback, PromptRequest,
    Reconnect, ReconnectOptions, StateCallback,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::known_hosts::BrowserKnownHosts;
use crate::websocket::WebSocketTransport;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// Opens a session through the relay; see the crate documentation for `options`.
/// `knownHosts: true` remembers accepted host keys in this browser's localStorage, per
/// relay, target and key type (OpenSSH's known_hosts rules, in
/// `tabtunnel_client::known_hosts`): a remembered key is trusted, a changed one refused
/// (`error.code` "host-key-changed", with `algorithm`, `remembered` and `offered`), and
/// `onHostKey` is asked only about keys seen for the first time. Where there is no
/// `localStorage` (a worker), `knownHosts` is the store instead: an object with
/// `getItem(name)` and `setItem(name, text)` as `localStorage` has, and `relay` is needed.
///
/// With `onStateChange(state)` (or `reconnect: true`, or `reconnect: { firstDelayMs,
/// maxDelayMs, giveUpAfterMs }`) the session reconnects when its WebSocket or SSH
/// session drops for a transient reason, with backoff and jitter: it checks the server
/// has the very host key accepted first, logs in again with the credentials it holds in
/// memory (asking `onPrompt` if the server wants a prompt), and listens for every forward
/// on its address again; forwards and their `stats()` carry on, connections that were
/// open end. `state` is `{ state: "live" }`, `{ state: "reconnecting", attempt,
/// nextTryMs, reason }`, `{ state: "restored", resumed }` or `{ state: "gave-up",
/// reason }` (`onClose` follows). `reconnect: false` turns it off.
#[wasm_bindgen]
pub async fn connect(options: JsValue) -> Result<Session, JsValue> {
    let target = required_string(&options, "target")?;
    let username = required_string(&options, "username")?;
    let private_key = optional_string(&options, "privateKey")?.filter(|k| !k.trim().is_empty());
    let passphrase = optional_string(&options, "passphrase")?.filter(|p| !p.is_empty());
    let auth = Credentials {
        password: optional_string(&options, "password")?.filter(|p| !p.is_empty()),
        private_key: private_key.map(|pem| Auth::PrivateKey { pem, passphrase }),
        prompt: optional_function(&options, "onPrompt")?.map(prompt_callback),
    };
    let expected = optional_string(&options, "hostKey")?.filter(|k| !k.is_empty());
    let ask = optional_function(&options, "onHostKey")?.map(host_key_prompt);
    let on_close = optional_function(&options, "onClose")?;
    let relay = optional_string(&options, "relay")?;
    let known_hosts = Reflect::get(&options, &"knownHosts".into())?;
    let known_hosts = match known_hosts.is_truthy() {
        true => Some(KnownHostsCheck {
            store: Box::new(BrowserKnownHosts::new(
                known_hosts.is_object().then_some(known_hosts),
            )),
            relay: relay_origin(relay.as_deref())?,
        }),
        false => None,
    };
    let url = relay_url(relay)?;
    let keepalive = keepalive_option(&options)?;
    let token = optional_string(&options, "token")?.filter(|t| !t.is_empty());

    let on_state = optional_function(&options, "onStateChange")?;
    let reconnect = reconnect_option(&options, on_state.is_some())?;
    let options = ConnectOptions {
        keepalive,
        token,
        target,
        username,
        auth,
        host_key: HostKeyPolicy {
            pinned: Vec::new(),
            expected,
            ask,
            known_hosts,
        },
    };
    let session = match reconnect {
        Some(policy) => {
            let dial: Dial<WebSocketTransport> = std::sync::Arc::new(move || {
                let url = url.clone();
                SendWrapper::new(async move { WebSocketTransport::connect(&url).await }).boxed()
            });
            let reconnect = ReconnectOptions {
                policy,
                on_state: on_state.map(state_callback),
            };
            tabtunnel_client::connect_resilient(dial, options, reconnect).await
        }
        None => {
            let transport = WebSocketTransport::connect(&url)
                .await
                .map_err(|e| error("transport", &e.0))?;
            tabtunnel_client::connect(transport, options).await
        }
    }
    .map_err(to_js)?;
    if let Some(on_close) = on_close {
        let closed = session.closed_signal();
        wasm_bindgen_futures::spawn_local(async move {
            let reason = closed.await;
            let _ = on_close.call1(&JsValue::NULL, &JsValue::from_str(&reason));
        });
    }
    Ok(Session { inner: session })
}

/// Tells the page's `onStateChange` about the session's link; a callback that throws is
/// the page's bug and changes nothing here.
fn state_callback(callback: Function) -> StateCallback {
    let callback = SendWrapper::new(callback);
    std::sync::Arc::new(move |state: ConnectionState| {
        let out = Object::new();
        let put = |key: &str, value: JsValue| {
            let _ = Reflect::set(&out, &key.into(), &value);
        };
        match state {
            ConnectionState::Live => put("state", "live".into()),
            ConnectionState::Reconnecting {
                attempt,
                next_try_ms,
                reason,
            } => {
                put("state", "reconnecting".into());
                put("attempt", f64::from(attempt).into());
                put("nextTryMs", (next_try_ms as f64).into());
                put("reason", reason.into());
            }
            ConnectionState::Restored { resumed } => {
                put("state", "restored".into());
                put("resumed", resumed.into());
            }
            ConnectionState::GaveUp { reason } => {
                put("state", "gave-up".into());
                put("reason", reason.into());
            }
        }
        let _ = callback.call1(&JsValue::NULL, &out);
    })
}

/// Whether and how the session reconnects: `reconnect: false` never, `true` or an
/// object `{ firstDelayMs, maxDelayMs, giveUpAfterMs }` (defaults 500, 30000, 600000)
/// always; left out, when the page listens with `onStateChange`.
fn reconnect_option(options: &JsValue, listening: bool) -> Result<Option<Reconnect>, JsValue> {
    let value = Reflect::get(options, &"reconnect".into())?;
    if value.is_undefined() || value.is_null() {
        return Ok(listening.then(Reconnect::default));
    }
    if let Some(on) = value.as_bool() {
        return Ok(on.then(Reconnect::default));
    }
    if !value.is_object() {
        return Err(error(
            "bad-options",
            "`reconnect` must be true, false or { firstDelayMs, maxDelayMs, giveUpAfterMs }",
        ));
    }
    let mut policy = Reconnect::default();
    for (key, field) in [
        ("firstDelayMs", &mut policy.first_delay),
        ("maxDelayMs", &mut policy.max_delay),
        ("giveUpAfterMs", &mut policy.give_up_after),
    ] {
        let ms = Reflect::get(&value, &key.into())?;
        if ms.is_undefined() {
            continue;
        }
        let ms = ms
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0 && *n <= 86_400_000.0)
            .ok_or_else(|| {
                error(
                    "bad-options",
                    &format!("`reconnect.{key}` must be milliseconds, 0 to a day"),
                )
            })?;
        *field = std::time::Duration::from_millis(ms as u64);
    }
    Ok(Some(policy))
}

/// Asks the page's `onHostKey(fingerprint, algorithm, pinned, knownTypes)`; a truthy
/// answer (or a Promise of one) accepts the key. `pinned` says the relay's operator
/// pinned this key; `knownTypes` lists the other key types remembered for the target
/// (non-empty: warn that the server now shows another type).
fn host_key_prompt(callback: Function) -> HostKeyCallback {
    let callback = SendWrapper::new(callback);
    Box::new(move |info: HostKeyInfo| {
        let answer = SendWrapper::new(async move {
            let known_types: Array = info.known_types.iter().map(JsValue::from).collect();
            let args = Array::of4(
                &JsValue::from_str(&info.fingerprint),
                &JsValue::from_str(&info.algorithm),
                &JsValue::from_bool(info.pinned),
                &known_types,
            );
            let result = callback.apply(&JsValue::NULL, &args);
            match result {
                Ok(value) => JsFuture::from(Promise::resolve(&value))
                    .await
                    .map(|v| v.is_truthy())
                    .unwrap_or(false),
                Err(_) => false,
            }
        });
        answer.boxed()
    })
}

/// `serverAliveInterval` (seconds, 0 turns it off; default 15) and
/// `serverAliveCountMax` (default 3), as in ssh_config.
fn keepalive_option(options: &JsValue) -> Result<Option<tabtunnel_client::Keepalive>, JsValue> {
    let number = |key: &str| -> Result<Option<f64>, JsValue> {
        let value = Reflect::get(options, &key.into())?;
        if value.is_undefined() || value.is_null() {
            return Ok(None);
        }
        value
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0 && n.fract() == 0.0)
            .map(Some)
            .ok_or_else(|| {
                error(
                    "bad-options",
                    &format!("`{key}` must be a whole number of seconds, 0 or more"),
                )
            })
    };
    let defaults = tabtunnel_client::Keepalive::default();
    let interval = number("serverAliveInterval")?.map_or(defaults.interval.as_secs_f64(), |n| n);
    if interval == 0.0 {
        return Ok(None);
    }
    let count_max = number("serverAliveCountMax")?
        .map_or(f64::from(defaults.count_max), |n| n)
        .max(1.0);
    let interval = std::time::Duration::try_from_secs_f64(interval)
        .map_err(|_| error("bad-options", "`serverAliveInterval` is too large"))?;
    Ok(Some(tabtunnel_client::Keepalive {
        interval,
        count_max: count_max.min(f64::from(u32::MAX)) as u32,
    }))
}

/// Asks the page's `onPrompt({ name, instructions, prompts: [{ prompt, echo }] })`, which
/// answers with an array of strings, one per prompt (or a Promise of one); `null` or
/// `undefined` cancels the login.
fn prompt_callback(callback: Function) -> PromptCallback {
    let callback = SendWrapper::new(callback);
    Box::new(move |request: PromptRequest| {
        let callback = SendWrapper::new((*callback).clone());
        let answer = SendWrapper::new(async move {
            let prompts: Array = request
                .prompts
                .iter()
                .map(|field| {
                    let item = Object::new();
                    let _ = Reflect::set(&item, &"prompt".into(), &field.prompt.as_str().into());
                    let _ = Reflect::set(&item, &"echo".into(), &field.echo.into());
                    JsValue::from(item)
                })
                .collect();
            let arg = Object::new();
            let _ = Reflect::set(&arg, &"name".into(), &request.name.as_str().into());
            let _ = Reflect::set(
                &arg,
                &"instructions".into(),
                &request.instructions.as_str().into(),
            );
            let _ = Reflect::set(&arg, &"prompts".into(), &prompts);
            let value = callback.call1(&JsValue::NULL, &arg).ok()?;
            let answers = JsFuture::from(Promise::resolve(&value)).await.ok()?;
            if answers.is_null() || answers.is_undefined() {
                return None;
            }
            Some(
                Array::from(&answers)
                    .iter()
                    .map(|a| a.as_string().unwrap_or_default())
                    .collect(),
            )
        });
        answer.boxed()
    })
}

/// Forgets the host key remembered (with `knownHosts: true`) for `target`'s `algorithm`
/// on this page's relay (or `relay`): the next connection asks anew. `store` is the
/// known-hosts store as `connect`'s `knownHosts` takes it (default `localStorage`).
#[wasm_bindgen(js_name = forgetHostKey)]
pub fn forget_host_key(
    target: String,
    algorithm: String,
    relay: Option<String>,
    store: Option<Object>,
) -> Result<(), JsValue> {
    let id = tabtunnel_client::KnownHostId {
        relay: relay_origin(relay.as_deref())?,
        target,
        algorithm,
    };
    BrowserKnownHosts::new(store.map(JsValue::from))
        .forget(&id)
        .map_err(|e| error("known-hosts", &e.to_string()))
}

/// The relay as known-hosts entries name it: its `http(s)://host[:port]` origin, the
/// page's own when `relay` is not given (the page has always keyed entries by
/// `location.origin`).
fn relay_origin(relay: Option<&str>) -> Result<String, JsValue> {
    match relay.filter(|r| !r.is_empty()) {
        Some(relay) => {
            let url = relay_url(Some(relay.to_owned()))?;
            let url = url.strip_suffix("/ws").unwrap_or(&url);
            Ok(match url.strip_prefix("wss://") {
                Some(rest) => format!("https://{rest}"),
                None => format!("http://{}", url.trim_start_matches("ws://")),
            })
        }
        None => web_sys::window()
            .ok_or_else(|| error("bad-options", "no window: pass `relay`"))?
            .location()
            .origin(),
    }
}

/// `ws(s)://` of the given relay or of the page's own origin, with the `/ws` path.
fn relay_url(relay: Option<String>) -> Result<String, JsValue> {
    let base = match relay.filter(|r| !r.is_empty()) {
        Some(relay) => relay,
        None => {
            let location = web_sys::window()
                .ok_or_else(|| error("bad-options", "no window: pass `relay`"))?
                .location();
            let protocol = if location.protocol()? == "https:" {
                "wss:"
            } else {
                "ws:"
            };
            format!("{protocol}//{}", location.host()?)
        }
    };
    let base = base.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        base.to_owned()
    };
    if !(base.starts_with("ws://") || base.starts_with("wss://")) {
        return Err(error(
            "bad-options",
            &format!("relay {base:?} must start with ws://, wss://, http:// or https://"),
        ));
    }
    Ok(if base.ends_with("/ws") {
        base
    } else {
        format!("{base}/ws")
    })
}

/// A live SSH session through the relay.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Session {
    inner: tabtunnel_client::Session,
}

#[wasm_bindgen]
impl Session {
    /// The server's host-key fingerprint, `SHA256:...` as `ssh-keygen -lf` prints it.
    #[wasm_bindgen(getter, js_name = hostKeyFingerprint)]
    pub fn host_key_fingerprint(&self) -> String {
        self.inner.host_key().fingerprint.clone()
    }

    /// The server's host-key algorithm, e.g. `ssh-ed25519`.
    #[wasm_bindgen(getter, js_name = hostKeyAlgorithm)]
    pub fn host_key_algorithm(&self) -> String {
        self.inner.host_key().algorithm.clone()
    }

    /// Opens a forward in `ssh -L` syntax (`[bind:]port:host:hostport`, or with `-L `
    /// before it), or a dynamic one in `ssh -D` syntax (`-D [bind:]port`): a SOCKS proxy
    /// (SOCKS5, 4 and 4a) whose clients name their destinations, which the SSH server
    /// resolves and reaches. Options: `{ check: true }` first opens one test channel to
    /// a `-L` destination and fails the forward at once if the SSH server refuses it or
    /// cannot connect; `{ dynamic: true }` reads the spec as `-D`'s, and `{ dynamic: {
    /// username, password } }` also sets the SOCKS5 login its clients must give (the
    /// relay lets a forward without one listen on loopback only). A remote forward in
    /// `ssh -R` syntax (`-R [bind:]port:host:hostport`, or `{ remote: true }` with the spec
    /// alone): the SSH server listens on `bind:port` (port 0: it picks one, which `listen`
    /// then shows), and the relay connects each connection to `host:hostport`, if its
    /// operator allows that destination.
    pub async fn forward(&self, spec: String, options: Option<Object>) -> Result<Forward, JsValue> {
        let get = |key: &str| match &options {
            Some(options) => Reflect::get(options, &key.into()),
            None => Ok(JsValue::UNDEFINED),
        };
        let check = get("check")?.is_truthy();
        let dynamic = get("dynamic")?;
        let socks_login = if dynamic.is_object() {
            let username = required_string(&dynamic, "username")?;
            let password = optional_string(&dynamic, "password")?.unwrap_or_default();
            Some(tabtunnel_client::SocksLogin { username, password })
        } else {
            None
        };
        let remote = get("remote")?.is_truthy();
        let spec = if dynamic.is_truthy() && !spec.trim_start().starts_with("-D") {
            format!("-D {}", spec.trim())
        } else if remote && !spec.trim_start().starts_with("-R") {
            format!("-R {}", spec.trim())
        } else {
            spec
        };
        let options = tabtunnel_client::ForwardOptions {
            check_destination: check,
            socks_login,
        };
        let inner = self
            .inner
            .forward_with(&spec, options)
            .await
            .map_err(to_js)?;
        Ok(Forward { inner, spec })
    }

    /// Why the session ended, or `undefined` while it is live.
    #[wasm_bindgen(getter, js_name = closedReason)]
    pub fn closed_reason(&self) -> Option<String> {
        self.inner.closed_reason()
    }

    /// Ends the session; the relay closes all its forwards.
    pub async fn close(&self) {
        self.inner.close().await;
    }
}

/// A forward the relay listens for.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Forward {
    inner: tabtunnel_client::Forward,
    spec: String,
}

#[wasm_bindgen]
impl Forward {
    /// The address TCP clients connect to, on the relay host; for a remote forward,
    /// where the SSH server listens (`localhost:8080`).
    #[wasm_bindgen(getter)]
    pub fn listen(&self) -> String {
        self.inner.listen().to_owned()
    }

    /// The spec as given.
    #[wasm_bindgen(getter)]
    pub fn spec(&self) -> String {
        self.spec.clone()
    }

    /// `"local"` (`ssh -L`), `"dynamic"` (`ssh -D`, a SOCKS proxy) or `"remote"`
    /// (`ssh -R`: the SSH server listens).
    #[wasm_bindgen(getter)]
    pub fn kind(&self) -> String {
        match self.inner.kind() {
            tabtunnel_client::ForwardKind::Local(_) => "local".into(),
            tabtunnel_client::ForwardKind::Dynamic { .. } => "dynamic".into(),
            tabtunnel_client::ForwardKind::Remote(_) => "remote".into(),
        }
    }

    /// Where a browser opens this forward as a web app (its first link, which carries
    /// the forward's key), or `null` when the relay offers no web forwards.
    #[wasm_bindgen(getter, js_name = webUrl)]
    pub fn web_url(&self) -> Option<String> {
        self.inner.web_url()
    }

    /// `{ connections, active, bytesUp, bytesDown, failures, lastError, live }`; `live`
    /// lists where each open connection goes (`host:port`), oldest first.
    pub fn stats(&self) -> Result<Object, JsValue> {
        let s = self.inner.stats();
        let out = Object::new();
        set(&out, "connections", s.connections as f64)?;
        set(&out, "active", s.active as f64)?;
        set(&out, "bytesUp", s.bytes_up as f64)?;
        set(&out, "bytesDown", s.bytes_down as f64)?;
        set(&out, "failures", s.failures as f64)?;
        Reflect::set(
            &out,
            &"lastError".into(),
            &s.last_error.map(JsValue::from).unwrap_or(JsValue::NULL),
        )?;
        let live: Array = s.live.into_iter().map(JsValue::from).collect();
        Reflect::set(&out, &"live".into(), &live)?;
        Ok(out)
    }

    /// Stops listening and ends the forward's connections.
    pub async fn close(&self) -> Result<(), JsValue> {
        self.inner.close().await.map_err(to_js)
    }
}

/// Parses `[bind:]port:host:hostport` into `{ bind, port, host, hostPort }`.
#[wasm_bindgen(js_name = parseForwardSpec)]
pub fn parse_forward_spec(spec: &str) -> Result<Object, JsValue> {
    let spec = tabtunnel_client::parse_forward(spec).map_err(|e| error("bad-spec", &e.0))?;
    let out = Object::new();
    Reflect::set(&out, &"bind".into(), &spec.bind.into())?;
    set(&out, "port", f64::from(spec.port))?;
    Reflect::set(&out, &"host".into(), &spec.host.into())?;
    set(&out, "hostPort", f64::from(spec.host_port))?;
    Ok(out)
}

/// Parses `[bind:]port`, an `ssh -D` spec, into `{ bind, port }`.
#[wasm_bindgen(js_name = parseDynamicSpec)]
pub fn parse_dynamic_spec(spec: &str) -> Result<Object, JsValue> {
    let spec = tabtunnel_client::parse_dynamic(spec).map_err(|e| error("bad-spec", &e.0))?;
    let out = Object::new();
    Reflect::set(&out, &"bind".into(), &spec.bind.into())?;
    set(&out, "port", f64::from(spec.port))?;
    Ok(out)
}

/// Parses `[bind:]port:host:hostport`, an `ssh -R` spec, into `{ bind, port, host,
/// hostPort }`: the SSH server listens on `bind:port`, the relay connects to `host:hostPort`.
#[wasm_bindgen(js_name = parseRemoteSpec)]
pub fn parse_remote_spec(spec: &str) -> Result<Object, JsValue> {
    let spec = tabtunnel_client::parse_remote(spec).map_err(|e| error("bad-spec", &e.0))?;
    let out = Object::new();
    Reflect::set(&out, &"bind".into(), &spec.bind.into())?;
    set(&out, "port", f64::from(spec.port))?;
    Reflect::set(&out, &"host".into(), &spec.host.into())?;
    set(&out, "hostPort", f64::from(spec.host_port))?;
    Ok(out)
}

/// Parses a pasted `ssh ...` line into `{ user, host, port, forwards, dynamic, remote,
/// ignored }` (`forwards`: the `-L` specs; `dynamic`: the `-D` ones; `remote`: the `-R`
/// ones).
#[wasm_bindgen(js_name = parseSshCommand)]
pub fn parse_ssh_command(line: &str) -> Result<Object, JsValue> {
    let cmd = tabtunnel_client::parse_ssh_command(line).map_err(|e| error("bad-command", &e.0))?;
    let out = Object::new();
    Reflect::set(
        &out,
        &"user".into(),
        &cmd.user.map(JsValue::from).unwrap_or(JsValue::UNDEFINED),
    )?;
    Reflect::set(&out, &"host".into(), &cmd.host.into())?;
    let port = cmd
        .port
        .map(|p| JsValue::from(f64::from(p)))
        .unwrap_or(JsValue::UNDEFINED);
    Reflect::set(&out, &"port".into(), &port)?;
    let strings = |items: Vec<String>| items.into_iter().map(JsValue::from).collect::<Array>();
    Reflect::set(&out, &"forwards".into(), &strings(cmd.forwards))?;
    Reflect::set(&out, &"dynamic".into(), &strings(cmd.dynamic))?;
    Reflect::set(&out, &"remote".into(), &strings(cmd.remote))?;
    Reflect::set(&out, &"ignored".into(), &strings(cmd.ignored))?;
    Ok(out)
}

fn set(target: &Object, key: &str, value: f64) -> Result<(), JsValue> {
    Reflect::set(target, &key.into(), &value.into()).map(|_| ())
}

/// A JS `Error` with the message as the user should read it and a stable `code`.
fn error(code: &str, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    let _ = Reflect::set(&err, &"code".into(), &code.into());
    err.into()
}

fn to_js(err: ClientError) -> JsValue {
    let js = error(err.code(), &err.to_string());
    // The page shows both keys side by side, and forgets by key type.
    if let ClientError::HostKeyChanged {
        algorithm,
        remembered,
        offered,
    } = &err
    {
        for (key, value) in [
            ("algorithm", algorithm),
            ("remembered", remembered),
            ("offered", offered),
        ] {
            let _ = Reflect::set(&js, &key.into(), &value.as_str().into());
        }
    }
    js
}

fn optional_string(options: &JsValue, key: &str) -> Result<Option<String>, JsValue> {
    let value = Reflect::get(options, &key.into())?;
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .as_string()
        .map(Some)
        .ok_or_else(|| error("bad-options", &format!("`{key}` must be a string")))
}

fn required_string(options: &JsValue, key: &str) -> Result<String, JsValue> {
    optional_string(options, key)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error("bad-options", &format!("`{key}` is required")))
}

fn optional_function(options: &JsValue, key: &str) -> Result<Option<Function>, JsValue> {
    let value = Reflect::get(options, &key.into())?;
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .dyn_into::<Function>()
        .map(Some)
        .map_err(|_| error("bad-options", &format!("`{key}` must be a function")))
}
