//! Opening a forward's listening sockets under the operator's policy, and accepting on them.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tabtunnel_proto::ErrorCode;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::Config;
use crate::config::values::{BindAddr, InvalidValue};
use crate::connection::Client;
use crate::ports::{self, Holder, Lease, PORT_ZERO_ATTEMPTS, PortBook, Refusal, Want};

fn refuse(code: ErrorCode, message: String) -> Refusal {
    Refusal { code, message }
}

/// A forward's listening sockets (two for `localhost`: IPv4 and IPv6 loopback on the same
/// port) and its entry in the relay's book of ports.
#[derive(Debug)]
pub struct Bound {
    pub listeners: Vec<TcpListener>,
    pub lease: Lease,
    /// The bind address as the Listen asked for it (a resumed session's Listen must ask
    /// for the same to take a parked forward back).
    pub addr: BindAddr,
}

impl Bound {
    /// Where it listens, as the tab is told: the first address (IPv4 for `localhost`).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners
            .first()
            .ok_or_else(|| std::io::Error::other("no listener"))?
            .local_addr()
    }
}

/// Binds the listeners of a forward for `holder` (token holder `user`, if any), or says
/// why not in words the user can act on. The relay's book of ports answers first, without
/// a system call: caps, ports its own forwards hold, a full range.
pub async fn bind(
    config: &Config,
    holder: &Holder,
    user: Option<&str>,
    bind: &str,
    port: u16,
) -> Result<Bound, Refusal> {
    // Read the way `ssh -L` reads it (see `BindAddr`); IPv6 loopback is added to
    // `localhost` below. The tab chooses this text: it is clipped first, so a refusal
    // quotes only its start (no address is anywhere near the clip's length).
    let addr: BindAddr = crate::log_limit::clip(bind)
        .parse()
        .map_err(|err: InvalidValue| refuse(ErrorCode::BindNotAllowed, err.to_string()))?;
    let ip = addr.ip();
    if !config.bind_allowed(ip) {
        return Err(refuse(
            ErrorCode::BindNotAllowed,
            format!(
                "binding to {ip} would let other hosts reach this forward, and this relay allows only \
                 loopback binds; its operator can allow it with the allowed_binds setting (--allow-bind)"
            ),
        ));
    }
    // `localhost` means both loopback families, as OpenSSH binds it: on IPv4 alone, another
    // session could take [::1] on the same port and receive the clients that try it first.
    let both = [ip, IpAddr::V6(Ipv6Addr::LOCALHOST)];
    let addrs = if addr == BindAddr::Localhost {
        &both[..]
    } else {
        &both[..1]
    };
    let block = ports::block_of(config, user);
    let want = Want {
        addrs,
        user,
        range: block
            .clone()
            .unwrap_or_else(|| config.forward_ports.clone()),
        block: block.is_some(),
    };
    let (lo, hi) = (*config.forward_ports.start(), *config.forward_ports.end());
    if port == 0 {
        return bind_any(config, holder, &want, addr).await;
    }
    if port < 1024 && !config.allow_privileged_ports {
        return Err(refuse(
            ErrorCode::PortNotAllowed,
            format!(
                "port {port} is below 1024: listening there needs root-level privilege on the relay \
                 host (CAP_NET_BIND_SERVICE), which this relay's operator has not allowed; \
                 use a port in {lo}-{hi}, or 0 for any free one"
            ),
        ));
    }
    if !config.forward_ports.contains(&port) {
        return Err(refuse(
            ErrorCode::PortNotAllowed,
            format!(
                "port {port} is outside this relay's forward range {lo}-{hi}; pick a port in it, or 0 for any free one"
            ),
        ));
    }
    if let Some(block) = &block
        && !block.contains(&port)
    {
        let (lo, hi) = (block.start(), block.end());
        return Err(refuse(
            ErrorCode::PortNotAllowed,
            format!(
                "port {port} is outside your block {lo}-{hi} of this relay's forward ports (each token holder has its own); pick a port in it, or 0 for any free one"
            ),
        ));
    }
    let lease = holder.lease(&want, port, &config.limits)?;
    let (lo, hi) = (*want.range.start(), *want.range.end());
    let listeners = open(&holder.book, addrs, port)
        .await
        .map_err(|(err, ip)| bind_error(err, ip, port, lo, hi))?;
    Ok(Bound {
        listeners,
        lease,
        addr,
    })
}

