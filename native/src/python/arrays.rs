//! Arrays as raw memory: checked (dtype, shape, C order, writable) before any pointer is
//! taken, and new arrays made without a copy.

use numpy::npyffi::flags::NPY_ARRAY_WRITEABLE;
use numpy::npyffi::{NpyTypes, PY_ARRAY_API};
use numpy::{PyArray1, PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// An array's memory, checked: C-contiguous, of `kind`+`size` (e.g. b'i', 8) unless None,
/// of `shape` (None: any length on that axis), writable if `write`.
pub(crate) fn raw(
    a: &Bound<'_, PyUntypedArray>,
    what: &str,
    dtype: Option<(u8, usize)>,
    shape: &[Option<usize>],
    write: bool,
) -> PyResult<*mut u8> {
    let d = a.dtype();
    let dims = a.shape();
    let dtype_ok = dtype.is_none_or(|(k, n)| d.kind() == k && d.itemsize() == n)
        && d.is_native_byteorder() != Some(false);
    let shape_ok =
        dims.len() == shape.len() && dims.iter().zip(shape).all(|(&g, w)| w.is_none_or(|w| g == w));
    // SAFETY: a live array object
    let flags = unsafe { (*a.as_array_ptr()).flags };
    if !dtype_ok || !shape_ok || !a.is_c_contiguous() || (write && flags & NPY_ARRAY_WRITEABLE == 0)
    {
        let name = |(k, n): (u8, usize)| match (k, n) {
            (b'b', 1) => "bool".to_string(),
            (b'i', n) => format!("int{}", n * 8),
            (b'f', n) => format!("float{}", n * 8),
            (k, n) => format!("{}{n}", k as char),
        };
        let want: Vec<String> =
            shape.iter().map(|d| d.map_or("any".to_string(), |d| d.to_string())).collect();
        return Err(PyValueError::new_err(format!(
            "{what}: expected a C-contiguous{} {}array of shape ({}); got {} of shape {:?}",
            if write { " writable" } else { "" },
            dtype.map(|d| format!("{} ", name(d))).unwrap_or_default(),
            want.join(", "),
            d,
            dims
        )));
    }
    // SAFETY: as above
    Ok(unsafe { (*a.as_array_ptr()).data as *mut u8 })
}

pub(crate) fn int64s<'a>(a: &'a Bound<'_, PyUntypedArray>, what: &str) -> PyResult<&'a [i64]> {
    let p = raw(a, what, Some((b'i', 8)), &[None], false)?;
    // SAFETY: checked above; read for this call only
    Ok(unsafe { std::slice::from_raw_parts(p as *const i64, a.len()) })
}

// the array's memory, not the Bound, is what is borrowed mutably (numpy has no borrow rules)
#[allow(clippy::mut_from_ref)]
pub(crate) fn int64s_mut<'a>(
    a: &'a Bound<'_, PyUntypedArray>,
    what: &str,
) -> PyResult<&'a mut [i64]> {
    let p = raw(a, what, Some((b'i', 8)), &[None], true)?;
    // SAFETY: checked above (writable); written for this call only
    Ok(unsafe { std::slice::from_raw_parts_mut(p as *mut i64, a.len()) })
}

/// A new (n,) int64 array, not initialized: the caller writes every entry.
pub(crate) fn new_int64s(py: Python<'_>, n: usize) -> Bound<'_, PyArray1<i64>> {
    // SAFETY: the caller writes it whole before Python sees it
    unsafe { PyArray1::<i64>::new(py, [n], false) }
}

/// A new C-contiguous array of `dtype` and `dims`: over `data` (read-only, its memory kept
/// by `base`) when not null, else fresh and not initialized.
///
/// # Safety
/// `data` holds the array's bytes and lives as long as `base`; a fresh array is written
/// whole before Python sees it.
pub(crate) unsafe fn new_array(
    py: Python<'_>,
    dtype: &Bound<'_, PyArrayDescr>,
    dims: &[isize],
    data: *mut u8,
    base: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyObject> {
    let mut dims = dims.to_vec();
    let flags = if data.is_null() {
        0
    } else {
        numpy::npyffi::flags::NPY_ARRAY_C_CONTIGUOUS | numpy::npyffi::flags::NPY_ARRAY_ALIGNED
    };
    let tp = PY_ARRAY_API.get_type_object(py, NpyTypes::PyArray_Type);
    let p = PY_ARRAY_API.PyArray_NewFromDescr(
        py,
        tp,
        dtype.clone().into_dtype_ptr(),
        dims.len() as i32,
        dims.as_mut_ptr(),
        std::ptr::null_mut(),
        data as *mut std::ffi::c_void,
        flags,
        std::ptr::null_mut(),
    );
    if p.is_null() {
        return Err(PyErr::fetch(py));
    }
    let arr = PyObject::from_owned_ptr(py, p);
    if let Some(base) = base {
        if PY_ARRAY_API.PyArray_SetBaseObject(
            py,
            p as *mut numpy::npyffi::PyArrayObject,
            base.clone().into_ptr(),
        ) < 0
        {
            return Err(PyErr::fetch(py));
        }
    }
    Ok(arr)
}
