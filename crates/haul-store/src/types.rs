//! Plain data exchanged with stores: object metadata, listing requests,
//! put/copy options, capabilities. No SDK types appear here.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::key::{Key, KeyRange};

/// A stream of body chunks.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// Checksums of an object or part, base64 of the big-endian digest as S3
/// sends them in `x-amz-checksum-*` (MD5 as hex, like an ETag).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub md5_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub crc32c: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub crc64nvme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
}

impl Checksums {
    /// Only an MD5 (as hex); an empty string gives no checksum at all.
    pub fn md5(hex: &str) -> Self {
        Checksums {
            md5_hex: (!hex.is_empty()).then(|| hex.to_string()),
            ..Default::default()
        }
    }

    /// The full-object CRC64NVME, when there is one (not a composite `…-N`).
    pub fn full_crc64(&self) -> Option<u64> {
        self.crc64nvme.as_deref().and_then(crate::checksum::crc64_from_b64)
    }

    pub fn is_empty(&self) -> bool {
        self.md5_hex.is_none() && self.crc32c.is_none() && self.crc64nvme.is_none() && self.sha256.is_none()
    }
}

/// What a store knows about one object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub key: Key,
    pub size: u64,
    #[serde(with = "opt_rfc3339", default)]
    pub last_modified: Option<SystemTime>,
    /// The ETag without quotes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub storage_class: Option<String>,
    #[serde(skip_serializing_if = "Checksums::is_empty", default)]
    pub checksums: Checksums,
    /// Number of parts for multipart objects, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub parts_count: Option<u32>,
    /// Filled by `head`/`get`, not by listings.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`), filled by `head`/`get`, not by listings.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub metadata: BTreeMap<String, String>,
    /// Server-side encryption in effect, from `head`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sse: Option<SseKind>,
    /// The restore state of an archived object (`x-amz-restore`), from `head`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub restore: Option<String>,
    /// The version this is of the object, when known: an inventory row of
    /// a versioned bucket, or `x-amz-version-id` on a HEAD or GET. A plain
    /// listing (ListObjectsV2) gives none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version_id: Option<String>,
}

impl ObjectMeta {
    /// Whether the object is in an archive tier that needs a restore to be read.
    pub fn is_archived(&self) -> bool {
        matches!(self.storage_class.as_deref(), Some("GLACIER" | "DEEP_ARCHIVE"))
    }

    /// A restore was requested and is still running.
    pub fn restore_in_progress(&self) -> bool {
        self.restore
            .as_deref()
            .is_some_and(|r| r.contains("ongoing-request=\"true\""))
    }

    /// A restored copy is available.
    pub fn restored(&self) -> bool {
        self.restore
            .as_deref()
            .is_some_and(|r| r.contains("ongoing-request=\"false\""))
    }
}

impl ObjectMeta {
    /// The number of parts encoded in a multipart ETag (`…-N`).
    pub fn etag_parts(&self) -> Option<u32> {
        self.etag.as_deref().and_then(crate::checksum::etag_parts)
    }
}

/// One entry of a listing. Objects are by far the common case, so they are
/// not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListEntry {
    Object(ObjectMeta),
    /// A common prefix (only with a delimiter).
    Prefix(Key),
    /// An entry that cannot be an object (a local directory's dangling
    /// link, socket or non-UTF-8 name): reported and skipped by the
    /// caller, never a reason to stop the listing.
    Unlisted(Unlisted),
}

impl ListEntry {
    /// The entry's key (an unlisted entry's name that is not UTF-8, lossily).
    pub fn key(&self) -> &Key {
        match self {
            ListEntry::Object(o) => &o.key,
            ListEntry::Prefix(p) => p,
            ListEntry::Unlisted(u) => &u.key,
        }
    }
}

