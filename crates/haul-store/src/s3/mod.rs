//! The S3 backend: AWS S3 and S3-compatible servers, through the official
//! AWS SDK for Rust.
//!
//! Deliberate choices (see docs/ARCHITECTURE.md):
//! * Credentials and region come from the standard AWS chain (`aws-config`):
//!   environment, shared config/credentials files and profiles, SSO,
//!   `credential_process`, IMDS; also `AWS_ENDPOINT_URL(_S3)`.
//! * The SDK's default request checksums (aws-chunked trailers, 2025) break
//!   many S3-compatible servers: for a custom endpoint haul sets checksum
//!   calculation to `WhenRequired` and sends the checksums it computes itself
//!   as plain headers (Content-MD5, optionally `x-amz-checksum-crc64nvme`).
//! * The SDK's own retries are off: the [`crate::wrap::RetryStore`] wrapper
//!   retries every backend alike, resuming listings and ranged reads.
//! * Stalled-stream protection is relaxed for server-side copies, which can
//!   take minutes before the server answers.

mod conditional;
mod error;
mod part_stream;
mod tagging;
mod timeouts;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart as SdkPart, Delete,
    MetadataDirective as SdkDirective, ObjectIdentifier, ServerSideEncryption, StorageClass, TaggingDirective,
};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::checksum::{clean_etag, md5_hex_to_base64};
use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;
use crate::ObjectStore;

pub use error::map_sdk_error;

/// When the SDK computes request checksums itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChecksumPolicy {
    /// `WhenRequired` for custom endpoints, `WhenSupported` for AWS.
    #[default]
    Auto,
    WhenRequired,
    WhenSupported,
}

