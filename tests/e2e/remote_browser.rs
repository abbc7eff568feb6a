//! Remote forwards (`ssh -R`) from the real page in headless Chromium: the JS API and
//! the page's form (a pasted `ssh -R` line), through the relay to a real sshd, which
//! listens on loopback; a client there reaches a service on the relay host.

use std::time::Duration;

use anyhow::{Context, Result};
use fantoccini::Locator;
use serde_json::json;
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::page::{accept_host_key, browser_turn, open, screenshots};
use tabtunnel_e2e::services::{EchoServer, exchange};
use tabtunnel_e2e::wait_for;

/// The port in `localhost:PORT`, where sshd listens for a remote forward.
fn sshd_port(listen: &str) -> Result<u16> {
    listen
        .strip_prefix("localhost:")
        .and_then(|port| port.parse().ok())
        .with_context(|| format!("sshd listens on localhost, not {listen}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_api_opens_remote_forwards_and_names_the_refusals() -> Result<()> {
    let _one = browser_turn().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let lab = Lab::builder()
        .relay_toml(&format!("remote_destinations = [\"{}\"]", echo.addr))
        .start()
        .await?;
    let browser = open(&lab.relay.http_url()).await?;
    let sshd = &lab.sshd;
    let opened = browser
        .run_js(
            r#"
            const [user, key, fingerprint, destination] = args;
            const session = await m.connect({ target: "sshd", username: user, privateKey: key, hostKey: fingerprint });
            window.__session = session;
            const one = await session.forward(`-R 0:${destination}`);
            const two = await session.forward(`0:${destination}`, { remote: true });
            let refused = null;
            try {
                await session.forward("-R 0:127.0.0.1:1");
            } catch (e) {
                refused = { code: e.code, message: e.message };
            }
            return { one: [one.listen, one.kind, one.spec], two: [two.listen, two.kind], refused };
            "#,
            vec![
                json!(sshd.user),
                json!(sshd.client_key),
                json!(sshd.host_key_fingerprint),
                json!(echo.addr.to_string()),
            ],
        )
        .await?;
    let one = opened["one"][0].as_str().context("listen")?;
    assert_eq!(opened["one"][1], json!("remote"));
    assert_eq!(opened["one"][2], json!(format!("-R 0:{}", echo.addr)));
    assert_eq!(opened["two"][1], json!("remote"));
    let two = opened["two"][0].as_str().context("listen")?;
    for listen in [one, two] {
        let at_sshd = format!("127.0.0.1:{}", sshd_port(listen)?);
        assert_eq!(
            exchange(&at_sshd, b"from the server's side").await?,
            b"from the server's side"
        );
    }
    assert_eq!(opened["refused"]["code"], json!("destination-not-allowed"));
    assert_eq!(
        opened["refused"]["message"],
        json!(format!(
            "this relay does not connect remote forwards (ssh -R) to 127.0.0.1:1; its operator allows only {} (remote_destinations)",
            echo.addr
        ))
    );
    browser
        .run_js("await window.__session.close();", vec![])
        .await?;
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_ssh_r_line_opens_a_row_that_says_where_sshd_listens() -> Result<()> {
    let _one = browser_turn().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let lab = Lab::builder()
        .relay_toml(&format!("remote_destinations = [\"{}\"]", echo.addr))
        .start()
        .await?;
    let browser = open(&lab.relay.http_url()).await?;
    let c = &browser.client;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#target option[value='sshd']"))
        .await?;
    let spec = format!("-R 0:{}", echo.addr);
    let command = format!("ssh -N {spec} {}@sshd", lab.sshd.user);
    c.find(Locator::Id("paste-command"))
        .await?
        .send_keys(&command)
        .await?;
    c.find(Locator::Id("paste-fill")).await?.click().await?;
    let result = c.find(Locator::Id("paste-result")).await?;
    let said = wait_for("the paste result", Duration::from_secs(20), || async {
        let text = result.text().await.ok()?;
        text.contains("queued").then_some(text)
    })
    .await?;
    assert!(
        said.contains(&format!("1 forward queued ({spec})")),
        "{said}"
    );
    c.find(Locator::Id("password"))
        .await?
        .send_keys(lab.sshd.password)
        .await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    accept_host_key(c).await?;
    let row = format!(".forward-row[data-spec='{spec}']");
    let listen = wait_for(
        "the remote forward's row",
        Duration::from_secs(30),
        || async {
            let text = c
                .find(Locator::Css(&format!("{row} .listen")))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.starts_with("localhost:").then_some(text)
        },
    )
    .await?;
    let destination = c
        .find(Locator::Css(&format!("{row} .destination")))
        .await?
        .text()
        .await?;
    assert_eq!(destination, echo.addr.to_string());
    let reach = c
        .find(Locator::Css(&format!("{row} .reach")))
        .await?
        .text()
        .await?;
    assert_eq!(
        reach,
        format!(
            "Programs on the SSH server reach {} through the relay host.",
            echo.addr
        )
    );
    let at_sshd = format!("127.0.0.1:{}", sshd_port(&listen)?);
    assert_eq!(exchange(&at_sshd, b"pasted -R").await?, b"pasted -R");
    wait_for(
        "the row to count the connection",
        Duration::from_secs(10),
        || async {
            let text = c
                .find(Locator::Css(&format!("{row} .stats")))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains("connections 1").then_some(())
        },
    )
    .await?;
    screenshots(c, "remote_browser", "remote-row").await?;
    // A destination the operator did not list: the form says so, naming the setting.
    c.find(Locator::Id("forward-spec"))
        .await?
        .send_keys("-R 0:127.0.0.1:1")
        .await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    let error = c.find(Locator::Id("forward-error")).await?;
    let said = wait_for("the form's error", Duration::from_secs(20), || async {
        let text = error.text().await.ok()?;
        (!text.is_empty()).then_some(text)
    })
    .await?;
    assert_eq!(
        said,
        format!(
            "this relay does not connect remote forwards (ssh -R) to 127.0.0.1:1; its operator allows only {} (remote_destinations)",
            echo.addr
        )
    );
    screenshots(c, "remote_browser", "refused").await?;
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_worker_client_takes_the_remote_option() -> Result<()> {
    let _one = browser_turn().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let lab = Lab::builder()
        .relay_toml(&format!("remote_destinations = [\"{}\"]", echo.addr))
        .start()
        .await?;
    let browser = open(&lab.relay.http_url()).await?;
    let sshd = &lab.sshd;
    let script = r#"
        const done = arguments[arguments.length - 1];
        const [user, key, fingerprint, spec] = arguments;
        (async () => {
            await window.tabtunnelPage.ready;
            const client = await window.tabtunnelPage.client.get();
            const session = await client.connect({ target: "sshd", username: user, privateKey: key, hostKey: fingerprint });
            const fwd = await session.forward(spec, { remote: true });
            return fwd.listen;
        })().then((ok) => done({ ok }), (e) => done({ error: String(e && e.message || e) }));
    "#;
    let result = browser
        .client
        .execute_async(
            script,
            vec![
                json!(sshd.user),
                json!(sshd.client_key),
                json!(sshd.host_key_fingerprint),
                json!(format!("0:{}", echo.addr)),
            ],
        )
        .await?;
    let listen = result["ok"]
        .as_str()
        .with_context(|| format!("the worker's client opened no forward: {result}"))?;
    let at_sshd = format!("127.0.0.1:{}", sshd_port(listen)?);
    assert_eq!(
        exchange(&at_sshd, b"via the worker").await?,
        b"via the worker"
    );
    browser.stop().await;
    Ok(())
}
