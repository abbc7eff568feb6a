//! Every place a session takes in the relay, as RAII slots: dropping a slot frees its
//! place, so a session that ends in any way holds nothing.
//!
//! A WebSocket passes three gates, each counted here, and each TCP client of its forwards
//! a fourth:
//! 1. [`Admission::wait_for_hello`] at the upgrade: a small *waiting* place, per address
//!    (`limits.hellos_per_ip`) and in total (`limits.hellos`). It never refuses the
//!    newcomer: when an address (or the relay) is at its cap, the oldest waiting WebSocket
//!    of that address (or of the address with the most waiting) is closed to make room. A
//!    real tab sends its Hello within a round trip of opening, so the oldest is a silent
//!    one; refusing the newcomer instead would let a few silent sockets lock everyone on
//!    their address out.
//! 2. [`HelloSlot::admit`] after a valid Hello (and token): the session place, in total
//!    (`limits.sessions`), per address (`limits.sessions_per_ip`) and per token holder
//!    (`limits.sessions_per_user`).
//! 3. [`SessionPlace::start_login`] before the relay connects to the target's SSH server:
//!    a *login* place, per target (`limits.logins_per_target`), per address
//!    (`limits.logins_per_ip`) and per token holder (`limits.logins_per_user`). sshd counts
//!    connections that have not logged in against its `MaxStartups` and drops new ones at
//!    random beyond it; all of the relay's come from one address, so the relay keeps its
//!    own under it. The relay cannot see inside SSH: a session stops counting at its first
//!    Listen (the page and the client send one only after the SSH login succeeded, so it
//!    is progress) or when `login_grace` has passed (by then sshd has closed any connection
//!    that did not log in), or when the slot is dropped.
//! 4. [`admit_connection`] for each TCP client a forward accepts: allowed sources, and
//!    the caps on a forward's open and waiting connections.
//!
//! The address every limit is keyed on is one `IpAddr` the caller passes in.
//! Time is an argument (`now`), so the rules are tested without sockets or sleeps.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tabtunnel_proto::ErrorCode;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::{Config, Limits};

/// Refusal reason (the `reason` label in /metrics) of a WebSocket closed because it sent
/// no Hello while newer ones needed its waiting place.
pub const HELLOS: &str = "hellos";
/// Refusal reason of a session refused because too many sessions are logging in to its
/// target, from its address, or with its token.
pub const LOGINS_BUSY: &str = "logins-busy";
/// Refusal reason of a session over a session cap (the error code's name).
pub const SESSIONS: &str = "limit";

/// Why a place was refused: what the tab is told, and the /metrics reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// The counts behind every limit a session is held to. Cheap to share.
#[derive(Debug, Default)]
pub struct Admission {
    places: Mutex<Places>,
    /// Failed access-token checks by source, charged alike by a Hello and by
    /// `GET /api/targets`, so neither is a faster oracle than the other.
    token_checks: crate::token_check::TokenChecks,
}

#[derive(Debug, Default)]
struct Places {
    /// WebSockets waiting for their Hello, oldest first (ids only grow).
    waiting: BTreeMap<u64, Waiting>,
    waiting_by_ip: HashMap<IpAddr, usize>,
    sessions: usize,
    sessions_by_ip: HashMap<IpAddr, usize>,
    sessions_by_user: HashMap<String, usize>,
    /// Sessions logging in to a target's SSH server, by slot id.
    logins: HashMap<u64, Login>,
    next_id: u64,
}

#[derive(Debug)]
struct Waiting {
    ip: IpAddr,
    /// Told why, when the WebSocket must make room for a newer one.
    evict: oneshot::Sender<String>,
}

#[derive(Debug)]
struct Login {
    /// The target's SSH server address: two target names for one server share its count.
    server: String,
    ip: IpAddr,
    user: Option<String>,
    since: Instant,
}

fn add<K: Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) {
    *counts.entry(key).or_default() += 1;
}

fn remove<K: Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

