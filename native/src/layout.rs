//! The layout of one stream's ring memory, written once: Python reads these constants from
//! `heimdall._core`, and keeps no copy of its own.
//!
//! `data` is (max_keys, cap, F) rows of the stream's dtype, `ts` (max_keys, cap) int64
//! nanoseconds, `meta` (max_keys, META_COLS) int64: one 64-byte line per slot. A key's
//! window is the rows `[POS - FILL, POS)` of its slot.

/// The next row to write.
pub const POS: usize = 0;
/// How many rows before `POS` are the window.
pub const FILL: usize = 1;
/// The seqlock's write count: raised before any row of the slot changes.
pub const WSEQ: usize = 2;
/// The seqlock's commit count: set equal to `WSEQ` once the rows are written.
pub const CSEQ: usize = 3;
/// The newest event time in the slot (a time window's end).
pub const NEWEST: usize = 4;
/// Wall-clock time of the last write (idle expiry).
pub const TOUCH: usize = 5;
/// The store's write tick at the last write (least recently updated eviction).
pub const TICK: usize = 6;
/// Bumped each time the slot loses its key: a read can tell the slot changed hands.
pub const KEYGEN: usize = 7;
/// Columns of a slot's metadata line (8 x int64 = one cache line).
pub const META_COLS: usize = 8;

/// A read's slot for a key the store does not hold: length 0, count 0, NaN.
pub const ABSENT: i64 = -1;
/// A read's slot already read: the kernel leaves its outputs as they are.
pub const SKIP: i64 = -2;

/// Counters the write path keeps per stream: rows later than the allowed lateness,
/// rows inserted out of order, rows expired out of a time window.
pub const C_LATE: usize = 0;
pub const C_OOO: usize = 1;
pub const C_EXPIRED: usize = 2;
pub const N_COUNTERS: usize = 3;

/// The aggregates a reduction computes, in the order of its output's second axis.
pub const AGGREGATES: [&str; 7] = ["count", "sum", "mean", "std", "min", "max", "last"];

/// A shared-memory stream's stats line (int64 x STATS_COLS), written by the writer for
/// readers in other processes: its totals, then the scatter's counters (`C_LATE` ...).
pub const S_EVENTS: usize = 0;
pub const S_EVICTIONS: usize = 1;
pub const S_EXPIRED: usize = 2;
pub const S_COUNTERS: usize = 3;
pub const STATS_COLS: usize = 8;
