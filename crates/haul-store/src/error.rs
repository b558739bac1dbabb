//! One error type for every store operation, carrying the operation, the key
//! and a kind the engine matches on (retry? report? abort the run?).

use std::fmt;

/// The store operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Validate,
    Connect,
    List,
    Head,
    Get,
    GetTags,
    Put,
    CreateMultipart,
    UploadPart,
    UploadPartCopy,
    CompleteMultipart,
    AbortMultipart,
    Copy,
    Delete,
    Verify,
    Restore,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Validate => "validate",
            Op::Connect => "connect",
            Op::List => "list",
            Op::Head => "head",
            Op::Get => "get",
            Op::GetTags => "get-tags",
            Op::Put => "put",
            Op::CreateMultipart => "create-multipart",
            Op::UploadPart => "upload-part",
            Op::UploadPartCopy => "upload-part-copy",
            Op::CompleteMultipart => "complete-multipart",
            Op::AbortMultipart => "abort-multipart",
            Op::Copy => "copy",
            Op::Delete => "delete",
            Op::Verify => "verify",
            Op::Restore => "restore",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, as far as the caller needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The bucket (or local root directory) does not exist.
    NoSuchBucket,
    /// Access denied by the server or the filesystem.
    PermissionDenied,
    /// No usable credentials, or an unknown profile.
    Credentials,
    /// 503 SlowDown and friends: retry later, with less concurrency.
    Throttled,
    /// 5xx, timeouts, connection resets: retry.
    Transient,
    /// The key cannot be used with this backend.
    InvalidKey,
    /// A request the server rejected as malformed (4xx other than the above).
    InvalidRequest,
    /// Data did not match its checksum / ETag.
    Integrity,
    /// The destination filesystem is full.
    NoSpace,
    /// The backend cannot do this operation.
    NotSupported,
    /// A conditional request failed (the object changed).
    PreconditionFailed,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// A short stable code for reports.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::NoSuchBucket => "NoSuchBucket",
            ErrorKind::PermissionDenied => "AccessDenied",
            ErrorKind::Credentials => "Credentials",
            ErrorKind::Throttled => "SlowDown",
            ErrorKind::Transient => "Transient",
            ErrorKind::InvalidKey => "InvalidKey",
            ErrorKind::InvalidRequest => "InvalidRequest",
            ErrorKind::Integrity => "ChecksumMismatch",
            ErrorKind::NoSpace => "NoSpace",
            ErrorKind::NotSupported => "NotSupported",
            ErrorKind::PreconditionFailed => "PreconditionFailed",
            ErrorKind::Other => "Error",
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a store operation on one key.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {message}", display_key(.key))]
pub struct StoreError {
    pub op: Op,
    pub key: String,
    pub kind: ErrorKind,
    /// The server's error code (e.g. `SlowDown`, `NoSuchKey`) when there is one.
    pub code: Option<String>,
    pub message: String,
    #[source]
    pub source: Option<BoxError>,
}

fn display_key(key: &str) -> String {
    if key.is_empty() {
        "(root)".to_string()
    } else {
        format!("{key:?}")
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    pub fn new(op: Op, key: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            op,
            key: key.into(),
            kind,
            code: None,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Re-labels the error with another operation (e.g. a `get` done as part of a `copy`).
    pub fn during(mut self, op: Op) -> Self {
        self.op = op;
        self
    }

    /// Builds an error from an I/O error, choosing the kind from its `ErrorKind`.
    pub fn io(op: Op, key: impl Into<String>, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::PermissionDenied | K::ReadOnlyFilesystem => ErrorKind::PermissionDenied,
            K::StorageFull | K::QuotaExceeded => ErrorKind::NoSpace,
            K::Interrupted | K::TimedOut | K::ConnectionReset | K::ConnectionAborted => ErrorKind::Transient,
            K::InvalidInput | K::InvalidFilename | K::NotADirectory | K::IsADirectory => ErrorKind::InvalidKey,
            _ => ErrorKind::Other,
        };
        let message = match kind {
            ErrorKind::NoSpace => "no space left on device".to_string(),
            ErrorKind::PermissionDenied => format!("permission denied ({err})"),
            _ => err.to_string(),
        };
        StoreError::new(op, key, kind, message).with_source(err)
    }

    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Throttled | ErrorKind::Transient)
    }

    /// The server refused a write because its payload did not match the
    /// checksum sent with it (`BadDigest`, `InvalidDigest`, ...): the bytes
    /// were damaged on the way. Sending the same payload again, still held
    /// in memory, is the cure.
    pub fn is_checksum_refusal(&self) -> bool {
        self.kind == ErrorKind::Integrity
            && matches!(
                self.code.as_deref(),
                Some("BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch" | "InvalidChecksum")
            )
    }

    /// The server refused the request as malformed in a way haul never
    /// sends — an Authorization header it cannot parse, a header that is
    /// not text, XML it cannot read — or as badly signed: once the server
    /// has accepted haul's requests, that is a request garbled on the way,
    /// worth sending again. So are an access key the server does not know
    /// (`InvalidAccessKeyId`: the one it accepted, damaged), a signed
    /// request taken for an anonymous one (`MissingSecurityHeader`: its
    /// Authorization header damaged) and an answer
    /// whose Content-Range is not the range asked for (`RangeMismatch`): a
    /// header damaged on the way.
    pub fn is_garbled_request(&self) -> bool {
        match self.code.as_deref() {
            Some(
                "RangeMismatch"
                | "InvalidAccessKeyId"
                | "MissingSecurityHeader"
                | "SignatureDoesNotMatch"
                | "AuthorizationHeaderMalformed"
                | "InvalidHeaderValue"
                | "MalformedXML"
                | "IncompleteBody",
            ) => true,
            // garage's catch-all for requests it cannot parse.
            Some("InvalidRequest") => self.message.contains("Bad request") || self.message.contains("Invalid UTF-8"),
            _ => false,
        }
    }

    /// The request never reached a server: connection refused, or a host
    /// name that does not resolve (`code` `ConnectionRefused` /
    /// `DnsFailure`). Retryable once a server has answered (it may be
    /// restarting), not before: a wrong endpoint fails at once.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.code.as_deref(), Some("ConnectionRefused" | "DnsFailure"))
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// The code used in reports: the server's code, or one derived from the kind.
    pub fn report_code(&self) -> &str {
        self.code.as_deref().unwrap_or(self.kind.code())
    }
}
