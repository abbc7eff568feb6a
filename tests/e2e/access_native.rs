//! Access control of a shared relay: tokens and the Origin check.

use anyhow::Result;
use tabtunnel_client::{ClientError, ConnectOptions, ErrorCode, Session};
use tabtunnel_e2e::lab::Lab;
use tabtunnel_e2e::relay::Relay;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ALICE: &str = "alice-0123456789abcdef";

async fn login(lab: &Lab, token: Option<&str>) -> Result<Session, ClientError> {
    let options = ConnectOptions {
        token: token.map(str::to_owned),
        ..lab.login()
    };
    lab.log_in_with(options).await
}

#[tokio::test]
async fn a_relay_with_tokens_admits_only_their_holders() -> Result<()> {
    let lab = Lab::builder()
        .tokens(&format!("alice {ALICE}\nbob bob-fedcba9876543210\n"))
        .start()
        .await?;

    let err = login(&lab, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Relay {
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("needs an access token"), "{err}");
    let err = login(&lab, Some("alice-0123456789abcdeX"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid here"), "{err}");
    let session = login(&lab, Some(ALICE)).await?;
    session.close().await;
    Ok(())
}

/// Guessing tokens through Hellos spends the same per-address budget as `/api/targets`:
/// a few wrong ones, then even the right token is not compared for a while.
#[tokio::test]
async fn wrong_tokens_in_hellos_and_at_api_targets_share_one_budget() -> Result<()> {
    use tabtunnel_relay::token_check::{FAILED_CHECK_BURST, TOO_MANY_MESSAGE};
    let lab = Lab::builder()
        .tokens(&format!("alice {ALICE}\n"))
        .start()
        .await?;
    // One wrong guess at /api/targets, the rest through Hellos.
    assert_eq!(
        targets_status(&lab.relay, "guess-0000000000000000").await?,
        401
    );
    for _ in 1..FAILED_CHECK_BURST {
        let err = login(&lab, Some("guess-0000000000000000"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not valid here"), "{err}");
    }
    let err = login(&lab, Some(ALICE)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Relay {
                code: ErrorCode::Limit,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(TOO_MANY_MESSAGE), "{err}");
    // And /api/targets is closed to this address too.
    assert_eq!(targets_status(&lab.relay, ALICE).await?, 429);
    Ok(())
}

/// The HTTP status of `GET /api/targets` with `token` as its bearer.
async fn targets_status(relay: &Relay, token: &str) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await?;
    let request = format!(
        "GET /api/targets HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
        relay.addr
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split(' ').nth(1).unwrap_or_default();
    Ok(status.parse()?)
}

/// Opens a WebSocket to the relay with these request headers; returns the HTTP status
/// and body of a refusal, or 101 when the upgrade went through.
async fn upgrade_with(relay: &Relay, origin: &str) -> Result<(u16, String)> {
    let mut request = relay.ws_url().into_client_request()?;
    request.headers_mut().insert("Origin", origin.parse()?);
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => Ok((response.status().as_u16(), String::new())),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .clone()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            Ok((response.status().as_u16(), body.unwrap_or_default()))
        }
        Err(err) => Err(err.into()),
    }
}

#[tokio::test]
async fn only_the_relays_own_page_and_listed_origins_may_open_sessions() -> Result<()> {
    let lab = Lab::start().await?;
    let relay = &lab.relay;
    let (status, body) = upgrade_with(relay, "https://evil.example").await?;
    assert_eq!(status, 403);
    assert!(
        body.contains("origin https://evil.example refused") && body.contains("allowed_origins"),
        "{body}"
    );
    let own = format!("http://{}", relay.addr);
    assert_eq!(upgrade_with(relay, &own).await?.0, 101);

    let listed = lab
        .another_relay(|config| {
            config
                .allowed_origins
                .push("https://lab.example.com".into());
        })
        .await?;
    assert_eq!(
        upgrade_with(&listed, "https://lab.example.com").await?.0,
        101
    );
    assert_eq!(upgrade_with(&listed, "https://evil.example").await?.0, 403);
    Ok(())
}
