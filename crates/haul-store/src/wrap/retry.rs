//! Retries retryable errors (throttling, 5xx, timeouts, resets) with
//! exponential backoff and full jitter, for every backend alike. Listings
//! resume after the last key they yielded; reads resume at the byte where the
//! body broke off (and fail if the object changed meanwhile).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::get_with::GetOpts;
use crate::key::Key;
use crate::types::*;
use crate::{DynStore, ObjectStore};

/// How hard to retry.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1))
    }
}

/// Retries every operation of the inner store.
#[derive(Debug)]
pub struct RetryStore {
    inner: DynStore,
    policy: RetryPolicy,
    /// What the server has shown of itself so far.
    answered: Arc<Seen>,
}

impl RetryStore {
    pub fn new(inner: DynStore, policy: RetryPolicy) -> Self {
        RetryStore {
            inner,
            policy,
            answered: Arc::new(Seen::default()),
        }
    }

    /// The body of `first`, resumed at the byte where it breaks off (and
    /// failing if the object changed meanwhile).
    fn resumable(&self, key: &Key, version: Option<String>, first: GetResult) -> GetResult {
        let GetResult { meta, range: got, body } = first;
        struct St {
            inner: DynStore,
            key: Key,
            etag: Option<String>,
            /// The version read (its rest is read from it, not the current object).
            version: Option<String>,
            body: BoxStream<'static, Result<Bytes>>,
            pos: u64,
            end: u64,
            backoff: backon::ExponentialBackoff,
        }
        let st = St {
            inner: self.inner.clone(),
            key: key.clone(),
            etag: meta.etag.clone(),
            version,
            body,
            pos: got.start,
            end: got.end,
            backoff: self.policy.backoff().build(),
        };
        let body = stream::unfold(Some(st), |st| async move {
            let mut st = st?;
            loop {
                match st.body.next().await {
                    Some(Ok(chunk)) => {
                        st.pos += chunk.len() as u64;
                        return Some((Ok(chunk), Some(st)));
                    }
                    None if st.pos >= st.end => return None,
                    // A body that ends early or breaks retryably resumes where it stopped.
                    broken @ (None | Some(Err(_))) => {
                        let e = match broken {
                            Some(Err(e)) if e.is_retryable() => e,
                            Some(Err(e)) => return Some((Err(e), None)),
                            _ => StoreError::new(Op::Get, st.key.as_str(), ErrorKind::Transient, "body ended early"),
                        };
                        let (pos, end) = (st.pos, st.end);
                        if let Err(e) = resume(
                            &mut st.inner,
                            &mut st.body,
                            &st.key,
                            &st.etag,
                            st.version.as_deref(),
                            pos,
                            end,
                            &mut st.backoff,
                            e,
                        )
                        .await
                        {
                            return Some((Err(e), None));
                        }
                    }
                }
            }
        })
        .boxed();
        GetResult { meta, range: got, body }
    }
}

/// What a store's server has shown: it answered (anything, even an
/// error) — from then on an unreachable endpoint is a restart worth
/// waiting for, before it is a wrong endpoint, reported at once instead of
/// after every backoff; it accepted a request — from then on a
/// `SignatureDoesNotMatch` or a malformed-request refusal is a request
/// garbled on the way (a flipped byte in a header or the path), not wrong
/// credentials or a bad request ([`StoreError::is_garbled_request`]).
///
/// Before any request was accepted, one such refusal is sent again all the
/// same: the first request of a run can be garbled on the way too (through
/// a proxy that flips a byte in 1% of the chunks, the most likely reason one
/// run of three that copied 2,000 objects got nothing); wrong credentials
/// are refused twice, then reported.
#[derive(Debug, Default)]
struct Seen {
    answered: AtomicBool,
    accepted: AtomicBool,
    early_garbled: std::sync::atomic::AtomicU32,
}

/// Garbled-looking refusals sent again before any request was accepted.
const EARLY_GARBLED_RESENDS: u32 = 1;

/// Whether to send the request that failed with `e` again.
fn worth_retrying(seen: &Seen, e: &StoreError) -> bool {
    (e.is_retryable() && (!e.is_unreachable() || seen.answered.load(Ordering::Relaxed)))
        || (e.is_garbled_request()
            && (seen.accepted.load(Ordering::Relaxed)
                || seen.early_garbled.fetch_add(1, Ordering::Relaxed) < EARLY_GARBLED_RESENDS))
}

/// Remembers what the server showed.
fn saw<T>(seen: &Seen, r: &Result<T>) {
    match r {
        Ok(_) => {
            seen.accepted.store(true, Ordering::Relaxed);
            seen.answered.store(true, Ordering::Relaxed);
        }
        Err(e) if !e.is_unreachable() => seen.answered.store(true, Ordering::Relaxed),
        Err(_) => {}
    }
}

