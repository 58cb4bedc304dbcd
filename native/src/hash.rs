//! The broker's key hash: which Key_Shared hash range a key falls in, computed as Pulsar 4
//! computes it, so a client finds a key's node without asking anyone. Murmur3 x86 32-bit
//! (seed 0) of the key's UTF-8 bytes, the sign bit cleared, `% 65535 + 1`: in `[1, 65535]`.

/// Key_Shared's hash space is `[1, RANGE_SIZE - 1]`.
pub const RANGE_SIZE: u32 = 1 << 16;

/// MurmurHash3 x86 32-bit.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xCC9E_2D51;
    const C2: u32 = 0x1B87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let k = u32::from_le_bytes([c[0], c[1], c[2], c[3]])
            .wrapping_mul(C1)
            .rotate_left(15)
            .wrapping_mul(C2);
        h = (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xE654_6B64);
    }
    let tail = chunks.remainder();
    let mut k = 0u32;
    for (i, &b) in tail.iter().enumerate() {
        k ^= (b as u32) << (8 * i);
    }
    h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// The Key_Shared hash of a message key's text.
pub fn key_hash(text: &str) -> u32 {
    (murmur3_32(text.as_bytes(), 0) & 0x7FFF_FFFF) % (RANGE_SIZE - 1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_reference_values() {
        // published MurmurHash3_x86_32 vectors (seed 0 unless given)
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514E_28B7);
        assert_eq!(murmur3_32(b"hello", 0), 613_153_351);
        assert_eq!(murmur3_32(b"The quick brown fox jumps over the lazy dog", 0), 0x2E4F_F723);
    }

    #[test]
    fn key_hash_is_in_the_key_shared_space() {
        for i in 0..10_000 {
            let h = key_hash(&format!("m-{i}"));
            assert!((1..RANGE_SIZE).contains(&h));
        }
    }
}
