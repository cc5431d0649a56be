//! Keys looked up in the database, remembered in bounded memory, and their
//! usage counted in memory until the next batch write.
//!
//! Both tables are keyed by the SHA-256 of the key (never the key). `known`
//! holds keys found in the database (valid or not: a revoked key is
//! remembered as revoked), `unknown` holds hashes the database does not have,
//! so that a client repeating a made-up key costs no query. Each is bounded
//! by `capacity`: when full, entries older than the TTL go, and if none had,
//! the table is cleared (a flood of distinct keys costs queries, never memory;
//! the two tables are separate so a flood of unknown keys cannot push out
//! the known ones).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::auth::Verified;

/// A key as authentication needs it.
#[derive(Debug)]
pub struct CachedKey {
    pub id: String,
    /// The principal it authenticates, with the shared internal-JWT slot.
    pub verified: Verified,
    pub expires_at: Option<u64>,
    pub revoked: bool,
    pub owner_disabled: bool,
    pub cidrs: Vec<IpNet>,
    pub usage: Arc<Usage>,
}

/// Why a known key is refused (for metrics and the audit log only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Expired,
    Revoked,
    OwnerDisabled,
    AddressNotAllowed,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Expired => "api_key_expired",
            Self::Revoked => "api_key_revoked",
            Self::OwnerDisabled => "api_key_owner_disabled",
            Self::AddressNotAllowed => "api_key_address_not_allowed",
        }
    }
}

impl CachedKey {
    /// Whether the key may be used at `now_ms` from `ip`; counts the use when so.
    pub fn admit(&self, ip: Option<IpAddr>, now_ms: u64) -> Result<&Verified, Refusal> {
        self.check(ip, now_ms)?;
        self.usage.count.fetch_add(1, Ordering::Relaxed);
        self.usage.last.fetch_max(now_ms, Ordering::Relaxed);
        Ok(&self.verified)
    }

    /// Whether [`CachedKey::admit`] would let `ip` in at `now_ms`, without
    /// counting a use.
    pub fn check(&self, ip: Option<IpAddr>, now_ms: u64) -> Result<(), Refusal> {
        if self.revoked {
            return Err(Refusal::Revoked);
        }
        if self.expires_at.is_some_and(|e| now_ms >= e) {
            return Err(Refusal::Expired);
        }
        if self.owner_disabled {
            return Err(Refusal::OwnerDisabled);
        }
        if !self.cidrs.is_empty() && !ip.is_some_and(|ip| self.cidrs.iter().any(|c| c.contains(&canonical(ip)))) {
            return Err(Refusal::AddressNotAllowed);
        }
        Ok(())
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Uses of one key since the last batch.
#[derive(Debug, Default)]
pub struct Usage {
    pub count: AtomicU64,
    pub last: AtomicU64,
}

/// What the cache knows of a hash.
pub enum Lookup {
    Known(Arc<CachedKey>),
    /// The database had no such key recently.
    Unknown,
    Miss,
}

/// Hash → the key and when it was read (ms).
type KnownKeys = HashMap<[u8; 32], (Arc<CachedKey>, u64)>;

#[derive(Debug)]
pub struct KeyCache {
    capacity: usize,
    ttl_ms: u64,
    known: Mutex<KnownKeys>,
    unknown: Mutex<HashMap<[u8; 32], u64>>,
    /// Key id → its usage counters, shared with every cached copy of the key.
    usage: Mutex<HashMap<String, Arc<Usage>>>,
}

impl KeyCache {
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl_ms,
            known: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
            usage: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, hash: &[u8; 32], now_ms: u64) -> Lookup {
        {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((key, at)) = known.get(hash) {
                if now_ms.saturating_sub(*at) < self.ttl_ms {
                    return Lookup::Known(key.clone());
                }
            }
        }
        let unknown = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
        match unknown.get(hash) {
            Some(at) if now_ms.saturating_sub(*at) < self.ttl_ms => Lookup::Unknown,
            _ => Lookup::Miss,
        }
    }

    /// The usage counters of key `id` (the same ones for every copy).
    pub fn usage_of(&self, id: &str) -> Arc<Usage> {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.entry(id.to_owned()).or_default().clone()
    }

    pub fn insert_known(&self, hash: [u8; 32], key: Arc<CachedKey>, now_ms: u64) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= self.capacity && !known.contains_key(&hash) {
            known.retain(|_, (_, at)| now_ms.saturating_sub(*at) < self.ttl_ms);
            if known.len() >= self.capacity {
                known.clear();
            }
        }
        known.insert(hash, (key, now_ms));
    }

