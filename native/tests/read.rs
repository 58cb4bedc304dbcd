//! The read kernels against a plain model of the ring: random slots, windows and bounds;
//! torn reads, skipped and absent slots; bounds that a torn read could see.

use heimdall_core::layout::{ABSENT, CSEQ, FILL, META_COLS, NEWEST, POS, SKIP, WSEQ};
use heimdall_core::read::{aggregate, gather, AggOut, BadSlot, Bounds, GatherOut, Ring};
use heimdall_core::seqlock::Meta;
use proptest::prelude::*;

const CAP: usize = 10;
const F: usize = 2;

/// A ring of `slots` slots with the given (POS, FILL) each; row r of slot s holds
/// (s * 100 + r, -(s * 100 + r)) at time r.
struct Model {
    data: Vec<f64>,
    ts: Vec<i64>,
    meta: Vec<i64>,
    slots: usize,
}

impl Model {
    fn new(bounds: &[(i64, i64)]) -> Model {
        let slots = bounds.len();
        let mut data = vec![0.0; slots * CAP * F];
        let mut ts = vec![0i64; slots * CAP];
        let mut meta = vec![0i64; slots * META_COLS];
        for (s, &(pos, fill)) in bounds.iter().enumerate() {
            for r in 0..CAP {
                let v = (s * 100 + r) as f64;
                data[(s * CAP + r) * F] = v;
                data[(s * CAP + r) * F + 1] = -v;
                ts[s * CAP + r] = r as i64;
            }
            meta[s * META_COLS + POS] = pos;
            meta[s * META_COLS + FILL] = fill;
            meta[s * META_COLS + NEWEST] = pos - 1;
        }
        Model { data, ts, meta, slots }
    }

    fn ring(&self) -> Ring {
        Ring {
            data: self.data.as_ptr() as *const u8,
            ts: self.ts.as_ptr(),
            meta: unsafe { Meta::new(self.meta.as_ptr()) },
            slots: self.slots,
            cap: CAP,
            row_bytes: F * 8,
        }
    }

    /// The window rows a read should see: (first row, n).
    fn expect(&self, s: usize, q: Bounds, w: usize) -> (usize, usize) {
        let pos = self.meta[s * META_COLS + POS] as usize;
        let mut n = self.meta[s * META_COLS + FILL] as usize;
        if q.rows > 0 {
            n = n.min(q.rows as usize);
        }
        if q.span_ns > 0 {
            let lo = self.meta[s * META_COLS + NEWEST] - q.span_ns;
            n = (pos - n..pos).filter(|&r| self.ts[s * CAP + r] >= lo).count();
        }
        let n = n.min(w);
        (pos - n, n)
    }
}

struct Out {
    values: Vec<f64>,
    ts: Vec<i64>,
    lengths: Vec<i64>,
    ok: Vec<bool>,
    w: usize,
}

impl Out {
    fn new(b: usize, w: usize, fill: f64) -> Out {
        Out {
            values: vec![fill; b * w * F],
            ts: vec![7; b * w],
            lengths: vec![7; b],
            ok: vec![false; b],
            w,
        }
    }

    fn run(&mut self, m: &Model, slots: &[i64], q: Bounds) -> Result<(), BadSlot> {
        let out = GatherOut {
            values: self.values.as_mut_ptr() as *mut u8,
            ts: self.ts.as_mut_ptr(),
            lengths: self.lengths.as_mut_ptr(),
            ok: self.ok.as_mut_ptr(),
            w: self.w,
        };
        unsafe { gather(&m.ring(), slots, q, &out) }
    }
}

fn bounds_strategy() -> impl Strategy<Value = Vec<(i64, i64)>> {
    prop::collection::vec((0..=CAP as i64).prop_flat_map(|pos| (Just(pos), 0..=pos)), 1..6)
}

