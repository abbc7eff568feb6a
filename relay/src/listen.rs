//! Opening a forward's listening socket under the operator's policy, and accepting on it.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tabtunnel_proto::ErrorCode;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::Config;
use crate::session::Event;

/// Why a Listen was refused; both parts travel to the tab in ListenFailed.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

fn refuse(code: ErrorCode, message: String) -> Refusal {
    Refusal { code, message }
}

/// Resolves the tab's bind address the way `ssh -L` does: empty or `localhost` means
/// loopback, `*` every IPv4 address.
pub fn parse_bind_address(bind: &str) -> Result<IpAddr, Refusal> {
    match bind {
        "" | "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "*" => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                refuse(
                    ErrorCode::BindNotAllowed,
                    format!(
                        "bind address {:?} is not an IP address; use an IP, localhost or *",
                        crate::log_limit::clip(other)
                    ),
                )
            }),
    }
}

/// Binds a listener for a forward, or says why not in words the user can act on.
pub async fn bind(config: &Config, bind: &str, port: u16) -> Result<TcpListener, Refusal> {
    let ip = parse_bind_address(bind)?;
    if !config.bind_allowed(ip) {
        return Err(refuse(
            ErrorCode::BindNotAllowed,
            format!(
                "binding to {ip} would let other hosts reach this forward, and this relay allows only \
                 loopback binds; its operator can allow it with the allowed_binds setting (--allow-bind)"
            ),
        ));
    }
    let (lo, hi) = (*config.forward_ports.start(), *config.forward_ports.end());
    if port == 0 {
        return bind_any_in_range(ip, lo, hi).await;
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
    TcpListener::bind(SocketAddr::new(ip, port))
        .await
        .map_err(|err| bind_error(err, ip, port, lo, hi))
}

async fn bind_any_in_range(ip: IpAddr, lo: u16, hi: u16) -> Result<TcpListener, Refusal> {
    let span = u32::from(hi - lo) + 1;
    // Start at a random place so concurrent sessions do not race for the same ports.
    let start = random_u32() % span;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(listener) => return Ok(listener),
            Err(err) if err.kind() == ErrorKind::AddrInUse => continue,
            Err(err) => return Err(bind_error(err, ip, port, lo, hi)),
        }
    }
    Err(refuse(
        ErrorCode::PortInUse,
        format!(
            "every port in this relay's forward range {lo}-{hi} is in use; close a forward or ask the operator for a wider range"
        ),
    ))
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

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish() as u32
}

/// Accepts connections for one forward and hands them to the session loop.
pub(crate) async fn accept_loop(forward: u32, listener: TcpListener, events: mpsc::Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                if events
                    .send(Event::Accepted {
                        forward,
                        stream,
                        peer,
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
    use super::*;

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