fn count<K: Hash + Eq>(counts: &HashMap<K, usize>, key: &K) -> usize {
    counts.get(key).copied().unwrap_or(0)
}

impl Places {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Closes the oldest waiting WebSocket from `ip`, telling it `why`.
    fn evict_oldest_of(&mut self, ip: IpAddr, why: String) {
        let Some(id) = self
            .waiting
            .iter()
            .find(|(_, w)| w.ip == ip)
            .map(|(id, _)| *id)
        else {
            return;
        };
        if let Some(waiting) = self.waiting.remove(&id) {
            remove(&mut self.waiting_by_ip, &waiting.ip);
            tracing::debug!(%ip, "WebSocket without Hello closed to make room");
            let _ = waiting.evict.send(why);
        }
    }

    fn stop_waiting(&mut self, id: u64) {
        if let Some(waiting) = self.waiting.remove(&id) {
            remove(&mut self.waiting_by_ip, &waiting.ip);
        }
    }
}

impl Admission {
    fn places(&self) -> std::sync::MutexGuard<'_, Places> {
        self.places.lock().expect("admission lock")
    }

    /// The book of failed token checks (see `token_check`).
    pub fn token_checks(&self) -> &crate::token_check::TokenChecks {
        &self.token_checks
    }

    /// A waiting place for a WebSocket from `ip` that has not sent its Hello yet. Always
    /// granted: at a cap, an older waiting WebSocket is told why and closed instead (see
    /// the module doc).
    pub fn wait_for_hello(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> HelloSlot {
        let mut places = self.places();
        if count(&places.waiting_by_ip, &ip) >= limits.hellos_per_ip {
            places.evict_oldest_of(
                ip,
                format!(
                    "the relay closed this connection: it sent no Hello, and a newer connection from the same address ({ip}) needed its place (at most {} may wait for their Hello at once); reload the page to connect again",
                    limits.hellos_per_ip
                ),
            );
        }
        if places.waiting.len() >= limits.hellos {
            // The address with the most waiting pays: a flood from one address cannot
            // push out a lone tab elsewhere. Among equals, the one waiting longest, so a
            // flood from many addresses pushes out its own older sockets first.
            let most = places.waiting_by_ip.values().copied().max().unwrap_or(0);
            let heaviest = places
                .waiting
                .values()
                .map(|w| w.ip)
                .find(|ip| places.waiting_by_ip.get(ip) == Some(&most));
            if let Some(heaviest) = heaviest {
                places.evict_oldest_of(
                    heaviest,
                    format!(
                        "the relay closed this connection: it sent no Hello, and a newer connection needed its place (at most {} may wait for their Hello at once, and your address ({heaviest}) had the most waiting); reload the page to connect again",
                        limits.hellos
                    ),
                );
            }
        }
        let id = places.id();
        let (evict, evicted) = oneshot::channel();
        places.waiting.insert(id, Waiting { ip, evict });
        add(&mut places.waiting_by_ip, ip);
        HelloSlot {
            admission: self.clone(),
            id,
            ip,
            evicted,
        }
    }

    /// WebSockets waiting for their Hello now: in total and from `ip`.
    #[cfg(test)]
    fn waiting(&self, ip: IpAddr) -> (usize, usize) {
        let places = self.places();
        (places.waiting.len(), count(&places.waiting_by_ip, &ip))
    }

    /// Sessions open now: in total and from `ip`.
    #[cfg(test)]
    fn sessions(&self, ip: IpAddr) -> (usize, usize) {
        let places = self.places();
        (places.sessions, count(&places.sessions_by_ip, &ip))
    }
}

/// A WebSocket's waiting place until its Hello; dropping it frees the place.
#[derive(Debug)]
pub struct HelloSlot {
    admission: Arc<Admission>,
    id: u64,
    ip: IpAddr,
    evicted: oneshot::Receiver<String>,
}

