//! `heimdall._core`: the Python face of the core. Arrays are checked here (shape, dtype,
//! C order, writable outputs) and read as raw memory; the bulk work runs with the GIL
//! released, so other Python threads (readers, writers) go on meanwhile.

mod arrays;
mod keys;
mod ring;
mod store;

use crate::layout;
use crate::read::{self, AggOut, BadSlot, Bounds, GatherOut, Ring};
use crate::seqlock::Meta;
use arrays::{int64s, int64s_mut, raw};
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

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
fn gather(
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
fn aggregate(
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

/// Handles by fingerprint (any hashable; its Python hash is what is kept), for about
/// ``capacity`` entries (it grows past that): ``heimdall.sources.dedup``'s tables. Not
/// thread-safe: the stream's ingest lock guards it.
#[pyclass(module = "heimdall._core")]
struct FpTable {
    table: crate::seen::Table,
    handles: Py<PyList>,
}

fn hashes(fingerprints: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    if let Ok(list) = fingerprints.downcast::<PyList>() {
        let n = list.len();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: i < len of a list held for the call; the item is borrowed, not kept
            let h = unsafe {
                pyo3::ffi::PyObject_Hash(pyo3::ffi::PyList_GET_ITEM(list.as_ptr(), i as isize))
            };
            if h == -1 {
                if let Some(err) = PyErr::take(list.py()) {
                    return Err(err);
                }
            }
            out.push(h as i64);
        }
        return Ok(out);
    }
    fingerprints.try_iter()?.map(|f| Ok(f?.hash()? as i64)).collect()
}

#[pymethods]
impl FpTable {
    #[new]
    fn new(py: Python<'_>, capacity: isize) -> PyResult<Self> {
        if capacity < 1 {
            return Err(PyValueError::new_err(format!(
                "FpTable: capacity must be >= 1, received {capacity}"
            )));
        }
        Ok(FpTable {
            table: crate::seen::Table::new(capacity as usize),
            handles: PyList::empty(py).unbind(),
        })
    }

    /// Remember each handle under its fingerprint, in order, unless the fingerprint is held
    /// already (by an earlier entry, or one earlier in this call). Returns the indices of
    /// those not added: the caller decides what a clash means.
    fn add(
        &mut self,
        py: Python<'_>,
        fingerprints: &Bound<'_, PyAny>,
        handles: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<usize>> {
        let hs = hashes(fingerprints)?;
        let given = match handles.downcast::<PyList>() {
            Ok(list) => list.clone(),
            Err(_) => PyList::new(py, handles.try_iter()?.collect::<PyResult<Vec<_>>>()?)?,
        };
        if given.len() != hs.len() {
            return Err(PyValueError::new_err(format!(
                "add: {} fingerprints but {} handles",
                hs.len(),
                given.len()
            )));
        }
        let clash = self.table.add(&hs);
        let list = self.handles.bind(py);
        let mut skip = clash.iter().peekable();
        for i in 0..hs.len() {
            if skip.peek() == Some(&&i) {
                skip.next();
                continue;
            }
            // SAFETY: i < len(given), a list held for the call; PyList_Append takes its own
            // reference to the borrowed item
            if unsafe {
                pyo3::ffi::PyList_Append(
                    list.as_ptr(),
                    pyo3::ffi::PyList_GET_ITEM(given.as_ptr(), i as isize),
                )
            } < 0
            {
                return Err(PyErr::fetch(py));
            }
        }
        Ok(clash)
    }

    /// The handle held under the fingerprint, or None.
    fn get(&self, py: Python<'_>, fingerprint: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        match self.table.get(fingerprint.hash()? as i64) {
            Some(i) => Ok(self.handles.bind(py).get_item(i)?.unbind()),
            None => Ok(py.None()),
        }
    }

    /// Hold ``handle`` under a fingerprint already held, in place of what was there.
    fn put(
        &self,
        py: Python<'_>,
        fingerprint: &Bound<'_, PyAny>,
        handle: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        match self.table.get(fingerprint.hash()? as i64) {
            Some(i) => self.handles.bind(py).set_item(i, handle),
            None => Err(pyo3::exceptions::PyKeyError::new_err("put: the fingerprint is not held")),
        }
    }

    /// Forget every entry; returns the list of handles held (the caller frees it when it
    /// likes).
    fn reset(&mut self, py: Python<'_>) -> Py<PyList> {
        self.table.reset();
        std::mem::replace(&mut self.handles, PyList::empty(py).unbind())
    }

    fn __len__(&self) -> usize {
        self.table.len()
    }
}

/// Which entries of a batch need a closer look: those whose fingerprint ``new`` or ``old``
/// holds, and those repeating an earlier fingerprint of the batch. Returns (indices,
/// firsts): for each index, the index of the first entry of the batch with its fingerprint
/// (itself when it is the first). Empty lists: the batch is new.
#[pyfunction]
fn candidates(
    new: PyRef<'_, FpTable>,
    old: PyRef<'_, FpTable>,
    fingerprints: &Bound<'_, PyAny>,
) -> PyResult<(Vec<usize>, Vec<usize>)> {
    Ok(crate::seen::candidates(&new.table, &old.table, &hashes(fingerprints)?))
}

/// The eviction loop of ``_admit.admit_batch`` (int64 arrays; ``native/src/evict.rs``).
/// ``held``: each of the batch's n rows' slot before it (a new key's: any); ``first``: each
/// slot's first row in the batch, n if none; ``victims`` and ``who`` as long as
/// ``candidates``, written. Returns (evictions, stop), evictions -1 when more candidates are
/// needed (not ``exhaustive``).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn plan_evictions(
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
fn first_nonfinite(values: &Bound<'_, PyUntypedArray>) -> PyResult<i64> {
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

/// A shared-memory store's key index, checked: `table` a power of two of int64 entries,
/// `keys` (max_keys, 64) uint8, `version` one int64; all writable.
fn shm_index(
    table: &Bound<'_, PyUntypedArray>,
    keys: &Bound<'_, PyUntypedArray>,
    version: &Bound<'_, PyUntypedArray>,
) -> PyResult<crate::shm::Index> {
    let size = table.len();
    if size == 0 || !size.is_power_of_two() {
        return Err(PyValueError::new_err("table must hold a power of two entries"));
    }
    let t = raw(table, "table", Some((b'i', 8)), &[Some(size)], true)?;
    let k = raw(keys, "keys", Some((b'u', 1)), &[None, Some(crate::shm::KEY_BYTES)], true)?;
    let v = raw(version, "version", Some((b'i', 8)), &[Some(1)], true)?;
    Ok(crate::shm::Index {
        table: t as *mut i64,
        mask: size as u64 - 1,
        keys: k,
        max_keys: keys.shape()[0],
        version: v as *mut i64,
    })
}

fn shm_slot(ix: &crate::shm::Index, obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    let slot: isize = obj.extract()?;
    if slot < 0 || slot as usize >= ix.max_keys {
        return Err(pyo3::exceptions::PyIndexError::new_err(format!(
            "shared index: slot {slot} out of range"
        )));
    }
    Ok(slot as usize)
}

fn shm_key(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = key.downcast::<pyo3::types::PyString>() {
        return crate::shm::encode_str(s.to_str()?)
            .ok_or_else(|| PyValueError::new_err("a key too long for the shared index"));
    }
    if key.is_instance_of::<pyo3::types::PyInt>() && !key.is_instance_of::<pyo3::types::PyBool>() {
        return Ok(crate::shm::encode_int(key.extract()?));
    }
    Err(PyValueError::new_err("a shared index holds str and int keys"))
}

/// Each key of ``key_list`` into the shared index at its slot of ``slots`` (lists as long),
/// in order: its bytes into ``keys``, then an entry in ``table``. The slots hold no key. On
/// an error the keys before it are in.
#[pyfunction]
fn shared_put(
    table: &Bound<'_, PyUntypedArray>,
    keys: &Bound<'_, PyUntypedArray>,
    version: &Bound<'_, PyUntypedArray>,
    slots: &Bound<'_, PyList>,
    key_list: &Bound<'_, PyList>,
) -> PyResult<()> {
    if slots.len() != key_list.len() {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "shared_put() takes table, keys, version and two lists as long",
        ));
    }
    let ix = shm_index(table, keys, version)?;
    for (slot, key) in slots.iter().zip(key_list.iter()) {
        let slot = shm_slot(&ix, &slot)?;
        let kb = shm_key(&key)?;
        // SAFETY: the arrays checked above, the slot in range, the key short enough
        unsafe { ix.put(slot, &kb) }
            .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("the shared index is full"))?;
    }
    Ok(())
}

