//! A large batch's scatter on two threads, through a rayon pool of one helper thread.
//!
//! A batch's rows go to random slots, each a few cache misses away, and a compaction moves a
//! slot's W - 1 rows every slack appends: the scatter is bound by memory latency, which a
//! second core hides as well as the first. So a batch of at least `min_rows` rows is written
//! by the calling thread and the helper, split by slot parity: each slot still has one
//! writer, and its rows are written in batch order. The same helper compacts, while the
//! caller looks up the next large batch's keys, the rings a scatter left full
//! (`RingMut::compact_ahead`).
//!
//! One job at a time: a caller claims the helper, and one that cannot (another stream's
//! scatter has it) does all its work itself. A job the helper has not started by the time
//! the caller wants it is taken back (`Posted::finish`): the caller never waits on a
//! helper that is asleep or whose CPU is busy, only on one that is running its job. The pool is made on first use, and again in a
//! child after fork (threads do not survive fork; the parent's pool is left alone).

use crate::write::{Batch, Counters, FullList, RingMut};
use rayon::ThreadPool;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const UNSET: usize = usize::MAX;
static MIN_ROWS: AtomicUsize = AtomicUsize::new(UNSET);
static BUSY: AtomicBool = AtomicBool::new(false);
static POOL: Mutex<Option<(u32, &'static ThreadPool)>> = Mutex::new(None);

/// Batches of at least this many rows are split (0: never). The default: 4096 on a machine
/// with two or more CPUs, else 0.
pub fn min_rows() -> usize {
    let v = MIN_ROWS.load(Ordering::Relaxed);
    if v != UNSET {
        return v;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let v = if cpus >= 2 { 4096 } else { 0 };
    MIN_ROWS.store(v, Ordering::Relaxed);
    v
}

/// Set `min_rows`; returns the value before.
pub fn set_min_rows(v: usize) -> usize {
    let before = min_rows();
    MIN_ROWS.store(v, Ordering::Relaxed);
    before
}

fn pool() -> Option<&'static ThreadPool> {
    let pid = std::process::id();
    // try_lock: a child forked while another thread of the parent held it would wait forever
    // (one claimed caller at a time gets here, so it is free otherwise)
    let mut held = match POOL.try_lock() {
        Ok(held) => held,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return None,
    };
    if let Some((p, pool)) = *held {
        if p == pid {
            return Some(pool);
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "heimdall-scatter".into())
        .build()
        .ok()?;
    let pool: &'static ThreadPool = Box::leak(Box::new(pool));
    *held = Some((pid, pool));
    Some(pool)
}

/// The helper, claimed for one job (released on drop).
pub struct Helper(&'static ThreadPool);

impl Drop for Helper {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}

/// The helper for a batch of `n` rows, if it is worth a second thread and no other caller
/// holds it.
pub fn claim(n: usize) -> Option<Helper> {
    let min = min_rows();
    if min == 0 || n < min {
        return None;
    }
    if BUSY.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return None;
    }
    match pool() {
        Some(p) => Some(Helper(p)),
        None => {
            BUSY.store(false, Ordering::Release);
            None
        }
    }
}

/// The rows of a batch whose slot has parity `part`, in batch order (branch-free: each row
/// is written, and counted only when it is one).
fn part_order(slots: &[i64], part: i64) -> Vec<u32> {
    let mut order: Vec<u32> = Vec::with_capacity(slots.len() + 1);
    let spare = order.spare_capacity_mut();
    let mut c = 0;
    for (i, &s) in slots.iter().enumerate() {
        spare[c].write(i as u32); // c <= i: within the capacity
        c += ((s & 1) == part) as usize;
    }
    // SAFETY: entries 0 .. c were written (each entry before c was written and kept)
    unsafe { order.set_len(c) };
    order
}

/// Work posted to the helper: what one side of a split does.
trait Work: Send + Sync + 'static {
    /// # Safety
    /// Called once, by the helper or the caller, while the caller waits in `finish`.
    unsafe fn run(&self);
}

const POSTED: u8 = 0;
const TAKEN: u8 = 1;
const BACK: u8 = 2;
const DONE: u8 = 3;

struct Shared<W> {
    state: AtomicU8,
    work: W,
}

/// A job posted to the helper. The helper takes it when it gets to it; the caller, when it
/// wants the result, either waits for the helper that took it, or takes it back (the
/// helper is asleep, or its CPU is busy) and runs it itself or drops it: the caller never
/// waits for a helper that has not started. A job taken back leaves the helper a no-op
/// that touches nothing but its own state.
struct Posted<W: Work> {
    job: Arc<Shared<W>>,
}

impl<W: Work> Posted<W> {
    fn post(pool: &ThreadPool, work: W) -> Posted<W> {
        let job = Arc::new(Shared { state: AtomicU8::new(POSTED), work });
        let theirs = Arc::clone(&job);
        pool.spawn(move || {
            if theirs
                .state
                .compare_exchange(POSTED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // SAFETY: taken: the caller waits in finish until DONE
                unsafe { theirs.work.run() };
                theirs.state.store(DONE, Ordering::Release);
            }
        });
        Posted { job }
    }

    /// The job is done when this returns: by the helper, or, if the helper had not taken
    /// it yet, here (`run_here`) or not at all. Returns the work (its outputs).
    fn finish(self, run_here: bool) -> Arc<Shared<W>> {
        let job = self.job;
        if job.state.compare_exchange(POSTED, BACK, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            if run_here {
                // SAFETY: taken back: the helper will not run it
                unsafe { job.work.run() };
            }
            return job;
        }
        let mut k = 0u32;
        while job.state.load(Ordering::Acquire) != DONE {
            k = k.wrapping_add(1);
            if k.is_multiple_of(1024) {
                std::thread::yield_now(); // the helper may be waiting for this CPU
            } else {
                std::hint::spin_loop();
            }
        }
        job
    }
}

/// The helper's half of a split scatter: the rows of odd slots.
struct HalfScatter {
    ring: RingMut,
    slots: *const i64,
    ts: *const i64,
    rows: *const u8,
    n: usize,
    now: i64,
    tick0: i64,
    full: *const FullList,
    counters: std::cell::UnsafeCell<Counters>,
}

// SAFETY: read-only inputs the caller keeps alive while the job can run (it waits for a
// job taken, and a job taken back is never run by the helper); counters written by the one
// side that runs it, read after
unsafe impl Send for HalfScatter {}
unsafe impl Sync for HalfScatter {}

impl Work for HalfScatter {
    unsafe fn run(&self) {
        let slots = std::slice::from_raw_parts(self.slots, self.n);
        let ts = std::slice::from_raw_parts(self.ts, self.n);
        let b = Batch { slots, ts, rows: self.rows };
        let order = part_order(slots, 1);
        self.ring.scatter(
            &b,
            Some(&order),
            self.now,
            self.tick0,
            &mut *self.counters.get(),
            &*self.full,
        );
    }
}

/// The compaction of a ring's full slots, until `stop`.
struct Compaction {
    ring: RingMut,
    full: *const FullList,
    stop: AtomicBool,
}

// SAFETY: as HalfScatter
unsafe impl Send for Compaction {}
unsafe impl Sync for Compaction {}

impl Work for Compaction {
    unsafe fn run(&self) {
        self.ring.compact_ahead(&*self.full, &self.stop);
    }
}

impl Helper {
    /// Scatter a checked batch on this thread and the helper, split by slot parity.
    ///
    /// # Safety
    /// As `RingMut::scatter`.
    pub unsafe fn scatter(
        &self,
        ring: &RingMut,
        b: &Batch,
        now: i64,
        tick0: i64,
        counters: &mut Counters,
        full: &FullList,
    ) {
        let half = HalfScatter {
            ring: *ring,
            slots: b.slots.as_ptr(),
            ts: b.ts.as_ptr(),
            rows: b.rows,
            n: b.slots.len(),
            now,
            tick0,
            full,
            counters: std::cell::UnsafeCell::new([0; 3]),
        };
        let posted = Posted::post(self.0, half);
        let order = part_order(b.slots, 0);
        ring.scatter(b, Some(&order), now, tick0, counters, full);
        let job = posted.finish(true); // the helper's half, here if it has not started it
        let theirs = *job.work.counters.get();
        for k in 0..3 {
            counters[k] += theirs[k];
        }
    }

    /// `op` on this thread while the helper compacts the ring's full slots; the helper stops
    /// when `op` is done (what it has not reached is left to the appends).
    ///
    /// # Safety
    /// As `RingMut::compact_ahead`; `op` writes nothing of the ring.
    pub unsafe fn beside_compaction<R>(
        &self,
        ring: &RingMut,
        full: &FullList,
        op: impl FnOnce() -> R,
    ) -> R {
        let posted =
            Posted::post(self.0, Compaction { ring: *ring, full, stop: AtomicBool::new(false) });
        let r = op();
        posted.job.work.stop.store(true, Ordering::Release);
        posted.finish(false); // not started by now: left to the appends
        r
    }
}

/// Scatter a checked batch: on two threads when it is large enough and the helper is free,
/// else on this one.
///
/// # Safety
/// As `RingMut::scatter`.
pub unsafe fn scatter(
    ring: &RingMut,
    b: &Batch,
    now: i64,
    tick0: i64,
    counters: &mut Counters,
    full: &FullList,
) {
    match claim(b.slots.len()) {
        Some(h) => h.scatter(ring, b, now, tick0, counters, full),
        None => ring.scatter(b, None, now, tick0, counters, full),
    }
}
