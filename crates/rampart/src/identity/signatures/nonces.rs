//! The replay cache: nonces of verified signed requests, remembered until
//! their timestamp leaves the window (after that the timestamp check refuses
//! a replay anyway).
//!
//! - **In process** ([`NonceCache`]): a map of 64-bit ids (the first bytes of
//!   SHA-256 over key id and nonce; a collision would only refuse one honest
//!   request) and a min-heap of expiry times, at most `capacity` entries,
//!   about 50 bytes each. Expired entries are evicted first; when the cache is
//!   still full, the request is refused ([`Seen::Full`]) rather than a nonce
//!   forgotten, since forgetting one would let its request be replayed.
//! - **In Redis** (when `[redis]` is configured): `SET <prefix>sig:<key id>:<nonce>
//!   1 NX EX <seconds left>`, one round trip, so a nonce used at one instance
//!   is refused at every other. Each instance also remembers the nonces it
//!   saw (when it has room), so that its own replays are caught without a
//!   round trip and while Redis is down.
//! - **Redis down** (breaker open, error or timeout): the in-process cache
//!   decides alone, like rate limits with `on_redis_down = "local"`; a
//!   request replayed to a *different* instance during the outage is not
//!   caught. Logged; Redis health shows in `rampart_redis_up` and `/readyz`.
//!
//! Only nonces of requests whose MAC verified are recorded, so clients
//! without a key cannot fill the cache.
//!
//! ```
//! use rampart::identity::signatures::nonces::{nonce_id, NonceCache, Seen};
//!
//! let cache = NonceCache::new(2);
//! let id = nonce_id("hk_a", "0123456789abcdef");
//! assert_eq!(cache.check_and_record(id, 100, 50), Seen::Fresh);
//! assert_eq!(cache.check_and_record(id, 100, 60), Seen::Replayed);
//! assert_eq!(cache.check_and_record(nonce_id("hk_a", "another-nonce-123"), 100, 60), Seen::Fresh);
//! assert_eq!(cache.check_and_record(nonce_id("hk_b", "0123456789abcdef"), 100, 60), Seen::Full);
//! // Once the first two have expired there is room again.
//! assert_eq!(cache.check_and_record(nonce_id("hk_b", "0123456789abcdef"), 200, 101), Seen::Fresh);
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::limit::redis::RedisStore;

/// What the cache says of a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window; now recorded.
    Fresh,
    /// Seen before: a replay.
    Replayed,
    /// Not seen, but there is no room to remember it.
    Full,
}

/// The id a nonce is remembered by (key ids and nonces are short ASCII, so
/// the 0 separator cannot occur in either).
pub fn nonce_id(key_id: &str, nonce: &str) -> u64 {
    let digest = Sha256::new().chain_update(key_id).chain_update([0]).chain_update(nonce).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Nonces seen by this instance, bounded.
#[derive(Debug)]
pub struct NonceCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Nonce id → the last second it must be remembered.
    seen: HashMap<u64, u64>,
    /// The same entries by expiry, soonest first.
    by_expiry: BinaryHeap<Reverse<(u64, u64)>>,
}

impl NonceCache {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), inner: Mutex::new(Entries::default()) }
    }

    /// Records `id` until `until` (unix seconds) unless it is already
    /// remembered at `now`.
    pub fn check_and_record(&self, id: u64, until: u64, now: u64) -> Seen {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if e.seen.get(&id).is_some_and(|&t| t >= now) {
            return Seen::Replayed;
        }
        while let Some(&Reverse((t, old))) = e.by_expiry.peek() {
            if t >= now {
                break;
            }
            e.by_expiry.pop();
            if e.seen.get(&old) == Some(&t) {
                e.seen.remove(&old);
            }
        }
        if e.seen.len() >= self.capacity {
            return Seen::Full;
        }
        e.seen.insert(id, until);
        e.by_expiry.push(Reverse((until, id)));
        Seen::Fresh
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether Redis has seen the nonce: `Some(true)` fresh (now recorded),
/// `Some(false)` a replay, `None` when Redis could not answer in time.
pub async fn redis_fresh(redis: &RedisStore, key_id: &str, nonce: &str, ttl_secs: u64) -> Option<bool> {
    let mut conn = redis.connection()?;
    let key = format!("{}sig:{key_id}:{nonce}", redis.key_prefix());
    let mut set = redis::cmd("SET");
    set.arg(key).arg(1).arg("NX").arg("EX").arg(ttl_secs.max(1));
    match tokio::time::timeout(redis.timeout(), set.query_async::<Option<String>>(&mut conn)).await {
        Ok(Ok(reply)) => Some(reply.is_some()),
        Ok(Err(e)) => {
            tracing::warn!(target: "rampart::auth", error = %e, "nonce not checked in redis; this instance's cache decides");
            None
        }
        Err(_) => {
            tracing::warn!(target: "rampart::auth", "redis timed out on a nonce; this instance's cache decides");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn replays_are_caught_until_they_expire() {
        let c = NonceCache::new(10);
        let id = nonce_id("k", "n");
        assert_eq!(c.check_and_record(id, 100, 0), Seen::Fresh);
        assert_eq!(c.check_and_record(id, 100, 100), Seen::Replayed, "the last second still counts");
        assert_eq!(c.check_and_record(id, 300, 101), Seen::Fresh, "expired: the timestamp check guards it now");
        assert_eq!(c.len(), 1);
        assert_eq!(c.check_and_record(id, 300, 200), Seen::Replayed);
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let c = NonceCache::new(100);
        for i in 0..100u32 {
            assert_eq!(c.check_and_record(u64::from(i), 1_000 + u64::from(i), 10), Seen::Fresh);
        }
        assert_eq!(c.check_and_record(1_000, 2_000, 10), Seen::Full);
        // Every remembered nonce is still refused while the cache is full.
        for i in 0..100u32 {
            assert_eq!(c.check_and_record(u64::from(i), 2_000, 11), Seen::Replayed);
        }
        // The oldest expire one by one, and only they make room.
        assert_eq!(c.check_and_record(1_000, 2_000, 1_002), Seen::Fresh);
        assert_eq!(c.len(), 99, "two expired, one added");
        assert_eq!(c.check_and_record(u64::from(2u32), 2_000, 1_002), Seen::Replayed);
        // Memory stays bounded under any number of distinct nonces.
        for i in 0..10_000u32 {
            c.check_and_record(u64::from(i) << 32, 5_000, 1_500 + u64::from(i));
            assert!(c.len() <= 100);
        }
    }

    #[test]
    fn ids_depend_on_key_and_nonce() {
        assert_ne!(nonce_id("ab", "c"), nonce_id("a", "bc"));
        assert_ne!(nonce_id("k1", "n"), nonce_id("k2", "n"));
        assert_eq!(nonce_id("k", "n"), nonce_id("k", "n"));
    }
}