/// The key each slot of ``slots`` (a list) holds out of the shared index, in order: its
/// entry cleared and the entries after it shifted back (``version`` odd meanwhile), then
/// its length. A slot whose key the table does not hold is left as it is.
#[pyfunction]
fn shared_remove(
    table: &Bound<'_, PyUntypedArray>,
    keys: &Bound<'_, PyUntypedArray>,
    version: &Bound<'_, PyUntypedArray>,
    slots: &Bound<'_, PyList>,
) -> PyResult<()> {
    let ix = shm_index(table, keys, version)?;
    for slot in slots.iter() {
        let slot = shm_slot(&ix, &slot)?;
        // SAFETY: the arrays checked above, the slot in range
        unsafe { ix.remove(slot) };
    }
    Ok(())
}

/// The broker's Key_Shared hash of a key (an int key as its decimal text), in [1, 65535].
#[pyfunction]
fn key_hash(key: &Bound<'_, PyAny>) -> PyResult<u32> {
    if let Ok(s) = key.downcast::<pyo3::types::PyString>() {
        return Ok(crate::hash::key_hash(s.to_str()?));
    }
    let n: i128 = key.extract()?;
    Ok(crate::hash::key_hash(&n.to_string()))
}

/// MurmurHash3 x86 32-bit of ``data``.
#[pyfunction]
#[pyo3(signature = (data, seed = 0))]
fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    crate::hash::murmur3_32(data, seed)
}

