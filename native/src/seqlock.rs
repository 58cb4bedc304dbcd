//! The reader's half of a slot's seqlock (the writer's half: `begin` raises `WSEQ`, then a
//! release fence, then the rows change, then `CSEQ = WSEQ` with release).
//!
//! A read takes `c0 = CSEQ` (acquire) and gives up if `WSEQ != c0` (a write in progress);
//! it then reads the bounds and rows, and stands if, after an acquire fence, `WSEQ` is
//! still `c0`. The metadata words are read as atomics, so the protocol holds between
//! threads of this process (with the GIL released) and across processes (shared memory).

use crate::layout::{CSEQ, FILL, META_COLS, POS, WSEQ};
use std::sync::atomic::{fence, AtomicI64, Ordering};

/// One slot's metadata line, read with atomics.
pub struct Meta {
    base: *const i64,
}

impl Meta {
    /// # Safety
    /// `meta` points at `slots * META_COLS` int64 that stay mapped while the Meta is used.
    pub unsafe fn new(meta: *const i64) -> Self {
        Meta { base: meta }
    }

    #[inline]
    fn word(&self, slot: usize, col: usize) -> &AtomicI64 {
        // SAFETY: the caller of `new` vouched for the memory; an i64 is aligned as an
        // AtomicI64 on every platform Heimdall builds for
        unsafe { AtomicI64::from_ptr(self.base.add(slot * META_COLS + col) as *mut i64) }
    }

    /// A column, read relaxed (inside a read that the seqlock checks afterwards).
    #[inline]
    pub fn get(&self, slot: usize, col: usize) -> i64 {
        self.word(slot, col).load(Ordering::Relaxed)
    }

    /// The start of a read: `Some(c0)`, or None while a write is in progress.
    #[inline]
    pub fn begin(&self, slot: usize) -> Option<i64> {
        let c0 = self.word(slot, CSEQ).load(Ordering::Acquire);
        (self.word(slot, WSEQ).load(Ordering::Relaxed) == c0).then_some(c0)
    }

    /// Whether no write began since `begin` returned `c0`: what was read in between is whole.
    #[inline]
    pub fn still(&self, slot: usize, c0: i64) -> bool {
        fence(Ordering::Acquire);
        self.word(slot, WSEQ).load(Ordering::Relaxed) == c0
    }

    /// A slot's window read whole: (a, b, c0), its rows `[a, b)` = `[POS - FILL, POS)` at
    /// `CSEQ = c0`; None while a write is in progress (or bounds no write leaves).
    #[inline]
    pub fn bounds(&self, slot: usize) -> Option<(i64, i64, i64)> {
        let c0 = self.begin(slot)?;
        let (b, n) = (self.get(slot, POS), self.get(slot, FILL));
        (self.still(slot, c0) && 0 <= n && n <= b).then_some((b - n, b, c0))
    }

    /// Whether a view of rows `[a, b)` read at `CSEQ = c0` is still intact: fewer writes
    /// since than reach its rows. Appends go to rows after `b` (`cap - b` of them before a
    /// compaction) and a compaction overwrites rows before `w - 1` only; out-of-order
    /// inserts, evictions and expiry raise `WSEQ` by `cap + 1` and so end every view.
    #[inline]
    pub fn intact(&self, slot: usize, a: i64, b: i64, c0: i64, cap: i64, w: i64) -> bool {
        let writes = self.word(slot, WSEQ).load(Ordering::Acquire) - c0;
        writes <= (cap - b) + (a - (w - 1)).max(0)
    }
}
