//! Lab links in Chromium, against a real sshd and the relay with a block of forward
//! ports per token holder: a link fills the form, says what it will do and connects
//! only when asked; what is wrong with a link is named and holds Connect back; each
//! token's page learns its own block; the whole flow works by keyboard; and each state is
//! saved as screenshots at desktop and phone widths (`target/screenshots/`).

use std::time::Duration;

use anyhow::{Context, Result};
use fantoccini::Locator;
use fantoccini::key::Key;
use tabtunnel_e2e::browser::Browser;
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::page::{
    accept_host_key, browser_turn, open, row_listen_address, screenshots, wait_until_connected,
};
use tabtunnel_e2e::services::{EchoServer, exchange};
use tabtunnel_e2e::wait_for;

/// Forward ports of this file's relays: outside the range other tests pick from, so a
/// fixed port of a link is never taken by a test running at the same time.
const PORTS: std::ops::RangeInclusive<u16> = 30100..=30199;
const ALICE: &str = "alice-lab-token-0123456789";
const BOB: &str = "bob-lab-token-0123456789";
/// The blocks the relay gives them: 10 ports each, in token-file order.
const ALICE_BLOCK: &str = "30100-30109";
const BOB_BLOCK: &str = "30110-30119";

async fn lab_with_port_blocks() -> Result<Lab> {
    Lab::builder()
        .tokens(&format!("alice {ALICE}\nbob {BOB}\n"))
        .configure(|config| {
            config.forward_ports = PORTS;
            config.forward_ports_per_user = Some(10);
        })
        .start()
        .await
}

/// The page at `query` (with `#token=`), once it has read the relay's answer and the link.
async fn open_link(lab: &Lab, query: &str, token: &str) -> Result<Browser> {
    let browser = open(&format!("{}/{query}#token={token}", lab.relay.http_url())).await?;
    let c = &browser.client;
    wait_for("the page to load", Duration::from_secs(30), || async {
        let loaded = c
            .execute(
                "return !!(window.tabtunnelPage && window.tabtunnelPage.ready);",
                vec![],
            )
            .await
            .ok()?;
        (loaded == true).then_some(())
    })
    .await?;
    c.execute_async(
        "const done = arguments[0]; window.tabtunnelPage.ready.then(() => done(true));",
        vec![],
    )
    .await?;
    Ok(browser)
}

async fn text_of(c: &fantoccini::Client, id: &str) -> Result<String> {
    Ok(c.find(Locator::Id(id)).await?.text().await?)
}

async fn value_of(c: &fantoccini::Client, id: &str) -> Result<String> {
    Ok(c.find(Locator::Id(id))
        .await?
        .prop("value")
        .await?
        .unwrap_or_default())
}

async fn active_id(c: &fantoccini::Client) -> Result<String> {
    Ok(c.active_element()
        .await?
        .attr("id")
        .await?
        .unwrap_or_default())
}

/// Sends `keys` to whatever has the focus, as a keyboard does.
async fn press(c: &fantoccini::Client, keys: &str) -> Result<()> {
    c.active_element().await?.send_keys(keys).await?;
    Ok(())
}

/// The relay's count of open sessions, from /metrics.
async fn sessions_open(lab: &Lab) -> Result<u64> {
    let metrics = lab.relay.get("/metrics").await?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("tabtunnel_sessions_active "))
        .and_then(|n| n.trim().parse().ok())
        .context("no tabtunnel_sessions_active in /metrics")
}

