//! `KeyIndex`: a ring's key index, key -> slot and slot -> key, the one index the store
//! keeps (the shared-memory index for other processes is `shm`'s).
//!
//! Key -> slot is an open-addressing table with linear probing and backward-shift deletion
//! (no tombstones), at most 3/4 full, sized once for the ring's slots. Each entry holds a
//! reference to its key, the slot and 32 bits of the key's hash inline, so a batch's keys
//! cost one probe each into a flat array; the probes of the next keys are prefetched while
//! one is read, so the cache misses of a batch of random keys overlap. A key found by
//! identity (the same object, as when a caller reuses its key objects) is never compared.
//!
//! Keys are str and int (`check_key` in Python refuses others). Exact str and int compare
//! here, with no Python code; a subclass's `__eq__` / `__hash__` are Python's, called
//! only with the table not borrowed (see `find`), as a dict would call them.
//!
//! Slot -> key is a Python list (`slot_keys`), None for a free slot: what a read checks a
//! slot's owner against. Every method runs with the GIL held; the writers' lock orders the
//! changes.

use super::arrays::new_int64s;
use crate::write::prefetch;
use numpy::PyArrayMethods;
use pyo3::exceptions::{PyIndexError, PyKeyError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::{PyTraverseError, PyVisit};
use std::cell::UnsafeCell;

#[derive(Clone, Copy)]
struct Entry {
    /// a strong reference; null: empty
    key: *mut ffi::PyObject,
    slot: i32,
    /// the low 32 bits of the key's Python hash
    hash: u32,
}

const EMPTY: Entry = Entry { key: std::ptr::null_mut(), slot: 0, hash: 0 };

struct Table {
    entries: Vec<Entry>,
    mask: u64,
    shift: u32,
    count: usize,
    /// keys held that are not an exact str or int (their equality is Python's)
    exotic: usize,
}

/// An exact str or int: hashes and compares here, no Python code runs.
#[inline]
pub(crate) fn plain(key: *mut ffi::PyObject) -> bool {
    // SAFETY: a live object
    unsafe { ffi::PyUnicode_CheckExact(key) != 0 || ffi::PyLong_CheckExact(key) != 0 }
}

/// The hash of a plain key (it cannot fail): a str's cached hash read in place.
#[inline]
unsafe fn plain_hash(key: *mut ffi::PyObject) -> isize {
    if ffi::PyUnicode_CheckExact(key) != 0 {
        let h = (*(key as *mut ffi::PyASCIIObject)).hash;
        if h != -1 {
            return h;
        }
    }
    ffi::PyObject_Hash(key)
}

/// Two plain keys equal, compared with no Python code.
#[inline]
pub(crate) unsafe fn plain_eq(a: *mut ffi::PyObject, b: *mut ffi::PyObject) -> bool {
    if a == b {
        return true;
    }
    if ffi::PyUnicode_CheckExact(a) != 0 {
        if ffi::PyUnicode_CheckExact(b) == 0 {
            return false;
        }
        let n = ffi::PyUnicode_GET_LENGTH(a);
        let kind = ffi::PyUnicode_KIND(a);
        return n == ffi::PyUnicode_GET_LENGTH(b)
            && kind == ffi::PyUnicode_KIND(b)
            && libc_memcmp(
                ffi::PyUnicode_DATA(a),
                ffi::PyUnicode_DATA(b),
                n as usize * kind as usize,
            );
    }
    ffi::PyLong_CheckExact(b) != 0 && ffi::PyObject_RichCompareBool(a, b, ffi::Py_EQ) == 1
}

#[inline]
unsafe fn libc_memcmp(a: *const std::ffi::c_void, b: *const std::ffi::c_void, n: usize) -> bool {
    std::slice::from_raw_parts(a as *const u8, n) == std::slice::from_raw_parts(b as *const u8, n)
}

/// What a probe found without running Python code.
enum Probe {
    Found(usize),
    Missing,
    /// entries of the same hash whose equality only Python can say (a subclass key)
    Ask(Vec<*mut ffi::PyObject>),
}

impl Table {
    fn new(max_keys: usize) -> Table {
        let (mut size, mut bits) = (8u64, 3u32);
        while size * 3 < max_keys as u64 * 4 + 4 {
            size <<= 1;
            bits += 1;
        }
        Table {
            entries: vec![EMPTY; size as usize],
            mask: size - 1,
            shift: 64 - bits,
            count: 0,
            exotic: 0,
        }
    }

    /// the home bucket: Fibonacci hashing, so ints in a run (hash = value) spread evenly
    #[inline]
    fn home(&self, h: isize) -> usize {
        ((h as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Walk the key's run. Plain pairs are compared here; pairs with a subclass key are
    /// handed back to ask Python.
    #[inline]
    unsafe fn probe(&self, key: *mut ffi::PyObject, h: isize) -> Probe {
        let mut i = self.home(h);
        let key_plain = plain(key);
        let mut ask = Vec::new();
        loop {
            let e = self.entries.get_unchecked(i);
            if e.key.is_null() {
                return if ask.is_empty() { Probe::Missing } else { Probe::Ask(ask) };
            }
            if e.hash == h as u32 {
                if e.key == key {
                    return Probe::Found(i);
                }
                if key_plain && plain(e.key) {
                    if plain_eq(e.key, key) {
                        return Probe::Found(i);
                    }
                } else {
                    ask.push(e.key);
                }
            }
            i = (i + 1) & self.mask as usize;
        }
    }

    /// `probe` for a plain key while no subclass key is held: every pair compares here.
    ///
    /// # Safety
    /// `key` is plain, `h` its hash, and the table holds plain keys only.
    #[inline(always)]
    unsafe fn probe_plain(&self, key: *mut ffi::PyObject, h: isize) -> Option<usize> {
        let mask = self.mask as usize;
        let mut i = self.home(h);
        loop {
            let e = self.entries.get_unchecked(i);
            if e.key.is_null() {
                return None;
            }
            if e.hash == h as u32 && (e.key == key || plain_eq(e.key, key)) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The bucket of a held key object (by identity), if still held.
    fn bucket_of(&self, held: *mut ffi::PyObject, h: isize) -> Option<usize> {
        let mut i = self.home(h);
        loop {
            let e = &self.entries[i];
            if e.key.is_null() {
                return None;
            }
            if e.key == held {
                return Some(i);
            }
            i = (i + 1) & self.mask as usize;
        }
    }

    unsafe fn insert(&mut self, key: *mut ffi::PyObject, h: isize, slot: i32) -> PyResult<()> {
        if (self.count as u64 + 1) * 4 > (self.mask + 1) * 3 {
            return Err(PyOverflowError::new_err("the ring's key table is full"));
        }
        let mut i = self.home(h);
        while !self.entries[i].key.is_null() {
            i = (i + 1) & self.mask as usize;
        }
        ffi::Py_INCREF(key);
        self.entries[i] = Entry { key, slot, hash: h as u32 };
        self.count += 1;
        self.exotic += !plain(key) as usize;
        Ok(())
    }

    /// Remove bucket `at`; returns its key (the reference the table held).
    unsafe fn take(&mut self, at: usize) -> *mut ffi::PyObject {
        let held = self.entries[at].key;
        let mask = self.mask as usize;
        // backward shift: each later entry of the run moves into the hole if its home allows
        let (mut hole, mut j) = (at, at);
        loop {
            j = (j + 1) & mask;
            let f = self.entries[j];
            if f.key.is_null() {
                break;
            }
            let home = self.home(entry_hash(f.key));
            // f may move to the hole unless its home lies cyclically in (hole, j]
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.entries[hole] = f;
                hole = j;
            }
        }
        self.entries[hole] = EMPTY;
        self.count -= 1;
        self.exotic -= !plain(held) as usize;
        held
    }

    unsafe fn clear(&mut self) {
        for e in self.entries.iter_mut() {
            if !e.key.is_null() {
                ffi::Py_DECREF(e.key);
            }
            *e = EMPTY;
        }
        self.count = 0;
        self.exotic = 0;
    }
}

/// The full hash of a key the table holds (computed when it went in, so it cannot fail now
/// for a plain key; a subclass's `__hash__` is asked again, as a dict resizing would).
#[inline]
unsafe fn entry_hash(key: *mut ffi::PyObject) -> isize {
    let h = plain_hash(key);
    if h == -1 {
        ffi::PyErr_Clear();
    }
    h
}

/// A ring's key index (see the module's doc).
#[pyclass(frozen, module = "heimdall._core")]
pub struct KeyIndex {
    table: UnsafeCell<Table>,
    slot_keys: Py<PyList>,
}

// SAFETY: the table is read and changed only with the GIL held, and never borrowed across a
// call into Python code (hashes and subclass comparisons run with no borrow taken)
unsafe impl Sync for KeyIndex {}
unsafe impl Send for KeyIndex {}

impl Drop for KeyIndex {
    fn drop(&mut self) {
        // dropped by the object's dealloc, with the GIL held
        unsafe { self.table.get_mut().clear() };
    }
}

fn hash_of(key: &Bound<'_, PyAny>) -> PyResult<isize> {
    // SAFETY: a live object; PyObject_Hash sets an error on -1
    let h = unsafe { ffi::PyObject_Hash(key.as_ptr()) };
    if h == -1 {
        if let Some(err) = PyErr::take(key.py()) {
            return Err(err);
        }
    }
    Ok(h)
}

impl KeyIndex {
    #[allow(clippy::mut_from_ref)]
    #[inline]
    fn table(&self) -> &mut Table {
        // SAFETY: see the Sync impl: one borrow at a time, under the GIL
        unsafe { &mut *self.table.get() }
    }

    pub(crate) fn slot_keys<'py>(&self, py: Python<'py>) -> &Bound<'py, PyList> {
        self.slot_keys.bind(py)
    }

    /// The slot_keys list, borrowed.
    pub(crate) fn slot_keys_ptr(&self) -> *mut ffi::PyObject {
        self.slot_keys.as_ptr()
    }

    /// The bucket holding `key` (hash `h`), asking Python about subclass keys of that hash.
    fn find(&self, py: Python<'_>, key: &Bound<'_, PyAny>, h: isize) -> PyResult<Option<usize>> {
        // SAFETY: the probe runs no Python code
        let ask = match unsafe { self.table().probe(key.as_ptr(), h) } {
            Probe::Found(i) => return Ok(Some(i)),
            Probe::Missing => return Ok(None),
            Probe::Ask(ask) => ask,
        };
        // owned references: Python code may change the table meanwhile
        // SAFETY: each pointer was a held key an instant ago, with the GIL held throughout
        let held: Vec<Py<PyAny>> =
            ask.into_iter().map(|p| unsafe { Py::from_borrowed_ptr(py, p) }).collect();
        for k in held {
            if k.bind(py).eq(key)? {
                return Ok(self.table().bucket_of(k.as_ptr(), h));
            }
        }
        Ok(None)
    }

    /// The slot of `key`, or None (a TypeError for an unhashable key).
    pub(crate) fn get_slot(&self, key: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        let h = hash_of(key)?;
        Ok(self.find(key.py(), key, h)?.map(|i| self.table().entries[i].slot as usize))
    }

    /// The slot of a plain key while no subclass key is held: no Python code runs. None:
    /// not held, or not a case for this path.
    #[inline]
    pub(crate) fn plain_slot(&self, key: *mut ffi::PyObject) -> Option<usize> {
        let t = self.table();
        if !plain(key) || t.exotic > 0 {
            return None;
        }
        // SAFETY: a plain key, only plain keys held: hash and compare run no Python code
        unsafe { t.probe_plain(key, plain_hash(key)) }.map(|i| t.entries[i].slot as usize)
    }

    /// Whether a batch of keys can be looked up by `lookup_plain`.
    pub(crate) fn all_plain(&self) -> bool {
        self.table().exotic == 0
    }

    /// Each key's slot into `slots` (n = keys.len()), with no Python code: every key plain,
    /// no subclass key held. Each key's hash is taken LOOKAHEAD keys ahead of its probe and
    /// its home bucket prefetched then (its key object LOOKAHEAD keys before that); half way,
    /// while the keys probed are equal objects made afresh (as by a decoder), the key held
    /// in that bucket is prefetched for the compare. Ok(true): every slot written (`absent`
    /// for a key not held); Ok(false): a key not held under `strict`; Err(()): a key that is
    /// not plain.
    pub(crate) fn lookup_plain(
        &self,
        items: &[*mut ffi::PyObject],
        strict: bool,
        absent: i64,
        slots: &mut [i64],
    ) -> Result<bool, ()> {
        const LOOKAHEAD: usize = 8;
        let t = self.table();
        let n = items.len();
        let mut same = true; // the last key probed was the object the table holds
        for j in 0..n + LOOKAHEAD {
            if j < n {
                if j + LOOKAHEAD < n {
                    prefetch(items[j + LOOKAHEAD] as *const u8);
                }
                let key = items[j];
                if !plain(key) {
                    return Err(());
                }
                // SAFETY: a plain key
                let h = unsafe { plain_hash(key) };
                slots[j] = h as i64; // the hash of key j, until its slot replaces it
                prefetch(&t.entries[t.home(h)] as *const Entry as *const u8);
            }
            if !same && j >= LOOKAHEAD / 2 && j - LOOKAHEAD / 2 < n {
                let m = j - LOOKAHEAD / 2;
                let held = t.entries[t.home(slots[m] as isize)].key;
                if !held.is_null() && held != items[m] {
                    prefetch(held as *const u8);
                    prefetch((held as *const u8).wrapping_add(64)); // a str's characters
                }
            }
            if j < LOOKAHEAD {
                continue;
            }
            let i = j - LOOKAHEAD;
            // SAFETY: plain keys, only plain keys held: no Python code runs
            match unsafe { t.probe_plain(items[i], slots[i] as isize) } {
                Some(b) => {
                    let e = unsafe { t.entries.get_unchecked(b) };
                    same = e.key == items[i];
                    slots[i] = e.slot as i64;
                }
                None if strict => return Ok(false),
                None => {
                    same = false;
                    slots[i] = absent;
                }
            }
        }
        Ok(true)
    }

    /// `index[key] = slot`.
    pub(crate) fn put_one(&self, key: &Bound<'_, PyAny>, slot: usize) -> PyResult<()> {
        let h = hash_of(key)?;
        match self.find(key.py(), key, h)? {
            Some(i) => self.table().entries[i].slot = slot as i32,
            // SAFETY: a live key, its hash taken
            None => unsafe { self.table().insert(key.as_ptr(), h, slot as i32)? },
        }
        Ok(())
    }

    /// `index.pop(key, None)`.
    pub(crate) fn remove_one(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let h = hash_of(key)?;
        if let Some(i) = self.find(key.py(), key, h)? {
            // SAFETY: a held bucket; the table's reference is released here
            unsafe { ffi::Py_DECREF(self.table().take(i)) };
        }
        Ok(())
    }

    fn slot_in_range(
        &self,
        py: Python<'_>,
        slot: &Bound<'_, PyAny>,
        what: &str,
    ) -> PyResult<usize> {
        let s: isize = slot.extract()?;
        if s < 0 || s as usize >= self.slot_keys.bind(py).len() {
            return Err(PyIndexError::new_err(format!("{what}: slot {s} out of range")));
        }
        Ok(s as usize)
    }

    /// Keys out of `slots` (each < len(slot_keys)): the index entry and `slot_keys[slot]`
    /// (None). On an error (a subclass key's `__eq__`) the keys from that one on stay.
    pub(crate) fn release(&self, py: Python<'_>, slots: &[usize]) -> PyResult<()> {
        let sk = self.slot_keys.bind(py);
        for &s in slots {
            let key = sk.get_item(s)?;
            if !key.is_none() {
                self.remove_one(&key)?;
            }
            sk.set_item(s, py.None())?;
        }
        Ok(())
    }

    /// (slot, key) of every key held, in slot order.
    fn pairs(&self, py: Python<'_>) -> Vec<(i32, Py<PyAny>)> {
        let t = self.table();
        let mut out: Vec<(i32, Py<PyAny>)> = t
            .entries
            .iter()
            .filter(|e| !e.key.is_null())
            // SAFETY: a held key, with the GIL
            .map(|e| (e.slot, unsafe { Py::from_borrowed_ptr(py, e.key) }))
            .collect();
        out.sort_unstable_by_key(|p| p.0);
        out
    }
}

#[pymethods]
impl KeyIndex {
    /// An empty index for up to ``max_keys`` keys (slots ``0 .. max_keys``).
    #[new]
    fn new(py: Python<'_>, max_keys: usize) -> PyResult<Self> {
        if max_keys == 0 || max_keys > i32::MAX as usize {
            return Err(PyValueError::new_err(format!(
                "KeyIndex: max_keys {max_keys} out of range"
            )));
        }
        let none: Vec<PyObject> = (0..max_keys).map(|_| py.None()).collect();
        Ok(KeyIndex {
            table: UnsafeCell::new(Table::new(max_keys)),
            slot_keys: PyList::new(py, none)?.unbind(),
        })
    }

    /// slot -> key (None: free): the list itself, which the index keeps in step.
    #[getter(slot_keys)]
    fn get_slot_keys(&self, py: Python<'_>) -> Py<PyList> {
        self.slot_keys.clone_ref(py)
    }

    /// The keys the table holds and the slot_keys list, for the cycle collector: a key of
    /// a str / int subclass may reference what holds this index. (No __clear__: the
    /// collector breaks such a cycle at the key or the store, whose own references it
    /// clears.)
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.slot_keys)?;
        // SAFETY: read only; the collector runs with the GIL held, and no table change is
        // under way when it can run (a change allocates nothing and runs no Python code)
        let t = unsafe { &*self.table.get() };
        for e in t.entries.iter().filter(|e| !e.key.is_null()) {
            // SAFETY: Py<PyAny> is a transparent non-null object pointer: a borrowed view of
            // the table's reference, its count untouched
            let key: &Py<PyAny> =
                unsafe { &*(&e.key as *const *mut ffi::PyObject).cast::<Py<PyAny>>() };
            visit.call(key)?;
        }
        Ok(())
    }

    /// Bytes of the table's buckets.
    #[getter]
    fn nbytes(&self) -> usize {
        self.table().entries.len() * std::mem::size_of::<Entry>()
    }

    fn __len__(&self) -> usize {
        self.table().count
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.get_slot(key)?.is_some())
    }

    fn __getitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.get_slot(key)?.ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    /// The key's slot, or ``default``.
    #[pyo3(signature = (key, default = None))]
    fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<PyObject>,
    ) -> PyResult<PyObject> {
        Ok(match self.get_slot(key)? {
            Some(s) => s.into_pyobject(py)?.into_any().unbind(),
            None => default.unwrap_or_else(|| py.None()),
        })
    }

    /// The keys held, in slot order.
    fn keys(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.pairs(py).into_iter().map(|p| p.1).collect()
    }

    /// The slots held, in order.
    fn values(&self, py: Python<'_>) -> Vec<i32> {
        self.pairs(py).into_iter().map(|p| p.0).collect()
    }

    /// (key, slot) of every key held, in slot order.
    fn items(&self, py: Python<'_>) -> Vec<(Py<PyAny>, i32)> {
        self.pairs(py).into_iter().map(|(s, k)| (k, s)).collect()
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<PyObject> {
        Ok(PyList::new(py, self.keys(py))?.try_iter()?.into_any().unbind())
    }

    /// ``index[key] = slot`` (the caller keeps ``slot_keys``).
    fn put(&self, key: &Bound<'_, PyAny>, slot: usize) -> PyResult<()> {
        self.put_one(key, slot)
    }

    /// ``index.pop(key, None)``.
    fn remove(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.remove_one(key)
    }

    /// For each slot of ``slots`` and its key of ``keys`` (lists as long), in order:
    /// ``slot_keys[slot] = key`` and ``index[key] = slot``. On an error the ones before it
    /// are done.
    fn own(
        &self,
        py: Python<'_>,
        slots: &Bound<'_, PyList>,
        keys: &Bound<'_, PyList>,
    ) -> PyResult<()> {
        if slots.len() != keys.len() {
            return Err(PyValueError::new_err("own: keys must be a list as long as slots"));
        }
        let sk = self.slot_keys.bind(py);
        for (slot, key) in slots.iter().zip(keys.iter()) {
            let s = self.slot_in_range(py, &slot, "own")?;
            sk.set_item(s, &key)?;
            self.put_one(&key, s)?;
        }
        Ok(())
    }

    /// Forget every key (``slot_keys`` too).
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        // SAFETY: with the GIL; decrefs may run finalizers, after the table is emptied
        let held: Vec<Py<PyAny>> = self.pairs(py).into_iter().map(|p| p.1).collect();
        unsafe { self.table().clear() };
        drop(held);
        let sk = self.slot_keys.bind(py);
        for i in 0..sk.len() {
            sk.set_item(i, py.None())?;
        }
        Ok(())
    }

    /// Whether the index holds together (for tests): every entry reachable from its home
    /// bucket, its key the one ``slot_keys`` names at its slot, and every key ``slot_keys``
    /// names an entry (the count right).
    fn check(&self, py: Python<'_>) -> bool {
        let t = self.table();
        let sk = self.slot_keys.bind(py);
        if sk.iter().filter(|k| !k.is_none()).count() != t.count {
            return false;
        }
        let mut seen = 0;
        for e in t.entries.iter().filter(|e| !e.key.is_null()) {
            seen += 1;
            // SAFETY: a held key
            let h = unsafe { entry_hash(e.key) };
            let owner = sk.get_item(e.slot as usize).is_ok_and(|k| {
                let k = k.as_ptr();
                // SAFETY: live objects, plain ones compared with no Python code
                k == e.key || (plain(k) && plain(e.key) && unsafe { plain_eq(k, e.key) })
            });
            if h as u32 != e.hash || t.bucket_of(e.key, h).is_none() || !owner {
                return false;
            }
        }
        seen == t.count
    }

    /// Each key's slot as an int64 array. A key not held: ``absent`` in its place, or, when
    /// ``absent`` is None, the whole answer is None (an unhashable key too). With an int
    /// ``absent`` an unhashable key raises TypeError.
    #[pyo3(signature = (keys, absent = None))]
    fn lookup(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        absent: Option<i64>,
    ) -> PyResult<PyObject> {
        let list =
            keys.downcast::<PyList>().map_err(|_| PyTypeError::new_err("lookup() takes a list"))?;
        let n = list.len();
        let out = new_int64s(py, n);
        // SAFETY: a new int64 array of n, written here only
        let slots = unsafe { std::slice::from_raw_parts_mut(out.data(), n) };
        let strict = absent.is_none();
        if self.all_plain() {
            // SAFETY: the list's items, borrowed for this call with the GIL held
            let items = unsafe { list_items(list) };
            match self.lookup_plain(items, strict, absent.unwrap_or(0), slots) {
                Ok(true) => return Ok(out.into_any().unbind()),
                Ok(false) => return Ok(py.None()),
                Err(()) => {} // a subclass key: asked one by one below
            }
        }
        for (i, key) in list.iter().enumerate() {
            slots[i] = match self.get_slot(&key) {
                Ok(Some(s)) => s as i64,
                Ok(None) if !strict => absent.unwrap_or(0),
                Err(e) if !strict => return Err(e),
                _ => return Ok(py.None()),
            };
        }
        Ok(out.into_any().unbind())
    }
}

/// The items of a list, borrowed.
///
/// # Safety
/// The list is not changed while the slice is used (the GIL held, no Python code run).
pub(crate) unsafe fn list_items<'a>(list: &'a Bound<'_, PyList>) -> &'a [*mut ffi::PyObject] {
    let p = list.as_ptr() as *mut ffi::PyListObject;
    std::slice::from_raw_parts((*p).ob_item, list.len())
}
