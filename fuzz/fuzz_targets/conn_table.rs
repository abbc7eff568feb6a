//! A relay's and a tab's `ConnTable` wired to each other, driven by arbitrary steps.
//!
//! Each side runs the table as the product does: the relay opens connections for the
//! forwards the tab listens on, the tab takes them (or drops them when the forward is
//! gone) and answers with credit; either side's pumps send Data within their credit,
//! say Blocked when they spent it all (which may grow the peer's window), send Eof once, write out what they queued (returning credit), and end connections
//! (orderly or not); the tab closes forwards. Frames travel in order, one queue per
//! direction, and cross each other as on a real wire. Some steps inject arbitrary
//! connection frames, as from a broken peer.
//!
//! Properties: nothing panics; while every frame is honest, neither table reports an
//! error (the two sides agree on every rule); what a connection has queued and not yet
//! written out never exceeds its window (which grows only to its largest, within the
//! session's budget), in credit (memory bounded by the window); a
//! connection is never handed Data or Eof after it ended; and every id that was opened
//! ends exactly once (peer's Close, local end, its forward's close, or the session's).

#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tabtunnel_proto::{
    Action, ConnError, ConnFlow, ConnTable, DATA_FRAME_OVERHEAD, Frame, Side, frame_cost,
};

/// Steps per input: enough for long exchanges, few enough to stay fast.
const MAX_STEPS: usize = 4096;

/// How many times its starting size a window may grow to.
const GROWS_TO: u32 = 4;

fuzz_target!(|input: &[u8]| {
    let mut u = Unstructured::new(input);
    let _ = run(&mut u);
});

/// One connection's pump: what it queued for writing out, and what it has sent.
struct Pump {
    flow: Arc<ConnFlow>,
    /// Data frames handed out by the table and not yet written out.
    queue: VecDeque<usize>,
    sent_eof: bool,
    /// The tab granted its first credit (it opened its SSH channel).
    answered: bool,
    /// The peer closed it in order: the table forgot it; it writes out what it queued.
    draining: bool,
}

impl Pump {
    fn new(flow: Arc<ConnFlow>) -> Self {
        Self {
            flow,
            queue: VecDeque::new(),
            sent_eof: false,
            answered: false,
            draining: false,
        }
    }

    fn queued(&self) -> u64 {
        self.queue.iter().map(|&n| frame_cost(n)).sum()
    }
}

/// One side of the session.
struct End {
    table: ConnTable<u32>,
    pumps: BTreeMap<u32, Pump>,
    /// Frames on their way to the other side, in order.
    out: VecDeque<Frame>,
    /// Forwards listening, as this side sees them.
    listening: BTreeSet<u32>,
    /// Ids taken into the table, and how many times each ended.
    opened: BTreeSet<u32>,
    ended: HashMap<u32, u32>,
}

impl End {
    fn new(side: Side, window: u32, growth: u64) -> Self {
        Self {
            table: ConnTable::with_windows(side, window, window * GROWS_TO, growth),
            pumps: BTreeMap::new(),
            out: VecDeque::new(),
            listening: BTreeSet::new(),
            opened: BTreeSet::new(),
            ended: HashMap::new(),
        }
    }

    fn end(&mut self, id: u32) {
        let count = self.ended.entry(id).or_default();
        *count += 1;
        assert_eq!(
            *count,
            1,
            "{:?}: connection {id} ended twice",
            self.table.side()
        );
        assert!(
            self.opened.contains(&id),
            "connection {id} ended, never opened"
        );
    }

