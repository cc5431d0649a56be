//! The in-process limit store: GCRA state for up to `max_keys` keys, in
//! bounded memory, however many distinct keys clients invent.
//!
//! Keys are hashed with a per-process random key (std's `RandomState`), so a
//! client cannot aim many keys at one shard or one bucket, and each key costs
//! 16 bytes plus table overhead (its 64-bit hash and its TAT) whatever its
//! length. Two keys sharing a 64-bit hash would share one allowance; among a
//! hundred thousand keys that happens with a probability of about 3 in 10^10.
//!
//! The table is split into shards behind their own mutexes. A full shard makes
//! room by dropping idle keys first (a key whose TAT is not after now is the
//! same as an absent one, so this loses nothing), and only when none is idle by
//! evicting the key closest to idle, which is then counted in
//! [`MemoryStore::evictions`].
//!
//! ```
//! use std::time::Duration;
//! use rampart::limit::memory::MemoryStore;
//! use rampart::limit::{GcraParams, LimitCheck, Op};
//!
//! let store = MemoryStore::new(10_000);
//! let params = GcraParams::new(1, Duration::from_secs(1), 2).unwrap();
//! let check = LimitCheck { key: "rl:{ip:192.0.2.1}:api".into(), params, weight: 1, op: Op::Check };
//! let allowed = |now| store.apply(now, std::slice::from_ref(&check))[0].allowed;
//! assert!(allowed(0) && allowed(0));
//! assert!(!allowed(0));
//! assert!(allowed(1_000_000_000));
//! assert_eq!(store.len(), 1);
//! ```

use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rampart_core::gcra::decide;

use super::{Decision, LimitCheck, Op};

/// Shards wanted per core: enough that threads rarely meet on one mutex.
const SHARDS_PER_CORE: usize = 16;
/// Fewest shards: contention stays low even when parallelism is under-reported.
const MIN_SHARDS: usize = 64;
const MAX_SHARDS: usize = 1024;
/// Shards are never smaller than this (unless the whole store is), so that
/// choosing whom to evict within one shard stays close to choosing globally.
const MIN_KEYS_PER_SHARD: usize = 256;
/// A sweep remembers the smallest quarter of a shard's TATs: about 4 bytes per
/// key, for a sweep every quarter-shard of lossy evictions at most.
const CANDIDATE_SHARE: usize = 4;

/// Hashes an already hashed `u64` key to itself.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by the tables here; this keeps any other use
        // correct, if not fast.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type TatMap = HashMap<u64, u64, BuildHasherDefault<IdentityHasher>>;

/// A shard on cache lines of its own, so that threads busy with neighbouring
/// shards do not slow each other down.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// In-process GCRA state with a fixed ceiling on the number of keys.
pub struct MemoryStore {
    hasher: RandomState,
    shards: Box<[Padded]>,
    max_keys: usize,
    evictions: AtomicU64,
}

impl MemoryStore {
    /// At most `max_keys` keys are kept (at least 1), in a power-of-two number
    /// of shards chosen from the available parallelism (64 on small machines;
    /// fewer for small stores, so that a shard holds at least 256 keys).
    pub fn new(max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
        let wanted = parallelism.saturating_mul(SHARDS_PER_CORE).clamp(MIN_SHARDS, MAX_SHARDS).next_power_of_two();
        let count = wanted.min(prev_power_of_two(max_keys / MIN_KEYS_PER_SHARD));
        // The per-shard ceilings add up to exactly `max_keys`: the first
        // `max_keys % count` shards hold one key more than the others.
        let shards = (0..count)
            .map(|i| Padded(Mutex::new(Shard::new(max_keys / count + usize::from(i < max_keys % count)))))
            .collect();
        Self { hasher: RandomState::new(), shards, max_keys, evictions: AtomicU64::new(0) }
    }

