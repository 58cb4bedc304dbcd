//! Reading windows: copies (`gather`) and reductions (`aggregate`) of many slots at once,
//! each slot's read kept only if its seqlock proves it whole (`ok[i]`). The caller reruns
//! the slots not ok, and checks that each slot still belongs to the key it asked for.
//!
//! Every bound read under the seqlock is clamped to the slot before it is used: a torn read
//! may see any bounds, and must not read outside the slot's memory (its result is then
//! thrown away).

use crate::layout::{ABSENT, FILL, NEWEST, POS, SKIP};
use crate::seqlock::Meta;

/// One stream's ring memory, as raw parts (see `layout`).
pub struct Ring {
    pub data: *const u8,
    pub ts: *const i64,
    pub meta: Meta,
    pub slots: usize,
    pub cap: usize,
    /// F * the dtype's size
    pub row_bytes: usize,
}

// SAFETY: a Ring is plain pointers into memory its owner keeps alive for the read's length;
// every cross-thread access to the metadata goes through the seqlock's atomics
unsafe impl Send for Ring {}
unsafe impl Sync for Ring {}

/// What a read asks: the last `rows` rows (0: all), within `span_ns` of the newest (0: all).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub rows: i64,
    pub span_ns: i64,
}

/// A slot that is not in the ring.
#[derive(Debug, PartialEq, Eq)]
pub struct BadSlot(pub i64);

impl Ring {
    /// Every slot a real one of this ring, `ABSENT` or `SKIP`.
    fn check(&self, slots: &[i64]) -> Result<(), BadSlot> {
        match slots
            .iter()
            .find(|&&s| !(s == SKIP || s == ABSENT || (s >= 0 && (s as usize) < self.slots)))
        {
            Some(&s) => Err(BadSlot(s)),
            None => Ok(()),
        }
    }

    /// Rows `[a, b)` of the slot's window that the read asks for, clamped to the slot.
    #[inline]
    fn select(&self, slot: usize, q: Bounds) -> (usize, usize) {
        let b = self.meta.get(slot, POS).clamp(0, self.cap as i64) as usize;
        let mut n = self.meta.get(slot, FILL).clamp(0, b as i64) as usize;
        if q.rows > 0 && (q.rows as usize) < n {
            n = q.rows as usize;
        }
        if q.span_ns > 0 {
            let lo = self.meta.get(slot, NEWEST).saturating_sub(q.span_ns);
            // SAFETY: b - n .. b lies inside the slot's cap rows
            let ts = unsafe { self.ts.add(slot * self.cap) };
            while n > 0 && unsafe { *ts.add(b - n) } < lo {
                n -= 1;
            }
        }
        (b - n, b)
    }
}

/// Outputs of a gather of B keys into windows of W rows.
pub struct GatherOut {
    /// (B, W, row_bytes)
    pub values: *mut u8,
    /// (B, W)
    pub ts: *mut i64,
    /// (B,)
    pub lengths: *mut i64,
    /// (B,)
    pub ok: *mut bool,
    pub w: usize,
}

// SAFETY: one call's outputs, written by that call only
unsafe impl Send for GatherOut {}
unsafe impl Sync for GatherOut {}

/// Outputs of a reduction of B keys: (B, 7, F) float64, and (B,) ok.
pub struct AggOut {
    pub values: *mut f64,
    pub ok: *mut bool,
}

// SAFETY: as GatherOut
unsafe impl Send for AggOut {}
unsafe impl Sync for AggOut {}

/// Copy each slot's window right-aligned into `values[i, W - n..]` and zero the rows before
/// it: every output of row i is written, or (a torn read) `ok[i]` is false. `SKIP` slots are
/// left as they are; `ABSENT` ones are zero rows, length 0, ok.
///
/// # Safety
/// The ring's and the outputs' pointers are valid for their shapes, `slots.len()` = B.
pub unsafe fn gather(
    ring: &Ring,
    slots: &[i64],
    q: Bounds,
    out: &GatherOut,
) -> Result<(), BadSlot> {
    ring.check(slots)?;
    let (w, rb) = (out.w, ring.row_bytes);
    for (i, &s) in slots.iter().enumerate() {
        if s == SKIP {
            continue;
        }
        let vals = out.values.add(i * w * rb);
        let ts = out.ts.add(i * w);
        if s == ABSENT {
            std::ptr::write_bytes(vals, 0, w * rb);
            std::ptr::write_bytes(ts, 0, w);
            *out.lengths.add(i) = 0;
            *out.ok.add(i) = true;
            continue;
        }
        let slot = s as usize;
        let Some(c0) = ring.meta.begin(slot) else {
            *out.ok.add(i) = false;
            continue;
        };
        let (a, b) = ring.select(slot, q);
        let n = (b - a).min(w);
        let a = b - n;
        std::ptr::write_bytes(vals, 0, (w - n) * rb);
        std::ptr::write_bytes(ts, 0, w - n);
        let row0 = slot * ring.cap + a;
        std::ptr::copy_nonoverlapping(ring.ts.add(row0), ts.add(w - n), n);
        std::ptr::copy_nonoverlapping(ring.data.add(row0 * rb), vals.add((w - n) * rb), n * rb);
        *out.lengths.add(i) = n as i64;
        *out.ok.add(i) = ring.meta.still(slot, c0);
    }
    Ok(())
}

