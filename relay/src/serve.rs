//! The front door: the relay's own accept loop. It caps TCP connections in total and per
//! address (RAII slots, released when the connection closes, even after it became a
//! WebSocket), completes TLS handshakes when configured, and serves HTTP/1.1 with
//! upgrades on each connection with hyper's header-read timeout and an idle watchdog,
//! so that a connection held without a request costs its holder a slot for seconds, not
//! the relay a file descriptor for ever.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::client_addr::ClientAddr;
use crate::config::Config;
use crate::metrics::Metrics;

/// How long shutdown waits for HTTP requests in progress (WebSocket sessions have their
/// own grace in `run`).
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The largest request head (request line and headers) the relay reads. A browser's are
/// a few KiB; a proxy adds a few headers. hyper's default is about 400 KiB, which a
/// slow sender could make the relay hold for each connection.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// File descriptors kept for everything but HTTP connections when the open-files limit
/// is what bounds the connection cap: half of the rest goes to sessions' SSH connections
/// and forwards.
const RESERVED_FDS: u64 = 64;

/// What a plain-HTTP client over its connection cap reads before the relay closes.
const OVER_CAP_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 86\r\nConnection: close\r\n\r\n\
Too many connections to this relay (from your address, or in all); try again shortly.\n";

/// Serves `router` on `listener` until `shutdown` resolves (the relay has drained, see
/// `drain`); then stops accepting, lets requests in progress finish for a few seconds
/// and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    config: Arc<Config>,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let door = Arc::new(Door::new(config, tls, router, metrics));
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: pause rather than spin. The caps
                // keep the relay below its open-files limit, so this is rare.
                Err(err) => {
                    // Not a peer's doing: logged under the relay's own (unspecified) address.
                    let relay = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
                    door.warn_refusal(relay, "accept", format_args!("cannot accept a connection: {err}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Some(conn) = door.admit(tcp, peer) {
            let (door, stop) = (door.clone(), stop.clone());
            connections.spawn(async move { door.connection(conn, stop).await });
        }
    }
    drop(listener);
    stop.cancel();
    connections.close();
    let _ = tokio::time::timeout(HTTP_SHUTDOWN_GRACE, connections.wait()).await;
    Ok(())
}

/// What the accept loop shares with each connection's task.
struct Door {
    router: Router,
    config: Arc<Config>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    connections: Arc<AddressSlots>,
    handshakes: Arc<AddressSlots>,
    metrics: Arc<Metrics>,
    /// The clock the idle watchdog reads activity against.
    epoch: Instant,
}

/// A connection admitted past the caps, not yet TLS or HTTP.
struct Admitted {
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    /// With TLS: its place among the handshakes from its address.
    handshake: Option<Slot>,
}

impl Door {
    fn new(
        config: Arc<Config>,
        tls: Option<Arc<rustls::ServerConfig>>,
        router: Router,
        metrics: Arc<Metrics>,
    ) -> Self {
        let connections = connection_cap(config.limits.connections);
        Self {
            router,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            connections: Arc::new(AddressSlots::new(
                "connections",
                connections,
                config.limits.connections_per_ip,
            )),
            // No total: the connection cap bounds handshakes too, and a total one
            // address could fill would be the gate that stalled everyone before.
            handshakes: Arc::new(AddressSlots::new(
                "TLS handshakes",
                usize::MAX,
                config.limits.tls_handshakes_per_ip,
            )),
            config,
            metrics,
            epoch: Instant::now(),
        }
    }

    /// Takes the connection's places, or closes it at once: over a cap, waiting would
    /// only hold a file descriptor for someone who already holds many.
    fn admit(&self, tcp: TcpStream, peer: SocketAddr) -> Option<Admitted> {
        let ip = crate::client_addr::limit_key(peer.ip());
        // A trusted proxy carries every user's connections: capping it per address would
        // lock the whole class out. Its connections still count toward the total.
        let proxy = self.config.proxy_trusted(ip);
        let slot = match self.connections.acquire(ip, proxy) {
            Ok(slot) => slot,
            Err(refusal) => {
                self.metrics.refused("connections");
                self.warn_refusal(ip, "connection", format_args!(
                    "connection from {peer} closed: {refusal}; raise limits.connections or limits.connections_per_ip if this is legitimate"
                ));
                if self.tls.is_none() {
                    // Best effort and never blocking: the socket's buffer is empty.
                    let _ = tcp.try_write(OVER_CAP_ANSWER);
                }
                return None;
            }
        };
        let handshake = match &self.tls {
            None => None,
            Some(_) => match self.handshakes.acquire(ip, proxy) {
                Ok(slot) => Some(slot),
                Err(refusal) => {
                    self.metrics.refused("tls-handshakes");
                    self.warn_refusal(ip, "tls-handshake", format_args!(
                        "connection from {peer} closed: {refusal}; raise limits.tls_handshakes_per_ip if this is legitimate"
                    ));
                    return None;
                }
            },
        };
        Some(Admitted {
            tcp,
            peer,
            slot,
            handshake,
        })
    }

