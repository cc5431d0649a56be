//! Connection-serving threads: one single-threaded event loop per CPU, the way
//! nginx runs one worker process per CPU.
//!
//! The accept loop hands each admitted connection to the next worker, round
//! robin, and the connection lives on that worker's thread until it closes:
//! its requests, the tasks they spawn and the upstream connections they use
//! (each upstream keeps one pool per worker, see [`current`]). Nothing about a
//! request crosses threads, so there is no work stealing, no cross-thread
//! wake-up and no cache line shared between cores on the request path, which a
//! work-stealing runtime pays for on every request a proxy forwards.
//!
//! Background work (audit writing, health checks, the admin console, the
//! database and Redis drivers) stays on the main runtime.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

/// A connection handed to a worker: called on the worker's thread, inside its
/// runtime, to make the future that serves the connection.
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the current thread, from 1; 0 on any other
/// thread. Per-worker resources are indexed with it.
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// How many workers `configured` asks for: itself, or one per CPU when 0.
pub fn count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map(usize::from).unwrap_or(1)
    }
}

/// The running workers. Dropping this closes their queues: each worker then
/// stops, cancelling the connections it still serves.
pub struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` workers (at least one).
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut queues = Vec::with_capacity(n.max(1));
        for i in 1..=n.max(1) {
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            std::thread::Builder::new().name(format!("rampart-worker-{i}")).spawn(move || {
                WORKER.with(|w| w.set(i));
                runtime.block_on(async move {
                    tokio::spawn(keep_timer_wake_near());
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job());
                    }
                });
            })?;
            queues.push(tx);
        }
        Ok(Self { queues, next: AtomicUsize::new(0) })
    }

    /// Runs `job` on the next worker. Returns `false` when the workers are gone.
    pub fn dispatch(&self, job: Job) -> bool {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        self.queues[i].send(job).is_ok()
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

/// How often a worker's timer ticks for [`keep_timer_wake_near`].
const TIMER_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Ticks every [`TIMER_TICK`] for as long as the worker runs, so that its
/// runtime always has a timer due within a second.
///
/// Why: every request arms timers (hyper's header-read timeout, the upstream
/// response timeout), and tokio wakes its own driver (a write to an eventfd,
/// a system call) whenever a timer is armed that is due before the earliest
/// one it knew of. With nothing else pending that was the case for about a
/// third of the requests; with a timer always due within a second, the
/// request timers (seconds away) never are. The cost is one wake-up per
/// second per idle worker.
async fn keep_timer_wake_near() {
    let mut tick = tokio::time::interval(TIMER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_numbered_worker_threads_round_robin() {
        let workers = Workers::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            assert!(workers.dispatch(Box::new(move || {
                Box::pin(async move {
                    // Inside the worker's runtime: spawning and timers work.
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    tx.send(current()).unwrap();
                })
            })));
        }
        let mut seen: Vec<usize> = (0..4).map(|_| rx.recv().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 1, 2, 2]);
        assert_eq!(current(), 0, "the test thread is no worker");
    }

    #[test]
    fn zero_means_one_per_cpu() {
        assert_eq!(count(3), 3);
        assert!(count(0) >= 1);
    }
}
