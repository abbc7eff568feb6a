//! Refusal logs that a flood cannot turn into a flood of log lines.
//!
//! Every refused Origin, wrong token, refused Listen or refused TCP client is worth a line
//! to an operator, but one unauthenticated client can cause thousands a second (measured
//! before this: 3.5 MiB/s of refused Origins, 14 MiB/s of refused Listens). So each source
//! gets a small budget of lines, refilled slowly, under a budget for the whole relay; what
//! is left out is counted and reported with the source's next line. Each kind of refusal
//! (an Origin, a session, a Listen, a TCP client) has its own budget per source, so the
//! first refusals of every kind are seen. Metrics still count every refusal. Sessions
//! starting and ending go through the same budgets, since connecting and leaving in a loop
//! is a flood of its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::rate::TokenBucket;

/// Lines one source may log at once.
const SOURCE_BURST: f64 = 10.0;
/// One more line per source this often.
const SOURCE_REFILL: Duration = Duration::from_secs(6);
/// Lines the whole relay may log at once, and per second after that.
const GLOBAL_BURST: f64 = 100.0;
const GLOBAL_PER_SEC: f64 = 10.0;
/// Sources remembered at once. Past it the book starts afresh: the global budget still
/// bounds the lines, and the memory stays bounded whatever the number of addresses.
const MAX_SOURCES: usize = 10_000;
/// Logged values (an Origin header, a target name, a bind address) are cut to this many
/// characters: a refusal needs to identify the value, not repeat a kilobyte of it.
pub const MAX_LOGGED_CHARS: usize = 100;

/// Decides which refusals are logged. Time is an argument of [`RefusalLog::admit_at`], so
/// the rules are tested without a clock.
#[derive(Debug)]
pub struct RefusalLog {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    sources: HashMap<(IpAddr, &'static str), Source>,
    global: TokenBucket,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    lines: TokenBucket,
    /// Refusals left out since this source's last line.
    suppressed: u64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                sources: HashMap::new(),
                global: TokenBucket::new(GLOBAL_BURST, GLOBAL_PER_SEC, Instant::now()),
            }),
        }
    }
}

impl RefusalLog {
    /// Whether a refusal of `kind` (a short fixed name) of `source` is logged now.
    /// `Some(n)`: log it, and say that `n` such refusals were left out since the last
    /// line; `None`: leave it out.
    pub fn admit(&self, source: IpAddr, kind: &'static str) -> Option<u64> {
        self.admit_at(source, kind, Instant::now())
    }

    pub fn admit_at(&self, source: IpAddr, kind: &'static str, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().expect("refusal log lock");
        let State { sources, global } = &mut *state;
        let key = (crate::client_addr::limit_key(source), kind);
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&key) {
            sources.clear();
        }
        let source = sources.entry(key).or_insert_with(|| Source {
            lines: TokenBucket::new(SOURCE_BURST, 1.0 / SOURCE_REFILL.as_secs_f64(), now),
            suppressed: 0,
        });
        // Both budgets must allow the line; only then is a token taken from each.
        if source.lines.ready(now) && global.ready(now) {
            source.lines.take(now);
            global.take(now);
            Some(std::mem::take(&mut source.suppressed))
        } else {
            source.suppressed += 1;
            None
        }
    }
}

/// `text` cut to [`MAX_LOGGED_CHARS`] characters, marked when cut.
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_LOGGED_CHARS) {
        None => text.into(),
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_flood_from_one_source_logs_its_burst_then_a_line_per_refill() {
        let log = RefusalLog::default();
        let start = Instant::now();
        let logged = (0..10_000)
            .filter(|_| log.admit_at(ip("192.0.2.1"), "test", start).is_some())
            .count();
        assert_eq!(logged, SOURCE_BURST as usize);
        // The next line comes after one refill and reports what was left out.
        assert_eq!(
            log.admit_at(ip("192.0.2.1"), "test", start + SOURCE_REFILL / 2),
            None
        );
        assert_eq!(
            log.admit_at(ip("192.0.2.1"), "test", start + SOURCE_REFILL),
            Some(10_000 - SOURCE_BURST as u64 + 1)
        );
        // Another source, or another kind of refusal, is not held back by the first.
        assert_eq!(log.admit_at(ip("192.0.2.2"), "test", start), Some(0));
        assert_eq!(log.admit_at(ip("192.0.2.1"), "other", start), Some(0));
    }

    #[test]
    fn many_sources_together_stay_within_the_global_budget() {
        let log = RefusalLog::default();
        let start = Instant::now();
        let logged = (0..5_000u32)
            .filter(|i| {
                let source = IpAddr::V4((0x0a00_0000 + i).into());
                log.admit_at(source, "test", start).is_some()
            })
            .count();
        assert_eq!(logged, GLOBAL_BURST as usize);
        let later = start + Duration::from_secs(1);
        let logged = (0..5_000u32)
            .filter(|i| {
                let source = IpAddr::V4((0x0b00_0000 + i).into());
                log.admit_at(source, "test", later).is_some()
            })
            .count();
        assert_eq!(logged, GLOBAL_PER_SEC as usize);
    }

    #[test]
    fn an_ipv6_host_is_one_source_per_64_and_the_book_stays_bounded() {
        let log = RefusalLog::default();
        let start = Instant::now();
        let logged = (0..100u16)
            .filter(|i| {
                let source = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, *i, 0, 0, 1));
                log.admit_at(source, "test", start).is_some()
            })
            .count();
        assert_eq!(logged, SOURCE_BURST as usize, "one /64, one budget");
        let far = start + Duration::from_secs(3600);
        for i in 0..(MAX_SOURCES as u32 * 2) {
            log.admit_at(IpAddr::V4((0x0c00_0000 + i).into()), "test", far);
        }
        assert!(log.state.lock().unwrap().sources.len() <= MAX_SOURCES);
    }

    #[test]
    fn clipped_values_keep_their_start_and_say_their_length() {
        assert_eq!(clip("https://lab.example"), "https://lab.example");
        let long = "é".repeat(600);
        let cut = clip(&long);
        assert!(cut.starts_with(&"é".repeat(MAX_LOGGED_CHARS)), "{cut}");
        assert!(cut.ends_with("... (1200 bytes)"), "{cut}");
    }
}