/// Why a listing entry is not an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A symbolic link that is dangling, loops, or leads to something that
    /// is not a regular file (links to folders are not followed).
    Symlink,
    /// A socket, FIFO or device.
    SpecialFile,
    /// A name that is not valid UTF-8 (shown lossily).
    InvalidName,
    /// A key ending in `/` (an S3 folder marker) where the destination
    /// cannot hold one (a local directory: the folder is implied).
    FolderMarker,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Symlink => "symlink",
            SkipReason::SpecialFile => "special_file",
            SkipReason::InvalidName => "invalid_name",
            SkipReason::FolderMarker => "folder_marker",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A listing entry that is not an object, with why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlisted {
    /// The key it would have (lossy for a name that is not UTF-8).
    pub key: Key,
    pub reason: SkipReason,
    /// A human explanation ("a dangling symbolic link").
    pub detail: String,
}

/// A listing request: keys starting with `prefix`, inside `range`, in
/// lexicographic (byte) order.
#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    pub prefix: Key,
    pub range: KeyRange,
    /// Group keys by this delimiter into common prefixes (only `/` is
    /// guaranteed to be supported by every backend).
    pub delimiter: Option<char>,
    /// Keys the caller will drop anyway (`--exclude`): a store that has to
    /// look at an entry to list it (a local directory: a stat, a link's
    /// target) skips these before touching them. A hint: the caller still
    /// filters, and stores that get entries for free ignore it.
    pub skip: Option<SkipKeys>,
}

/// A predicate over full keys: true for keys not to list ([`ListRequest::skip`]).
#[derive(Clone)]
pub struct SkipKeys(pub std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl SkipKeys {
    pub fn skips(&self, key: &str) -> bool {
        (self.0)(key)
    }
}

impl std::fmt::Debug for SkipKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SkipKeys(..)")
    }
}

impl ListRequest {
    pub fn prefix(prefix: Key) -> Self {
        ListRequest {
            prefix,
            ..Default::default()
        }
    }
}

/// Server-side encryption to request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS with an optional key id (the bucket's default key otherwise).
    Kms { key_id: Option<String> },
}

/// Server-side encryption an object has, as the server reports it
/// (`x-amz-server-side-encryption`), parsed once by the backend.
/// Serialized as the header's value (`AES256`, `aws:kms`, …), so state
/// files and local attributes written before keep their meaning.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SseKind {
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS (`aws:kms`): ETags are not the MD5 of the content.
    Kms,
    /// Any other value a server reports (`aws:kms:dsse`, …), as it said it.
    Other(String),
}

impl SseKind {
    /// The header value `x-amz-server-side-encryption` has for this kind.
    pub fn as_str(&self) -> &str {
        match self {
            SseKind::S3 => "AES256",
            SseKind::Kms => "aws:kms",
            SseKind::Other(s) => s,
        }
    }

    /// Parses a header value.
    pub fn parse(s: &str) -> Self {
        match s {
            "AES256" => SseKind::S3,
            "aws:kms" => SseKind::Kms,
            other => SseKind::Other(other.to_string()),
        }
    }
}

impl From<&Sse> for SseKind {
    /// The encryption a write requested with `sse` ends up with.
    fn from(sse: &Sse) -> Self {
        match sse {
            Sse::S3 => SseKind::S3,
            Sse::Kms { .. } => SseKind::Kms,
        }
    }
}

impl std::fmt::Display for SseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SseKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SseKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(|s| SseKind::parse(&s))
    }
}

/// Options applied when an object is written (put, multipart, copy with REPLACE).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub storage_class: Option<String>,
    pub sse: Option<Sse>,
    /// Object tags (key, value).
    pub tags: Vec<(String, String)>,
    /// Checksums of the whole payload, computed by the caller, sent as headers
    /// so the server can check them (Content-MD5, `x-amz-checksum-*`).
    pub checksums: Checksums,
    /// For multipart uploads: the size of every part but the last, when the
    /// caller knows it. Lets a filesystem backend write parts in place.
    pub part_size: Option<u64>,
    /// For multipart uploads: every part carries its CRC64NVME and the
    /// object gets a full-object CRC64NVME (S3 `ChecksumType=FULL_OBJECT`),
    /// which readers can verify a download against cheaply (a fraction of
    /// an MD5's cost: docs/BENCHMARKS.md, "Notes from the code").
    #[serde(default)]
    pub full_object_crc64: bool,
    /// The ETag the content is known to have: a copy that the caller checks
    /// against its source's full-object checksum before completing it. A
    /// store that keeps ETags itself (a local directory) records this one
    /// and need not MD5 parts sent with only a CRC64NVME.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etag: Option<String>,
    /// The modification time to keep (local files keep it as their mtime;
    /// S3 keeps it as `mtime` user metadata, rclone-compatible).
    #[serde(with = "opt_rfc3339", default)]
    pub mtime: Option<SystemTime>,
    /// Write only if no object has this key (`If-None-Match: *` on a PUT
    /// and on CompleteMultipartUpload; a local store links the new file in
    /// without replacing). A store answers `PreconditionFailed` when the key
    /// exists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub if_none_match: bool,
}