    async fn connection(self: Arc<Self>, conn: Admitted, stop: CancellationToken) {
        let Admitted {
            mut tcp,
            mut peer,
            mut slot,
            mut handshake,
        } = conn;
        if self.config.proxy_protocol && self.config.proxy_trusted(peer.ip()) {
            let header = tokio::time::timeout(
                self.config.http_header_timeout,
                crate::proxy_protocol::read_header(&mut tcp),
            );
            match header.await {
                Ok(Ok(Some(client))) => {
                    // The connection is the client's, not the (exempt) proxy's: it counts
                    // against the client's own caps from here on.
                    if !self.rekey(client, &mut slot, &mut handshake) {
                        return;
                    }
                    peer = client;
                }
                Ok(Ok(None)) => {}
                Ok(Err(reason)) => {
                    tracing::debug!(%peer, "connection from a trusted proxy closed: {reason}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "connection from a trusted proxy closed: no PROXY header in time");
                    return;
                }
            }
        }
        // Keystrokes in an SSH session are small writes; Nagle would hold them back.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.http(tcp, peer, slot, stop).await,
            Some(acceptor) => {
                let tls = tokio::select! {
                    tls = crate::tls::handshake(
                        tcp,
                        peer,
                        acceptor.clone(),
                        self.config.tls_first_byte_timeout,
                        self.config.tls_handshake_timeout,
                    ) => tls,
                    () = stop.cancelled() => None,
                };
                drop(handshake);
                if let Some(tls) = tls {
                    self.http(tls, peer, slot, stop).await;
                }
            }
        }
    }

    /// Moves a connection's places from its trusted proxy to `client`, which the PROXY
    /// header named; `false` (and the connection is to be closed) when the client is at a
    /// cap.
    fn rekey(&self, client: SocketAddr, slot: &mut Slot, handshake: &mut Option<Slot>) -> bool {
        let ip = crate::client_addr::limit_key(client.ip());
        match self.connections.acquire(ip, false) {
            Ok(own) => *slot = own,
            Err(refusal) => {
                self.metrics.refused("connections");
                self.warn_refusal(ip, "connection", format_args!(
                    "connection from {client} (through a trusted proxy) closed: {refusal}; raise limits.connections_per_ip if this is legitimate"
                ));
                return false;
            }
        }
        if handshake.is_some() {
            match self.handshakes.acquire(ip, false) {
                Ok(own) => *handshake = Some(own),
                Err(refusal) => {
                    self.metrics.refused("tls-handshakes");
                    self.warn_refusal(ip, "tls-handshake", format_args!(
                        "connection from {client} (through a trusted proxy) closed: {refusal}; raise limits.tls_handshakes_per_ip if this is legitimate"
                    ));
                    return false;
                }
            }
        }
        true
    }

