//! The relay's book of web forwards: each forward's id, its link's one-time key and its
//! cookie's value, the way to its session, and the requests and upgraded sockets in progress per forward and per
//! address. A session holds a [`Registration`] per forward; dropping it (Unlisten, the
//! session's end) revokes the forward at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::config::Limits;
use crate::listen::Accepted;

/// Where a web forward's requests go: its session's queue of accepted clients.
#[derive(Debug, Clone)]
pub(crate) struct Opener {
    pub forward: u32,
    pub accepted: mpsc::Sender<Accepted>,
    /// The forward's URL is https (the relay's TLS, or a TLS-terminating proxy in
    /// front): its cookie is then `Secure`.
    pub secure: bool,
}

struct Entry {
    /// 256 random bits in hex: the key in the link the tab is given, good once.
    key: String,
    /// Whether a browser has been let in with the key (and given the cookie).
    key_used: bool,
    /// 256 other random bits: the cookie's value, which only the browser let in learns.
    /// Apart from the key, so that whoever sees the link later (history, a screenshot)
    /// cannot make the cookie from it.
    cookie: String,
    opener: Opener,
    requests: usize,
    sockets: usize,
}

/// Never shows the key or the cookie.
impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("forward", &self.opener.forward)
            .field("key_used", &self.key_used)
            .field("requests", &self.requests)
            .field("sockets", &self.sockets)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Book {
    forwards: HashMap<String, Entry>,
    requests_by_ip: HashMap<IpAddr, usize>,
    sockets_by_ip: HashMap<IpAddr, usize>,
}

/// Every web forward of the relay. Cheap to share.
#[derive(Debug, Default)]
pub struct WebForwards {
    book: Mutex<Book>,
}

/// A forward's entry in the book, held by its session; dropping it revokes the forward.
pub struct Registration {
    book: Arc<WebForwards>,
    id: String,
    key: String,
}

/// Never shows the key.
impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Registration {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The one-time key of the forward's link.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Registration {
    /// Points the forward at `opener`: a resumed session's forward keeps its URL, and
    /// the cookie its browser holds, while its requests go to the new session.
    pub(crate) fn reopen(&self, opener: Opener) {
        if let Some(entry) = self.book.lock().forwards.get_mut(&self.id) {
            entry.opener = opener;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.book.lock().forwards.remove(&self.id);
    }
}

/// A forward's secrets, as a request is checked against them. No `Debug`: nothing to show.
pub(crate) struct Access {
    /// The link's key (whether still good or spent: see [`WebForwards::use_key`]).
    pub key: String,
    /// The cookie's value.
    pub cookie: String,
    /// The forward's URL is https: its cookie is `Secure`.
    pub secure: bool,
}

/// What a request or upgraded socket takes; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Slot {
    book: Arc<WebForwards>,
    id: String,
    ip: IpAddr,
    socket: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut book = self.book.lock();
        if let Some(entry) = book.forwards.get_mut(&self.id) {
            let count = if self.socket {
                &mut entry.sockets
            } else {
                &mut entry.requests
            };
            *count = count.saturating_sub(1);
        }
        let by_ip = if self.socket {
            &mut book.sockets_by_ip
        } else {
            &mut book.requests_by_ip
        };
        if let Some(count) = by_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// Why a request found no place: the forward's cap (503) or the address's (429).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Busy {
    Forward(usize),
    Address(usize),
}