/// How a copy treats the source's metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataDirective {
    /// Keep content-type, user metadata and tags of the source.
    #[default]
    Copy,
    /// Use the ones in [`PutOptions`].
    Replace,
}

/// A source object for a server-side copy: a bucket of the same server
/// domain (see [`Capabilities::copy_domain`]) and a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySource {
    pub bucket: String,
    pub key: Key,
    /// Only copy if the source still has this ETag.
    pub if_match: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    pub directive: MetadataDirective,
    /// Used with `Replace` (content-type, metadata, tags), and always for
    /// storage class and encryption.
    pub put: PutOptions,
}

/// The result of a write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResult {
    pub etag: Option<String>,
    /// Checksums the server returned; `md5_hex` only when the store computed
    /// an MD5 itself and sent it as Content-MD5 (the server checked it).
    pub checksums: Checksums,
    /// Server-side encryption the server applied (SSE-KMS means the ETag
    /// is not an MD5), when it says.
    pub sse: Option<SseKind>,
}

/// An upload id of a multipart upload: serializable, so an upload can be
/// resumed or aborted by another process.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MultipartId(pub String);

/// A finished part, as needed to complete the upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
    /// As in [`PutResult::checksums`].
    #[serde(default)]
    pub checksums: Checksums,
    /// Server-side encryption applied to the part (SSE-KMS: the ETag is not an MD5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<SseKind>,
}

/// A body being read.
pub struct GetResult {
    /// Metadata of the object (content-type and user metadata included).
    pub meta: ObjectMeta,
    /// The byte range returned.
    pub range: Range<u64>,
    pub body: ByteStream,
}

impl std::fmt::Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// Checksum algorithms a store can check on upload or return on read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChecksumKind {
    Md5,
    Crc32c,
    Crc64Nvme,
    Sha256,
}

/// What a store can do: the engine reads these to pick a strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The name of the bucket (or root) this store writes to.
    pub bucket: String,
    /// Stores with the same domain can copy from each other server-side
    /// (same endpoint and credentials). `None`: no server-side copy.
    pub copy_domain: Option<String>,
    /// UploadPartCopy (copy byte ranges into a multipart upload).
    pub part_copy: bool,
    /// Largest single CopyObject.
    pub max_copy_size: u64,
    /// Largest single PUT.
    pub max_put_size: u64,
    /// Smallest part (but the last) of a multipart upload.
    pub min_part_size: u64,
    pub max_parts: u32,
    /// Checksums the store verifies on upload when given.
    pub upload_checksums: Vec<ChecksumKind>,
    /// Whether ETags are MD5s of the content (false with SSE-KMS/SSE-C).
    pub etag_is_md5: bool,
    /// Object tags are kept.
    pub tags: bool,
    /// A copy that keeps the source's metadata carries its tags from and to
    /// this store. False for a local directory: it keeps tags given with
    /// `--tag`, but a file's tags are not read for a copy, nor an object's
    /// written onto a file.
    pub carries_tags: bool,
    /// Keys may contain empty segments (`a//b`) or end with `/`. Without
    /// it, folder markers (keys ending in `/`) cannot be written: the
    /// planner skips them, a folder being implied.
    pub any_key: bool,
    /// The store computes the MD5 of what it writes and returns it as the
    /// ETag (of the object, or of each part), and checks a Content-MD5 it
    /// is given itself: the engine sends no sums of its own and makes no
    /// second pass over the data (a local directory).
    pub hashes_writes: bool,
    /// [`ObjectStore::upload_part_stream`](crate::ObjectStore::upload_part_stream)
    /// sends or writes a part as its chunks arrive: a copy holds no
    /// part-sized buffer. A local directory writes in place and hashes what
    /// it writes; S3 sends the part unsigned, and the caller checks the
    /// part's ETag against the MD5 of what it streamed.
    pub streams_parts: bool,
    /// Objects are files that other programs may write while haul reads
    /// them: a copy from this store checks that the source's size and
    /// mtime are still those listed before it commits.
    pub source_may_change: bool,
    /// Reads come from a local disk: cheap (verify recomputes a local
    /// file's ETag in the other side's form rather than comparing metadata
    /// only), and with no transfer on the way that could damage them (a
    /// copy read from here is not reported unverified for lack of a
    /// checksum to compare the read with).
    pub local_reads: bool,
    /// An object's modification time is its file's mtime, which the store
    /// reports (as `mtime` user metadata and `last_modified`) and sets from
    /// [`PutOptions::mtime`]. A copy from or into such a store keeps the
    /// modification time; into it, the `mtime` metadata is not stored a
    /// second time.
    pub keeps_mtime: bool,
    /// The root directory of a local store, for checks that are about
    /// paths (the CLI refuses a copy between two local trees that overlap).
    /// Never a stand-in for what the store can do: that is said by the
    /// fields above.
    pub local_root: Option<std::path::PathBuf>,
}

