//! A token bucket: the one rate limiter behind per-connection publish and `auth` limits
//! and the per-IP handshake limit. Plain data driven by explicit time, so callers keep it
//! wherever their state lives (a connection, a shared table entry).

use std::time::{Duration, Instant};

/// The longest wait [`TokenBucket::take`] reports, in seconds.
const NEVER_SECS: f64 = 1e9;

/// Holds up to `burst` tokens, refilled at `rate` per second; each event takes one.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens at `now`.
    pub fn full(burst: f64, now: Instant) -> TokenBucket {
        TokenBucket { tokens: burst, refilled: now }
    }

    /// The tokens it would hold at `now`, without changing it.
    pub fn level(&self, rate: f64, burst: f64, now: Instant) -> f64 {
        (self.tokens + now.saturating_duration_since(self.refilled).as_secs_f64() * rate).min(burst)
    }

    /// Takes a token at `now`, or says how long until one is there.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        self.tokens = self.level(rate, burst, now);
        self.refilled = now;
        if self.tokens < 1.0 {
            // At most ~30 years; a rate of 0 (or a nonsensical negative one) waits that long
            // rather than panicking in `Duration` on an infinite or negative wait.
            let wait = ((1.0 - self.tokens) / rate).min(NEVER_SECS);
            return Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs_f64(NEVER_SECS)));
        }
        self.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(2.0, t0);
        assert!(bucket.take(4.0, 2.0, t0).is_ok() && bucket.take(4.0, 2.0, t0).is_ok());
        let wait = bucket.take(4.0, 2.0, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(250));
        assert!(bucket.take(4.0, 2.0, t0 + Duration::from_millis(200)).is_err(), "0.8 tokens");
        assert!(bucket.take(4.0, 2.0, t0 + Duration::from_millis(300)).is_ok(), "1.2 tokens");
        assert_eq!(bucket.level(4.0, 2.0, t0 + Duration::from_secs(60)), 2.0, "never above the burst");
        // No rate: the wait is bounded, not infinite (which `Duration` cannot hold).
        for rate in [0.0, -0.0, -1.0, f64::NAN] {
            let wait = TokenBucket::full(0.0, t0).take(rate, 0.0, t0).unwrap_err();
            assert_eq!(wait, Duration::from_secs_f64(NEVER_SECS), "rate {rate}");
        }
    }
}