/// Port 0: a port the book does not hold, at most [`PORT_ZERO_ATTEMPTS`] binds, since
/// every port another program holds costs one.
async fn bind_any(
    config: &Config,
    holder: &Holder,
    want: &Want<'_>,
    addr: BindAddr,
) -> Result<Bound, Refusal> {
    let (lo, hi) = (*want.range.start(), *want.range.end());
    let mut tried = Vec::new();
    loop {
        let lease = holder.lease_any(want, &tried, &config.limits)?;
        let port = lease.port();
        match open(&holder.book, want.addrs, port).await {
            Ok(listeners) => {
                return Ok(Bound {
                    listeners,
                    lease,
                    addr,
                });
            }
            Err((err, _)) if err.kind() == ErrorKind::AddrInUse => {
                tried.push(port);
                if tried.len() >= PORT_ZERO_ATTEMPTS {
                    return Err(ports::busy(lo, hi, tried.len()));
                }
            }
            Err((err, ip)) => return Err(bind_error(err, ip, port, lo, hi)),
        }
    }
}

/// Listens on `port` of every address in `addrs`, all or none. The second of two is IPv6
/// loopback for `localhost`: a host without IPv6 gets the IPv4 listener alone, but a ::1
/// port held by someone else refuses the forward rather than listen on half of it.
async fn open(
    book: &PortBook,
    addrs: &[IpAddr],
    port: u16,
) -> Result<Vec<TcpListener>, (std::io::Error, IpAddr)> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for (i, &ip) in addrs.iter().enumerate() {
        let optional = i > 0;
        book.count_bind();
        match listen_on(SocketAddr::new(ip, port)) {
            Ok(listener) => listeners.push(listener),
            Err(NoListener::NoFamily) if optional => {}
            Err(NoListener::NoFamily) => {
                let err =
                    std::io::Error::new(ErrorKind::AddrNotAvailable, "no such address family");
                return Err((err, ip));
            }
            Err(NoListener::Failed(err))
                if optional && err.kind() == ErrorKind::AddrNotAvailable => {}
            Err(NoListener::Failed(err)) => return Err((err, ip)),
        }
    }
    Ok(listeners)
}

enum NoListener {
    /// The host has no socket of this address family (IPv6 switched off).
    NoFamily,
    Failed(std::io::Error),
}

/// One listening socket. IPv6 ones are IPv6-only, so that a listener never takes the
/// IPv4 side of a port by surprise; address reuse as std and tokio set it, so a port
/// whose old connections linger in TIME_WAIT can be listened on again.
fn listen_on(addr: SocketAddr) -> Result<TcpListener, NoListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4().map_err(NoListener::Failed)?,
        SocketAddr::V6(_) => {
            let socket = TcpSocket::new_v6().map_err(|_| NoListener::NoFamily)?;
            socket2::SockRef::from(&socket)
                .set_only_v6(true)
                .map_err(NoListener::Failed)?;
            socket
        }
    };
    socket.set_reuseaddr(true).map_err(NoListener::Failed)?;
    socket.bind(addr).map_err(NoListener::Failed)?;
    socket.listen(1024).map_err(NoListener::Failed)
}

fn bind_error(err: std::io::Error, ip: IpAddr, port: u16, lo: u16, hi: u16) -> Refusal {
    match err.kind() {
        ErrorKind::AddrInUse => refuse(
            ErrorCode::PortInUse,
            format!(
                "port {port} on {ip} is already in use on the relay host; pick another port in {lo}-{hi}, or 0 for any free one"
            ),
        ),
        ErrorKind::PermissionDenied => refuse(
            ErrorCode::PortNotAllowed,
            format!(
                "the relay host does not allow listening on port {port}: it needs root-level privilege (CAP_NET_BIND_SERVICE)"
            ),
        ),
        ErrorKind::AddrNotAvailable => refuse(
            ErrorCode::BindNotAllowed,
            format!(
                "{ip} is not an address of the relay host; use 127.0.0.1 or one of its addresses"
            ),
        ),
        _ => refuse(
            ErrorCode::Internal,
            format!("cannot listen on {ip}:{port}: {err}"),
        ),
    }
}

/// A client of one of a session's forwards, for the session to admit or close: a TCP
/// client its listener accepted, or a web forward's request.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub forward: u32,
    pub stream: Client,
    pub peer: SocketAddr,
    /// Told whether the session admitted it, and if not why (a web request answers with
    /// it); a TCP client learns only that its connection closed.
    pub admitted: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// Accepts connections for one forward, on each of its listeners, and hands them to the
