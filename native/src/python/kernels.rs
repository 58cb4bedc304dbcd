//! The read kernels (`gather`, `aggregate`) over a ring's raw arrays, a batch's eviction
//! plan, and the NaN scan of a batch: arrays checked here, the work in the pure crate, the
//! GIL released while it runs.

use super::arrays::{int64s, int64s_mut, raw};
use crate::layout;
use crate::read::{self, AggOut, BadSlot, Bounds, GatherOut, Ring};
use crate::seqlock::Meta;
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

fn ring_of(
    data: &Bound<'_, PyUntypedArray>,
    ts: &Bound<'_, PyUntypedArray>,
    meta: &Bound<'_, PyUntypedArray>,
) -> PyResult<(Ring, usize)> {
    let dims = data.shape();
    if dims.len() != 3 {
        return Err(PyValueError::new_err(format!("data: expected (slots, cap, F); got {dims:?}")));
    }
    let (slots, cap, f) = (dims[0], dims[1], dims[2]);
    let size = data.dtype().itemsize();
    let data_p = raw(data, "data", None, &[Some(slots), Some(cap), Some(f)], false)?;
    let ts_p = raw(ts, "ts", Some((b'i', 8)), &[Some(slots), Some(cap)], false)?;
    let meta_p =
        raw(meta, "meta", Some((b'i', 8)), &[Some(slots), Some(layout::META_COLS)], false)?;
    // SAFETY: checked above; the caller keeps the arrays alive during the call
    let meta = unsafe { Meta::new(meta_p as *const i64) };
    Ok((Ring { data: data_p, ts: ts_p as *const i64, meta, slots, cap, row_bytes: f * size }, f))
}

fn bad(e: BadSlot) -> PyErr {
    PyValueError::new_err(format!("slot {} is not a slot of this ring", e.0))
}

/// Copy each slot's window right-aligned into ``out_values[i, -n:]``, zeroing the rows
/// before it; ``ok[i]``: the read was whole (a torn one leaves row i for a rerun). Slot
/// -1: a key not held (zeros, length 0); -2: already read (left as it is).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gather(
    py: Python<'_>,
    data: &Bound<'_, PyUntypedArray>,
    ts: &Bound<'_, PyUntypedArray>,
    meta: &Bound<'_, PyUntypedArray>,
    slots: &Bound<'_, PyUntypedArray>,
    rows: i64,
    span_ns: i64,
    out_values: &Bound<'_, PyUntypedArray>,
    out_ts: &Bound<'_, PyUntypedArray>,
    out_len: &Bound<'_, PyUntypedArray>,
    ok: &Bound<'_, PyUntypedArray>,
) -> PyResult<()> {
    let (ring, f) = ring_of(data, ts, meta)?;
    let s = int64s(slots, "slots")?;
    let b = s.len();
    let w = out_values.shape().get(1).copied().unwrap_or(0);
    if !out_values.dtype().is_equiv_to(&data.dtype()) {
        return Err(PyValueError::new_err("out_values: not the ring's dtype"));
    }
    let out = GatherOut {
        values: raw(out_values, "out_values", None, &[Some(b), Some(w), Some(f)], true)?,
        ts: raw(out_ts, "out_ts", Some((b'i', 8)), &[Some(b), Some(w)], true)? as *mut i64,
        lengths: raw(out_len, "out_len", Some((b'i', 8)), &[Some(b)], true)? as *mut i64,
        ok: raw(ok, "ok", Some((b'b', 1)), &[Some(b)], true)? as *mut bool,
        w,
    };
    let q = Bounds { rows, span_ns };
    // SAFETY: every pointer checked against its shape above; the arrays outlive the call
    py.allow_threads(|| unsafe { read::gather(&ring, s, q, &out) }).map_err(bad)
}

