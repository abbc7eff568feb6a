//! `ssh -D` from the page in headless Chromium: a pasted `ssh -D` line opens a SOCKS
//! proxy on connect, its row lists where its open connections go, the form takes `-D`
//! specs and explains a bad one.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use fantoccini::Locator;
use tabtunnel_e2e::page::{
    accept_host_key, add_forward_in_form, page, row_listen_address, screenshots,
    wait_until_connected,
};
use tabtunnel_e2e::services::EchoServer;
use tabtunnel_e2e::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A SOCKS5 client's connection through `proxy` to `to`, answered with success.
async fn socks5(proxy: &str, to: SocketAddr) -> Result<TcpStream> {
    let std::net::IpAddr::V4(ip) = to.ip() else {
        anyhow::bail!("IPv4 destinations only");
    };
    let mut stream = TcpStream::connect(proxy).await?;
    stream.write_all(&[5, 1, 0]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    ensure!(choice == [5, 0], "{choice:?}");
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&ip.octets());
    request.extend_from_slice(&to.port().to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut reply)).await??;
    ensure!(reply[1] == 0, "refused with code {}", reply[1]);
    Ok(stream)
}

/// The text of the row's list of destinations, or None while it has none.
async fn destinations(c: &fantoccini::Client, row: &str) -> Option<String> {
    c.find(Locator::Css(&format!("{row} .live-destinations")))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_ssh_d_line_opens_a_socks_proxy_whose_row_lists_its_destinations() -> Result<()> {
    let (browser, sshd, _relay, _one) = page().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let c = &browser.client;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#target option[value='sshd']"))
        .await?;

    let command = format!("ssh -N -D 0 {}@sshd", sshd.user);
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
    ensure!(said.contains("-D 0"), "{said}");

    c.find(Locator::Id("password"))
        .await?
        .send_keys(sshd.password)
        .await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    accept_host_key(c).await?;
    wait_until_connected(c).await?;
    let row = ".forward-row[data-spec='-D 0']";
    let proxy = row_listen_address(c, row).await?;

    // A client holds a connection open through the proxy: the row says where it goes.
    let mut held = socks5(&proxy, echo.addr).await?;
    held.write_all(b"through the tab").await?;
    let mut echoed = [0u8; 15];
    tokio::time::timeout(Duration::from_secs(20), held.read_exact(&mut echoed)).await??;
    ensure!(&echoed == b"through the tab");
    let shown = wait_for(
        "the row's destinations",
        Duration::from_secs(10),
        || async { destinations(c, row).await.filter(|t| !t.is_empty()) },
    )
    .await?;
    ensure!(
        shown == format!("to 127.0.0.1:{}", echo.addr.port()),
        "{shown}"
    );
    screenshots(c, "socks_browser", "socks-row").await?;
    drop(held);
    wait_for(
        "the row's destinations to go",
        Duration::from_secs(10),
        || async { destinations(c, row).await.is_none().then_some(()) },
    )
    .await?;

    // Typed in the form: a -D spec with a bind address.
    let typed = add_forward_in_form(c, "-D 127.0.0.1:0").await?;
    let mut stream = socks5(&typed, echo.addr).await?;
    stream.write_all(b"typed").await?;
    stream.shutdown().await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    ensure!(reply == b"typed", "{reply:?}");

    // A -D spec with a destination is explained, not sent.
    let spec = c.find(Locator::Id("forward-spec")).await?;
    spec.clear().await?;
    spec.send_keys("-D 1080:db:5432").await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    let error = c.find(Locator::Id("forward-error")).await?;
    let why = wait_for("the form's error", Duration::from_secs(10), || async {
        error.text().await.ok().filter(|t| !t.is_empty())
    })
    .await?;
    ensure!(why.contains("use -L for a fixed destination"), "{why}");
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socks_forward_beyond_loopback_takes_its_login_from_the_form() -> Result<()> {
    let _one = tabtunnel_e2e::page::browser_turn().await?;
    let lab = tabtunnel_e2e::lab::Lab::builder()
        .relay_toml("allowed_binds = [\"0.0.0.0\"]")
        .start()
        .await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let browser = tabtunnel_e2e::page::open(&lab.relay.http_url()).await?;
    let c = &browser.client;
    tabtunnel_e2e::page::log_in_with_password(c, "sshd", lab.sshd.user, lab.sshd.password).await?;

    // Without a login, the relay's refusal says what to do.
    let spec = c.find(Locator::Id("forward-spec")).await?;
    spec.send_keys("-D 0.0.0.0:0").await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    let error = c.find(Locator::Id("forward-error")).await?;
    let why = wait_for("the refusal", Duration::from_secs(20), || async {
        error.text().await.ok().filter(|t| !t.is_empty())
    })
    .await?;
    ensure!(why.contains("username and password"), "{why}");

    // With one, it listens, and its clients must give it.
    c.find(Locator::Css("#socks-login summary"))
        .await?
        .click()
        .await?;
    c.find(Locator::Id("socks-username"))
        .await?
        .send_keys("alice")
        .await?;
    c.find(Locator::Id("socks-password"))
        .await?
        .send_keys("s3cret")
        .await?;
    screenshots(c, "socks_browser", "socks-login").await?;
    // And the login's fields themselves, further down, at each width.
    let dir = tabtunnel_e2e::page::screenshot_dir().join("socks_browser");
    for (_, width, height) in tabtunnel_e2e::page::SCREEN_SIZES {
        c.set_window_size(width, height).await?;
        c.execute(
            "document.getElementById('socks-login').scrollIntoView();",
            vec![],
        )
        .await?;
        let file = dir.join(format!("socks-login-fields-{width}x{height}.png"));
        std::fs::write(file, c.screenshot().await?)?;
    }
    c.set_window_size(1200, 900).await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    let listen = wait_for("the row", Duration::from_secs(20), || async {
        c.find(Locator::Css(
            ".forward-row[data-spec='-D 0.0.0.0:0'] .listen",
        ))
        .await
        .ok()?
        .text()
        .await
        .ok()
        .filter(|t| t.starts_with("0.0.0.0:"))
    })
    .await?;
    let port: u16 = listen.rsplit_once(':').map_or(Ok(0), |(_, p)| p.parse())?;
    let proxy = format!("127.0.0.1:{port}");
    let mut stream = TcpStream::connect(&proxy).await?;
    stream
        .write_all(b"\x05\x01\x02\x01\x05alice\x06s3cret")
        .await?;
    let mut answers = [0u8; 4];
    stream.read_exact(&mut answers).await?;
    ensure!(answers == [5, 2, 1, 0], "{answers:?}");
    let mut request = vec![5, 1, 0, 1, 127, 0, 0, 1];
    request.extend_from_slice(&echo.addr.port().to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut reply)).await??;
    ensure!(reply[1] == 0, "{reply:?}");
    // No login: refused.
    let mut anonymous = TcpStream::connect(&proxy).await?;
    anonymous.write_all(&[5, 1, 0]).await?;
    let mut refused = Vec::new();
    anonymous.read_to_end(&mut refused).await?;
    ensure!(refused == [5, 0xFF], "{refused:?}");
    browser.stop().await;
    Ok(())
}
