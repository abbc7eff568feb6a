//! Lost sessions' forwards, held for their tab to come back: one registry for the relay.
//!
//! A session that ends abnormally (its WebSocket dropped or went silent, its SSH server's
//! connection ended) parks its forwards here under the SHA-256 of the resume secret its
//! Welcome gave the tab, for `resume_grace`. A parked forward keeps its listening sockets
//! and its lease in the book of ports, so nobody else can take its port and it keeps
//! counting toward every forward cap; nobody accepts on it, so new TCP clients wait in the
//! kernel's listen backlog. A Hello with the secret, from the same token holder for the
//! same target, takes the forwards back, once; what nobody takes within the grace is
//! freed. The registry keeps no secret, only its hash.
//!
//! A tab may come back before the relay noticed its loss (a network that went silent
//! rather than closed): each live session is registered under its hash too, and a Hello
//! with its secret ends it as lost (so it parks) and then takes its forwards.
//!
//! Bounds: every parked session holds at least one forward, whose lease counts under
//! the forward caps (per address, per token holder, in all), so those caps bound the
//! registry; besides, one token holder keeps at most [`MAX_PARKED_PER_HOLDER`] parked
//! sessions from one address (a newer one frees its oldest), and never frees another
//! holder's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tabtunnel_proto::{RESUME_SECRET_LEN, ResumeSecret};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::values::BindAddr;
use crate::metrics::{GaugeGuard, Metrics};
use crate::ports::Lease;

/// Parked sessions one token holder may have from one source address (on a relay
/// without tokens: one address). A tab parks one session per loss and takes it back on
/// its next Hello, so a handful covers several tabs that lost their network together.
/// Other holders' parked sessions never give way to these.
pub const MAX_PARKED_PER_HOLDER: usize = 8;

/// One forward of a lost session: its sockets, its place in the book of ports and under
/// the caps, and what a Listen must ask for to take it back.
#[derive(Debug)]
pub struct ParkedForward {
    /// The bind address the tab asked for.
    pub bind: BindAddr,
    /// The port it listens on (the one the relay picked, for a Listen of port 0).
    pub port: u16,
    pub listeners: Arc<[TcpListener]>,
    pub lease: Lease,
    /// Its unit of `forwards_active`: a parked forward is still open.
    pub active: GaugeGuard,
    /// Its entry among the web forwards, if it had one: kept, so that the forward keeps
    /// its URL (and the cookie its browser holds) when its tab comes back. Requests while
    /// it is parked fail, as its old session is gone.
    pub web: Option<crate::web_forward::Registration>,
}

/// Who may take a parked session back: the token holder (when the relay has tokens) and
/// the target it reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    pub user: Option<String>,
    pub target: String,
}

/// The SHA-256 of a resume secret: what the registry keeps instead of the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl SecretHash {
    pub fn of(secret: &ResumeSecret) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, &secret.0);
        let mut hash = [0; 32];
        hash.copy_from_slice(digest.as_ref());
        Self(hash)
    }
}

/// A fresh secret: 256 bits from the system's randomness.
pub fn new_secret() -> ResumeSecret {
    use ring::rand::SecureRandom;
    let mut secret = [0; RESUME_SECRET_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .expect("the system's randomness is available");
    ResumeSecret(secret)
}

/// How long a Hello waits for a live session it took over to park its forwards.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// A live session's place in the registry, so that its tab, coming back on another
/// connection before the relay noticed the loss, can take it over. Dropped with the
/// session.
pub struct LiveSession {
    parking: Arc<Parking>,
    hash: SecretHash,
    taken_over: CancellationToken,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession").finish_non_exhaustive()
    }
}

impl LiveSession {
    /// Resolves when a Hello with this session's secret took it over: the session must
    /// then end as lost (and park its forwards).
    pub fn taken_over(&self) -> CancellationToken {
        self.taken_over.clone()
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.parking
            .live
            .lock()
            .expect("parking lock")
            .remove(&self.hash);
        // A takeover may wait for this session to end, parked or not.
        self.parking.parked.notify_waiters();
    }
}