    /// Applies all checks at `now_ns` atomically: if any `Check` is refused or
    /// any `Peek` finds its budget exhausted, nothing is stored for any of them
    /// (a refused request consumes no allowance), as in the Redis script.
    /// Returns one Decision per check, in order.
    ///
    /// Checks of one key see the effect of the earlier ones. When the batch is
    /// refused, the decisions of its allowed checks still say what they would
    /// have left.
    pub fn apply(&self, now_ns: u64, checks: &[LimitCheck]) -> Vec<Decision> {
        if let [check] = checks {
            // One limit per request is the common case: one lock, no
            // bookkeeping, and one table lookup when the key exists.
            let (index, hash) = self.locate(&check.key);
            let mut shard = self.lock(index);
            if let Some(slot) = shard.tats.get_mut(&hash) {
                let (decision, store) = decide(Some(*slot), now_ns, &check.params, check.weight, check.op);
                match store.filter(|_| decision.allowed) {
                    Some(tat) if tat > now_ns => {
                        *slot = tat;
                        // A refund lowers a TAT: keep `floor` below it (see `Shard`).
                        shard.floor = shard.floor.min(tat);
                    }
                    // Idle already: the same as absent (see `Shard::store`).
                    Some(_) => {
                        shard.tats.remove(&hash);
                    }
                    None => {}
                }
                return vec![decision];
            }
            let (decision, store) = decide(None, now_ns, &check.params, check.weight, check.op);
            if let Some(tat) = store.filter(|_| decision.allowed) {
                self.count_eviction(shard.store(hash, tat, now_ns));
            }
            return vec![decision];
        }
        let located: Vec<(usize, u64)> = checks.iter().map(|c| self.locate(&c.key)).collect();
        // Locking in ascending shard order, each shard once, keeps concurrent
        // multi-key batches from deadlocking.
        let mut order: Vec<usize> = located.iter().map(|&(index, _)| index).collect();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<MutexGuard<'_, Shard>> = order.iter().map(|&index| self.lock(index)).collect();
        let slot = |index: usize| order.partition_point(|&i| i < index);

        // (slot, hash, TAT) to store once every check is decided.
        let mut pending: Vec<(usize, u64, u64)> = Vec::with_capacity(checks.len());
        let mut refused = false;
        let mut decisions = Vec::with_capacity(checks.len());
        for (check, &(index, hash)) in checks.iter().zip(&located) {
            let slot = slot(index);
            let earlier = pending.iter_mut().find(|p| p.1 == hash);
            let stored = match &earlier {
                Some(p) => Some(p.2),
                None => guards.get(slot).and_then(|s| s.tats.get(&hash).copied()),
            };
            let (decision, store) = decide(stored, now_ns, &check.params, check.weight, check.op);
            // A refused check or an exhausted budget refuses the request:
            // then no limit is charged for it.
            refused |= !decision.allowed && matches!(check.op, Op::Check | Op::Peek);
            if let Some(tat) = store {
                match earlier {
                    Some(p) => p.2 = tat,
                    None => pending.push((slot, hash, tat)),
                }
            }
            decisions.push(decision);
        }
        if !refused {
            for (slot, hash, tat) in pending {
                if let Some(shard) = guards.get_mut(slot) {
                    self.count_eviction(shard.store(hash, tat, now_ns));
                }
            }
        }
        decisions
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).tats.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys evicted while not yet idle (lossy evictions), since start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The most keys this store holds.
    pub fn capacity(&self) -> usize {
        self.max_keys
    }

