//! The password-hashing pool: argon2id work (tens of milliseconds and ~19 MiB
//! per hash, on purpose) runs here, on blocking threads, never on the threads
//! that proxy requests.
//!
//! At most `workers` hashes run at once and at most `queue` more wait; past
//! that a request is refused at once with [`Busy`], so a login flood is turned
//! away in microseconds instead of piling up work and memory, and the proxy
//! keeps serving. Callers answer `Busy` with 503 and `Retry-After`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rampart_core::password::{self, Argon2Params, PasswordError, Verified};
use tokio::sync::Semaphore;

/// The pool is full: refuse the request (503), do not wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("password hashing is at capacity")]
pub struct Busy;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("the hashing task failed")]
    Join,
}

#[derive(Debug)]
pub struct HashPool {
    running: Semaphore,
    /// Admitted calls: running plus waiting.
    admitted: AtomicUsize,
    limit: usize,
    params: Argon2Params,
}

impl HashPool {
    /// `workers` hashes at once (at least 1), `queue` more waiting.
    pub fn new(workers: usize, queue: usize, params: Argon2Params) -> Arc<Self> {
        let workers = workers.max(1);
        Arc::new(Self {
            running: Semaphore::new(workers),
            admitted: AtomicUsize::new(0),
            limit: workers + queue,
            params,
        })
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> &Argon2Params {
        &self.params
    }

    /// Hashes `password` (already normalised) with the pool's parameters.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let params = self.params;
        self.run(move || password::hash(&password, &params)).await?.map_err(HashError::from)
    }

    /// Verifies `password` against `stored`, in any supported format.
    pub async fn verify(&self, password: String, stored: String) -> Result<Verified, HashError> {
        let params = self.params;
        self.run(move || password::verify(&password, &stored, &params)).await?.map_err(HashError::from)
    }

    /// Runs `work` on a blocking thread once a worker is free, or refuses at
    /// once when the pool and its queue are full.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, HashError> {
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        let _slot = Slot(&self.admitted);
        if admitted >= self.limit {
            return Err(Busy.into());
        }
        let _permit = self.running.acquire().await.map_err(|_| HashError::Join)?;
        tokio::task::spawn_blocking(work).await.map_err(|_| HashError::Join)
    }

    /// Calls admitted now (running and waiting).
    pub fn load(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }
}

/// Gives an admission back when the call ends, however it ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_is_refused_fast_and_the_admitted_finish() {
        // Slow enough to pile up: 8 MiB, 3 passes.
        let pool = HashPool::new(1, 2, Argon2Params::new(8 * 1024, 3, 1).unwrap());
        let started = Instant::now();
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let t = Instant::now();
                    (pool.hash(format!("password number {i}")).await, t.elapsed())
                })
            })
            .collect();
        let mut ok = 0;
        let mut busy = Vec::new();
        for c in calls {
            match c.await.unwrap() {
                (Ok(h), _) => {
                    assert!(h.starts_with("$argon2id$"));
                    ok += 1;
                }
                (Err(HashError::Busy(_)), took) => busy.push(took),
                (Err(e), _) => panic!("{e}"),
            }
        }
        assert!((1..=3).contains(&ok), "{ok} admitted of 20 with 1 worker and a queue of 2");
        assert_eq!(busy.len(), 20 - ok);
        assert!(busy.iter().all(|t| *t < Duration::from_millis(50)), "refusals waited: {busy:?}");
        assert_eq!(pool.load(), 0, "every admission was given back");
        // And the pool works again once the flood is over.
        let stored = pool.hash("correct horse battery staple".into()).await.unwrap();
        assert!(pool.verify("correct horse battery staple".into(), stored.clone()).await.is_ok());
        assert!(matches!(pool.verify("wrong".into(), stored).await, Err(HashError::Password(PasswordError::Mismatch))));
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
