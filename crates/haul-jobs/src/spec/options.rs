//! The option groups jobs share: how to reach a side, how bytes move, what
//! new objects carry, which keys take part. Each is one TOML table
//! (`[sync.transfer]`, `[sync.dst_conn]`, …); every field has the CLI's
//! default, so a job file names only what differs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::values::{Dur, Size};

/// How to reach one side's S3 endpoint. Never holds secrets: credentials
/// come from the standard AWS chain (environment, profiles, SSO, instance
/// roles), selected by `profile`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnSpec {
    /// AWS profile (shared config and credentials files).
    pub profile: Option<String>,
    /// A custom S3 endpoint (S3-compatible servers); else AWS_ENDPOINT_URL(_S3) or AWS.
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`).
    pub path_style: bool,
    /// When the SDK adds request checksums.
    pub request_checksums: RequestChecksums,
    /// Send CRC64NVMEs with uploads (default: on for AWS; learnt on custom endpoints).
    pub crc64nvme: Option<bool>,
    /// Most requests in flight to the endpoint (lowered automatically on throttling).
    pub max_requests: usize,
    /// Attempts per request for retryable errors.
    pub retries: usize,
    /// How long one attempt may wait for its answer (default 30s; uploads get
    /// their sending time on top, server-side copies 30 minutes).
    pub request_timeout: Option<Dur>,
}

impl Default for ConnSpec {
    fn default() -> Self {
        ConnSpec {
            profile: None,
            endpoint_url: None,
            region: None,
            path_style: false,
            request_checksums: RequestChecksums::Auto,
            crc64nvme: None,
            max_requests: 128,
            retries: 10,
            request_timeout: None,
        }
    }
}

/// `request_checksums`: auto = only when required for custom endpoints
/// (S3-compatible servers), when supported for AWS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestChecksums {
    #[default]
    Auto,
    WhenRequired,
    WhenSupported,
}

/// How bytes move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferSpec {
    /// Objects in flight.
    pub concurrency: usize,
    /// Part size of multipart transfers (5MiB to 5GiB).
    pub part_size: Size,
    /// Objects of this size or more move in parts.
    pub multipart_threshold: Size,
    /// Parts of one object in flight.
    pub parts_per_object: usize,
    /// Most bytes held in memory by all transfers together.
    pub max_buffer: Size,
}

impl Default for TransferSpec {
    fn default() -> Self {
        TransferSpec {
            concurrency: 64,
            part_size: Size(16 * Size::MIB),
            multipart_threshold: Size(16 * Size::MIB),
            parts_per_object: 8,
            max_buffer: Size(256 * Size::MIB),
        }
    }
}

/// Server-side encryption of new objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SseSpec {
    /// SSE-S3.
    #[serde(rename = "AES256")]
    Aes256,
    /// SSE-KMS (with `sse_kms_key_id`, or the bucket's default key).
    #[serde(rename = "aws:kms")]
    Kms,
}

/// What new objects carry (cp, sync, watch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectSpec {
    /// STANDARD, STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR, ...
    pub storage_class: Option<String>,
    pub sse: Option<SseSpec>,
    pub sse_kms_key_id: Option<String>,
    /// User metadata (cp, sync: added to the source's unless the directive is REPLACE).
    pub metadata: BTreeMap<String, String>,
    /// Tags (cp, sync: replace the source's).
    pub tags: BTreeMap<String, String>,
    /// Content-Type (default: the source's, else guessed from the extension).
    pub content_type: Option<String>,
}

/// COPY keeps the source's content-type, metadata and tags; REPLACE uses only the ones given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Directive {
    #[default]
    Copy,
    Replace,
}

/// How cp and sync write (beyond what the objects carry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteSpec {
    pub metadata_directive: Directive,
    /// Never copy server-side.
    pub no_server_side: bool,
    /// Keep the source's ETag (multipart objects copied with its part layout).
    pub preserve_etag: bool,
    /// Fail objects whose tags cannot be carried (a server without tagging).
    pub require_tags: bool,
    /// Fail objects whose source bytes cannot be checked.
    pub require_verified: bool,
    /// Exit 1 when listing entries were skipped as not objects.
    pub strict: bool,
}

/// Which keys (relative to the source) take part: globs, `*` within a
/// folder, `**` across folders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterSpec {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl FilterSpec {
    pub fn build(&self) -> Result<haul_engine::Filter, crate::JobError> {
        haul_engine::Filter::new(&self.include, &self.exclude).map_err(|e| crate::JobError::Invalid(e.to_string()))
    }
}
