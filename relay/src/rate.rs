//! A token bucket: a burst, then a steady rate. The refusal log's budgets and a session's
//! budget of refused Listens are both one. Time is an argument, so the rules are tested
//! without a clock.

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`: `burst` takes at once, then `per_sec` a second.
    pub fn new(burst: f64, per_sec: f64, now: Instant) -> Self {
        Self {
            burst,
            per_sec,
            tokens: burst,
            at: now,
        }
    }

    /// Takes one token at `now`; `false` when none is left.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token is there at `now`, taking none.
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Whether the bucket is whole again at `now` (nothing of it spent, so nothing to
    /// remember about its owner).
    pub fn full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.at = self.at.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_and_never_more_than_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3.0, 2.0, start);
        assert_eq!((0..10).filter(|_| bucket.take(start)).count(), 3);
        let later = start + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| bucket.take(later)).count(), 2);
        let much_later = start + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| bucket.take(much_later)).count(), 3);
        // A clock read earlier than the last one takes nothing back.
        assert!(!bucket.take(start));
    }
}