    /// A live connection the step's byte picks, if any: `live` ones are still in the
    /// table (not draining).
    fn pick(&self, u: &mut Unstructured, live: bool) -> Result<Option<u32>> {
        let ids: Vec<u32> = self
            .pumps
            .iter()
            .filter(|(_, p)| !live || !p.draining)
            .map(|(&id, _)| id)
            .collect();
        if ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(*u.choose(&ids)?))
    }

    /// Handles one frame from the peer; an error is a broken rule.
    fn receive(&mut self, frame: Frame) -> std::result::Result<(), ConnError> {
        let side = self.table.side();
        match frame {
            Frame::Data { conn, data } => match self.table.handle_data(conn, &data)? {
                Action::Data(&id, bytes) => {
                    assert_eq!(id, conn);
                    assert_eq!(bytes, data);
                    assert!(!self.ended.contains_key(&id), "Data after the end");
                    let pump = self.pumps.get_mut(&id).expect("a live connection's pump");
                    assert!(!pump.draining, "Data for a forgotten connection");
                    pump.queue.push_back(bytes.len());
                }
                Action::Ignore => {}
                other => panic!("{side:?}: Data gave {other:?}"),
            },
            Frame::Credit { conn, bytes } => self.table.handle_credit(conn, bytes)?,
            Frame::Blocked { conn } => {
                if let Some(bytes) = self.table.handle_blocked(conn)? {
                    self.out.push_back(Frame::Credit { conn, bytes });
                }
            }
            Frame::Eof { conn } => match self.table.handle_eof(conn)? {
                Action::Eof(&id) => {
                    assert_eq!(id, conn);
                    assert!(!self.ended.contains_key(&id), "Eof after the end");
                }
                Action::Ignore => {}
                other => panic!("{side:?}: Eof gave {other:?}"),
            },
            Frame::Close { conn, reason } => match self.table.handle_close(conn, reason)? {
                Action::Close(id) => {
                    assert_eq!(id, conn);
                    self.end(id);
                    let pump = self.pumps.get_mut(&id).expect("a live connection's pump");
                    pump.draining = true;
                    if pump.queue.is_empty() {
                        self.pumps.remove(&id);
                    }
                }
                Action::Abort(id, _) => {
                    assert_eq!(id, conn);
                    self.end(id);
                    self.pumps.remove(&id);
                }
                Action::Ignore => {}
                other => panic!("{side:?}: Close gave {other:?}"),
            },
            Frame::Accept { conn, forward, .. } => {
                let opening = self.table.accept(conn, forward)?;
                // A forward closed meanwhile: the id is used, and forgotten.
                if self.listening.contains(&forward) {
                    let pump = Pump::new(opening.flow().clone());
                    self.table.insert(opening, conn);
                    self.pumps.insert(conn, pump);
                    self.opened.insert(conn);
                }
            }
            Frame::Listen { forward, .. } => {
                self.listening.insert(forward);
            }
            Frame::Unlisten { forward } => {
                self.listening.remove(&forward);
                for (conn, id) in self.table.forget_forward(forward) {
                    assert_eq!(conn, id);
                    self.end(id);
                    self.pumps.remove(&id);
                }
            }
            other => panic!("{side:?} got {other:?}"),
        }
        Ok(())
    }

    fn check_bounded(&self, window: u32, growth: u64) {
        let mut grown = 0;
        for (id, pump) in &self.pumps {
            let queued = pump.queued();
            let now = pump.flow.window();
            assert!(
                queued <= u64::from(now) && now >= window && now <= window * GROWS_TO,
                "{:?}: connection {id} queued {queued} bytes of credit, window {now}",
                self.table.side()
            );
            grown += u64::from(now - window);
        }
        // Forgotten connections whose pumps still drain hold their growth too.
        assert!(grown <= growth, "windows grew by {grown}, budget {growth}");
        assert!(self.table.growth_left() <= growth);
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    // Small windows, so that limits are reached within a few steps.
    let window = u.int_in_range(2 * (DATA_FRAME_OVERHEAD + 1)..=4096)?;
    // One input in four has a broken peer. The others stay honest to the end, so they
    // reach long exchanges instead of ending at the first injected frame.
    let hostile = u.int_in_range(0..=3u8)? == 0;
    let growth = u64::from(u.int_in_range(0..=3 * window)?);
    let mut relay = End::new(Side::Relay, window, growth);
    let mut tab = End::new(Side::Tab, window, growth);
    let mut next_forward = 1u32;
    // An injected frame happened: from then on, a table may report an error.
    let mut broken = false;
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let tab_side = u.arbitrary::<bool>()?;
        let step = u.int_in_range(0..=9u8)?;
        let result = match step {
            // The tab asks for a forward.
            0 => {
                tab.listening.insert(next_forward);
                tab.out.push_back(Frame::Listen {
                    forward: next_forward,
                    bind: String::new(),
                    port: 0,
                });
                next_forward += 1;
                Ok(())
            }
            // A TCP client connects to a forward the relay listens on.
            1 => {
                let forwards: Vec<u32> = relay.listening.iter().copied().collect();
                if !forwards.is_empty() {
                    let forward = *u.choose(&forwards)?;
                    let opening = relay.table.open(forward).expect("ids last");
                    let conn = opening.conn;
                    let grant = opening.flow().initial_grant();
                    relay.pumps.insert(conn, Pump::new(opening.flow().clone()));
                    relay.table.insert(opening, conn);
                    relay.opened.insert(conn);
                    relay.out.push_back(Frame::Accept {
                        conn,
                        forward,
                        peer: "127.0.0.1:1".into(),
                    });
                    relay.out.push_back(Frame::Credit { conn, bytes: grant });
                }
                Ok(())
            }
            // One frame arrives, at either side.
            2 | 3 | 9 if !(step == 9 && hostile) => {
                let (from, to) = if tab_side {
                    (&mut relay, &mut tab)
                } else {
                    (&mut tab, &mut relay)
                };
                match from.out.pop_front() {
                    Some(frame) => to.receive(frame),
                    None => Ok(()),
                }
            }
            // A pump sends Data within its credit.
            4 => {
                let end = if tab_side { &mut tab } else { &mut relay };
                if let Some(conn) = end.pick(u, true)? {
                    let want = u.int_in_range(1..=window as usize)?;
                    let pump = &end.pumps[&conn];
                    let may = !pump.sent_eof && (pump.answered || !tab_side);
                    if may {
                        let n = pump.flow.credit().try_take(want);
                        if n > 0 {
                            let data = Bytes::from(vec![0x5a; n]);
                            end.out.push_back(Frame::Data { conn, data });
                        } else if pump.flow.credit().ran_dry() {
                            end.out.push_back(Frame::Blocked { conn });
                        }
                    }
                }
                Ok(())
            }
            // A pump sends Eof (its source ended), or the tab answers an Accept.
            5 => {
                let end = if tab_side { &mut tab } else { &mut relay };
                if let Some(conn) = end.pick(u, true)? {
                    let pump = end.pumps.get_mut(&conn).expect("picked");
                    if tab_side && !pump.answered {
                        pump.answered = true;
                        let bytes = pump.flow.initial_grant();
                        end.out.push_back(Frame::Credit { conn, bytes });
                    } else if !pump.sent_eof {
                        pump.sent_eof = true;
                        end.out.push_back(Frame::Eof { conn });
                    }
                }
                Ok(())
            }
            // A pump writes out one queued frame, returning its credit.
            6 => {
                let end = if tab_side { &mut tab } else { &mut relay };
                if let Some(conn) = end.pick(u, false)? {
                    let pump = end.pumps.get_mut(&conn).expect("picked");
                    if let Some(len) = pump.queue.pop_front()
                        && let Some(bytes) = pump.flow.consumed(len)
                    {
                        end.out.push_back(Frame::Credit { conn, bytes });
                    }
                    if pump.draining && pump.queue.is_empty() {
                        end.pumps.remove(&conn);
                    }
                }
                Ok(())
            }
            // This side ends a connection (both directions done, or a failure).
            7 => {
                let end = if tab_side { &mut tab } else { &mut relay };
                if let Some(conn) = end.pick(u, true)? {
                    let id = end
                        .table
                        .forget(conn)
                        .expect("a live pump's connection is known");
                    end.end(id);
                    end.pumps.remove(&conn);
                    let reason = if u.arbitrary()? {
                        String::new()
                    } else {
                        "failed".into()
                    };
                    end.out.push_back(Frame::Close { conn, reason });
                }
                Ok(())
            }
            // The tab closes a forward: its connections end at once on both sides.
            8 => {
                let forwards: Vec<u32> = tab.listening.iter().copied().collect();
                if !forwards.is_empty() {
                    let forward = *u.choose(&forwards)?;
                    tab.listening.remove(&forward);
                    for (conn, id) in tab.table.forget_forward(forward) {
                        assert_eq!(conn, id);
                        tab.end(id);
                        tab.pumps.remove(&id);
                    }
                    tab.out.push_back(Frame::Unlisten { forward });
                }
                Ok(())
            }
            // A broken peer: an arbitrary connection frame on the wire.
            _ => {
                broken = true;
                let frame = arbitrary_frame(u, tab_side)?;
                let from = if tab_side { &mut relay } else { &mut tab };
                from.out.push_back(frame);
                Ok(())
            }
        };
        relay.check_bounded(window, growth);
        tab.check_bounded(window, growth);
        if let Err(err) = result {
            assert!(broken, "honest peers broke a rule: {err}");
            break; // the session ends
        }
    }
    // The session ends: whatever is still open ends now, and every id has ended once.
    for end in [&mut relay, &mut tab] {
        for (conn, id) in end.table.forget_all() {
            assert_eq!(conn, id);
            end.end(id);
        }
        for id in &end.opened {
            assert_eq!(end.ended.get(id), Some(&1), "connection {id} never ended");
        }
    }
    Ok(())
}

/// A connection frame a broken peer might send: ids near the live ones, any sizes.
fn arbitrary_frame(u: &mut Unstructured, to_tab: bool) -> Result<Frame> {
    let conn = u.int_in_range(1..=12u32)?;
    Ok(match u.int_in_range(0..=5u8)? {
        0 => {
            let len = u.int_in_range(0..=8192usize)?;
            Frame::Data {
                conn,
                data: Bytes::from(vec![0xa5; len]),
            }
        }
        1 => Frame::Credit {
            conn,
            bytes: u.arbitrary()?,
        },
        2 => Frame::Eof { conn },
        4 => Frame::Blocked { conn },
        3 => Frame::Close {
            conn,
            reason: if u.arbitrary()? {
                String::new()
            } else {
                "x".into()
            },
        },
        // Only the relay sends Accept.
        _ if to_tab => Frame::Accept {
            conn,
            forward: u.int_in_range(1..=4u32)?,
            peer: String::new(),
        },
        _ => Frame::Eof { conn },
    })
}