impl WebForwards {
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("web forwards lock")
    }

    /// Enters a new forward with a fresh id, key and cookie.
    pub(crate) fn register(self: &Arc<Self>, opener: Opener) -> Registration {
        let key = hex(&rand::random::<[u8; 32]>());
        let mut book = self.lock();
        // 64 random bits: a collision is all but impossible, and never reused if it comes.
        let id = loop {
            let id = hex(&rand::random::<[u8; 8]>());
            if !book.forwards.contains_key(&id) {
                break id;
            }
        };
        book.forwards.insert(
            id.clone(),
            Entry {
                key: key.clone(),
                key_used: false,
                cookie: hex(&rand::random::<[u8; 32]>()),
                opener,
                requests: 0,
                sockets: 0,
            },
        );
        Registration {
            book: self.clone(),
            id,
            key,
        }
    }

    /// What a request for forward `id` is checked against, if the forward is open.
    pub(crate) fn access(&self, id: &str) -> Option<Access> {
        self.lock().forwards.get(id).map(|e| Access {
            key: e.key.clone(),
            cookie: e.cookie.clone(),
            secure: e.opener.secure,
        })
    }

    /// Spends forward `id`'s key: true for the first caller only (who then sets the
    /// cookie), false once it is spent or the forward is closed.
    pub(crate) fn use_key(&self, id: &str) -> bool {
        self.lock()
            .forwards
            .get_mut(id)
            .is_some_and(|e| !std::mem::replace(&mut e.key_used, true))
    }

    /// The way to the forward's session, if it is open.
    pub(crate) fn opener(&self, id: &str) -> Option<Opener> {
        self.lock().forwards.get(id).map(|e| e.opener.clone())
    }

    /// Takes a place for one request (`socket` false) or upgraded socket (true) of
    /// forward `id` from address `ip` (its limit key), within `limits`. `None` when the
    /// forward closed meanwhile.
    pub(crate) fn begin(
        self: &Arc<Self>,
        id: &str,
        ip: IpAddr,
        socket: bool,
        limits: &Limits,
    ) -> Option<Result<Slot, Busy>> {
        let (per_forward, per_ip) = if socket {
            (limits.web_sockets_per_forward, limits.web_sockets_per_ip)
        } else {
            (limits.web_requests_per_forward, limits.web_requests_per_ip)
        };
        let mut book = self.lock();
        let Book {
            forwards,
            requests_by_ip,
            sockets_by_ip,
        } = &mut *book;
        let entry = forwards.get_mut(id)?;
        let (count, by_ip) = if socket {
            (&mut entry.sockets, sockets_by_ip)
        } else {
            (&mut entry.requests, requests_by_ip)
        };
        if *count >= per_forward {
            return Some(Err(Busy::Forward(per_forward)));
        }
        let from_ip = by_ip.entry(ip).or_default();
        if *from_ip >= per_ip {
            return Some(Err(Busy::Address(per_ip)));
        }
        *from_ip += 1;
        *count += 1;
        Some(Ok(Slot {
            book: self.clone(),
            id: id.to_owned(),
            ip,
            socket,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::config::is_web_forward_id;

    fn opener() -> Opener {
        Opener {
            forward: 1,
            accepted: mpsc::channel(1).0,
            secure: false,
        }
    }

    #[test]
    fn ids_and_capabilities_are_fresh_and_revoked_on_drop() {
        let book = Arc::new(WebForwards::default());
        let a = book.register(opener());
        let b = book.register(opener());
        assert!(is_web_forward_id(a.id()), "{}", a.id());
        assert_ne!(a.id(), b.id());
        assert_eq!(a.key().len(), 64);
        assert_ne!(a.key(), b.key());
        let access = book.access(a.id()).unwrap();
        assert_eq!((access.key.as_str(), access.secure), (a.key(), false));
        assert_eq!(access.cookie.len(), 64);
        assert_ne!(
            access.cookie, access.key,
            "the link does not make the cookie"
        );
        assert_ne!(access.cookie, book.access(b.id()).unwrap().cookie);
        let shown = format!("{book:?} {a:?}");
        assert!(!shown.contains(a.key()), "{shown}");
        assert!(!shown.contains(&access.cookie), "{shown}");
        let id = a.id().to_owned();
        drop(a);
        assert!(book.access(&id).is_none());
        assert!(!book.use_key(&id));
        assert!(book.opener(&id).is_none());
        assert!(book.opener(b.id()).is_some());
    }

    #[test]
    fn a_key_is_spent_once_and_survives_a_reopen_spent() {
        let book = Arc::new(WebForwards::default());
        let (a, b) = (book.register(opener()), book.register(opener()));
        assert!(book.use_key(a.id()));
        assert!(!book.use_key(a.id()));
        assert!(!book.use_key(a.id()));
        // A resumed session's forward keeps its spent key (and its cookie).
        let cookie = book.access(a.id()).unwrap().cookie;
        a.reopen(opener());
        assert!(!book.use_key(a.id()));
        assert_eq!(book.access(a.id()).unwrap().cookie, cookie);
        // Each forward's own.
        assert!(book.use_key(b.id()));
    }

    #[test]
    fn places_are_bounded_per_forward_and_per_address_and_given_back() {
        let book = Arc::new(WebForwards::default());
        let limits = Limits {
            web_requests_per_forward: 3,
            web_requests_per_ip: 2,
            web_sockets_per_forward: 1,
            web_sockets_per_ip: 1,
            ..Limits::default()
        };
        let (a, b) = (book.register(opener()), book.register(opener()));
        let ip1 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let ip2 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let take = |id: &str, ip, socket| book.begin(id, ip, socket, &limits).unwrap();
        let r1 = take(a.id(), ip1, false).unwrap();
        let _r2 = take(a.id(), ip1, false).unwrap();
        assert_eq!(take(a.id(), ip1, false).unwrap_err(), Busy::Address(2));
        assert_eq!(take(b.id(), ip1, false).unwrap_err(), Busy::Address(2));
        let _r3 = take(a.id(), ip2, false).unwrap();
        assert_eq!(take(a.id(), ip2, false).unwrap_err(), Busy::Forward(3));
        // Sockets count apart from requests.
        let s1 = take(a.id(), ip2, true).unwrap();
        assert_eq!(take(b.id(), ip2, true).unwrap_err(), Busy::Address(1));
        drop((r1, s1));
        take(a.id(), ip1, false).unwrap();
        take(b.id(), ip2, true).unwrap();
        // A closed forward has no places; a slot outliving it gives back its address's.
        let id = a.id().to_owned();
        let held = take(&id, ip2, true).unwrap();
        drop(a);
        assert!(book.begin(&id, ip1, false, &limits).is_none());
        drop(held);
        assert!(book.lock().sockets_by_ip.is_empty());
    }
}
