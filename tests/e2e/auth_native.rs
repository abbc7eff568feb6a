//! Authentication as OpenSSH users meet it, against a real sshd: every key type and file
//! format `ssh-keygen` writes, passphrases, several required methods, clear failures.

use anyhow::Result;
use std::time::Duration;
use tabtunnel_client::native::NativeTransport;
use tabtunnel_client::{
    Auth, ClientError, ConnectOptions, Credentials, HostKeyPolicy, PromptCallback, PromptRequest,
    Session, connect,
};
use tabtunnel_relay::demo::{DemoOptions, DemoServer};

use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::relay::Relay;
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::{init_logging, sshd_login, wait_for};

async fn login(
    relay: &Relay,
    sshd: &Sshd,
    auth: impl Into<Credentials>,
) -> Result<Session, ClientError> {
    let transport = NativeTransport::connect(&relay.ws_url()).await?;
    let options = ConnectOptions {
        keepalive: Some(Default::default()),
        auth: auth.into(),
        ..sshd_login(sshd)
    };
    connect(transport, options).await
}

#[tokio::test]
async fn every_key_type_and_format_ssh_keygen_writes_logs_in() -> Result<()> {
    let Lab { sshd, relay, .. } = Lab::start().await?;
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
    let Lab { sshd, relay, .. } = Lab::start().await?;
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

#[tokio::test]
async fn several_required_methods_are_all_used_and_a_missing_one_is_named() -> Result<()> {
    let Lab { sshd, relay, .. } = Lab::builder()
        .sshd_config("AuthenticationMethods publickey,password")
        .start()
        .await?;
    let key = Auth::PrivateKey {
        pem: sshd.client_key.clone(),
        passphrase: None,
    };

    let both = Credentials {
        password: Some(sshd.password.into()),
        private_key: Some(key.clone()),
        prompt: None,
    };
    let session = login(&relay, &sshd, both).await?;
    session.close().await;

    let err = login(&relay, &sshd, key).await.unwrap_err();
    assert!(matches!(err, ClientError::AuthFailed { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("accepted publickey but also requires password"),
        "{message}"
    );
    assert_no_connection_left(&sshd).await
}

/// A relay with the embedded russh server as target "demo", asking keyboard-interactive
/// questions: the password, then a code.
async fn demo_with_second_factor() -> Result<(DemoServer, Relay)> {
    let demo = DemoServer::start_with(DemoOptions {
        second_factor: Some("4242".into()),
        ..DemoOptions::default()
    })
    .await?;
    let relay = Relay::start(&[("demo", &demo.ssh_addr.to_string())]).await?;
    Ok((demo, relay))
}

async fn demo_login(
    relay: &Relay,
    demo: &DemoServer,
    credentials: Credentials,
) -> Result<Session, ClientError> {
    let transport = NativeTransport::connect(&relay.ws_url()).await?;
    let options = ConnectOptions {
        keepalive: Some(Default::default()),
        token: None,
        target: "demo".into(),
        username: demo.username.clone(),
        auth: credentials,
        host_key: HostKeyPolicy {
            pinned: vec![],
            expected: Some(demo.host_key_fingerprint.clone()),
            ask: None,
            known_hosts: None,
        },
    };
    connect(transport, options).await
}

/// Answers every round with `answers` and records what was asked.
fn answering(
    answers: Option<Vec<&'static str>>,
) -> (PromptCallback, std::sync::mpsc::Receiver<PromptRequest>) {
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let callback: PromptCallback = Box::new(move |request| {
        let _ = seen_tx.send(request);
        let answers = answers
            .clone()
            .map(|a| a.into_iter().map(String::from).collect());
        Box::pin(async move { answers })
    });
    (callback, seen)
}

#[tokio::test]
async fn keyboard_interactive_prompts_are_answered_through_the_callback() -> Result<()> {
    init_logging();
    let (demo, relay) = demo_with_second_factor().await?;
    let password: &'static str = Box::leak(demo.password.clone().into_boxed_str());

    let (prompt, seen) = answering(Some(vec![password, "4242"]));
    let session = demo_login(
        &relay,
        &demo,
        Credentials {
            prompt: Some(prompt),
            ..Credentials::default()
        },
    )
    .await?;
    let asked = seen.recv()?;
    assert_eq!(asked.name, "tabtunnel demo");
    assert_eq!(asked.instructions, "Log in to the demo SSH server.");
    let fields: Vec<(&str, bool)> = asked
        .prompts
        .iter()
        .map(|p| (p.prompt.as_str(), p.echo))
        .collect();
    assert_eq!(
        fields,
        [("Password: ", false), ("Verification code: ", true)]
    );
    session.close().await;

    let (prompt, _seen) = answering(Some(vec![password, "0000"]));
    let err = demo_login(
        &relay,
        &demo,
        Credentials {
            prompt: Some(prompt),
            ..Credentials::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("the server accepts: keyboard-interactive"),
        "{err}"
    );

    let (prompt, _seen) = answering(None);
    let err = demo_login(
        &relay,
        &demo,
        Credentials {
            prompt: Some(prompt),
            ..Credentials::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::AuthCancelled), "{err:?}");

    // A password alone cannot answer two questions; the error says what was asked.
    let err = demo_login(&relay, &demo, Auth::Password(password.into()).into())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("no onPrompt was given") && message.contains("Verification code:"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn a_single_hidden_prompt_is_answered_with_the_password() -> Result<()> {
    init_logging();
    // The default demo offers keyboard-interactive ("Password:") before password, as
    // PAM-backed servers do; a password alone must get through it.
    let demo = DemoServer::start().await?;
    let relay = Relay::start(&[("demo", &demo.ssh_addr.to_string())]).await?;
    let session = demo_login(&relay, &demo, Auth::Password(demo.password.clone()).into()).await?;
    session.close().await;
    Ok(())
}

#[tokio::test]
async fn key_errors_name_the_real_problem() -> Result<()> {
    let Lab { sshd, relay, .. } = Lab::start().await?;

    // Legacy PEM with AES-256-CBC (openssl's choice, not ssh-keygen's): the right
    // passphrase must work, not be called wrong.
    sshd.new_client_key("rsa", Some(2048), "PEM", "")?;
    let plain = sshd.dir().join("key-rsa-2048-PEM-0");
    let aes256 = sshd.dir().join("key-rsa-aes256.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "rsa",
            "-traditional",
            "-aes256",
            "-passout",
            "pass:s3cret",
            "-in",
        ])
        .arg(&plain)
        .arg("-out")
        .arg(&aes256)
        .stderr(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "openssl rsa -aes256 failed");
    let pem = std::fs::read_to_string(&aes256)?;
    assert!(pem.contains("DEK-Info: AES-256-CBC"), "{pem}");
    let session = login(
        &relay,
        &sshd,
        Auth::PrivateKey {
            pem: pem.clone(),
            passphrase: Some("s3cret".into()),
        },
    )
    .await?;
    session.close().await;
    let err = login(
        &relay,
        &sshd,
        Auth::PrivateKey {
            pem,
            passphrase: Some("nope".into()),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::WrongPassphrase), "{err:?}");

    // A damaged encrypted OpenSSH key with the right passphrase is damaged, not "wrong".
    let encrypted = sshd.new_client_key("ed25519", None, "", "right one")?;
    let mut lines: Vec<&str> = encrypted.lines().collect();
    let cut = lines.len() / 2;
    lines.drain(2..cut);
    let damaged = lines.join("\n");
    let err = login(
        &relay,
        &sshd,
        Auth::PrivateKey {
            pem: damaged,
            passphrase: Some("right one".into()),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::BadKey(_)), "{err:?}");
    assert!(err.to_string().contains("paste the whole file"), "{err}");
    assert_no_connection_left(&sshd).await
}

#[tokio::test]
async fn a_given_password_is_never_asked_again_and_a_refused_method_is_named() -> Result<()> {
    init_logging();
    // The default demo asks "Password:" through keyboard-interactive first, as PAM does.
    let demo = DemoServer::start().await?;
    let relay = Relay::start(&[("demo", &demo.ssh_addr.to_string())]).await?;
    let (prompt, asked) = answering(Some(vec!["should not be needed"]));
    let credentials = Credentials {
        password: Some(demo.password.clone()),
        prompt: Some(prompt),
        ..Credentials::default()
    };
    let session = demo_login(&relay, &demo, credentials).await?;
    assert!(
        asked.try_recv().is_err(),
        "onPrompt was asked for a password the user had given"
    );
    session.close().await;

    let Lab { sshd, relay, .. } = Lab::builder()
        .sshd_config("AuthenticationMethods publickey,password")
        .start()
        .await?;
    let key = Auth::PrivateKey {
        pem: sshd.client_key.clone(),
        passphrase: None,
    };
    let wrong = Credentials {
        password: Some("not it".into()),
        private_key: Some(key),
        prompt: None,
    };
    let message = login(&relay, &sshd, wrong).await.unwrap_err().to_string();
    assert!(
        message.contains("the password given was refused; the server accepted publickey but also requires password"),
        "{message}"
    );
    Ok(())
}
