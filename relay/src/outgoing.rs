//! What a session sends its tab, and the task that writes it. A leaf: the session, its
//! connections and its watchdog all queue here, and it imports none of them.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message};
use bytes::Bytes;
use futures::{Sink, SinkExt};
use tabtunnel_proto::{Frame, UrgentGrants, encode_to_bytes};
use tokio::sync::mpsc;

/// Frames queued for the WebSocket writer. Data frames are bounded by credit anyway;
/// this keeps the rest (Ssh, control) from piling up when the tab is slow.
pub(crate) const OUT_QUEUE: usize = 64;

/// Most messages written before one flush.
const BATCH: usize = 64;

/// Something to send to the tab.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Frame(Frame),
    /// Close the WebSocket with this code and reason; nothing is sent after it.
    Close(u16, String),
    /// A WebSocket ping: browsers answer it themselves, even in background tabs.
    Ping,
}

/// Sends queued messages, batching what is ready into one flush, until the queue ends,
/// a Close has been sent, or the WebSocket fails. Waiting credit grants go first, ahead
/// of whatever is queued (see [`UrgentGrants`]).
pub(crate) async fn write_loop<W>(
    mut ws: W,
    mut rx: mpsc::Receiver<Outgoing>,
    grants: Arc<UrgentGrants>,
) where
    W: Sink<Message> + Unpin,
{
    loop {
        let mut next = tokio::select! {
            biased;
            () = grants.ready() => None,
            item = rx.recv() => match item {
                Some(item) => Some(item),
                None => return,
            },
        };
        let mut batched = 0;
        loop {
            for grant in grants.take() {
                if ws
                    .feed(Message::Binary(encode_to_bytes(&grant)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let Some(item) = next.take() else { break };
            let message = match item {
                Outgoing::Frame(frame) => Message::Binary(encode_to_bytes(&frame)),
                Outgoing::Ping => Message::Ping(Bytes::new()),
                Outgoing::Close(code, reason) => {
                    let frame = CloseFrame {
                        code,
                        reason: truncate_reason(reason).into(),
                    };
                    let _ = ws.send(Message::Close(Some(frame))).await;
                    return;
                }
            };
            if ws.feed(message).await.is_err() {
                return;
            }
            batched += 1;
            if batched < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// A WebSocket close reason is at most 123 bytes; cut at a character boundary.
fn truncate_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::truncate_reason;

    #[test]
    fn close_reasons_fit_the_websocket_limit() {
        let long = "é".repeat(200);
        let cut = truncate_reason(long);
        assert!(cut.len() <= 123 && cut.ends_with("..."));
        assert_eq!(truncate_reason("short".into()), "short");
    }
}
