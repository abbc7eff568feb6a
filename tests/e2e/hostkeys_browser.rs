//! Host keys in the page, as OpenSSH users expect them: asked on first use and
//! remembered per relay, target and key type; a changed key blocked with both
//! fingerprints until the user forgets the old one; operator pins asking nothing.

use std::time::Duration;

use anyhow::Result;
use fantoccini::{Client, Locator};
use serde_json::json;
use tabtunnel_e2e::browser::Browser;
use tabtunnel_e2e::page::{
    browser_turn, fill_login, log_in_with_password, open, page, status, wait_for_status,
    wait_until_connected,
};
use tabtunnel_e2e::relay::{Relay, test_config};
use tabtunnel_e2e::sshd::Sshd;
use tabtunnel_e2e::wait_for;

/// Clicks Connect and waits until the page is connected, asserting it never asked.
async fn connect_without_questions(c: &Client) -> Result<()> {
    c.find(Locator::Id("connect")).await?.click().await?;
    wait_until_connected(c).await?;
    let dialog = c.find(Locator::Id("hostkey-dialog")).await?;
    assert!(
        dialog.attr("hidden").await?.is_some(),
        "no host-key question was needed"
    );
    Ok(())
}

async fn disconnect(c: &Client) -> Result<()> {
    c.find(Locator::Id("connect")).await?.click().await?;
    wait_for_status(c, "the status to say disconnected", |s| {
        s.starts_with("disconnected")
    })
    .await
}

