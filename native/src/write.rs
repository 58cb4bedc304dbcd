//! The write path of a ring: a row appended under its slot's seqlock, a slot compacted, a
//! batch scattered, slots reset. The writer's half of the seqlock (the reader's: `seqlock`):
//! `begin` raises `WSEQ` and then a release fence, before any row of the slot changes; `end`
//! stamps the slot and sets `CSEQ = WSEQ` with a release store.
//!
//! One writer per slot at a time (the stream's writers' lock, held by the caller); readers,
//! in this process or in others over shared memory, read by the seqlock and never block it.
//!
//! Ring design (see `layout`): each slot holds `cap = W + slack` rows; rows are appended at
//! `POS`, the window is `[POS - FILL, POS)`, one contiguous run. A full ring moves its newest
//! `W - 1` rows to the front (a compaction) and goes on.

use crate::layout::{
    CSEQ, C_EXPIRED, C_LATE, C_OOO, FILL, KEYGEN, META_COLS, NEWEST, POS, TICK, TOUCH, WSEQ,
};
use std::sync::atomic::{fence, AtomicI64, AtomicUsize, Ordering};

/// One stream's ring memory, writable, with the stream's window rules.
#[derive(Clone, Copy)]
pub struct RingMut {
    /// (slots, cap, row_bytes)
    pub data: *mut u8,
    /// (slots, cap)
    pub ts: *mut i64,
    /// (slots, META_COLS)
    pub meta: *mut i64,
    pub slots: usize,
    pub cap: usize,
    /// window rows
    pub w: usize,
    pub row_bytes: usize,
    /// a time window's span (0: a count window)
    pub span_ns: i64,
    pub lateness_ns: i64,
    /// a time window: rows kept in time order
    pub time_ordered: bool,
}

// SAFETY: plain pointers into memory the owner keeps alive; one writer per slot at a time
// (the caller's lock), readers go by the seqlock's atomics
unsafe impl Send for RingMut {}
unsafe impl Sync for RingMut {}

/// Slots a scatter left full (`POS == cap`): compacted ahead of their next append
/// (`compact_ahead`). At most `cap` entries are kept; past that some are dropped (those are
/// compacted by their next append, as any).
pub struct FullList {
    slots: Vec<AtomicI64>,
    count: AtomicUsize,
}

impl FullList {
    pub fn new(cap: usize) -> FullList {
        FullList {
            slots: (0..cap).map(|_| AtomicI64::new(0)).collect(),
            count: AtomicUsize::new(0),
        }
    }

    #[inline]
    fn push(&self, slot: usize) {
        let at = self.count.fetch_add(1, Ordering::Relaxed);
        if at < self.slots.len() {
            self.slots[at].store(slot as i64, Ordering::Relaxed);
        }
    }

    /// Entries held (at most the capacity).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed).min(self.slots.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

/// A slot's write position, window length and newest time.
#[derive(Clone, Copy)]
struct Head {
    pos: usize,
    fill: usize,
    newest: i64,
}

/// The batch counters: rows later than the allowed lateness, inserted out of order, expired.
pub type Counters = [i64; 3];

impl RingMut {
    #[inline]
    fn word(&self, slot: usize, col: usize) -> &AtomicI64 {
        // SAFETY: slot < slots (checked by the callers), the metadata lives while self is used
        unsafe { AtomicI64::from_ptr(self.meta.add(slot * META_COLS + col)) }
    }

    /// A metadata column (read by the slot's one writer).
    #[inline]
    pub fn get(&self, slot: usize, col: usize) -> i64 {
        self.word(slot, col).load(Ordering::Relaxed)
    }

    #[inline]
    pub fn set(&self, slot: usize, col: usize, v: i64) {
        self.word(slot, col).store(v, Ordering::Relaxed)
    }

    /// The seqlock's start: `WSEQ` raised by `by` (1 for an append; `cap + 1` ends every view
    /// of the slot), then a release fence. Returns the new `WSEQ`.
    #[inline]
    pub fn begin(&self, slot: usize, by: i64) -> i64 {
        let w = self.get(slot, WSEQ) + by;
        self.word(slot, WSEQ).store(w, Ordering::Relaxed);
        fence(Ordering::Release);
        w
    }

    /// The seqlock's end: `CSEQ = w` (release), the rows written before it.
    #[inline]
    pub fn commit(&self, slot: usize, w: i64) {
        self.word(slot, CSEQ).store(w, Ordering::Release);
    }

    /// The end of a write of an event: the slot stamped (idle expiry, LRU), then committed.
    #[inline]
    fn end(&self, slot: usize, w: i64, now: i64, tick: i64) {
        self.set(slot, TOUCH, now);
        self.set(slot, TICK, tick);
        self.commit(slot, w);
    }

    #[inline]
    fn rows(&self, slot: usize) -> (*mut u8, *mut i64) {
        // SAFETY: slot < slots: the slot's rows lie inside the ring
        unsafe { (self.data.add(slot * self.cap * self.row_bytes), self.ts.add(slot * self.cap)) }
    }

