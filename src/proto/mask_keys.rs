//! Where a client connection's masking keys come from, RFC 6455 §5.3 and §10.3.
//!
//! Masks exist so that a page's script cannot choose the bytes an intermediary sees: each
//! frame's key must be unpredictable, even to someone who has seen every earlier key. So
//! they come from a cryptographic generator (ChaCha12, `rand`'s `StdRng`), seeded from the
//! operating system once per connection and then cheap per frame (it works a block of keys
//! at a time). [`MaskKeys::from_os`] is the only public way to make one: no caller can pick a
//! seed. Seeding is the one place the codec asks the OS for anything; the rest stays sans-IO.
//! Tests and fuzz targets use `MaskKeys::from_seed`, which exists only for them (behind the
//! crate's `fuzzing` feature, never in a release build).

use std::fmt;
use std::io;

use rand::rngs::{StdRng, SysRng};
use rand::{Rng, SeedableRng};

/// A client connection's source of masking keys.
pub struct MaskKeys {
    // Boxed: the generator's state and block buffer are ~300 bytes, held by clients only.
    rng: Box<StdRng>,
}

impl fmt::Debug for MaskKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskKeys(..)") // never print generator state
    }
}

impl MaskKeys {
    /// A generator seeded from the operating system's entropy. Fails only when the OS has
    /// none to give (early boot, a broken sandbox).
    pub fn from_os() -> io::Result<MaskKeys> {
        StdRng::try_from_rng(&mut SysRng)
            .map(|rng| MaskKeys { rng: Box::new(rng) })
            .map_err(|e| io::Error::other(format!("no entropy from the OS for masking keys: {e}")))
    }

    /// A generator with a fixed seed, for reproducible tests and fuzz runs only.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn from_seed(seed: u64) -> MaskKeys {
        MaskKeys { rng: Box::new(StdRng::seed_from_u64(seed)) }
    }

    /// The next frame's key.
    pub fn next_key(&mut self) -> [u8; 4] {
        self.rng.next_u32().to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_from_the_os_do_not_repeat_within_or_across_connections() {
        let mut a = MaskKeys::from_os().unwrap();
        let mut b = MaskKeys::from_os().unwrap();
        let (ka, kb): (Vec<u32>, Vec<u32>) =
            (0..50_000).map(|_| (u32::from_ne_bytes(a.next_key()), u32::from_ne_bytes(b.next_key()))).unzip();
        assert_ne!(ka[..16], kb[..16], "two connections are seeded apart");
        // 100,000 draws of 32 bits: the chance of any repeat is about 69 % for a perfect
        // generator, so count them: a handful is chance, a seeded copy or a short cycle is not.
        let distinct: HashSet<u32> = ka.iter().chain(&kb).copied().collect();
        assert!(distinct.len() > 100_000 - 10, "{} distinct keys of 100,000", distinct.len());
    }

    /// The rank over GF(2) of `rows` (each a bit vector of up to 128 bits).
    fn gf2_rank(mut rows: Vec<u128>) -> u32 {
        let mut rank = 0;
        for bit in (0..128).rev() {
            let mask = 1u128 << bit;
            let Some(pivot) = rows.iter().position(|r| r & mask != 0) else { continue };
            let p = rows.swap_remove(pivot);
            for r in &mut rows {
                if *r & mask != 0 {
                    *r ^= p;
                }
            }
            rank += 1;
        }
        rank
    }

    fn xorshift64(mut x: u64) -> u64 {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x
    }

    /// xorshift64*'s multiplier (the generator the client used before MaskKeys).
    const M: u64 = 0x2545_F491_4F6C_DD1D;

    /// How many key pairs, read as one 64-bit xorshift64* output, follow from the pair
    /// before: undo the multiply (M is odd, so invertible mod 2^64), step, redo it.
    fn xorshift_star_steps(keys: &[u32]) -> usize {
        let m_inv = (0..6).fold(M, |y, _| y.wrapping_mul(2u64.wrapping_sub(M.wrapping_mul(y)))); // Newton
        let outputs: Vec<u64> = keys.chunks(2).map(|c| (u64::from(c[0]) << 32) | u64::from(c[1])).collect();
        outputs.windows(2).filter(|w| xorshift64(w[0].wrapping_mul(m_inv)).wrapping_mul(M) == w[1]).count()
    }

    #[test]
    fn the_relations_tested_for_are_found_in_weak_generators() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let star: Vec<u32> = (0..100)
            .flat_map(|_| {
                x = xorshift64(x);
                let out = x.wrapping_mul(M);
                [(out >> 32) as u32, out as u32]
            })
            .collect();
        assert_eq!(xorshift_star_steps(&star), 99);

        // Keys from plain xorshift64 (linear over GF(2), 64 bits of state): three
        // consecutive keys (96 bits) lie in a space of at most 64 dimensions.
        let keys: Vec<u32> = (0..300)
            .map(|_| {
                x = xorshift64(x);
                (x >> 32) as u32
            })
            .collect();
        let rows = keys.windows(3).map(|w| (u128::from(w[0]) << 64) | (u128::from(w[1]) << 32) | u128::from(w[2]));
        assert!(gf2_rank(rows.collect()) <= 64);
    }

    /// Issue 17: keys must not be predictable from the keys seen before, on the same
    /// connection or another. A generator with a small linear state (xorshift, an LFSR)
    /// gives itself away by the GF(2) rank of consecutive keys; xorshift64* with its output
    /// used whole (two keys) by the step from one output to the next.
    #[test]
    fn keys_show_no_linear_or_xorshift_relation_within_or_across_connections() {
        for _ in 0..16 {
            let (mut a, mut b) = (MaskKeys::from_os().unwrap(), MaskKeys::from_os().unwrap());
            let a_keys: Vec<u32> = (0..400).map(|_| u32::from_ne_bytes(a.next_key())).collect();
            let b_keys: Vec<u32> = (0..400).map(|_| u32::from_ne_bytes(b.next_key())).collect();
            for keys in [&a_keys, &b_keys] {
                let rows =
                    keys.windows(3).map(|w| (u128::from(w[0]) << 64) | (u128::from(w[1]) << 32) | u128::from(w[2]));
                assert_eq!(gf2_rank(rows.collect()), 96, "consecutive keys are linearly related");
                assert_eq!(xorshift_star_steps(keys), 0, "a key pair follows from the one before by xorshift64*");
            }
            // Across connections: one's keys interleaved with the other's are no more related.
            let rows = a_keys.iter().zip(&b_keys).zip(a_keys.iter().skip(1));
            let rows = rows.map(|((&a0, &b0), &a1)| (u128::from(a0) << 64) | (u128::from(b0) << 32) | u128::from(a1));
            assert_eq!(gf2_rank(rows.collect()), 96, "keys of two connections are linearly related");
        }
    }

    #[test]
    fn a_fixed_seed_repeats_for_tests() {
        let (mut a, mut b) = (MaskKeys::from_seed(7), MaskKeys::from_seed(7));
        assert_eq!(a.next_key(), b.next_key());
    }
}
