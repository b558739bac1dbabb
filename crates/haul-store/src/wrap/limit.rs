//! An adaptive concurrency limit per endpoint (AIMD): every request holds a
//! permit; a throttling answer (503 SlowDown) halves the limit, successes
//! raise it again by one per "window" of successful requests.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ErrorKind, Result};
use crate::key::Key;
use crate::types::*;
use crate::{DynStore, ObjectStore};

/// The AIMD limiter shared by all requests to one endpoint.
#[derive(Debug)]
pub struct AdaptiveLimit {
    sem: Arc<Semaphore>,
    max: usize,
    /// The current limit (≤ max); `max - limit` permits are held back.
    limit: AtomicUsize,
    /// Permits to take out of circulation as they are returned.
    to_forget: AtomicUsize,
    successes: AtomicUsize,
}

impl AdaptiveLimit {
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(AdaptiveLimit {
            sem: Arc::new(Semaphore::new(max)),
            max,
            limit: AtomicUsize::new(max),
            to_forget: AtomicUsize::new(0),
            successes: AtomicUsize::new(0),
        })
    }

    pub fn current(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    async fn acquire(self: &Arc<Self>) -> Permit {
        // The semaphore is never closed, so acquire cannot fail; fall back to
        // an unlimited permit if it somehow did.
        let permit = self.sem.clone().acquire_owned().await.ok();
        Permit {
            permit,
            limit: self.clone(),
        }
    }

    fn on_throttled(&self) {
        let cur = self.limit.load(Ordering::Relaxed);
        let new = (cur / 2).max(1);
        if new < cur
            && self
                .limit
                .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.to_forget.fetch_add(cur - new, Ordering::AcqRel);
            self.successes.store(0, Ordering::Relaxed);
            tracing::info!(limit = new, "server is throttling: lowering concurrency");
        }
    }

    fn on_success(&self) {
        let cur = self.limit.load(Ordering::Relaxed);
        if cur >= self.max {
            return;
        }
        // One more permit after `cur` successes in a row (additive increase).
        if self.successes.fetch_add(1, Ordering::AcqRel) + 1 >= cur {
            self.successes.store(0, Ordering::Relaxed);
            if self
                .limit
                .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // Cancel a pending forget, or release a held-back permit.
                let pending = self.to_forget.load(Ordering::Acquire);
                if pending > 0
                    && self
                        .to_forget
                        .compare_exchange(pending, pending - 1, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    return;
                }
                self.sem.add_permits(1);
            }
        }
    }
}

/// A request slot; returned (or retired, after throttling) on drop.
#[derive(Debug)]
pub struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<AdaptiveLimit>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(p) = self.permit.take() else { return };
        let l = &self.limit;
        loop {
            let pending = l.to_forget.load(Ordering::Acquire);
            if pending == 0 {
                drop(p);
                return;
            }
            if l.to_forget
                .compare_exchange(pending, pending - 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                p.forget();
                return;
            }
        }
    }
}

/// Bounds concurrent requests to the inner store with an [`AdaptiveLimit`].
#[derive(Debug)]
pub struct LimitStore {
    inner: DynStore,
    limit: Arc<AdaptiveLimit>,
}

impl LimitStore {
    pub fn new(inner: DynStore, max: usize) -> Self {
        LimitStore {
            inner,
            limit: AdaptiveLimit::new(max),
        }
    }

    pub fn limit(&self) -> &Arc<AdaptiveLimit> {
        &self.limit
    }

    fn observe<T>(&self, r: &Result<T>) {
        match r {
            Ok(_) => self.limit.on_success(),
            Err(e) if e.kind == ErrorKind::Throttled => self.limit.on_throttled(),
            Err(_) => {}
        }
    }
}

macro_rules! limited {
    ($self:ident, $call:expr) => {{
        let _permit = $self.limit.acquire().await;
        let r = $call.await;
        $self.observe(&r);
        r
    }};
}

