//! One event: the fast paths of `StoreCore.append` and `StoreCore.window` on a ring. Each
//! does the common case whole or changes nothing and says so (false / None), and the store's
//! Python path takes over.

use super::keys::{plain, plain_eq};
use super::ring::RingCore;
use crate::seqlock::Meta;
use numpy::npyffi::flags::{NPY_ARRAY_ALIGNED, NPY_ARRAY_C_CONTIGUOUS};
use numpy::npyffi::{PyArrayObject, PyArray_Descr, PY_ARRAY_API};
use pyo3::ffi;
use pyo3::prelude::*;
use std::sync::atomic::Ordering;

impl RingCore {
    /// Pack an exact tuple or list of F exact floats / ints into `out` as the row dtype.
    /// false: not a case for this path (no error set; Python decides).
    fn pack_row(&self, p: *mut ffi::PyObject, out: &mut [u8]) -> bool {
        // SAFETY: a live object; its items borrowed while the GIL is held and no Python
        // code runs
        unsafe {
            let items: *mut *mut ffi::PyObject = if ffi::PyTuple_CheckExact(p) != 0 {
                (*(p as *mut ffi::PyTupleObject)).ob_item.as_mut_ptr()
            } else if ffi::PyList_CheckExact(p) != 0 {
                (*(p as *mut ffi::PyListObject)).ob_item
            } else {
                return false;
            };
            if ffi::Py_SIZE(p) as usize != self.f {
                return false;
            }
            for j in 0..self.f {
                let v = *items.add(j);
                match self.kind {
                    b'd' | b'f' => {
                        let x = if ffi::PyFloat_CheckExact(v) != 0 {
                            ffi::PyFloat_AS_DOUBLE(v)
                        } else if ffi::PyLong_CheckExact(v) != 0 {
                            let x = ffi::PyLong_AsDouble(v);
                            if x == -1.0 && !ffi::PyErr_Occurred().is_null() {
                                ffi::PyErr_Clear();
                                return false;
                            }
                            x
                        } else {
                            return false;
                        };
                        if !x.is_finite() {
                            if self.reject_nan {
                                return false;
                            }
                        } else if self.kind == b'f' && x.abs() > f32::MAX as f64 {
                            return false;
                        }
                        if self.kind == b'd' {
                            out[8 * j..8 * j + 8].copy_from_slice(&x.to_ne_bytes());
                        } else {
                            out[4 * j..4 * j + 4].copy_from_slice(&(x as f32).to_ne_bytes());
                        }
                    }
                    _ => {
                        let Some(x) = exact_i64(v) else { return false };
                        if self.kind == b'q' {
                            out[8 * j..8 * j + 8].copy_from_slice(&x.to_ne_bytes());
                        } else {
                            let Ok(y) = i32::try_from(x) else { return false };
                            out[4 * j..4 * j + 4].copy_from_slice(&y.to_ne_bytes());
                        }
                    }
                }
            }
        }
        true
    }

    /// `append`'s fast path: a held plain key, a packable row, no writer holding the lock,
    /// an in-order time. false: nothing written, Python takes over.
    pub(crate) fn try_append(
        &self,
        key: *mut ffi::PyObject,
        values: *mut ffi::PyObject,
        t: i64,
        now: i64,
    ) -> bool {
        let mut buf = [0u8; 64];
        let mut heap;
        let row: &mut [u8] = if self.ring.row_bytes <= buf.len() {
            &mut buf[..self.ring.row_bytes]
        } else {
            heap = vec![0u8; self.ring.row_bytes];
            &mut heap
        };
        if !self.pack_row(values, row) {
            return false;
        }
        let Some(slot) = self.index().plain_slot(key) else { return false };
        // From here on no Python code runs but `locked`: if no writer holds the lock now,
        // none can take it before this write is done (this thread holds the GIL).
        // SAFETY: a callable with no arguments
        let held = unsafe { ffi::PyObject_CallNoArgs(self.locked.as_ptr()) };
        if held.is_null() {
            // SAFETY: with the GIL
            unsafe { ffi::PyErr_Clear() };
            return false;
        }
        // SAFETY: a new reference, released here
        let busy = unsafe {
            let b = held != ffi::Py_False();
            ffi::Py_DECREF(held);
            b
        };
        if busy || slot >= self.ring.slots {
            return false;
        }
        let tick = self.tick.load(Ordering::Relaxed);
        // SAFETY: slot in range, the row packed, no other writer (checked above)
        if !unsafe { self.ring.write_row(slot, row.as_ptr(), t, now, tick) } {
            return false; // older than a time window's newest: the batch path places it
        }
        self.count_events(1);
        true
    }

