//! The operator's command line, through the real relay binary: `--check-config` on a
//! good and a bad configuration (it listens on nothing and never prints a token secret),
//! and `--version` with the git revision. JSON logs are checked in `no_leaks`. And the
//! systemd unit in deploy/systemd, through `systemd-analyze verify`.

use std::time::Duration;

use anyhow::Result;
use tabtunnel_e2e::relay::relay_binary;

/// Runs the relay binary with `args` (bounded in time): exit code, stdout, stderr.
async fn run_relay(args: &[&str]) -> Result<(Option<i32>, String, String)> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(relay_binary()?)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("relay {args:?} did not exit within 30 s"))??;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn check_config_prints_the_effective_settings_without_secrets_and_listens_on_nothing()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "erin erin-5e3c0a91d2b74f68\nfrank frank-0b9e4471c2aa31d5\n",
    )?;
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "token_file = {:?}\nidle_timeout = \"8h\"\n[targets.lab]\naddress = \"127.0.0.1:22\"\n",
            tokens.display().to_string()
        ),
    )?;
    // The address the relay would serve on is taken: a check that listened would fail.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let listen = taken.local_addr()?.to_string();
    let config_arg = config.to_string_lossy().into_owned();
    let (code, stdout, stderr) = run_relay(&[
        "--check-config",
        "--config",
        &config_arg,
        "--listen",
        &listen,
        "--public-host",
        "relay.example.com",
        "--log-format",
        "json",
    ])
    .await?;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for shown in [
        "idle_timeout = \"8h\"",               // from the file
        "public_host = \"relay.example.com\"", // from a flag
        "log_format = \"json\"",               // from a flag
        "resume_grace = \"1m\"",               // a default
        "# access tokens: 2 (secrets not shown)",
        "token_holders = [\"erin\", \"frank\"]",
        "[targets.\"lab\"]\naddress = \"127.0.0.1:22\"",
        "# configuration OK",
        "# page: embedded in this binary (",
    ] {
        assert!(stdout.contains(shown), "{shown:?} missing:\n{stdout}");
    }
    for output in [&stdout, &stderr] {
        assert!(
            !output.contains("5e3c0a91d2b74f68"),
            "a secret shown:\n{output}"
        );
        assert!(
            !output.contains("0b9e4471c2aa31d5"),
            "a secret shown:\n{output}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn check_config_prints_each_error_with_what_to_do_and_fails() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "forward_ports = \"80-90\"\n")?;
    let config_arg = config.to_string_lossy().into_owned();
    let (code, stdout, stderr) = run_relay(&["--check-config", "--config", &config_arg]).await?;
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.is_empty(), "no settings printed: {stdout}");
    assert!(
        stderr.contains("error: forward_ports: ") && stderr.contains("allow_privileged_ports"),
        "{stderr}"
    );
    assert!(stderr.contains("the relay would not start"), "{stderr}");

    // A config that loads but would not start for two reasons: both are printed.
    let missing = dir
        .path()
        .join("missing.pem")
        .to_string_lossy()
        .into_owned();
    let (code, stdout, stderr) = run_relay(&[
        "--check-config",
        "--tls-cert",
        &missing,
        "--tls-key",
        &missing,
    ])
    .await?;
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("error: no SSH targets: add --target"),
        "{stderr}"
    );
    assert!(stderr.contains("missing.pem"), "the TLS error: {stderr}");
    assert_eq!(stderr.matches("error: ").count(), 2, "{stderr}");
    Ok(())
}

#[tokio::test]
async fn version_names_the_crate_version_and_the_git_revision() -> Result<()> {
    let (code, stdout, stderr) = run_relay(&["--version"]).await?;
    assert_eq!(code, Some(0), "{stderr}");
    let expected = format!("tabtunnel-relay {} (", env!("CARGO_PKG_VERSION"));
    assert!(stdout.starts_with(&expected), "{stdout}");
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    match revision {
        // Built from this checkout: its commit (dirty or not, as the tree is).
        Some(rev) => assert!(stdout.contains(&format!("(rev {rev}")), "{stdout} vs {rev}"),
        None => assert!(stdout.contains("(unknown revision)"), "{stdout}"),
    }
    Ok(())
}

/// Where the unit expects the relay (README.md, "Running a relay").
const INSTALLED_RELAY: &str = "/usr/local/bin/tabtunnel-relay";

/// Runs `systemd-analyze verify` on `unit` (bounded in time): success, and all it said.
async fn systemd_verify(unit: &std::path::Path) -> Result<(bool, String)> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(unit)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("systemd-analyze verify did not end within 30 s"))??;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), said))
}

/// The unit, alone and with its privileged-ports drop-in, passes `systemd-analyze verify`
/// without a word; verify wants ExecStart's file to exist, so the copies name the relay
/// binary under test where the unit says /usr/local/bin/tabtunnel-relay. A misspelled key
/// is reported, so the silence means something.
#[tokio::test]
async fn the_systemd_unit_verifies_without_a_warning() -> Result<()> {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let unit = std::fs::read_to_string(deploy.join("tabtunnel-relay.service"))?;
    let drop_in = std::fs::read_to_string(deploy.join("privileged-ports.conf"))?;
    let lines: Vec<&str> = unit.lines().collect();
    for wanted in [
        "ExecStart=/usr/local/bin/tabtunnel-relay --config /etc/tabtunnel/relay.toml --log-format json",
        "DynamicUser=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(lines.contains(&wanted), "the unit lacks {wanted:?}");
    }
    assert!(
        drop_in.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"),
        "{drop_in}"
    );
    let relay = relay_binary()?;
    let relay = relay.to_str().expect("a UTF-8 path");
    let unit = unit.replace(INSTALLED_RELAY, relay);
    let dir = tempfile::tempdir()?;
    let cases = [
        ("tabtunnel-relay.service", unit.clone(), true),
        (
            "tabtunnel-relay-privileged.service",
            format!("{unit}\n{drop_in}"),
            true,
        ),
        (
            "misspelled.service",
            unit.replace("ProtectSystem=", "ProtectSytem="),
            false,
        ),
    ];
    for (name, text, clean) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        let (ok, said) = systemd_verify(&path).await?;
        if clean {
            assert!(ok && said.trim().is_empty(), "{name}:\n{said}");
        } else {
            assert!(said.contains("ProtectSytem"), "{name}:\n{said}");
        }
    }
    Ok(())
}