/// Checks that bytes go through the forward listening on `port` of the relay host.
async fn carries_data(port: u16, what: &[u8]) -> Result<()> {
    let back = exchange(&format!("127.0.0.1:{port}"), what).await?;
    anyhow::ensure!(back == what, "port {port} echoed {back:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_link_fills_the_form_says_what_it_does_and_opens_its_forwards_once_confirmed()
-> Result<()> {
    let _one = browser_turn().await?;
    let lab = lab_with_port_blocks().await?;
    let (web, db) = (
        EchoServer::start("127.0.0.1").await?,
        EchoServer::start("127.0.0.1").await?,
    );
    let query = format!(
        "?target=sshd&user={}&L=30100:{}&L=30101:{}",
        lab.sshd.user, web.addr, db.addr
    );
    let browser = open_link(&lab, &query, ALICE).await?;
    let c = &browser.client;

    // Filled in, said in words, and nothing connected yet.
    assert_eq!(value_of(c, "target").await?, "sshd");
    assert_eq!(value_of(c, "username").await?, lab.sshd.user);
    assert_eq!(
        text_of(c, "lab-link-summary").await?,
        format!(
            "This link connects to target sshd as {}, then opens 2 forwards: port 30100 to {}; port 30101 to {}.",
            lab.sshd.user, web.addr, db.addr
        )
    );
    let note = c.find(Locator::Css(".lab-link-note")).await?.text().await?;
    assert!(note.contains("never carries passwords or keys"), "{note}");
    assert!(text_of(c, "port-block").await?.contains(ALICE_BLOCK));
    let pending = c
        .find_all(Locator::Css("#pending-forwards .pending-row"))
        .await?;
    assert_eq!(pending.len(), 2);
    assert_eq!(text_of(c, "status").await?, "disconnected");
    assert_eq!(sessions_open(&lab).await?, 0, "the page connected on load");
    // The token left the address bar; the link itself stays (nothing secret in it).
    let url = c.current_url().await?;
    assert!(url.fragment().is_none(), "{url}");
    assert!(
        url.query().unwrap_or_default().contains("target=sshd"),
        "{url}"
    );
    screenshots(c, "lab_link", "1-link-confirm").await?;

    c.find(Locator::Id("password"))
        .await?
        .send_keys(lab.sshd.password)
        .await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    accept_host_key(c).await?;
    wait_until_connected(c).await?;
    for (port, service) in [(30100, &web), (30101, &db)] {
        let row = format!(".forward-row[data-spec='{port}:{}']", service.addr);
        assert_eq!(
            row_listen_address(c, &row).await?,
            format!("127.0.0.1:{port}")
        );
        carries_data(port, format!("through {port}").as_bytes()).await?;
        // The row counts what went through.
        let stats = format!("{row} .stats");
        wait_for(
            "the row to count the connection",
            Duration::from_secs(10),
            || async {
                let text = c.find(Locator::Css(&stats)).await.ok()?.text().await.ok()?;
                text.contains("connections 1").then_some(())
            },
        )
        .await?;
    }

    // The card is one line now and the forwards come before the paste card.
    let card = c.find(Locator::Id("connection")).await?;
    assert!(
        card.attr("class")
            .await?
            .unwrap_or_default()
            .contains("folded")
    );
    assert!(
        !c.find(Locator::Id("connect-form"))
            .await?
            .is_displayed()
            .await?
    );
    assert!(
        !c.find(Locator::Id("lab-link"))
            .await?
            .is_displayed()
            .await?
    );
    assert_eq!(text_of(c, "connect").await?, "Disconnect");
    let order = c
        .execute(
            "return [...document.querySelectorAll('main > section')].map((s) => s.id);",
            vec![],
        )
        .await?;
    assert_eq!(
        order,
        serde_json::json!(["connection", "forwarding", "paste"])
    );
    screenshots(c, "lab_link", "2-connected").await?;
    c.find(Locator::Id("connection-details"))
        .await?
        .click()
        .await?;
    assert!(
        c.find(Locator::Id("connect-form"))
            .await?
            .is_displayed()
            .await?
    );
    screenshots(c, "lab_link", "3-connected-details").await?;

    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_with_a_bad_spec_or_a_secret_says_why_and_connects_nothing_until_settled()
-> Result<()> {
    let _one = browser_turn().await?;
    let lab = lab_with_port_blocks().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let query = format!(
        "?target=sshd&user={}&L=30102:{}&L=oops&password=hunter2&L=30110:{}",
        lab.sshd.user, echo.addr, echo.addr
    );
    let browser = open_link(&lab, &query, ALICE).await?;
    let c = &browser.client;

    let problems = text_of(c, "lab-link-problems").await?;
    for expected in [
        "L=oops: not a forward:",
        "password=…: not used: a link never carries passwords or keys",
        "port 30110 is outside your block 30100-30109",
    ] {
        assert!(problems.contains(expected), "{expected} in {problems}");
    }
    let page_text = c.find(Locator::Css("body")).await?.text().await?;
    assert!(!page_text.contains("hunter2"), "{page_text}");
    let url = c.current_url().await?;
    assert!(!url.as_str().contains("password"), "{url}");
    assert!(url.as_str().contains("L=oops"), "{url}");
    // With problems, the focus is on them, not in a field.
    assert_eq!(active_id(c).await?, "lab-link-title");
    screenshots(c, "lab_link", "4-link-problems").await?;

    // Connect is held back until the user settles the problems.
    c.find(Locator::Id("password"))
        .await?
        .send_keys(lab.sshd.password)
        .await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    let error = text_of(c, "session-error").await?;
    assert!(
        error.contains("Some entries of this link are not used"),
        "{error}"
    );
    assert_eq!(text_of(c, "status").await?, "disconnected");
    assert_eq!(sessions_open(&lab).await?, 0);
    screenshots(c, "lab_link", "5-link-held-back").await?;

    c.find(Locator::Id("lab-link-accept"))
        .await?
        .click()
        .await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    accept_host_key(c).await?;
    wait_until_connected(c).await?;
    let row = format!(".forward-row[data-spec='30102:{}']", echo.addr);
    row_listen_address(c, &row).await?;
    carries_data(30102, b"the rest of the link").await?;
    let rows = c.find_all(Locator::Css(".forward-row")).await?;
    assert_eq!(rows.len(), 1, "only the usable forward opens");

    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tokens_get_disjoint_blocks_and_each_page_shows_and_uses_its_own() -> Result<()> {
    let _one = browser_turn().await?;
    let lab = lab_with_port_blocks().await?;
    let echo = EchoServer::start("127.0.0.1").await?;

    let alice = open_link(&lab, "", ALICE).await?;
    let alice_block = text_of(&alice.client, "port-block").await?;
    alice.stop().await;

    // Bob's link names a port of Alice's block and one for any free port.
    let query = format!(
        "?target=sshd&user={}&L=30100:{}&L=0:{}",
        lab.sshd.user, echo.addr, echo.addr
    );
    let bob = open_link(&lab, &query, BOB).await?;
    let c = &bob.client;
    let bob_block = text_of(c, "port-block").await?;
    assert!(alice_block.contains(ALICE_BLOCK), "{alice_block}");
    assert!(bob_block.contains(BOB_BLOCK), "{bob_block}");
    assert!(bob_block.contains("bob"), "{bob_block}");
    let problems = text_of(c, "lab-link-problems").await?;
    assert!(
        problems.contains(&format!("port 30100 is outside your block {BOB_BLOCK}")),
        "{problems}"
    );
    // A pasted command's port outside the block is named before connecting, not queued.
    c.find(Locator::Id("paste-command"))
        .await?
        .send_keys(&format!(
            "ssh -L 30101:{} {}@sshd",
            echo.addr, lab.sshd.user
        ))
        .await?;
    c.find(Locator::Id("paste-fill")).await?.click().await?;
    wait_for("the paste to be read", Duration::from_secs(10), || async {
        let said = text_of(c, "paste-result").await.ok()?;
        said.contains(&format!(
            "30101:{} not queued: port 30101 is outside your block {BOB_BLOCK}",
            echo.addr
        ))
        .then_some(())
    })
    .await?;
    let pending = c
        .find_all(Locator::Css("#pending-forwards .pending-row"))
        .await?;
    assert_eq!(pending.len(), 1, "only the link's port-0 forward waits");
    c.find(Locator::Id("lab-link-accept"))
        .await?
        .click()
        .await?;
    c.find(Locator::Id("password"))
        .await?
        .send_keys(lab.sshd.password)
        .await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    accept_host_key(c).await?;
    wait_until_connected(c).await?;
    let listen =
        row_listen_address(c, &format!(".forward-row[data-spec='0:{}']", echo.addr)).await?;
    let port: u16 = listen.rsplit(':').next().unwrap_or_default().parse()?;
    assert!(
        (30110..=30119).contains(&port),
        "{listen} is in bob's block"
    );
    carries_data(port, b"bob's port").await?;
    // A forward typed in by hand outside the block is refused with the same words, before
    // the relay is asked.
    c.find(Locator::Id("forward-spec"))
        .await?
        .send_keys(&format!("30105:{}", echo.addr))
        .await?;
    c.find(Locator::Id("add-forward")).await?.click().await?;
    wait_for("the block error", Duration::from_secs(10), || async {
        let error = text_of(c, "forward-error").await.ok()?;
        error
            .contains(&format!("port 30105 is outside your block {BOB_BLOCK}"))
            .then_some(())
    })
    .await?;
    bob.stop().await;

    // A token the relay does not know: said, and no block shown.
    let stranger = open_link(&lab, "?L=oops&L=0:127.0.0.1:9", "not-a-token-of-this-relay").await?;
    let c = &stranger.client;
    let error = text_of(c, "session-error").await?;
    assert!(
        error.contains("this access token is not valid here"),
        "{error}"
    );
    assert!(
        !c.find(Locator::Id("port-block"))
            .await?
            .is_displayed()
            .await?
    );
    screenshots(c, "lab_link", "6-token-error").await?;
    // "Don't use this link" takes its forwards back and lets the form be used as ever.
    let queued = c
        .find_all(Locator::Css("#pending-forwards .pending-row"))
        .await?;
    assert_eq!(queued.len(), 1);
    c.find(Locator::Id("lab-link-dismiss"))
        .await?
        .click()
        .await?;
    assert!(
        !c.find(Locator::Id("lab-link"))
            .await?
            .is_displayed()
            .await?
    );
    let queued = c
        .find_all(Locator::Css("#pending-forwards .pending-row"))
        .await?;
    assert!(queued.is_empty());
    assert_eq!(active_id(c).await?, "username");
    stranger.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirm_flow_works_by_keyboard_alone() -> Result<()> {
    let _one = browser_turn().await?;
    let lab = lab_with_port_blocks().await?;
    let echo = EchoServer::start("127.0.0.1").await?;
    let query = format!("?target=sshd&user={}&L=30103:{}", lab.sshd.user, echo.addr);
    let browser = open_link(&lab, &query, ALICE).await?;
    let c = &browser.client;

    // The link filled in all it can: the focus waits where the user types their password.
    assert_eq!(active_id(c).await?, "password");
    press(c, &format!("{}{}", lab.sshd.password, Key::Enter)).await?;
    wait_for("the host-key question", Duration::from_secs(30), || async {
        (active_id(c).await.ok()? == "hostkey-title").then_some(())
    })
    .await?;
    press(c, &Key::Tab).await?;
    assert_eq!(active_id(c).await?, "hostkey-accept");
    press(c, &Key::Enter).await?;
    wait_until_connected(c).await?;
    row_listen_address(c, &format!(".forward-row[data-spec='30103:{}']", echo.addr)).await?;
    carries_data(30103, b"typed, not clicked").await?;

    // The login folded away with the focus in it: the focus goes on at the forwards.
    assert_eq!(active_id(c).await?, "forwards-title");
    press(c, &Key::Tab).await?;
    let copy = c.active_element().await?;
    assert_eq!(copy.attr("class").await?.unwrap_or_default(), "copy small");
    press(c, &Key::Enter).await?;
    wait_for(
        "the copy to be confirmed",
        Duration::from_secs(5),
        || async {
            let text = copy.text().await.ok()?;
            (text != "Copy").then_some(text)
        },
    )
    .await?;

    // Back to the status line: Disconnect, then Details; Enter unfolds, Escape folds.
    press(c, &(Key::Shift + &*Key::Tab)).await?;
    assert_eq!(active_id(c).await?, "connect");
    press(c, &(Key::Shift + &*Key::Tab)).await?;
    assert_eq!(active_id(c).await?, "connection-details");
    press(c, &Key::Enter).await?;
    assert!(
        c.find(Locator::Id("connect-form"))
            .await?
            .is_displayed()
            .await?
    );
    press(c, &Key::Escape).await?;
    assert!(
        !c.find(Locator::Id("connect-form"))
            .await?
            .is_displayed()
            .await?
    );
    assert_eq!(active_id(c).await?, "connection-details");
    press(c, &Key::Tab).await?;
    press(c, &Key::Enter).await?;
    tabtunnel_e2e::page::wait_for_status(c, "the status to say disconnected", |s| {
        s == "disconnected"
    })
    .await?;

    browser.stop().await;
    Ok(())
}
