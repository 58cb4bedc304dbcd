//! `heimdall._core`: the Python face of the core. Arrays are checked here (shape, dtype,
//! C order, writable outputs) and read as raw memory; the bulk work runs with the GIL
//! released, so other Python threads (readers, writers) go on meanwhile.
//!
//! `store` (StoreCore: `append` and `window`, a store's per-event calls; `event`: their
//! fast paths on a ring), `ring` (RingCore:
//! one stream's ring, its batch writes and reads), `keys` (KeyIndex: key -> slot, slot ->
//! key), `kernels` (the read kernels over raw arrays, the eviction plan), `shared` (the
//! shared-memory key index's writes), `dedup` (fingerprint tables), `arrays` (checks).

mod arrays;
mod dedup;
mod event;
mod kernels;
mod keys;
mod ring;
mod shared;
mod store;

use crate::layout;
use dedup::{candidates, FpTable};
use kernels::{aggregate, first_nonfinite, gather, plan_evictions};
use pyo3::prelude::*;
use shared::{shared_put, shared_remove};

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
