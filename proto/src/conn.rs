//! The rules of a forwarded connection, written once for both ends of the wire.
//!
//! A [`ConnTable`] is the set of forwarded connections one side of a session knows, and
//! the one place that decides what a connection frame from the peer means. It does no
//! I/O (quinn-proto's `Connection` is the model): the caller feeds it what happened
//! (`handle_*` for a frame from the peer, [`ConnTable::open`] / [`ConnTable::accept`]
//! for a new connection, [`ConnTable::forget`] when its own end stops a connection) and
//! performs what it answers ([`Action`]: queue Data or pass an Eof on to a
//! connection's handle, let it finish or abort it, or nothing). The relay and the tab
//! use the same table, each with its [`Side`], so the two copies cannot drift.
//!
//! The rules:
//! - **Ids.** Each side numbers the connections it opens in its own half of the id
//!   space, so the two never collide: the relay (Accept, Connect) from 1 upwards below
//!   [`TAB_OPENED`], the tab (Dial, for `ssh -R`) from `TAB_OPENED + 1` upwards. Each side
//!   checks that the peer's ids only grow, so an id is never reused. An id never opened
//!   is the peer's error; an id already forgotten is ignored, since frames cross a Close
//!   on the wire (and the tab forgets at once the connections of a forward it closed).
//! - **Data.** A Data frame carries at least one byte (an empty one would queue without
//!   spending credit), none follows the peer's Eof, and each fits the receive window
//!   ([`crate::credit`]): it is checked before the caller queues it, and the queue gets
//!   a copy, so what a connection holds is bounded by its window in bytes and in frames.
//! - **Credit.** A grant may not put the sender beyond its largest credit. The first
//!   grant says the peer took the connection (the tab opened its SSH channel, or the
//!   relay connected a Dial): the opener counts connections still waiting for one
//!   ([`ConnTable::unanswered`]).
//! - **OpenFailed** is the peer refusing a connection this side opened, before it took
//!   it (granted credit): both forget it. For a connection the peer opened, or one it
//!   already took, it is the peer's error.
//! - **Blocked** says the peer spent all its credit for the connection: its window
//!   may grow ([`crate::credit`]); the table answers with the Credit to send. After the
//!   peer's Eof it means nothing and is ignored.
//! - **Eof** comes at most once per direction.
//! - **Close** ends a connection for both sides: an empty reason is orderly (what was
//!   queued before it is still written), any other aborts it now. A side that ends a
//!   connection itself forgets it ([`ConnTable::forget`]) and sends Close only if it
//!   still knew it: a connection the peer closed needs no answer.
//!
//! # Why the flow control is shared
//!
//! Each connection has a pump on its own task that writes out what arrives and sends
//! Data within the peer's credit, waiting for more. Its [`ConnFlow`] (the receive
//! window and the send credit) is shared between the table and that pump, so the
//! pump neither locks the whole table to report what it consumed nor waits on it for
//! credit. The table still makes every decision: it checks each Data against the
//! window before handing it out, and applies each grant; the pump only spends and
//! returns credit through the same type.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::credit::{CreditError, CreditGate, RecvWindow, WindowBudget};
use crate::{CONNECTION_WINDOW, MAX_CONNECTION_WINDOW, SESSION_WINDOW_GROWTH};

/// The top bit of a connection id the tab opened; ids without it are the relay's.
pub const TAB_OPENED: u32 = 1 << 31;

/// The side of the wire a table runs on; its peer is the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The relay: it opens the connections of `-L` and `-D` forwards; the tab is its
    /// peer.
    Relay,
    /// The tab: it opens the connections of `-R` forwards; the relay is its peer.
    Tab,
}

impl Side {
    /// The other side.
    pub fn peer_side(self) -> Side {
        match self {
            Side::Relay => Side::Tab,
            Side::Tab => Side::Relay,
        }
    }

    /// This side, as error messages name it.
    fn name(self) -> &'static str {
        self.peer_side().peer()
    }

    /// The peer, as error messages name it.
    pub fn peer(self) -> &'static str {
        match self {
            Side::Relay => "the tab",
            Side::Tab => "the relay",
        }
    }

    /// The side that opens connection `conn` (the id's half says which).
    pub fn opener_of(conn: u32) -> Side {
        if conn & TAB_OPENED == 0 {
            Side::Relay
        } else {
            Side::Tab
        }
    }

    /// The first and last id this side opens.
    fn ids(self) -> (u32, u32) {
        match self {
            Side::Relay => (1, TAB_OPENED - 1),
            Side::Tab => (TAB_OPENED + 1, u32::MAX),
        }
    }

    /// Who opened `conn`, as this side's messages about the peer's frames name it.
    fn opener(self, conn: u32) -> &'static str {
        match (self, Side::opener_of(conn)) {
            (Side::Relay, Side::Relay) => "the relay",
            (Side::Tab, Side::Tab) => "the tab",
            _ => "it",
        }
    }

    /// What the user can do about a peer that broke the rules: on the relay, the peer
    /// is the user's page.
    fn advice(self) -> &'static str {
        match self {
            Side::Relay => "; reload the page",
            Side::Tab => "",
        }
    }
}

