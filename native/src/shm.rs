//! A shared-memory store's key index: the owner's writes (readers in other processes probe
//! it themselves: `heimdall/window/_shared.py`, `SharedIndex`).
//!
//! Layout: `keys` (max_keys, KEY_BYTES) bytes, a slot's key encoded as one length byte then
//! the bytes (`"s"` + UTF-8, or `"i"` + int64 little-endian); `table` int64 (a power of two
//! entries), slot + 1 per entry, 0 empty, linear probing from `(crc32(key bytes) *
//! 0x9E3779B1) & mask`; `version` int64, odd while a removal shifts entries back (a reader
//! that saw it change probes again). The order of the writes is the one readers rely on: a
//! put writes the key's bytes, then its length, then the table entry; a removal raises the
//! version, clears and shifts, raises it again, then clears the length.

use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};

/// Bytes a key's row takes: a length byte and at most 63 bytes of encoded key.
pub const KEY_BYTES: usize = 64;

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut b = 0;
        while b < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            b += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// zlib's crc32 (the reflected IEEE polynomial), so that both sides find the same home.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

/// A key's bytes in the index: `"s"` + UTF-8; None if too long.
pub fn encode_str(key: &str) -> Option<Vec<u8>> {
    (key.len() + 1 < KEY_BYTES).then(|| [b"s".as_slice(), key.as_bytes()].concat())
}

/// A key's bytes in the index: `"i"` + int64 little-endian.
pub fn encode_int(key: i64) -> Vec<u8> {
    [b"i".as_slice(), &key.to_le_bytes()].concat()
}

/// The table has no empty entry left.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// The index's memory, as raw parts.
pub struct Index {
    pub table: *mut i64,
    /// entries - 1 (a power of two minus one)
    pub mask: u64,
    pub keys: *mut u8,
    pub max_keys: usize,
    pub version: *mut i64,
}

impl Index {
    #[inline]
    unsafe fn entry(&self, i: u64) -> &AtomicI64 {
        AtomicI64::from_ptr(self.table.add(i as usize))
    }

    #[inline]
    unsafe fn row(&self, slot: usize) -> *mut u8 {
        self.keys.add(slot * KEY_BYTES)
    }

    fn home(&self, kb: &[u8]) -> u64 {
        (crc32(kb) as u64).wrapping_mul(0x9E37_79B1) & self.mask
    }

    /// The encoded key held in a slot's row.
    unsafe fn key_at(&self, slot: usize) -> &[u8] {
        let row = self.row(slot);
        std::slice::from_raw_parts(row.add(1), *row as usize)
    }

    /// A key into the index at `slot` (a slot that holds no key): its bytes, then its
    /// length, then the table entry.
    ///
    /// # Safety
    /// The index's pointers are valid for its sizes; `slot < max_keys`; `kb.len() < KEY_BYTES`.
    pub unsafe fn put(&self, slot: usize, kb: &[u8]) -> Result<(), Full> {
        let row = self.row(slot);
        std::ptr::copy_nonoverlapping(kb.as_ptr(), row.add(1), kb.len());
        AtomicU8::from_ptr(row).store(kb.len() as u8, Ordering::Release);
        let mut at = self.home(kb);
        let mut probes = 0u64;
        while self.entry(at).load(Ordering::Relaxed) != 0 {
            probes += 1;
            if probes > self.mask {
                return Err(Full);
            }
            at = (at + 1) & self.mask;
        }
        self.entry(at).store(slot as i64 + 1, Ordering::Release);
        Ok(())
    }

    /// The key `slot` holds out of the index: its entry cleared and the entries after it
    /// shifted back (the version odd meanwhile), then its length. A slot whose key the table
    /// does not hold is left as it is.
    ///
    /// # Safety
    /// As `put`.
    pub unsafe fn remove(&self, slot: usize) {
        let want = slot as i64 + 1;
        let mut i = self.home(self.key_at(slot));
        let mut probes = 0u64;
        loop {
            let e = self.entry(i).load(Ordering::Relaxed);
            if e == 0 || e == want || probes > self.mask {
                break;
            }
            probes += 1;
            i = (i + 1) & self.mask;
        }
        if self.entry(i).load(Ordering::Relaxed) != want {
            return;
        }
        let version = AtomicI64::from_ptr(self.version);
        version.store(version.load(Ordering::Relaxed) + 1, Ordering::Release); // odd
        self.entry(i).store(0, Ordering::Release);
        let mut j = (i + 1) & self.mask;
        loop {
            let e = self.entry(j).load(Ordering::Relaxed);
            if e == 0 {
                break;
            }
            let home = self.home(self.key_at((e - 1) as usize));
            // the entry at j may move to the hole unless its home lies cyclically in (i, j]
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(i) & self.mask) {
                self.entry(i).store(e, Ordering::Release);
                self.entry(j).store(0, Ordering::Release);
                i = j;
            }
            j = (j + 1) & self.mask;
        }
        version.store(version.load(Ordering::Relaxed) + 1, Ordering::Release);
        AtomicU8::from_ptr(self.row(slot)).store(0, Ordering::Release);
    }

    /// The slot holding an encoded key, as a reader finds it (readers are Python's,
    /// `SharedIndex.lookup_encoded`: this one is the tests' model of them).
    ///
    /// # Safety
    /// As `put`.
    #[cfg(test)]
    unsafe fn find(&self, kb: &[u8]) -> Option<usize> {
        let mut at = self.home(kb);
        for _ in 0..=self.mask {
            let e = self.entry(at).load(Ordering::Acquire);
            if e == 0 {
                return None;
            }
            if self.key_at((e - 1) as usize) == kb {
                return Some((e - 1) as usize);
            }
            at = (at + 1) & self.mask;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(encode_int(1), b"i\x01\0\0\0\0\0\0\0".to_vec());
        assert_eq!(encode_str("m-1"), Some(b"sm-1".to_vec()));
        assert_eq!(encode_str(&"x".repeat(63)), None);
    }

    proptest! {
        /// Puts and removes against a HashMap: every key held is found at its slot, every
        /// key removed is not, through collisions and the shifts back of removals.
        #[test]
        fn index_is_a_map(ops in prop::collection::vec((0usize..12, 0i64..40, any::<bool>()),
                                                       1..80)) {
            let max_keys = 12;
            let mut table = vec![0i64; 16]; // a small table: probes collide and wrap
            let mut keys = vec![0u8; max_keys * KEY_BYTES];
            let mut version = 0i64;
            let ix = Index { table: table.as_mut_ptr(), mask: 15, keys: keys.as_mut_ptr(),
                             max_keys, version: &mut version };
            let mut model: HashMap<usize, i64> = HashMap::new(); // slot -> key
            for (slot, key, put) in ops {
                let held_by = model.iter().find(|(_, &k)| k == key).map(|(&s, _)| s);
                if put && !model.contains_key(&slot) && held_by.is_none() {
                    unsafe { ix.put(slot, &encode_int(key)) }.unwrap();
                    model.insert(slot, key);
                } else if !put && model.contains_key(&slot) {
                    unsafe { ix.remove(slot) };
                    model.remove(&slot);
                }
                for k in 0i64..40 {
                    let want = model.iter().find(|(_, &v)| v == k).map(|(&s, _)| s);
                    prop_assert_eq!(unsafe { ix.find(&encode_int(k)) }, want);
                }
            }
            prop_assert_eq!(version % 2, 0);
        }
    }
}
