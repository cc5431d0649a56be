//! Verified tokens, remembered until they expire, in bounded memory.
//!
//! Keyed by the SHA-256 of the token, so the table never holds a usable
//! credential. At most `capacity` entries: when full, expired entries are
//! dropped, and if none had expired the table is cleared (a flood of distinct
//! valid tokens then costs signature checks again, never memory).

use std::collections::HashMap;
use std::sync::Mutex;

use rampart_core::principal::Principal;
use sha2::{Digest, Sha256};

/// What a verified token yields.
#[derive(Clone, Debug)]
pub struct Verified {
    pub principal: Principal,
    /// For the gateway's own tokens: what revocation is checked against (on
    /// every use, cached or not).
    pub revocable: Option<Revocable>,
    /// The principal is one of the gateway's own users or service clients (its
    /// token, or an API key a user owns): routes with `fresh_roles` re-read
    /// its roles.
    pub own_user: bool,
    /// The internal JWT made for this token (`[auth.headers] internal_jwt`)
    /// and its expiry, shared by the cached copies: re-signed only when half
    /// its life is gone.
    pub internal: std::sync::Arc<Mutex<Option<(http::HeaderValue, u64)>>>,
}

#[derive(Clone, Debug)]
pub struct Revocable {
    pub jti: Option<String>,
    pub ver: u32,
}

#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], (Verified, u64)>>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; `0` caches nothing.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: Mutex::new(HashMap::new()) }
    }

    /// The principal of `token` if it was verified before and has not expired
    /// at `now` (unix seconds).
    pub fn get(&self, token: &str, now: u64) -> Option<Verified> {
        if self.capacity == 0 {
            return None;
        }
        let key = digest(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&key) {
            Some((p, exp)) if *exp > now => Some(p.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token until `exp` (unix seconds).
    pub fn insert(&self, token: &str, verified: Verified, exp: u64) {
        if self.capacity == 0 {
            return;
        }
        let key = digest(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            entries.retain(|_, (_, e)| *e > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (verified, exp));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rampart_core::principal::AuthMethod;

    fn who(s: &str) -> Verified {
        Verified { principal: principal(s), revocable: None, own_user: false, internal: Default::default() }
    }

    fn principal(s: &str) -> Principal {
        Principal {
            subject: s.into(),
            api_key_id: None,
            issuer: None,
            tier: None,
            roles: vec![],
            scopes: vec![],
            method: AuthMethod::Jwt,
        }
    }

    #[test]
    fn entries_live_until_expiry() {
        let c = TokenCache::new(10);
        c.insert("t1", who("a"), 100);
        assert_eq!(c.get("t1", 99).map(|v| v.principal.subject), Some("a".into()));
        assert!(c.get("t1", 100).is_none(), "expired at exp");
        assert!(c.is_empty(), "an expired entry is dropped when seen");
        assert!(c.get("t2", 0).is_none());
    }

    #[test]
    fn size_is_bounded_by_the_capacity() {
        let far = u64::MAX;
        let c = TokenCache::new(100);
        for i in 0..10_000 {
            c.insert(&format!("token-{i}"), who("a"), far);
            assert!(c.len() <= 100);
        }
        let off = TokenCache::new(0);
        off.insert("t", who("a"), far);
        assert!(off.get("t", 0).is_none());
    }
}