proptest! {
    #[test]
    fn gather_copies_each_window_right_aligned(
        bounds in bounds_strategy(), picks in prop::collection::vec(-1i64..6, 0..8),
        rows in 0i64..12, span in prop::sample::select(vec![0i64, 2, 5]), w in 1usize..12,
    ) {
        let m = Model::new(&bounds);
        let slots: Vec<i64> = picks.iter().map(|&p| if p >= m.slots as i64 { ABSENT } else { p })
            .collect();
        let q = Bounds { rows, span_ns: span };
        let mut out = Out::new(slots.len(), w, f64::NAN);
        out.run(&m, &slots, q).unwrap();
        for (i, &s) in slots.iter().enumerate() {
            prop_assert!(out.ok[i]);
            let (a, n) = if s == ABSENT { (0, 0) } else { m.expect(s as usize, q, w) };
            prop_assert_eq!(out.lengths[i], n as i64);
            for r in 0..w {
                let got = &out.values[(i * w + r) * F..(i * w + r + 1) * F];
                if r < w - n {
                    prop_assert_eq!(got, &[0.0, 0.0][..]);
                    prop_assert_eq!(out.ts[i * w + r], 0);
                } else {
                    let row = a + r - (w - n);
                    let v = (s as usize * 100 + row) as f64;
                    prop_assert_eq!(got, &[v, -v][..]);
                    prop_assert_eq!(out.ts[i * w + r], row as i64);
                }
            }
        }
    }

    #[test]
    fn aggregate_reduces_each_window(
        bounds in bounds_strategy(), rows in 0i64..12,
    ) {
        let m = Model::new(&bounds);
        let slots: Vec<i64> = (0..m.slots as i64).chain([ABSENT]).collect();
        let mut values = vec![0.0f64; slots.len() * 7 * F];
        let mut ok = vec![false; slots.len()];
        let q = Bounds { rows, span_ns: 0 };
        let res = AggOut { values: values.as_mut_ptr(), ok: ok.as_mut_ptr() };
        unsafe { aggregate::<f64>(&m.ring(), &slots, q, &res) }.unwrap();
        for (i, &s) in slots.iter().enumerate() {
            prop_assert!(ok[i]);
            let (a, n) = if s == ABSENT { (0, 0) } else { m.expect(s as usize, q, CAP) };
            let at = |k: usize, j: usize| values[(i * 7 + k) * F + j];
            prop_assert_eq!(at(0, 0), n as f64);
            if n == 0 {
                prop_assert!((1..7).all(|k| at(k, 0).is_nan() && at(k, 1).is_nan()));
                continue;
            }
            let xs: Vec<f64> = (a..a + n).map(|r| (s as usize * 100 + r) as f64).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let std = (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64).sqrt();
            prop_assert_eq!(at(1, 0), xs.iter().sum::<f64>());
            prop_assert!((at(2, 0) - mean).abs() < 1e-9 && (at(3, 0) - std).abs() < 1e-9);
            prop_assert_eq!((at(4, 0), at(5, 0), at(6, 0)), (xs[0], xs[n - 1], xs[n - 1]));
            prop_assert_eq!((at(4, 1), at(5, 1)), (-xs[n - 1], -xs[0]));
        }
    }

    /// Whatever bounds a torn read sees, the kernels stay inside the slot (no panic, no
    /// read outside the ring) and the lengths they give fit the output.
    #[test]
    fn any_bounds_stay_inside_the_slot(pos in -20i64..30, fill in -20i64..30, w in 1usize..12) {
        let m = Model::new(&[(pos, fill)]);
        let mut out = Out::new(1, w, 0.0);
        out.run(&m, &[0], Bounds { rows: 0, span_ns: 3 }).unwrap();
        prop_assert!((0..=w as i64).contains(&out.lengths[0]));
    }
}

#[test]
fn a_torn_read_is_not_ok_and_skipped_slots_are_left_alone() {
    let mut m = Model::new(&[(4, 4), (3, 2)]);
    m.meta[META_COLS + WSEQ] = m.meta[META_COLS + CSEQ] + 1; // slot 1: a write in progress
    let mut out = Out::new(3, 4, 9.0);
    out.ok[2] = true; // already read, with its outputs
    out.run(&m, &[0, 1, SKIP], Bounds { rows: 0, span_ns: 0 }).unwrap();
    assert_eq!(out.ok, vec![true, false, true]);
    assert_eq!(out.lengths[2], 7);
    assert!(out.values[2 * 4 * F..].iter().all(|&v| v == 9.0));
}

