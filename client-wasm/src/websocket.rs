//! `web_sys::WebSocket` as a [`Transport`]. The browser cannot pause a WebSocket's
//! reads, so incoming messages queue here (the protocol's credit bounds them); sends
//! wait while the socket's `bufferedAmount` is above a high-water mark.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, Sink, Stream, StreamExt};
use gloo_timers::future::TimeoutFuture;
use send_wrapper::SendWrapper;
use tabtunnel_client::TransportError;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

/// Above this many bytes queued in the browser, sending waits.
const HIGH_WATER: u32 = 1 << 20;
/// How often a waiting sender looks at `bufferedAmount` again (the browser has no
/// event for it draining).
const DRAIN_POLL_MS: u32 = 4;

/// A WebSocket to the relay. `Send` only in name: wasm32 has one thread, and
/// `SendWrapper` checks that.
pub struct WebSocketTransport {
    inner: SendWrapper<Inner>,
}

struct Inner {
    ws: WebSocket,
    incoming: mpsc::UnboundedReceiver<Result<Bytes, TransportError>>,
    drain_timer: Option<TimeoutFuture>,
    /// The sender waiting for `bufferedAmount` to drain. Incoming messages wake it
    /// too: browsers throttle timers in background tabs, not network events.
    drain_waker: Rc<RefCell<Option<Waker>>>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl WebSocketTransport {
    /// Opens `url` and waits until the WebSocket is open.
    pub async fn connect(url: &str) -> Result<Self, TransportError> {
        let ws = WebSocket::new(url)
            .map_err(|e| TransportError(format!("cannot open {url}: {}", js_text(&e))))?;
        ws.set_binary_type(BinaryType::Arraybuffer);

        let (tx, incoming) = mpsc::unbounded();
        let drain_waker: Rc<RefCell<Option<Waker>>> = Rc::default();
        let on_message = {
            let tx = tx.clone();
            let drain_waker = drain_waker.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                if let Some(waker) = drain_waker.borrow_mut().take() {
                    waker.wake();
                }
                let item = match event.data().dyn_into::<js_sys::ArrayBuffer>() {
                    Ok(buffer) => Ok(Bytes::from(js_sys::Uint8Array::new(&buffer).to_vec())),
                    Err(_) => Err(TransportError("the relay sent a text message".into())),
                };
                let _ = tx.unbounded_send(item);
            })
        };
        let (opened_tx, opened) = oneshot::channel::<Result<(), TransportError>>();
        let opened_tx = Rc::new(RefCell::new(Some(opened_tx)));
        let on_close = {
            let opened_tx = opened_tx.clone();
            Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
                let reason = describe_close(event.code(), &event.reason());
                if let Some(waiting) = opened_tx.borrow_mut().take() {
                    let _ = waiting.send(Err(TransportError(reason)));
                    return;
                }
                // An abnormal close, or the relay saying why it ended the session.
                if event.code() != 1000 || !event.reason().is_empty() {
                    let _ = tx.unbounded_send(Err(TransportError(reason)));
                }
                tx.close_channel();
            })
        };
        let on_open = Closure::once(move || {
            if let Some(waiting) = opened_tx.borrow_mut().take() {
                let _ = waiting.send(Ok(()));
            }
        });
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        let result = opened.await;
        ws.set_onopen(None);
        drop(on_open);
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(open_failed(url, err)),
            Err(_) => return Err(TransportError(format!("cannot reach the relay at {url}"))),
        }
        Ok(Self {
            inner: SendWrapper::new(Inner {
                ws,
                incoming,
                drain_timer: None,
                drain_waker,
                _on_message: on_message,
                _on_close: on_close,
            }),
        })
    }
}

/// Why opening failed, naming the relay's URL as the native transport does (the
/// close event alone does not say which relay).
fn open_failed(url: &str, err: TransportError) -> TransportError {
    TransportError(format!("cannot reach the relay at {url}: {}", err.0))
}

fn describe_close(code: u16, reason: &str) -> String {
    match (code, reason) {
        (1000, reason) if !reason.is_empty() => reason.to_owned(),
        (1000, _) => "the relay closed the connection".into(),
        (1006, _) => "the connection to the relay was lost (network error or relay down)".into(),
        (code, "") => {
            format!("the relay closed the connection (code {code})")
        }
        (code, reason) => format!("the relay closed the connection: {reason} (code {code})"),
    }
}

fn js_text(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close_with_code(1000);
    }
}

impl Stream for WebSocketTransport {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.incoming.poll_next_unpin(cx)
    }
}

impl Sink<Bytes> for WebSocketTransport {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let inner = &mut *self.inner;
        loop {
            if inner.ws.ready_state() != WebSocket::OPEN {
                return Poll::Ready(Err(TransportError(
                    "the connection to the relay is closed".into(),
                )));
            }
            if inner.ws.buffered_amount() <= HIGH_WATER {
                inner.drain_timer = None;
                return Poll::Ready(Ok(()));
            }
            *inner.drain_waker.borrow_mut() = Some(cx.waker().clone());
            let timer = inner
                .drain_timer
                .get_or_insert_with(|| TimeoutFuture::new(DRAIN_POLL_MS));
            match timer.poll_unpin(cx) {
                Poll::Ready(()) => inner.drain_timer = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Bytes) -> Result<(), Self::Error> {
        self.inner
            .ws
            .send_with_u8_array(&item)
            .map_err(|e| TransportError(format!("sending to the relay failed: {}", js_text(&e))))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(())) // the browser sends on its own; poll_ready bounds the queue
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let _ = self.inner.ws.close_with_code(1000);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_open_names_the_relay() {
        let err = open_failed(
            "wss://relay.example/ws",
            TransportError(describe_close(1006, "")),
        );
        assert_eq!(
            err.0,
            "cannot reach the relay at wss://relay.example/ws: the connection to the relay was lost (network error or relay down)"
        );
    }

    #[test]
    fn close_events_are_described_for_people() {
        assert_eq!(describe_close(1000, "idle"), "idle");
        assert_eq!(describe_close(1000, ""), "the relay closed the connection");
        assert_eq!(
            describe_close(1011, ""),
            "the relay closed the connection (code 1011)"
        );
        assert_eq!(
            describe_close(1008, "unknown target"),
            "the relay closed the connection: unknown target (code 1008)"
        );
    }
}
