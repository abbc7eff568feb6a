//! The forward ports the relay itself holds: one book for the whole relay, shared by every
//! session. It knows without a system call what the kernel would say only after a
//! `bind()` per port (which ports the relay's own forwards hold, and when the range is
//! full), and it keeps the caps on forwards in total, per source address and per token
//! holder. No sockets here: `listen` takes a [`Lease`] before each bind, and the lease
//! gives its entry back when it is dropped with the forward.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use tabtunnel_proto::ErrorCode;

use crate::config::{Config, Limits};

/// Why a Listen was refused, by the book or by the bind; both parts travel to the tab
/// in ListenFailed.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// How many ports one `Listen{port 0}` may try to bind: ports the book does not hold but
/// other programs on the host do cost a `bind()` each, so the search stops here.
pub const PORT_ZERO_ATTEMPTS: usize = 24;

/// Refused Listens a session may send in a burst before the relay ends it.
pub const REFUSED_LISTEN_BURST: u32 = 20;
/// Refused Listens a session earns back per second after its burst.
pub const REFUSED_LISTENS_PER_SEC: u32 = 2;

/// Every forward port the relay holds, with the counts its caps are checked against.
#[derive(Debug, Default)]
pub struct PortBook {
    held: Mutex<Held>,
    /// `bind()` calls made for forwards, for `/metrics` (`tabtunnel_forward_binds_total`).
    binds: Counter,
}

#[derive(Debug, Default)]
struct Held {
    /// The forwards listening on each port (usually one; several only on addresses that
    /// do not clash, such as 127.0.0.1 and 127.0.0.2).
    ports: HashMap<u16, Vec<Holding>>,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_user: HashMap<String, usize>,
    next_id: u64,
}

#[derive(Debug)]
struct Holding {
    id: u64,
    session: u64,
    addrs: Vec<IpAddr>,
}

/// Who asks for ports: one session, from one source address, maybe a token holder.
#[derive(Debug, Clone)]
pub struct Holder {
    pub book: Arc<PortBook>,
    pub session: u64,
    /// The address the per-address cap is counted on.
    pub ip: IpAddr,
}

/// One forward's entry in the book; dropping it frees the port and the forward's place
/// under the caps.
#[derive(Debug)]
pub struct Lease {
    book: Arc<PortBook>,
    id: u64,
    port: u16,
    ip: IpAddr,
    user: Option<String>,
}

impl Lease {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Hands the forward to session `session` (a session that resumed the one that
    /// opened it), so the book names the port as that session's own.
    pub fn hand_to(&self, session: u64) {
        let mut held = self.book.held.lock().expect("book lock");
        for holding in held.ports.get_mut(&self.port).into_iter().flatten() {
            if holding.id == self.id {
                holding.session = session;
            }
        }
    }
}

/// What one Listen asks for, after the policy checks.
#[derive(Debug)]
pub struct Want<'a> {
    /// Addresses to listen on: both loopback families for `localhost`.
    pub addrs: &'a [IpAddr],
    /// The token holder, when the relay has tokens.
    pub user: Option<&'a str>,
    /// Where `port 0` picks: the forward range, or the holder's block of it.
    pub range: RangeInclusive<u16>,
    /// Whether `range` is the holder's own block (for the messages).
    pub block: bool,
}

impl PortBook {
    pub fn new(binds: Counter) -> Self {
        Self {
            held: Mutex::default(),
            binds,
        }
    }

    /// Counts one `bind()` call made for a forward.
    pub fn count_bind(&self) {
        self.binds.inc();
    }

    /// `bind()` calls made for forwards so far.
    pub fn binds(&self) -> u64 {
        self.binds.get()
    }

    /// Forwards open now, in total.
    pub fn open(&self) -> usize {
        self.held.lock().expect("book lock").total
    }
}

impl Holder {
    /// Takes `port` (not 0) on `want.addrs` for this holder, or says why not: a cap is
    /// reached, or a forward of the relay already listens there (this session's, named;
    /// another's, only "in use").
    pub fn lease(&self, want: &Want<'_>, port: u16, limits: &Limits) -> Result<Lease, Refusal> {
        let mut held = self.book.held.lock().expect("book lock");
        self.check_caps(&held, want.user, limits)?;
        for holding in held.ports.get(&port).into_iter().flatten() {
            let Some((mine, theirs)) = want.addrs.iter().find_map(|a| {
                holding
                    .addrs
                    .iter()
                    .find(|b| clash(*a, **b))
                    .map(|b| (a, b))
            }) else {
                continue;
            };
            return Err(if holding.session == self.session {
                Refusal {
                    code: ErrorCode::DuplicateForward,
                    message: format!(
                        "this session already forwards {}; remove that forward first, or pick another port (0 for any free one)",
                        std::net::SocketAddr::new(*theirs, port)
                    ),
                }
            } else {
                let (lo, hi) = (want.range.start(), want.range.end());
                Refusal {
                    code: ErrorCode::PortInUse,
                    message: format!(
                        "port {port} on {mine} is already in use on the relay host; pick another port in {lo}-{hi}, or 0 for any free one"
                    ),
                }
            });
        }
        Ok(self.insert(&mut held, want, port))
    }

