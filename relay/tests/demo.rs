//! The embedded demo SSH server, driven by russh's native client over 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelOpenFailure, Error as SshError};
use tabtunnel_relay::demo::{DemoOptions, DemoServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

/// Every test is bounded by this deadline instead of hanging.
const DEADLINE: Duration = Duration::from_secs(30);

/// A client handler that records the server's host key fingerprint and accepts
/// only the expected one.
struct Client {
    expected: String,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Client {
    type Error = SshError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let ok = fingerprint == self.expected;
        *self.seen.lock().unwrap() = Some(fingerprint);
        Ok(ok)
    }
}

/// Connects (verifying the host key) without authenticating.
async fn connect(demo: &DemoServer) -> client::Handle<Client> {
    let seen = Arc::new(Mutex::new(None));
    let handler = Client {
        expected: demo.host_key_fingerprint.clone(),
        seen: seen.clone(),
    };
    let config = Arc::new(client::Config::default());
    let handle = client::connect(config, demo.ssh_addr, handler)
        .await
        .expect("connect and verify the host key");
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some(demo.host_key_fingerprint.as_str()),
        "the client saw the advertised host key"
    );
    handle
}

async fn connect_with_password(demo: &DemoServer) -> client::Handle<Client> {
    let mut handle = connect(demo).await;
    let auth = handle
        .authenticate_password(demo.username.clone(), demo.password.clone())
        .await
        .expect("password auth round trip");
    assert!(auth.success(), "the demo password is accepted: {auth:?}");
    handle
}

/// Sends an HTTP/1.0 request through a direct-tcpip channel, half-closes, and
/// returns everything the service answered.
async fn http_get_through(handle: &client::Handle<Client>, host: &str, port: u16) -> String {
    let channel = handle
        .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
        .await
        .expect("direct-tcpip to the demo service is allowed");
    let mut stream = channel.into_stream();
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("write the request");
    stream.shutdown().await.expect("send EOF");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read the response to its end");
    String::from_utf8_lossy(&response).into_owned()
}

fn assert_prohibited(result: Result<russh::Channel<client::Msg>, SshError>, what: &str) {
    match result {
        Err(SshError::ChannelOpenFailure(ChannelOpenFailure::AdministrativelyProhibited)) => {}
        Err(other) => panic!("{what}: expected AdministrativelyProhibited, got {other:?}"),
        Ok(_) => panic!("{what}: the channel was opened"),
    }
}