    /// The shard and the table key of `key`.
    fn locate(&self, key: &str) -> (usize, u64) {
        let hash = self.hasher.hash_one(key);
        // The tables use the low bits for the bucket and the top seven as tags,
        // so the shard comes from bits in between, leaving both varied.
        let index = (hash >> 32) as usize & (self.shards.len() - 1);
        (index, hash)
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // Nothing here panics while holding a lock; should something ever, the
        // shard is still a valid table of TATs (at worst its eviction hints
        // are stale), which beats failing every later request.
        self.shards[index].0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count_eviction(&self, lossy: bool) {
        if lossy {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The largest power of two not above `n`, and 1 for 0.
fn prev_power_of_two(n: usize) -> usize {
    match n.checked_ilog2() {
        Some(log) => 1 << log,
        None => 1,
    }
}

/// One shard: key hash → TAT, plus what it remembers between sweeps.
///
/// Finding the key with the smallest TAT takes a scan of the shard, so one
/// scan remembers many: `candidates` holds the smallest TATs it found, and
/// `floor` is at most the TAT of every entry that is not a candidate (every
/// new entry, and every update that lowers a TAT, as a refund does, lowers
/// `floor` to its TAT). A candidate
/// whose TAT is still as recorded and not above `floor` is therefore the
/// minimum of the whole shard, and evicting it needs no scan. A flood of new
/// keys at one rate inserts TATs later than those of the keys before it, so a
/// scan is needed about once per `candidates.len()` evictions.
struct Shard {
    tats: TatMap,
    cap: usize,
    /// (TAT when recorded, key), smallest on top.
    candidates: BinaryHeap<Reverse<(u64, u64)>>,
    floor: u64,
}

impl Shard {
    fn new(cap: usize) -> Self {
        Self { tats: TatMap::default(), cap, candidates: BinaryHeap::new(), floor: u64::MAX }
    }

    /// Stores `tat` for `key`; true when that cost a lossy eviction.
    fn store(&mut self, key: u64, tat: u64, now: u64) -> bool {
        if tat <= now {
            // Idle already: the same as absent, so take no room for it.
            self.tats.remove(&key);
            return false;
        }
        if let Some(slot) = self.tats.get_mut(&key) {
            *slot = tat;
            // A refund lowers a TAT: `floor` must stay below it.
            self.floor = self.floor.min(tat);
            return false;
        }
        let lossy = self.tats.len() >= self.cap && self.make_room(now);
        self.floor = self.floor.min(tat);
        self.tats.insert(key, tat);
        lossy
    }

    /// Removes one entry at least (the shard is full, so there is one): idle
    /// ones if any, else the one with the smallest TAT. True when lossy.
    fn make_room(&mut self, now: u64) -> bool {
        if let Some(lossy) = self.evict_candidate(now) {
            return lossy;
        }
        if self.sweep(now) {
            return false;
        }
        // The sweep found nothing idle and recorded the smallest TATs of the
        // whole shard, so the first candidate is evicted now.
        self.evict_candidate(now).unwrap_or(false)
    }

    /// Evicts the smallest candidate when that is provably idle or the minimum
    /// of the shard; `None` when a sweep is needed to know.
    fn evict_candidate(&mut self, now: u64) -> Option<bool> {
        while let Some(&Reverse((recorded, key))) = self.candidates.peek() {
            let Some(&tat) = self.tats.get(&key) else {
                self.candidates.pop();
                continue;
            };
            if tat != recorded {
                // Used since the sweep: keep it in order under its new TAT if
                // `floor` would not already cover it.
                self.candidates.pop();
                if tat < self.floor {
                    self.candidates.push(Reverse((tat, key)));
                }
                continue;
            }
            if tat <= now || tat <= self.floor {
                self.candidates.pop();
                self.tats.remove(&key);
                return Some(tat > now);
            }
            return None;
        }
        None
    }

    /// Drops every idle entry and records the smallest remaining TATs as
    /// eviction candidates. True when anything was dropped.
    fn sweep(&mut self, now: u64) -> bool {
        let before = self.tats.len();
        let mut live = Vec::with_capacity(before);
        self.tats.retain(|&key, &mut tat| {
            let keep = tat > now;
            if keep {
                live.push(Reverse((tat, key)));
            }
            keep
        });
        let wanted = (self.cap / CANDIDATE_SHARE).max(1);
        self.floor = match live.get(wanted) {
            Some(_) => {
                let (_, &mut Reverse((nth, _)), _) = live.select_nth_unstable_by(wanted, |a, b| a.0.cmp(&b.0));
                nth
            }
            None => u64::MAX,
        };
        live.truncate(wanted);
        // The shard keeps only the candidates, not the scan's whole-shard buffer.
        live.shrink_to_fit();
        self.candidates = BinaryHeap::from(live);
        self.tats.len() < before
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;
    use crate::limit::{GcraParams, Op};

    const SEC: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    /// 10 per second (one every 100 ms), bursts of 5.
    fn ten_per_sec() -> GcraParams {
        GcraParams::new(10, Duration::from_secs(1), 5).unwrap()
    }

    fn limit(key: &str, weight: u64, op: Op) -> LimitCheck {
        LimitCheck { key: key.into(), params: ten_per_sec(), weight, op }
    }

    /// Applies `checks` at `now` and compares (allowed, remaining) of each.
    #[track_caller]
    fn check(store: &MemoryStore, now: u64, checks: &[LimitCheck], want: &[(bool, u64)]) {
        let got: Vec<(bool, u64)> = store.apply(now, checks).iter().map(|d| (d.allowed, d.remaining)).collect();
        assert_eq!(got, want, "at {now}: {checks:?}");
    }

    #[test]
    fn exact_boundaries_through_the_store() {
        let store = MemoryStore::new(1_000);
        let a = [limit("a", 1, Op::Check)];
        for left in (0..5).rev() {
            check(&store, SEC, &a, &[(true, left)]);
        }
        check(&store, SEC, &a, &[(false, 0)]);
        check(&store, SEC + 100 * MS - 1, &a, &[(false, 0)]);
        check(&store, SEC + 100 * MS, &a, &[(true, 0)]);
        check(&store, SEC + 100 * MS, &a, &[(false, 0)]);
        // Peeks consume nothing; debits always do.
        let b = [limit("b", 1, Op::Peek)];
        check(&store, SEC, &b, &[(true, 5)]);
        check(&store, SEC, &[limit("b", 7, Op::Debit)], &[(true, 0)]);
        check(&store, SEC + 199 * MS, &b, &[(false, 0)]);
        check(&store, SEC + 201 * MS, &b, &[(true, 0)]);
        assert_eq!((store.len(), store.evictions(), store.capacity()), (2, 0, 1_000));
        // A key that is idle after its decision is dropped, not kept.
        check(&store, 10 * SEC, &[limit("a", 0, Op::Debit)], &[(true, 5)]);
        assert_eq!(store.len(), 1);
        // A refund gives back what it names, and a key it fills is dropped,
        // alone or in a batch.
        check(&store, 10 * SEC, &[limit("c", 4, Op::Check)], &[(true, 1)]);
        check(&store, 10 * SEC, &[limit("c", 3, Op::Refund)], &[(true, 4)]);
        check(&store, 10 * SEC, &[limit("c", 9, Op::Refund)], &[(true, 5)]);
        assert_eq!(store.len(), 1);
        check(&store, 10 * SEC, &[limit("c", 2, Op::Check), limit("d", 1, Op::Check)], &[(true, 3), (true, 4)]);
        check(&store, 10 * SEC, &[limit("c", 2, Op::Refund), limit("d", 1, Op::Refund)], &[(true, 5), (true, 5)]);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_refused_check_stores_nothing_for_any_key() {
        let store = MemoryStore::new(1_000);
        check(&store, 0, &[limit("full", 5, Op::Check)], &[(true, 0)]);
        // "other" would pass, but "full" refuses the request: nothing is taken.
        let both = [limit("other", 2, Op::Check), limit("full", 1, Op::Check)];
        for _ in 0..3 {
            check(&store, 0, &both, &[(true, 3), (false, 0)]);
        }
        check(&store, 0, &[limit("other", 1, Op::Peek)], &[(true, 5)]);
        // Once "full" refills, both are taken together.
        check(&store, 100 * MS, &both, &[(true, 3), (true, 0)]);
        check(&store, 100 * MS, &[limit("other", 1, Op::Peek)], &[(true, 3)]);
        // Checks of one key in one batch see each other.
        let twice = [limit("twice", 3, Op::Check), limit("twice", 2, Op::Check), limit("twice", 1, Op::Check)];
        check(&store, 0, &twice, &[(true, 2), (true, 0), (false, 0)]);
        check(&store, 0, &twice[..2], &[(true, 2), (true, 0)]);
        check(&store, 0, &[], &[]);
        // An exhausted budget refuses the request too: its rate check is not charged.
        check(&store, 0, &[limit("spent", 6, Op::Debit)], &[(true, 0)]);
        let with_budget = [limit("rate", 1, Op::Check), limit("spent", 0, Op::Peek)];
        for _ in 0..3 {
            check(&store, 0, &with_budget, &[(true, 4), (false, 0)]);
        }
        check(&store, 0, &[limit("rate", 1, Op::Peek)], &[(true, 5)]);
    }

    #[test]
    fn concurrent_checks_at_one_instant_allow_exactly_the_burst() {
        let burst = 1_000;
        let store = MemoryStore::new(100_000);
        let params = GcraParams::new(1, Duration::from_secs(60), burst).unwrap();
        let hot = LimitCheck { key: "hot".into(), params, weight: 1, op: Op::Check };
        // Each thread also touches a key of its own, in both orders, so the
        // multi-shard path runs concurrently too.
        let allowed: u64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|t| {
                    let (store, hot) = (&store, hot.clone());
                    s.spawn(move || {
                        let own = LimitCheck { key: format!("own-{t}"), params, weight: 0, op: Op::Check };
                        let mut allowed = 0;
                        for i in 0..500 {
                            let batch = if i % 2 == 0 { vec![hot.clone()] } else { vec![own.clone(), hot.clone()] };
                            allowed += u64::from(store.apply(7 * SEC, &batch).last().unwrap().allowed);
                        }
                        allowed
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(allowed, burst);
    }

    #[test]
    fn eviction_keeps_the_store_bounded() {
        let store = MemoryStore::new(1_000);
        for i in 0..20_000 {
            store.apply(0, &[limit(&format!("k{i}"), 1, Op::Check)]);
            assert!(store.len() <= 1_000);
        }
        // Nothing was idle at one instant, so every key beyond the capacity
        // cost one lossy eviction.
        assert_eq!(store.len(), 1_000);
        assert_eq!(store.evictions(), 19_000);
        // The newest key is still held.
        check(&store, 0, &[limit("k19999", 1, Op::Check)], &[(true, 3)]);
        assert_eq!(MemoryStore::new(0).capacity(), 1);
    }

    #[test]
    fn idle_keys_are_evicted_first_and_the_fullest_last() {
        let store = MemoryStore::new(300);
        let fill = |prefix: &str, n: u64, now: u64, weight: u64| {
            for i in 0..n {
                check(&store, now, &[limit(&format!("{prefix}{i}"), weight, Op::Check)], &[(true, 5 - weight)]);
            }
        };
        // 300 keys at t=0 with one unit used are idle from t=100ms on.
        fill("old", 300, 0, 1);
        assert_eq!(store.len(), 300);
        // 300 new keys at t=1s replace them all without a lossy eviction.
        fill("new", 300, SEC, 1);
        assert_eq!((store.len(), store.evictions()), (300, 0));
        // A heavy user (bucket nearly empty) survives a flood of light ones,
        // which evict each other: the smallest TAT goes first.
        check(&store, 2 * SEC, &[limit("heavy", 4, Op::Check)], &[(true, 1)]);
        fill("light", 2_000, 2 * SEC, 1);
        assert_eq!(store.len(), 300);
        assert!(store.evictions() > 0);
        check(&store, 2 * SEC, &[limit("heavy", 1, Op::Check)], &[(true, 0)]);
        check(&store, 2 * SEC, &[limit("heavy", 1, Op::Check)], &[(false, 0)]);
    }

    /// A shard of `cap` keys holding `(key, tat)` at time 0.
    fn shard(cap: usize, entries: impl IntoIterator<Item = (u64, u64)>) -> Shard {
        let mut shard = Shard::new(cap);
        for (key, tat) in entries {
            assert!(!shard.store(key, tat, 0));
        }
        shard
    }

    #[test]
    fn shards_evict_the_smallest_tat_even_after_updates() {
        // 8 keys, so a sweep remembers 2 candidates.
        let mut shard = shard(8, (1..=8).map(|k| (k, k * 10)));
        // The sweep records keys 1 and 2; key 1 (TAT 10) goes.
        assert!(shard.store(17, 170, 0));
        assert!(!shard.tats.contains_key(&1));
        // Key 2 is used again: its record is stale, and key 3 is the smallest.
        assert!(!shard.store(2, 35, 0));
        assert!(shard.store(18, 180, 0));
        assert!(!shard.tats.contains_key(&3) && shard.tats.contains_key(&2));
        // Key 2 is used again, but stays below every other key: it goes next,
        // found again among the candidates without a sweep.
        assert!(!shard.store(2, 38, 0));
        assert!(shard.store(19, 190, 0));
        assert!(!shard.tats.contains_key(&2));
        // At t=45 key 4 (TAT 40) is idle: room without loss.
        assert!(!shard.store(20, 200, 45));
        assert!(!shard.tats.contains_key(&4));
        // A TAT that is idle already takes no room at all.
        assert!(!shard.store(21, 45, 45));
        assert_eq!(shard.tats.len(), 8);
    }

    /// A refund lowers a key's TAT below `floor`: that key, not the
    /// recorded candidate, is then the smallest and goes first.
    #[test]
    fn a_lowered_tat_is_evicted_before_the_candidates() {
        let mut shard = shard(8, (1..=8).map(|k| (k, k * 10)));
        // The sweep records keys 1 and 2; key 1 goes.
        assert!(shard.store(17, 170, 0));
        // Key 8 is refunded down to 5, below candidate key 2 (TAT 20).
        assert!(!shard.store(8, 5, 0));
        assert!(shard.store(18, 180, 0));
        assert!(!shard.tats.contains_key(&8), "the smallest TAT was kept");
        assert!(shard.tats.contains_key(&2));
    }

    #[test]
    fn shards_never_evict_lossily_while_a_key_is_idle() {
        // 12 keys: a sweep remembers 3 candidates (keys 1 to 3).
        let mut shard = shard(12, (1..=12).map(|k| (k, 100 + k * 10)));
        assert!(shard.store(25, 1_000, 0));
        // A new key with a small TAT takes the room of key 2 ...
        assert!(shard.store(26, 5, 0));
        assert!(!shard.tats.contains_key(&2));
        // ... and once it is idle, it is dropped before candidate key 3.
        assert!(!shard.store(27, 1_000, 10));
        assert!(!shard.tats.contains_key(&26) && shard.tats.contains_key(&3));
    }

    /// Resident memory in bytes, from /proc/self/statm and the page size in
    /// the auxiliary vector (`AT_PAGESZ`).
    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        let page_size = auxv
            .chunks_exact(16)
            .map(|c| (u64::from_ne_bytes(c[..8].try_into().unwrap()), u64::from_ne_bytes(c[8..].try_into().unwrap())))
            .find(|&(kind, _)| kind == 6)
            .map_or(4096, |(_, size)| size);
        pages * page_size
    }

    #[test]
    fn a_million_unique_keys_stay_within_max_keys_and_bounded_memory() {
        let max_keys = 100_000;
        let store = MemoryStore::new(max_keys);
        let before = resident_bytes();
        let params = ten_per_sec();
        let mut check = LimitCheck { key: String::with_capacity(32), params, weight: 1, op: Op::Check };
        for i in 0..1_000_000_u64 {
            check.key.clear();
            std::fmt::Write::write_fmt(&mut check.key, format_args!("rl:{{ip:{i}}}:api")).unwrap();
            // Time moves 1 µs per request: keys go idle after 100 ms, so the
            // flood exercises both idle sweeps and lossy evictions.
            let now = SEC + i * 1_000;
            assert!(store.apply(now, std::slice::from_ref(&check))[0].allowed);
        }
        let after = resident_bytes();
        let len = store.len();
        println!(
            "1,000,000 unique keys, max_keys {max_keys}: len {len}, lossy evictions {}, RSS before {before} B ({:.1} MiB), after {after} B ({:.1} MiB), growth {:.1} MiB",
            store.evictions(),
            before as f64 / 1_048_576.0,
            after as f64 / 1_048_576.0,
            after.saturating_sub(before) as f64 / 1_048_576.0,
        );
        assert!(len <= max_keys, "{len} keys");
        assert!(after.saturating_sub(before) < 64 << 20, "grew from {before} to {after} bytes");
    }
}
