//! [`MultipartWriter`]: one multipart upload, from its creation to its
//! completion — or its abort.
//!
//! Parts are sent in order, each as a future owned by the writer (never a
//! detached task): at most `parts_per_object` of one object and
//! `parts_total` of the job in flight, every buffer paid for from the
//! job's [`ByteBudget`] *before* it is allocated. [`MultipartWriter::finish`]
//! completes the upload and checks what the destination answered: its
//! full-object CRC64NVME when it keeps one, else the multipart ETag
//! recomputed from the parts' MD5s, else the size. An error, a cancel (the
//! transfer's token) or a drop before `finish` aborts the upload: the part
//! futures are stopped first, so no part of this writer lands after the
//! abort, and no upload is left open.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use haul_store::checksum::{crc64_of_parts, crc64_to_b64, multipart_etag};
use haul_store::{
    ByteStream, CompletedPart, CopySource, DynStore, ErrorKind, Key, MultipartId, Op, PutOptions, PutResult,
};
use md5::Digest;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::part::{send_bytes, send_stream, Sent};
use super::verify::check_written;
use super::{cancelled, err, Result, Verified};
use crate::budget::{BudgetPermit, ByteBudget};
use crate::report::Observer;

/// How the parts of an upload are hashed and checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartChecks {
    /// The destination hashes what it writes (a local directory): no MD5
    /// here, its part ETag is the MD5.
    pub dst_hashes: bool,
    /// The destination checks each part's CRC64NVME and says so: no MD5
    /// here. A part whose CRC it does not confirm was protected by the
    /// store's own Content-MD5, or is sent again with its MD5.
    pub dst_checks_crc: bool,
    /// Each part's CRC64NVME is computed, combined into the full-object
    /// one (checked against the destination's, or the source's).
    pub crc64: bool,
    /// The MD5 of the whole object is computed, in order (the data of a
    /// part is kept until the parts before it are hashed).
    pub whole_md5: bool,
}

/// The data of one part.
pub enum PartBody {
    /// A buffer, paid for by the permit.
    Bytes(Bytes, Option<BudgetPermit>),
    /// A stream of exactly `size` bytes, written as it arrives.
    Stream(ByteStream),
}

impl std::fmt::Debug for PartBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartBody::Bytes(b, _) => write!(f, "PartBody::Bytes({} bytes)", b.len()),
            PartBody::Stream(_) => f.write_str("PartBody::Stream"),
        }
    }
}

/// What the parts sent produced, before completion.
#[derive(Debug, Clone)]
pub struct PartsSent {
    pub parts: Vec<CompletedPart>,
    /// The multipart ETag of the parts' MD5s, when every MD5 is known.
    pub etag: Option<String>,
    /// The full-object CRC64NVME, combined from the parts' CRCs.
    pub crc64: Option<u64>,
    /// The MD5 of the whole object ([`PartChecks::whole_md5`]).
    pub whole_md5: Option<String>,
    pub bytes: u64,
}

/// A completed upload.
#[derive(Debug, Clone)]
pub struct Finished {
    pub result: PutResult,
    pub verified: Verified,
    pub parts: u32,
    pub bytes: u64,
}

/// What one part sent was hashed to: its MD5, its CRC64NVME and length.
pub(super) type PartDigest = (Option<String>, Option<(u64, u64)>);

type PartFuture<'a> = BoxFuture<'a, Result<(u32, Sent)>>;

/// Attempts at a streamed part ([`MultipartWriter::put_part_streamed`]).
pub const STREAM_ATTEMPTS: u32 = 4;

/// The shared limits a writer draws from (those of a [`super::Transfer`]).
#[derive(Debug, Clone)]
pub struct Limits {
    pub budget: ByteBudget,
    pub parts_total: Arc<Semaphore>,
    pub parts_per_object: usize,
    pub cancel: CancellationToken,
}

/// One multipart upload in progress; see the module documentation.
pub struct MultipartWriter<'a> {
    dst: DynStore,
    key: Key,
    upload: MultipartId,
    put: PutOptions,
    limits: Limits,
    checks: PartChecks,
    inflight: FuturesUnordered<PartFuture<'a>>,
    sent: BTreeMap<u32, Sent>,
    whole: Option<md5::Md5>,
    hashed: u32,
    obs: Option<&'a dyn Observer>,
    next: u32,
    written: u64,
    open: bool,
}