async fn known_hosts(browser: &Browser) -> Result<serde_json::Value> {
    let raw = browser
        .run_js(
            "return localStorage.getItem('tabtunnel.knownHosts');",
            vec![],
        )
        .await?;
    Ok(serde_json::from_str(raw.as_str().unwrap_or("{}"))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_use_asks_once_and_is_remembered_per_target_and_key_type() -> Result<()> {
    let (browser, sshd, relay, _one) = page().await?;
    let c = &browser.client;
    log_in_with_password(c, "sshd", sshd.user, sshd.password).await?;
    let known = known_hosts(&browser).await?;
    let id = format!("{}|sshd|ssh-ed25519", relay.http_url());
    assert_eq!(
        known[&id]["fingerprint"],
        json!(sshd.host_key_fingerprint),
        "{known}"
    );
    disconnect(c).await?;
    connect_without_questions(c).await?;

    // Credentials live in the tab's memory only: nothing of them in any storage.
    let stored = browser
        .run_js(
            r#"
            const dbs = indexedDB.databases ? (await indexedDB.databases()).map((d) => d.name) : [];
            return JSON.stringify({ local: { ...localStorage }, session: { ...sessionStorage }, cookies: document.cookie, dbs });
            "#,
            vec![],
        )
        .await?;
    let stored = stored.as_str().unwrap_or_default();
    assert!(
        !stored.contains(sshd.password),
        "the password is in browser storage: {stored}"
    );
    assert!(stored.contains("knownHosts"), "{stored}");

    // Why a session ended is shown: here the SSH server went away.
    assert!(sshd.kill_sessions()? > 0);
    let shown = wait_for(
        "the reason on the page",
        Duration::from_secs(30),
        || async {
            let text = status(c).await.ok()?;
            text.contains("the SSH server closed the connection")
                .then_some(text)
        },
    )
    .await?;
    assert!(shown.to_lowercase().contains("closed"), "{shown}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_is_blocked_with_both_fingerprints_until_forgotten() -> Result<()> {
    let (browser, sshd, relay, _one) = page().await?;
    let c = &browser.client;
    let old = "SHA256:bm90IHRoZSBrZXkgeW91IGFyZSBsb29raW5nIGZvcg";
    let id = format!("{}|sshd|ssh-ed25519", relay.http_url());
    browser
        .run_js(
            "localStorage.setItem('tabtunnel.knownHosts', JSON.stringify({ [args[0]]: { fingerprint: args[1], algorithm: 'ssh-ed25519', added: '2026-01-01' } }));",
            vec![json!(id), json!(old)],
        )
        .await?;
    fill_login(c, "sshd", sshd.user, sshd.password).await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    let warning = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#hostkey-mismatch:not([hidden])"))
        .await?;
    let text = warning.text().await?;
    assert!(
        text.contains(old) && text.contains(&sshd.host_key_fingerprint),
        "{text}"
    );
    assert!(
        !status(c).await?.to_lowercase().contains("connected as"),
        "not logged in"
    );

    // Only an explicit action replaces it: forget, then the next connect asks anew.
    c.find(Locator::Id("hostkey-forget")).await?.click().await?;
    assert!(
        known_hosts(&browser).await?.get(&id).is_none(),
        "the old key is forgotten"
    );
    c.find(Locator::Id("connect")).await?.click().await?;
    let asked = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(
            "#hostkey-dialog:not([hidden]) #hostkey-fingerprint",
        ))
        .await?;
    assert_eq!(asked.text().await?, sshd.host_key_fingerprint);
    c.find(Locator::Id("hostkey-accept")).await?.click().await?;
    wait_until_connected(c).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_pinned_keys_ask_nothing_and_other_keys_are_refused() -> Result<()> {
    let _one = browser_turn().await?;
    let sshd = Sshd::start().await?;
    let relay = relay_with_pins(
        &sshd,
        &[
            ("sshd", sshd.host_key_fingerprint.clone()),
            ("wrong", "SHA256:someoneelse".into()),
        ],
    )
    .await?;
    let browser = open(&relay.http_url()).await?;
    let c = &browser.client;

    fill_login(c, "sshd", sshd.user, sshd.password).await?;
    connect_without_questions(c).await?;
    disconnect(c).await?;

    c.find(Locator::Css("#target option[value='wrong']"))
        .await?
        .click()
        .await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    let error = c.find(Locator::Id("session-error")).await?;
    let shown = wait_for(
        "the pin mismatch to be shown",
        Duration::from_secs(30),
        || async {
            let text = error.text().await.ok()?;
            text.contains("pinned by the relay's operator")
                .then_some(text)
        },
    )
    .await?;
    assert!(shown.contains(&sshd.host_key_fingerprint), "{shown}");
    browser.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_type_is_asked_with_a_warning_even_when_pinned() -> Result<()> {
    let _one = browser_turn().await?;
    let sshd = Sshd::start().await?;
    let relay = relay_with_pins(&sshd, &[("sshd", sshd.host_key_fingerprint.clone())]).await?;
    let browser = open(&relay.http_url()).await?;
    // This browser already trusts an ECDSA key for the target; the server (or a relay
    // that pins a key of its own) now shows an ed25519 key.
    let id = format!("{}|sshd|ecdsa-sha2-nistp256", relay.http_url());
    browser
        .run_js(
            "localStorage.setItem('tabtunnel.knownHosts', JSON.stringify({ [args[0]]: { fingerprint: 'SHA256:ecdsakey', algorithm: 'ecdsa-sha2-nistp256', added: '2026-01-01' } }));",
            vec![json!(id)],
        )
        .await?;
    let c = &browser.client;
    fill_login(c, "sshd", sshd.user, sshd.password).await?;
    c.find(Locator::Id("connect")).await?.click().await?;
    let warning = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(
            "#hostkey-dialog:not([hidden]) #hostkey-other:not([hidden])",
        ))
        .await?;
    let text = warning.text().await?;
    assert!(
        text.contains("already knows a ecdsa-sha2-nistp256 key") && text.contains("ssh-ed25519"),
        "{text}"
    );
    c.find(Locator::Id("hostkey-reject")).await?.click().await?;
    let error = c.find(Locator::Id("session-error")).await?;
    wait_for("the refusal", Duration::from_secs(30), || async {
        error
            .text()
            .await
            .ok()?
            .contains("host key refused")
            .then_some(())
    })
    .await?;
    browser.stop().await;
    Ok(())
}

/// A relay whose targets all lead to `sshd`, each with the operator's pinned fingerprint.
async fn relay_with_pins(sshd: &Sshd, targets: &[(&str, String)]) -> Result<Relay> {
    let mut config = test_config("", &sshd.address(), None)?;
    for (name, pin) in targets {
        if !config.targets.contains_key(*name) {
            config.add_target(name, &sshd.address(), "test")?;
        }
        config
            .targets
            .get_mut(*name)
            .expect("just added")
            .pinned_host_keys = vec![pin.clone()];
    }
    Relay::start_with(config).await
}
