//! The seqlock's protocol between a writer thread and a reader thread, model-checked with
//! loom: every interleaving (and every reordering the memory orderings allow) of one writer
//! making two writes and one reader trying one read. Whenever the reader's check passes, what
//! it read is whole: both words of one write, never one of each.
//!
//! The protocol, as `src/seqlock.rs` (the reader) and `src/write.rs` (the writer: `begin`,
//! `end`) run it: the writer raises WSEQ (relaxed) and issues a release fence, writes the
//! slot's words, then stores CSEQ = WSEQ with release; the reader loads CSEQ with acquire,
//! gives up unless WSEQ (relaxed) equals it, reads the words, issues an acquire fence and
//! keeps the read only if WSEQ is still what it was. The slot's words are read and written as
//! relaxed atomics (a racing read is the seqlock's to reject, not undefined behaviour).

use loom::sync::atomic::{fence, AtomicI64, Ordering};
use loom::sync::Arc;
use loom::thread;

struct Slot {
    wseq: AtomicI64,
    cseq: AtomicI64,
    words: [AtomicI64; 2], // e.g. POS and FILL: must be seen from one write
}

impl Slot {
    fn new() -> Self {
        Slot {
            wseq: AtomicI64::new(0),
            cseq: AtomicI64::new(0),
            words: [AtomicI64::new(0), AtomicI64::new(0)],
        }
    }

    /// `begin()`, the words, `end()`; `fenced`: the release fence after raising WSEQ.
    fn write(&self, value: i64, fenced: bool) {
        let w = self.wseq.load(Ordering::Relaxed) + 1;
        self.wseq.store(w, Ordering::Relaxed);
        if fenced {
            fence(Ordering::Release);
        }
        self.words[0].store(value, Ordering::Relaxed);
        self.words[1].store(value, Ordering::Relaxed);
        self.cseq.store(w, Ordering::Release);
    }

    /// `Meta::begin`, the words, `Meta::still`: Some(words) only for a whole read.
    fn read(&self) -> Option<(i64, i64)> {
        let c0 = self.cseq.load(Ordering::Acquire);
        if self.wseq.load(Ordering::Relaxed) != c0 {
            return None;
        }
        let a = self.words[0].load(Ordering::Relaxed);
        let b = self.words[1].load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        (self.wseq.load(Ordering::Relaxed) == c0).then_some((a, b))
    }
}

/// Every run of a writer making two writes beside a reader trying one read.
fn check(fenced: bool) {
    loom::model(move || {
        let slot = Arc::new(Slot::new());
        let writer = {
            let slot = slot.clone();
            thread::spawn(move || {
                slot.write(1, fenced);
                slot.write(2, fenced);
            })
        };
        if let Some((a, b)) = slot.read() {
            assert_eq!(a, b, "a torn read passed the seqlock");
        }
        writer.join().unwrap();
        assert_eq!(slot.read(), Some((2, 2)));
    });
}

#[test]
fn a_read_the_seqlock_passes_is_whole() {
    check(true);
}

/// The check can fail: with the writer's release fence left out, loom finds a torn read
/// that passes (the test of the test).
#[test]
#[should_panic(expected = "a torn read passed the seqlock")]
fn without_the_writers_fence_a_torn_read_passes() {
    check(false);
}