impl HelloSlot {
    /// Resolves, with what to tell the tab, if a newer WebSocket took this one's place.
    pub async fn evicted(&mut self) -> String {
        match (&mut self.evicted).await {
            Ok(why) => why,
            // The sender lives as long as the place: never, while this slot holds it.
            Err(_) => std::future::pending().await,
        }
    }

    /// Checks the access token of this WebSocket's Hello against the same per-source
    /// budget as `GET /api/targets`.
    pub fn check_token<'c>(
        &self,
        config: &'c crate::config::Config,
        token: &str,
    ) -> crate::token_check::TokenCheck<'c> {
        self.admission.token_checks.check(config, self.ip, token)
    }

    /// The session place for a valid Hello from token holder `user` (`None` without
    /// tokens). Frees the waiting place either way.
    pub fn admit(self, user: Option<&str>, limits: &Limits) -> Result<SessionPlace, Refusal> {
        let mut places = self.admission.places();
        places.stop_waiting(self.id);
        let ip = self.ip;
        let refuse = |message| {
            Err(Refusal {
                reason: SESSIONS,
                message,
            })
        };
        if places.sessions >= limits.sessions {
            return refuse(format!(
                "this relay serves at most {} sessions at once and is full; try again later",
                limits.sessions
            ));
        }
        if count(&places.sessions_by_ip, &ip) >= limits.sessions_per_ip {
            return refuse(format!(
                "at most {} sessions may come from one address ({ip}); close another tab's session first",
                limits.sessions_per_ip
            ));
        }
        if let Some(user) = user
            && places.sessions_by_user.get(user).copied().unwrap_or(0) >= limits.sessions_per_user
        {
            return refuse(format!(
                "at most {} sessions may use one access token at once, and {user} has that many open; close another of your sessions first (the relay's operator sets this with limits.sessions_per_user)",
                limits.sessions_per_user
            ));
        }
        places.sessions += 1;
        add(&mut places.sessions_by_ip, ip);
        if let Some(user) = user {
            add(&mut places.sessions_by_user, user.to_owned());
        }
        drop(places);
        Ok(SessionPlace {
            admission: self.admission.clone(),
            ip,
            user: user.map(str::to_owned),
        })
    }
}

impl Drop for HelloSlot {
    fn drop(&mut self) {
        self.admission.places().stop_waiting(self.id);
    }
}

/// A session's place under the session caps; dropping it frees the place.
#[derive(Debug)]
pub struct SessionPlace {
    admission: Arc<Admission>,
    ip: IpAddr,
    user: Option<String>,
}

impl SessionPlace {
    /// A login place for this session at the SSH server `server` of target `target` (the
    /// name, for messages), counted as logging in from `now` until the slot is dropped or
    /// `grace` has passed.
    pub fn start_login(
        &self,
        target: &str,
        server: &str,
        limits: &Limits,
        grace: Duration,
        now: Instant,
    ) -> Result<LoginSlot, Refusal> {
        let mut places = self.admission.places();
        // Past their grace they count for nothing: forget them (their slots' drops then
        // find nothing to remove).
        places.logins.retain(|_, login| now < login.since + grace);
        let (mut to_server, mut from_ip, mut from_user) = (0, 0, 0);
        for login in places.logins.values() {
            to_server += usize::from(login.server == server);
            from_ip += usize::from(login.ip == self.ip);
            from_user += usize::from(self.user.is_some() && login.user == self.user);
        }
        let grace_text = humantime::format_duration(grace);
        let busy = |message| {
            Err(Refusal {
                reason: LOGINS_BUSY,
                message,
            })
        };
        if from_ip >= limits.logins_per_ip {
            return busy(format!(
                "logins from your address ({}) are busy: {from_ip} sessions from it are logging in now, as many as this relay lets one address (a session counts until it adds its first forward, for at most {grace_text}); finish one of those logins, or try again in a few seconds",
                self.ip
            ));
        }
        if let Some(user) = &self.user
            && from_user >= limits.logins_per_user
        {
            return busy(format!(
                "logins with the access token of {user} are busy: {from_user} of its sessions are logging in now, as many as this relay lets one token (a session counts until it adds its first forward, for at most {grace_text}); finish one of those logins, or try again in a few seconds"
            ));
        }
        if to_server >= limits.logins_per_target {
            return busy(format!(
                "logins to target {target:?} are busy: {to_server} sessions are logging in to its SSH server now, as many as this relay lets at once; try again in a few seconds"
            ));
        }
        let id = places.id();
        places.logins.insert(
            id,
            Login {
                server: server.to_owned(),
                ip: self.ip,
                user: self.user.clone(),
                since: now,
            },
        );
        Ok(LoginSlot {
            admission: self.admission.clone(),
            id,
        })
    }
}

