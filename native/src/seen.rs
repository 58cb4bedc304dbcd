//! Fingerprint tables for deduplication (`heimdall.sources.dedup`).
//!
//! A `Table` maps a fingerprint's 64-bit hash to an index (the caller keeps the handles in
//! the order they came, at those indices), in an open-addressing table of (hash, index)
//! pairs with linear probing at a load of at most one half. Two fingerprints with equal
//! hashes are one entry: the caller compares message ids wherever fingerprints meet, so
//! that only makes a candidate more.

const EMPTY: usize = usize::MAX;

#[derive(Clone, Copy)]
struct Entry {
    hash: i64,
    idx: usize,
}

const VACANT: Entry = Entry { hash: 0, idx: EMPTY };

/// Ask for the cache line of a table entry a few messages ahead: a batch's probes land at
/// random places in a table of MiBs.
#[inline]
fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults
    unsafe {
        std::arch::x86_64::_mm_prefetch(
            at as *const T as *const i8,
            std::arch::x86_64::_MM_HINT_T0,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

const AHEAD: usize = 8;

/// Fibonacci hashing: the product's top log2(size) bits.
#[inline]
fn slot_of(h: i64, mask: usize) -> usize {
    let bits = (mask + 1).trailing_zeros();
    if bits == 0 {
        return 0;
    }
    ((h as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

pub struct Table {
    entries: Vec<Entry>,
    count: usize,
    next: usize,
}

impl Table {
    /// Room for about `capacity` entries (it grows past that).
    pub fn new(capacity: usize) -> Table {
        let size = (capacity.max(1) * 2).next_power_of_two().max(16);
        Table { entries: vec![VACANT; size], count: 0, next: 0 }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The place of `h`: its entry, or the vacant one where it would go.
    #[inline]
    fn probe(&self, h: i64) -> usize {
        let mask = self.entries.len() - 1;
        let mut i = slot_of(h, mask);
        loop {
            let e = self.entries[i];
            if e.idx == EMPTY || e.hash == h {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    fn reserve(&mut self, more: usize) {
        let need = (self.count + more) * 2;
        if need <= self.entries.len() {
            return;
        }
        let old = std::mem::replace(&mut self.entries, vec![VACANT; need.next_power_of_two()]);
        for e in old.into_iter().filter(|e| e.idx != EMPTY) {
            let at = self.probe(e.hash);
            self.entries[at] = e;
        }
    }

    /// The index held under `h`.
    pub fn get(&self, h: i64) -> Option<usize> {
        let e = self.entries[self.probe(h)];
        (e.idx != EMPTY).then_some(e.idx)
    }

    /// Hold each hash under the next index (counting from where the last call stopped),
    /// unless it is held already (by an earlier entry, or one earlier in this call). Returns
    /// the positions in `hashes` of those not added; the indices of the added ones are
    /// consecutive, in order.
    pub fn add(&mut self, hashes: &[i64]) -> Vec<usize> {
        self.reserve(hashes.len());
        let mut clash = Vec::new();
        let mask = self.entries.len() - 1;
        for (i, &h) in hashes.iter().enumerate() {
            if let Some(&next) = hashes.get(i + AHEAD) {
                prefetch(&self.entries[slot_of(next, mask)]);
            }
            let at = self.probe(h);
            if self.entries[at].idx != EMPTY {
                clash.push(i);
                continue;
            }
            self.entries[at] = Entry { hash: h, idx: self.next };
            self.next += 1;
            self.count += 1;
        }
        clash
    }

    /// Forget every entry; indices start again at 0.
    pub fn reset(&mut self) {
        self.entries.fill(VACANT);
        self.count = 0;
        self.next = 0;
    }
}

/// Which entries of a batch need a closer look: those whose hash `new` or `old` holds, and
/// those repeating an earlier hash of the batch. Returns (positions, firsts): for each
/// position, the position of the first entry of the batch with its hash (itself when it is
/// the first). Empty: the batch is new.
pub fn candidates(new: &Table, old: &Table, hashes: &[i64]) -> (Vec<usize>, Vec<usize>) {
    let size = (hashes.len() * 2).next_power_of_two().max(16);
    let mask = size - 1;
    let mut first = vec![EMPTY; size];
    let (mut at_out, mut firsts) = (Vec::new(), Vec::new());
    for (i, &h) in hashes.iter().enumerate() {
        if let Some(&next) = hashes.get(i + AHEAD) {
            prefetch(&new.entries[slot_of(next, new.entries.len() - 1)]);
            prefetch(&old.entries[slot_of(next, old.entries.len() - 1)]);
        }
        let mut s = slot_of(h, mask);
        while first[s] != EMPTY && hashes[first[s]] != h {
            s = (s + 1) & mask;
        }
        if first[s] == EMPTY {
            first[s] = i;
        }
        let at = first[s];
        if at < i || new.get(h).is_some() || old.get(h).is_some() {
            at_out.push(i);
            firsts.push(at);
        }
    }
    (at_out, firsts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Against a HashMap: what `add` keeps, what it refuses, what `get` finds, through
        /// growth and resets.
        #[test]
        fn table_is_a_map_of_first_comers(batches in prop::collection::vec(
                prop::collection::vec(-50i64..50, 0..40), 1..8), reset_at in 0usize..8) {
            let mut t = Table::new(4);
            let mut model: HashMap<i64, usize> = HashMap::new();
            let mut next = 0;
            for (b, batch) in batches.iter().enumerate() {
                if b == reset_at {
                    t.reset();
                    model.clear();
                    next = 0;
                }
                let clash = t.add(batch);
                let mut want = Vec::new();
                for (i, &h) in batch.iter().enumerate() {
                    if let std::collections::hash_map::Entry::Vacant(e) = model.entry(h) {
                        e.insert(next);
                        next += 1;
                    } else {
                        want.push(i);
                    }
                }
                prop_assert_eq!(clash, want);
                prop_assert_eq!(t.len(), model.len());
                for h in -50i64..50 {
                    prop_assert_eq!(t.get(h), model.get(&h).copied());
                }
            }
        }

        #[test]
        fn candidates_are_the_held_and_the_repeated(
                held_new in prop::collection::vec(0i64..30, 0..10),
                held_old in prop::collection::vec(0i64..30, 0..10),
                batch in prop::collection::vec(0i64..30, 0..30)) {
            let (mut new, mut old) = (Table::new(8), Table::new(8));
            new.add(&held_new);
            old.add(&held_old);
            let (at, firsts) = candidates(&new, &old, &batch);
            let mut want = (Vec::new(), Vec::new());
            for (i, h) in batch.iter().enumerate() {
                let first = batch.iter().position(|x| x == h).unwrap();
                if first < i || held_new.contains(h) || held_old.contains(h) {
                    want.0.push(i);
                    want.1.push(first);
                }
            }
            prop_assert_eq!((at, firsts), want);
        }
    }
}
