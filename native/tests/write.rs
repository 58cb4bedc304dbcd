//! The write path against plain models: a count window is the last W rows appended, in
//! order, whatever the slack and the batch sizes; a time window's rows stay in time order,
//! each row counted once (written, late, or expired); a scatter split on two threads leaves
//! the bytes one thread leaves; a compaction ahead keeps the window; a reset slot is empty
//! with its KEYGEN bumped. Every write leaves the seqlock closed (WSEQ == CSEQ).

use heimdall_core::layout::{CSEQ, C_EXPIRED, C_LATE, C_OOO, FILL, KEYGEN, META_COLS, POS, WSEQ};
use heimdall_core::split;
use heimdall_core::write::{Batch, Counters, FullList, RingMut};
use proptest::prelude::*;
use std::sync::atomic::AtomicBool;

const F: usize = 2;

/// A ring's memory, owned.
struct Mem {
    data: Vec<f64>,
    ts: Vec<i64>,
    meta: Vec<i64>,
    ring: RingMut,
    full: FullList,
}

impl Mem {
    fn new(slots: usize, w: usize, slack: usize, span_ns: i64, lateness_ns: i64) -> Mem {
        let cap = w + slack;
        let mut data = vec![0.0; slots * cap * F];
        let mut ts = vec![0i64; slots * cap];
        let mut meta = vec![0i64; slots * META_COLS];
        let ring = RingMut {
            data: data.as_mut_ptr() as *mut u8,
            ts: ts.as_mut_ptr(),
            meta: meta.as_mut_ptr(),
            slots,
            cap,
            w,
            row_bytes: F * 8,
            span_ns,
            lateness_ns,
            time_ordered: span_ns > 0,
        };
        Mem { data, ts, meta, ring, full: FullList::new(slots) }
    }

    fn m(&self, slot: usize, col: usize) -> i64 {
        self.meta[slot * META_COLS + col]
    }

    /// The slot's window: (time, first field) of rows [POS - FILL, POS).
    fn window(&self, slot: usize) -> Vec<(i64, f64)> {
        let cap = self.ring.cap;
        let (pos, fill) = (self.m(slot, POS) as usize, self.m(slot, FILL) as usize);
        (pos - fill..pos)
            .map(|r| (self.ts[slot * cap + r], self.data[(slot * cap + r) * F]))
            .collect()
    }

    fn scatter(&self, slots: &[i64], ts: &[i64], rows: &[f64], split_it: bool) -> Counters {
        let mut c = [0; 3];
        let b = Batch { slots, ts, rows: rows.as_ptr() as *const u8 };
        // SAFETY: slots in range, rows and ts as long; this thread is the one writer
        unsafe {
            if split_it {
                split::set_min_rows(1);
                split::scatter(&self.ring, &b, 7, 0, &mut c, &self.full);
            } else {
                self.ring.scatter(&b, None, 7, 0, &mut c, &self.full);
            }
        }
        c
    }

    fn closed(&self) -> bool {
        (0..self.ring.slots).all(|s| self.m(s, WSEQ) == self.m(s, CSEQ))
    }
}