/// Requests sent again by every RetryStore of this process.
static RESENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many requests the retry layer has sent again in this process (a
/// run's summary reports it: the cost of a flaky network, made visible).
pub fn resent_requests() -> u64 {
    RESENT.load(Ordering::Relaxed)
}

/// Counts `n` requests sent again above the retry layer (the parts a
/// copy reads again to repair data damaged in transit), in the same total.
pub fn count_resent(n: u64) {
    RESENT.fetch_add(n, Ordering::Relaxed);
}

fn notify(e: &StoreError, d: Duration) {
    RESENT.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(op = %e.op, key = %e.key, error = %e.message, delay_ms = d.as_millis() as u64, "retrying");
}

macro_rules! retried {
    ($self:ident, $body:expr) => {
        retried!($self, $body, |e: &StoreError| worth_retrying(&$self.answered, e))
    };
    ($self:ident, $body:expr, $when:expr) => {{
        (|| async {
            let r = $body.await;
            saw(&$self.answered, &r);
            r
        })
        .retry($self.policy.backoff())
        .when($when)
        .notify(notify)
        .await
    }};
}

#[async_trait]
impl ObjectStore for RetryStore {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    fn url(&self) -> String {
        self.inner.url()
    }

    fn list(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
        struct St {
            inner: DynStore,
            req: ListRequest,
            cur: Option<BoxStream<'static, Result<ListEntry>>>,
            last: Option<Key>,
            policy: RetryPolicy,
            backoff: backon::ExponentialBackoff,
            /// Retried since the last entry: the backoff restarts after progress.
            retried: bool,
            done: bool,
            answered: Arc<Seen>,
        }
        let st = St {
            inner: self.inner.clone(),
            cur: None,
            last: None,
            backoff: self.policy.backoff().build(),
            policy: self.policy.clone(),
            retried: false,
            done: false,
            answered: self.answered.clone(),
            req,
        };
        stream::unfold(st, |mut st| async move {
            loop {
                if st.done {
                    return None;
                }
                if st.cur.is_none() {
                    let mut req = st.req.clone();
                    if let Some(l) = &st.last {
                        // Resume after the last entry; after a common prefix,
                        // past everything under it.
                        let after = if req.delimiter.is_some_and(|d| l.as_str().ends_with(d)) {
                            Key::prefix(format!("{}\u{10FFFF}", l.as_str())).unwrap_or_else(|_| l.clone())
                        } else {
                            l.clone()
                        };
                        req.range.start_after = Some(after);
                    }
                    st.cur = Some(st.inner.list(req));
                }
                let next = match st.cur.as_mut() {
                    Some(s) => s.next().await,
                    None => None,
                };
                if let Some(r) = &next {
                    saw(&st.answered, r);
                }
                match next {
                    None => return None,
                    Some(Ok(e)) => {
                        // After a resume, never repeat an entry (a common
                        // prefix can be listed again by some backends).
                        if st.last.as_ref().is_some_and(|l| e.key() <= l) {
                            continue;
                        }
                        if st.retried {
                            st.backoff = st.policy.backoff().build();
                            st.retried = false;
                        }
                        st.last = Some(e.key().clone());
                        return Some((Ok(e), st));
                    }
                    Some(Err(e)) if worth_retrying(&st.answered, &e) => match st.backoff.next() {
                        Some(d) => {
                            notify(&e, d);
                            st.retried = true;
                            st.cur = None;
                            tokio::time::sleep(d).await;
                        }
                        None => {
                            st.done = true;
                            return Some((Err(e), st));
                        }
                    },
                    Some(Err(e)) => return Some((Err(e), st)),
                }
            }
        })
        .boxed()
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        retried!(self, self.inner.head(key))
    }

    async fn head_part(&self, key: &Key, n: u32) -> Result<(u64, u32)> {
        retried!(self, self.inner.head_part(key, n))
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
        let first = retried!(self, self.inner.get(key, range.clone()))?;
        Ok(self.resumable(key, None, first))
    }

    async fn get_with(&self, key: &Key, opts: GetOpts) -> Result<GetResult> {
        // The first answer says which bytes a suffix is; a body that breaks
        // resumes with plain ranged GETs, checked against its ETag (the one
        // `If-Match` asked for).
        let first = retried!(self, self.inner.get_with(key, opts.clone()))?;
        Ok(self.resumable(key, opts.version_id, first))
    }

    async fn get_tags(&self, key: &Key) -> Result<Vec<(String, String)>> {
        retried!(self, self.inner.get_tags(key))
    }
    async fn tagging_supported(&self) -> Result<bool> {
        retried!(self, self.inner.tagging_supported())
    }

    async fn put(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult> {
        retried!(self, self.inner.put(key, payload.clone(), opts), |e: &StoreError| {
            worth_retrying(&self.answered, e) || e.is_checksum_refusal()
        })
    }

    async fn create_multipart(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        retried!(self, self.inner.create_multipart(key, opts))
    }

    async fn upload_part(
        &self,
        key: &Key,
        u: &MultipartId,
        n: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        retried!(
            self,
            self.inner.upload_part(key, u, n, payload.clone(), sums),
            |e: &StoreError| { worth_retrying(&self.answered, e) || e.is_checksum_refusal() }
        )
    }

    async fn upload_part_stream(
        &self,
        key: &Key,
        u: &MultipartId,
        n: u32,
        size: u64,
        body: ByteStream,
    ) -> Result<CompletedPart> {
        // A stream cannot be replayed: the caller retries the part.
        self.inner.upload_part_stream(key, u, n, size, body).await
    }

    async fn upload_part_copy(
        &self,
        key: &Key,
        u: &MultipartId,
        n: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        retried!(self, self.inner.upload_part_copy(key, u, n, src, range.clone()))
    }

    async fn complete_multipart(&self, key: &Key, u: &MultipartId, parts: &[CompletedPart]) -> Result<PutResult> {
        retried!(self, self.inner.complete_multipart(key, u, parts))
    }

    async fn abort_multipart(&self, key: &Key, u: &MultipartId) -> Result<()> {
        retried!(self, self.inner.abort_multipart(key, u))
    }

    async fn list_multipart_uploads(&self, prefix: &Key) -> Result<Vec<(Key, MultipartId)>> {
        retried!(self, self.inner.list_multipart_uploads(prefix))
    }

    async fn copy(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult> {
        retried!(self, self.inner.copy(src, dst, opts))
    }

    async fn restore(&self, key: &Key, days: u32, tier: &str) -> Result<()> {
        retried!(self, self.inner.restore(key, days, tier))
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<StoreError>> {
        retried!(self, self.inner.delete_many(keys))
    }
}

/// Re-opens a broken body at `pos` after a backoff; fails if the object changed.
#[allow(clippy::too_many_arguments)]
async fn resume(
    inner: &mut DynStore,
    body: &mut BoxStream<'static, Result<Bytes>>,
    key: &Key,
    etag: &Option<String>,
    version: Option<&str>,
    pos: u64,
    end: u64,
    backoff: &mut backon::ExponentialBackoff,
    err: StoreError,
) -> Result<()> {
    // Drop the broken body first: it may hold a request slot of a
    // LimitStore below, which the new request needs.
    *body = stream::empty().boxed();
    let mut err = err;
    loop {
        let Some(d) = backoff.next() else { return Err(err) };
        notify(&err, d);
        tokio::time::sleep(d).await;
        let got = match version {
            None => inner.get(key, Some(pos..end)).await,
            Some(v) => {
                inner
                    .get_with(key, GetOpts::version_range(Some(v.to_string()), pos..end))
                    .await
            }
        };
        match got {
            Ok(g) => {
                if g.range.start != pos {
                    // The server answered the first request with the range
                    // asked for: a header damaged on the way.
                    err = StoreError::new(
                        Op::Get,
                        key.as_str(),
                        ErrorKind::InvalidRequest,
                        format!("asked for bytes from {pos}, the server answered from {}", g.range.start),
                    )
                    .with_code("RangeMismatch");
                    continue;
                }
                if g.meta.etag.is_some() && etag.is_some() && g.meta.etag != *etag {
                    // Replaced, or the answer's header damaged on the way:
                    // a fresh HEAD tells (a version is never replaced).
                    if version.is_none() && !matches!(inner.head(key).await, Ok(h) if h.etag == *etag) {
                        return Err(StoreError::new(
                            Op::Get,
                            key.as_str(),
                            ErrorKind::PreconditionFailed,
                            "the object changed while it was being read",
                        ));
                    }
                    err = StoreError::new(
                        Op::Get,
                        key.as_str(),
                        ErrorKind::Transient,
                        "an answer named another ETag than the object's (damaged on the way)",
                    );
                    continue;
                }
                *body = g.body;
                return Ok(());
            }
            // The first request of this read was accepted: a refusal as
            // garbled is a request damaged on the way.
            Err(e) if e.is_retryable() || e.is_garbled_request() => err = e,
            Err(e) => return Err(e),
        }
    }
}
