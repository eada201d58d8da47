//! [`RateLimit`]: the inbound token bucket.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `per_second` messages on average, bursts of up to
/// `burst`. Past it the connection is closed with 4429.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: f64,
    /// Messages allowed at once after a quiet spell.
    pub burst: f64,
}

impl RateLimit {
    /// `per_second` on average, bursts of `burst`.
    pub fn new(per_second: f64, burst: f64) -> Self {
        RateLimit { per_second, burst }
    }
}

impl Default for RateLimit {
    /// 20 messages per second, bursts of 50: generous for a chat or agent
    /// client, far below what a flood needs.
    fn default() -> Self {
        RateLimit::new(20.0, 50.0)
    }
}

/// One connection's bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Bucket {
            limit,
            tokens: limit.burst,
            last: Instant::now(),
        }
    }

    /// Takes a token for one message; `false` when none is left.
    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * self.limit.per_second).min(self.limit.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The default ping interval: Centrifuge pings every 25 s, Socket.IO too.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(25);
/// The default pong timeout: Centrifuge waits 10 s.
pub(crate) const PONG_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_sustained_rate() {
        let mut bucket = Bucket::new(RateLimit::new(10.0, 5.0));
        assert!((0..5).all(|_| bucket.take()), "the burst");
        assert!(!bucket.take(), "empty");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(bucket.take(), "one token per 100 ms");
        assert!(!bucket.take());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            (0..10).filter(|_| bucket.take()).count(),
            5,
            "never more than the burst"
        );
    }
}
