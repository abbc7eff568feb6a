//! HTTPS for the page and `wss://` for sessions: the operator's certificate and key,
//! checked at start, and the handshake of each connection the front door (`serve`)
//! accepts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why the certificate or key cannot be used; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "{given} is set but {missing} is not: give both, the certificate chain and its private key (PEM files)"
    )]
    Half {
        given: &'static str,
        missing: &'static str,
    },
    #[error(
        "cannot read the TLS {what} file {path}: {source}; check the path and that the relay's user may read it"
    )]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS {what} file {path} is not valid PEM: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "TLS certificate file {0} holds no certificate (-----BEGIN CERTIFICATE-----); give the certificate chain, e.g. certbot's fullchain.pem"
    )]
    NoCertificate(PathBuf),
    #[error(
        "TLS certificate file {0} holds a private key, not a certificate: are the certificate and key files swapped?"
    )]
    KeyInsteadOfCertificate(PathBuf),
    #[error(
        "TLS key file {0} holds no private key (-----BEGIN PRIVATE KEY-----, RSA or EC PRIVATE KEY); give the certificate's key, e.g. certbot's privkey.pem"
    )]
    NoKey(PathBuf),
    #[error(
        "TLS key file {0} is encrypted; the relay cannot ask for a passphrase, so decrypt it: openssl pkey -in KEY -out KEY.plain"
    )]
    EncryptedKey(PathBuf),
    #[error(
        "TLS key file {key} does not belong to the certificate in {cert} ({reason}); give the key the certificate was issued for"
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// Reads `cert` (a PEM chain, leaf first) and `key` (PEM) and checks that they belong
/// together, so a mistake stops the relay at start rather than failing every handshake.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("certificate", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error("certificate", cert, err))?;
    if chain.is_empty() {
        return Err(if PrivateKeyDer::from_pem_slice(&cert_pem).is_ok() {
            TlsError::KeyInsteadOfCertificate(cert.to_owned())
        } else {
            TlsError::NoCertificate(cert.to_owned())
        });
    }
    let key_pem = read("key", key)?;
    let private_key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            // PKCS#8 encrypted keys are a PEM section rustls does not read.
            let encrypted = String::from_utf8_lossy(&key_pem).contains("ENCRYPTED PRIVATE KEY");
            return Err(if encrypted {
                TlsError::EncryptedKey(key.to_owned())
            } else {
                TlsError::NoKey(key.to_owned())
            });
        }
        Err(err) => return Err(pem_error("key", key, err)),
    };
    // ring explicitly: the workspace may also build aws-lc-rs (test tools pull it in), and
    // rustls refuses to guess between two providers.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Setup(err.to_string()))?
        .with_no_client_auth()
        // Checks that the key is usable and that its public key is the certificate's.
        .with_single_cert(chain, private_key)
        .map_err(|err| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: err.to_string(),
        })?;
    // HTTP/1.1 only: WebSockets over HTTP/2 need extended CONNECT, which browsers and
    // this server do not agree on everywhere.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn pem_error(what: &'static str, path: &Path, err: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_owned(),
        reason: err.to_string(),
    }
}

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plain-HTTP client (a mistyped `http://` or `ws://`) reads instead of a broken
/// handshake.
const PLAIN_HTTP_ANSWER: &str =
    "This relay speaks HTTPS only: use https:// (wss:// for WebSockets) on this port.\n";

/// Completes the TLS handshake of a new connection, or gives up: a client has
/// `first_byte` to start (browsers send their ClientHello at once, so a silent connection
/// is let go quickly) and `whole` for the entire handshake. Each connection runs this in
/// its own task (see `serve`), so a slow or silent client delays nobody else.
pub(crate) async fn handshake(
    mut tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    first_byte: Duration,
    whole: Duration,
) -> Option<TlsStream<TcpStream>> {
    let started = tokio::time::Instant::now();
    let mut first = [0u8; 1];
    match tokio::time::timeout(first_byte, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != TLS_HANDSHAKE_RECORD => {
            tracing::debug!(%peer, "plain HTTP on the HTTPS port; told the client to use https://");
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_ANSWER}",
                PLAIN_HTTP_ANSWER.len()
            );
            let _ = tokio::time::timeout(first_byte, async {
                let _ = tcp.write_all(answer.as_bytes()).await;
                let _ = tcp.shutdown().await;
            })
            .await;
            return None;
        }
        Ok(Ok(1)) => {}
        Ok(_) => return None,
        Err(_) => {
            tracing::debug!(%peer, "TLS connection closed: no byte within {first_byte:?}");
            return None;
        }
    }
    match tokio::time::timeout_at(started + whole, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(err)) => {
            // Typically a browser that does not trust the certificate.
            tracing::debug!(%peer, "TLS handshake failed: {err}");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out after {whole:?}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn self_signed() -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap()
    }

    #[test]
    fn a_matching_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let pair = self_signed();
        let cert = write(dir.path(), "cert.pem", &pair.cert.pem());
        let key = write(dir.path(), "key.pem", &pair.signing_key.serialize_pem());
        load(&cert, &key).unwrap();
    }

    #[test]
    fn each_mistake_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (self_signed(), self_signed());
        let cert = write(dir.path(), "cert.pem", &a.cert.pem());
        let key = write(dir.path(), "key.pem", &a.signing_key.serialize_pem());
        let other_key = write(dir.path(), "other.pem", &b.signing_key.serialize_pem());
        let empty = write(dir.path(), "empty.pem", "nothing here\n");
        let encrypted = write(
            dir.path(),
            "enc.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let missing = dir.path().join("missing.pem");
        for (cert, key, says, named) in [
            (
                &missing,
                &key,
                "cannot read the TLS certificate file",
                &missing,
            ),
            (&cert, &missing, "cannot read the TLS key file", &missing),
            (&empty, &key, "holds no certificate", &empty),
            (&key, &cert, "swapped", &key),
            (&cert, &empty, "holds no private key", &empty),
            (&cert, &encrypted, "encrypted", &encrypted),
            (
                &cert,
                &other_key,
                "does not belong to the certificate",
                &other_key,
            ),
        ] {
            let err = load(cert, key).unwrap_err().to_string();
            assert!(err.contains(says), "{cert:?} {key:?}: {err}");
            assert!(
                err.contains(&named.display().to_string()),
                "names the file: {err}"
            );
        }
    }
}