    pub fn insert_unknown(&self, hash: [u8; 32], now_ms: u64) {
        let mut unknown = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
        if unknown.len() >= self.capacity && !unknown.contains_key(&hash) {
            unknown.retain(|_, at| now_ms.saturating_sub(*at) < self.ttl_ms);
            if unknown.len() >= self.capacity {
                unknown.clear();
            }
        }
        unknown.insert(hash, now_ms);
    }

    /// Forgets what is known of `hash` (the key changed somewhere).
    pub fn evict(&self, hash: &[u8; 32]) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).remove(hash);
        self.unknown.lock().unwrap_or_else(|e| e.into_inner()).remove(hash);
    }

    /// Takes the uses counted since the last call: (id, last use, count).
    /// Counters no cached key refers to any more, and that are empty, go.
    pub fn take_usage(&self) -> Vec<(String, u64, u64)> {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        usage.retain(|id, u| {
            let n = u.count.swap(0, Ordering::Relaxed);
            if n > 0 {
                out.push((id.clone(), u.last.load(Ordering::Relaxed), n));
            }
            // Only this table holds it: no cached key can count into it.
            n > 0 || Arc::strong_count(u) > 1
        });
        out
    }

    /// Puts back uses that could not be written (the next batch retries).
    pub fn restore_usage(&self, failed: &[(String, u64, u64)]) {
        for (id, last, n) in failed {
            let u = self.usage_of(id);
            u.count.fetch_add(*n, Ordering::Relaxed);
            u.last.fetch_max(*last, Ordering::Relaxed);
        }
    }

    pub fn len(&self) -> (usize, usize) {
        (
            self.known.lock().unwrap_or_else(|e| e.into_inner()).len(),
            self.unknown.lock().unwrap_or_else(|e| e.into_inner()).len(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rampart_core::principal::{AuthMethod, Principal};

    fn key(cache: &KeyCache, id: &str, cidrs: &[&str], expires_at: Option<u64>) -> Arc<CachedKey> {
        let principal = Principal {
            subject: "u1".into(),
            api_key_id: Some(id.into()),
            issuer: None,
            tier: None,
            roles: vec![],
            scopes: vec![],
            method: AuthMethod::ApiKey,
        };
        Arc::new(CachedKey {
            id: id.into(),
            verified: Verified { principal, revocable: None, own_user: false, internal: Default::default() },
            expires_at,
            revoked: false,
            owner_disabled: false,
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            usage: cache.usage_of(id),
        })
    }

    #[test]
    fn entries_expire_are_bounded_and_evicted() {
        let c = KeyCache::new(3, 1_000);
        c.insert_known([1; 32], key(&c, "a", &[], None), 0);
        assert!(matches!(c.get(&[1; 32], 999), Lookup::Known(_)));
        assert!(matches!(c.get(&[1; 32], 1_000), Lookup::Miss));
        for i in 0..100u8 {
            c.insert_unknown([i; 32], 5_000);
            assert!(c.len().1 <= 3);
        }
        assert!(matches!(c.get(&[99; 32], 5_001), Lookup::Unknown));
        c.evict(&[99; 32]);
        assert!(matches!(c.get(&[99; 32], 5_001), Lookup::Miss));
    }

    #[test]
    fn expiry_cidrs_and_usage() {
        let c = KeyCache::new(10, 60_000);
        let k = key(&c, "a", &["10.0.0.0/8", "::1/128"], Some(100));
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(k.admit(ip("10.1.2.3"), 50).is_ok());
        assert!(k.admit(ip("::ffff:10.1.2.3"), 51).is_ok());
        assert!(k.admit(ip("::1"), 52).is_ok());
        assert_eq!(k.admit(ip("127.0.0.1"), 50).unwrap_err(), Refusal::AddressNotAllowed);
        assert_eq!(k.admit(None, 50).unwrap_err(), Refusal::AddressNotAllowed);
        assert_eq!(k.admit(ip("10.1.2.3"), 100).unwrap_err(), Refusal::Expired);
        let again = key(&c, "a", &[], None);
        assert!(again.admit(None, 60).is_ok());
        assert_eq!(c.take_usage(), vec![("a".to_string(), 60, 4)]);
        assert!(c.take_usage().is_empty());
        drop((k, again));
        c.take_usage();
        assert!(c.usage.lock().unwrap().is_empty(), "unused counters go");
        c.restore_usage(&[("b".into(), 7, 2)]);
        assert_eq!(c.take_usage(), vec![("b".to_string(), 7, 2)]);
    }
}