struct Live {
    claimant: Claimant,
    taken_over: CancellationToken,
}

/// What `/metrics` counts of the registry.
#[derive(Debug, Clone)]
struct Counts {
    parked: Counter,
    resumed: Counter,
    expired: Counter,
    held: Gauge,
}

struct Entry {
    claimant: Claimant,
    source: IpAddr,
    until: Instant,
    forwards: Vec<ParkedForward>,
    /// The task that frees the entry at `until`; aborted when the entry goes earlier.
    timer: Option<AbortHandle>,
    _held: GaugeGuard,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(timer) = &self.timer {
            timer.abort();
        }
    }
}

/// The relay's parked sessions.
pub struct Parking {
    grace: Duration,
    entries: Mutex<HashMap<SecretHash, Entry>>,
    /// Live sessions that would park, by hash; bounded by the session caps.
    live: Mutex<HashMap<SecretHash, Live>>,
    /// Woken whenever a session parks (a takeover waits for that).
    parked: Notify,
    counts: Counts,
    /// Itself, for the expiry timers (which must not keep the registry alive).
    this: Weak<Parking>,
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking")
            .field("grace", &self.grace)
            .field("parked", &self.len())
            .finish_non_exhaustive()
    }
}

impl Parking {
    /// A registry that holds lost sessions for `grace` (zero: never).
    pub fn new(grace: Duration, metrics: &Metrics) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            grace,
            entries: Mutex::default(),
            live: Mutex::default(),
            parked: Notify::new(),
            counts: Counts {
                parked: metrics.sessions_parked.clone(),
                resumed: metrics.sessions_resumed.clone(),
                expired: metrics.parked_expired.clone(),
                held: metrics.sessions_parked_now.clone(),
            },
            this: this.clone(),
        })
    }

    /// Whether sessions are parked at all: the Welcome carries a secret only then.
    pub fn enabled(&self) -> bool {
        !self.grace.is_zero()
    }

    /// How long a parked session waits, and how long a resumed one has to claim its
    /// forwards.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Parked sessions now.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("parking lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks a lost session's forwards under `hash` until the grace runs out. Nothing is
    /// parked when parking is off or there is no forward: the forwards are freed now.
    pub fn park(
        &self,
        hash: SecretHash,
        claimant: Claimant,
        source: IpAddr,
        forwards: Vec<ParkedForward>,
    ) {
        self.hold(hash, claimant, source, forwards);
        // A takeover may wait for this session, with or without forwards.
        self.parked.notify_waiters();
    }

    fn hold(
        &self,
        hash: SecretHash,
        claimant: Claimant,
        source: IpAddr,
        forwards: Vec<ParkedForward>,
    ) {
        if !self.enabled() || forwards.is_empty() {
            return;
        }
        let until = Instant::now() + self.grace;
        let mut entries = self.entries.lock().expect("parking lock");
        // The holder's own oldest parked session from this address gives way to its
        // newest; never another holder's (users behind one NAT share an address), whose
        // parked forwards the forward caps bound.
        let same = |e: &Entry| e.source == source && e.claimant.user == claimant.user;
        while entries.values().filter(|e| same(e)).count() >= MAX_PARKED_PER_HOLDER {
            let oldest = entries
                .iter()
                .filter(|(_, e)| same(e))
                .min_by_key(|(_, e)| e.until)
                .map(|(hash, _)| *hash);
            let Some(oldest) = oldest else { break };
            entries.remove(&oldest);
            self.counts.expired.inc();
        }
        let this = self.this.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            if let Some(parking) = this.upgrade() {
                parking.expire(hash, until);
            }
        })
        .abort_handle();
        entries.insert(
            hash,
            Entry {
                claimant,
                source,
                until,
                forwards,
                timer: Some(timer),
                _held: GaugeGuard::new(&self.counts.held),
            },
        );
        self.counts.parked.inc();
    }

    /// Registers a live session under `hash`, for its tab to take over if it comes back
    /// on another connection.
    pub fn live(self: &Arc<Self>, hash: SecretHash, claimant: Claimant) -> LiveSession {
        let taken_over = CancellationToken::new();
        self.live.lock().expect("parking lock").insert(
            hash,
            Live {
                claimant,
                taken_over: taken_over.clone(),
            },
        );
        LiveSession {
            parking: self.clone(),
            hash,
            taken_over,
        }
    }

    /// Ends the live session `secret` names, if it is `claimant`'s, as lost (its tab is
    /// evidently not on that connection any more), and waits until it has ended (at most
    /// a few seconds), parking its forwards. The tab's Hello does this before it takes
    /// its places, which the old session may be holding.
    pub async fn end_live(&self, secret: &ResumeSecret, claimant: &Claimant) {
        let hash = SecretHash::of(secret);
        let deadline = Instant::now() + TAKEOVER_WAIT;
        loop {
            // Registered before looking, so that an end in between is not missed.
            let ended = self.parked.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            {
                let live = self.live.lock().expect("parking lock");
                let Some(session) = live.get(&hash) else {
                    return;
                };
                if session.claimant != *claimant {
                    return;
                }
                session.taken_over.cancel();
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return;
            }
        }
    }

    /// [`Parking::resume`], also for a session that is still live (see
    /// [`Parking::end_live`]).
    pub async fn take_over(
        &self,
        secret: &ResumeSecret,
        claimant: &Claimant,
    ) -> Option<Vec<ParkedForward>> {
        self.end_live(secret, claimant).await;
        self.resume(secret, claimant)
    }

    /// Takes the forwards parked under `secret`, if it is known, unexpired and
    /// `claimant`'s; each secret works once. `None` is a fresh session.
    pub fn resume(&self, secret: &ResumeSecret, claimant: &Claimant) -> Option<Vec<ParkedForward>> {
        let hash = SecretHash::of(secret);
        let mut entries = self.entries.lock().expect("parking lock");
        let entry = entries.get(&hash)?;
        if entry.claimant != *claimant || entry.until <= Instant::now() {
            return None;
        }
        let mut entry = entries.remove(&hash)?;
        self.counts.resumed.inc();
        Some(std::mem::take(&mut entry.forwards))
    }

    /// Frees what was parked under `hash` at `until`, if nobody took it meanwhile.
    fn expire(&self, hash: SecretHash, until: Instant) {
        let mut entries = self.entries.lock().expect("parking lock");
        if entries.get(&hash).is_some_and(|e| e.until == until) {
            let mut entry = entries.remove(&hash).expect("present");
            entry.timer = None; // this very task: it ends by itself
            self.counts.expired.inc();
        }
    }

    /// Counts forwards a resumed session left unclaimed until its grace ran out.
    pub fn count_unclaimed(&self) {
        self.counts.expired.inc();
    }

    /// Frees everything: the relay is shutting down.
    pub fn clear(&self) {
        let entries = std::mem::take(&mut *self.entries.lock().expect("parking lock"));
        drop(entries);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::config::Config;
    use crate::ports::{Holder, PortBook, Want};

    const GRACE: Duration = Duration::from_secs(60);

    struct Fixture {
        book: Arc<PortBook>,
        metrics: Metrics,
        parking: Arc<Parking>,
    }

    fn fixture(grace: Duration) -> Fixture {
        let metrics = Metrics::default();
        Fixture {
            book: Arc::new(PortBook::new(metrics.forward_binds.clone())),
            parking: Parking::new(grace, &metrics),
            metrics,
        }
    }

    fn claimant(user: &str) -> Claimant {
        Claimant {
            user: Some(user.into()),
            target: "lab".into(),
        }
    }

    const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    impl Fixture {
        /// A forward on `port` as session `session` holds it, without sockets: the
        /// registry never touches them.
        fn forward(&self, session: u64, port: u16, user: &str, source: IpAddr) -> ParkedForward {
            let holder = Holder {
                book: self.book.clone(),
                session,
                ip: source,
            };
            let addrs = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
            let want = Want {
                addrs: &addrs,
                user: Some(user),
                range: 1024..=65535,
                block: false,
            };
            let lease = holder
                .lease(&want, port, &Config::default().limits)
                .expect("port free in the book");
            ParkedForward {
                bind: BindAddr::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                port,
                listeners: Arc::new([]),
                lease,
                active: GaugeGuard::new(&self.metrics.forwards_active),
                web: None,
            }
        }

        /// Whether another session could take `port` now.
        fn port_free(&self, port: u16) -> bool {
            let holder = Holder {
                book: self.book.clone(),
                session: 999,
                ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
            };
            let addrs = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
            let want = Want {
                addrs: &addrs,
                user: None,
                range: 1024..=65535,
                block: false,
            };
            holder.lease(&want, port, &Config::default().limits).is_ok()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_session_holds_its_ports_until_resumed_once() {
        let f = fixture(GRACE);
        let secret = new_secret();
        f.parking.park(
            SecretHash::of(&secret),
            claimant("alice"),
            SOURCE,
            vec![f.forward(1, 40001, "alice", SOURCE)],
        );
        assert!(!f.port_free(40001), "parked: nobody else takes the port");
        assert_eq!(f.metrics.forwards_active.get(), 1, "still counted as open");
        assert_eq!(f.book.open(), 1, "still counted under the caps");
        // Another holder, another target, another secret: nothing.
        assert!(f.parking.resume(&secret, &claimant("bob")).is_none());
        let elsewhere = Claimant {
            target: "other".into(),
            ..claimant("alice")
        };
        assert!(f.parking.resume(&secret, &elsewhere).is_none());
        assert!(
            f.parking
                .resume(&new_secret(), &claimant("alice"))
                .is_none()
        );
        // The owner, once.
        let forwards = f
            .parking
            .resume(&secret, &claimant("alice"))
            .expect("resumed");
        assert_eq!(forwards.len(), 1);
        assert_eq!(forwards[0].port, 40001);
        assert!(f.parking.resume(&secret, &claimant("alice")).is_none());
        assert!(!f.port_free(40001), "the resumed session holds it");
        drop(forwards);
        assert!(f.port_free(40001));
        assert_eq!(f.metrics.sessions_parked.get(), 1);
        assert_eq!(f.metrics.sessions_resumed.get(), 1);
        assert_eq!(f.metrics.parked_expired.get(), 0);
        assert_eq!(f.metrics.sessions_parked_now.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_grace_running_out_frees_the_ports() {
        let f = fixture(GRACE);
        let secret = new_secret();
        f.parking.park(
            SecretHash::of(&secret),
            claimant("alice"),
            SOURCE,
            vec![f.forward(1, 40002, "alice", SOURCE)],
        );
        tokio::time::sleep(GRACE - Duration::from_secs(1)).await;
        assert!(!f.port_free(40002));
        assert_eq!(f.metrics.sessions_parked_now.get(), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(f.port_free(40002), "freed after the grace");
        assert!(f.parking.is_empty());
        assert!(f.parking.resume(&secret, &claimant("alice")).is_none());
        assert_eq!(f.metrics.parked_expired.get(), 1);
        assert_eq!(f.metrics.forwards_active.get(), 0);
        assert_eq!(f.metrics.sessions_parked_now.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn parking_off_or_nothing_to_park_frees_at_once() {
        let f = fixture(Duration::ZERO);
        assert!(!f.parking.enabled());
        f.parking.park(
            SecretHash::of(&new_secret()),
            claimant("alice"),
            SOURCE,
            vec![f.forward(1, 40003, "alice", SOURCE)],
        );
        assert!(f.port_free(40003));
        let f = fixture(GRACE);
        f.parking.park(
            SecretHash::of(&new_secret()),
            claimant("alice"),
            SOURCE,
            vec![],
        );
        assert!(f.parking.is_empty());
        assert_eq!(f.metrics.sessions_parked.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_keeps_a_bounded_number_of_parked_sessions_and_never_frees_anothers() {
        let f = fixture(GRACE);
        // Bob, behind the same address, parked first.
        let bobs = new_secret();
        f.parking.park(
            SecretHash::of(&bobs),
            claimant("bob"),
            SOURCE,
            vec![f.forward(99, 40999, "bob", SOURCE)],
        );
        let mut secrets = Vec::new();
        // Alice, from the same address, loses more tabs than her bound.
        for i in 0..MAX_PARKED_PER_HOLDER + 3 {
            let secret = new_secret();
            f.parking.park(
                SecretHash::of(&secret),
                claimant("alice"),
                SOURCE,
                vec![f.forward(i as u64, 41000 + i as u16, "alice", SOURCE)],
            );
            secrets.push(secret);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(f.parking.len(), MAX_PARKED_PER_HOLDER + 1);
        assert!(
            f.port_free(41000) && f.port_free(41002),
            "alice's oldest gave way"
        );
        assert!(!f.port_free(41003));
        assert!(!f.port_free(40999), "bob's parked port is still his");
        assert!(f.parking.resume(&secrets[2], &claimant("alice")).is_none());
        let kept = f
            .parking
            .resume(&secrets[3], &claimant("alice"))
            .expect("resumed");
        assert!(
            f.parking.resume(&bobs, &claimant("bob")).is_some(),
            "bob resumes"
        );
        // One holder from other addresses: each address has its own bound.
        f.parking.clear();
        for i in 0..MAX_PARKED_PER_HOLDER + 2 {
            let source = IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8));
            f.parking.park(
                SecretHash::of(&new_secret()),
                claimant("carol"),
                source,
                vec![f.forward(100 + i as u64, 42000 + i as u16, "carol", source)],
            );
        }
        assert_eq!(f.parking.len(), MAX_PARKED_PER_HOLDER + 2);
        f.parking.clear();
        assert!(f.parking.is_empty() && f.port_free(42009));
        assert_eq!(
            f.book.open(),
            1,
            "only the resumed session's forward is left"
        );
        drop(kept);
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_session_is_taken_over_by_its_own_claimant_only() {
        let f = fixture(GRACE);
        let secret = new_secret();
        let hash = SecretHash::of(&secret);
        let live = f.parking.live(hash, claimant("alice"));
        // Someone else's claim neither ends the live session nor takes anything.
        assert!(
            f.parking
                .take_over(&secret, &claimant("bob"))
                .await
                .is_none()
        );
        assert!(!live.taken_over().is_cancelled());
        // The session, told it was taken over, parks as a lost session does.
        let forward = f.forward(1, 40100, "alice", SOURCE);
        let parking = f.parking.clone();
        let token = live.taken_over();
        let session = tokio::spawn(async move {
            token.cancelled().await;
            drop(live);
            parking.park(hash, claimant("alice"), SOURCE, vec![forward]);
        });
        let forwards = f
            .parking
            .take_over(&secret, &claimant("alice"))
            .await
            .expect("taken over");
        assert_eq!(forwards[0].port, 40100);
        session.await.unwrap();
        assert!(f.parking.is_empty());
        // Once it is gone, the secret is worth nothing.
        assert!(
            f.parking
                .take_over(&secret, &claimant("alice"))
                .await
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_taken_over_session_with_nothing_to_park_answers_at_once() {
        let f = fixture(GRACE);
        let secret = new_secret();
        let hash = SecretHash::of(&secret);
        let live = f.parking.live(hash, claimant("alice"));
        let parking = f.parking.clone();
        let token = live.taken_over();
        tokio::spawn(async move {
            token.cancelled().await;
            drop(live); // ended with nothing to park
            drop(parking);
        });
        let started = Instant::now();
        assert!(
            f.parking
                .take_over(&secret, &claimant("alice"))
                .await
                .is_none()
        );
        assert!(
            started.elapsed() < TAKEOVER_WAIT,
            "no wait for the deadline"
        );
    }
}