    /// Takes a port of `want.range` that the book does not hold and that is not in
    /// `tried` (ports other programs hold), picked at random so that sessions do not race
    /// for the same ones; refuses at once, without a bind, when the range is full.
    pub fn lease_any(
        &self,
        want: &Want<'_>,
        tried: &[u16],
        limits: &Limits,
    ) -> Result<Lease, Refusal> {
        let mut held = self.book.held.lock().expect("book lock");
        self.check_caps(&held, want.user, limits)?;
        let (lo, hi) = (*want.range.start(), *want.range.end());
        let span = u32::from(hi - lo) + 1;
        let taken = held.ports.keys().filter(|p| want.range.contains(p)).count();
        let full = || {
            Err(Refusal {
                code: ErrorCode::PortInUse,
                message: if want.block {
                    format!(
                        "every port of your block {lo}-{hi} of this relay's forward ports is in use by your forwards; close one first"
                    )
                } else {
                    format!(
                        "every port in this relay's forward range {lo}-{hi} is in use; close a forward, or ask the relay's operator for a wider range"
                    )
                },
            })
        };
        if taken as u32 >= span {
            return full();
        }
        if !tried.is_empty() && (taken + tried.len()) as u32 >= span {
            return Err(busy(lo, hi, tried.len()));
        }
        let start = random_u32() % span;
        let free = (0..span)
            .map(|i| lo + ((start + i) % span) as u16)
            .find(|p| !held.ports.contains_key(p) && !tried.contains(p));
        match free {
            Some(port) => Ok(self.insert(&mut held, want, port)),
            None => Err(busy(lo, hi, tried.len())),
        }
    }

    fn check_caps(&self, held: &Held, user: Option<&str>, limits: &Limits) -> Result<(), Refusal> {
        let limit = |message: String| {
            Err(Refusal {
                code: ErrorCode::Limit,
                message,
            })
        };
        if let Some(user) = user
            && held.per_user.get(user).copied().unwrap_or(0) >= limits.forwards_per_user
        {
            return limit(format!(
                "at most {} forwards may be open at once for one token holder ({user}) (limits.forwards_per_user); close forwards in your other tabs first",
                limits.forwards_per_user
            ));
        }
        if held.per_ip.get(&self.ip).copied().unwrap_or(0) >= limits.forwards_per_ip {
            return limit(format!(
                "at most {} forwards may be open at once from one address ({}) (limits.forwards_per_ip); close forwards in your other tabs first",
                limits.forwards_per_ip, self.ip
            ));
        }
        if held.total >= limits.forwards {
            return limit(format!(
                "this relay has its maximum of {} forwards open, for all its users together (limits.forwards); try again when others have closed theirs, or ask the relay's operator",
                limits.forwards
            ));
        }
        Ok(())
    }

    fn insert(&self, held: &mut Held, want: &Want<'_>, port: u16) -> Lease {
        let id = held.next_id;
        held.next_id += 1;
        held.ports.entry(port).or_default().push(Holding {
            id,
            session: self.session,
            addrs: want.addrs.to_vec(),
        });
        held.total += 1;
        *held.per_ip.entry(self.ip).or_default() += 1;
        if let Some(user) = want.user {
            *held.per_user.entry(user.to_owned()).or_default() += 1;
        }
        Lease {
            book: self.book.clone(),
            id,
            port,
            ip: self.ip,
            user: want.user.map(str::to_owned),
        }
    }
}

/// Port 0 found no port after `tries` binds: other programs hold them.
pub(crate) fn busy(lo: u16, hi: u16, tries: usize) -> Refusal {
    Refusal {
        code: ErrorCode::PortInUse,
        message: format!(
            "no free port found in {lo}-{hi} after {tries} tries: other programs on the relay host hold many of these ports; try again, or ask the relay's operator for a wider range"
        ),
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut held = self.book.held.lock().expect("book lock");
        if let Some(list) = held.ports.get_mut(&self.port) {
            list.retain(|h| h.id != self.id);
            if list.is_empty() {
                held.ports.remove(&self.port);
            }
        }
        held.total -= 1;
        decrement(&mut held.per_ip, &self.ip);
        if let Some(user) = &self.user {
            decrement(&mut held.per_user, user);
        }
    }
}

fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Whether listeners on `a` and `b` (same port) would take each other's clients: the same
/// address, a wildcard, or the two loopback families, which a client of `localhost` may
/// try in either order.
fn clash(a: IpAddr, b: IpAddr) -> bool {
    let localhost =
        |ip: IpAddr| ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST);
    a == b || a.is_unspecified() || b.is_unspecified() || (localhost(a) && localhost(b))
}

/// The block of the forward range that belongs to token holder `user` when
/// `forward_ports_per_user` is set: blocks follow the token file's order.
pub fn block_of(config: &Config, user: Option<&str>) -> Option<RangeInclusive<u16>> {
    let size = config.forward_ports_per_user?;
    let index = config
        .tokens
        .iter()
        .position(|t| Some(t.name.as_str()) == user)?;
    let lo = u32::from(*config.forward_ports.start()) + index as u32 * u32::from(size);
    let hi = lo + u32::from(size) - 1;
    Some(u16::try_from(lo).ok()?..=u16::try_from(hi).ok()?)
}

/// Start-up notes on how the forward caps fit the range, for the operator's log.
pub fn sizing_warnings(config: &Config) -> Vec<String> {
    let span = usize::from(config.forward_ports.end() - config.forward_ports.start()) + 1;
    let mut notes = Vec::new();
    if config.forward_ports_per_user.is_none() && config.limits.forwards > span {
        notes.push(format!(
            "limits.forwards is {} but forward_ports has only {span} ports: the range is the real cap on forwards in total",
            config.limits.forwards
        ));
    }
    notes
}

/// A per-session token bucket for refused Listens: each costs a token, tokens come back
/// at a steady rate, and a session that runs out is ended. A page never needs more than a
/// few refusals in a row; a script trying ports (or costing the relay a bind each time)
/// does.
#[derive(Debug)]
pub struct RefusalBudget(crate::rate::TokenBucket);

impl Default for RefusalBudget {
    fn default() -> Self {
        Self::new(tokio::time::Instant::now())
    }
}

impl RefusalBudget {
    fn new(now: tokio::time::Instant) -> Self {
        Self(crate::rate::TokenBucket::new(
            f64::from(REFUSED_LISTEN_BURST),
            f64::from(REFUSED_LISTENS_PER_SEC),
            now.into_std(),
        ))
    }

    /// Spends a token for one refused Listen at `now`; `false` when none is left.
    pub fn spend(&mut self, now: tokio::time::Instant) -> bool {
        self.0.take(now.into_std())
    }
}