    /// Serves HTTP/1.1 on one connection until it closes, times out, or is upgraded (a
    /// WebSocket then owns the connection, and its slot, until the session ends).
    async fn http<I>(&self, io: I, peer: SocketAddr, slot: Slot, stop: CancellationToken)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(AtomicU64::new(self.now_ms()));
        let io = Tracked {
            io,
            activity: activity.clone(),
            epoch: self.epoch,
            _slot: slot,
        };
        let (router, config) = (self.router.clone(), self.config.clone());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // Per request: a proxy's kept-alive connection carries many users.
            let client = ClientAddr::resolve(peer, request.headers(), &config);
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(client);
            router.clone().oneshot(request)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // hyper (1.12, proto/h1/conn.rs) starts this timer whenever it waits for a
            // request head: on a new connection and again after each response on a
            // kept-alive one. So it bounds a connection that never sends a request, one
            // idle between requests, and a half-sent head alike.
            .header_read_timeout(self.config.http_header_timeout)
            .max_buf_size(MAX_REQUEST_HEAD);
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        let idle = self.config.http_idle_timeout;
        let mut stopping = false;
        loop {
            let last = Duration::from_millis(activity.load(Ordering::Relaxed));
            let deadline = self.epoch + last + idle;
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, "HTTP connection ended: {err}");
                    }
                    return;
                }
                () = stop.cancelled(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= self.epoch
                        + Duration::from_millis(activity.load(Ordering::Relaxed)) + idle
                    {
                        tracing::debug!(%peer, "HTTP connection closed: no byte moved for {idle:?}");
                        return;
                    }
                }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Warns within the refusal log's budget for `ip` and `kind` (see `log_limit`).
    fn warn_refusal(&self, ip: IpAddr, kind: &'static str, message: std::fmt::Arguments<'_>) {
        if let Some(suppressed) = self.metrics.refusal_log.admit(ip, kind) {
            tracing::warn!(suppressed, "{message}");
        }
    }
}

/// The total connection cap: the configured one, or less when the open-files limit
/// would run out first, since then `accept` fails for everyone, `/healthz` included.
fn connection_cap(configured: usize) -> usize {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return configured;
    };
    let fits = (soft.saturating_sub(RESERVED_FDS) / 2).max(16);
    let fits = usize::try_from(fits).unwrap_or(usize::MAX);
    if fits < configured {
        tracing::warn!(
            "limits.connections is {configured} but the open-files limit ({soft}) leaves room for about {fits} HTTP connections; the relay accepts at most {fits} at once; raise the limit (ulimit -n, systemd LimitNOFILE=) to allow more"
        );
        fits
    } else {
        configured
    }
}

/// Counts held places in total and per address against two caps.
struct AddressSlots {
    what: &'static str,
    total: usize,
    per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a place was refused; says which cap.
#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AddressSlots {
    fn new(what: &'static str, total: usize, per_ip: usize) -> Self {
        Self {
            what,
            total,
            per_ip,
            open: Mutex::default(),
        }
    }

    /// A place for `ip`; `exempt` skips the per-address cap (the total still counts).
    fn acquire(self: &Arc<Self>, ip: IpAddr, exempt: bool) -> Result<Slot, Refusal> {
        let mut open = self.open.lock().expect("slots lock");
        if open.0 >= self.total {
            return Err(Refusal(format!(
                "the relay has its maximum of {} {} open",
                self.total, self.what
            )));
        }
        let from_ip = open.1.entry(ip).or_default();
        if !exempt && *from_ip >= self.per_ip {
            return Err(Refusal(format!(
                "{ip} has its maximum of {} {} open",
                self.per_ip, self.what
            )));
        }
        *from_ip += 1;
        open.0 += 1;
        Ok(Slot {
            slots: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.open.lock().expect("slots lock").0
    }
}

/// One held place; dropping it frees the place.
struct Slot {
    slots: Arc<AddressSlots>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("slots lock");
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// A connection's IO that notes when a byte last moved (for the idle watchdog) and holds
/// the connection's slot, so the slot lives exactly as long as the socket, through an
/// upgrade to a WebSocket too.
struct Tracked<I> {
    io: I,
    activity: Arc<AtomicU64>,
    epoch: Instant,
    _slot: Slot,
}

impl<I> Tracked<I> {
    fn touch(&self) {
        self.activity
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_in_total_and_per_address_and_come_back() {
        let slots = Arc::new(AddressSlots::new("connections", 3, 2));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let a1 = slots.acquire(a, false).unwrap();
        let _a2 = slots.acquire(a, false).unwrap();
        let err = slots.acquire(a, false).err().unwrap().to_string();
        assert!(
            err.contains("192.0.2.1 has its maximum of 2 connections"),
            "{err}"
        );
        let proxy = slots.acquire(a, true).unwrap();
        let err = slots.acquire(b, false).err().unwrap().to_string();
        assert!(err.contains("maximum of 3 connections open"), "{err}");
        drop(a1);
        drop(proxy);
        assert_eq!(slots.held(), 1);
        let _b1 = slots.acquire(b, false).unwrap();
    }
}
