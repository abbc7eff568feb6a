//! Per-connection flow-control accounting, shared by the relay and the tab.
//!
//! A receiver grants credit; a sender sends Data only within the credit it holds.
//! The receiver grants more as it consumes (writes out) what it received, so what is in
//! flight per direction never exceeds the window. Pure state: no clock, no IO.
//!
//! # What a Data frame costs
//!
//! Credit is not counted in payload bytes alone. A receiver queues each Data frame it
//! has not yet written out, and a queued frame costs it a queue slot and a buffer
//! besides its payload: counted in payload bytes only, a window of 256 KiB let a sender
//! queue 256 Ki one-byte frames, about 40 times the window's worth of memory. So every
//! Data frame costs its payload plus [`DATA_FRAME_OVERHEAD`] bytes of credit
//! ([`frame_cost`]), on both sides alike: [`RecvWindow::on_data`] charges it when a
//! frame arrives and [`RecvWindow::on_consumed`] returns it with the payload, and
//! [`SendCredit::take`] charges it before a frame is sent. A window then holds at most
//! `window / (1 + DATA_FRAME_OVERHEAD)` frames, whatever their sizes, and an honest
//! sender of full 64 KiB frames loses a thousandth of its window.
//!
//! The rules that follow:
//! - A sender never sends a frame whose cost exceeds its credit; holding no more credit
//!   than the overhead, it waits (an empty Data frame is a protocol error anyway).
//! - It cannot wait for ever: a receiver that has consumed everything it received holds
//!   less than half a window ungranted (it grants in half-window steps), so the sender's
//!   credit is then above half a window, and windows are at least two overheads
//!   ([`RecvWindow::new`] checks).
//! - Both sides must agree on the rule, which is why it is part of the protocol version
//!   ([`crate::VERSION`] 2).

use std::sync::Mutex;
use std::task::{Poll, Waker};

/// Credit a Data frame costs beyond its payload: the receiver's cost of one queued
/// frame (its queue slot, buffer header and allocation are about this size). Charged
/// by both sides, so a window bounds the receiver's memory whatever the frame sizes.
pub const DATA_FRAME_OVERHEAD: u32 = 64;

/// Credit one Data frame with `payload` bytes costs: its payload plus
/// [`DATA_FRAME_OVERHEAD`].
pub const fn frame_cost(payload: usize) -> u64 {
    payload as u64 + DATA_FRAME_OVERHEAD as u64
}

