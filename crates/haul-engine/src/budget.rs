//! A byte budget: buffers are acquired from it before data is read, so the
//! bytes held in memory by all transfers together stay under a fixed cap.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const UNIT: u64 = 1024;

/// Bytes in flight across a whole job.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    sem: Arc<Semaphore>,
    units: u32,
}

/// Held while a buffer of that many bytes is alive.
#[derive(Debug)]
pub struct BudgetPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl ByteBudget {
    pub fn new(bytes: u64) -> Self {
        let units = (bytes / UNIT).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        ByteBudget {
            sem: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// Waits until `bytes` fit. A request larger than the whole budget waits
    /// for the whole budget, so it runs alone rather than never.
    pub async fn acquire(&self, bytes: u64) -> BudgetPermit {
        let want = bytes.div_ceil(UNIT).clamp(1, u64::from(self.units)) as u32;
        BudgetPermit {
            _permit: self.sem.clone().acquire_many_owned(want).await.ok(),
        }
    }

    pub fn available_bytes(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounds_and_releases() {
        let b = ByteBudget::new(10 * 1024);
        let p1 = b.acquire(6 * 1024).await;
        assert_eq!(b.available_bytes(), 4 * 1024);
        // Does not fit until p1 is released.
        let fut = b.acquire(6 * 1024);
        tokio::pin!(fut);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), &mut fut)
            .await
            .is_err());
        drop(p1);
        let _p2 = fut.await;
        // Larger than the budget: takes all of it.
        drop(_p2);
        let big = b.acquire(1 << 30).await;
        assert_eq!(b.available_bytes(), 0);
        drop(big);
        assert_eq!(b.available_bytes(), 10 * 1024);
    }
}
