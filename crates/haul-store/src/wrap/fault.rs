//! A fault-injecting store for tests: fails a fraction of requests with
//! 503 SlowDown, 500 InternalError or a connection reset — before the request
//! reaches the inner store, or after it (the answer is lost) — and breaks
//! read bodies mid-stream. Seeded, so a failing run can be replayed.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;
use crate::{DynStore, ObjectStore};

/// What to inject.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    pub seed: u64,
    /// Fraction of requests that fail before reaching the store.
    pub before_rate: f64,
    /// Fraction of writes that reach the store but whose answer is lost.
    pub after_rate: f64,
    /// Fraction of read bodies cut off halfway.
    pub body_rate: f64,
    /// Fail listings too.
    pub list_rate: f64,
    /// Fraction of read bodies with one byte flipped (silent corruption:
    /// only verification can catch it).
    pub corrupt_rate: f64,
    /// A corrupted read body has a random byte (anywhere in it) changed by
    /// a random mask, so two corrupted reads of the same range differ (as
    /// on a noisy network); otherwise its first byte is flipped, the same
    /// damage every time (as a bad disk or a buggy server would do).
    pub corrupt_spread: bool,
    /// Fraction of written payloads (puts and parts) with one byte flipped
    /// on the way to the store (the checksums sent with them are kept: a
    /// store that checks them refuses the write).
    pub corrupt_write_rate: f64,
    /// The store neither checks nor confirms the CRC64NVME sent with a put
    /// or a part (a server that ignores `x-amz-checksum-crc64nvme`).
    pub ignore_crc: bool,
    /// Added to every request.
    pub latency: std::time::Duration,
    /// Fraction of requests refused with `SignatureDoesNotMatch`, as a
    /// server answers a request garbled on the way (a flipped byte in a
    /// signed header or the path). Rolled only when non-zero.
    pub garble_rate: f64,
    /// Fraction of ranged reads answered with one byte less than asked,
    /// consistently: the range returned (Content-Length) says so too, as a
    /// truncating server or proxy would.
    pub short_range_rate: f64,
    /// Fraction of read answers whose ETag is damaged (one character
    /// changed, as a byte flipped on the way in the header would); the
    /// object itself is unchanged. Rolled only when non-zero.
    pub etag_damage_rate: f64,
    /// Added to every part upload on top of `latency` (a slow upload link:
    /// parts still in flight when everything else has answered).
    pub part_latency: std::time::Duration,
}

impl FaultConfig {
    /// Every kind of fault at `rate`.
    pub fn uniform(seed: u64, rate: f64) -> Self {
        FaultConfig {
            seed,
            before_rate: rate,
            after_rate: rate / 2.0,
            body_rate: rate,
            list_rate: rate,
            corrupt_rate: 0.0,
            corrupt_spread: false,
            corrupt_write_rate: 0.0,
            ignore_crc: false,
            latency: std::time::Duration::ZERO,
            garble_rate: 0.0,
            short_range_rate: 0.0,
            etag_damage_rate: 0.0,
            part_latency: std::time::Duration::ZERO,
        }
    }

    /// No faults (add the ones wanted with struct update syntax).
    pub fn none(seed: u64) -> Self {
        Self::uniform(seed, 0.0)
    }
}

#[derive(Debug)]
pub struct FaultStore {
    inner: DynStore,
    cfg: FaultConfig,
    rng: Mutex<StdRng>,
    injected: AtomicU64,
    down: std::sync::atomic::AtomicBool,
}

impl FaultStore {
    pub fn new(inner: DynStore, cfg: FaultConfig) -> Self {
        FaultStore {
            rng: Mutex::new(StdRng::seed_from_u64(cfg.seed)),
            inner,
            cfg,
            injected: AtomicU64::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// An outage: while down, every request fails as if the server refused
    /// connections (listings included).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn roll(&self, rate: f64) -> Option<u32> {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.random::<f64>() < rate {
            self.injected.fetch_add(1, Ordering::Relaxed);
            Some(rng.random_range(0..3))
        } else {
            None
        }
    }

    fn fault(op: Op, key: &str, which: u32) -> StoreError {
        match which {
            0 => StoreError::new(op, key, ErrorKind::Throttled, "SlowDown (503): injected").with_code("SlowDown"),
            1 => StoreError::new(op, key, ErrorKind::Transient, "InternalError (500): injected")
                .with_code("InternalError"),
            _ => StoreError::new(op, key, ErrorKind::Transient, "connection reset by peer (injected)"),
        }
    }

    async fn before(&self, op: Op, key: &str) -> Result<()> {
        if !self.cfg.latency.is_zero() {
            tokio::time::sleep(self.cfg.latency).await;
        }
        if self.is_down() {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(
                StoreError::new(op, key, ErrorKind::Transient, "connection refused (injected outage)")
                    .with_code("ConnectionRefused"),
            );
        }
        if self.cfg.garble_rate > 0.0 && self.roll(self.cfg.garble_rate).is_some() {
            return Err(StoreError::new(
                op,
                key,
                ErrorKind::Credentials,
                "the server rejected the credentials (SignatureDoesNotMatch, injected)",
            )
            .with_code("SignatureDoesNotMatch"));
        }
        match self.roll(self.cfg.before_rate) {
            Some(w) => Err(Self::fault(op, key, w)),
            None => Ok(()),
        }
    }

