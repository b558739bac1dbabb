//! Wrapper stores: cross-cutting behaviour added to any [`ObjectStore`]
//! without the backends knowing (retries, an adaptive concurrency limit,
//! fault injection for tests).

mod fault;
mod limit;
mod retry;

pub use fault::{FaultConfig, FaultStore};
pub use limit::{AdaptiveLimit, LimitStore};
pub use retry::{RetryPolicy, RetryStore};

use crate::DynStore;
use std::sync::Arc;

/// The production stack for a backend: retries over an adaptive limit.
pub fn resilient(inner: DynStore, max_concurrency: usize, policy: RetryPolicy) -> DynStore {
    let limited: DynStore = Arc::new(LimitStore::new(inner, max_concurrency));
    Arc::new(RetryStore::new(limited, policy))
}
