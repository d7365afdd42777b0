//! The per-IP limits shared by every worker: connections per client address and the
//! handshake rate, in a sharded table with a cap on the addresses it tracks.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::address::limit_key;
use super::{AccessConfig, Refusal};
use crate::server::TokenBucket;

/// Shards of the per-IP table: workers contend only when their clients hash alike.
const SHARDS: usize = 16;

#[derive(Debug)]
struct IpEntry {
    /// Open WebSocket connections holding an [`IpSlot`].
    conns: u32,
    /// Handshake tokens (unused without a handshake rate).
    bucket: TokenBucket,
}

/// Per-IP connection counts and handshake buckets, shared by every worker. Memory is
/// bounded: at most `max_tracked_ips` entries (about: workers check the count without a
/// common lock), and an entry goes away once it has no connections and its bucket is full
/// again ([`IpLimits::sweep`]).
#[derive(Debug)]
pub(crate) struct IpLimits {
    max_conns: Option<u32>,
    /// Burst and refill per second.
    handshake_rate: Option<u32>,
    max_tracked: usize,
    shards: Box<[Mutex<HashMap<IpAddr, IpEntry>>]>,
    tracked: AtomicUsize,
    /// Picks a shard; random per process so clients cannot aim at one shard.
    hasher: RandomState,
}

/// A connection's hold on its IP's count; dropping it (when the connection is removed, by
/// whatever path) gives the slot back, exactly once.
#[derive(Debug)]
pub(crate) struct IpSlot {
    limits: Arc<IpLimits>,
    key: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.limits.release(self.key);
    }
}

impl IpLimits {
    /// Empty limits as `config` sets them.
    pub fn new(config: &AccessConfig) -> Self {
        IpLimits {
            max_conns: config.max_conns_per_ip,
            handshake_rate: config.handshakes_per_ip.filter(|n| *n > 0),
            max_tracked: config.max_tracked_ips,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            tracked: AtomicUsize::new(0),
            hasher: RandomState::new(),
        }
    }

    /// Whether any per-IP limit is on (if not, nothing is tracked).
    pub fn enabled(&self) -> bool {
        self.max_conns.is_some() || self.handshake_rate.is_some()
    }

    /// IPs tracked now.
    #[cfg(test)]
    pub(super) fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    fn shard(&self, key: IpAddr) -> Option<&Mutex<HashMap<IpAddr, IpEntry>>> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards.get(index)
    }

    /// Admits one upgrade from `ip` (already the client address, see [`client_ip`]): takes
    /// a handshake token, then a connection slot. The slot (when connections are limited)
    /// must live as long as the connection.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Option<IpSlot>, Refusal> {
        if !self.enabled() {
            return Ok(None);
        }
        let key = limit_key(ip);
        let Some(shard) = self.shard(key) else { return Ok(None) };
        // A poisoned lock means another worker panicked, and the server is stopping.
        let Ok(mut table) = shard.lock() else { return Err(Refusal::TooManyClients) };
        let entry = match table.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                if self.tracked.load(Ordering::Relaxed) >= self.max_tracked {
                    return Err(Refusal::TooManyClients);
                }
                self.tracked.fetch_add(1, Ordering::Relaxed);
                let burst = f64::from(self.handshake_rate.unwrap_or(0));
                e.insert(IpEntry { conns: 0, bucket: TokenBucket::full(burst, now) })
            }
        };
        if let Some(rate) = self.handshake_rate {
            let rate = f64::from(rate);
            if let Err(wait) = entry.bucket.take(rate, rate, now) {
                let retry_after_secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                return Err(Refusal::HandshakeRate { retry_after_secs });
            }
        }
        let Some(max) = self.max_conns else { return Ok(None) };
        if entry.conns >= max {
            return Err(Refusal::TooManyConnections);
        }
        entry.conns += 1;
        Ok(Some(IpSlot { limits: self.clone(), key }))
    }

    fn release(&self, key: IpAddr) {
        let Some(shard) = self.shard(key) else { return };
        let Ok(mut table) = shard.lock() else { return };
        let Some(entry) = table.get_mut(&key) else { return };
        entry.conns = entry.conns.saturating_sub(1);
        // Without a bucket to refill, an entry without connections is done with now.
        if entry.conns == 0 && self.handshake_rate.is_none() {
            table.remove(&key);
            self.tracked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops entries without connections whose bucket has refilled by `now` (one worker
    /// calls this every tick).
    pub fn sweep(&self, now: Instant) {
        if !self.enabled() {
            return;
        }
        let rate = self.handshake_rate.map(f64::from);
        for shard in self.shards.iter() {
            let Ok(mut table) = shard.lock() else { continue };
            let before = table.len();
            table.retain(|_, e| {
                let refilling = rate.is_some_and(|rate| e.bucket.level(rate, rate, now) < rate);
                e.conns > 0 || refilling
            });
            self.tracked.fetch_sub(before - table.len(), Ordering::Relaxed);
        }
    }
}