#[tokio::test]
async fn password_login_and_forward_to_the_demo_service() {
    timeout(DEADLINE, async {
        let demo = DemoServer::start().await.expect("start the demo");
        assert!(demo.ssh_addr.ip().is_loopback() && demo.http_addr.ip().is_loopback());
        assert_eq!(demo.username, "demo");
        assert!(demo.password.len() >= 16);
        assert!(demo.password.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(demo.host_key_fingerprint.starts_with("SHA256:"));
        let banner = demo.banner();
        assert!(banner.contains(&demo.password));
        assert!(banner.contains(&demo.host_key_fingerprint));
        assert!(banner.contains(&format!("0:127.0.0.1:{}", demo.http_addr.port())));
        assert!(
            !format!("{demo:?}").contains(&demo.password),
            "Debug hides the password"
        );

        let handle = connect_with_password(&demo).await;
        let response = http_get_through(&handle, "127.0.0.1", demo.http_addr.port()).await;
        assert!(
            response.starts_with("HTTP/1."),
            "an HTTP response: {response}"
        );
        assert!(response.contains("tabtunnel demo service"), "{response}");

        // "localhost" names the same service; a second channel on the same session works.
        let response = http_get_through(&handle, "localhost", demo.http_addr.port()).await;
        assert!(response.contains("tabtunnel demo service"), "{response}");

        // Each start has its own password and host key.
        let other = DemoServer::start().await.expect("start a second demo");
        assert_ne!(other.password, demo.password);
        assert_ne!(other.host_key_fingerprint, demo.host_key_fingerprint);
    })
    .await
    .expect("test deadline");
}

#[tokio::test]
async fn wrong_password_and_wrong_user_are_rejected() {
    timeout(DEADLINE, async {
        let demo = DemoServer::start().await.expect("start the demo");

        let mut handle = connect(&demo).await;
        let auth = handle
            .authenticate_password("demo", "not-the-password")
            .await
            .expect("auth round trip");
        assert!(!auth.success(), "a wrong password is rejected");
        let AuthResult::Failure {
            remaining_methods, ..
        } = auth
        else {
            panic!("expected a failure");
        };
        let methods: Vec<_> = remaining_methods.iter().collect();
        assert!(
            methods.contains(&&russh::MethodKind::Password),
            "{methods:?}"
        );
        assert!(
            methods.contains(&&russh::MethodKind::PublicKey),
            "{methods:?}"
        );

        let mut handle = connect(&demo).await;
        let auth = handle
            .authenticate_password("root", demo.password.clone())
            .await
            .expect("auth round trip");
        assert!(
            !auth.success(),
            "the right password for another user is rejected"
        );
    })
    .await
    .expect("test deadline");
}

#[tokio::test]
async fn other_destinations_and_sessions_are_refused() {
    timeout(DEADLINE, async {
        let demo = DemoServer::start().await.expect("start the demo");
        let forbidden = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let forbidden_port = forbidden.local_addr().expect("addr").port();

        let handle = connect_with_password(&demo).await;

        let r = handle
            .channel_open_direct_tcpip("127.0.0.1", u32::from(forbidden_port), "127.0.0.1", 0)
            .await;
        assert_prohibited(r, "another loopback port");
        let r = handle
            .channel_open_direct_tcpip("127.0.0.1", u32::from(demo.ssh_addr.port()), "127.0.0.1", 0)
            .await;
        assert_prohibited(r, "the demo SSH port itself");
        let r = handle
            .channel_open_direct_tcpip(
                "127.0.0.2",
                u32::from(demo.http_addr.port()),
                "127.0.0.1",
                0,
            )
            .await;
        assert_prohibited(r, "another host with the demo service's port");
        let r = handle.channel_open_session().await;
        assert_prohibited(r, "a session channel");

        // The forbidden service never saw a connection from the demo: the first
        // connection in its accept queue is this one.
        let probe = TcpStream::connect(forbidden.local_addr().unwrap())
            .await
            .expect("connect the probe");
        let (_, from) = forbidden.accept().await.expect("accept");
        assert_eq!(from, probe.local_addr().unwrap());

        // The session survived the refusals.
        let response = http_get_through(&handle, "127.0.0.1", demo.http_addr.port()).await;
        assert!(response.contains("tabtunnel demo service"), "{response}");
    })
    .await
    .expect("test deadline");
}

#[tokio::test]
async fn public_key_auth_accepts_only_authorized_keys() {
    timeout(DEADLINE, async {
        let mut rng = rand::rng();
        let authorized = PrivateKey::random(&mut rng, Algorithm::Ed25519).expect("key");
        let stranger = PrivateKey::random(&mut rng, Algorithm::Ed25519).expect("key");
        let demo = DemoServer::start_with(DemoOptions {
            authorized_keys: vec![authorized.public_key().clone()],
            ..DemoOptions::default()
        })
        .await
        .expect("start the demo");
        let authorized = Arc::new(authorized);

        let mut handle = connect(&demo).await;
        let auth = handle
            .authenticate_publickey("demo", PrivateKeyWithHashAlg::new(authorized.clone(), None))
            .await
            .expect("auth round trip");
        assert!(auth.success(), "the authorized key is accepted: {auth:?}");
        let response = http_get_through(&handle, "127.0.0.1", demo.http_addr.port()).await;
        assert!(response.contains("tabtunnel demo service"), "{response}");

        let mut handle = connect(&demo).await;
        let auth = handle
            .authenticate_publickey("demo", PrivateKeyWithHashAlg::new(Arc::new(stranger), None))
            .await
            .expect("auth round trip");
        assert!(!auth.success(), "another key is rejected");

        let mut handle = connect(&demo).await;
        let auth = handle
            .authenticate_publickey("root", PrivateKeyWithHashAlg::new(authorized, None))
            .await
            .expect("auth round trip");
        assert!(
            !auth.success(),
            "the authorized key for another user is rejected"
        );

        // Without options, no key is accepted.
        let plain = DemoServer::start().await.expect("start the demo");
        let key = Arc::new(PrivateKey::random(&mut rng, Algorithm::Ed25519).expect("key"));
        let mut handle = connect(&plain).await;
        let auth = handle
            .authenticate_publickey("demo", PrivateKeyWithHashAlg::new(key, None))
            .await
            .expect("auth round trip");
        assert!(!auth.success());
    })
    .await
    .expect("test deadline");
}

#[tokio::test]
async fn dropping_the_demo_stops_listeners_and_connections() {
    timeout(DEADLINE, async {
        let demo = DemoServer::start().await.expect("start the demo");
        let ssh_addr = demo.ssh_addr;
        let http_addr = demo.http_addr;

        // A live session with an open forwarded channel whose request is unfinished.
        let handle = connect_with_password(&demo).await;
        let channel = handle
            .channel_open_direct_tcpip("127.0.0.1", u32::from(http_addr.port()), "127.0.0.1", 0)
            .await
            .expect("open a forward");
        let mut stream = channel.into_stream();
        stream
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        // An idle HTTP connection straight to the service.
        let mut idle_http = TcpStream::connect(http_addr).await.expect("connect http");

        drop(demo);

        let deadline = Instant::now() + Duration::from_secs(5);
        for addr in [ssh_addr, http_addr] {
            while TcpStream::connect(addr).await.is_ok() {
                assert!(
                    Instant::now() < deadline,
                    "{addr} still accepts connections"
                );
                tokio::task::yield_now().await;
            }
        }

        // The established connections end too (EOF or an error, within the deadline).
        let left = deadline.saturating_duration_since(Instant::now());
        let mut sink = Vec::new();
        // EOF or an error: either way the connection is over.
        let _ = timeout(left, stream.read_to_end(&mut sink))
            .await
            .expect("the forwarded channel ends");
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = timeout(left, idle_http.read_to_end(&mut sink))
            .await
            .expect("the HTTP connection ends");
        let left = deadline.saturating_duration_since(Instant::now());
        timeout(left, async {
            while !handle.is_closed() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the SSH session ends");
    })
    .await
    .expect("test deadline");
}