/// The peer broke a rule of a connection: the session ends with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    #[error(
        "{peer} sent a {frame} frame for connection {conn}, which {opener} never opened{advice}",
        peer = .side.peer(), opener = .side.opener(*.conn), advice = .side.advice()
    )]
    NeverOpened {
        side: Side,
        frame: &'static str,
        conn: u32,
    },
    #[error(
        "connection {conn}: {peer} sent a Data frame with no bytes{advice}",
        peer = .side.peer(), advice = .side.advice()
    )]
    EmptyData { side: Side, conn: u32 },
    #[error(
        "connection {conn}: {peer} sent a Data frame after Eof{advice}",
        peer = .side.peer(), advice = .side.advice()
    )]
    DataAfterEof { side: Side, conn: u32 },
    #[error(
        "connection {conn}: {peer} sent a second Eof{advice}",
        peer = .side.peer(), advice = .side.advice()
    )]
    SecondEof { side: Side, conn: u32 },
    #[error(
        "connection {conn}: {peer} sent {error}{advice}",
        peer = .side.peer(), advice = .side.advice()
    )]
    Credit {
        side: Side,
        conn: u32,
        error: CreditError,
    },
    #[error(
        "{peer} reused connection id {conn}{advice}",
        peer = .side.peer(), advice = .side.advice()
    )]
    ReusedId { side: Side, conn: u32 },
    #[error(
        "{peer} sent OpenFailed for connection {conn}, which it opened itself{advice}",
        peer = .side.peer(), advice = .side.advice()
    )]
    RefusedOwn { side: Side, conn: u32 },
    #[error(
        "{peer} opened connection {conn}, an id only {own} opens{advice}",
        peer = .side.peer(), own = .side.name(), advice = .side.advice()
    )]
    NotTheirs { side: Side, conn: u32 },
    #[error(
        "{peer} sent OpenFailed for connection {conn}, which it had already taken{advice}",
        peer = .side.peer(), advice = .side.advice()
    )]
    RefusedTaken { side: Side, conn: u32 },
    /// This side has opened all the ids of its half (2^31 - 1) in one session.
    #[error("connection ids exhausted")]
    IdsExhausted,
}

/// A connection's flow control, shared by its table and its pump (see the module
/// documentation): the window the table checks Data against, which the pump refills
/// as it writes out, and the credit the pump spends, which the table grants.
#[derive(Debug)]
pub struct ConnFlow {
    window: Mutex<RecvWindow>,
    credit: CreditGate,
    /// The session's budget for grown windows, given back when the connection goes.
    budget: Arc<WindowBudget>,
}

impl ConnFlow {
    fn new(window: &Windows) -> Self {
        Self {
            window: Mutex::new(RecvWindow::growing(window.base, window.max)),
            credit: CreditGate::default(),
            budget: window.budget.clone(),
        }
    }

    /// The credit to grant the peer when this side takes the connection.
    pub fn initial_grant(&self) -> u32 {
        self.window.lock().expect("window lock").initial_grant()
    }

    /// One Data frame of `len` bytes, handed out by the table, was written out: the
    /// credit to grant back in a Credit frame, once there is enough to send.
    pub fn consumed(&self, len: usize) -> Option<u32> {
        self.window
            .lock()
            .expect("window lock")
            .on_consumed(len, &self.budget)
    }

    /// What this side may send: wait here for credit, spend it before each Data frame.
    pub fn credit(&self) -> &CreditGate {
        &self.credit
    }

    /// The receive window's size now (it grows while the peer starves).
    pub fn window(&self) -> u32 {
        self.window.lock().expect("window lock").window()
    }
}

impl Drop for ConnFlow {
    fn drop(&mut self) {
        let growth = self.window.get_mut().map_or(0, |w| w.growth());
        self.budget.give_back(growth);
    }
}

/// The windows of one table's connections: where each starts, what it may grow to, and
/// the budget they grow within together.
#[derive(Debug, Clone)]
struct Windows {
    base: u32,
    max: u32,
    budget: Arc<WindowBudget>,
}

/// A connection id taken but not yet in the table: [`ConnTable::insert`] it with its
/// handle once the caller has started the connection. Dropped instead, the id stays
/// used and counts as forgotten.
#[derive(Debug)]
#[must_use = "a connection is only known once inserted"]
pub struct Opening {
    pub conn: u32,
    pub forward: u32,
    flow: Arc<ConnFlow>,
}

impl Opening {
    /// The connection's flow control, for its pump.
    pub fn flow(&self) -> &Arc<ConnFlow> {
        &self.flow
    }
}

/// What the caller does with a connection frame the table accepted.
#[derive(Debug)]
pub enum Action<'a, T> {
    /// Nothing: the frame was for a connection already forgotten, or only changed the
    /// table (Credit).
    Ignore,
    /// Queue these bytes for the connection; they fit its window. A copy, so the queue
    /// never keeps the peer's read buffer alive.
    Data(&'a T, Bytes),
    /// The peer sends no more Data: pass the end on.
    Eof(&'a T),
    /// The peer closed the connection in order and the table forgot it: let the
    /// handle write out what it has queued, then stop. Send no Close back.
    Close(T),
    /// The peer aborted the connection with this reason and the table forgot it: stop
    /// the handle now. Send no Close back.
    Abort(T, String),
    /// The peer could not open the connection (OpenFailed) and the table forgot it:
    /// tell whoever waits for it why, then stop the handle. Send no Close back.
    Refused(T, crate::OpenFailure, String),
}

struct Entry<T> {
    forward: u32,
    handle: T,
    flow: Arc<ConnFlow>,
    /// The peer sent Eof: any later Data or Eof is its error.
    eof_received: bool,
    /// The peer granted credit, so it took the connection.
    answered: bool,
}

/// The forwarded connections one side of a session knows, with their rules. `T` is
/// the caller's handle to a connection (its queue, its task).
pub struct ConnTable<T> {
    side: Side,
    windows: Windows,
    conns: HashMap<u32, Entry<T>>,
    /// The next id this side opens: every one of its ids below it was opened (and may
    /// be forgotten), none from it up.
    next_own: u64,
    /// The same for the peer's ids: the lowest the peer may open next.
    next_peer: u64,
}

impl<T> std::fmt::Debug for ConnTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable")
            .field("side", &self.side)
            .field("open", &self.conns.len())
            .field("next_own", &self.next_own)
            .field("next_peer", &self.next_peer)
            .finish()
    }
}