/// Scatter batches of at least ``min_rows`` rows on two threads (0: never); returns the
/// value before. The default is 4096 on a machine with two or more CPUs, else 0.
#[pyfunction]
fn set_split(min_rows: usize) -> usize {
    crate::split::set_min_rows(min_rows)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(gather, m)?)?;
    m.add_function(wrap_pyfunction!(aggregate, m)?)?;
    m.add_function(wrap_pyfunction!(key_hash, m)?)?;
    m.add_function(wrap_pyfunction!(murmur3_32, m)?)?;
    m.add_function(wrap_pyfunction!(candidates, m)?)?;
    m.add_function(wrap_pyfunction!(plan_evictions, m)?)?;
    m.add_function(wrap_pyfunction!(first_nonfinite, m)?)?;
    m.add_function(wrap_pyfunction!(shared_put, m)?)?;
    m.add_function(wrap_pyfunction!(shared_remove, m)?)?;
    m.add_function(wrap_pyfunction!(set_split, m)?)?;
    m.add_class::<FpTable>()?;
    m.add_class::<keys::KeyIndex>()?;
    m.add_class::<ring::RingCore>()?;
    m.add_class::<store::StoreCore>()?;
    m.add("WINDOW_LAYOUT", store::WINDOW_LAYOUT.to_vec())?;
    m.add("SCATTER_NOGIL_ROWS", ring::NOGIL_ROWS)?;
    for (name, v) in [
        ("POS", layout::POS),
        ("FILL", layout::FILL),
        ("WSEQ", layout::WSEQ),
        ("CSEQ", layout::CSEQ),
        ("NEWEST", layout::NEWEST),
        ("TOUCH", layout::TOUCH),
        ("TICK", layout::TICK),
        ("KEYGEN", layout::KEYGEN),
        ("META_COLS", layout::META_COLS),
        ("C_LATE", layout::C_LATE),
        ("C_OOO", layout::C_OOO),
        ("C_EXPIRED", layout::C_EXPIRED),
        ("S_EVENTS", layout::S_EVENTS),
        ("S_EVICTIONS", layout::S_EVICTIONS),
        ("S_EXPIRED", layout::S_EXPIRED),
        ("S_COUNTERS", layout::S_COUNTERS),
        ("STATS_COLS", layout::STATS_COLS),
        ("N_COUNTERS", layout::N_COUNTERS),
        ("RANGE_SIZE", crate::hash::RANGE_SIZE as usize),
    ] {
        m.add(name, v)?;
    }
    m.add("ABSENT", layout::ABSENT)?;
    m.add("SKIP", layout::SKIP)?;
    m.add("AGGREGATES", layout::AGGREGATES.to_vec())?;
    Ok(())
}
