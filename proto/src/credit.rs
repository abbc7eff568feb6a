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
//!
//! # A window that grows while its sender starves
//!
//! A window must cover what is in flight while a grant travels back, and a grant can
//! travel behind megabytes of the other direction's data (the relay's Credit waits
//! behind the SSH bytes it sends the tab). A fixed 256 KiB window starved downloads; a
//! fixed 4 MiB one would let every slow connection hold 4 MiB. So a window starts at
//! [`crate::CONNECTION_WINDOW`] and grows only when its sender says it ran dry (a
//! Blocked frame: it spent all its credit, which only the sender can know) while the
//! receiver's own queue is short, so more credit would not just queue behind a slow
//! reader. Each time it doubles, up to [`crate::MAX_CONNECTION_WINDOW`] and within the
//! session's [`WindowBudget`]; the growth is granted at once. It halves back (down to
//! where it started) once [`SHRINK_AFTER`] windows' worth passed without the sender
//! running dry, by granting back less than was consumed: credit the sender already
//! holds cannot be taken back, so the budget, not idleness, is what bounds memory.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Some credit was granted since the sender last reported running dry (or ever).
    granted_since_dry: bool,
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
        self.granted_since_dry = true;
        Ok(())
    }

    /// True once each time the sender has spent all it was granted: tell the receiver
    /// (a Blocked frame), which may grow the window. Never before the first grant, since
    /// a sender that was never granted anything has not shown the window is too small.
    pub fn ran_dry(&mut self) -> bool {
        let dry = self.granted_since_dry && self.available() == 0;
        if dry {
            self.granted_since_dry = false;
        }
        dry
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

/// Credit beyond their starting windows that the connections of one session may hold
/// together (see the module documentation). Shared by a session's windows; a window
/// gives back its growth when it shrinks or is dropped.
#[derive(Debug)]
pub struct WindowBudget {
    left: AtomicU64,
}

impl WindowBudget {
    pub fn new(bytes: u64) -> Self {
        Self {
            left: AtomicU64::new(bytes),
        }
    }

    /// What is still free.
    pub fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }

    /// Takes `bytes` if all of them are free.
    fn take(&self, bytes: u64) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }

    /// A window gives back what it grew by (when it goes).
    pub fn give_back(&self, bytes: u64) {
        self.left.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A window shrinks after this many windows' worth of credit went by without its sender
/// running dry.
pub const SHRINK_AFTER: u64 = 4;

/// What the receiving side has granted, received and consumed. Always
/// `outstanding + queued + consumed == window`.
#[derive(Debug)]
pub struct RecvWindow {
    /// Where the window starts and never shrinks below.
    base: u32,
    /// What it may grow to.
    max: u32,
    window: u32,
    /// Granted to the peer and not yet received.
    outstanding: u64,
    /// Received and not yet consumed.
    queued: u64,
    /// Consumed since the last grant, not yet returned to the peer.
    consumed: u64,
    /// Consumed since the sender last ran dry (or the window last changed).
    since_dry: u64,
}

impl RecvWindow {
    /// A window of `window` bytes of credit that never grows; the first grant is
    /// [`RecvWindow::initial_grant`].
    ///
    /// # Panics
    ///
    /// If the window is smaller than two frame overheads: a sender could then wait for
    /// a grant that never comes (see the module documentation).
    pub fn new(window: u32) -> Self {
        Self::growing(window, window)
    }

    /// A window that starts at `base` bytes and may grow to `max` (see the module
    /// documentation).
    ///
    /// # Panics
    ///
    /// As [`RecvWindow::new`], or if `max` is below `base`.
    pub fn growing(base: u32, max: u32) -> Self {
        assert!(
            base >= 2 * (DATA_FRAME_OVERHEAD + 1),
            "a window must hold at least two frames' overhead"
        );
        assert!(
            max >= base,
            "a window cannot grow to less than it starts with"
        );
        Self {
            base,
            max,
            window: base,
            outstanding: u64::from(base),
            queued: 0,
            consumed: 0,
            since_dry: 0,
        }
    }

    /// The credit to send when the connection opens.
    pub fn initial_grant(&self) -> u32 {
        self.base
    }

    /// The window now: what may be in flight and queued together.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// What the window grew by, to give back to its budget when it goes.
    pub fn growth(&self) -> u64 {
        u64::from(self.window - self.base)
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
        self.queued += cost;
        Ok(())
    }

    /// Records that one received Data frame of `len` bytes was consumed (written out),
    /// returning its [`frame_cost`] to the window. Returns the credit to grant back once
    /// half a window has been consumed, so grants are batched, not per frame; a window
    /// that is shrinking grants back less (see the module documentation). Call it once
    /// per frame, with the length passed to [`RecvWindow::on_data`].
    pub fn on_consumed(&mut self, len: usize, budget: &WindowBudget) -> Option<u32> {
        let cost = frame_cost(len);
        debug_assert!(
            cost <= self.queued,
            "consumed a frame that was not received"
        );
        self.queued = self.queued.saturating_sub(cost);
        self.consumed += cost;
        self.since_dry += cost;
        if self.consumed < u64::from(self.window / 2).max(1) {
            return None;
        }
        if self.window > self.base && self.since_dry >= SHRINK_AFTER * u64::from(self.window) {
            let smaller = (self.window / 2).max(self.base);
            // At most half the window, and half the window has been consumed: the cut
            // comes out of this grant.
            let cut = u64::from(self.window - smaller);
            self.consumed -= cut;
            self.window = smaller;
            self.since_dry = 0;
            budget.give_back(cut);
        }
        self.grant_consumed(0)
    }

    /// The sender says it spent all its credit and waits (a Blocked frame). Returns the
    /// credit to grant now: what was consumed and not yet returned, and the window's
    /// growth if it grew. It grows (doubles, up to its largest and within `budget`)
    /// only while no more than a quarter of it waits here to be consumed: behind a slow
    /// reader, more credit would only queue.
    pub fn on_dry(&mut self, budget: &WindowBudget) -> Option<u32> {
        self.since_dry = 0;
        let mut growth = 0;
        if self.queued <= u64::from(self.window / 4) {
            let want = self.window.min(self.max - self.window);
            if want > 0 && budget.take(u64::from(want)) {
                self.window += want;
                growth = want;
            }
        }
        self.grant_consumed(growth)
    }

    /// Grants back what was consumed, plus `extra`.
    fn grant_consumed(&mut self, extra: u32) -> Option<u32> {
        let grant = self.consumed + u64::from(extra);
        self.consumed = 0;
        self.outstanding += grant;
        // consumed + extra never exceeds the window, a u32.
        (grant > 0).then(|| u32::try_from(grant).expect("a grant fits the window"))
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

    /// [`SendCredit::ran_dry`]: true once each time the sender spent all it was granted;
    /// send the receiver a Blocked frame before waiting.
    pub fn ran_dry(&self) -> bool {
        self.inner
            .lock()
            .expect("credit gate lock")
            .credit
            .ran_dry()
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

/// Credit grants waiting to be sent, which a side's writer sends before anything else
/// it has queued: a grant stuck behind megabytes of bulk data starves its sender (the
/// relay's Credit travels to the tab behind the SSH bytes). Grants for one connection
/// add up into one Credit frame, so it holds at most one entry per connection.
///
/// Only grants that refill credit belong here: the first Credit of a connection must
/// not pass the frame that announced it. A refill never can, since it answers Data the
/// peer could only send after both sides knew the connection; and a Credit that
/// passes a Close is ignored as one for a forgotten connection.
#[derive(Debug, Default)]
pub struct UrgentGrants {
    inner: Mutex<UrgentState>,
}

#[derive(Debug, Default)]
struct UrgentState {
    grants: Vec<(u32, u32)>,
    writer: Option<Waker>,
}

impl UrgentGrants {
    /// Queues a grant of `bytes` for connection `conn` and wakes the writer.
    pub fn push(&self, conn: u32, bytes: u32) {
        let mut state = self.inner.lock().expect("grants lock");
        match state.grants.iter_mut().find(|(c, _)| *c == conn) {
            // What one connection has granted and not sent is within its window, a
            // u32; saturating only guards the arithmetic.
            Some((_, pending)) => *pending = pending.saturating_add(bytes),
            None => state.grants.push((conn, bytes)),
        }
        if let Some(writer) = state.writer.take() {
            writer.wake();
        }
    }

    /// Takes every waiting grant, as Credit frames.
    pub fn take(&self) -> Vec<crate::Frame> {
        let mut state = self.inner.lock().expect("grants lock");
        state
            .grants
            .drain(..)
            .map(|(conn, bytes)| crate::Frame::Credit { conn, bytes })
            .collect()
    }

    /// Waits until a grant is waiting. One writer waits at a time.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.inner.lock().expect("grants lock");
            if state.grants.is_empty() {
                state.writer = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
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
        let none = WindowBudget::new(0);
        let mut window = RecvWindow::new(1000);
        assert_eq!(window.initial_grant(), 1000);
        window.on_data(370).unwrap(); // costs 434
        assert_eq!(window.on_consumed(370, &none), None);
        window.on_data(100).unwrap(); // costs 164
        assert_eq!(window.on_consumed(100, &none), Some(434 + 164));
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
        let none = WindowBudget::new(0);
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
                if let Some(grant) = receiver.on_consumed(len, &none) {
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

    /// One round trip of a sender that spends all it holds in `len`-byte frames, which
    /// the receiver writes out at once, while the grants travel back too late to help:
    /// the sender runs dry and says so, then gets every grant. Returns the sender.
    fn starve(sender: &mut SendCredit, window: &mut RecvWindow, budget: &WindowBudget, len: usize) {
        let mut in_flight = Vec::new();
        for _ in 0..100_000 {
            let sent = sender.take(len);
            if sent == 0 {
                break;
            }
            window.on_data(sent).unwrap();
            in_flight.extend(window.on_consumed(sent, budget));
        }
        assert!(sender.ran_dry());
        in_flight.extend(window.on_dry(budget));
        for grant in in_flight {
            sender.grant(grant).unwrap();
        }
    }

    /// A sender and receiver whose window starts at 1000 and may grow to `max`.
    fn pair(max: u32) -> (SendCredit, RecvWindow) {
        let window = RecvWindow::growing(1000, max);
        let mut sender = SendCredit::new();
        sender.grant(window.initial_grant()).unwrap();
        (sender, window)
    }

    #[test]
    fn a_starved_window_doubles_up_to_its_largest_and_grants_the_growth_at_once() {
        let budget = WindowBudget::new(1 << 30);
        let (mut sender, mut window) = pair(4000);
        let mut sizes = Vec::new();
        for _ in 0..4 {
            starve(&mut sender, &mut window, &budget, 100);
            sizes.push(window.window());
            // Everything consumed was granted back with the growth: the sender holds the
            // whole window again.
            assert_eq!(window.outstanding(), u64::from(window.window()));
            assert_eq!(sender.available() + OVERHEAD, u64::from(window.window()));
        }
        assert_eq!(sizes, [2000, 4000, 4000, 4000]);
        assert_eq!(budget.left(), (1 << 30) - 3000);
        assert_eq!(window.growth(), 3000);
    }

    #[test]
    fn a_window_does_not_grow_behind_a_slow_reader() {
        let budget = WindowBudget::new(1 << 30);
        let mut window = RecvWindow::growing(1000, 4000);
        // The sender spends it all; the reader wrote out nothing yet.
        while window.outstanding() >= frame_cost(100) {
            window.on_data(100).unwrap();
        }
        assert_eq!(window.on_dry(&budget), None);
        assert_eq!(window.window(), 1000);
        assert_eq!(budget.left(), 1 << 30);
    }

    #[test]
    fn growth_stays_within_the_session_budget() {
        let budget = WindowBudget::new(1500);
        let (mut first_sender, mut first) = pair(4000);
        let (mut second_sender, mut second) = pair(4000);
        starve(&mut first_sender, &mut first, &budget, 100);
        assert_eq!((first.window(), budget.left()), (2000, 500));
        // Doubling the second would take 1000 of the 500 left: it stays as it is, but
        // still gets back what it consumed.
        starve(&mut second_sender, &mut second, &budget, 100);
        assert_eq!(second.window(), 1000);
        assert_eq!(second_sender.available() + OVERHEAD, 1000);
    }

    #[test]
    fn a_window_that_stops_starving_shrinks_back_and_returns_its_budget() {
        let budget = WindowBudget::new(1 << 30);
        let (mut sender, mut window) = pair(8000);
        for _ in 0..3 {
            starve(&mut sender, &mut window, &budget, 100);
        }
        assert_eq!(window.window(), 8000);
        // A sender that never runs dry again: after SHRINK_AFTER windows' worth, each
        // window halves, down to where it started.
        let mut sizes = vec![window.window()];
        for _ in 0..2000 {
            let sent = sender.take(100);
            assert!(sent > 0, "grants arrive in time: the sender never runs dry");
            window.on_data(sent).unwrap();
            if let Some(grant) = window.on_consumed(sent, &budget) {
                sender.grant(grant).unwrap();
            }
            if *sizes.last().unwrap() != window.window() {
                sizes.push(window.window());
            }
            assert_eq!(budget.left() + window.growth(), 1 << 30);
        }
        assert_eq!(sizes, [8000, 4000, 2000, 1000]);
        assert!(
            window.outstanding() <= 1000,
            "the sender holds at most the base window"
        );
    }

    #[test]
    fn a_sender_reports_running_dry_once_each_time_and_never_before_a_grant() {
        let mut credit = SendCredit::new();
        assert!(
            !credit.ran_dry(),
            "nothing granted yet: not a sign of a small window"
        );
        credit.grant(200).unwrap();
        assert!(!credit.ran_dry(), "it still holds credit");
        credit.take(1000);
        assert!(credit.ran_dry());
        assert!(!credit.ran_dry(), "once per time it runs dry");
        credit.grant(200).unwrap();
        credit.take(1000);
        assert!(credit.ran_dry());
    }

    #[test]
    fn urgent_grants_add_up_per_connection() {
        let urgent = UrgentGrants::default();
        urgent.push(1, 100);
        urgent.push(2, 5);
        urgent.push(1, 50);
        assert_eq!(
            urgent.take(),
            [
                crate::Frame::Credit {
                    conn: 1,
                    bytes: 150
                },
                crate::Frame::Credit { conn: 2, bytes: 5 }
            ]
        );
        assert!(urgent.take().is_empty());
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