impl<T> ConnTable<T> {
    /// An empty table whose connections' windows start at the protocol's
    /// [`CONNECTION_WINDOW`] and grow to [`MAX_CONNECTION_WINDOW`], by
    /// [`SESSION_WINDOW_GROWTH`] at most together.
    pub fn new(side: Side) -> Self {
        Self::with_windows(
            side,
            CONNECTION_WINDOW,
            MAX_CONNECTION_WINDOW,
            SESSION_WINDOW_GROWTH,
        )
    }

    /// An empty table with another fixed window per connection (tests, fuzzing).
    ///
    /// # Panics
    ///
    /// If the window is too small for the credit rule ([`RecvWindow::new`]).
    pub fn with_window(side: Side, window: u32) -> Self {
        Self::with_windows(side, window, window, 0)
    }

    /// An empty table whose windows start at `base`, grow to `max`, and grow by
    /// `growth` bytes at most together.
    ///
    /// # Panics
    ///
    /// As [`RecvWindow::growing`].
    pub fn with_windows(side: Side, base: u32, max: u32, growth: u64) -> Self {
        // Checked now rather than at the first connection.
        let _ = RecvWindow::growing(base, max);
        Self {
            side,
            windows: Windows {
                base,
                max,
                budget: Arc::new(WindowBudget::new(growth)),
            },
            conns: HashMap::new(),
            next_own: u64::from(side.ids().0),
            next_peer: u64::from(side.peer_side().ids().0),
        }
    }

    /// What the connections' windows may still grow by together.
    pub fn growth_left(&self) -> u64 {
        self.windows.budget.left()
    }

    pub fn side(&self) -> Side {
        self.side
    }

    /// Takes the next id of this side's half for a new connection of `forward` (the
    /// relay: a TCP client of a `-L` or `-D` forward; the tab: a connection sshd
    /// forwarded for `-R`). Send the peer its Accept, Connect or Dial and a Credit of
    /// [`ConnFlow::initial_grant`], then insert it.
    pub fn open(&mut self, forward: u32) -> Result<Opening, ConnError> {
        let last = self.side.ids().1;
        let conn = u32::try_from(self.next_own)
            .ok()
            .filter(|&conn| conn <= last)
            .ok_or(ConnError::IdsExhausted)?;
        self.next_own += 1;
        Ok(self.opening(conn, forward))
    }

    /// The peer opened `conn` (an Accept, Connect or Dial). An error if the id is not
    /// new, or not in the peer's half (the peer's ids only grow). Insert the opening to
    /// take the connection, or drop it (its forward is gone: the id then counts as
    /// forgotten).
    pub fn accept(&mut self, conn: u32, forward: u32) -> Result<Opening, ConnError> {
        if Side::opener_of(conn) == self.side {
            return Err(ConnError::NotTheirs {
                side: self.side,
                conn,
            });
        }
        if u64::from(conn) < self.next_peer {
            return Err(ConnError::ReusedId {
                side: self.side,
                conn,
            });
        }
        self.next_peer = u64::from(conn) + 1;
        Ok(self.opening(conn, forward))
    }

    fn opening(&self, conn: u32, forward: u32) -> Opening {
        Opening {
            conn,
            forward,
            flow: Arc::new(ConnFlow::new(&self.windows)),
        }
    }

    /// Starts tracking a connection from [`ConnTable::open`] or [`ConnTable::accept`].
    pub fn insert(&mut self, opening: Opening, handle: T) {
        let Opening {
            conn,
            forward,
            flow,
        } = opening;
        let entry = Entry {
            forward,
            handle,
            flow,
            eof_received: false,
            answered: false,
        };
        let previous = self.conns.insert(conn, entry);
        debug_assert!(previous.is_none(), "an opening's id is new");
    }

    /// The live connection `conn`; `None` if it was forgotten; an error if it was never
    /// opened.
    fn known(
        &mut self,
        conn: u32,
        frame: &'static str,
    ) -> Result<Option<&mut Entry<T>>, ConnError> {
        let next = if Side::opener_of(conn) == self.side {
            self.next_own
        } else {
            self.next_peer
        };
        match self.conns.get_mut(&conn) {
            Some(entry) => Ok(Some(entry)),
            None if u64::from(conn) < next => Ok(None),
            None => Err(ConnError::NeverOpened {
                side: self.side,
                frame,
                conn,
            }),
        }
    }

