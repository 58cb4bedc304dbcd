//! Deduplication's fingerprint tables (`heimdall.sources.dedup`; the table: `seen.rs`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

/// Handles by fingerprint (any hashable; its Python hash is what is kept), for about
/// ``capacity`` entries (it grows past that): ``heimdall.sources.dedup``'s tables. Not
/// thread-safe: the stream's ingest lock guards it.
#[pyclass(module = "heimdall._core")]
pub(crate) struct FpTable {
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
pub(crate) fn candidates(
    new: PyRef<'_, FpTable>,
    old: PyRef<'_, FpTable>,
    fingerprints: &Bound<'_, PyAny>,
) -> PyResult<(Vec<usize>, Vec<usize>)> {
    Ok(crate::seen::candidates(&new.table, &old.table, &hashes(fingerprints)?))
}
