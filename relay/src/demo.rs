//! The embedded demo SSH server started by `relay --demo`.
//!
//! It lets a newcomer try a forward with no sshd installed: a russh server on a
//! loopback port that accepts the user `demo` (a random password, fresh at every
//! start, and optionally listed public keys), and a tiny HTTP service that is the
//! ONLY destination its `direct-tcpip` channels may reach. The demo must never
//! become a proxy to other services on the relay host, so every other
//! destination is refused with `AdministrativelyProhibited`, and session
//! channels (shell, exec, pty, subsystems) are refused as well.
//!
//! Dropping [`DemoServer`] stops both listeners and ends every connection they
//! accepted (SSH sessions, forwarded channels and HTTP connections).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use axum::Router;
use axum::response::Html;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rand::distr::{Alphanumeric, SampleString};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Config, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use std::borrow::Cow;

use russh::server::Response;
use russh::{Channel, ChannelOpenFailure, MethodKind, MethodSet};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{debug, info};

/// The user name the demo server accepts.
pub const DEMO_USERNAME: &str = "demo";

/// Length of the generated password (alphanumeric).
const PASSWORD_LEN: usize = 24;

/// The page served by the demo HTTP service for every path.
const DEMO_PAGE: &str = "<!doctype html>\n\
<html><head><meta charset=\"utf-8\"><title>tabtunnel demo service</title></head>\n\
<body><h1>Hello from the tabtunnel demo service</h1>\n\
<p>If you can read this through your forward, tabtunnel works: this page travelled \
through your browser tab's SSH connection to the relay's embedded demo SSH server.</p>\n\
</body></html>\n";

/// Options for [`DemoServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Public keys accepted for the user `demo` (in addition to the password).
    pub authorized_keys: Vec<PublicKey>,
    /// When set, the server accepts keyboard-interactive only, and asks for the password
    /// and then for this code, the way a second factor does (tests use it).
    pub second_factor: Option<String>,
}

/// A running demo SSH server and its demo HTTP service, both on 127.0.0.1.
///
/// Dropping it stops both servers and all their connections.
pub struct DemoServer {
    /// Address of the SSH server (127.0.0.1, ephemeral port).
    pub ssh_addr: SocketAddr,
    /// Address of the demo HTTP service (127.0.0.1, ephemeral port), the only
    /// destination the demo SSH server forwards to.
    pub http_addr: SocketAddr,
    /// The accepted user name, `demo`.
    pub username: String,
    /// A random alphanumeric password, fresh at every start.
    pub password: String,
    /// The host key fingerprint as `ssh-keygen -lf` prints it (`SHA256:...`).
    pub host_key_fingerprint: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for DemoServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoServer")
            .field("ssh_addr", &self.ssh_addr)
            .field("http_addr", &self.http_addr)
            .field("username", &self.username)
            .field("password", &"***")
            .field("host_key_fingerprint", &self.host_key_fingerprint)
            .finish_non_exhaustive()
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        // Cancelling ends every connection: SSH sockets are wrapped in
        // `Cancellable`, HTTP connection and forwarding tasks select on the token.
        // Aborting the accept loops closes the listening sockets.
        self.shutdown.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl DemoServer {
    /// Starts the demo with default options (password authentication only).
    pub async fn start() -> anyhow::Result<DemoServer> {
        Self::start_with(DemoOptions::default()).await
    }

    /// Starts the demo SSH server and the demo HTTP service on 127.0.0.1.
    pub async fn start_with(options: DemoOptions) -> anyhow::Result<DemoServer> {
        let shutdown = CancellationToken::new();

        let http_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the demo HTTP service on 127.0.0.1")?;
        let http_addr = http_listener.local_addr()?;
        let ssh_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the demo SSH server on 127.0.0.1")?;
        let ssh_addr = ssh_listener.local_addr()?;

        let host_key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .context("generating the demo host key")?;
        let host_key_fingerprint = host_key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        let password = Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LEN);

        let shared = Arc::new(Shared {
            password: std::sync::Mutex::new(password.clone()),
            authorized_keys: options.authorized_keys,
            second_factor: options.second_factor,
            http_addr,
            shutdown: shutdown.clone(),
        });

        let config = Arc::new(Config {
            methods: shared.offered_methods(),
            // OpenSSH clients probe with "none" first: do not delay that probe.
            auth_rejection_time_initial: Some(std::time::Duration::ZERO),
            keys: vec![host_key],
            nodelay: true,
            ..Config::default()
        });

        let app = Router::new().route("/", get(demo_page)).fallback(demo_page);
        let http_task = tokio::spawn(http_accept_loop(http_listener, app, shutdown.clone()));
        let ssh_task = tokio::spawn(ssh_accept_loop(ssh_listener, config, shared.clone()));

        info!(
            %ssh_addr,
            %http_addr,
            username = DEMO_USERNAME,
            host_key = %host_key_fingerprint,
            "demo SSH server started"
        );

        Ok(DemoServer {
            ssh_addr,
            http_addr,
            username: DEMO_USERNAME.to_owned(),
            password,
            host_key_fingerprint,
            shared,
            shutdown,
            tasks: vec![ssh_task, http_task],
        })
    }