pub(crate) fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
    const LOCALHOST: [IpAddr; 2] = [V4, V6];

    fn holder(book: &Arc<PortBook>, session: u64, ip: &str) -> Holder {
        Holder {
            book: book.clone(),
            session,
            ip: ip.parse().unwrap(),
        }
    }

    fn want(range: RangeInclusive<u16>, addrs: &[IpAddr]) -> Want<'_> {
        Want {
            addrs,
            user: None,
            range,
            block: false,
        }
    }

    fn roomy() -> Limits {
        Limits {
            forwards: 1000,
            forwards_per_ip: 1000,
            forwards_per_user: 1000,
            ..Limits::default()
        }
    }

    #[test]
    fn port_zero_picks_unheld_ports_and_knows_a_full_range() {
        let book = Arc::new(PortBook::default());
        let a = holder(&book, 1, "10.0.0.1");
        let w = want(100..=103, &LOCALHOST);
        let mut leases: Vec<_> = (0..4)
            .map(|_| a.lease_any(&w, &[], &roomy()).unwrap())
            .collect();
        let mut ports: Vec<_> = leases.iter().map(Lease::port).collect();
        ports.sort();
        assert_eq!(ports, vec![100, 101, 102, 103]);
        let err = a.lease_any(&w, &[], &roomy()).unwrap_err();
        assert_eq!(err.code, ErrorCode::PortInUse);
        assert!(err.message.contains("every port"), "{}", err.message);
        // A forward that ends gives its port back.
        let freed = leases[2].port();
        drop(leases.remove(2));
        assert_eq!(a.lease_any(&w, &[], &roomy()).unwrap().port(), freed);
        assert_eq!(book.binds(), 0, "the book never binds");
    }

    #[test]
    fn ports_other_programs_hold_are_skipped_then_the_search_stops() {
        let book = Arc::new(PortBook::default());
        let a = holder(&book, 1, "10.0.0.1");
        let w = want(100..=102, &LOCALHOST);
        let lease = a.lease_any(&w, &[100, 102], &roomy()).unwrap();
        assert_eq!(lease.port(), 101);
        let err = a.lease_any(&w, &[100, 102], &roomy()).unwrap_err();
        assert!(err.message.contains("after 2 tries"), "{}", err.message);
    }

    #[test]
    fn a_held_port_names_this_session_or_only_says_in_use() {
        let book = Arc::new(PortBook::default());
        let (a, b) = (holder(&book, 1, "10.0.0.1"), holder(&book, 2, "10.0.0.2"));
        let range = 100..=199;
        let _held = a
            .lease(&want(range.clone(), &LOCALHOST), 150, &roomy())
            .unwrap();
        let err = a
            .lease(&want(range.clone(), &[V4]), 150, &roomy())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::DuplicateForward);
        assert!(
            err.message
                .contains("this session already forwards 127.0.0.1:150"),
            "{}",
            err.message
        );
        // Another session: IPv6 loopback of a localhost forward is taken too.
        let err = b
            .lease(&want(range.clone(), &[V6]), 150, &roomy())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PortInUse);
        assert!(
            err.message.contains("port 150 on ::1 is already in use")
                && !err.message.contains("session"),
            "{}",
            err.message
        );
        // So is the wildcard; another loopback address of the same port is not.
        let any: [IpAddr; 1] = ["0.0.0.0".parse().unwrap()];
        assert!(b.lease(&want(range.clone(), &any), 150, &roomy()).is_err());
        let other: [IpAddr; 1] = ["127.0.0.2".parse().unwrap()];
        b.lease(&want(range, &other), 150, &roomy()).unwrap();
    }

    #[test]
    fn caps_count_in_total_per_address_and_per_holder_and_come_back() {
        let book = Arc::new(PortBook::default());
        let limits = Limits {
            forwards: 4,
            forwards_per_ip: 2,
            forwards_per_user: 2,
            ..Limits::default()
        };
        let w = |user| Want {
            user,
            ..want(100..=199, &LOCALHOST)
        };
        let a = holder(&book, 1, "10.0.0.1");
        let a2 = holder(&book, 2, "10.0.0.1");
        let first = a.lease_any(&w(None), &[], &limits).unwrap();
        let _second = a2.lease_any(&w(None), &[], &limits).unwrap();
        let err = a.lease_any(&w(None), &[], &limits).unwrap_err();
        assert_eq!(err.code, ErrorCode::Limit);
        assert!(
            err.message.contains("limits.forwards_per_ip"),
            "{}",
            err.message
        );
        drop(first);
        let _again = a.lease_any(&w(None), &[], &limits).unwrap();

        let b = holder(&book, 3, "10.0.0.2");
        let c = holder(&book, 4, "10.0.0.3");
        let _alice = b.lease_any(&w(Some("alice")), &[], &limits).unwrap();
        // A port other than the one port 0 picked at random.
        let port = if _alice.port() == 120 { 121 } else { 120 };
        let _alice2 = b.lease(&w(Some("alice")), port, &limits).unwrap();
        let err = c.lease_any(&w(Some("alice")), &[], &limits).unwrap_err();
        assert!(
            err.message.contains("limits.forwards_per_user"),
            "{}",
            err.message
        );
        assert!(err.message.contains("(alice)"), "{}", err.message);
        let err = c.lease_any(&w(Some("bob")), &[], &limits).unwrap_err();
        assert!(err.message.contains("limits.forwards)"), "{}", err.message);
        assert_eq!(book.open(), 4);
    }

    #[test]
    fn blocks_follow_the_token_file_order() {
        let mut config = Config {
            forward_ports: 20000..=20099,
            forward_ports_per_user: Some(20),
            ..Config::default()
        };
        for name in ["alice", "bob"] {
            config.tokens.push(crate::config::AccessToken {
                name: name.into(),
                secret: format!("{name}-0123456789abcdef"),
            });
        }
        assert_eq!(block_of(&config, Some("alice")), Some(20000..=20019));
        assert_eq!(block_of(&config, Some("bob")), Some(20020..=20039));
        assert_eq!(block_of(&config, None), None);
        config.forward_ports_per_user = None;
        assert_eq!(block_of(&config, Some("bob")), None);
    }

    #[test]
    fn refused_listens_have_a_burst_then_a_rate() {
        let start = tokio::time::Instant::now();
        let mut budget = RefusalBudget::new(start);
        for _ in 0..REFUSED_LISTEN_BURST {
            assert!(budget.spend(start));
        }
        assert!(!budget.spend(start));
        let later = start + std::time::Duration::from_secs(1);
        for _ in 0..REFUSED_LISTENS_PER_SEC {
            assert!(budget.spend(later));
        }
        assert!(!budget.spend(later));
    }

    #[test]
    fn a_forward_cap_beyond_the_range_is_noted() {
        let config = Config {
            forward_ports: 20000..=20099,
            ..Config::default()
        };
        let notes = sizing_warnings(&config);
        assert!(notes[0].contains("only 100 ports"), "{notes:?}");
        assert!(sizing_warnings(&Config::default()).is_empty());
    }
}