impl Drop for SessionPlace {
    fn drop(&mut self) {
        let mut places = self.admission.places();
        places.sessions -= 1;
        remove(&mut places.sessions_by_ip, &self.ip);
        if let Some(user) = self.user.take() {
            remove(&mut places.sessions_by_user, &user);
        }
    }
}

/// A session's login place: held from connecting to the SSH server until its first
/// Listen. Dropping it frees the place; it also stops counting after the login grace.
#[derive(Debug)]
pub struct LoginSlot {
    admission: Arc<Admission>,
    id: u64,
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        self.admission.places().logins.remove(&self.id);
    }
}

/// Why a forward's new TCP client is closed at accept: what the tab's forward row is
/// told, with the code and the /metrics reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectionRefusal {
    pub code: ErrorCode,
    pub reason: &'static str,
    pub message: String,
}

/// The fourth gate, for each TCP client a forward accepts: its source must be one the
/// operator allows (`forward_allowed_sources`), the forward must have fewer than
/// `limits.connections_per_forward` connections `open`, and fewer than
/// `limits.pending_accepts_per_forward` of them `waiting` for the tab to open their SSH
/// channel (a tab that is slow to answer, behind a hung SSH server, must not collect
/// them without bound).
pub(crate) fn admit_connection(
    config: &Config,
    peer: SocketAddr,
    open: usize,
    waiting: usize,
) -> Result<(), ConnectionRefusal> {
    if !config.source_allowed(peer.ip()) {
        return Err(ConnectionRefusal {
            code: ErrorCode::SourceNotAllowed,
            reason: ErrorCode::SourceNotAllowed.as_str(),
            message: format!(
                "connection from {} refused: the relay accepts forwarded connections only from its operator's allowed sources (forward_allowed_sources)",
                peer.ip()
            ),
        });
    }
    let limits = &config.limits;
    if open >= limits.connections_per_forward {
        return Err(ConnectionRefusal {
            code: ErrorCode::Limit,
            reason: ErrorCode::Limit.as_str(),
            message: format!(
                "connection from {peer} refused: this forward has its maximum of {} open connections",
                limits.connections_per_forward
            ),
        });
    }
    if waiting >= limits.pending_accepts_per_forward {
        return Err(ConnectionRefusal {
            code: ErrorCode::Limit,
            reason: crate::metrics::PENDING_ACCEPTS,
            message: format!(
                "connection from {peer} refused: {waiting} connections of this forward are still waiting for the SSH server to open their channel; check that the SSH server can reach the destination, or try again shortly"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(130);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn limits() -> Limits {
        Limits {
            hellos: 5,
            hellos_per_ip: 2,
            sessions: 4,
            sessions_per_ip: 2,
            sessions_per_user: 2,
            logins_per_target: 3,
            logins_per_ip: 2,
            logins_per_user: 2,
            ..Limits::default()
        }
    }

    /// What the tab of `slot` was told if it was pushed out, without waiting.
    fn told(slot: &mut HelloSlot) -> Option<String> {
        slot.evicted.try_recv().ok()
    }

    #[test]
    fn the_oldest_waiting_socket_of_an_address_makes_room_for_a_newer_one() {
        let admission = Arc::new(Admission::default());
        let limits = limits();
        let mut first = admission.wait_for_hello(ip(1), &limits);
        let mut second = admission.wait_for_hello(ip(1), &limits);
        assert_eq!(admission.waiting(ip(1)), (2, 2));
        let mut third = admission.wait_for_hello(ip(1), &limits);
        assert_eq!(admission.waiting(ip(1)), (2, 2), "one place was freed");
        let why = told(&mut first).expect("the oldest is told");
        assert!(
            why.contains("sent no Hello")
                && why.contains("(127.0.0.1)")
                && why.contains("at most 2"),
            "{why}"
        );
        assert_eq!(told(&mut second), None);
        assert_eq!(told(&mut third), None);
        // Its place is gone already: dropping it frees nothing twice.
        drop(first);
        assert_eq!(admission.waiting(ip(1)), (2, 2));
        drop(second);
        assert_eq!(admission.waiting(ip(1)), (1, 1));
    }

    #[test]
    fn at_the_total_the_address_with_the_most_waiting_pays() {
        let admission = Arc::new(Admission::default());
        let limits = limits();
        let mut lone = admission.wait_for_hello(ip(9), &limits);
        let mut held: Vec<HelloSlot> = [1, 1, 2, 2]
            .into_iter()
            .map(|last| admission.wait_for_hello(ip(last), &limits))
            .collect();
        assert_eq!(admission.waiting(ip(9)).0, 5);
        let _newcomer = admission.wait_for_hello(ip(3), &limits);
        assert_eq!(admission.waiting(ip(9)), (5, 1));
        assert_eq!(told(&mut lone), None, "a lone waiting socket stays");
        let pushed: Vec<String> = held.iter_mut().filter_map(told).collect();
        assert_eq!(pushed.len(), 1, "{pushed:?}");
        assert!(pushed[0].contains("at most 5 may wait"), "{}", pushed[0]);
    }

    #[test]
    fn a_hello_frees_the_waiting_place_whether_or_not_it_is_admitted() {
        let admission = Arc::new(Admission::default());
        let limits = Limits {
            sessions_per_ip: 1,
            ..limits()
        };
        let place = admission
            .wait_for_hello(ip(1), &limits)
            .admit(None, &limits)
            .unwrap();
        assert_eq!(admission.waiting(ip(1)), (0, 0));
        assert_eq!(admission.sessions(ip(1)), (1, 1));
        let refused = admission
            .wait_for_hello(ip(1), &limits)
            .admit(None, &limits)
            .unwrap_err();
        assert_eq!(refused.reason, SESSIONS);
        assert!(
            refused
                .message
                .contains("at most 1 sessions may come from one address (127.0.0.1)"),
            "{refused}"
        );
        assert_eq!(admission.waiting(ip(1)), (0, 0));
        drop(place);
        assert_eq!(admission.sessions(ip(1)), (0, 0));
        admission
            .wait_for_hello(ip(1), &limits)
            .admit(None, &limits)
            .expect("the place came back");
    }

    #[test]
    fn sessions_are_capped_in_total_per_address_and_per_token_holder() {
        let admission = Arc::new(Admission::default());
        let limits = limits();
        let admit = |last, user| {
            admission
                .wait_for_hello(ip(last), &limits)
                .admit(user, &limits)
        };
        let alice = [
            admit(1, Some("alice")).unwrap(),
            admit(2, Some("alice")).unwrap(),
        ];
        let err = admit(3, Some("alice")).unwrap_err();
        assert!(
            err.message
                .contains("at most 2 sessions may use one access token")
                && err.message.contains("alice")
                && err.message.contains("limits.sessions_per_user"),
            "{err}"
        );
        let bob = admit(3, Some("bob")).unwrap();
        let anonymous = admit(4, None).unwrap();
        let err = admit(5, Some("carol")).unwrap_err();
        assert!(
            err.message
                .contains("serves at most 4 sessions at once and is full"),
            "{err}"
        );
        drop(alice);
        admit(3, Some("alice")).expect("alice's places came back");
        drop((bob, anonymous));
    }

    #[test]
    fn logins_are_capped_per_server_address_and_token_holder() {
        let admission = Arc::new(Admission::default());
        let limits = limits();
        let now = Instant::now();
        let place = |last, user| {
            admission
                .wait_for_hello(ip(last), &limits)
                .admit(
                    user,
                    &Limits {
                        sessions_per_ip: 9,
                        sessions_per_user: 9,
                        sessions: 99,
                        ..limits
                    },
                )
                .unwrap()
        };
        let a1 = place(1, None);
        let a2 = place(1, None);
        let login = |p: &SessionPlace, server| p.start_login("lab", server, &limits, GRACE, now);
        let _l1 = login(&a1, "ssh:22").unwrap();
        let _l2 = login(&a2, "ssh:22").unwrap();
        let a3 = place(1, None);
        let err = login(&a3, "other:22").unwrap_err();
        assert_eq!(err.reason, LOGINS_BUSY);
        assert!(
            err.message
                .contains("logins from your address (127.0.0.1) are busy")
                && err.message.contains("try again in a few seconds"),
            "{err}"
        );
        let b = place(2, Some("bob"));
        let _l3 = login(&b, "ssh:22").unwrap();
        let c = place(3, None);
        let err = login(&c, "ssh:22").unwrap_err();
        assert!(
            err.message
                .contains("logins to target \"lab\" are busy: 3 sessions")
                && err.message.contains("try again in a few seconds"),
            "{err}"
        );
        let _other_server = login(&c, "other:22").expect("another server has its own count");
        let b2 = place(4, Some("bob"));
        let _l4 = login(&b2, "third:22").unwrap();
        let b3 = place(5, Some("bob"));
        let err = login(&b3, "fourth:22").unwrap_err();
        assert!(
            err.message.contains("access token of bob are busy"),
            "{err}"
        );
    }

    #[test]
    fn a_login_stops_counting_when_dropped_or_after_its_grace() {
        let admission = Arc::new(Admission::default());
        let limits = Limits {
            logins_per_target: 1,
            ..limits()
        };
        let start = Instant::now();
        let first = admission
            .wait_for_hello(ip(1), &limits)
            .admit(None, &limits)
            .unwrap();
        let second = admission
            .wait_for_hello(ip(2), &limits)
            .admit(None, &limits)
            .unwrap();
        let login = |p: &SessionPlace, at| p.start_login("lab", "ssh:22", &limits, GRACE, at);
        let held = login(&first, start).unwrap();
        assert!(login(&second, start + GRACE - Duration::from_millis(1)).is_err());
        drop(held);
        let held = login(&second, start).expect("progress freed the place");
        assert!(login(&first, start + Duration::from_secs(1)).is_err());
        let late = login(&first, start + GRACE).expect("past its grace it counts no more");
        drop((held, late));
        assert!(admission.places().logins.is_empty());
    }

    #[test]
    fn a_forwards_client_is_admitted_by_source_then_open_then_waiting_connections() {
        let config = Config::from_toml(
            "forward_allowed_sources = [\"127.0.0.0/8\"]\n[limits]\nconnections_per_forward = 3\npending_accepts_per_forward = 2\n",
        )
        .unwrap();
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(admit_connection(&config, local, 2, 1), Ok(()));
        let refused = admit_connection(&config, other, 0, 0).unwrap_err();
        assert_eq!(refused.code, ErrorCode::SourceNotAllowed);
        assert!(refused.message.contains("forward_allowed_sources"));
        let refused = admit_connection(&config, local, 3, 0).unwrap_err();
        assert_eq!((refused.code, refused.reason), (ErrorCode::Limit, "limit"));
        assert!(refused.message.contains("maximum of 3 open connections"));
        let refused = admit_connection(&config, local, 2, 2).unwrap_err();
        assert_eq!(
            (refused.code, refused.reason),
            (ErrorCode::Limit, crate::metrics::PENDING_ACCEPTS)
        );
        assert!(refused.message.contains("still waiting for the SSH server"));
    }
}