    /// A written payload, with one byte flipped at `corrupt_write_rate`.
    fn maybe_corrupt(&self, payload: Bytes) -> Bytes {
        match self.roll(self.cfg.corrupt_write_rate) {
            Some(_) if !payload.is_empty() => {
                let mut v = payload.to_vec();
                v[0] ^= 0x01;
                Bytes::from(v)
            }
            _ => payload,
        }
    }

    fn after<T>(&self, op: Op, key: &str, r: Result<T>) -> Result<T> {
        match (r, self.roll(self.cfg.after_rate)) {
            (Ok(_), Some(w)) => Err(Self::fault(op, key, w)),
            (r, _) => r,
        }
    }
}

macro_rules! faulty {
    ($self:ident, $op:expr, $key:expr, $call:expr) => {{
        $self.before($op, $key).await?;
        let r = $call.await;
        $self.after($op, $key, r)
    }};
}

impl FaultStore {
    /// The faults a read's answer may be given: a short range, a damaged
    /// ETag, corrupt bytes, a body cut off.
    fn damage(&self, key: &Key, mut g: GetResult, ranged: bool) -> GetResult {
        // Rolled only when asked for: the seeded sequence of other faults stays.
        let short = ranged && self.cfg.short_range_rate > 0.0 && g.range.end > g.range.start;
        if short && self.roll(self.cfg.short_range_rate).is_some() {
            g.range.end -= 1;
            let mut left = g.range.end - g.range.start;
            let body = std::mem::replace(&mut g.body, stream::empty().boxed());
            g.body = body
                .map(move |c| {
                    c.map(|b: Bytes| {
                        let take = (b.len() as u64).min(left);
                        left -= take;
                        b.slice(..take as usize)
                    })
                })
                .boxed();
        }
        if self.cfg.etag_damage_rate > 0.0 && self.roll(self.cfg.etag_damage_rate).is_some() {
            g.meta.etag = g
                .meta
                .etag
                .take()
                .map(|e| format!("0{}", e.get(1..).unwrap_or_default()));
        }
        let corrupt = self.roll(self.cfg.corrupt_rate).is_some();
        if corrupt && self.cfg.corrupt_spread {
            let len = g.range.end - g.range.start;
            let (mut at, mask) = {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                (rng.random_range(0..len.max(1)), rng.random_range(1..=255u8))
            };
            let body = std::mem::replace(&mut g.body, stream::empty().boxed());
            g.body = body
                .map(move |c| {
                    c.map(|b: Bytes| match usize::try_from(at) {
                        Ok(i) if i < b.len() => {
                            at = u64::MAX;
                            let mut v = b.to_vec();
                            v[i] ^= mask;
                            Bytes::from(v)
                        }
                        _ => {
                            at = at.saturating_sub(b.len() as u64);
                            b
                        }
                    })
                })
                .boxed();
        } else if corrupt {
            let body = std::mem::replace(&mut g.body, stream::empty().boxed());
            let mut first = true;
            g.body = body
                .map(move |c| {
                    c.map(|b: Bytes| {
                        if first && !b.is_empty() {
                            first = false;
                            let mut v = b.to_vec();
                            v[0] ^= 0x01;
                            Bytes::from(v)
                        } else {
                            b
                        }
                    })
                })
                .boxed();
        }
        if let Some(w) = self.roll(self.cfg.body_rate) {
            let k = key.to_string();
            let body = std::mem::replace(&mut g.body, stream::empty().boxed());
            // Deliver the first chunk, cut off half of it, then fail.
            g.body = body
                .take(1)
                .map(|c| c.map(|b: Bytes| b.slice(..b.len() / 2)))
                .chain(stream::once(async move { Err(Self::fault(Op::Get, &k, w)) }))
                .boxed();
        }
        g
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn url(&self) -> String {
        self.inner.url()
    }
    fn list(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
        let prefix = req.prefix.to_string();
        if self.is_down() {
            self.injected.fetch_add(1, Ordering::Relaxed);
            let e = StoreError::new(
                Op::List,
                prefix,
                ErrorKind::Transient,
                "connection refused (injected outage)",
            )
            .with_code("ConnectionRefused");
            return stream::once(async move { Err(e) }).boxed();
        }
        // Decide up front whether (and after how many entries) this listing breaks.
        let cut = self
            .roll(self.cfg.list_rate)
            .map(|w| (w, self.rng.lock().map(|mut r| r.random_range(0..50usize)).unwrap_or(0)));
        let inner = self.inner.list(req);
        match cut {
            None => inner,
            Some((w, n)) => inner
                .take(n)
                .chain(stream::once(async move { Err(Self::fault(Op::List, &prefix, w)) }))
                .boxed(),
        }
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.before(Op::Head, key.as_str()).await?;
        self.inner.head(key).await
    }
    async fn head_part(&self, key: &Key, n: u32) -> Result<(u64, u32)> {
        self.before(Op::Head, key.as_str()).await?;
        self.inner.head_part(key, n).await
    }
    async fn get_with(&self, key: &Key, opts: crate::get_with::GetOpts) -> Result<GetResult> {
        // A version is read by the inner store (HEAD + GET here would see
        // the current object); other reads go through this store's faults.
        if opts.version_id.is_some() {
            self.before(Op::Get, key.as_str()).await?;
            let ranged = opts.range.is_some();
            let g = self.inner.get_with(key, opts).await?;
            return Ok(self.damage(key, g, ranged));
        }
        crate::get_with::by_head_and_get(self, key, opts).await
    }
    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
        self.before(Op::Get, key.as_str()).await?;
        let ranged = range.is_some();
        let g = self.inner.get(key, range).await?;
        Ok(self.damage(key, g, ranged))
    }
    async fn get_tags(&self, key: &Key) -> Result<Vec<(String, String)>> {
        self.before(Op::GetTags, key.as_str()).await?;
        self.inner.get_tags(key).await
    }
    async fn tagging_supported(&self) -> Result<bool> {
        self.inner.tagging_supported().await
    }
    async fn put(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult> {
        let payload = self.maybe_corrupt(payload);
        if !self.cfg.ignore_crc {
            return faulty!(self, Op::Put, key.as_str(), self.inner.put(key, payload, opts));
        }
        let mut opts = opts.clone();
        opts.checksums.crc64nvme = None;
        let mut res = faulty!(self, Op::Put, key.as_str(), self.inner.put(key, payload, &opts))?;
        res.checksums = Checksums::default();
        Ok(res)
    }
    async fn create_multipart(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        self.before(Op::CreateMultipart, key.as_str()).await?;
        self.inner.create_multipart(key, opts).await
    }
    async fn upload_part(
        &self,
        key: &Key,
        u: &MultipartId,
        n: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        let payload = self.maybe_corrupt(payload);
        if !self.cfg.part_latency.is_zero() {
            tokio::time::sleep(self.cfg.part_latency).await;
        }
        if !self.cfg.ignore_crc {
            return faulty!(
                self,
                Op::UploadPart,
                key.as_str(),
                self.inner.upload_part(key, u, n, payload, sums)
            );
        }
        let sums = Checksums {
            crc64nvme: None,
            ..sums.clone()
        };
        let mut part = faulty!(
            self,
            Op::UploadPart,
            key.as_str(),
            self.inner.upload_part(key, u, n, payload, &sums)
        )?;
        part.checksums = Checksums::default();
        Ok(part)
    }
    async fn upload_part_stream(
        &self,
        key: &Key,
        u: &MultipartId,
        n: u32,
        size: u64,
        body: ByteStream,
    ) -> Result<CompletedPart> {
        faulty!(
            self,
            Op::UploadPart,
            key.as_str(),
            self.inner.upload_part_stream(key, u, n, size, body)
        )
    }

    async fn upload_part_copy(
        &self,
        key: &Key,
        u: &MultipartId,
        n: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        faulty!(
            self,
            Op::UploadPartCopy,
            key.as_str(),
            self.inner.upload_part_copy(key, u, n, src, range)
        )
    }
    async fn complete_multipart(&self, key: &Key, u: &MultipartId, parts: &[CompletedPart]) -> Result<PutResult> {
        // Losing a complete's answer makes the retry fail with NoSuchUpload;
        // only fail before it (a real client sees that case too, and the
        // engine verifies by HEAD when a complete's retry finds no upload).
        self.before(Op::CompleteMultipart, key.as_str()).await?;
        self.inner.complete_multipart(key, u, parts).await
    }
    async fn abort_multipart(&self, key: &Key, u: &MultipartId) -> Result<()> {
        self.before(Op::AbortMultipart, key.as_str()).await?;
        self.inner.abort_multipart(key, u).await
    }
    async fn list_multipart_uploads(&self, prefix: &Key) -> Result<Vec<(Key, MultipartId)>> {
        faulty!(
            self,
            Op::List,
            prefix.as_str(),
            self.inner.list_multipart_uploads(prefix)
        )
    }
    async fn copy(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult> {
        faulty!(self, Op::Copy, dst.as_str(), self.inner.copy(src, dst, opts))
    }
    async fn restore(&self, key: &Key, days: u32, tier: &str) -> Result<()> {
        faulty!(self, Op::Restore, key.as_str(), self.inner.restore(key, days, tier))
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<StoreError>> {
        faulty!(self, Op::Delete, "", self.inner.delete_many(keys))
    }
}
