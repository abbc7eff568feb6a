//! The native transport: tokio-tungstenite, for tests and native tools.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::transport::TransportError;

/// A WebSocket to the relay, as a [`crate::Transport`].
#[derive(Debug)]
pub struct NativeTransport {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl NativeTransport {
    /// Opens `url` (`ws://host:port/ws`; `wss://` trusts the system's certificate
    /// authorities and needs a process-wide rustls crypto provider).
    pub async fn connect(url: &str) -> Result<Self, TransportError> {
        Self::connect_with(url, None).await
    }

    /// Opens `url` (`wss://host:port/ws`) trusting what `tls` says, e.g. a relay's
    /// self-signed certificate.
    pub async fn connect_tls(
        url: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Self, TransportError> {
        Self::connect_with(url, Some(tokio_tungstenite::Connector::Rustls(tls))).await
    }

    async fn connect_with(
        url: &str,
        connector: Option<tokio_tungstenite::Connector>,
    ) -> Result<Self, TransportError> {
        // TCP_NODELAY: a keystroke or a ping-pong reply must not wait for Nagle.
        let disable_nagle = true;
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, disable_nagle, connector)
                .await
                .map_err(|err| TransportError(format!("cannot reach the relay at {url}: {err}")))?;
        Ok(Self { ws })
    }
}

fn ws_error(err: tokio_tungstenite::tungstenite::Error) -> TransportError {
    TransportError(format!("the connection to the relay failed: {err}"))
}

impl Stream for NativeTransport {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(Message::Binary(data)))) => Poll::Ready(Some(Ok(data))),
                // The relay says why it ended the session in the close reason.
                Poll::Ready(Some(Ok(Message::Close(Some(frame))))) if !frame.reason.is_empty() => {
                    Poll::Ready(Some(Err(TransportError(frame.reason.to_string()))))
                }
                Poll::Ready(Some(Ok(Message::Close(_)))) | Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Ok(Message::Text(_)))) => Poll::Ready(Some(Err(TransportError(
                    "the relay sent a text message".into(),
                )))),
                Poll::Ready(Some(Ok(_))) => continue, // ping, pong, raw frame
                Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(ws_error(err)))),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

impl Sink<Bytes> for NativeTransport {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.ws).poll_ready(cx).map_err(ws_error)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), Self::Error> {
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(item))
            .map_err(ws_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(ws_error)
    }
}