fn rows_of(values: &[f64]) -> Vec<f64> {
    values.iter().flat_map(|&v| [v, -v]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_count_window_is_the_last_w_rows(
        w in 1usize..9, slack in 1usize..5,
        batches in prop::collection::vec(prop::collection::vec(0i64..4, 0..40), 1..8),
        one_by_one in any::<bool>(),
    ) {
        let mem = Mem::new(4, w, slack, 0, 0);
        let mut model: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 4];
        let mut t = 0;
        for slots in batches {
            let ts: Vec<i64> = slots.iter().map(|_| { t += 1; t }).collect();
            let values: Vec<f64> = ts.iter().map(|&t| t as f64).collect();
            if one_by_one {
                for (i, &s) in slots.iter().enumerate() {
                    let row = [values[i], -values[i]];
                    // SAFETY: slot in range, a row of F float64
                    let ok = unsafe { mem.ring.write_row(s as usize, row.as_ptr() as *const u8, ts[i], 0, 0) };
                    prop_assert!(ok);
                }
            } else {
                let c = mem.scatter(&slots, &ts, &rows_of(&values), false);
                prop_assert_eq!(c, [0, 0, 0]);
            }
            for (i, &s) in slots.iter().enumerate() {
                model[s as usize].push((ts[i], values[i]));
            }
            prop_assert!(mem.closed());
            for (s, rows) in model.iter().enumerate() {
                let want = &rows[rows.len().saturating_sub(w)..];
                prop_assert_eq!(mem.window(s), want.to_vec());
                prop_assert!(mem.m(s, POS) as usize <= mem.ring.cap);
            }
        }
    }

    #[test]
    fn a_time_window_keeps_time_order_and_counts_every_row(
        w in 1usize..9, span in 5i64..40, lateness in 0i64..20,
        events in prop::collection::vec((0i64..3, 0i64..60), 1..120),
    ) {
        let mem = Mem::new(3, w, 2, span, lateness);
        let slots: Vec<i64> = events.iter().map(|e| e.0).collect();
        let ts: Vec<i64> = events.iter().map(|e| e.1).collect();
        let values: Vec<f64> = (0..events.len()).map(|i| i as f64).collect();
        let c = mem.scatter(&slots, &ts, &rows_of(&values), false);
        prop_assert!(mem.closed());
        let written = mem.meta.chunks(META_COLS).map(|m| m[WSEQ]).sum::<i64>();
        // each written row raised WSEQ: by 1 in order, by cap + 1 out of order
        let ooo = c[C_OOO];
        let in_order = written - ooo * (mem.ring.cap as i64 + 1);
        prop_assert_eq!(in_order + ooo + c[C_LATE] + c[C_EXPIRED], events.len() as i64);
        for s in 0..3 {
            let win = mem.window(s);
            prop_assert!(win.len() <= w);
            prop_assert!(win.windows(2).all(|p| p[0].0 <= p[1].0), "{:?}", win);
            if let Some(&(newest, _)) = win.last() {
                // every row of the window within span of the newest, but the one kept
                prop_assert!(win.iter().skip(1).all(|r| r.0 >= newest - span), "{:?}", win);
            }
        }
    }

    #[test]
    fn a_split_scatter_leaves_the_bytes_one_thread_leaves(
        time in any::<bool>(),
        batches in prop::collection::vec(prop::collection::vec((0i64..16, 0i64..1000), 0..300), 1..5),
    ) {
        let span = if time { 300 } else { 0 };
        let (one, two) = (Mem::new(16, 6, 2, span, 100), Mem::new(16, 6, 2, span, 100));
        for batch in batches {
            let slots: Vec<i64> = batch.iter().map(|e| e.0).collect();
            let ts: Vec<i64> = batch.iter().map(|e| e.1).collect();
            let rows = rows_of(&ts.iter().map(|&t| t as f64 * 0.5).collect::<Vec<_>>());
            let a = one.scatter(&slots, &ts, &rows, false);
            let b = two.scatter(&slots, &ts, &rows, true);
            prop_assert_eq!(a, b);
            prop_assert_eq!(&one.meta, &two.meta);
            for s in 0..16 {
                prop_assert_eq!(one.window(s), two.window(s));
            }
        }
    }
}

#[test]
fn a_full_ring_compacted_ahead_keeps_its_window() {
    let mem = Mem::new(2, 4, 2, 0, 0);
    let slots = vec![1i64; 6];
    let ts: Vec<i64> = (1..=6).collect();
    mem.scatter(&slots, &ts, &rows_of(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), false);
    assert_eq!(mem.m(1, POS), 6); // full: listed
    let before = mem.window(1);
    let w0 = mem.m(1, WSEQ);
    // SAFETY: this thread is the one writer
    let done = unsafe { mem.ring.compact_ahead(&mem.full, &AtomicBool::new(false)) };
    assert_eq!(done, 1);
    assert_eq!(mem.window(1), before);
    assert_eq!(mem.m(1, POS), 4);
    assert_eq!(mem.m(1, WSEQ), w0 + 1);
    assert!(mem.closed());
    // done once: the list is empty now
    assert_eq!(unsafe { mem.ring.compact_ahead(&mem.full, &AtomicBool::new(false)) }, 0);
}

#[test]
fn a_reset_slot_is_empty_and_its_keygen_bumped() {
    let mem = Mem::new(2, 4, 2, 0, 0);
    mem.scatter(&[0, 1, 0], &[1, 2, 3], &rows_of(&[1.0, 2.0, 3.0]), false);
    mem.ring.free_begin(&[0]);
    assert_ne!(mem.m(0, WSEQ), mem.m(0, CSEQ)); // a reader gives up meanwhile
    mem.ring.free_end(&[0]);
    assert!(mem.closed());
    assert_eq!((mem.m(0, POS), mem.m(0, FILL), mem.m(0, KEYGEN)), (0, 0, 1));
    assert_eq!(mem.window(1), vec![(2, 2.0)]);
}
