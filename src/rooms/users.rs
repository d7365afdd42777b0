//! Connections per user (a token's `sub`) across the workers of this process, for
//! `max_conns_per_user`: the limit is checked on the upgrade (HTTP 429) and on the `auth`
//! that names a connection's user (error 429), and kept exactly when a connection opens
//! (one that raced past the upgrade check on another worker is closed with 1008). One
//! mutex, taken when a user's connection opens, authenticates or closes, never per message.
//! With several nodes each node counts its own connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Live connections by user, shared by every worker's sessions.
#[derive(Debug, Default)]
pub struct UserConnections {
    /// At most this many per user; 0: no limit (nothing is counted).
    limit: usize,
    counts: Mutex<HashMap<Arc<str>, usize>>,
}

impl UserConnections {
    /// A counter enforcing `limit` connections per user (0: none).
    pub fn new(limit: usize) -> Self {
        UserConnections { limit, counts: Mutex::default() }
    }

    /// Whether `user` may open one more connection now.
    pub fn has_room(&self, user: &str) -> bool {
        self.limit == 0 || self.count(user) < self.limit
    }

    /// Counts one more connection of `user`, unless that would pass the limit (`false`).
    pub fn add(&self, user: &Arc<str>) -> bool {
        if self.limit == 0 {
            return true;
        }
        let Ok(mut counts) = self.counts.lock() else { return true };
        let count = counts.entry(user.clone()).or_default();
        if *count >= self.limit {
            return false;
        }
        *count += 1;
        true
    }

    /// A connection [`UserConnections::add`] counted is gone.
    pub fn remove(&self, user: &str) {
        if self.limit == 0 {
            return;
        }
        let Ok(mut counts) = self.counts.lock() else { return };
        if let Some(count) = counts.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                counts.remove(user); // memory follows the users connected now
            }
        }
    }

    /// Connections of `user` counted now.
    pub fn count(&self, user: &str) -> usize {
        self.counts.lock().map_or(0, |counts| counts.get(user).copied().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_at_most_the_limit_and_a_closed_connection_frees_its_place() {
        let users = UserConnections::new(2);
        let ann: Arc<str> = "ann".into();
        assert!(users.add(&ann) && users.add(&ann));
        assert!(!users.has_room("ann") && !users.add(&ann), "a third is refused");
        assert!(users.has_room("bob"), "others are not affected");
        users.remove("ann");
        assert!(users.has_room("ann") && users.add(&ann));
        users.remove("ann");
        users.remove("ann");
        assert_eq!(users.count("ann"), 0);
        assert!(users.counts.lock().unwrap().is_empty(), "no entry kept for a user with no connections");
        let off = UserConnections::new(0);
        assert!((0..100).all(|_| off.add(&ann)) && off.has_room("ann"));
    }
}