    /// Gives the user `demo` a new random password, as a user who changed theirs (tests
    /// use it: a reconnecting client then holds one the server no longer takes).
    pub fn change_password(&mut self) -> String {
        let password = Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LEN);
        *self.shared.password.lock().expect("password lock") = password.clone();
        self.password = password.clone();
        password
    }

    /// A suggested forward spec (`ssh -L` syntax) reaching the demo service.
    pub fn suggested_forward(&self) -> String {
        format!("0:127.0.0.1:{}", self.http_addr.port())
    }

    /// Lines to print at start: address, credentials, host key fingerprint and a
    /// suggested forward. It contains the password: print it to the operator's
    /// terminal, do not send it to logs.
    pub fn banner(&self) -> String {
        format!(
            "tabtunnel demo SSH server (embedded, for trying tabtunnel without an sshd)\n\
             \x20 SSH server:    {ssh}\n\
             \x20 username:      {user}\n\
             \x20 password:      {pass}   (new at every start)\n\
             \x20 host key:      {fp} (ED25519, new at every start)\n\
             \x20 demo service:  http://{http}/\n\
             \x20 try forward:   {fwd}   (like ssh -L {fwd}; then open the local port in a browser)\n\
             \x20 The demo server forwards only to the demo service; other destinations are refused.\n",
            ssh = self.ssh_addr,
            user = self.username,
            pass = self.password,
            fp = self.host_key_fingerprint,
            http = self.http_addr,
            fwd = self.suggested_forward(),
        )
    }
}

async fn demo_page() -> Html<&'static str> {
    Html(DEMO_PAGE)
}

/// Serves the demo page over HTTP/1.x. Not `axum::serve`: a forwarded client
/// may half-close (send EOF after its request, as `GET ... HTTP/1.0` clients
/// and the tests do), and hyper answers such a request only with
/// `half_close(true)`, which `axum::serve` does not expose. Each connection
/// task ends when the demo server stops.
async fn http_accept_loop(mut listener: TcpListener, app: Router, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
        };
        debug!(%peer, "demo HTTP: connection accepted");
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .half_close(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = shutdown.cancelled() => {}
                result = conn => match result {
                    Ok(()) => debug!(%peer, "demo HTTP: connection closed"),
                    Err(e) => debug!(%peer, error = %e, "demo HTTP: connection ended"),
                },
            }
        });
    }
}

/// The authentication methods the demo offers.
impl Shared {
    /// What the server offers: password, public key and keyboard-interactive (a
    /// "Password:" prompt), or keyboard-interactive alone with a second factor.
    fn offered_methods(&self) -> MethodSet {
        if self.second_factor.is_some() {
            MethodSet::from(&[MethodKind::KeyboardInteractive][..])
        } else {
            MethodSet::from(
                &[
                    MethodKind::PublicKey,
                    MethodKind::KeyboardInteractive,
                    MethodKind::Password,
                ][..],
            )
        }
    }

    fn reject(&self) -> Auth {
        // Keep offering every method so a mistyped answer can be retried (russh
        // drops a method from the offer after a plain rejection).
        Auth::Reject {
            proceed_with_methods: Some(self.offered_methods()),
            partial_success: false,
        }
    }
}

/// State shared by all connections of one demo server.
struct Shared {
    password: std::sync::Mutex<String>,
    authorized_keys: Vec<PublicKey>,
    second_factor: Option<String>,
    http_addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Shared {
    fn is_allowed_destination(&self, host: &str, port: u32) -> bool {
        port == u32::from(self.http_addr.port())
            && (host == "127.0.0.1" || host.eq_ignore_ascii_case("localhost"))
    }

    fn is_authorized_key(&self, user: &str, key: &PublicKey) -> bool {
        user == DEMO_USERNAME
            && self
                .authorized_keys
                .iter()
                .any(|k| k.key_data() == key.key_data())
    }

    fn password_matches(&self, user: &str, password: &str) -> bool {
        let user_ok = user.as_bytes().ct_eq(DEMO_USERNAME.as_bytes());
        let current = self.password.lock().expect("password lock");
        let password_ok = password.as_bytes().ct_eq(current.as_bytes());
        bool::from(user_ok & password_ok)
    }
}

async fn ssh_accept_loop(mut listener: TcpListener, config: Arc<Config>, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
        };
        debug!(%peer, "demo SSH: connection accepted");
        let stream = Cancellable::new(stream, shared.shutdown.clone());
        let handler = DemoHandler {
            shared: shared.clone(),
            peer,
        };
        let config = config.clone();
        tokio::spawn(async move {
            match russh::server::run_stream(config, stream, handler).await {
                Ok(session) => match session.await {
                    Ok(()) => debug!(%peer, "demo SSH: connection closed"),
                    Err(e) => debug!(%peer, error = %e, "demo SSH: connection ended"),
                },
                Err(e) => debug!(%peer, error = %e, "demo SSH: connection setup failed"),
            }
        });
    }
}

