//! `StoreCore`: the two per-event entry points of a window store, ``append`` and
//! ``window``, whole in the core for the common case. The Python `WindowStore` holds one
//! and binds these two methods as its own; it hands the core, once, the rings and the
//! Python paths to take over with (`append_py`, `window_py`). A fast path that does not
//! apply (a mapping, a new key, a value to convert, a writer holding the lock, a key
//! absent, ...) changes nothing and calls its Python path with the same arguments, which
//! holds the rules and the error messages. The core knows no Python class by name.

use super::event::exact_i64;
use super::keys::plain_eq;
use super::ring::RingCore;
use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use pyo3::Borrowed;
use pyo3::{PyTraverseError, PyVisit};
use std::sync::atomic::Ordering;

/// What a view is, item by item: `WindowStore.window` builds the Window type it is given
/// (a tuple subclass) with these items, and the type names them in its ``LAYOUT``.
pub const WINDOW_LAYOUT: [&str; 10] =
    ["values", "ring", "slot", "a", "b", "c0", "key", "stream", "fields", "ts"];

/// See the module's doc.
#[pyclass(frozen, module = "heimdall._core")]
pub struct StoreCore {
    /// stream name -> its ring's core (a few: found by identity, else by text)
    rings: Vec<(Py<PyString>, Py<RingCore>)>,
    clock_ns: PyObject,
    append_py: PyObject,
    window_py: PyObject,
    window_type: Py<PyType>,
}

impl StoreCore {
    /// The ring of `stream` (a str), or None.
    fn ring(&self, p: *mut ffi::PyObject) -> Option<&Py<RingCore>> {
        if let Some((_, r)) = self.rings.iter().find(|(name, _)| name.as_ptr() == p) {
            return Some(r);
        }
        // SAFETY: live objects; exact str compare with no Python code
        if unsafe { ffi::PyUnicode_CheckExact(p) } == 0 {
            return None;
        }
        self.rings.iter().find(|(name, _)| unsafe { plain_eq(name.as_ptr(), p) }).map(|(_, r)| r)
    }

    fn now(&self, py: Python<'_>) -> Option<i64> {
        let clock = self.clock_ns.bind(py).call0().ok()?;
        // SAFETY: a live object
        if unsafe { ffi::PyLong_CheckExact(clock.as_ptr()) } == 0 {
            return None;
        }
        clock.extract().ok()
    }

    /// `append` whole, or false (nothing written).
    ///
    /// # Safety
    /// The GIL is held; the arguments are live objects (`ts_ns` null: not given).
    unsafe fn fast_append(
        &self,
        py: Python<'_>,
        stream: *mut ffi::PyObject,
        key: *mut ffi::PyObject,
        values: *mut ffi::PyObject,
        ts_ns: *mut ffi::PyObject,
    ) -> bool {
        let Some(ring) = self.ring(stream) else { return false };
        let r = ring.get();
        let given = !ts_ns.is_null() && ts_ns != ffi::Py_None();
        let mut now = 0;
        if !given || r.ttl_ns != 0 {
            // the clock is Python code: read it before the lock is checked
            let Some(t) = self.now(py) else { return false };
            now = t;
            if r.ttl_ns != 0 && now >= r.next_sweep_ns.load(Ordering::Relaxed) {
                return false; // an idle sweep is due
            }
        }
        let t = if !given {
            now
        } else {
            let Some(t) = exact_i64(ts_ns) else { return false };
            t
        };
        r.try_append(key, values, t, now)
    }
}

/// ``append(stream, key, values, ts_ns=None)``, a builtin bound to a StoreCore: the fast
/// path for positional arguments, else (or when it does not apply) the Python path with the
/// arguments as given. A raw vectorcall entry: this is every event's call.
unsafe extern "C" fn append_entry(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    entry(
        |py, core| {
            if kwnames.is_null() && (nargs == 3 || nargs == 4) {
                let ts = if nargs == 4 { *args.add(3) } else { std::ptr::null_mut() };
                if core.fast_append(py, *args, *args.add(1), *args.add(2), ts) {
                    return ffi::Py_NewRef(ffi::Py_None());
                }
            }
            ffi::PyObject_Vectorcall(core.append_py.as_ptr(), args, nargs as usize, kwnames)
        },
        slf,
    )
}