#[async_trait]
impl ObjectStore for LimitStore {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn url(&self) -> String {
        self.inner.url()
    }
    fn list(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
        // Listing is sequential per request; it is not limited here.
        self.inner.list(req)
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        limited!(self, self.inner.head(key))
    }
    async fn head_part(&self, key: &Key, n: u32) -> Result<(u64, u32)> {
        limited!(self, self.inner.head_part(key, n))
    }
    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
        let permit = self.limit.acquire().await;
        let r = self.inner.get(key, range).await;
        self.observe(&r);
        r.map(|g| hold_until_read(g, permit))
    }
    async fn get_with(&self, key: &Key, opts: crate::get_with::GetOpts) -> Result<GetResult> {
        let permit = self.limit.acquire().await;
        let r = self.inner.get_with(key, opts).await;
        self.observe(&r);
        r.map(|g| hold_until_read(g, permit))
    }
    async fn get_tags(&self, key: &Key) -> Result<Vec<(String, String)>> {
        limited!(self, self.inner.get_tags(key))
    }
    async fn tagging_supported(&self) -> Result<bool> {
        // Asked for every copied object and answered from what the
        // connection learnt; at most one probe request per connection:
        // not worth a request slot.
        self.inner.tagging_supported().await
    }
    async fn put(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult> {
        limited!(self, self.inner.put(key, payload, opts))
    }
    async fn create_multipart(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        limited!(self, self.inner.create_multipart(key, opts))
    }
    async fn upload_part(
        &self,
        key: &Key,
        u: &MultipartId,
        n: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        limited!(self, self.inner.upload_part(key, u, n, payload, sums))
    }
    async fn upload_part_stream(
        &self,
        key: &Key,
        u: &MultipartId,
        n: u32,
        size: u64,
        body: ByteStream,
    ) -> Result<CompletedPart> {
        limited!(self, self.inner.upload_part_stream(key, u, n, size, body))
    }

    async fn upload_part_copy(
        &self,
        key: &Key,
        u: &MultipartId,
        n: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        limited!(self, self.inner.upload_part_copy(key, u, n, src, range))
    }
    async fn complete_multipart(&self, key: &Key, u: &MultipartId, parts: &[CompletedPart]) -> Result<PutResult> {
        limited!(self, self.inner.complete_multipart(key, u, parts))
    }
    async fn abort_multipart(&self, key: &Key, u: &MultipartId) -> Result<()> {
        limited!(self, self.inner.abort_multipart(key, u))
    }
    async fn list_multipart_uploads(&self, prefix: &Key) -> Result<Vec<(Key, MultipartId)>> {
        limited!(self, self.inner.list_multipart_uploads(prefix))
    }
    async fn copy(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult> {
        limited!(self, self.inner.copy(src, dst, opts))
    }
    async fn restore(&self, key: &Key, days: u32, tier: &str) -> Result<()> {
        limited!(self, self.inner.restore(key, days, tier))
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<crate::StoreError>> {
        limited!(self, self.inner.delete_many(keys))
    }
}

/// The body of `g`, holding `permit` until it has been read.
fn hold_until_read<P: Send + 'static>(mut g: GetResult, permit: P) -> GetResult {
    let body = std::mem::replace(&mut g.body, futures::stream::empty().boxed());
    g.body = body
        .chain(
            futures::stream::once(async move {
                drop(permit);
                None
            })
            .filter_map(|x: Option<Result<Bytes>>| async move { x }),
        )
        .boxed();
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn throttling_halves_and_recovers() {
        let l = AdaptiveLimit::new(8);
        l.on_throttled();
        assert_eq!(l.current(), 4);
        l.on_throttled();
        assert_eq!(l.current(), 2);
        // Recovery: one step per `limit` successes.
        for _ in 0..2 {
            l.on_success();
        }
        assert_eq!(l.current(), 3);
        for _ in 0..100 {
            l.on_success();
        }
        assert_eq!(l.current(), 8);
        // Permits in circulation follow the limit once requests return.
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(l.acquire().await);
        }
        l.on_throttled();
        drop(held);
        assert_eq!(l.sem.available_permits(), 4);
    }
}
