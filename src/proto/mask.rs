//! Payload (un)masking, RFC 6455 §5.3.
//!
//! Masking XORs each payload byte with `key[i % 4]`, where `i` counts from the start of
//! the frame payload. Payloads arrive in chunks, so [`apply_mask`] takes the offset of the
//! chunk's first byte within the payload and keeps the key phase across calls.
//! The loop works 8 bytes at a time on a rotated 64-bit key; the compiler widens it further
//! (SSE2/AVX2), which the `codec` bench shows runs at memory speed.

/// XORs `buf` in place with the masking `key`, as if `buf` started at byte `offset` of the
/// payload. Applying it twice restores the input.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate the key so that rotated[0] applies to buf[0].
    let phase = offset % 4;
    let rotated = [key[phase], key[(phase + 1) % 4], key[(phase + 2) % 4], key[(phase + 3) % 4]];
    let word = u64::from_ne_bytes([
        rotated[0], rotated[1], rotated[2], rotated[3], rotated[0], rotated[1], rotated[2], rotated[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(bytes) ^ word;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    // The tail starts at a multiple of 8 from buf[0], so the phase is unchanged.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(rotated.iter().cycle()) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn rfc6455_5_7_masked_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut payload = *b"Hello";
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_bytewise_reference_at_any_offset_and_split(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            key in any::<[u8; 4]>(),
            split in 0usize..200,
        ) {
            let mut expected = data.clone();
            mask_bytewise(&mut expected, key, 0);
            let mut actual = data.clone();
            let split = split.min(actual.len());
            let (a, b) = actual.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            prop_assert_eq!(actual, expected);
        }
    }
}