/// session, until the session stops reading or aborts it. The listeners are shared: a
/// lost session parks them (see `parked`) after stopping this loop.
pub(crate) async fn accept_loop(
    forward: u32,
    listeners: std::sync::Arc<[TcpListener]>,
    to_session: mpsc::Sender<Accepted>,
) {
    let mut first = 0;
    loop {
        // Polled in turn, starting with a different one each time, so a flood on one
        // family cannot starve the other.
        let accepted = std::future::poll_fn(|cx| {
            for i in 0..listeners.len() {
                let listener = &listeners[(first + i) % listeners.len()];
                if let std::task::Poll::Ready(result) = listener.poll_accept(cx) {
                    return std::task::Poll::Ready(result);
                }
            }
            std::task::Poll::Pending
        })
        .await;
        first = first.wrapping_add(1);
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                if to_session
                    .send(Accepted {
                        forward,
                        stream: Client::Tcp(stream),
                        peer,
                        admitted: None,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                warn!(forward, "accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    thread_local! {
        static BOOK: Arc<PortBook> = Arc::default();
    }

    /// Each call as a session of its own, all sharing one book of ports.
    async fn bind(config: &Config, bind: &str, port: u16) -> Result<Bound, Refusal> {
        static SESSION: AtomicU64 = AtomicU64::new(1);
        let holder = Holder {
            book: BOOK.with(Arc::clone),
            session: SESSION.fetch_add(1, Ordering::Relaxed),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        super::bind(config, &holder, None, bind, port).await
    }

    /// A port free on both loopback families, below the ephemeral range's usual start.
    fn free_dual_port() -> u16 {
        (21000..22000)
            .find(|&p| {
                std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                    && std::net::TcpListener::bind(("::1", p)).is_ok()
            })
            .expect("a free port")
    }

    #[tokio::test]
    async fn localhost_listens_on_both_loopback_families_and_refuses_half() {
        let port = free_dual_port();
        let config = Config {
            forward_ports: port..=port,
            ..Config::default()
        };
        let bound = bind(&config, "localhost", port).await.unwrap();
        let mut families: Vec<_> = bound
            .listeners
            .iter()
            .map(|l| l.local_addr().unwrap())
            .collect();
        families.sort();
        assert_eq!(
            families,
            vec![
                SocketAddr::from(([127, 0, 0, 1], port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, port))
            ]
        );
        assert_eq!(
            bound.local_addr().unwrap().to_string(),
            format!("127.0.0.1:{port}")
        );
        // Another session's [::1] on the same port: refused by the book, no bind.
        let binds = BOOK.with(|b| b.binds());
        let err = bind(&config, "[::1]", port).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::PortInUse, "{}", err.message);
        assert_eq!(BOOK.with(|b| b.binds()), binds);
        drop(bound);

        // Someone else holds [::1]:port: the forward is refused, not half-opened, and
        // its IPv4 listener is closed again.
        let other = std::net::TcpListener::bind(("::1", port)).unwrap();
        let err = bind(&config, "", port).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::PortInUse, "{}", err.message);
        assert!(err.message.contains("::1"), "{}", err.message);
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("IPv4 side closed again");
        drop(other);
    }

    #[tokio::test]
    async fn policy_refusals_say_what_to_do() {
        let config = Config {
            forward_ports: 20000..=20001,
            ..Config::default()
        };
        let err = bind(&config, "", 80).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::PortNotAllowed);
        assert!(
            err.message.contains("CAP_NET_BIND_SERVICE"),
            "{}",
            err.message
        );
        let err = bind(&config, "", 30000).await.unwrap_err();
        assert!(err.message.contains("20000-20001"), "{}", err.message);
        let err = bind(&config, "0.0.0.0", 20000).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::BindNotAllowed);
        assert!(err.message.contains("allowed_binds"), "{}", err.message);
        let err = bind(&config, "mail.example.com", 20000).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::BindNotAllowed);
        let err = bind(&config, &"x".repeat(5000), 20000).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::BindNotAllowed);
        assert!(err.message.len() < 300, "clipped: {}", err.message);
    }

    #[tokio::test]
    async fn port_zero_takes_a_free_port_in_range_and_reports_exhaustion() {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let config = Config {
            forward_ports: port..=port,
            ..Config::default()
        };
        let first = bind(&config, "127.0.0.1", 0).await.unwrap();
        assert_eq!(first.local_addr().unwrap().port(), port);
        let err = bind(&config, "127.0.0.1", 0).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::PortInUse);
        let err = bind(&config, "127.0.0.1", port).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::PortInUse);
        assert!(err.message.contains("already in use"), "{}", err.message);
    }
}