/// How to reach one S3 endpoint: the per-side connection options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct S3Config {
    /// A profile from the shared config/credentials files.
    pub profile: Option<String>,
    /// A custom endpoint (S3-compatible servers, VPC endpoints).
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`).
    pub path_style: bool,
    pub checksum_policy: ChecksumPolicy,
    /// Send CRC64NVMEs with uploads (multipart uploads get a full-object
    /// CRC64NVME). Unset: on for AWS; on a custom endpoint, on once the
    /// server acknowledges the algorithm when a multipart upload is
    /// created (garage 2 does), off otherwise.
    pub send_crc64nvme: Option<bool>,
    /// How long one attempt of a request may wait for its answer (plus
    /// the payload's sending time at 1 MiB/s); `None`: 30 s.
    pub request_timeout: Option<Duration>,
}

/// A server's refusal of the checksum algorithm (not of anything else in
/// the request: storage class, tags, KMS key).
fn refuses_checksums(e: &StoreError) -> bool {
    let msg = e.to_string().to_ascii_lowercase();
    e.kind == ErrorKind::NotSupported || (e.kind == ErrorKind::InvalidRequest && msg.contains("checksum"))
}

/// The MD5 a write carries as Content-MD5 when the caller gave none and no
/// CRC64NVME the server checks protects the payload (`crc_checked`):
/// computed here, and returned in the result's `checksums.md5_hex`.
async fn own_md5(op: Op, key: &Key, payload: &Bytes, given: &Checksums, crc_checked: bool) -> Result<Option<String>> {
    if given.md5_hex.is_some() || given.crc64nvme.is_none() || crc_checked {
        return Ok(None);
    }
    if payload.len() <= 256 * 1024 {
        // Small: hashed in place (no thread hop per object).
        return Ok(Some(crate::checksum::md5_hex(payload)));
    }
    let data = payload.clone();
    tokio::task::spawn_blocking(move || crate::checksum::md5_hex(&data))
        .await
        .map(Some)
        .map_err(|e| StoreError::new(op, key.as_str(), ErrorKind::Other, format!("hashing failed: {e}")))
}

/// Whether uploads carry CRC64NVMEs: decided, or to be learnt from the
/// server's first CreateMultipartUpload answer.
#[derive(Debug)]
struct Crc64Support(AtomicU8);

impl Crc64Support {
    const UNKNOWN: u8 = 0;
    const YES: u8 = 1;
    const NO: u8 = 2;

    fn new(setting: Option<bool>) -> Self {
        Crc64Support(AtomicU8::new(match setting {
            Some(true) => Self::YES,
            Some(false) => Self::NO,
            None => Self::UNKNOWN,
        }))
    }

    /// Requests carry CRC64NVME headers.
    fn on(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::YES
    }

    /// Still worth asking for (not known to be unsupported).
    fn maybe(&self) -> bool {
        self.0.load(Ordering::Relaxed) != Self::NO
    }

    fn unknown(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::UNKNOWN
    }

    fn learn(&self, supported: bool) {
        let v = if supported { Self::YES } else { Self::NO };
        // Only an unknown setting is learnt; an explicit one stays.
        let _ = self
            .0
            .compare_exchange(Self::UNKNOWN, v, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// A configured client for one endpoint and identity; cheap to clone.
#[derive(Clone, Debug)]
pub struct S3Connection {
    client: Client,
    domain: String,
    /// The endpoint as shown in messages ("AWS S3" for the default).
    endpoint: String,
    /// The base time of one request attempt.
    attempt: Duration,
    crc64: Arc<Crc64Support>,
    tagging: Arc<tagging::TaggingSupport>,
    conditional: Arc<conditional::Conditional>,
}

impl S3Connection {
    /// Resolves credentials, region and endpoint through the standard AWS
    /// chain with the given overrides.
    pub async fn connect(cfg: &S3Config) -> Result<Self> {
        if let Some(p) = &cfg.profile {
            check_profile(p).await?;
        }
        let mut loader = aws_config::defaults(BehaviorVersion::v2026_01_12());
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        if let Some(e) = &cfg.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        if let Some(r) = &cfg.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        let env_endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .ok()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|s| !s.is_empty());
        let endpoint = cfg
            .endpoint_url
            .clone()
            .or_else(|| sdk.endpoint_url().map(str::to_string))
            .or(env_endpoint);
        let custom_endpoint = endpoint.is_some();
        let attempt = cfg.request_timeout.unwrap_or(timeouts::DEFAULT_ATTEMPT);
        let checksum = match (cfg.checksum_policy, custom_endpoint) {
            (ChecksumPolicy::WhenSupported, _) | (ChecksumPolicy::Auto, false) => {
                RequestChecksumCalculation::WhenSupported
            }
            _ => RequestChecksumCalculation::WhenRequired,
        };
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.path_style)
            .request_checksum_calculation(checksum)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(timeouts::default_config(attempt));
        if sdk.region().is_none() {
            b = b.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(e) = &endpoint {
            b = b.endpoint_url(e);
        }
        let client = Client::from_conf(b.build());
        // Equal for the same endpoint and identity; the key id only as a
        // digest, so the domain can appear in debug output.
        let key_id = crate::checksum::md5_hex(std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default().as_bytes());
        let domain = format!(
            "s3|{}|{}|{}",
            endpoint.as_deref().unwrap_or("aws"),
            cfg.profile.as_deref().unwrap_or("-"),
            &key_id[..12]
        );
        Ok(S3Connection {
            client,
            domain,
            endpoint: endpoint.unwrap_or_else(|| "AWS S3".to_string()),
            attempt,
            crc64: Arc::new(Crc64Support::new(
                cfg.send_crc64nvme.or((!custom_endpoint).then_some(true)),
            )),
            tagging: Arc::default(),
            conditional: Arc::default(),
        })
    }

    /// A store for one bucket on this connection.
    pub fn bucket(&self, bucket: &str) -> S3Store {
        let mut caps = Capabilities::s3_like(bucket);
        caps.copy_domain = Some(self.domain.clone());
        if self.crc64.maybe() {
            caps.upload_checksums.push(ChecksumKind::Crc64Nvme);
        }
        S3Store {
            conn: self.clone(),
            bucket: bucket.to_string(),
            caps,
        }
    }
}

/// Fails early, with a clear message, on a profile that is not configured.
async fn check_profile(name: &str) -> Result<()> {
    use aws_types::os_shim_internal::{Env, Fs};
    let files = aws_runtime::env_config::file::EnvConfigFiles::default();
    let set = aws_config::profile::load(&Fs::real(), &Env::real(), &files, None)
        .await
        .map_err(|e| {
            StoreError::new(
                Op::Connect,
                "",
                ErrorKind::Credentials,
                format!("cannot read the AWS config files: {e}"),
            )
        })?;
    if set.get_profile(name).is_none() {
        let known: Vec<&str> = set.profiles().collect();
        return Err(StoreError::new(
            Op::Connect,
            "",
            ErrorKind::Credentials,
            format!(
                "unknown profile {name:?} (profiles in the AWS config files: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    Ok(())
}

/// The `mtime` user metadata haul writes (seconds since the epoch with
/// fractions, as rclone does).
pub fn format_mtime(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(_) => "0".into(),
    }
}

/// Parses `mtime` user metadata written by haul or rclone.
pub fn parse_mtime(s: &str) -> Option<SystemTime> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let secs: u64 = secs.parse().ok()?;
    let mut frac = frac.chars().take(9).collect::<String>();
    while frac.len() < 9 {
        frac.push('0');
    }
    let nanos: u32 = frac.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// One bucket on an S3 endpoint.
#[derive(Clone, Debug)]
pub struct S3Store {
    conn: S3Connection,
    bucket: String,
    caps: Capabilities,
}

fn to_system_time(t: Option<&aws_smithy_types::DateTime>) -> Option<SystemTime> {
    t.and_then(|d| SystemTime::try_from(*d).ok())
}

fn tagging(tags: &[(String, String)]) -> Option<String> {
    if tags.is_empty() {
        return None;
    }
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    Some(
        tags.iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, NON_ALPHANUMERIC),
                    utf8_percent_encode(v, NON_ALPHANUMERIC)
                )
            })
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// `bucket/key` for `x-amz-copy-source`, the key percent-encoded.
fn copy_source(src: &CopySource) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!("{}/{}", src.bucket, utf8_percent_encode(src.key.as_str(), KEEP))
}

fn range_header(r: &Range<u64>) -> String {
    format!("bytes={}-{}", r.start, r.end - 1)
}

/// Applies the write options common to PutObject, CreateMultipartUpload and CopyObject.
macro_rules! apply_put_options {
    ($req:expr, $opts:expr, $with_tags:expr) => {{
        let opts: &PutOptions = $opts;
        let mut req = $req;
        if let Some(ct) = &opts.content_type {
            req = req.content_type(ct);
        }
        for (k, v) in &opts.metadata {
            req = req.metadata(k, v);
        }
        if let Some(m) = opts.mtime {
            if !opts.metadata.contains_key("mtime") {
                req = req.metadata("mtime", format_mtime(m));
            }
        }
        if let Some(sc) = &opts.storage_class {
            req = req.storage_class(StorageClass::from(sc.as_str()));
        }
        match &opts.sse {
            Some(Sse::S3) => req = req.server_side_encryption(ServerSideEncryption::Aes256),
            Some(Sse::Kms { key_id }) => {
                req = req.server_side_encryption(ServerSideEncryption::AwsKms);
                if let Some(id) = key_id {
                    req = req.ssekms_key_id(id);
                }
            }
            None => {}
        }
        if $with_tags {
            if let Some(t) = tagging(&opts.tags) {
                req = req.tagging(t);
            }
        }
        req
    }};
}

impl S3Store {
    fn err<E>(
        &self,
        op: Op,
        key: &str,
        e: aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    ) -> StoreError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut e = map_sdk_error(op, key, &self.bucket, e);
        if e.is_unreachable() {
            e.message = format!("cannot reach {}: {}", self.conn.endpoint, e.message);
        }
        e
    }

    async fn send_create_multipart(
        &self,
        key: &Key,
        opts: &PutOptions,
        crc64: bool,
    ) -> Result<aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput> {
        let req = self
            .conn
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str());
        let req = if crc64 {
            req.checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                .checksum_type(ChecksumType::FullObject)
        } else {
            req
        };
        apply_put_options!(req, opts, true)
            .send()
            .await
            .map_err(|e| self.err(Op::CreateMultipart, key.as_str(), e))
    }

    /// Server-side work: a long attempt timeout, no stalled-stream check.
    fn no_stall(&self) -> aws_sdk_s3::config::Builder {
        timeouts::server_side(self.conn.attempt)
    }

    /// An upload of `bytes`: time to send it on top of the base.
    fn sending(&self, bytes: u64) -> aws_sdk_s3::config::Builder {
        timeouts::with_payload(self.conn.attempt, bytes)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn url(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    fn list(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
        struct St {
            token: Option<String>,
            first: bool,
            done: bool,
        }
        let this = self.clone();
        let st = St {
            token: None,
            first: true,
            done: false,
        };
        stream::try_unfold(st, move |mut st| {
            let this = this.clone();
            let req = req.clone();
            async move {
                if st.done || (!st.first && st.token.is_none()) {
                    return Ok(None);
                }
                let mut call = this.conn.client.list_objects_v2().bucket(&this.bucket);
                if !req.prefix.is_empty() {
                    call = call.prefix(req.prefix.as_str());
                }
                if let Some(d) = req.delimiter {
                    call = call.delimiter(d.to_string());
                }
                match &st.token {
                    Some(t) => call = call.continuation_token(t),
                    None => {
                        if let Some(s) = &req.range.start_after {
                            call = call.start_after(s.as_str());
                        }
                    }
                }
                let out = call
                    .send()
                    .await
                    .map_err(|e| this.err(Op::List, req.prefix.as_str(), e))?;
                st.first = false;
                st.token = out.next_continuation_token().map(str::to_string);
                if out.is_truncated() == Some(true) && st.token.is_none() {
                    return Err(StoreError::new(
                        Op::List,
                        req.prefix.as_str(),
                        ErrorKind::Transient,
                        "the server said the listing is truncated but gave no continuation token",
                    ));
                }
                let mut page: Vec<Result<ListEntry>> = Vec::new();
                for o in out.contents() {
                    let Some(k) = o.key() else { continue };
                    let key = match Key::prefix(k) {
                        Ok(key) => key,
                        // Reported, never dropped silently.
                        Err(e) => {
                            page.push(Err(StoreError { op: Op::List, ..e }));
                            continue;
                        }
                    };
                    page.push(Ok(ListEntry::Object(ObjectMeta {
                        key,
                        size: o.size().unwrap_or(0).max(0) as u64,
                        last_modified: to_system_time(o.last_modified()),
                        etag: o.e_tag().map(clean_etag),
                        storage_class: o.storage_class().map(|s| s.as_str().to_string()),
                        ..Default::default()
                    })));
                }
                for p in out.common_prefixes() {
                    if let Some(Ok(k)) = p.prefix().map(Key::prefix) {
                        page.push(Ok(ListEntry::Prefix(k)));
                    }
                }
                if req.delimiter.is_some() {
                    // Objects and prefixes come in two lists: merge them.
                    page.sort_by(|a, b| match (a, b) {
                        (Ok(a), Ok(b)) => a.key().as_str().as_bytes().cmp(b.key().as_str().as_bytes()),
                        _ => std::cmp::Ordering::Equal,
                    });
                }
                // Enforce the range end and the start (servers that ignore
                // StartAfter exist).
                let range = req.range.clone();
                let before = page.len();
                page.retain(|e| match e {
                    Ok(ListEntry::Object(o)) => range.contains(o.key.as_str()),
                    Ok(ListEntry::Unlisted(u)) => range.contains(u.key.as_str()),
                    Ok(ListEntry::Prefix(p)) => {
                        !range.prefix_past_end(p.as_str()) && !range.prefix_before_start(p.as_str())
                    }
                    Err(_) => true,
                });
                if let Some(end) = &range.end {
                    let past = out
                        .contents()
                        .last()
                        .and_then(|o| o.key())
                        .is_some_and(|k| k >= end.as_str());
                    if past
                        || page.len() < before
                            && out
                                .contents()
                                .iter()
                                .any(|o| o.key().is_some_and(|k| k >= end.as_str()))
                    {
                        st.done = true;
                    }
                }
                Ok(Some((stream::iter(page), st)))
            }
        })
        .map(|r: Result<_>| match r {
            Ok(s) => s.left_stream(),
            Err(e) => stream::iter(vec![Err(e)]).right_stream(),
        })
        .flatten()
        .boxed()
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let out = self
            .conn
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| self.err(Op::Head, key.as_str(), e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: to_system_time(out.last_modified()),
            etag: out.e_tag().map(clean_etag),
            storage_class: Some(
                out.storage_class()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|| "STANDARD".into()),
            ),
            checksums: Checksums {
                md5_hex: None,
                crc32c: out.checksum_crc32_c().map(str::to_string),
                crc64nvme: out.checksum_crc64_nvme().map(str::to_string),
                sha256: out.checksum_sha256().map(str::to_string),
            },
            parts_count: out.parts_count().map(|n| n as u32),
            content_type: out.content_type().map(str::to_string),
            metadata: out
                .metadata()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            sse: out.server_side_encryption().map(|s| s.as_str().to_string()),
            restore: out.restore().map(str::to_string),
        })
    }

    async fn head_part(&self, key: &Key, part_number: u32) -> Result<(u64, u32)> {
        let out = self
            .conn
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .part_number(part_number as i32)
            .send()
            .await
            .map_err(|e| self.err(Op::Head, key.as_str(), e))?;
        let size = out.content_length().unwrap_or(0).max(0) as u64;
        let parts = out
            .parts_count()
            .map(|n| n as u32)
            .or_else(|| out.e_tag().and_then(crate::checksum::etag_parts))
            .unwrap_or(1);
        Ok((size, parts))
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
        let mut call = self.conn.client.get_object().bucket(&self.bucket).key(key.as_str());
        if let Some(r) = &range {
            if r.start == r.end {
                // An empty range cannot be expressed in HTTP; S3 answers 416.
                let meta = self.head(key).await.map_err(|e| e.during(Op::Get))?;
                return Ok(GetResult {
                    meta,
                    range: r.clone(),
                    body: stream::empty().boxed(),
                });
            }
            call = call.range(range_header(r));
        }
        // Not with ChecksumMode=ENABLED: the SDK would then validate the
        // body against whatever checksum header comes back, and servers
        // send malformed ones (moto: a 4-byte "CRC64NVME" for multipart
        // objects). Checksums a server sends anyway are kept; the engine
        // asks HEAD (with ChecksumMode) when it needs them.
        let out = call.send().await.map_err(|e| self.err(Op::Get, key.as_str(), e))?;
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        let total = match out
            .content_range()
            .and_then(|cr| cr.rsplit_once('/'))
            .and_then(|(_, t)| t.parse::<u64>().ok())
        {
            Some(t) => t,
            None => len,
        };
        let start = range.as_ref().map_or(0, |r| r.start);
        // A server that ignores Range sends the whole object: never take
        // that for the part that was asked for.
        if let Some(r) = &range {
            let ranged = out
                .content_range()
                .is_some_and(|cr| cr.starts_with(&format!("bytes {}-", r.start)));
            let whole_asked = r.start == 0 && len == r.end;
            if !(ranged || whole_asked) {
                return Err(StoreError::new(
                    Op::Get,
                    key.as_str(),
                    ErrorKind::InvalidRequest,
                    format!(
                        "asked for bytes {}-{}, the server did not answer with that range",
                        r.start,
                        r.end - 1
                    ),
                ));
            }
        }
        let meta = ObjectMeta {
            key: key.clone(),
            size: total,
            last_modified: to_system_time(out.last_modified()),
            etag: out.e_tag().map(clean_etag),
            storage_class: out.storage_class().map(|s| s.as_str().to_string()),
            checksums: Checksums {
                md5_hex: None,
                crc32c: out.checksum_crc32_c().map(str::to_string),
                crc64nvme: out.checksum_crc64_nvme().map(str::to_string),
                sha256: out.checksum_sha256().map(str::to_string),
            },
            parts_count: out.parts_count().map(|n| n as u32),
            content_type: out.content_type().map(str::to_string),
            metadata: out.metadata().cloned().unwrap_or_default().into_iter().collect(),
            sse: out.server_side_encryption().map(|s| s.as_str().to_string()),
            restore: out.restore().map(str::to_string),
        };
        let k = key.as_str().to_string();
        let body = stream::try_unfold(out.body, move |mut b: SdkBody| {
            let k = k.clone();
            async move {
                match b.try_next().await {
                    Ok(Some(chunk)) => Ok(Some((chunk, b))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(StoreError::new(
                        Op::Get,
                        k,
                        ErrorKind::Transient,
                        format!("reading the body failed: {e}"),
                    )
                    .with_source(e)),
                }
            }
        })
        .boxed();
        Ok(GetResult {
            meta,
            range: start..start + len,
            body,
        })
    }

    async fn get_tags(&self, key: &Key) -> Result<Vec<(String, String)>> {
        if self.conn.tagging.missing() {
            return Err(StoreError::new(
                Op::GetTags,
                key.as_str(),
                ErrorKind::NotSupported,
                "the server does not support object tagging",
            )
            .with_code("NotImplemented"));
        }
        let out = self
            .conn
            .client
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| {
                let e = self.err(Op::GetTags, key.as_str(), e);
                self.conn.tagging.learn_from(&e);
                e
            })?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    async fn tagging_supported(&self) -> Result<bool> {
        // A key that cannot exist: the answer is about the API, not an object.
        let probe = format!(".haul-probe/tagging-{}", std::process::id());
        self.conn
            .tagging
            .get_or_probe(|| async {
                self.conn
                    .client
                    .get_object_tagging()
                    .bucket(&self.bucket)
                    .key(&probe)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.err(Op::GetTags, &probe, e))
            })
            .await
    }

    async fn put(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult> {
        // Without conditional writes on this server: a HEAD, then a plain PUT.
        let conditional = opts.if_none_match && !self.conn.conditional.missing();
        if opts.if_none_match && !conditional {
            conditional::absent(self, Op::Put, key).await?;
        }
        let resend = conditional.then(|| payload.clone());
        let crc64 = self.conn.crc64.on() && opts.checksums.crc64nvme.is_some();
        // A CRC64NVME this server is not known to check does not protect
        // the payload: an MD5 does (returned, for the caller's ETag check).
        let own_md5 = own_md5(Op::Put, key, &payload, &opts.checksums, crc64).await?;
        let len = payload.len() as u64;
        let md5 = opts.checksums.md5_hex.as_ref().or(own_md5.as_ref());
        let mut req = self
            .conn
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_length(payload.len() as i64)
            .body(SdkBody::from(payload));
        if let Some(b64) = md5.map(String::as_str).and_then(md5_hex_to_base64) {
            req = req.content_md5(b64);
        }
        if crc64 {
            if let Some(c) = &opts.checksums.crc64nvme {
                req = req.checksum_crc64_nvme(c);
            }
        }
        if conditional {
            req = req.if_none_match("*");
        }
        let req = apply_put_options!(req, opts, true);
        // With Content-MD5 or a CRC64NVME (signed, and checked by the
        // server) the payload need not be hashed again for the signature:
        // no SHA-256 pass on either side (what AWS's own tools do over TLS).
        let out = if md5.is_some() || crc64 {
            req.customize()
                .config_override(self.sending(len))
                .disable_payload_signing()
                .send()
                .await
        } else {
            req.customize().config_override(self.sending(len)).send().await
        }
        .map_err(|e| self.err(Op::Put, key.as_str(), e));
        let out = match (out, resend) {
            (Ok(out), _) => out,
            // NotImplemented: learnt; the next try is a HEAD and a plain PUT.
            (Err(e), Some(p)) if self.conn.conditional.learn_from(&self.conn.domain, &e) => {
                return self.put(key, p, opts).await
            }
            (Err(e), _) => return Err(e),
        };
        Ok(PutResult {
            etag: out.e_tag().map(clean_etag),
            checksums: Checksums {
                md5_hex: own_md5,
                crc64nvme: out.checksum_crc64_nvme().map(str::to_string),
                crc32c: out.checksum_crc32_c().map(str::to_string),
                ..Default::default()
            },
            sse: out.server_side_encryption().map(|s| s.as_str().to_string()),
        })
    }

    async fn create_multipart(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        let crc = opts.full_object_crc64 && self.conn.crc64.maybe();
        let out = match self.send_create_multipart(key, opts, crc).await {
            Ok(out) => out,
            // A server that does not know the algorithm may refuse it: learn
            // that, and create the upload without.
            Err(e) if crc && self.conn.crc64.unknown() && refuses_checksums(&e) => {
                tracing::info!(endpoint = %self.conn.domain, error = %e, "no CRC64NVME uploads: the server refused the algorithm");
                self.conn.crc64.learn(false);
                self.send_create_multipart(key, opts, false).await?
            }
            Err(e) => return Err(e),
        };
        if crc && self.conn.crc64.unknown() {
            // A server that takes the algorithm says so in its answer.
            let acked = out.checksum_algorithm() == Some(&ChecksumAlgorithm::Crc64Nvme);
            tracing::debug!(endpoint = %self.conn.domain, acked, "CRC64NVME uploads");
            self.conn.crc64.learn(acked);
        }
        let id = out.upload_id().ok_or_else(|| {
            StoreError::new(
                Op::CreateMultipart,
                key.as_str(),
                ErrorKind::Other,
                "the server returned no upload id",
            )
        })?;
        if opts.if_none_match {
            self.conn.conditional.remember(id);
        }
        Ok(MultipartId(id.to_string()))
    }

    async fn upload_part(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        let size = payload.len() as u64;
        let crc64 = sums.crc64nvme.as_ref().filter(|_| self.conn.crc64.on());
        let own_md5 = own_md5(Op::UploadPart, key, &payload, sums, crc64.is_some()).await?;
        let mut req = self
            .conn
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(&upload.0)
            .part_number(part_number as i32)
            .content_length(size as i64)
            .body(SdkBody::from(payload));
        let signed_md5 = sums
            .md5_hex
            .as_ref()
            .or(own_md5.as_ref())
            .and_then(|m| md5_hex_to_base64(m));
        if let Some(b64) = &signed_md5 {
            req = req.content_md5(b64);
        }
        if let Some(c) = crc64 {
            req = req.checksum_crc64_nvme(c);
        }
        // Content-MD5 or a CRC64NVME the server checks protects the payload:
        // no SHA-256 of it for the signature.
        let out = if signed_md5.is_some() || crc64.is_some() {
            req.customize()
                .config_override(self.sending(size))
                .disable_payload_signing()
                .send()
                .await
        } else {
            req.customize().config_override(self.sending(size)).send().await
        }
        .map_err(|e| self.err(Op::UploadPart, key.as_str(), e))?;
        let etag = out.e_tag().map(clean_etag).unwrap_or_default();
        Ok(CompletedPart {
            part_number,
            etag,
            size,
            checksums: Checksums {
                md5_hex: own_md5,
                // Only what the server confirms: the caller knows what it sent.
                crc64nvme: out.checksum_crc64_nvme().map(str::to_string),
                ..Default::default()
            },
            sse: out.server_side_encryption().map(|s| s.as_str().to_string()),
        })
    }

    async fn upload_part_stream(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        size: u64,
        body: crate::types::ByteStream,
    ) -> Result<CompletedPart> {
        self.upload_part_streamed(key, upload, part_number, size, body).await
    }

    async fn upload_part_copy(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        let mut req = self
            .conn
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(&upload.0)
            .part_number(part_number as i32)
            .copy_source(copy_source(src))
            .copy_source_range(range_header(&range));
        if let Some(m) = &src.if_match {
            req = req.copy_source_if_match(format!("\"{m}\""));
        }
        let out = req
            .customize()
            .config_override(self.no_stall())
            .send()
            .await
            .map_err(|e| self.err(Op::UploadPartCopy, key.as_str(), e))?;
        let etag = out
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .map(clean_etag)
            .unwrap_or_default();
        Ok(CompletedPart {
            part_number,
            etag,
            size: range.end - range.start,
            checksums: Checksums::default(),
            sse: out.server_side_encryption().map(|s| s.as_str().to_string()),
        })
    }

    async fn complete_multipart(&self, key: &Key, upload: &MultipartId, parts: &[CompletedPart]) -> Result<PutResult> {
        // Parts that carry CRC64NVMEs make a full-object CRC64NVME, sent for
        // the server to check against the one it combines.
        let part_crcs = parts
            .iter()
            .map(|p| p.checksums.full_crc64().map(|c| (c, p.size)))
            .collect::<Option<Vec<_>>>()
            .filter(|_| self.conn.crc64.on());
        let full_crc = part_crcs.and_then(crate::checksum::crc64_of_parts);
        let sdk_parts = parts
            .iter()
            .map(|p| {
                let b = SdkPart::builder()
                    .part_number(p.part_number as i32)
                    .e_tag(format!("\"{}\"", p.etag));
                match (&full_crc, &p.checksums.crc64nvme) {
                    (Some(_), Some(c)) => b.checksum_crc64_nvme(c),
                    _ => b,
                }
                .build()
            })
            .collect::<Vec<_>>();
        let wanted = self.conn.conditional.wanted(&upload.0);
        let conditional = wanted && !self.conn.conditional.missing();
        if wanted && !conditional {
            conditional::absent(self, Op::CompleteMultipart, key).await?;
        }
        let mut req = self
            .conn
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(&upload.0)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(sdk_parts)).build());
        if let Some(c) = full_crc {
            req = req
                .checksum_crc64_nvme(crate::checksum::crc64_to_b64(c))
                .checksum_type(ChecksumType::FullObject);
        }
        if conditional {
            req = req.if_none_match("*");
        }
        let res = req.customize().config_override(self.no_stall()).send().await;
        if res.is_ok() {
            self.conn.conditional.forget(&upload.0);
        }
        match res {
            Ok(out) => Ok(PutResult {
                etag: out.e_tag().map(clean_etag),
                checksums: Checksums {
                    crc64nvme: out.checksum_crc64_nvme().map(str::to_string),
                    ..Default::default()
                },
                sse: out.server_side_encryption().map(|s| s.as_str().to_string()),
            }),
            // Some servers answer 200 with a body the SDK cannot parse (moto
            // 5.2.1 names the root element CompleteMultipartUploadResponse).
            // The upload may have completed: HEAD tells, and the caller's
            // ETag check (MD5 of the part MD5s) decides whether it is ours.
            Err(aws_sdk_s3::error::SdkError::ServiceError(se))
                if se.raw().status().as_u16() == 200
                    && aws_sdk_s3::error::ProvideErrorMetadata::code(se.err()).is_none() =>
            {
                tracing::warn!(key = %key, "unreadable CompleteMultipartUpload answer; confirming with HEAD");
                let head = self.head(key).await.map_err(|e| e.during(Op::CompleteMultipart))?;
                Ok(PutResult {
                    etag: head.etag,
                    // The object's CRC64NVME, for the caller's check when the
                    // parts were checked by theirs.
                    checksums: Checksums {
                        crc64nvme: head.checksums.crc64nvme,
                        ..Default::default()
                    },
                    sse: head.sse,
                })
            }
            Err(e) => {
                let e = self.err(Op::CompleteMultipart, key.as_str(), e);
                if conditional && self.conn.conditional.learn_from(&self.conn.domain, &e) {
                    // Learnt: the next try is a HEAD and a plain complete.
                    return self.complete_multipart(key, upload, parts).await;
                }
                Err(e)
            }
        }
    }

    async fn abort_multipart(&self, key: &Key, upload: &MultipartId) -> Result<()> {
        self.conn.conditional.forget(&upload.0);
        match self
            .conn
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(&upload.0)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = self.err(Op::AbortMultipart, key.as_str(), e);
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn copy(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult> {
        let mut req = self
            .conn
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(dst.as_str())
            .copy_source(copy_source(src));
        if let Some(m) = &src.if_match {
            req = req.copy_source_if_match(format!("\"{m}\""));
        }
        let req = match opts.directive {
            MetadataDirective::Copy => {
                // Storage class and encryption are not metadata: they apply either way.
                let only = PutOptions {
                    storage_class: opts.put.storage_class.clone(),
                    sse: opts.put.sse.clone(),
                    ..Default::default()
                };
                apply_put_options!(
                    req.metadata_directive(SdkDirective::Copy)
                        .tagging_directive(TaggingDirective::Copy),
                    &only,
                    false
                )
            }
            MetadataDirective::Replace => {
                let r = apply_put_options!(req.metadata_directive(SdkDirective::Replace), &opts.put, false);
                match tagging(&opts.put.tags) {
                    Some(t) => r.tagging_directive(TaggingDirective::Replace).tagging(t),
                    None => r.tagging_directive(TaggingDirective::Copy),
                }
            }
        };
        let out = req
            .customize()
            .config_override(self.no_stall())
            .send()
            .await
            .map_err(|e| self.err(Op::Copy, dst.as_str(), e))?;
        Ok(PutResult {
            etag: out.copy_object_result().and_then(|r| r.e_tag()).map(clean_etag),
            checksums: Checksums::default(),
            sse: out.server_side_encryption().map(|s| s.as_str().to_string()),
        })
    }

    async fn restore(&self, key: &Key, days: u32, tier: &str) -> Result<()> {
        use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, Tier};
        let params = GlacierJobParameters::builder()
            .tier(Tier::from(tier))
            .build()
            .map_err(|e| StoreError::new(Op::Restore, key.as_str(), ErrorKind::InvalidRequest, e.to_string()))?;
        let req = RestoreRequest::builder()
            .days(days as i32)
            .glacier_job_parameters(params)
            .build();
        self.conn
            .client
            .restore_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .restore_request(req)
            .send()
            .await
            .map_err(|e| self.err(Op::Restore, key.as_str(), e))?;
        Ok(())
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<StoreError>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k.as_str()).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| StoreError::new(Op::Delete, "", ErrorKind::Other, e.to_string()))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| StoreError::new(Op::Delete, "", ErrorKind::Other, e.to_string()))?;
        let out = self
            .conn
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| self.err(Op::Delete, keys[0].as_str(), e))?;
        Ok(out
            .errors()
            .iter()
            .map(|e| {
                let code = e.code().unwrap_or("Error");
                let kind = error::kind_for(code, 0);
                StoreError::new(Op::Delete, e.key().unwrap_or(""), kind, e.message().unwrap_or(code)).with_code(code)
            })
            .collect())
    }
}

// Keep the stream adapters in scope for `try_unfold` above.
#[allow(unused_imports)]
use TryStreamExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a refusal of the checksum turns CRC64NVME uploads off for a
    /// connection; any other rejected create (storage class, tags, KMS key)
    /// is the request's own error.
    #[test]
    fn only_checksum_refusals_turn_crc64_off() {
        let e = |kind, msg: &str| StoreError::new(Op::CreateMultipart, "k", kind, msg.to_string());
        assert!(refuses_checksums(&e(ErrorKind::NotSupported, "NotImplemented (501)")));
        assert!(refuses_checksums(&e(
            ErrorKind::InvalidRequest,
            "InvalidArgument (400): Checksum algorithm CRC64NVME is not supported"
        )));
        assert!(!refuses_checksums(&e(
            ErrorKind::InvalidRequest,
            "InvalidStorageClass (400)"
        )));
        assert!(!refuses_checksums(&e(
            ErrorKind::InvalidRequest,
            "InvalidTag (400): bad tag"
        )));
        assert!(!refuses_checksums(&e(
            ErrorKind::PermissionDenied,
            "AccessDenied: checksum"
        )));
        let s = Crc64Support::new(None);
        assert!(s.maybe() && !s.on());
        s.learn(true);
        s.learn(false);
        assert!(s.on(), "learnt once");
        let off = Crc64Support::new(Some(false));
        off.learn(true);
        assert!(!off.maybe(), "an explicit setting is not overridden");
    }

    #[test]
    fn mtime_metadata_roundtrips_and_never_panics() {
        let t = UNIX_EPOCH + Duration::new(1_795_253_869, 510_095_294);
        assert_eq!(parse_mtime(&format_mtime(t)), Some(t));
        assert_eq!(
            parse_mtime("1700000000"),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            parse_mtime("1700000000.5"),
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000))
        );
        // Hostile or broken metadata: no panic, no time.
        assert_eq!(parse_mtime("18446744073709551615"), None);
        assert_eq!(parse_mtime("-1"), None);
        assert_eq!(parse_mtime("abc"), None);
        assert_eq!(parse_mtime("1.x"), None);
    }
}
