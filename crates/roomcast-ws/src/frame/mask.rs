//! Payload masking (RFC 6455 section 5.3).
//!
//! "Octet i of the transformed data ("transformed-octet-i") is the XOR of octet i of the
//! original data ("original-octet-i") with octet at index i modulo 4 of the masking key
//! ("masking-key-octet-j")". Masking and unmasking are the same operation.
//!
//! [`apply_mask`] works on 32-byte blocks with a pre-rotated 32-byte key, a shape the
//! compiler turns into SIMD XORs without `unsafe`; `benches/mask.rs` compares it with the
//! byte-at-a-time loop ([`apply_mask_bytewise`]) and a `u64` word loop
//! ([`apply_mask_words`]).

const BLOCK: usize = 32;

/// XORs `buf` with `key`, where `buf[0]` is byte `offset` of the payload.
///
/// `offset` lets a payload be unmasked piece by piece as it arrives.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    if buf.len() < 16 {
        return xor_tail(buf, key);
    }
    let mut wide = [0u8; BLOCK];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = key[i & 3];
    }
    let (blocks, tail) = buf.as_chunks_mut::<BLOCK>();
    for block in blocks {
        for (b, k) in block.iter_mut().zip(wide.iter()) {
            *b ^= k;
        }
    }
    // BLOCK is a multiple of 4, so the tail starts at key index 0 again.
    xor_tail(tail, key);
}

/// The reference implementation: one byte at a time. Kept public for the benchmark and
/// the property test that checks [`apply_mask`] against it.
#[doc(hidden)]
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + offset) & 3];
    }
}

/// A word-at-a-time variant (8 bytes per step), kept for the benchmark.
#[doc(hidden)]
pub fn apply_mask_words(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    let k = u32::from_ne_bytes(key) as u64;
    let k = k | (k << 32);
    let (words, tail) = buf.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ k).to_ne_bytes();
    }
    xor_tail(tail, key);
}

#[inline]
fn rotate(mut key: [u8; 4], offset: usize) -> [u8; 4] {
    key.rotate_left(offset & 3);
    key
}

#[inline]
fn xor_tail(buf: &mut [u8], key: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 section 5.7: "Hello" masked with 37 fa 21 3d is 7f 9f 4d 51 58.
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&data, b"Hello");
    }

    #[test]
    fn all_variants_agree_at_every_length_and_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..200 {
            for offset in 0..8 {
                let orig: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut a = orig.clone();
                let mut b = orig.clone();
                let mut c = orig.clone();
                apply_mask(&mut a, key, offset);
                apply_mask_bytewise(&mut b, key, offset);
                apply_mask_words(&mut c, key, offset);
                assert_eq!(a, b, "len {len} offset {offset}");
                assert_eq!(c, b, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn piecewise_equals_whole() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let orig: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut whole = orig.clone();
        apply_mask(&mut whole, key, 0);
        for split in [1, 3, 17, 64, 333, 999] {
            let mut pieces = orig.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }
}
