//! The seam between the portable client and a platform's WebSocket: a sink and a stream
//! of whole binary messages. The browser glue and the native tokio-tungstenite adapter
//! both produce this shape.

use bytes::Bytes;
use futures::{Sink, Stream};

/// A failure of the underlying WebSocket, described for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// A message-oriented, bidirectional transport to the relay. Each item is one binary
/// WebSocket message; the stream ends when the WebSocket closes. A transport should
/// make `poll_ready` wait while its send buffer is full, so nothing queues unbounded.
pub trait Transport:
    Sink<Bytes, Error = TransportError>
    + Stream<Item = Result<Bytes, TransportError>>
    + Send
    + Unpin
    + 'static
{
}

impl<T> Transport for T where
    T: Sink<Bytes, Error = TransportError>
        + Stream<Item = Result<Bytes, TransportError>>
        + Send
        + Unpin
        + 'static
{
}

impl From<TransportError> for crate::ClientError {
    fn from(err: TransportError) -> Self {
        crate::ClientError::Transport(err.0)
    }
}