    /// Move the newest `keep` rows before `pos` to the front of the slot; returns `keep`.
    #[inline]
    unsafe fn compact(&self, slot: usize, pos: usize, keep: usize) -> usize {
        let (data, ts) = self.rows(slot);
        let rb = self.row_bytes;
        std::ptr::copy(data.add((pos - keep) * rb), data, keep * rb);
        std::ptr::copy(ts.add(pos - keep), ts, keep);
        keep
    }

    /// The slot's write position, window length and newest time, read once per write.
    #[inline(always)]
    fn head(&self, slot: usize) -> Head {
        Head {
            pos: self.get(slot, POS) as usize,
            fill: self.get(slot, FILL) as usize,
            newest: self.get(slot, NEWEST),
        }
    }

    /// Store a write's new head (before `end` commits it).
    #[inline(always)]
    fn set_head(&self, slot: usize, was: Head, now: Head) {
        self.set(slot, POS, now.pos as i64);
        self.set(slot, FILL, now.fill as i64);
        if now.newest != was.newest {
            self.set(slot, NEWEST, now.newest);
        }
    }

    /// The in-order append's rows (between begin and end); returns the new head.
    #[inline(always)]
    unsafe fn put_in_order(&self, slot: usize, h: Head, row: *const u8, t: i64) -> Head {
        let (data, ts) = self.rows(slot);
        let Head { mut pos, mut fill, mut newest } = h;
        if pos == self.cap {
            pos = self.compact(slot, pos, fill.min(self.w - 1));
        }
        copy_row(data.add(pos * self.row_bytes), row, self.row_bytes);
        *ts.add(pos) = t;
        pos += 1;
        if self.time_ordered || fill == 0 || t > newest {
            newest = t;
        }
        if fill < self.w {
            fill += 1;
        }
        if self.span_ns > 0 {
            let lo = newest.saturating_sub(self.span_ns);
            while fill > 1 && *ts.add(pos - fill) < lo {
                fill -= 1;
            }
        }
        Head { pos, fill, newest }
    }

    /// A time window's row older than its newest, within the lateness allowed: inserted in
    /// time order (between begin, by cap + 1, and end); returns the new head.
    #[inline]
    unsafe fn put_out_of_order(&self, slot: usize, h: Head, row: *const u8, t: i64) -> Head {
        let (data, ts) = self.rows(slot);
        let rb = self.row_bytes;
        let Head { mut pos, fill, newest } = h;
        if pos == self.cap {
            pos = self.compact(slot, pos, fill);
        }
        let mut ins = pos;
        while ins > pos - fill && *ts.add(ins - 1) > t {
            ins -= 1;
        }
        std::ptr::copy(data.add(ins * rb), data.add((ins + 1) * rb), (pos - ins) * rb);
        std::ptr::copy(ts.add(ins), ts.add(ins + 1), pos - ins);
        copy_row(data.add(ins * rb), row, rb);
        *ts.add(ins) = t;
        Head { pos: pos + 1, fill: (fill + 1).min(self.w), newest }
    }

    /// Append one packed row to `slot` (`row_bytes` bytes). Returns false, writing nothing,
    /// when a time window's row is older than the slot's newest (the batch path places it).
    ///
    /// # Safety
    /// `slot < slots`, `row` points at `row_bytes` bytes; no other writer of the slot runs.
    pub unsafe fn write_row(
        &self,
        slot: usize,
        row: *const u8,
        t: i64,
        now: i64,
        tick: i64,
    ) -> bool {
        let h = self.head(slot);
        if self.time_ordered && h.fill > 0 && t < h.newest {
            return false;
        }
        let w = self.begin(slot, 1);
        self.set_head(slot, h, self.put_in_order(slot, h, row, t));
        self.end(slot, w, now, tick);
        true
    }

    /// One row of a batch: in order, inserted out of order, or counted and dropped (later
    /// than the lateness allowed, or older than the span).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scatter_one(
        &self,
        slot: usize,
        row: *const u8,
        t: i64,
        now: i64,
        tick: i64,
        counters: &mut Counters,
        full: &FullList,
    ) {
        let h = self.head(slot);
        let w;
        if self.time_ordered && h.fill > 0 && t < h.newest {
            if t < h.newest.saturating_sub(self.lateness_ns) {
                counters[C_LATE] += 1;
                return;
            }
            if self.span_ns > 0 && t < h.newest.saturating_sub(self.span_ns) {
                counters[C_EXPIRED] += 1;
                return;
            }
            counters[C_OOO] += 1;
            w = self.begin(slot, self.cap as i64 + 1);
            self.set_head(slot, h, self.put_out_of_order(slot, h, row, t));
        } else {
            w = self.begin(slot, 1);
            let next = self.put_in_order(slot, h, row, t);
            self.set_head(slot, h, next);
            if next.pos == self.cap {
                full.push(slot); // compacted ahead, during the next large batch's lookup
            }
        }
        self.end(slot, w, now, tick);
    }

