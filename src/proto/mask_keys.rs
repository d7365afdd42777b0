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

    #[test]
    fn a_fixed_seed_repeats_for_tests() {
        let (mut a, mut b) = (MaskKeys::from_seed(7), MaskKeys::from_seed(7));
        assert_eq!(a.next_key(), b.next_key());
    }
}