/// ``window(stream, key)``, a builtin bound to a StoreCore: the fast path for positional
/// arguments, else (or when it does not apply) the Python path with the arguments as given.
unsafe extern "C" fn window_entry(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    entry(
        |_py, core| {
            if kwnames.is_null() && nargs == 2 {
                if let Some(ring) = core.ring(*args) {
                    let tp = core.window_type.as_ptr() as *mut ffi::PyTypeObject;
                    match ring.get().try_window(ring.as_ptr(), *args, *args.add(1), tp) {
                        Ok(Some(w)) => return w,
                        Ok(None) => {}
                        Err(()) => return std::ptr::null_mut(),
                    }
                }
            }
            ffi::PyObject_Vectorcall(core.window_py.as_ptr(), args, nargs as usize, kwnames)
        },
        slf,
    )
}

/// Run an entry's body with the GIL's token and the StoreCore; a panic becomes a Python
/// error (it must not cross into the interpreter).
unsafe fn entry(
    body: impl FnOnce(Python<'_>, &StoreCore) -> *mut ffi::PyObject,
    slf: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let py = Python::assume_gil_acquired();
    // SAFETY: the builtin's self is the StoreCore it was made for (StoreCore.calls)
    let obj = Borrowed::from_ptr(py, slf);
    let core = obj.downcast_unchecked::<StoreCore>();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(py, core.get()))) {
        Ok(p) => p,
        Err(_) => {
            pyo3::exceptions::PySystemError::new_err("heimdall core: a panic in a store call")
                .restore(py);
            std::ptr::null_mut()
        }
    }
}

struct Defs([ffi::PyMethodDef; 2]);
// SAFETY: constant data
unsafe impl Sync for Defs {}

static CALLS: Defs = Defs([
    ffi::PyMethodDef {
        ml_name: c"append".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: append_entry },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: c"append($self, stream, key, values, ts_ns=None)\n--\n\n\
Append one event. Blocks only on other writers of the same stream.\n\n\
``values`` is a mapping holding every field (other entries are ignored) or a sequence\n\
of F numbers in field order. Event time: ``ts_ns``, else the spec's time field in a\n\
mapping, else arrival time. Raises SchemaError (nothing is written) on bad input."
            .as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"window".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: window_entry },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: c"window($self, stream, key)\n--\n\n\
The key's window as a zero-copy read-only view. O(1); never blocks the writer."
            .as_ptr(),
    },
]);

#[pymethods]
impl StoreCore {
    /// ``rings``: stream name -> RingCore;
    /// ``clock_ns``: the store's clock; ``append_py(stream, key, values, ts_ns)`` and
    /// ``window_py(stream, key)``: what takes over when a fast path does not apply;
    /// ``window_type``: the tuple subclass a view is, whose ``LAYOUT`` names its items.
    #[new]
    fn new(
        py: Python<'_>,
        rings: &Bound<'_, PyDict>,
        clock_ns: PyObject,
        append_py: PyObject,
        window_py: PyObject,
        window_type: Bound<'_, PyType>,
    ) -> PyResult<Self> {
        let layout: Vec<String> = window_type.getattr("LAYOUT")?.extract()?;
        if !window_type.is_subclass_of::<PyTuple>()? || layout != WINDOW_LAYOUT {
            return Err(PyTypeError::new_err(format!(
                "StoreCore: the window type must be a tuple subclass whose LAYOUT is {WINDOW_LAYOUT:?}"
            )));
        }
        let rings = rings
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.downcast_into::<PyString>()?.unbind(),
                    v.downcast_into::<RingCore>()?.unbind(),
                ))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let _ = py;
        Ok(StoreCore { rings, clock_ns, append_py, window_py, window_type: window_type.unbind() })
    }

    /// ``(append, window)``: the store's two per-event calls, builtins bound to this core.
    fn calls(slf: &Bound<'_, Self>) -> PyResult<(PyObject, PyObject)> {
        let py = slf.py();
        let make = |def: &'static ffi::PyMethodDef| -> PyResult<PyObject> {
            // SAFETY: a static definition; self is this core (kept by the builtin)
            unsafe {
                let f = ffi::PyCFunction_NewEx(
                    def as *const _ as *mut _,
                    slf.as_ptr(),
                    std::ptr::null_mut(),
                );
                if f.is_null() {
                    return Err(PyErr::fetch(py));
                }
                Ok(PyObject::from_owned_ptr(py, f))
            }
        };
        Ok((make(&CALLS.0[0])?, make(&CALLS.0[1])?))
    }

    // No __clear__: a cycle through the store (its Python paths are its bound methods) is
    // broken when the collector clears the store's own attributes.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for (name, ring) in &self.rings {
            visit.call(name)?;
            visit.call(ring)?;
        }
        for o in [&self.clock_ns, &self.append_py, &self.window_py] {
            visit.call(o)?;
        }
        visit.call(&self.window_type)
    }
}