impl std::fmt::Debug for MultipartWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultipartWriter")
            .field("key", &self.key)
            .field("upload", &self.upload)
            .field("parts", &self.next)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<'a> MultipartWriter<'a> {
    /// Creates the upload of `key` with the options `put`.
    pub async fn create(
        dst: &DynStore,
        key: &Key,
        put: PutOptions,
        checks: PartChecks,
        limits: Limits,
    ) -> Result<MultipartWriter<'a>> {
        if limits.cancel.is_cancelled() {
            return Err(cancelled(key));
        }
        let upload = dst.create_multipart(key, &put).await?;
        Ok(MultipartWriter {
            dst: dst.clone(),
            key: key.clone(),
            upload,
            put,
            limits,
            checks,
            inflight: FuturesUnordered::new(),
            sent: BTreeMap::new(),
            whole: checks.whole_md5.then(md5::Md5::new),
            hashed: 0,
            obs: None,
            next: 0,
            written: 0,
            open: true,
        })
    }

    /// Reports the bytes of server-side copied parts to `obs` as they
    /// complete (the caller reports the bytes it reads itself).
    pub fn observe(&mut self, obs: &'a dyn Observer) {
        self.obs = Some(obs);
    }

    /// The upload's id.
    pub fn upload_id(&self) -> &MultipartId {
        &self.upload
    }

    /// The options the upload was created with.
    pub fn put_options(&self) -> &PutOptions {
        &self.put
    }

    /// Bytes handed to parts so far: the offset the next part starts at.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Parts handed over so far.
    pub fn parts(&self) -> u32 {
        self.next
    }

    /// Runs `fut` while the parts in flight progress (and the cancel is
    /// watched). An error of a part or a cancel aborts the upload.
    pub async fn drive<T>(&mut self, fut: impl Future<Output = T>) -> Result<T> {
        let r = self.drive_inner(fut).await;
        self.fail_on_err(r).await
    }

    async fn drive_inner<T>(&mut self, fut: impl Future<Output = T>) -> Result<T> {
        tokio::pin!(fut);
        let cancel = self.limits.cancel.clone();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(cancelled(&self.key)),
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => self.record(done)?,
                v = &mut fut => return Ok(v),
            }
        }
    }

    /// Waits until fewer than `parts_per_object` parts are in flight.
    async fn wait_room(&mut self) -> Result<()> {
        while self.inflight.len() >= self.limits.parts_per_object.max(1) {
            let r = self.settle_one().await;
            self.fail_on_err(r).await?;
        }
        Ok(())
    }

    /// Waits for room for one more part of this object (parts in flight,
    /// the part limit of the destination); its number.
    async fn room(&mut self) -> Result<u32> {
        let max = self.dst.capabilities().max_parts;
        if self.next >= max {
            let e = err(
                Op::UploadPart,
                &self.key,
                ErrorKind::InvalidRequest,
                format!(
                    "more than {max} parts ({} bytes sent): the destination allows no more parts in one object",
                    self.written
                ),
            );
            return self.fail(e).await;
        }
        self.wait_room().await?;
        self.next += 1;
        Ok(self.next)
    }

    /// Waits for one part in flight to end.
    async fn settle_one(&mut self) -> Result<()> {
        let cancel = self.limits.cancel.clone();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(cancelled(&self.key)),
            Some(done) = self.inflight.next() => self.record(done),
            else => Ok(()),
        }
    }

    /// Waits for room for the next part and for `size` bytes of the budget
    /// (before the caller allocates its buffer).
    pub async fn reserve(&mut self, size: u64) -> Result<BudgetPermit> {
        self.wait_room().await?;
        let budget = self.limits.budget.clone();
        self.drive(async move { budget.acquire(size).await }).await
    }

    /// Sends the next part from a buffer paid for by `permit`.
    /// Its data already paid for, it takes no part slot of the job (so
    /// no budget is held while waiting for one).
    pub async fn put_part(&mut self, data: Bytes, permit: BudgetPermit) -> Result<u32> {
        let len = data.len() as u64;
        self.push_part(
            len,
            false,
            false,
            async move { Ok(PartBody::Bytes(data, Some(permit))) },
        )
        .await
    }

    /// Sends the next part, `size` bytes read by `read` once a part slot
    /// (and, when `buffered`, `size` bytes of the budget) is held.
    pub async fn put_part_from(
        &mut self,
        size: u64,
        buffered: bool,
        read: impl Future<Output = Result<PartBody>> + Send + 'a,
    ) -> Result<u32> {
        self.push_part(size, buffered, true, read).await
    }

    async fn push_part(
        &mut self,
        size: u64,
        buffered: bool,
        slot: bool,
        read: impl Future<Output = Result<PartBody>> + Send + 'a,
    ) -> Result<u32> {
        let n = self.room().await?;
        self.written += size;
        self.spawn_part(n, size, buffered, slot, self.obs, read);
        Ok(n)
    }

    /// Sends part `n` again, `size` bytes read by `read` into a buffer
    /// (see [`Self::put_part_from`]): it replaces the one sent. Its bytes
    /// are not reported.
    pub(super) async fn resend_part_from(
        &mut self,
        n: u32,
        size: u64,
        read: impl Future<Output = Result<PartBody>> + Send + 'a,
    ) -> Result<()> {
        self.wait_room().await?;
        self.spawn_part(n, size, true, true, None, read);
        Ok(())
    }

    /// Sends part `n` again, streamed (see [`Self::put_part_streamed`]):
    /// it replaces the one sent. Its bytes are not reported.
    pub(super) async fn resend_part_streamed<F, Fut>(&mut self, n: u32, size: u64, open: F) -> Result<()>
    where
        F: Fn() -> Fut + Send + 'a,
        Fut: Future<Output = Result<ByteStream>> + Send + 'a,
    {
        self.wait_room().await?;
        self.spawn_streamed(n, size, None, open);
        Ok(())
    }

    /// What part `n` sent was hashed to (its MD5, its CRC64NVME and
    /// length), as computed for the checks; `None` before it was sent.
    pub(super) fn part_digest(&self, n: u32) -> Option<PartDigest> {
        self.sent
            .get(&n)
            .map(|s| (s.md5.clone().filter(|m| !m.is_empty()), s.crc))
    }

    fn spawn_part(
        &mut self,
        n: u32,
        size: u64,
        buffered: bool,
        slot: bool,
        obs: Option<&'a dyn Observer>,
        read: impl Future<Output = Result<PartBody>> + Send + 'a,
    ) {
        let (dst, key, upload, put) = (
            self.dst.clone(),
            self.key.clone(),
            self.upload.clone(),
            self.put.clone(),
        );
        let (checks, budget, slots) = (self.checks, self.limits.budget.clone(), self.limits.parts_total.clone());
        let fut = async move {
            let _slot = if slot { slots.acquire_owned().await.ok() } else { None };
            let permit = if buffered {
                Some(budget.acquire(size).await)
            } else {
                None
            };
            let sent = match read.await? {
                PartBody::Bytes(data, p) => {
                    let permit = p.or(permit);
                    send_bytes(&dst, &key, &upload, &put, checks, n, data, permit).await?
                }
                PartBody::Stream(body) => {
                    let sent = send_stream(&dst, &key, &upload, &put, checks, n, size, body).await?;
                    // Bytes read into a buffer were counted as they came.
                    if let Some(o) = obs {
                        o.bytes(size);
                    }
                    sent
                }
            };
            Ok((n, sent))
        };
        self.inflight.push(fut.boxed());
    }

    /// Sends the next part streamed from the body `open` returns (a ranged
    /// GET). A stream cannot be replayed by the store's retries: a part
    /// that fails with an error a fresh attempt can fix is opened and sent
    /// again, up to [`STREAM_ATTEMPTS`] times, with a short pause.
    pub async fn put_part_streamed<F, Fut>(&mut self, size: u64, open: F) -> Result<u32>
    where
        F: Fn() -> Fut + Send + 'a,
        Fut: Future<Output = Result<ByteStream>> + Send + 'a,
    {
        let n = self.room().await?;
        self.written += size;
        self.spawn_streamed(n, size, self.obs, open);
        Ok(n)
    }

    fn spawn_streamed<F, Fut>(&mut self, n: u32, size: u64, obs: Option<&'a dyn Observer>, open: F)
    where
        F: Fn() -> Fut + Send + 'a,
        Fut: Future<Output = Result<ByteStream>> + Send + 'a,
    {
        let (dst, key, upload, put) = (
            self.dst.clone(),
            self.key.clone(),
            self.upload.clone(),
            self.put.clone(),
        );
        let (checks, slots) = (self.checks, self.limits.parts_total.clone());
        let fut = async move {
            let _slot = slots.acquire_owned().await.ok();
            let mut attempt = 1;
            let sent = loop {
                let body = open().await?;
                match send_stream(&dst, &key, &upload, &put, checks, n, size, body).await {
                    Ok(sent) => break sent,
                    Err(e) if e.is_retryable() && attempt < STREAM_ATTEMPTS => {
                        tracing::info!(key = %key, part = n, attempt, error = %e, "sending the part again");
                        tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            };
            if let Some(o) = obs {
                o.bytes(size);
            }
            Ok((n, sent))
        };
        self.inflight.push(fut.boxed());
    }

    /// Sends the next part as a server-side copy of `range` of `source`.
    pub async fn copy_part(&mut self, source: CopySource, range: std::ops::Range<u64>) -> Result<u32> {
        let n = self.room().await?;
        let len = range.end - range.start;
        self.written += len;
        let (dst, key, upload, slots) = (
            self.dst.clone(),
            self.key.clone(),
            self.upload.clone(),
            self.limits.parts_total.clone(),
        );
        let obs = self.obs;
        let fut = async move {
            let _slot = slots.acquire_owned().await;
            let part = dst.upload_part_copy(&key, &upload, n, &source, range).await?;
            if let Some(o) = obs {
                o.bytes(len);
            }
            // A copied part's ETag is the MD5 of the range (when not SSE-KMS).
            let md5 = Some(part.etag.clone());
            Ok((
                n,
                Sent {
                    part,
                    md5,
                    crc: None,
                    kept: None,
                },
            ))
        };
        self.inflight.push(fut.boxed());
        Ok(n)
    }

    fn record(&mut self, done: Result<(u32, Sent)>) -> Result<()> {
        let (n, sent) = done?;
        self.sent.insert(n, sent);
        // The whole-object MD5 takes the parts in order.
        if let Some(h) = self.whole.as_mut() {
            while let Some(s) = self.sent.get_mut(&(self.hashed + 1)) {
                if let Some((data, _permit)) = s.kept.take() {
                    h.update(&data);
                }
                self.hashed += 1;
            }
        }
        Ok(())
    }

    /// Waits for every part sent; what they produced. An error aborts.
    pub async fn wait_parts(&mut self) -> Result<PartsSent> {
        while !self.inflight.is_empty() {
            let r = self.settle_one().await;
            self.fail_on_err(r).await?;
        }
        let sent: Vec<&Sent> = self.sent.values().collect();
        let md5s: Option<Vec<&str>> = sent.iter().map(|s| s.md5.as_deref()).collect();
        let crc64 = sent
            .iter()
            .map(|s| s.crc)
            .collect::<Option<Vec<_>>>()
            .and_then(crc64_of_parts)
            .filter(|_| self.checks.crc64);
        Ok(PartsSent {
            parts: sent.iter().map(|s| s.part.clone()).collect(),
            etag: md5s.and_then(multipart_etag),
            crc64,
            whole_md5: self.whole.take().map(|h| hex::encode(h.finalize())),
            bytes: self.written,
        })
    }

    /// Completes the upload and checks the answer: against the full-object
    /// CRC64NVME of the parts when the destination keeps one, the ETag
    /// `expected` (the multipart ETag of the parts' MD5s) when it is an
    /// MD5, else the size. A failed completion aborts.
    pub async fn complete(mut self, parts: &PartsSent, expected: Option<&str>) -> Result<Finished> {
        if self.limits.cancel.is_cancelled() {
            return self.fail(cancelled(&self.key)).await;
        }
        if let Some(crc) = parts.crc64 {
            self.put.checksums.crc64nvme = Some(crc64_to_b64(crc));
        }
        let done = self.dst.complete_multipart(&self.key, &self.upload, &parts.parts).await;
        let result = match done {
            Ok(r) => r,
            Err(e) => return self.fail(e).await,
        };
        // Completed: nothing to abort any more, whatever the check says.
        self.open = false;
        let verified = check_written(&self.dst, &self.key, &self.put, &result, expected, parts.bytes).await?;
        Ok(Finished {
            result,
            verified,
            parts: parts.parts.len() as u32,
            bytes: parts.bytes,
        })
    }

    /// Waits for every part, completes the upload and checks it.
    pub async fn finish(mut self) -> Result<Finished> {
        let parts = self.wait_parts().await?;
        let expected = parts.etag.clone();
        self.complete(&parts, expected.as_deref()).await
    }

    /// Stops the parts in flight and aborts the upload.
    pub async fn abort(mut self) {
        self.abort_now().await;
    }

    async fn abort_now(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        // Dropping the part futures stops them: none lands after the abort.
        self.inflight = FuturesUnordered::new();
        self.sent.clear();
        abort(&self.dst, &self.key, &self.upload).await;
    }

    async fn fail<T>(&mut self, e: haul_store::StoreError) -> Result<T> {
        self.abort_now().await;
        Err(e)
    }

    async fn fail_on_err<T>(&mut self, r: Result<T>) -> Result<T> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => self.fail(e).await,
        }
    }
}

impl Drop for MultipartWriter<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // Dropped before `finish` or `abort` (the caller's future was
        // dropped, or it returned early): the part futures stop with the
        // writer, and the upload is aborted in the background.
        self.inflight = FuturesUnordered::new();
        let (dst, key, upload) = (self.dst.clone(), self.key.clone(), self.upload.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move { abort(&dst, &key, &upload).await });
            }
            Err(_) => tracing::warn!(key = %key, "a multipart upload was left open (no runtime to abort it)"),
        }
    }
}

pub(super) async fn abort(dst: &DynStore, key: &Key, upload: &MultipartId) {
    if let Err(e) = dst.abort_multipart(key, upload).await {
        tracing::warn!(key = %key, error = %e, "could not abort a multipart upload");
    }
}
