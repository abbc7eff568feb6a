//! The PROXY protocol (HAProxy's, v1 text and v2 binary) from trusted proxies, with
//! `proxy_protocol = true`: a proxy that passes TCP through (TLS included, where it cannot
//! add an HTTP header) names the client in a header before the first byte of the
//! connection. Parsed by the `ppp` crate.

use std::net::SocketAddr;

use ppp::PartialResult;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 header's fixed part: signature, version and command, family, length.
const V2_FIXED: usize = 16;
/// The v2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header the spec allows.
const V1_MAX: usize = 107;
/// The longest v2 header read: addresses and a few TLVs (the relay reads none).
const V2_MAX: usize = 1024;

/// Reads the PROXY header at the start of `tcp` and returns the client it names, or
/// `None` for a proxy's own connection (v1 `UNKNOWN`, v2 `LOCAL`, health checks). Reads
/// exactly the header, nothing of what follows (a ClientHello or a request).
pub(crate) async fn read_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    let mut header = Vec::with_capacity(V1_MAX);
    loop {
        // A byte at a time: the header's end is only known by reading it, and what
        // follows belongs to TLS or HTTP. It is a hundred bytes once per connection.
        let mut byte = [0u8; 1];
        match tcp.read(&mut byte).await {
            Ok(1) => header.push(byte[0]),
            Ok(_) => return Err("the connection closed inside its PROXY header".to_owned()),
            Err(err) => return Err(format!("reading the PROXY header failed: {err}")),
        }
        let v2 = if header.len() <= V2_SIGNATURE.len() {
            V2_SIGNATURE.starts_with(&header)
        } else {
            header.starts_with(V2_SIGNATURE)
        };
        if v2 {
            if header.len() < V2_FIXED {
                continue;
            }
            let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
            if V2_FIXED + length > V2_MAX {
                return Err(format!(
                    "a PROXY v2 header of {} bytes is more than the {V2_MAX} read",
                    V2_FIXED + length
                ));
            }
            let mut rest = vec![0u8; length];
            tcp.read_exact(&mut rest)
                .await
                .map_err(|err| format!("reading the PROXY header failed: {err}"))?;
            header.extend_from_slice(&rest);
            break;
        }
        // v1 is one line; ppp is given the whole of it, since it judges a line cut short
        // (`... 8080\r`) as wrong rather than incomplete.
        if header.ends_with(b"\r\n") {
            break;
        }
        if header.len() >= V1_MAX {
            return Err(format!("no end of a PROXY header within {V1_MAX} bytes"));
        }
    }
    let parsed = ppp::HeaderResult::parse(&header);
    if parsed.is_incomplete() {
        return Err("an incomplete PROXY header".to_owned());
    }
    client(parsed)
}

/// The client a complete header names.
fn client(parsed: ppp::HeaderResult<'_>) -> Result<Option<SocketAddr>, String> {
    use ppp::{v1, v2};
    match parsed {
        ppp::HeaderResult::V1(Ok(header)) => Ok(match header.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        ppp::HeaderResult::V2(Ok(header)) => Ok(match (header.command, header.addresses) {
            (v2::Command::Local, _) => None,
            (_, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
        }),
        ppp::HeaderResult::V1(Err(err)) => Err(format!("not a PROXY header: {err}")),
        ppp::HeaderResult::V2(Err(err)) => Err(format!("not a PROXY v2 header: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Sends `bytes` then `after` over a real loopback connection and reads the header.
    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(bytes).await.unwrap();
        client.write_all(b"GET /").await.unwrap();
        client.shutdown().await.unwrap();
        let result = read_header(&mut server).await;
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
        (result, rest)
    }

    #[tokio::test]
    async fn v1_and_v2_name_the_client_and_leave_the_rest() {
        let (client, rest) = read(b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 8080\r\n").await;
        assert_eq!(client.unwrap(), Some("198.51.100.7:5555".parse().unwrap()));
        assert_eq!(rest, b"GET /");
        let (client, _) = read(b"PROXY TCP6 2001:db8::7 ::1 4711 8080\r\n").await;
        assert_eq!(client.unwrap(), Some("[2001:db8::7]:4711".parse().unwrap()));
        let (client, rest) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(client.unwrap(), None);
        assert_eq!(rest, b"GET /");

        let addresses: ppp::v2::Addresses = (
            "198.51.100.8:6000".parse::<SocketAddr>().unwrap(),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
        )
            .into();
        let v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            addresses,
        )
        .build()
        .unwrap();
        let (client, rest) = read(&v2).await;
        assert_eq!(client.unwrap(), Some("198.51.100.8:6000".parse().unwrap()));
        assert_eq!(rest, b"GET /");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            &[b'A'; 200][..],
        ] {
            let (client, _) = read(bad).await;
            assert!(client.is_err(), "{bad:?}: {client:?}");
        }
    }
}