/// ``out[i, k, j]`` for k in (count, sum, mean, std, min, max, last) over each slot's
/// window; count 0 and NaN when empty; ``ok`` as in ``gather``.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(crate) fn aggregate(
    py: Python<'_>,
    data: &Bound<'_, PyUntypedArray>,
    ts: &Bound<'_, PyUntypedArray>,
    meta: &Bound<'_, PyUntypedArray>,
    slots: &Bound<'_, PyUntypedArray>,
    rows: i64,
    span_ns: i64,
    out: &Bound<'_, PyUntypedArray>,
    ok: &Bound<'_, PyUntypedArray>,
) -> PyResult<()> {
    let (ring, f) = ring_of(data, ts, meta)?;
    let s = int64s(slots, "slots")?;
    let b = s.len();
    let res = AggOut {
        values: raw(out, "out", Some((b'f', 8)), &[Some(b), Some(7), Some(f)], true)? as *mut f64,
        ok: raw(ok, "ok", Some((b'b', 1)), &[Some(b)], true)? as *mut bool,
    };
    let q = Bounds { rows, span_ns };
    let d = data.dtype();
    let (kind, size) = (d.kind(), d.itemsize());
    // SAFETY: as in gather; the element type is the data's dtype
    py.allow_threads(|| unsafe {
        match (kind, size) {
            (b'f', 8) => Ok(read::aggregate::<f64>(&ring, s, q, &res)),
            (b'f', 4) => Ok(read::aggregate::<f32>(&ring, s, q, &res)),
            (b'i', 8) => Ok(read::aggregate::<i64>(&ring, s, q, &res)),
            (b'i', 4) => Ok(read::aggregate::<i32>(&ring, s, q, &res)),
            _ => Err(()),
        }
    })
    .map_err(|()| PyValueError::new_err(format!("data: dtype {d} is not a ring dtype")))?
    .map_err(bad)
}

/// The eviction loop of ``_admit.admit_batch`` (int64 arrays; ``native/src/evict.rs``).
/// ``held``: each of the batch's n rows' slot before it (a new key's: any); ``first``: each
/// slot's first row in the batch, n if none; ``victims`` and ``who`` as long as
/// ``candidates``, written. Returns (evictions, stop), evictions -1 when more candidates are
/// needed (not ``exhaustive``).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_evictions(
    new_rows: &Bound<'_, PyUntypedArray>,
    held: &Bound<'_, PyUntypedArray>,
    first: &Bound<'_, PyUntypedArray>,
    candidates: &Bound<'_, PyUntypedArray>,
    n: i64,
    exhaustive: bool,
    victims: &Bound<'_, PyUntypedArray>,
    who: &Bound<'_, PyUntypedArray>,
) -> PyResult<(i64, i64)> {
    use crate::evict::{plan, Plan};
    let got = plan(
        int64s(new_rows, "new_rows")?,
        int64s(held, "held")?,
        int64s(first, "first")?,
        int64s(candidates, "candidates")?,
        n,
        exhaustive,
        int64s_mut(victims, "victims")?,
        int64s_mut(who, "who")?,
    );
    match got {
        Ok(Plan::Done { evictions, stop }) => Ok((evictions as i64, stop)),
        Ok(Plan::NeedMore) => Ok((-1, n)),
        Err(e) if e.out_of_range => {
            Err(pyo3::exceptions::PyIndexError::new_err(format!("plan_evictions: {}", e.message)))
        }
        Err(e) => Err(PyValueError::new_err(format!("plan_evictions: {}", e.message))),
    }
}

/// The flat index of the first NaN or infinity in a C-contiguous float64 or float32 array,
/// or -1 if there is none (the float dtypes a ring holds; TypeError for another array).
#[pyfunction]
pub(crate) fn first_nonfinite(values: &Bound<'_, PyUntypedArray>) -> PyResult<i64> {
    let d = values.dtype();
    let (kind, size) = (d.kind(), d.itemsize());
    let ok = kind == b'f'
        && (size == 8 || size == 4)
        && values.is_c_contiguous()
        && d.is_native_byteorder() != Some(false);
    if !ok {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "first_nonfinite() takes a C-contiguous float64 or float32 array in native byte \
             order (a ring's dtype)",
        ));
    }
    // SAFETY: a C-contiguous array of that dtype, read for this call only
    let at = unsafe {
        let p = (*values.as_array_ptr()).data;
        let n = values.len();
        if size == 8 {
            read::first_nonfinite(std::slice::from_raw_parts(p as *const f64, n))
        } else {
            read::first_nonfinite(std::slice::from_raw_parts(p as *const f32, n))
        }
    };
    Ok(at.map_or(-1, |i| i as i64))
}
