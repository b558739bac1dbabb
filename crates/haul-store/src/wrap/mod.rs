//! Wrapper stores: cross-cutting behaviour added to any [`ObjectStore`]
//! without the backends knowing (retries, an adaptive concurrency limit,
//! fault injection for tests).

mod fault;
mod limit;
mod retry;

pub use fault::{FaultConfig, FaultStore};
pub use limit::{AdaptiveLimit, LimitStore};
pub use retry::{count_resent, resent_requests, RetryPolicy, RetryStore};

use crate::DynStore;
use std::sync::Arc;

/// The production stack for a backend: retries over an adaptive limit.
pub fn resilient(inner: DynStore, max_concurrency: usize, policy: RetryPolicy) -> DynStore {
    let limited: DynStore = Arc::new(LimitStore::new(inner, max_concurrency));
    Arc::new(RetryStore::new(limited, policy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::{Key, ObjectStore, PutOptions};
    use futures::TryStreamExt;
    use std::time::Duration;

    /// A request garbled on the way is refused as `SignatureDoesNotMatch`:
    /// sent again once the server has accepted these credentials; before,
    /// once only (a garbled first request), then the credentials are
    /// wrong: fail at once.
    #[tokio::test]
    async fn a_garbled_signature_is_resent_once_the_credentials_were_accepted() -> Result<(), Box<dyn std::error::Error>>
    {
        let mem = MemoryStore::new("b");
        let k = Key::object("k")?;
        mem.put(&k, bytes::Bytes::from_static(b"x"), &PutOptions::default())
            .await?;
        let policy = RetryPolicy {
            max_attempts: 30,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let always = FaultConfig {
            garble_rate: 1.0,
            ..FaultConfig::none(3)
        };
        let refusing = Arc::new(FaultStore::new(Arc::new(mem.clone()), always));
        let store = RetryStore::new(refusing.clone(), policy.clone());
        let e = store.head(&k).await.err().ok_or("a garbled first request succeeded")?;
        assert_eq!(e.code.as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(refusing.injected(), 2, "a first refusal is sent again once, not more");
        let e = store.head(&k).await.err().ok_or("a garbled request succeeded")?;
        assert_eq!(e.code.as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(refusing.injected(), 3, "and only once per store");
        let faults = Arc::new(FaultStore::new(
            Arc::new(mem),
            FaultConfig {
                garble_rate: 0.5,
                ..FaultConfig::none(4)
            },
        ));
        let store = RetryStore::new(faults.clone(), policy);
        // Until one request is accepted, a refusal is final.
        while store.head(&k).await.is_err() {}
        for _ in 0..50 {
            store.head(&k).await?;
        }
        assert!(faults.injected() > 20, "only {} garbled", faults.injected());
        Ok(())
    }

    /// A read whose body breaks resumes with a new request; that request
    /// garbled on the way (refused as badly signed) is sent again, not
    /// taken for wrong credentials: the read's first request was accepted.
    #[tokio::test]
    async fn a_garbled_resume_of_a_broken_body_is_sent_again() -> Result<(), Box<dyn std::error::Error>> {
        let mem = MemoryStore::new("b");
        let body = bytes::Bytes::from(vec![5u8; 100_000]);
        let k = Key::object("k")?;
        mem.put(&k, body.clone(), &PutOptions::default()).await?;
        let faults = FaultConfig {
            body_rate: 0.5,
            garble_rate: 0.5,
            ..FaultConfig::none(13)
        };
        let store = RetryStore::new(
            Arc::new(FaultStore::new(Arc::new(mem), faults)),
            RetryPolicy {
                max_attempts: 30,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
            },
        );
        while store.head(&k).await.is_err() {}
        for _ in 0..20 {
            let g = store.get(&k, None).await?;
            let chunks: Vec<bytes::Bytes> = g.body.try_collect().await?;
            assert!(chunks.concat() == body.as_ref(), "resumed reads return the same bytes");
        }
        Ok(())
    }

    /// A resumed read answered with another ETag while the object is
    /// unchanged (its header damaged on the way) is sent again, not failed
    /// as a changed object.
    #[tokio::test]
    async fn a_resume_answered_with_a_damaged_etag_is_sent_again() -> Result<(), Box<dyn std::error::Error>> {
        let mem = MemoryStore::new("b");
        let body = bytes::Bytes::from(vec![6u8; 100_000]);
        let k = Key::object("k")?;
        let etag = mem.put(&k, body.clone(), &PutOptions::default()).await?.etag;
        let faults = FaultConfig {
            body_rate: 0.5,
            etag_damage_rate: 0.3,
            ..FaultConfig::none(17)
        };
        let store = RetryStore::new(
            Arc::new(FaultStore::new(Arc::new(mem), faults)),
            RetryPolicy {
                max_attempts: 30,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
            },
        );
        let mut read = 0;
        while read < 20 {
            let g = store.get(&k, None).await?;
            // A first answer damaged is the caller's to catch.
            if g.meta.etag != etag {
                continue;
            }
            let chunks: Vec<bytes::Bytes> = g.body.try_collect().await?;
            assert!(chunks.concat() == body.as_ref(), "resumed reads return the same bytes");
            read += 1;
        }
        Ok(())
    }

    /// A body that breaks must not keep its request slot while the retry
    /// asks for a new one (that deadlocked with a limit of 1).
    #[tokio::test]
    async fn a_broken_body_resumes_under_a_limit_of_one() -> Result<(), Box<dyn std::error::Error>> {
        let mem = MemoryStore::new("b");
        let body = bytes::Bytes::from(vec![7u8; 100_000]);
        let k = Key::object("k")?;
        mem.put(&k, body.clone(), &PutOptions::default()).await?;
        let faults = FaultConfig {
            body_rate: 0.5,
            ..FaultConfig::none(11)
        };
        let store = resilient(
            Arc::new(FaultStore::new(Arc::new(mem), faults)),
            1,
            RetryPolicy {
                max_attempts: 30,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
        );
        for _ in 0..10 {
            let read = async {
                let g = store.get(&k, None).await?;
                let chunks: Vec<bytes::Bytes> = g.body.try_collect().await?;
                Ok::<_, crate::StoreError>(chunks.concat())
            };
            let got = tokio::time::timeout(Duration::from_secs(10), read).await??;
            assert!(got == body.as_ref(), "resumed reads return the same bytes");
        }
        Ok(())
    }
}
