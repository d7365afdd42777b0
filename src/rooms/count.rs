//! A server-wide count with a cap, shared by every worker's room layer: rooms, and relay
//! rooms (`max_rooms`). One atomic operation per room created or dropped; never on the
//! publish path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A count every worker sees (clones share it).
#[derive(Debug, Clone, Default)]
pub struct SharedCount(Arc<AtomicUsize>);

impl SharedCount {
    /// Counts one more unless the count is at `max`; false when it is.
    pub fn take(&self, max: usize) -> bool {
        self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Counts `n` fewer.
    pub fn release(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// The count now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_across_clones() {
        let (a, b) = (SharedCount::default(), SharedCount::default());
        let a2 = a.clone();
        assert!(a.take(2) && a2.take(2));
        assert!(!a.take(2), "at the cap");
        assert!(b.take(2), "another count");
        a2.release(1);
        assert_eq!(a.get(), 1);
        assert!(a.take(2));
    }
}
