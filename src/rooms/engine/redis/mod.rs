//! The Redis engine (issue 14, in progress): rooms, presence and history in Redis, shared
//! by every node started with the same Redis. Not wired to `--redis` yet: `store.rs`
//! holds what is kept in Redis and the scripts that change it.

pub mod store;

#[cfg(test)]
mod tests;
