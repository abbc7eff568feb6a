//! Access-token checks, bounded per source: a Hello's, and that of `GET /api/targets`,
//! where a page that holds an access token sends it
//! (`Authorization: Bearer TOKEN`, never in the URL, which proxies and access logs keep)
//! and learns its holder's name and block of forward ports. That makes the route an
//! oracle for guessing tokens, which any client can ask without opening a session, so
//! failed checks are bounded per source address (a /64 for IPv6, as everywhere else): a
//! small burst, then a few a minute. A source that has spent its budget is refused before
//! its token is compared, whatever the token, so the answer then tells nothing about it.
//! Tokens are compared in constant time ([`Config::token_owner`]) and never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::rate::TokenBucket;

/// Failed checks one source may make at once.
pub const FAILED_CHECK_BURST: u32 = 5;
/// One more failed check per source this often.
pub const FAILED_CHECK_REFILL: Duration = Duration::from_secs(12);
/// Sources remembered at once. Sources whose budget is whole again are forgotten first;
/// a book still full of sources with spent budgets refuses new sources' checks rather
/// than forget a guesser (the page works without the check: it only lacks the block).
const MAX_SOURCES: usize = 10_000;

/// What a source that spent its budget is told, by `/api/targets` and a Hello alike.
pub const TOO_MANY_MESSAGE: &str = "too many wrong access tokens from your address of late, so this one was not checked: wait a minute and reload the page";

/// What a token check answered.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenCheck<'c> {
    /// The token is `holder`'s.
    Holder(&'c str),
    /// Not a token of this relay (one failed check spent).
    Wrong,
    /// This source failed too often of late; the token was not looked at.
    TooMany,
}

/// Failed token checks by source address.
#[derive(Debug, Default)]
pub struct TokenChecks {
    failed: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl TokenChecks {
    /// Checks `token` for a client at `ip` now.
    pub fn check<'c>(&self, config: &'c Config, ip: IpAddr, token: &str) -> TokenCheck<'c> {
        self.check_at(config, ip, token, Instant::now())
    }

    /// [`TokenChecks::check`] at `now`, so the budget is tested without a clock.
    pub fn check_at<'c>(
        &self,
        config: &'c Config,
        ip: IpAddr,
        token: &str,
        now: Instant,
    ) -> TokenCheck<'c> {
        let key = crate::client_addr::limit_key(ip);
        let mut failed = self.failed.lock().expect("token checks lock");
        if let Some(bucket) = failed.get_mut(&key)
            && !bucket.ready(now)
        {
            return TokenCheck::TooMany;
        }
        if let Some(holder) = config.token_owner(token) {
            return TokenCheck::Holder(holder);
        }
        if !failed.contains_key(&key) && failed.len() >= MAX_SOURCES {
            failed.retain(|_, bucket| !bucket.full(now));
            if failed.len() >= MAX_SOURCES {
                return TokenCheck::TooMany;
            }
        }
        let per_sec = 1.0 / FAILED_CHECK_REFILL.as_secs_f64();
        failed
            .entry(key)
            .or_insert_with(|| TokenBucket::new(f64::from(FAILED_CHECK_BURST), per_sec, now))
            .take(now);
        TokenCheck::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AccessToken;

    fn config() -> Config {
        let mut config = Config::default();
        for (name, secret) in [
            ("alice", "alice-0123456789abcdef"),
            ("bob", "bob-0123456789abcdef"),
        ] {
            config.tokens.push(AccessToken {
                name: name.into(),
                secret: secret.into(),
            });
        }
        config
    }

    #[test]
    fn a_token_names_its_holder() {
        let (checks, config) = (TokenChecks::default(), config());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            checks.check(&config, ip, "bob-0123456789abcdef"),
            TokenCheck::Holder("bob")
        );
        assert_eq!(
            checks.check(&config, ip, "bob-0123456789abcdeX"),
            TokenCheck::Wrong
        );
        assert_eq!(checks.check(&config, ip, ""), TokenCheck::Wrong);
    }

    #[test]
    fn failed_checks_are_bounded_per_source_and_come_back_slowly() {
        let (checks, config) = (TokenChecks::default(), config());
        let start = Instant::now();
        let guesser: IpAddr = "2001:db8::1".parse().unwrap();
        for i in 0..FAILED_CHECK_BURST {
            let answer = checks.check_at(&config, guesser, &format!("guess-{i}"), start);
            assert_eq!(answer, TokenCheck::Wrong, "guess {i}");
        }
        // Spent: even the right token is not looked at, so the answer tells nothing.
        assert_eq!(
            checks.check_at(&config, guesser, "alice-0123456789abcdef", start),
            TokenCheck::TooMany
        );
        // The same /64 shares the budget; another source has its own.
        let neighbour: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert_eq!(
            checks.check_at(&config, neighbour, "guess", start),
            TokenCheck::TooMany
        );
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            checks.check_at(&config, other, "alice-0123456789abcdef", start),
            TokenCheck::Holder("alice")
        );
        // One more check per refill period, no more.
        let later = start + FAILED_CHECK_REFILL;
        assert_eq!(
            checks.check_at(&config, guesser, "guess", later),
            TokenCheck::Wrong
        );
        assert_eq!(
            checks.check_at(&config, guesser, "guess", later),
            TokenCheck::TooMany
        );
    }

    #[test]
    fn the_book_of_sources_stays_bounded() {
        let (checks, config) = (TokenChecks::default(), config());
        let start = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(
                checks.check_at(&config, ip, "guess", start),
                TokenCheck::Wrong
            );
        }
        let newcomer: IpAddr = "192.0.2.200".parse().unwrap();
        // Every remembered source has spent part of its budget: a new one is refused
        // rather than a guesser forgotten.
        assert_eq!(
            checks.check_at(&config, newcomer, "guess", start),
            TokenCheck::TooMany
        );
        // Once their budgets are whole again they are forgotten and make room.
        let later = start + FAILED_CHECK_REFILL * 2;
        assert_eq!(
            checks.check_at(&config, newcomer, "guess", later),
            TokenCheck::Wrong
        );
        assert!(checks.failed.lock().unwrap().len() <= MAX_SOURCES);
    }
}