    /// `window`'s fast path: a held plain key read whole by the seqlock, as a view: a new
    /// `window_type` tuple of the items `WINDOW_LAYOUT` names. Ok(None): Python takes over
    /// (absent, a writer mid-append, the slot changing hands); Err: an error is set.
    ///
    /// # Safety
    /// The GIL is held; `slf` is this RingCore's object, `stream` and `key` live objects,
    /// `window_type` a tuple subclass.
    pub(crate) unsafe fn try_window(
        &self,
        slf: *mut ffi::PyObject,
        stream: *mut ffi::PyObject,
        key: *mut ffi::PyObject,
        window_type: *mut ffi::PyTypeObject,
    ) -> Result<Option<*mut ffi::PyObject>, ()> {
        let index = self.index();
        let Some(slot) = index.plain_slot(key) else { return Ok(None) };
        let r = &self.ring;
        if slot >= r.slots {
            return Ok(None);
        }
        let Some((a, b, c0)) = Meta::new(r.meta).bounds(slot) else { return Ok(None) };
        if b as usize > r.cap {
            return Ok(None);
        }
        // slot < len(slot_keys) (one per ring slot); borrowed with the GIL held
        let owner = ffi::PyList_GET_ITEM(index.slot_keys_ptr(), slot as isize);
        if owner != key && !(plain(owner) && plain_eq(owner, key)) {
            return Ok(None);
        }
        let n = b - a;
        // rows [slot * cap + a, slot * cap + b) of the flat view: a read-only view whose
        // base is the flat array
        let mut dims = [n as ffi::Py_ssize_t, self.f as ffi::Py_ssize_t];
        let data = r.data.add((slot * r.cap + a as usize) * r.row_bytes);
        let descr = self.descr.as_ptr();
        ffi::Py_INCREF(descr); // the array takes a reference
        let values = PY_ARRAY_API.PyArray_NewFromDescr(
            Python::assume_gil_acquired(),
            self.array_type,
            descr as *mut PyArray_Descr,
            2,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            data as *mut std::ffi::c_void,
            NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED,
            std::ptr::null_mut(),
        );
        if values.is_null() {
            return Err(());
        }
        let flat = self.values_flat.as_ptr();
        ffi::Py_INCREF(flat);
        let py = Python::assume_gil_acquired();
        if PY_ARRAY_API.PyArray_SetBaseObject(py, values as *mut PyArrayObject, flat) < 0 {
            ffi::Py_DECREF(values);
            return Err(());
        }
        let items = [
            values,
            ffi::PyLong_FromSsize_t(slot as ffi::Py_ssize_t),
            ffi::PyLong_FromLongLong(a),
            ffi::PyLong_FromLongLong(b),
            ffi::PyLong_FromLongLong(c0),
        ];
        let alloc = (*window_type).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
        let w = if items.iter().any(|p| p.is_null()) {
            std::ptr::null_mut()
        } else {
            alloc(window_type, 10)
        };
        if w.is_null() {
            for p in items {
                if !p.is_null() {
                    ffi::Py_DECREF(p);
                }
            }
            return Err(());
        }
        // the items in WINDOW_LAYOUT's order, each reference given to the tuple
        let [values, slot_o, a_o, b_o, c0_o] = items;
        for (i, (p, borrowed)) in [
            (values, false),
            (slf, true),
            (slot_o, false),
            (a_o, false),
            (b_o, false),
            (c0_o, false),
            (key, true),
            (stream, true),
            (self.fields.as_ptr(), true),
            (ffi::Py_None(), true),
        ]
        .into_iter()
        .enumerate()
        {
            if borrowed {
                ffi::Py_INCREF(p);
            }
            ffi::PyTuple_SET_ITEM(w, i as ffi::Py_ssize_t, p);
        }
        Ok(Some(w))
    }
}

/// An exact int that fits int64, read with no Python code; None for anything else (no
/// error left set).
///
/// # Safety
/// The GIL is held; `v` is a live object.
#[inline]
pub(crate) unsafe fn exact_i64(v: *mut ffi::PyObject) -> Option<i64> {
    if ffi::PyLong_CheckExact(v) == 0 {
        return None;
    }
    let mut overflow = 0;
    let x = ffi::PyLong_AsLongLongAndOverflow(v, &mut overflow);
    if overflow != 0 || (x == -1 && !ffi::PyErr_Occurred().is_null()) {
        ffi::PyErr_Clear();
        return None;
    }
    Some(x)
}
