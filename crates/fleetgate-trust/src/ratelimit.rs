//! Per-source admission: a token bucket per key (a source IP for HTTP, a source
//! `ip:port` for gossip datagrams), pure — time is passed in (milliseconds on any
//! monotonic clock), so the same code runs under tokio, in tests and in simulations.
//!
//! Each key may spend `burst` requests at once and gets `per_sec` back per second. The
//! table is bounded ([`RateLimit::max_sources`]): when it is full, buckets that have
//! refilled completely are forgotten first (they carry no information), then the
//! least recently seen one, so a flood of spoofed sources costs memory once and evicts
//! only other idle sources.

use std::collections::HashMap;
use std::hash::Hash;

/// The limits of a [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests one source may make at once (bucket size; at least 1).
    pub burst: u32,
    /// Requests per second one source gets back (at least 1).
    pub per_sec: u32,
    /// Sources tracked at most.
    pub max_sources: usize,
}

impl RateLimit {
    /// `burst` at once, `per_sec` sustained, up to 4096 sources tracked.
    pub fn new(burst: u32, per_sec: u32) -> RateLimit {
        RateLimit {
            burst: burst.max(1),
            per_sec: per_sec.max(1),
            max_sources: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a token (integer arithmetic: no rounding drift).
    milli: u64,
    last_ms: u64,
}

/// One request costs one token, 1000 thousandths.
const COST: u64 = 1000;

/// Token buckets by source key. See the module docs.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limit: RateLimit,
    buckets: HashMap<K, Bucket>,
    refused: u64,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// An empty table with `limit`.
    pub fn new(limit: RateLimit) -> RateLimiter<K> {
        let limit = RateLimit {
            max_sources: limit.max_sources.max(1),
            ..RateLimit::new(limit.burst, limit.per_sec)
        };
        RateLimiter {
            limit,
            buckets: HashMap::new(),
            refused: 0,
        }
    }

    /// The limits.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Sources currently tracked.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }

    /// Spend one token of `key` at `now_ms`: `Ok(())` if the request may go on, else
    /// `Err(ms)`, how long until the next token (at least 1). A `now_ms` older than the
    /// key's last request counts as that time (the clock never runs backwards here).
    pub fn check(&mut self, key: &K, now_ms: u64) -> Result<(), u64> {
        let cap = u64::from(self.limit.burst) * COST;
        // Thousandths of a token regained per millisecond.
        let rate = u64::from(self.limit.per_sec);
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.limit.max_sources {
            self.evict(now_ms);
        }
        let b = self.buckets.entry(key.clone()).or_insert(Bucket {
            milli: cap,
            last_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(b.last_ms);
        b.milli = b
            .milli
            .saturating_add(elapsed.saturating_mul(rate))
            .min(cap);
        b.last_ms = b.last_ms.max(now_ms);
        if b.milli >= COST {
            b.milli -= COST;
            Ok(())
        } else {
            self.refused += 1;
            Err((COST - b.milli).div_ceil(rate).max(1))
        }
    }

    fn evict(&mut self, now_ms: u64) {
        let cap = u64::from(self.limit.burst) * COST;
        let rate = u64::from(self.limit.per_sec);
        self.buckets.retain(|_, b| {
            b.milli
                .saturating_add(now_ms.saturating_sub(b.last_ms).saturating_mul(rate))
                < cap
        });
        if self.buckets.len() >= self.limit.max_sources
            && let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last_ms)
                .map(|(k, _)| k.clone())
        {
            self.buckets.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut l = RateLimiter::new(RateLimit::new(3, 10));
        for _ in 0..3 {
            assert_eq!(l.check(&"a", 0), Ok(()));
        }
        assert_eq!(l.check(&"a", 0), Err(100));
        // Another source is not affected.
        assert_eq!(l.check(&"b", 0), Ok(()));
        assert_eq!(l.check(&"a", 99), Err(1));
        assert_eq!(l.check(&"a", 100), Ok(()));
        assert_eq!(l.check(&"a", 100), Err(100));
        // After a long pause the bucket is full again, never fuller.
        for _ in 0..3 {
            assert_eq!(l.check(&"a", 60_000), Ok(()));
        }
        assert!(l.check(&"a", 60_000).is_err());
        assert_eq!(l.refused(), 4);
        // A clock going backwards does not refill.
        assert!(l.check(&"a", 0).is_err());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_idle_sources_first() {
        let mut l = RateLimiter::new(RateLimit {
            max_sources: 2,
            ..RateLimit::new(2, 1)
        });
        l.check(&1, 0).unwrap();
        l.check(&1, 0).unwrap();
        l.check(&2, 500).unwrap();
        // Source 3 arrives: 1 (older, empty) is evicted, 2 kept.
        l.check(&3, 600).unwrap();
        assert_eq!(l.sources(), 2);
        // 1 starts over with a full bucket (it was forgotten).
        assert!(l.check(&1, 700).is_ok());
        assert_eq!(l.sources(), 2);
    }
}
