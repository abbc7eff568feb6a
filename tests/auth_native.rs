//! Authentication as OpenSSH users meet it, against a real sshd: every key type and file
//! format `ssh-keygen` writes, passphrases, several required methods, clear failures.

use anyhow::Result;
use std::time::Duration;
use tabtunnel_client::native::NativeTransport;
use tabtunnel_client::{Auth, ClientError, ConnectOptions, HostKeyPolicy, Session, connect};

use tabtunnel_e2e::relay::Relay;
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{init_logging, wait_for};

async fn login(relay: &Relay, sshd: &Sshd, auth: Auth) -> Result<Session, ClientError> {
    let transport = NativeTransport::connect(&relay.ws_url()).await?;
    let options = ConnectOptions {
        target: "sshd".into(),
        username: sshd.user.into(),
        auth,
        host_key: HostKeyPolicy {
            pinned: vec![],
            expected: Some(sshd.host_key_fingerprint.clone()),
            ask: None,
        },
    };
    connect(transport, options).await
}

#[tokio::test]
async fn every_key_type_and_format_ssh_keygen_writes_logs_in() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = Relay::start(&[("sshd", &sshd.address())]).await?;
    let kinds: [(&str, Option<u32>); 5] = [
        ("ed25519", None),
        ("ecdsa", Some(256)),
        ("ecdsa", Some(384)),
        ("ecdsa", Some(521)),
        ("rsa", Some(2048)),
    ];
    let mut failures = Vec::new();
    let mut tried = 0;
    for (kind, bits) in kinds {
        for format in ["", "PEM", "PKCS8"] {
            // ssh-keygen writes ed25519 keys in its own format whatever -m says.
            if kind == "ed25519" && !format.is_empty() {
                continue;
            }
            for passphrase in ["", "correct horse"] {
                let pem = sshd.new_client_key(kind, bits, format, passphrase)?;
                let label = format!(
                    "{kind}{} {} {}",
                    bits.map(|b| format!("-{b}")).unwrap_or_default(),
                    if format.is_empty() { "OpenSSH" } else { format },
                    if passphrase.is_empty() {
                        "plain"
                    } else {
                        "encrypted"
                    },
                );
                let auth = Auth::PrivateKey {
                    pem: pem.clone(),
                    passphrase: (!passphrase.is_empty()).then(|| passphrase.to_owned()),
                };
                tried += 1;
                match login(&relay, &sshd, auth).await {
                    Ok(session) => session.close().await,
                    Err(err) => failures.push(format!("{label}: {err}")),
                }
                if !passphrase.is_empty() {
                    // The wrong passphrase gets its own message, and so does none at all.
                    let wrong = Auth::PrivateKey {
                        pem: pem.clone(),
                        passphrase: Some("wrong".into()),
                    };
                    match login(&relay, &sshd, wrong).await {
                        Err(ClientError::WrongPassphrase) => {}
                        other => {
                            failures.push(format!("{label} with a wrong passphrase: {other:?}"))
                        }
                    }
                    let none = Auth::PrivateKey {
                        pem,
                        passphrase: None,
                    };
                    match login(&relay, &sshd, none).await {
                        Err(ClientError::BadKey(message)) if message.contains("passphrase") => {}
                        other => {
                            failures.push(format!("{label} without its passphrase: {other:?}"))
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {tried} keys failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_no_connection_left(&sshd).await
}

/// Every session of a test is over: sshd must see no connection left behind.
async fn assert_no_connection_left(sshd: &Sshd) -> Result<()> {
    wait_for(
        "sshd's connections to close",
        Duration::from_secs(10),
        || async { (sshd.open_connections() == 0).then_some(()) },
    )
    .await
}

#[tokio::test]
async fn failed_logins_and_dropped_sessions_leave_no_connection_behind() -> Result<()> {
    init_logging();
    let sshd = Sshd::start().await?;
    let relay = Relay::start(&[("sshd", &sshd.address())]).await?;
    let err = login(&relay, &sshd, Auth::Password("wrong".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::AuthFailed { .. }), "{err:?}");
    assert_no_connection_left(&sshd).await?;

    let session = login(&relay, &sshd, Auth::Password(sshd.password.into())).await?;
    assert_eq!(sshd.open_connections(), 1);
    drop(session); // no close(): dropping the last handle must end it too
    assert_no_connection_left(&sshd).await
}
