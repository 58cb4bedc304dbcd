//! Heimdall's native core.
//!
//! Data flow: a writer (the store's write path) appends rows into a slot's ring and
//! publishes them through the slot's seqlock (`layout`: the metadata line of a slot, its
//! columns); readers, in this process with the GIL released or in another process over
//! shared memory, copy a window or reduce it (`read`) and keep only reads the seqlock
//! proves whole. `hash` is the broker's key hash, which places a key on a cluster node.
//!
//! The pure Rust parts are tested by `cargo test`; `python` (feature "python") is the
//! `heimdall._core` module that Python calls.

pub mod evict;
pub mod hash;
pub mod layout;
pub mod read;
pub mod seen;
pub mod seqlock;
pub mod shm;
pub mod split;
pub mod write;

#[cfg(feature = "python")]
mod python;