/// A value of a ring's dtype, as the reductions read it.
pub trait Value: Copy {
    fn f64(self) -> f64;
}
impl Value for f64 {
    fn f64(self) -> f64 {
        self
    }
}
impl Value for f32 {
    fn f64(self) -> f64 {
        self as f64
    }
}
impl Value for i64 {
    fn f64(self) -> f64 {
        self as f64
    }
}
impl Value for i32 {
    fn f64(self) -> f64 {
        self as f64
    }
}

/// Fields reduced together: their accumulators stay in registers.
const BLOCK: usize = 8;

/// The aggregates of fields `jb .. jb + w` over `n` rows of `f` fields at `rows`, into `o`
/// ((7, f) float64): row by row (the rows are contiguous), sums, minima and maxima, then the
/// squared deviations from the means. Each field's sum runs over the rows in order.
#[inline]
unsafe fn reduce_block<T: Value>(
    rows: *const T,
    n: usize,
    f: usize,
    jb: usize,
    w: usize,
    o: *mut f64,
) {
    let (mut sum, mut lo, mut hi) =
        ([0.0f64; BLOCK], [f64::INFINITY; BLOCK], [f64::NEG_INFINITY; BLOCK]);
    for r in 0..n {
        let row = rows.add(r * f + jb);
        for j in 0..w {
            let v = (*row.add(j)).f64();
            sum[j] += v;
            lo[j] = if v < lo[j] { v } else { lo[j] };
            hi[j] = if v > hi[j] { v } else { hi[j] };
        }
    }
    let mut mean = [0.0f64; BLOCK];
    for j in 0..w {
        mean[j] = sum[j] / n as f64;
    }
    let mut sq = [0.0f64; BLOCK];
    for r in 0..n {
        let row = rows.add(r * f + jb);
        for j in 0..w {
            let d = (*row.add(j)).f64() - mean[j];
            sq[j] += d * d;
        }
    }
    let last = rows.add((n - 1) * f + jb);
    for j in 0..w {
        let at = jb + j;
        *o.add(at) = n as f64;
        *o.add(f + at) = sum[j];
        *o.add(2 * f + at) = mean[j];
        *o.add(3 * f + at) = (sq[j] / n as f64).sqrt();
        *o.add(4 * f + at) = lo[j];
        *o.add(5 * f + at) = hi[j];
        *o.add(6 * f + at) = (*last.add(j)).f64();
    }
}

/// `out[i, k, j]` for k in `layout::AGGREGATES` (count, sum, mean, std (ddof 0), min, max,
/// last) over each slot's window (or the part `q` asks for); count 0 and NaN when empty.
/// `SKIP` slots are left as they are; `ok[i]` as in `gather`.
///
/// # Safety
/// As `gather`; `out` is (B, 7, F) float64, `ok` (B,), and the ring's rows hold `T`.
pub unsafe fn aggregate<T: Value>(
    ring: &Ring,
    slots: &[i64],
    q: Bounds,
    res: &AggOut,
) -> Result<(), BadSlot> {
    let (out, ok) = (res.values, res.ok);
    ring.check(slots)?;
    let f = ring.row_bytes / std::mem::size_of::<T>();
    let data = ring.data as *const T;
    for (i, &s) in slots.iter().enumerate() {
        if s == SKIP {
            continue;
        }
        let o = out.add(i * 7 * f);
        for j in 0..f {
            *o.add(j) = 0.0;
            for k in 1..7 {
                *o.add(k * f + j) = f64::NAN;
            }
        }
        if s == ABSENT {
            *ok.add(i) = true;
            continue;
        }
        let slot = s as usize;
        let Some(c0) = ring.meta.begin(slot) else {
            *ok.add(i) = false;
            continue;
        };
        let (a, b) = ring.select(slot, q);
        let n = b - a;
        if n > 0 {
            let rows = data.add((slot * ring.cap + a) * f);
            for jb in (0..f).step_by(BLOCK) {
                reduce_block(rows, n, f, jb, (f - jb).min(BLOCK), o);
            }
        }
        *ok.add(i) = ring.meta.still(slot, c0);
    }
    Ok(())
}

/// The flat index of the first NaN or infinity among `xs`, or None: in blocks of 64, whose
/// test (`x - x` is NaN exactly for NaN and infinities) vectorizes.
#[allow(clippy::eq_op)] // x - x is the test
pub fn first_nonfinite<T>(xs: &[T]) -> Option<usize>
where
    T: Copy + std::ops::Sub<Output = T> + PartialEq + Default,
{
    let zero = T::default();
    for (b, block) in xs.chunks(64).enumerate() {
        if block.iter().fold(false, |bad, &x| bad | (x - x != zero)) {
            return block.iter().position(|&x| x - x != zero).map(|i| b * 64 + i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::first_nonfinite;

    #[test]
    fn first_nonfinite_finds_nan_and_infinities_anywhere() {
        let mut xs = vec![1.0f64; 300];
        assert_eq!(first_nonfinite(&xs), None);
        for (at, v) in
            [(0, f64::NAN), (63, f64::INFINITY), (64, f64::NEG_INFINITY), (299, f64::NAN)]
        {
            xs[at] = v;
            assert_eq!(first_nonfinite(&xs), Some(at));
            xs[at] = 1.0;
        }
        assert_eq!(first_nonfinite(&[f32::MAX, f32::NAN]), Some(1));
        assert_eq!(first_nonfinite::<f64>(&[]), None);
    }
}
