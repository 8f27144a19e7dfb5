//! Limits on one proxy connection: how many subscriptions it holds and how fast it adds them.

use std::time::{Duration, Instant};

/// The most views one connection may hold (a proxy holds one per destination its app uses).
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

/// A token bucket: `burst` at once, then `per_second`. Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub struct Bucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(burst: u32, per_second: u32, now: Instant) -> Self {
        Bucket {
            burst: f64::from(burst),
            per_second: f64::from(per_second.max(1)),
            tokens: f64::from(burst),
            at: now,
        }
    }

    /// The buckets of subscriptions: a reconnecting proxy re-subscribes 2,000 views at once,
    /// then 500 a second.
    pub fn subscriptions(now: Instant) -> Self {
        Bucket::new(2_000, 500, now)
    }

    /// Takes one token: `None` when there was one, else how long until there is.
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3, 10, t0);
        assert_eq!((b.take(t0), b.take(t0), b.take(t0)), (None, None, None));
        let wait = b.take(t0).expect("empty");
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        let later = t0 + Duration::from_millis(100);
        assert_eq!(b.take(later), None);
        assert!(b.take(later).is_some());
        // Refills up to the burst, no further.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(much_later), None);
        }
        assert!(b.take(much_later).is_some());
    }
}
