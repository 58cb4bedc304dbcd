//! `RingCore`: one stream's ring memory as the write path and the batch reads see it. The
//! Python `Ring` holds one (composition) and keeps the policy: new keys, eviction, expiry,
//! checkpoints. Every method checks its arguments before it writes anything; a batch's
//! bulk work (a scatter of `NOGIL_ROWS` rows or more, a large gather) runs with the GIL
//! released, so readers and writers on other threads go on meanwhile.

use super::arrays::{new_array, new_int64s, raw};
use super::keys::{list_items, plain, plain_eq, KeyIndex};
use crate::layout::{KEYGEN, META_COLS, N_COUNTERS, SKIP, STATS_COLS, S_EVENTS};
use crate::read::{self, Bounds, GatherOut};
use crate::seqlock::Meta;
use crate::split;
use crate::write::{Batch, FullList, RingMut};
use numpy::npyffi::{NpyTypes, PY_ARRAY_API};
use numpy::{
    PyArrayDescr, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// A scatter of this many rows or more runs without the GIL. The caller holds the stream's
/// lock, which every other writer of the stream takes (`StoreCore.append`, finding it held,
/// hands over to Python, which waits on it), and the rows it writes are read by the seqlock.
pub const NOGIL_ROWS: usize = 32_768;
/// A gather copying this many bytes or more runs without the GIL.
const GATHER_NOGIL_BYTES: usize = 256 << 10;
/// Entries of the list of rings a scatter left full, at most.
const FULL_SLOTS: usize = 8192;

/// One stream's ring (see the module's doc).
#[pyclass(frozen, module = "heimdall._core")]
pub struct RingCore {
    pub(crate) ring: RingMut,
    /// the row dtype: b'd', b'f', b'q', b'i'
    pub(crate) kind: u8,
    pub(crate) f: usize,
    /// (data, ts, meta, stats, counters): keeps the memory alive
    pub(crate) _arrays: Py<PyTuple>,
    pub(crate) stats: *mut i64,
    pub(crate) counters: *mut i64,
    pub(crate) index: Py<KeyIndex>,
    /// the writers' lock's ``locked``
    pub(crate) locked: PyObject,
    /// the rows laid end to end, (slots * cap, F) read-only over `data`: a view's base
    pub(crate) values_flat: PyObject,
    /// the rows' dtype and numpy's ndarray type: a view's parts
    pub(crate) descr: Py<PyArrayDescr>,
    pub(crate) array_type: *mut ffi::PyTypeObject,
    /// the timestamps laid end to end: what a view's ``ts_ns`` slices
    ts_flat: PyObject,
    pub(crate) fields: PyObject,
    pub(crate) reject_nan: bool,
    pub(crate) ttl_ns: i64,
    pub(crate) tick: AtomicI64,
    pub(crate) events: AtomicI64,
    pub(crate) next_sweep_ns: AtomicI64,
    pub(crate) reread: AtomicI64,
    pub(crate) full: FullList,
}

// SAFETY: the pointers are into arrays `_arrays` keeps alive; the write path runs under the
// stream's writers' lock (one writer), readers go by the seqlock; the counters are atomics
unsafe impl Send for RingCore {}
unsafe impl Sync for RingCore {}

fn kind_of(a: &Bound<'_, PyUntypedArray>) -> Option<u8> {
    let d = a.dtype();
    if d.is_native_byteorder() == Some(false) {
        return None;
    }
    match (d.kind(), d.itemsize()) {
        (b'f', 8) => Some(b'd'),
        (b'f', 4) => Some(b'f'),
        (b'i', 8) => Some(b'q'),
        (b'i', 4) => Some(b'i'),
        _ => None,
    }
}

fn int64_vec<'a>(a: &'a Bound<'_, PyAny>, n: Option<usize>, what: &str) -> PyResult<&'a [i64]> {
    let a = a
        .downcast::<PyUntypedArray>()
        .map_err(|_| PyValueError::new_err(format!("{what} must be a contiguous int64 array")))?;
    let n = n.unwrap_or(a.len());
    let p = raw(a, what, Some((b'i', 8)), &[Some(n)], false)?;
    // SAFETY: checked: n contiguous int64, read during this call
    Ok(unsafe { std::slice::from_raw_parts(p as *const i64, n) })
}

impl RingCore {
    fn read_ring(&self) -> read::Ring {
        let r = &self.ring;
        // SAFETY: the metadata lives as long as self
        let meta = unsafe { Meta::new(r.meta) };
        read::Ring {
            data: r.data,
            ts: r.ts,
            meta,
            slots: r.slots,
            cap: r.cap,
            row_bytes: r.row_bytes,
        }
    }

    pub(crate) fn index(&self) -> &KeyIndex {
        self.index.get()
    }

    /// (One writer at a time: loads and stores, not read-modify-writes.)
    pub(crate) fn count_events(&self, n: usize) {
        self.tick.store(self.tick.load(Ordering::Relaxed) + n as i64, Ordering::Relaxed);
        let events = self.events.load(Ordering::Relaxed) + n as i64;
        self.events.store(events, Ordering::Relaxed);
        if !self.stats.is_null() {
            // SAFETY: stats holds STATS_COLS int64 (checked at construction)
            unsafe { *self.stats.add(S_EVENTS) = events };
        }
    }

    /// A batch's rows (n, F), C-contiguous in the ring's dtype.
    fn batch_rows(&self, values: &Bound<'_, PyAny>, n: usize, what: &str) -> PyResult<*const u8> {
        let err = || {
            PyValueError::new_err(format!(
                "{what}: values must be a contiguous ({n}, {}) array of the ring's dtype",
                self.f
            ))
        };
        let a = values.downcast::<PyUntypedArray>().map_err(|_| err())?;
        if kind_of(a) != Some(self.kind) {
            return Err(err());
        }
        raw(a, what, None, &[Some(n), Some(self.f)], false)
            .map_err(|_| err())
            .map(|p| p as *const u8)
    }

    /// Write a checked batch: rows to `slots`, counted; the GIL released for a large one.
    fn scatter_checked(
        &self,
        py: Python<'_>,
        slots: &[i64],
        ts: &[i64],
        rows: *const u8,
        now: i64,
    ) {
        let n = slots.len();
        let tick0 = self.tick.load(Ordering::Relaxed);
        let mut counters = [0i64; 3];
        let (ring, full) = (self.ring, &self.full);
        let b = Batch { slots, ts, rows };
        // SAFETY: the batch was checked (slots in range, rows and ts as long); the caller
        // holds the writers' lock
        let run = |c: &mut [i64; 3]| unsafe { split::scatter(&ring, &b, now, tick0, c, full) };
        if n >= NOGIL_ROWS {
            py.allow_threads(|| run(&mut counters));
        } else {
            run(&mut counters);
        }
        for (k, c) in counters.iter().enumerate() {
            // SAFETY: counters holds N_COUNTERS int64 (checked at construction)
            unsafe { *self.counters.add(k) += c };
        }
        self.count_events(n);
    }
}

#[pymethods]
impl RingCore {
    /// A stream's ring over its arrays: ``data`` (slots, cap, F) of float64, float32, int64
    /// or int32; ``ts`` (slots, cap) and ``meta`` (slots, META_COLS) int64; ``stats`` the
    /// shared-memory stats line (STATS_COLS int64) or None; ``counters`` (N_COUNTERS,) int64;
    /// ``index`` its KeyIndex; ``lock`` the writers' lock. The views ``values_flat`` and
    /// ``ts_flat`` are what a window view slices; ``fields`` goes into each view.
    #[new]
    #[pyo3(signature = (data, ts, meta, stats, counters, index, lock, *, window_rows, span_ns,
                        lateness_ns, time_ordered, reject_nan, ttl_ns, values_flat, ts_flat,
                        fields))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        data: &Bound<'_, PyUntypedArray>,
        ts: &Bound<'_, PyUntypedArray>,
        meta: &Bound<'_, PyUntypedArray>,
        stats: Option<&Bound<'_, PyUntypedArray>>,
        counters: &Bound<'_, PyUntypedArray>,
        index: Py<KeyIndex>,
        lock: &Bound<'_, PyAny>,
        window_rows: usize,
        span_ns: i64,
        lateness_ns: i64,
        time_ordered: bool,
        reject_nan: bool,
        ttl_ns: i64,
        values_flat: PyObject,
        ts_flat: PyObject,
        fields: PyObject,
    ) -> PyResult<Self> {
        let dims = data.shape().to_vec();
        let kind = kind_of(data);
        if dims.len() != 3 || kind.is_none() {
            return Err(PyValueError::new_err(
                "RingCore: data must be (slots, cap, F) float64, float32, int64 or int32",
            ));
        }
        let (slots, cap, f) = (dims[0], dims[1], dims[2]);
        if window_rows == 0 || window_rows > cap || f == 0 {
            return Err(PyValueError::new_err(format!(
                "RingCore: window_rows must be in [1, cap={cap}] and F >= 1"
            )));
        }
        let data_p = raw(data, "data", None, &[Some(slots), Some(cap), Some(f)], true)?;
        let ts_p = raw(ts, "ts", Some((b'i', 8)), &[Some(slots), Some(cap)], true)?;
        let meta_p = raw(meta, "meta", Some((b'i', 8)), &[Some(slots), Some(META_COLS)], true)?;
        let stats_p = match stats {
            Some(s) => raw(s, "stats", Some((b'i', 8)), &[Some(STATS_COLS)], true)? as *mut i64,
            None => std::ptr::null_mut(),
        };
        let counters_p = raw(counters, "counters", Some((b'i', 8)), &[Some(N_COUNTERS)], true)?;
        if index.get().slot_keys(py).len() != slots {
            return Err(PyValueError::new_err("RingCore: the index is not for this many slots"));
        }
        let flat = values_flat.bind(py).downcast::<PyUntypedArray>()?;
        let n_rows = slots * cap;
        let flat_data = raw(flat, "values_flat", None, &[Some(n_rows), Some(f)], false)?;
        if kind_of(flat) != kind || flat_data != data_p {
            return Err(PyValueError::new_err(
                "RingCore: values_flat must be a (slots * cap, F) view of data",
            ));
        }
        let descr = flat.dtype().unbind();
        // SAFETY: numpy's API, with the GIL
        let array_type = unsafe { PY_ARRAY_API.get_type_object(py, NpyTypes::PyArray_Type) };
        let none = py.None();
        let arrays = PyTuple::new(
            py,
            [
                data.as_any(),
                ts.as_any(),
                meta.as_any(),
                stats.map_or(none.bind(py), |s| s.as_any()),
                counters.as_any(),
            ],
        )?;
        Ok(RingCore {
            ring: RingMut {
                data: data_p,
                ts: ts_p as *mut i64,
                meta: meta_p as *mut i64,
                slots,
                cap,
                w: window_rows,
                row_bytes: f * data.dtype().itemsize(),
                span_ns,
                lateness_ns,
                time_ordered,
            },
            kind: kind.unwrap_or(b'd'),
            f,
            _arrays: arrays.unbind(),
            stats: stats_p,
            counters: counters_p as *mut i64,
            index,
            locked: lock.getattr("locked")?.unbind(),
            values_flat,
            descr,
            array_type,
            ts_flat,
            fields,
            reject_nan,
            ttl_ns,
            tick: AtomicI64::new(0),
            events: AtomicI64::new(0),
            next_sweep_ns: AtomicI64::new(0),
            reread: AtomicI64::new(0),
            full: FullList::new(slots.clamp(1, FULL_SLOTS)),
        })
    }

    /// Append ``row`` (bytes-like, one packed row) to ``slot``; the caller holds the lock.
    /// Returns False, writing nothing, when a time window's row is older than its newest.
    fn write_row(
        &self,
        slot: usize,
        row: &Bound<'_, PyAny>,
        ts_ns: i64,
        now_ns: i64,
    ) -> PyResult<bool> {
        if slot >= self.ring.slots {
            return Err(PyIndexError::new_err(format!("write_row: slot {slot} out of range")));
        }
        let buf = PyBuffer::<u8>::get(row)?;
        if buf.len_bytes() != self.ring.row_bytes || !buf.is_c_contiguous() {
            return Err(PyValueError::new_err(format!(
                "write_row: a row is {} bytes; received {}",
                self.ring.row_bytes,
                buf.len_bytes()
            )));
        }
        let tick = self.tick.load(Ordering::Relaxed);
        // SAFETY: slot in range, the buffer row_bytes long; the caller holds the lock
        let done =
            unsafe { self.ring.write_row(slot, buf.buf_ptr() as *const u8, ts_ns, now_ns, tick) };
        if done {
            self.count_events(1);
        }
        Ok(done)
    }

    /// Append checked rows (the caller holds the lock): row i of ``values`` (n, F),
    /// C-contiguous in the ring's dtype, to slot ``slots[i]``, in order. In a time window a
    /// row older than its key's newest is inserted in order, or counted and dropped when
    /// later than the lateness allowed or older than the span.
    fn scatter(
        &self,
        py: Python<'_>,
        slots: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
        ts_ns: &Bound<'_, PyAny>,
        now_ns: i64,
    ) -> PyResult<()> {
        let s = int64_vec(slots, None, "slots")?;
        let t = int64_vec(ts_ns, Some(s.len()), "ts_ns")?;
        let rows = self.batch_rows(values, s.len(), "scatter")?;
        if let Some(&bad) = s.iter().find(|&&x| x < 0 || x as usize >= self.ring.slots) {
            return Err(PyIndexError::new_err(format!("scatter: slot {bad} out of range")));
        }
        self.scatter_checked(py, s, t, rows, now_ns);
        Ok(())
    }

    /// ``index.lookup`` then ``scatter`` in one call (the caller holds the lock): True when
    /// every key is held and the rows are written; False when a key is not held (nothing
    /// written); None when the keys are not all plain str / int (nothing written: Python
    /// looks them up). A large batch's lookup runs beside the compaction, on the helper
    /// thread, of the rings scatters left full.
    fn append_rows(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
        ts_ns: &Bound<'_, PyAny>,
        now_ns: i64,
    ) -> PyResult<Option<bool>> {
        let list = keys
            .downcast::<PyList>()
            .map_err(|_| PyTypeError::new_err("append_rows() takes a list"))?;
        let n = list.len();
        let t = int64_vec(ts_ns, Some(n), "ts_ns")?;
        let rows = self.batch_rows(values, n, "append_rows")?;
        let index = self.index();
        if !index.all_plain() {
            return Ok(None);
        }
        let mut slots = vec![0i64; n];
        // SAFETY: the list is not changed during the lookup (no Python code runs)
        let items = unsafe { list_items(list) };
        let found = match (self.full.is_empty(), split::claim(n)) {
            // SAFETY: the helper compacts this ring's slots; the lookup writes none of it
            (false, Some(h)) => unsafe {
                h.beside_compaction(&self.ring, &self.full, || {
                    index.lookup_plain(items, true, 0, &mut slots)
                })
            },
            _ => index.lookup_plain(items, true, 0, &mut slots),
        };
        match found {
            Err(()) => Ok(None),
            Ok(false) => Ok(Some(false)),
            Ok(true) => {
                self.scatter_checked(py, &slots, t, rows, now_ns);
                Ok(Some(true))
            }
        }
    }

    /// Compact now, on this thread, the rings scatters left full: what the helper does
    /// during a large batch's lookup (the caller holds the lock). Returns how many.
    fn compact_full(&self) -> usize {
        // SAFETY: the caller holds the lock; the list holds this ring's slots
        unsafe { self.ring.compact_ahead(&self.full, &AtomicBool::new(false)) }
    }

    /// ``windows()``'s read in one pass: each key's window (its last ``rows`` rows, within
    /// ``span_ns`` of its newest when > 0) copied right-aligned into new (B, rows, F) values
    /// and (B, rows) timestamps, zeros before it, and its length; a slot of -1 (a key not
    /// held) reads as empty. Returns (values, ts_ns, lengths), or None when Python must
    /// decide: a slot a writer was changing, or one that is no longer its key's. A large
    /// read copies with the GIL released (the seqlock vouches for each key's rows).
    fn gather(
        &self,
        py: Python<'_>,
        slots: &Bound<'_, PyAny>,
        keys: &Bound<'_, PyList>,
        rows: usize,
        span_ns: i64,
    ) -> PyResult<Option<(PyObject, PyObject, PyObject)>> {
        let b = keys.len();
        let s = int64_vec(slots, Some(b), "slots")?;
        if rows > self.ring.w {
            return Err(PyValueError::new_err(format!(
                "gather: rows must be in [0, {}]",
                self.ring.w
            )));
        }
        if let Some(&bad) = s.iter().find(|&&x| x >= self.ring.slots as i64 || x < -1) {
            return Err(PyIndexError::new_err(format!("gather: slot {bad} out of range")));
        }
        // SAFETY: new arrays of these shapes, written whole below
        let values = unsafe {
            new_array(
                py,
                self.descr.bind(py),
                &[b as isize, rows as isize, self.f as isize],
                std::ptr::null_mut(),
                None,
            )?
        };
        let ts = new_int64s(py, b * rows).reshape([b, rows])?;
        let lengths = new_int64s(py, b);
        let gens: Vec<i64> =
            s.iter().map(|&x| if x >= 0 { self.ring.get(x as usize, KEYGEN) } else { 0 }).collect();
        let mut ok = vec![false; b];
        let vb = values.bind(py).downcast::<PyUntypedArray>()?.clone();
        let out = GatherOut {
            // SAFETY: live arrays of the shapes above
            values: unsafe { (*vb.as_array_ptr()).data as *mut u8 },
            ts: ts.data(),
            lengths: lengths.data(),
            ok: ok.as_mut_ptr(),
            w: rows,
        };
        let ring = self.read_ring();
        let q = Bounds { rows: rows as i64, span_ns };
        // SAFETY: slots checked, outputs as long; the copies read C memory only
        let run = |slots: &[i64]| unsafe { read::gather(&ring, slots, q, &out) };
        let big = b * rows * (self.ring.row_bytes + 8) >= GATHER_NOGIL_BYTES;
        if big {
            py.allow_threads(|| run(s))
                .map_err(|e| PyIndexError::new_err(format!("gather: slot {} out of range", e.0)))?;
            // a key a writer changed under the copy is read again now, with the GIL, when no
            // writer of this process can be mid-write
            let again: Vec<i64> =
                s.iter().zip(&ok).map(|(&x, &k)| if k { SKIP } else { x }).collect();
            let torn = again.iter().filter(|&&x| x != SKIP).count();
            if torn > 0 {
                self.reread.fetch_add(torn as i64, Ordering::Relaxed);
                run(&again).map_err(|e| PyIndexError::new_err(format!("gather: slot {}", e.0)))?;
            }
        } else {
            run(s)
                .map_err(|e| PyIndexError::new_err(format!("gather: slot {} out of range", e.0)))?;
        }
        if !ok.iter().all(|&k| k) {
            return Ok(None);
        }
        // each slot was its key's from before its read (KEYGEN read first) to now: the
        // owner is read, then KEYGEN again
        let sk = self.index().slot_keys(py);
        // SAFETY: lists borrowed with the GIL held; no Python code runs in the loop
        let (owners, asked) = unsafe { (list_items(sk), list_items(keys)) };
        for (i, &x) in s.iter().enumerate() {
            if x < 0 {
                continue;
            }
            let (owner, key) = (owners[x as usize], asked[i]);
            // SAFETY: live objects, plain ones compared with no Python code
            let same =
                owner == key || (plain(owner) && plain(key) && unsafe { plain_eq(owner, key) });
            if !same || self.ring.get(x as usize, KEYGEN) != gens[i] {
                return Ok(None);
            }
        }
        Ok(Some((values, ts.into_any().unbind(), lengths.into_any().unbind())))
    }

    /// Take the keys out of ``slots`` (a list of distinct slots) and reset them, by the
    /// seqlock: first every slot's WSEQ raised past any write (every view of it ends) and
    /// its KEYGEN bumped; then each key out of the index and ``slot_keys[slot] = None``;
    /// then each slot's POS, FILL and NEWEST zeroed; then each CSEQ set to its WSEQ. If
    /// taking a key out fails (a subclass key's ``__eq__``) the slots are reset all the
    /// same, the keys from that one on stay in the index, and the error is raised.
    fn free_slots(&self, py: Python<'_>, slots: Vec<i64>) -> PyResult<()> {
        if let Some(&bad) = slots.iter().find(|&&x| x < 0 || x as usize >= self.ring.slots) {
            return Err(PyIndexError::new_err(format!("free_slots: slot {bad} out of range")));
        }
        let slots: Vec<usize> = slots.into_iter().map(|x| x as usize).collect();
        self.ring.free_begin(&slots);
        let released = self.index().release(py, &slots);
        self.ring.free_end(&slots);
        released
    }

    /// A slot's window read by the seqlock: (a, b, c0, keygen), its rows ``[a, b)`` at
    /// CSEQ ``c0`` and the slot's KEYGEN after; None while a writer is mid-write.
    fn bounds(&self, slot: usize) -> PyResult<Option<(i64, i64, i64, i64)>> {
        if slot >= self.ring.slots {
            return Err(PyIndexError::new_err(format!("bounds: slot {slot} out of range")));
        }
        let m = self.read_ring().meta;
        Ok(m.bounds(slot).map(|(a, b, c0)| (a, b, c0, m.get(slot, KEYGEN))))
    }

    /// Whether a view of rows ``[a, b)`` of ``slot`` read at CSEQ ``c0`` is still intact
    /// (``Window.valid``).
    fn intact(&self, slot: usize, a: i64, b: i64, c0: i64) -> PyResult<bool> {
        if slot >= self.ring.slots {
            return Err(PyIndexError::new_err(format!("intact: slot {slot} out of range")));
        }
        let (cap, w) = (self.ring.cap as i64, self.ring.w as i64);
        Ok(self.read_ring().meta.intact(slot, a, b, c0, cap, w))
    }

    /// What it holds, for the cycle collector (no __clear__: nothing it holds holds it).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self._arrays)?;
        visit.call(&self.index)?;
        visit.call(&self.descr)?;
        for o in [&self.locked, &self.values_flat, &self.ts_flat, &self.fields] {
            visit.call(o)?;
        }
        Ok(())
    }

    /// The writes so far (the LRU clock).
    #[getter]
    fn get_tick(&self) -> i64 {
        self.tick.load(Ordering::Relaxed)
    }

    #[setter]
    fn set_tick(&self, v: i64) {
        self.tick.store(v, Ordering::Relaxed)
    }

    /// Events appended.
    #[getter]
    fn get_events(&self) -> i64 {
        self.events.load(Ordering::Relaxed)
    }

    #[setter]
    fn set_events(&self, v: i64) {
        self.events.store(v, Ordering::Relaxed)
    }

    /// When the next idle sweep is due (``append``'s fast path hands over then).
    #[getter]
    fn get_next_sweep_ns(&self) -> i64 {
        self.next_sweep_ns.load(Ordering::Relaxed)
    }

    #[setter]
    fn set_next_sweep_ns(&self, v: i64) {
        self.next_sweep_ns.store(v, Ordering::Relaxed)
    }

    /// Keys ``gather`` read again after a writer changed them under its copy.
    #[getter]
    fn reread(&self) -> i64 {
        self.reread.load(Ordering::Relaxed)
    }

    /// Entries of the list of rings a scatter left full (8 bytes each).
    #[getter]
    fn full_cap(&self) -> usize {
        self.full.capacity()
    }

    /// Rows per slot.
    #[getter]
    fn cap(&self) -> usize {
        self.ring.cap
    }

    /// The timestamps laid end to end (what a view's ``ts_ns`` slices).
    #[getter]
    fn ts_flat(&self, py: Python<'_>) -> PyObject {
        self.ts_flat.clone_ref(py)
    }

    #[getter(index)]
    fn get_index(&self, py: Python<'_>) -> Py<KeyIndex> {
        self.index.clone_ref(py)
    }
}