/// The russh handler of one demo SSH connection.
struct DemoHandler {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl russh::server::Handler for DemoHandler {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.shared.second_factor.is_none() && self.shared.password_matches(user, password) {
            debug!(peer = %self.peer, user, "demo SSH: password accepted");
            Ok(Auth::Accept)
        } else {
            debug!(peer = %self.peer, user, "demo SSH: password rejected");
            Ok(self.shared.reject())
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(mut answers) = response else {
            let mut prompts = vec![(Cow::Borrowed("Password: "), false)];
            if self.shared.second_factor.is_some() {
                prompts.push((Cow::Borrowed("Verification code: "), true));
            }
            return Ok(Auth::Partial {
                name: Cow::Borrowed("tabtunnel demo"),
                instructions: Cow::Borrowed("Log in to the demo SSH server."),
                prompts: Cow::Owned(prompts),
            });
        };
        let password = answers
            .next()
            .map(|a| String::from_utf8_lossy(&a).into_owned())
            .unwrap_or_default();
        let code_ok = match &self.shared.second_factor {
            Some(code) => answers
                .next()
                .is_some_and(|a| bool::from(a.as_ref().ct_eq(code.as_bytes()))),
            None => true,
        };
        if self.shared.password_matches(user, &password) && code_ok {
            debug!(peer = %self.peer, user, "demo SSH: keyboard-interactive accepted");
            Ok(Auth::Accept)
        } else {
            debug!(peer = %self.peer, user, "demo SSH: keyboard-interactive rejected");
            Ok(self.shared.reject())
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.second_factor.is_none()
            && self.shared.is_authorized_key(user, offer.public_key)
        {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.is_authorized_key(user, key.public_key) {
            debug!(peer = %self.peer, user, "demo SSH: public key accepted");
            Ok(Auth::Accept)
        } else {
            debug!(peer = %self.peer, user, "demo SSH: public key rejected");
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        debug!(peer = %self.peer, "demo SSH: session channel refused (no shell/exec)");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self
            .shared
            .is_allowed_destination(host_to_connect, port_to_connect)
        {
            info!(
                peer = %self.peer,
                host = host_to_connect,
                port = port_to_connect,
                "demo SSH: refused a forward to a destination other than the demo service"
            );
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        debug!(peer = %self.peer, channel = ?channel.id(), "demo SSH: forward to the demo service");
        // Connect and pipe outside the session loop so this connection keeps
        // serving its other channels meanwhile.
        let target = self.shared.http_addr;
        let shutdown = self.shared.shutdown.clone();
        let peer = self.peer;
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = forward(channel, reply, target, peer) => {}
            }
        });
        Ok(())
    }
}

/// Connects to the demo service and pipes the channel both ways, with
/// half-close in each direction; the channel is closed when both are done.
async fn forward(
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    target: SocketAddr,
    peer: SocketAddr,
) {
    let mut tcp = match TcpStream::connect(target).await {
        Ok(tcp) => tcp,
        Err(e) => {
            debug!(%peer, error = %e, "demo SSH: connecting to the demo service failed");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    reply.accept().await;
    let id = channel.id();
    // `ChannelStream`: reading yields EOF on SSH EOF/close, shutting down sends
    // SSH EOF, and dropping it sends SSH CLOSE. `copy_bidirectional` shuts down
    // each write side when the other side's read reaches EOF and returns once
    // both directions are finished.
    let mut ssh = channel.into_stream();
    match tokio::io::copy_bidirectional(&mut ssh, &mut tcp).await {
        Ok((to_service, to_client)) => debug!(
            %peer, channel = ?id, to_service, to_client,
            "demo SSH: forward finished"
        ),
        Err(e) => debug!(%peer, channel = ?id, error = %e, "demo SSH: forward ended"),
    }
}

/// A stream that fails every read and write once the token is cancelled, so
/// that whoever owns it (russh's session task, hyper's connection task) ends
/// the connection and drops the socket.
struct Cancellable<S> {
    inner: S,
    token: CancellationToken,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Cancellable<S> {
    fn new(inner: S, token: CancellationToken) -> Self {
        let cancelled = Box::pin(token.clone().cancelled_owned());
        Self {
            inner,
            token,
            cancelled,
        }
    }

    /// Registers the task for wake-up on cancellation; `Err` once cancelled.
    fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.token.is_cancelled() || self.cancelled.as_mut().poll(cx).is_ready() {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the demo server stopped",
            ))
        } else {
            Ok(())
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Cancellable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_cancelled(cx)?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Cancellable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.poll_cancelled(cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_cancelled(cx)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_cancelled(cx)?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.poll_cancelled(cx)?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