impl Capabilities {
    /// What a local directory can do (rooted at `root`): files written in
    /// place and hashed as they are written, read from a local disk, with
    /// their mtimes; tags only when given explicitly; no folder markers.
    pub fn local_dir(root: &std::path::Path) -> Self {
        Capabilities {
            copy_domain: None,
            max_copy_size: u64::MAX,
            max_put_size: u64::MAX,
            min_part_size: 1,
            upload_checksums: vec![ChecksumKind::Md5],
            carries_tags: false,
            any_key: false,
            hashes_writes: true,
            streams_parts: true,
            source_may_change: true,
            local_reads: true,
            keeps_mtime: true,
            local_root: Some(root.to_path_buf()),
            ..Capabilities::s3_like(root.display().to_string())
        }
    }

    /// Defaults that hold for S3.
    pub fn s3_like(bucket: impl Into<String>) -> Self {
        Capabilities {
            bucket: bucket.into(),
            copy_domain: None,
            part_copy: true,
            max_copy_size: 5 * 1024 * 1024 * 1024,
            max_put_size: 5 * 1024 * 1024 * 1024,
            min_part_size: 5 * 1024 * 1024,
            max_parts: 10_000,
            upload_checksums: vec![ChecksumKind::Md5],
            etag_is_md5: true,
            tags: true,
            carries_tags: true,
            any_key: true,
            hashes_writes: false,
            streams_parts: true,
            source_may_change: false,
            local_reads: false,
            keeps_mtime: false,
            local_root: None,
        }
    }
}

/// Serde helper: optional `SystemTime` as RFC 3339.
pub(crate) mod opt_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_nanos(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|s| humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_kind_is_parsed_once_and_kept_as_the_header_value() -> serde_json::Result<()> {
        let cases = [
            ("AES256", SseKind::S3),
            ("aws:kms", SseKind::Kms),
            ("aws:kms:dsse", SseKind::Other("aws:kms:dsse".into())),
        ];
        for (header, kind) in cases {
            assert_eq!(SseKind::parse(header), kind);
            assert_eq!(kind.as_str(), header);
            // State files and local attributes keep the header's value.
            let json = serde_json::to_string(&kind)?;
            assert_eq!(json, format!("\"{header}\""));
            let back: SseKind = serde_json::from_str(&json)?;
            assert_eq!(back, kind);
        }
        let part: CompletedPart = serde_json::from_str(r#"{"part_number":1,"etag":"e","size":1,"sse":"aws:kms"}"#)?;
        assert_eq!(part.sse, Some(SseKind::Kms));
        assert_eq!(SseKind::from(&Sse::Kms { key_id: None }), SseKind::Kms);
        assert_eq!(SseKind::from(&Sse::S3), SseKind::S3);
        Ok(())
    }
}
