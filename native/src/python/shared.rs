//! The owner's writes to a shared-memory store's key index (the index: `shm.rs`).

use super::arrays::raw;
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

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
pub(crate) fn shared_put(
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
pub(crate) fn shared_remove(
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