#[test]
fn a_slot_outside_the_ring_is_refused_before_anything_is_written() {
    let m = Model::new(&[(4, 4)]);
    let mut out = Out::new(2, 4, 9.0);
    assert_eq!(out.run(&m, &[0, 1], Bounds { rows: 0, span_ns: 0 }), Err(BadSlot(1)));
    assert_eq!(out.run(&m, &[-3], Bounds { rows: 0, span_ns: 0 }), Err(BadSlot(-3)));
    assert!(out.values.iter().all(|&v| v == 9.0));
}

/// A writer thread appending under the seqlock while a reader gathers: every read the
/// seqlock passes is one the writer published whole (row values all equal the row's tick).
#[test]
fn reads_that_pass_the_seqlock_are_never_torn() {
    use std::sync::atomic::{fence, AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;
    const W: usize = 8;
    let cap = CAP;
    let data: Arc<Vec<AtomicI64>> = Arc::new((0..cap * F).map(|_| AtomicI64::new(0)).collect());
    let ts: Arc<Vec<AtomicI64>> = Arc::new((0..cap).map(|_| AtomicI64::new(0)).collect());
    let meta: Arc<Vec<AtomicI64>> = Arc::new((0..META_COLS).map(|_| AtomicI64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (data, ts, meta, stop) = (data.clone(), ts.clone(), meta.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut tick = 1i64;
            while !stop.load(Ordering::Relaxed) {
                // one append: a row of (tick, tick) at POS, compacting when full
                let w = meta[WSEQ].load(Ordering::Relaxed) + 1;
                meta[WSEQ].store(w, Ordering::Relaxed);
                fence(Ordering::Release);
                let (mut pos, mut fill) = (
                    meta[POS].load(Ordering::Relaxed) as usize,
                    meta[FILL].load(Ordering::Relaxed) as usize,
                );
                if pos == cap {
                    for r in 0..W - 1 {
                        let src = pos - (W - 1) + r;
                        for j in 0..F {
                            data[r * F + j].store(
                                data[src * F + j].load(Ordering::Relaxed),
                                Ordering::Relaxed,
                            );
                        }
                        ts[r].store(ts[src].load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                    pos = W - 1;
                    fill = W - 1;
                }
                for j in 0..F {
                    data[pos * F + j].store(tick, Ordering::Relaxed);
                }
                ts[pos].store(tick, Ordering::Relaxed);
                meta[POS].store(pos as i64 + 1, Ordering::Relaxed);
                meta[FILL].store((fill + 1).min(W) as i64, Ordering::Relaxed);
                meta[CSEQ].store(w, Ordering::Release);
                tick += 1;
            }
        })
    };
    let ring = Ring {
        data: data.as_ptr() as *const u8,
        ts: ts.as_ptr() as *const i64,
        meta: unsafe { Meta::new(meta.as_ptr() as *const i64) },
        slots: 1,
        cap,
        row_bytes: F * 8,
    };
    let (mut passed, mut torn) = (0, 0);
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(300) {
        let mut values = vec![0i64; W * F];
        let mut t = vec![0i64; W];
        let (mut len, mut ok) = (0i64, false);
        let out = GatherOut {
            values: values.as_mut_ptr() as *mut u8,
            ts: t.as_mut_ptr(),
            lengths: &mut len,
            ok: &mut ok,
            w: W,
        };
        unsafe { gather(&ring, &[0], Bounds { rows: 0, span_ns: 0 }, &out) }.unwrap();
        if !ok {
            torn += 1;
            continue;
        }
        passed += 1;
        let n = len as usize;
        for r in W - n..W {
            assert_eq!(values[r * F], t[r], "a row's value is not its tick");
            assert_eq!(values[r * F + 1], t[r]);
            if r > W - n {
                assert_eq!(t[r], t[r - 1] + 1, "rows are not consecutive appends");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(passed > 0, "no read passed ({torn} torn)");
}