/// The peer sent more than it was granted, or granted an absurd amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    #[error(
        "Data beyond its credit: a {got}-byte Data frame costs {cost} bytes of credit ({DATA_FRAME_OVERHEAD} per frame plus its bytes), and only {allowed} were left"
    )]
    Overrun { got: usize, cost: u64, allowed: u64 },
    #[error("a Credit frame that grants more than {max} bytes in flight")]
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

    /// Payload bytes one Data frame may carry now: the credit left after the frame's
    /// [`DATA_FRAME_OVERHEAD`]; 0 while the credit does not cover more than that.
    pub fn available(&self) -> u64 {
        self.available
            .saturating_sub(u64::from(DATA_FRAME_OVERHEAD))
    }

    /// Takes the credit for one Data frame of up to `want` payload bytes and returns
    /// how many bytes the frame may carry (its cost, [`frame_cost`], is taken); 0, and
    /// nothing taken, when `want` is 0 or the credit does not cover a byte.
    pub fn take(&mut self, want: usize) -> usize {
        let n = (want as u64).min(self.available());
        if n > 0 {
            self.available -= frame_cost(n as usize);
        }
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
    /// A window of `window` bytes of credit; the first grant is
    /// [`RecvWindow::initial_grant`].
    ///
    /// # Panics
    ///
    /// If the window is smaller than two frame overheads: a sender could then wait for
    /// a grant that never comes (see the module documentation).
    pub fn new(window: u32) -> Self {
        assert!(
            window >= 2 * (DATA_FRAME_OVERHEAD + 1),
            "a window must hold at least two frames' overhead"
        );
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

    /// Records one received Data frame of `len` bytes, charging its [`frame_cost`]; an
    /// error if the peer exceeded its credit. Call it once per frame.
    pub fn on_data(&mut self, len: usize) -> Result<(), CreditError> {
        let cost = frame_cost(len);
        if cost > self.outstanding {
            return Err(CreditError::Overrun {
                got: len,
                cost,
                allowed: self.outstanding,
            });
        }
        self.outstanding -= cost;
        Ok(())
    }

    /// Records that one received Data frame of `len` bytes was consumed (written out),
    /// returning its [`frame_cost`] to the window. Returns the credit to grant back once
    /// half a window has been consumed, so grants are batched, not per frame. Call it
    /// once per frame, with the length passed to [`RecvWindow::on_data`].
    pub fn on_consumed(&mut self, len: usize) -> Option<u32> {
        self.consumed += frame_cost(len);
        if self.consumed >= u64::from(self.window / 2).max(1) {
            let grant = self.consumed.min(u64::from(u32::MAX)) as u32;
            self.consumed -= u64::from(grant);
            self.outstanding += u64::from(grant);
            Some(grant)
        } else {
            None
        }
    }

    /// Credit the peer still holds: what it may still send, frame overheads included,
    /// before it must wait.
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

    /// Waits until the credit covers a frame of at least one byte, takes the credit for
    /// one Data frame of up to `want` bytes and returns how many it may carry.
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

    /// Waits until the credit covers a frame of at least one byte and returns how many
    /// payload bytes one frame may carry (see [`SendCredit::available`]), without
    /// taking the credit.
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

    /// [`CreditGate::take`] without waiting: 0, and nothing taken, when the credit does
    /// not cover a byte.
    pub fn try_take(&self, want: usize) -> usize {
        self.inner
            .lock()
            .expect("credit gate lock")
            .credit
            .take(want)
    }

    /// Takes the credit for one Data frame of `n` bytes, at most what
    /// [`CreditGate::available`] reported.
    pub fn consume(&self, n: usize) {
        let taken = self.inner.lock().expect("credit gate lock").credit.take(n);
        debug_assert_eq!(taken, n, "only one sender takes credit from a gate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CONNECTION_WINDOW;
    use std::collections::VecDeque;

    const OVERHEAD: u64 = DATA_FRAME_OVERHEAD as u64;

    #[test]
    fn sender_cannot_take_more_than_granted() {
        let mut credit = SendCredit::new();
        assert_eq!(credit.take(10), 0);
        credit.grant(200).unwrap();
        assert_eq!(credit.available(), 200 - OVERHEAD);
        // 60 bytes cost 124 of the 200; the next frame may carry 76 - 64 = 12.
        assert_eq!(credit.take(60), 60);
        assert_eq!(credit.take(60), 12);
        assert_eq!(credit.available(), 0);
        assert_eq!(credit.take(1), 0);
    }

    #[test]
    fn a_sender_holding_only_the_overhead_waits() {
        let mut credit = SendCredit::new();
        credit.grant(DATA_FRAME_OVERHEAD).unwrap();
        assert_eq!(credit.available(), 0);
        assert_eq!(credit.take(1), 0, "a frame must carry a byte");
        credit.grant(1).unwrap();
        assert_eq!(credit.take(1), 1);
        assert_eq!(credit.take(0), 0);
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
        let mut window = RecvWindow::new(1000);
        assert_eq!(window.initial_grant(), 1000);
        window.on_data(370).unwrap(); // costs 434
        assert_eq!(window.on_consumed(370), None);
        window.on_data(100).unwrap(); // costs 164
        assert_eq!(window.on_consumed(100), Some(434 + 164));
        assert_eq!(window.outstanding(), 1000);
        assert_eq!(
            window.on_data(937),
            Err(CreditError::Overrun {
                got: 937,
                cost: 1001,
                allowed: 1000
            })
        );
        window.on_data(936).unwrap();
    }

    #[test]
    fn a_sender_of_tiny_frames_is_caught_after_a_window_of_overheads() {
        let mut window = RecvWindow::new(CONNECTION_WINDOW);
        let allowed = u64::from(CONNECTION_WINDOW) / frame_cost(1);
        for _ in 0..allowed {
            window.on_data(1).unwrap();
        }
        let err = window.on_data(1).unwrap_err();
        assert!(matches!(err, CreditError::Overrun { got: 1, .. }), "{err}");
        assert!(err.to_string().contains("beyond its credit"), "{err}");
        // 4032 frames, where counting payload alone allowed 262144.
        assert_eq!(allowed, 4032);
    }

    #[test]
    #[should_panic(expected = "two frames' overhead")]
    fn a_window_must_hold_two_overheads() {
        let _ = RecvWindow::new(2 * DATA_FRAME_OVERHEAD);
    }

    /// A sender that sends whenever it holds credit, a receiver that queues what
    /// arrives and writes it out at its own pace: the sender never overruns, the queue
    /// never holds more than a window's worth of frames, and the exchange never stops.
    fn exchange(window: u32, rounds: usize, size: impl Fn(usize) -> usize, drain: usize) {
        let mut sender = SendCredit::new();
        let mut receiver = RecvWindow::new(window);
        sender.grant(receiver.initial_grant()).unwrap();
        let most_frames = (u64::from(window) / frame_cost(1)) as usize;
        let mut queue = VecDeque::new();
        let mut queued = 0u64; // the credit the queued frames cost
        let mut delivered = 0usize;
        for round in 0..rounds {
            let sent = sender.take(size(round));
            if sent > 0 {
                receiver.on_data(sent).unwrap();
                queue.push_back(sent);
                queued += frame_cost(sent);
            }
            assert!(queue.len() <= most_frames, "queued {} frames", queue.len());
            assert!(
                queued <= u64::from(window),
                "queued {queued} bytes of credit"
            );
            // The receiver writes out one frame every `drain` rounds.
            if round % drain == 0
                && let Some(len) = queue.pop_front()
            {
                queued -= frame_cost(len);
                delivered += len;
                if let Some(grant) = receiver.on_consumed(len) {
                    sender.grant(grant).unwrap();
                }
            }
            assert!(
                sent > 0 || !queue.is_empty(),
                "deadlock in round {round}: nothing queued and no credit to send"
            );
            assert!(sender.available() <= u64::from(window));
        }
        assert!(delivered > 0, "credit kept flowing");
    }

    #[test]
    fn sender_and_receiver_agree_over_a_long_exchange() {
        exchange(1000, 100_000, |round| round % 373 + 1, 1);
        exchange(CONNECTION_WINDOW, 100_000, |round| round % 70_000 + 1, 1);
    }

    #[test]
    fn an_honest_sender_of_tiny_frames_never_overruns_and_never_deadlocks() {
        // A slow receiver: the queue fills to the window's worth of frames and stays there.
        exchange(CONNECTION_WINDOW, 200_000, |_| 1, 3);
        // The smallest window there may be.
        exchange(2 * (DATA_FRAME_OVERHEAD + 1), 10_000, |_| 1, 2);
        exchange(
            2 * (DATA_FRAME_OVERHEAD + 1),
            10_000,
            |round| round % 200 + 1,
            1,
        );
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
        // Credit for the overhead alone does not let a frame go.
        gate.grant(DATA_FRAME_OVERHEAD).unwrap();
        assert!(take.as_mut().poll(&mut cx).is_pending());
        gate.grant(4).unwrap();
        assert!(flag.0.load(Ordering::SeqCst), "grant woke the sender");
        assert_eq!(take.as_mut().poll(&mut cx), Poll::Ready(4));
    }
}