    /// Rows `order[k]` (k < order.len(); every row when None) of a checked batch, in that
    /// order: row i to `slots[i]`, stamped with tick `tick0 + i`.
    ///
    /// # Safety
    /// Every slot < slots, `rows` holds `slots.len()` rows, no other writer of these slots.
    pub unsafe fn scatter(
        &self,
        b: &Batch,
        order: Option<&[u32]>,
        now: i64,
        tick0: i64,
        counters: &mut Counters,
        full: &FullList,
    ) {
        match order {
            Some(o) => self.scatter_rows(
                b,
                o.len(),
                |k| *o.get_unchecked(k) as usize,
                now,
                tick0,
                counters,
                full,
            ),
            None => self.scatter_rows(b, b.slots.len(), |k| k, now, tick0, counters, full),
        }
    }

    /// `scatter`'s loop over rows `at(k)`, k < n (one copy per kind of order).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scatter_rows(
        &self,
        b: &Batch,
        n: usize,
        at: impl Fn(usize) -> usize,
        now: i64,
        tick0: i64,
        counters: &mut Counters,
        full: &FullList,
    ) {
        let slot = |i: usize| *b.slots.get_unchecked(i) as usize;
        for k in 0..n {
            // the rows are far apart in memory: ask for the lines of the next ones early
            if k + PREFETCH < n {
                prefetch(self.meta.add(slot(at(k + PREFETCH)) * META_COLS) as *const u8);
            }
            if k + PREFETCH / 2 < n {
                let s2 = slot(at(k + PREFETCH / 2));
                let p2 = self.get(s2, POS) as usize;
                prefetch(self.data.add((s2 * self.cap + p2) * self.row_bytes));
                prefetch(self.ts.add(s2 * self.cap + p2) as *const u8);
            }
            let i = at(k);
            let row = b.rows.add(i * self.row_bytes);
            self.scatter_one(
                slot(i),
                row,
                *b.ts.get_unchecked(i),
                now,
                tick0 + i as i64,
                counters,
                full,
            );
        }
    }

    /// Compact the slots of `full` that are still full, newest entries first, until `stop`
    /// is set; returns how many. A slot so compacted keeps its whole window (FILL rows move
    /// to the front) and its seqlock counts the move as one write (a view it overwrites reads
    /// as no longer valid); TOUCH and TICK stay: no event came.
    ///
    /// # Safety
    /// The slots in `full` are this ring's; no other writer of the ring runs.
    pub unsafe fn compact_ahead(
        &self,
        full: &FullList,
        stop: &std::sync::atomic::AtomicBool,
    ) -> usize {
        let mut n = full.len();
        let mut done = 0;
        while n > 0 && !stop.load(Ordering::Acquire) {
            n -= 1;
            let s = full.slots[n].load(Ordering::Relaxed) as usize;
            if s >= self.slots || self.get(s, POS) as usize != self.cap {
                continue; // compacted by an append since, or the slot was reset
            }
            let w = self.begin(s, 1);
            let fill = self.get(s, FILL) as usize;
            let pos = self.compact(s, self.cap, fill);
            self.set(s, POS, pos as i64);
            self.commit(s, w);
            done += 1;
        }
        full.count.store(n, Ordering::Relaxed);
        done
    }

    /// Reset `slots` (distinct, each < slots) by the seqlock, in two steps around the
    /// caller's own (the keys taken out of the index): `free_begin` raises every slot's
    /// `WSEQ` past any write (every view of it ends) and bumps its `KEYGEN`; `free_end`
    /// zeroes POS, FILL and NEWEST, then sets each `CSEQ` to its `WSEQ`.
    pub fn free_begin(&self, slots: &[usize]) {
        for &s in slots {
            self.begin(s, self.cap as i64 + 1);
            self.set(s, KEYGEN, self.get(s, KEYGEN) + 1);
        }
    }

    pub fn free_end(&self, slots: &[usize]) {
        for &s in slots {
            self.set(s, POS, 0);
            self.set(s, FILL, 0);
            self.set(s, NEWEST, 0);
        }
        for &s in slots {
            self.commit(s, self.get(s, WSEQ));
        }
    }
}

/// A checked batch: row i (`row_bytes` bytes at `rows + i * row_bytes`) goes to `slots[i]`
/// at time `ts[i]`.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub slots: &'a [i64],
    pub ts: &'a [i64],
    pub rows: *const u8,
}

// SAFETY: read-only inputs of one call
unsafe impl Send for Batch<'_> {}
unsafe impl Sync for Batch<'_> {}

const PREFETCH: usize = 8;

/// A hint that the line at `p` is read soon.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One packed row into the ring: a copy of a size known at compile time for the common row
/// sizes (a call to memcpy per row costs as much as the rest of an append).
#[inline(always)]
unsafe fn copy_row(dst: *mut u8, src: *const u8, n: usize) {
    match n {
        8 => std::ptr::copy_nonoverlapping(src, dst, 8),
        16 => std::ptr::copy_nonoverlapping(src, dst, 16),
        24 => std::ptr::copy_nonoverlapping(src, dst, 24),
        32 => std::ptr::copy_nonoverlapping(src, dst, 32),
        48 => std::ptr::copy_nonoverlapping(src, dst, 48),
        64 => std::ptr::copy_nonoverlapping(src, dst, 64),
        _ => std::ptr::copy_nonoverlapping(src, dst, n),
    }
}
