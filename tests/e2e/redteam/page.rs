//! What a link can do to the page: a damaged `#token=` fragment.

use std::time::Duration;

use anyhow::Result;
use fantoccini::Locator;
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::page::{browser_turn, log_in_with_password, open};
use tabtunnel_e2e::wait_for;

/// A `%` that is not followed by two hex digits makes `decodeURIComponent` throw; at the
/// top level of the page's script that stopped the page from starting (no targets, no
/// login). Now the page says the link is damaged, drops it from the address bar, and a
/// token typed by hand logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_token_link_is_named_and_the_page_still_works() -> Result<()> {
    let _one = browser_turn().await?;
    let Lab { sshd, relay, .. } = Lab::builder()
        .tokens("dave dave-0123456789abcdef\n")
        .start()
        .await?;
    let browser = open(&format!("{}/#token=dave-%E0%A4%A", relay.http_url())).await?;
    let c = &browser.client;
    let error = c.find(Locator::Id("session-error")).await?;
    let said = wait_for(
        "the page to name the damaged link",
        Duration::from_secs(20),
        || async {
            let text = error.text().await.ok()?;
            text.contains("damaged").then_some(text)
        },
    )
    .await?;
    assert!(
        said.contains("Access token field"),
        "says what to do: {said}"
    );
    let url = c.current_url().await?;
    assert!(
        !url.as_str().contains("token="),
        "the damaged token left the address bar: {url}"
    );
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#token-field:not([hidden])"))
        .await?
        .find(Locator::Id("token"))
        .await?
        .send_keys("dave-0123456789abcdef")
        .await?;
    log_in_with_password(c, "sshd", sshd.user, sshd.password).await?;
    browser.stop().await;
    Ok(())
}