    /// The peer's Data frame.
    pub fn handle_data(&mut self, conn: u32, data: &[u8]) -> Result<Action<'_, T>, ConnError> {
        let side = self.side;
        let Some(entry) = self.known(conn, "Data")? else {
            return Ok(Action::Ignore);
        };
        if data.is_empty() {
            return Err(ConnError::EmptyData { side, conn });
        }
        if entry.eof_received {
            return Err(ConnError::DataAfterEof { side, conn });
        }
        entry
            .flow
            .window
            .lock()
            .expect("window lock")
            .on_data(data.len())
            .map_err(|error| ConnError::Credit { side, conn, error })?;
        // A decoded frame shares the transport's read buffer (128 KiB at a time on the
        // relay): queued as it is, a one-byte frame would keep all of it alive. The
        // copy costs what credit charges for it.
        Ok(Action::Data(&entry.handle, Bytes::copy_from_slice(data)))
    }

    /// The peer's Credit frame: more this side may send.
    pub fn handle_credit(&mut self, conn: u32, bytes: u32) -> Result<(), ConnError> {
        let side = self.side;
        if let Some(entry) = self.known(conn, "Credit")? {
            entry
                .flow
                .credit
                .grant(bytes)
                .map_err(|error| ConnError::Credit { side, conn, error })?;
            entry.answered = true;
        }
        Ok(())
    }

    /// The peer's Blocked frame: it spent all its credit. Returns the credit to grant
    /// it now, if any (the window may have grown; see [`RecvWindow::on_dry`]).
    pub fn handle_blocked(&mut self, conn: u32) -> Result<Option<u32>, ConnError> {
        let Some(entry) = self.known(conn, "Blocked")? else {
            return Ok(None);
        };
        if entry.eof_received {
            return Ok(None);
        }
        let flow = &entry.flow;
        Ok(flow
            .window
            .lock()
            .expect("window lock")
            .on_dry(&flow.budget))
    }

    /// The peer's Eof frame.
    pub fn handle_eof(&mut self, conn: u32) -> Result<Action<'_, T>, ConnError> {
        let side = self.side;
        let Some(entry) = self.known(conn, "Eof")? else {
            return Ok(Action::Ignore);
        };
        if entry.eof_received {
            return Err(ConnError::SecondEof { side, conn });
        }
        entry.eof_received = true;
        Ok(Action::Eof(&entry.handle))
    }

    /// The peer's Close frame: the table forgets the connection.
    pub fn handle_close(&mut self, conn: u32, reason: String) -> Result<Action<'_, T>, ConnError> {
        if self.known(conn, "Close")?.is_none() {
            return Ok(Action::Ignore);
        }
        let Some(entry) = self.conns.remove(&conn) else {
            return Ok(Action::Ignore);
        };
        Ok(if reason.is_empty() {
            Action::Close(entry.handle)
        } else {
            Action::Abort(entry.handle, reason)
        })
    }

    /// The peer's OpenFailed frame: it could not open a connection this side opened.
    pub fn handle_open_failed(
        &mut self,
        conn: u32,
        failure: crate::OpenFailure,
        message: String,
    ) -> Result<Action<'_, T>, ConnError> {
        let side = self.side;
        let Some(entry) = self.known(conn, "OpenFailed")? else {
            return Ok(Action::Ignore);
        };
        if Side::opener_of(conn) != side {
            return Err(ConnError::RefusedOwn { side, conn });
        }
        if entry.answered {
            return Err(ConnError::RefusedTaken { side, conn });
        }
        let entry = self.conns.remove(&conn).expect("known above");
        Ok(Action::Refused(entry.handle, failure, message))
    }

    /// This side ended the connection: the table forgets it, and later frames for it
    /// are ignored. Returns its handle if it was still known: then send the peer a
    /// Close; if not, the peer closed it first and needs no answer.
    pub fn forget(&mut self, conn: u32) -> Option<T> {
        self.conns.remove(&conn).map(|entry| entry.handle)
    }

    /// This side closed `forward` (or the peer did, with Unlisten): its connections are
    /// forgotten, and both sides end them without a Close.
    pub fn forget_forward(&mut self, forward: u32) -> Vec<(u32, T)> {
        self.conns
            .extract_if(|_, entry| entry.forward == forward)
            .map(|(conn, entry)| (conn, entry.handle))
            .collect()
    }

    /// The session ended: every connection is forgotten.
    pub fn forget_all(&mut self) -> Vec<(u32, T)> {
        self.conns
            .drain()
            .map(|(conn, entry)| (conn, entry.handle))
            .collect()
    }

    /// The handle of live connection `conn`.
    pub fn get(&self, conn: u32) -> Option<&T> {
        self.conns.get(&conn).map(|entry| &entry.handle)
    }

    /// The handle of live connection `conn`, to change it.
    pub fn get_mut(&mut self, conn: u32) -> Option<&mut T> {
        self.conns.get_mut(&conn).map(|entry| &mut entry.handle)
    }

    /// The flow control of live connection `conn`.
    pub fn flow(&self, conn: u32) -> Option<&Arc<ConnFlow>> {
        self.conns.get(&conn).map(|entry| &entry.flow)
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Live connections of `forward`.
    pub fn count(&self, forward: u32) -> usize {
        self.conns.values().filter(|e| e.forward == forward).count()
    }

    /// Live connections of `forward` the peer has not taken yet (granted no credit).
    pub fn unanswered(&self, forward: u32) -> usize {
        self.conns
            .values()
            .filter(|e| e.forward == forward && !e.answered)
            .count()
    }

    /// The live connection ids, in no order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.conns.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credit::{DATA_FRAME_OVERHEAD, frame_cost};

    /// The smallest window there may be: two frames' overhead and two bytes.
    const SMALL: u32 = 2 * (DATA_FRAME_OVERHEAD + 1);

    fn relay() -> ConnTable<&'static str> {
        ConnTable::with_window(Side::Relay, SMALL)
    }

    /// A relay table with connection `conn` (1) open on forward 7.
    fn relay_with_one() -> (ConnTable<&'static str>, u32) {
        let mut table = relay();
        let opening = table.open(7).unwrap();
        let conn = opening.conn;
        table.insert(opening, "one");
        (table, conn)
    }

    fn message(err: ConnError) -> String {
        err.to_string()
    }

    #[test]
    fn the_relay_numbers_connections_from_one_upwards() {
        let mut table = relay();
        let ids: Vec<u32> = (0..3).map(|_| table.open(1).unwrap().conn).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn the_relay_runs_out_of_ids_at_the_end_of_its_half() {
        let mut table = relay();
        table.next_own = u64::from(TAB_OPENED - 1);
        assert_eq!(table.open(1).unwrap().conn, TAB_OPENED - 1);
        assert_eq!(table.open(1).unwrap_err(), ConnError::IdsExhausted);
    }

    #[test]
    fn the_tab_numbers_its_connections_in_the_upper_half_to_the_last_id() {
        let mut tab = ConnTable::<()>::new(Side::Tab);
        let ids: Vec<u32> = (0..2).map(|_| tab.open(1).unwrap().conn).collect();
        assert_eq!(ids, [TAB_OPENED + 1, TAB_OPENED + 2]);
        tab.next_own = u64::from(u32::MAX);
        assert_eq!(tab.open(1).unwrap().conn, u32::MAX);
        assert_eq!(tab.open(1).unwrap_err(), ConnError::IdsExhausted);
    }

    #[test]
    fn each_side_accepts_only_growing_ids_of_the_peers_half() {
        let mut relay = relay();
        let dial = relay.accept(TAB_OPENED + 1, 4).unwrap();
        relay.insert(dial, "dialed");
        let err = relay.accept(TAB_OPENED + 1, 4).unwrap_err();
        assert_eq!(
            message(err),
            format!(
                "the tab reused connection id {}; reload the page",
                TAB_OPENED + 1
            )
        );
        let err = relay.accept(3, 4).unwrap_err();
        assert_eq!(
            message(err),
            "the tab opened connection 3, an id only the relay opens; reload the page"
        );
        let mut tab = ConnTable::<()>::new(Side::Tab);
        let err = tab.accept(TAB_OPENED + 9, 1).unwrap_err();
        assert_eq!(
            message(err),
            format!(
                "the relay opened connection {}, an id only the tab opens",
                TAB_OPENED + 9
            )
        );
        // The relay's own ids and the tab's do not collide.
        let own = relay.open(4).unwrap();
        assert_eq!(own.conn, 1);
        relay.insert(own, "own");
        assert_eq!(relay.len(), 2);
    }

    #[test]
    fn a_frame_for_a_tab_id_never_opened_is_an_error_on_both_sides() {
        let mut relay = relay();
        let err = relay.handle_eof(TAB_OPENED + 1).unwrap_err();
        assert_eq!(
            message(err),
            format!(
                "the tab sent a Eof frame for connection {}, which it never opened; reload the page",
                TAB_OPENED + 1
            )
        );
        let mut tab = ConnTable::<()>::new(Side::Tab);
        let err = tab.handle_eof(TAB_OPENED + 1).unwrap_err();
        assert_eq!(
            message(err),
            format!(
                "the relay sent a Eof frame for connection {}, which the tab never opened",
                TAB_OPENED + 1
            )
        );
    }

    #[test]
    fn open_failed_ends_an_unanswered_connection_this_side_opened_and_nothing_else() {
        use crate::OpenFailure;
        // The relay opened a Connect; the tab's sshd refused the channel.
        let (mut table, conn) = relay_with_one();
        match table
            .handle_open_failed(conn, OpenFailure::NotAllowed, "prohibited".into())
            .unwrap()
        {
            Action::Refused(handle, OpenFailure::NotAllowed, why) => {
                assert_eq!((handle, why.as_str()), ("one", "prohibited"));
            }
            other => panic!("{other:?}"),
        }
        assert!(table.is_empty());
        // Crossing frames: a second one for the forgotten id is ignored.
        assert!(matches!(
            table.handle_open_failed(conn, OpenFailure::General, String::new()),
            Ok(Action::Ignore)
        ));
        // Once the peer took it (granted credit), refusing it is the peer's error.
        let (mut table, conn) = relay_with_one();
        table.handle_credit(conn, 10).unwrap();
        let err = table
            .handle_open_failed(conn, OpenFailure::Refused, String::new())
            .unwrap_err();
        assert_eq!(
            message(err),
            "the tab sent OpenFailed for connection 1, which it had already taken; reload the page"
        );
        // The peer may not refuse a connection it opened itself.
        let mut relay = relay();
        let dial = relay.accept(TAB_OPENED + 1, 2).unwrap();
        relay.insert(dial, "dial");
        let err = relay
            .handle_open_failed(TAB_OPENED + 1, OpenFailure::Refused, String::new())
            .unwrap_err();
        assert_eq!(
            message(err),
            format!(
                "the tab sent OpenFailed for connection {}, which it opened itself; reload the page",
                TAB_OPENED + 1
            )
        );
    }

    #[test]
    fn the_tab_refuses_an_id_that_does_not_grow() {
        let mut tab = ConnTable::<()>::new(Side::Tab);
        let first = tab.accept(5, 1).unwrap();
        tab.insert(first, ());
        for reused in [5, 4, 0] {
            let err = tab.accept(reused, 1).unwrap_err();
            assert_eq!(
                err,
                ConnError::ReusedId {
                    side: Side::Tab,
                    conn: reused
                }
            );
            assert_eq!(
                message(err),
                format!("the relay reused connection id {reused}")
            );
        }
        // Gaps are allowed: the relay skips ids of connections it refused.
        assert!(tab.accept(9, 1).is_ok());
    }

    #[test]
    fn a_blocked_peer_grows_its_window_within_the_session_budget_until_it_goes() {
        let mut relay = ConnTable::<()>::with_windows(Side::Relay, 1000, 4000, 1500);
        let first = relay.open(1).unwrap();
        let flow = first.flow().clone();
        relay.insert(first, ());
        // Everything granted arrived and was written out: the window doubles, and the
        // grant is what was consumed (the pump sent none yet) plus the growth.
        let mut grants = Vec::new();
        for _ in 0..6 {
            relay.handle_data(1, &[0; 100]).unwrap(); // costs 164
            grants.extend(flow.consumed(100));
        }
        assert_eq!(grants, [4 * 164]);
        assert_eq!(relay.handle_blocked(1), Ok(Some(2 * 164 + 1000)));
        assert_eq!((flow.window(), relay.growth_left()), (2000, 500));
        // Never opened: the peer's error; forgotten: ignored; after Eof: ignored.
        assert!(matches!(
            relay.handle_blocked(9),
            Err(ConnError::NeverOpened {
                frame: "Blocked",
                ..
            })
        ));
        let second = relay.open(1).unwrap();
        relay.insert(second, ());
        relay.handle_eof(2).unwrap();
        assert_eq!(relay.handle_blocked(2), Ok(None));
        // Gone, the connection gives its growth back to the session.
        relay.forget(1);
        drop(flow);
        assert_eq!(relay.handle_blocked(1), Ok(None));
        assert_eq!(relay.growth_left(), 1500);
    }

    #[test]
    fn an_accept_the_tab_drops_leaves_its_id_forgotten() {
        let mut tab = ConnTable::<()>::new(Side::Tab);
        drop(tab.accept(3, 1).unwrap()); // its forward closed meanwhile
        assert!(matches!(tab.handle_data(3, b"x"), Ok(Action::Ignore)));
        assert!(matches!(tab.handle_eof(3), Ok(Action::Ignore)));
        assert_eq!(tab.handle_credit(3, 100), Ok(()));
        // Ids below it that the relay skipped count as forgotten too.
        assert!(matches!(
            tab.handle_close(2, "x".into()),
            Ok(Action::Ignore)
        ));
        assert!(tab.accept(3, 1).is_err(), "still used");
    }

    #[test]
    fn a_frame_for_a_connection_never_opened_is_an_error() {
        let (mut table, conn) = relay_with_one();
        let never = conn + 1;
        let errs = [
            table.handle_data(never, b"x").unwrap_err(),
            table.handle_credit(never, 1).unwrap_err(),
            table.handle_eof(never).unwrap_err(),
            table.handle_close(never, String::new()).unwrap_err(),
        ];
        for (err, frame) in errs.into_iter().zip(["Data", "Credit", "Eof", "Close"]) {
            assert_eq!(
                message(err),
                format!(
                    "the tab sent a {frame} frame for connection 2, which the relay never opened; reload the page"
                )
            );
        }
        let mut tab = ConnTable::<()>::new(Side::Tab);
        assert_eq!(
            message(tab.handle_eof(1).unwrap_err()),
            "the relay sent a Eof frame for connection 1, which it never opened"
        );
    }

    #[test]
    fn a_frame_for_a_forgotten_connection_is_ignored() {
        let (mut table, conn) = relay_with_one();
        assert_eq!(table.forget(conn), Some("one"));
        assert!(matches!(table.handle_data(conn, b"x"), Ok(Action::Ignore)));
        assert_eq!(table.handle_credit(conn, u32::MAX), Ok(()));
        assert!(matches!(table.handle_eof(conn), Ok(Action::Ignore)));
        assert!(matches!(table.handle_eof(conn), Ok(Action::Ignore)));
        assert!(matches!(
            table.handle_close(conn, String::new()),
            Ok(Action::Ignore)
        ));
        // Stream 0 is the session's: never a connection, never an error here.
        assert!(matches!(table.handle_data(0, b"x"), Ok(Action::Ignore)));
    }

    #[test]
    fn data_with_no_bytes_is_an_error() {
        let (mut table, conn) = relay_with_one();
        let err = table.handle_data(conn, b"").unwrap_err();
        assert_eq!(
            err,
            ConnError::EmptyData {
                side: Side::Relay,
                conn
            }
        );
        assert!(message(err).contains("Data frame with no bytes"));
    }

    #[test]
    fn data_after_eof_is_an_error() {
        let (mut table, conn) = relay_with_one();
        assert!(matches!(table.handle_eof(conn), Ok(Action::Eof(&"one"))));
        let err = table.handle_data(conn, b"x").unwrap_err();
        assert_eq!(
            err,
            ConnError::DataAfterEof {
                side: Side::Relay,
                conn
            }
        );
        assert_eq!(
            message(err),
            "connection 1: the tab sent a Data frame after Eof; reload the page"
        );
    }

    #[test]
    fn a_second_eof_is_an_error() {
        let (mut table, conn) = relay_with_one();
        table.handle_eof(conn).unwrap();
        let err = table.handle_eof(conn).unwrap_err();
        assert!(message(err).contains("a second Eof"));
    }

    #[test]
    fn data_beyond_the_window_is_an_error_before_it_is_queued() {
        let (mut table, conn) = relay_with_one();
        // SMALL holds two one-byte frames' cost, or one frame of SMALL - overhead bytes.
        let fits = vec![7u8; SMALL as usize - DATA_FRAME_OVERHEAD as usize];
        match table.handle_data(conn, &fits) {
            Ok(Action::Data(handle, data)) => {
                assert_eq!(*handle, "one");
                assert_eq!(data, fits);
                assert_ne!(data.as_ptr(), fits.as_ptr(), "the queue gets a copy");
            }
            other => panic!("{other:?}"),
        }
        let err = table.handle_data(conn, b"x").unwrap_err();
        assert!(matches!(
            err,
            ConnError::Credit {
                error: CreditError::Overrun { .. },
                ..
            }
        ));
        assert!(message(err).starts_with("connection 1: the tab sent Data beyond its credit"));
    }

    #[test]
    fn consumed_data_returns_credit_in_half_window_steps() {
        let mut table = ConnTable::with_window(Side::Tab, 1000);
        let opening = table.accept(1, 1).unwrap();
        let flow = opening.flow().clone();
        table.insert(opening, ());
        assert_eq!(flow.initial_grant(), 1000);
        table.handle_data(1, &[0; 370]).unwrap(); // costs 434
        table.handle_data(1, &[0; 100]).unwrap(); // costs 164
        assert!(table.handle_data(1, &[0; 400]).is_err(), "402 left");
        let mut table = ConnTable::with_window(Side::Tab, 1000);
        let opening = table.accept(1, 1).unwrap();
        let flow = opening.flow().clone();
        table.insert(opening, ());
        table.handle_data(1, &[0; 370]).unwrap();
        table.handle_data(1, &[0; 100]).unwrap();
        // Under half the window consumed: nothing to grant yet.
        assert_eq!(flow.consumed(370), None);
        assert_eq!(flow.consumed(100), Some(434 + 164));
        // The window is whole again.
        table.handle_data(1, &[0; 936]).unwrap();
    }

    #[test]
    fn credit_beyond_the_largest_is_an_error() {
        let (mut table, conn) = relay_with_one();
        table.handle_credit(conn, u32::MAX).unwrap();
        table.handle_credit(conn, 1).unwrap();
        let err = table.handle_credit(conn, 1).unwrap_err();
        assert!(matches!(
            err,
            ConnError::Credit {
                error: CreditError::Overflow { .. },
                ..
            }
        ));
        assert_eq!(
            message(err),
            "connection 1: the tab sent a Credit frame that grants more than 4294967296 bytes in flight; reload the page"
        );
    }

    #[test]
    fn credit_reaches_the_sender_and_answers_the_connection() {
        let (mut table, conn) = relay_with_one();
        let flow = table.flow(conn).unwrap().clone();
        assert_eq!((table.count(7), table.unanswered(7)), (1, 1));
        assert_eq!(flow.credit().try_take(10), 0);
        table.handle_credit(conn, 200).unwrap();
        assert_eq!((table.count(7), table.unanswered(7)), (1, 0));
        assert_eq!(flow.credit().try_take(10), 10);
        assert_eq!((table.count(8), table.unanswered(8)), (0, 0));
    }

    #[test]
    fn an_empty_close_is_orderly_and_any_other_aborts() {
        let mut table = relay();
        for name in ["a", "b"] {
            let opening = table.open(1).unwrap();
            table.insert(opening, name);
        }
        assert!(matches!(
            table.handle_close(1, String::new()),
            Ok(Action::Close("a"))
        ));
        match table.handle_close(2, "reset".into()) {
            Ok(Action::Abort("b", reason)) => assert_eq!(reason, "reset"),
            other => panic!("{other:?}"),
        }
        assert!(table.is_empty());
    }

    #[test]
    fn a_connection_ends_once_whoever_ends_it() {
        let (mut table, conn) = relay_with_one();
        assert_eq!(table.forget(conn), Some("one"), "still known: send Close");
        assert_eq!(table.forget(conn), None, "ended already");
        // The peer's Close crossed ours: ignored.
        assert!(matches!(
            table.handle_close(conn, String::new()),
            Ok(Action::Ignore)
        ));
        let (mut table, conn) = relay_with_one();
        assert!(matches!(
            table.handle_close(conn, "x".into()),
            Ok(Action::Abort(..))
        ));
        assert_eq!(
            table.forget(conn),
            None,
            "the peer closed it: no Close back"
        );
    }

    #[test]
    fn closing_a_forward_forgets_its_connections_only() {
        let mut table = relay();
        for (forward, name) in [(1, "a"), (2, "b"), (1, "c")] {
            let opening = table.open(forward).unwrap();
            table.insert(opening, name);
        }
        let mut gone = table.forget_forward(1);
        gone.sort();
        assert_eq!(gone, [(1, "a"), (3, "c")]);
        assert_eq!(table.ids().collect::<Vec<_>>(), [2]);
        assert!(matches!(table.handle_data(1, b"x"), Ok(Action::Ignore)));
        assert_eq!(table.forget_all(), [(2, "b")]);
        assert!(table.is_empty());
    }

    #[test]
    fn messages_name_the_peer_of_each_side() {
        let mut tab = ConnTable::<()>::new(Side::Tab);
        let opening = tab.accept(4, 1).unwrap();
        tab.insert(opening, ());
        assert_eq!(
            message(tab.handle_data(4, b"").unwrap_err()),
            "connection 4: the relay sent a Data frame with no bytes"
        );
        tab.handle_eof(4).unwrap();
        assert_eq!(
            message(tab.handle_eof(4).unwrap_err()),
            "connection 4: the relay sent a second Eof"
        );
        let (mut relay, conn) = relay_with_one();
        relay.handle_eof(conn).unwrap();
        assert_eq!(
            message(relay.handle_eof(conn).unwrap_err()),
            "connection 1: the tab sent a second Eof; reload the page"
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// What a peer, honest or not, may send about connections 0..6.
        #[derive(Debug, Clone)]
        enum Input {
            Data(u32, usize),
            Credit(u32, u32),
            Eof(u32),
            Close(u32, bool),
            Open,
            Forget(u32),
            Consume(u32),
        }

        fn input() -> impl Strategy<Value = Input> {
            prop_oneof![
                (0..6u32, 0..200usize).prop_map(|(c, n)| Input::Data(c, n)),
                (0..6u32, any::<u32>()).prop_map(|(c, n)| Input::Credit(c, n)),
                (0..6u32).prop_map(Input::Eof),
                (0..6u32, any::<bool>()).prop_map(|(c, o)| Input::Close(c, o)),
                Just(Input::Open),
                (0..6u32).prop_map(Input::Forget),
                (0..6u32).prop_map(Input::Consume),
            ]
        }

        proptest! {
            /// Whatever arrives, a connection never queues more than its window, each
            /// opened id ends exactly once, and an id is never handed out twice.
            #[test]
            fn the_window_bounds_the_queue_and_every_id_ends_once(
                inputs in proptest::collection::vec(input(), 0..200)
            ) {
                let mut table = ConnTable::<u32>::with_window(Side::Relay, SMALL);
                // Per live or draining connection: the frames queued, not yet consumed.
                let mut queues: HashMap<u32, Vec<usize>> = HashMap::new();
                let mut ended: HashMap<u32, u32> = HashMap::new();
                let mut opened = Vec::new();
                let end = |conn: u32, ended: &mut HashMap<u32, u32>| {
                    *ended.entry(conn).or_default() += 1;
                };
                for input in inputs {
                    let result = match input {
                        Input::Data(c, n) => match table.handle_data(c, &vec![1; n]) {
                            Ok(Action::Data(&id, data)) => {
                                prop_assert_eq!(id, c);
                                queues.entry(c).or_default().push(data.len());
                                Ok(())
                            }
                            Ok(_) => Ok(()),
                            Err(err) => Err(err),
                        },
                        Input::Credit(c, n) => table.handle_credit(c, n),
                        Input::Eof(c) => table.handle_eof(c).map(|_| ()),
                        Input::Close(c, orderly) => {
                            let reason = if orderly { String::new() } else { "x".into() };
                            match table.handle_close(c, reason) {
                                Ok(Action::Close(id) | Action::Abort(id, _)) => {
                                    end(id, &mut ended);
                                    Ok(())
                                }
                                Ok(_) => Ok(()),
                                Err(err) => Err(err),
                            }
                        }
                        Input::Open => {
                            let opening = table.open(1).unwrap();
                            prop_assert!(!opened.contains(&opening.conn));
                            opened.push(opening.conn);
                            let conn = opening.conn;
                            table.insert(opening, conn);
                            Ok(())
                        }
                        Input::Forget(c) => {
                            if let Some(id) = table.forget(c) {
                                end(id, &mut ended);
                            }
                            Ok(())
                        }
                        Input::Consume(c) => {
                            if let (Some(flow), Some(queue)) = (table.flow(c), queues.get_mut(&c))
                                && !queue.is_empty()
                            {
                                let len = queue.remove(0);
                                flow.consumed(len);
                            }
                            Ok(())
                        }
                    };
                    for (conn, queue) in &queues {
                        let cost: u64 = queue.iter().map(|&n| frame_cost(n)).sum();
                        prop_assert!(cost <= u64::from(SMALL), "connection {conn} queued {cost}");
                    }
                    // A broken rule ends the session; the table is then dropped.
                    if result.is_err() {
                        break;
                    }
                }
                for (_, id) in table.forget_all() {
                    end(id, &mut ended);
                }
                for id in opened {
                    prop_assert_eq!(ended.get(&id), Some(&1), "connection {}", id);
                }
            }
        }
    }
}
