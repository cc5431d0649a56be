//! Verified tokens, remembered until they expire, in bounded memory.
//!
//! Keyed by the SHA-256 of the token, so the table never holds a usable
//! credential. At most `capacity` entries: when full, expired entries are
//! dropped, and if none had expired the table is cleared (a flood of distinct
//! valid tokens then costs signature checks again, never memory).
//!
//! A token is remembered with the key set that verified it (a
//! [`KeyStamp`]), and used from here only while that set is still its
//! issuer's: when a JWKS refresh or a key rotation drops a key (a
//! compromised one, say), the tokens it signed are checked again, and
//! refused, at once rather than when they expire.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};

use rampart_core::principal::Principal;
use rampart_core::token::Verifier;
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

/// The keys that verified a cached token: its issuer (by position in the
/// auth layer's list) and that issuer's verifier of the moment. A verifier
/// is replaced whole when its keys change, so the entry holds while the
/// issuer's verifier is this same one. (A `Weak`: the old verifier's memory
/// is not reused while the entry lives, so an address cannot come back.)
#[derive(Clone, Debug)]
pub struct KeyStamp {
    pub issuer: usize,
    pub keys: Weak<Verifier>,
}

#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

/// A cached token: what it yields, its expiry, the keys that verified it.
type Entry = (Verified, u64, Option<KeyStamp>);

impl TokenCache {
    /// A cache of at most `capacity` tokens; `0` caches nothing.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: Mutex::new(HashMap::new()) }
    }

    /// The principal of `token` if it was verified before and has not expired
    /// at `now` (unix seconds).
    pub fn get(&self, token: &str, now: u64) -> Option<Verified> {
        self.get_checked(token, now, |_| true)
    }

    /// As [`get`](Self::get), for an entry whose [`KeyStamp`] `current`
    /// still accepts; one it refuses is forgotten.
    pub fn get_checked(&self, token: &str, now: u64, current: impl FnOnce(&KeyStamp) -> bool) -> Option<Verified> {
        if self.capacity == 0 {
            return None;
        }
        let key = digest(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&key) {
            Some((p, exp, stamp)) if *exp > now && stamp.as_ref().is_none_or(current) => Some(p.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token until `exp` (unix seconds).
    pub fn insert(&self, token: &str, verified: Verified, exp: u64) {
        self.insert_stamped(token, verified, exp, None);
    }

    /// As [`insert`](Self::insert), remembering which keys verified it.
    pub fn insert_stamped(&self, token: &str, verified: Verified, exp: u64, stamp: Option<KeyStamp>) {
        if self.capacity == 0 {
            return;
        }
        let key = digest(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            entries.retain(|_, (_, e, _)| *e > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (verified, exp, stamp));
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
    fn an_entry_holds_while_its_stamp_is_accepted() {
        let c = TokenCache::new(10);
        let keys = std::sync::Arc::new(Verifier::new(Default::default(), ["i"], ["a"]));
        c.insert_stamped("t", who("a"), 100, Some(KeyStamp { issuer: 0, keys: std::sync::Arc::downgrade(&keys) }));
        let same = |s: &KeyStamp| std::ptr::eq(s.keys.as_ptr(), std::sync::Arc::as_ptr(&keys));
        assert!(c.get_checked("t", 1, same).is_some());
        assert!(c.get_checked("t", 1, |_| false).is_none(), "refused by the stamp check");
        assert!(c.is_empty(), "and forgotten");
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
