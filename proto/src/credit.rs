//! Per-connection flow-control accounting, shared by the relay and the tab.
//!
//! A receiver grants credit; a sender sends Data only within the credit it holds.
//! The receiver grants more as it consumes (writes out) what it received, so bytes in
//! flight per direction never exceed the window. Pure state: no clock, no IO.

use std::sync::Mutex;
use std::task::{Poll, Waker};

/// The peer sent more than it was granted, or granted an absurd amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    #[error("peer sent {got} bytes with only {allowed} bytes of credit")]
    Overrun { got: usize, allowed: u64 },
    #[error("peer granted credit beyond {max} bytes in flight")]
    Overflow { max: u64 },
}

/// Largest credit a sender may hold; a peer granting more is broken.
const MAX_CREDIT: u64 = 1 << 32;

/// What the sending side may still send.
#[derive(Debug, Default, Clone)]
pub struct SendCredit {
    available: u64,
}

impl SendCredit {
    /// No credit until the receiver grants some.
    pub fn new() -> Self {
        Self::default()
    }

    /// The receiver granted `bytes` more.
    pub fn grant(&mut self, bytes: u32) -> Result<(), CreditError> {
        let next = self.available + u64::from(bytes);
        if next > MAX_CREDIT {
            return Err(CreditError::Overflow { max: MAX_CREDIT });
        }
        self.available = next;
        Ok(())
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u64 {
        self.available
    }

    /// Takes up to `want` bytes of credit and returns how many were taken.
    pub fn take(&mut self, want: usize) -> usize {
        let n = (want as u64).min(self.available);
        self.available -= n;
        n as usize
    }
}

/// What the receiving side has granted, received and consumed.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    window: u32,
    /// Granted to the peer and not yet received.
    outstanding: u64,
    /// Consumed since the last grant, not yet returned to the peer.
    consumed: u64,
}

impl RecvWindow {
    /// A window of `window` bytes; the first grant is [`RecvWindow::initial_grant`].
    pub fn new(window: u32) -> Self {
        Self {
            window,
            outstanding: u64::from(window),
            consumed: 0,
        }
    }

    /// The credit to send when the connection opens.
    pub fn initial_grant(&self) -> u32 {
        self.window
    }

    /// Records `len` bytes of received Data; an error if the peer exceeded its credit.
    pub fn on_data(&mut self, len: usize) -> Result<(), CreditError> {
        if len as u64 > self.outstanding {
            return Err(CreditError::Overrun {
                got: len,
                allowed: self.outstanding,
            });
        }
        self.outstanding -= len as u64;
        Ok(())
    }

    /// Records that `len` received bytes were consumed. Returns the credit to grant
    /// back once half a window has been consumed, so grants are batched, not per frame.
    pub fn on_consumed(&mut self, len: usize) -> Option<u32> {
        self.consumed += len as u64;
        if self.consumed >= u64::from(self.window / 2).max(1) {
            let grant = self.consumed.min(u64::from(u32::MAX)) as u32;
            self.consumed -= u64::from(grant);
            self.outstanding += u64::from(grant);
            Some(grant)
        } else {
            None
        }
    }

    /// Bytes the peer may still send before it must wait.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }
}

/// A [`SendCredit`] shared between the task that receives Credit frames and the one
/// task that sends Data, which waits here for credit. Runtime-agnostic (std only), so
/// the relay (tokio) and the tab (browser event loop) use the same gate.
#[derive(Debug, Default)]
pub struct CreditGate {
    inner: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    credit: SendCredit,
    waiter: Option<Waker>,
}

impl CreditGate {
    /// The receiver granted `bytes` more; wakes the sender if it waits.
    pub fn grant(&self, bytes: u32) -> Result<(), CreditError> {
        let mut state = self.inner.lock().expect("credit gate lock");
        state.credit.grant(bytes)?;
        if let Some(waker) = state.waiter.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Waits until credit is available and takes up to `want` bytes of it.
    pub async fn take(&self, want: usize) -> usize {
        std::future::poll_fn(|cx| {
            let mut state = self.inner.lock().expect("credit gate lock");
            match state.credit.take(want) {
                0 if want > 0 => {
                    state.waiter = Some(cx.waker().clone());
                    Poll::Pending
                }
                n => Poll::Ready(n),
            }
        })
        .await
    }

    /// Waits until credit is available and returns how much, without taking it.
    pub async fn available(&self) -> u64 {
        std::future::poll_fn(|cx| {
            let mut state = self.inner.lock().expect("credit gate lock");
            match state.credit.available() {
                0 => {
                    state.waiter = Some(cx.waker().clone());
                    Poll::Pending
                }
                n => Poll::Ready(n),
            }
        })
        .await
    }

    /// Takes `n` bytes of credit that [`CreditGate::available`] reported.
    pub fn consume(&self, n: usize) {
        let taken = self.inner.lock().expect("credit gate lock").credit.take(n);
        debug_assert_eq!(taken, n, "only one sender takes credit from a gate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_cannot_take_more_than_granted() {
        let mut credit = SendCredit::new();
        assert_eq!(credit.take(10), 0);
        credit.grant(100).unwrap();
        assert_eq!(credit.take(60), 60);
        assert_eq!(credit.take(60), 40);
        assert_eq!(credit.available(), 0);
    }

    #[test]
    fn absurd_grants_are_refused() {
        let mut credit = SendCredit::new();
        credit.grant(u32::MAX).unwrap();
        credit.grant(1).unwrap();
        assert_eq!(
            credit.grant(1),
            Err(CreditError::Overflow { max: MAX_CREDIT })
        );
    }

    #[test]
    fn receiver_detects_overrun_and_batches_grants() {
        let mut window = RecvWindow::new(100);
        assert_eq!(window.initial_grant(), 100);
        window.on_data(70).unwrap();
        assert_eq!(window.on_consumed(30), None);
        assert_eq!(window.on_consumed(40), Some(70));
        assert_eq!(window.outstanding(), 100);
        assert_eq!(
            window.on_data(101),
            Err(CreditError::Overrun {
                got: 101,
                allowed: 100
            })
        );
    }

    #[test]
    fn sender_and_receiver_agree_over_a_long_exchange() {
        let mut sender = SendCredit::new();
        let mut receiver = RecvWindow::new(1000);
        sender.grant(receiver.initial_grant()).unwrap();
        let mut delivered = 0usize;
        for round in 0..10_000usize {
            let sent = sender.take(round % 373 + 1);
            receiver.on_data(sent).unwrap();
            if let Some(grant) = receiver.on_consumed(sent) {
                sender.grant(grant).unwrap();
            }
            delivered += sent;
            assert!(sender.available() <= 1000);
        }
        assert!(delivered > 1_000_000, "credit kept flowing: {delivered}");
    }

    #[test]
    fn gate_wakes_the_waiting_sender_on_grant() {
        use std::future::Future;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::task::{Context, Wake};

        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let gate = CreditGate::default();
        let mut take = Box::pin(gate.take(10));
        assert!(take.as_mut().poll(&mut cx).is_pending());
        gate.grant(4).unwrap();
        assert!(flag.0.load(Ordering::SeqCst), "grant woke the sender");
        assert_eq!(take.as_mut().poll(&mut cx), Poll::Ready(4));
    }
}
