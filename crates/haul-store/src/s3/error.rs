//! Maps AWS SDK errors to [`StoreError`] kinds: what is retryable, what is
//! throttling, what the user must fix (credentials, access, missing bucket).

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_types::request_id::RequestId;

use crate::error::{ErrorKind, Op, StoreError};

/// The kind for an S3 error code and HTTP status.
pub(crate) fn kind_for(code: &str, status: u16) -> ErrorKind {
    match code {
        "NoSuchKey" | "NotFound" | "NoSuchUpload" => ErrorKind::NotFound,
        "NoSuchBucket" => ErrorKind::NoSuchBucket,
        "AccessDenied" | "AllAccessDisabled" | "AccountProblem" | "Forbidden" => ErrorKind::PermissionDenied,
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" => {
            ErrorKind::Credentials
        }
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequests"
        | "RequestThrottled" => ErrorKind::Throttled,
        "InternalError" | "ServiceUnavailable" | "RequestTimeout" | "RequestTimeTooSkewed" | "OperationAborted" => {
            ErrorKind::Transient
        }
        "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch" | "InvalidChecksum" => ErrorKind::Integrity,
        "PreconditionFailed" => ErrorKind::PreconditionFailed,
        "NotImplemented" => ErrorKind::NotSupported,
        _ => match status {
            404 => ErrorKind::NotFound,
            403 => ErrorKind::PermissionDenied,
            412 => ErrorKind::PreconditionFailed,
            429 | 503 => ErrorKind::Throttled,
            // Not implemented is an answer, not a hiccup: never retried.
            501 => ErrorKind::NotSupported,
            500..=599 | 408 => ErrorKind::Transient,
            400..=499 => ErrorKind::InvalidRequest,
            // Not an HTTP status (600 and up), or a redirect with no S3
            // error code (S3 names its redirects): a status line damaged
            // on the way ("200" with a bit flipped reads "600" or "300").
            300..=399 if code.is_empty() => ErrorKind::Transient,
            0..=99 | 600.. => ErrorKind::Transient,
            _ => ErrorKind::Other,
        },
    }
}

/// Converts an SDK error of any S3 operation.
pub fn map_sdk_error<E>(op: Op, key: &str, bucket: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let full = DisplayErrorContext(&err).to_string();
    tracing::trace!(error = ?err, "sdk error");
    match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().map(str::to_string);
            // garage answers a bad signature with `AccessDenied: Invalid
            // signature`: the same thing as AWS's SignatureDoesNotMatch;
            // and an access key it does not know with `AccessDenied: No
            // such key: GK…`: AWS's InvalidAccessKeyId.
            let code = match (code, se.err().message()) {
                (Some(c), Some(m)) if c == "AccessDenied" && m.to_ascii_lowercase().contains("invalid signature") => {
                    Some("SignatureDoesNotMatch".to_string())
                }
                (Some(c), Some(m)) if c == "AccessDenied" && m.contains("No such key: GK") => {
                    Some("InvalidAccessKeyId".to_string())
                }
                // A signed request read as anonymous: its Authorization
                // header damaged on the way (AWS: MissingSecurityHeader).
                (Some(c), Some(m)) if c == "AccessDenied" && m.contains("anonymous access") => {
                    Some("MissingSecurityHeader".to_string())
                }
                (c, _) => c,
            };
            let kind = match kind_for(code.as_deref().unwrap_or(""), status) {
                // An error answer without S3's XML document (no code): a
                // body garbled in transit as often as a real refusal — worth
                // sending again, within the retry budget.
                ErrorKind::InvalidRequest if code.is_none() => ErrorKind::Transient,
                // A success status the SDK could not read (a garbled header).
                _ if code.is_none() && status < 400 => ErrorKind::Transient,
                k => k,
            };
            let message = match (kind, se.err().message()) {
                (ErrorKind::NoSuchBucket, _) => format!("bucket {bucket:?} does not exist"),
                (ErrorKind::NotFound, _) if op == Op::Head || op == Op::Get => "no such key".to_string(),
                (ErrorKind::PermissionDenied, m) => {
                    format!("access denied{}", m.map(|m| format!(": {m}")).unwrap_or_default())
                }
                (ErrorKind::Credentials, m) => format!(
                    "the server rejected the credentials ({})",
                    m.or(code.as_deref()).unwrap_or("invalid credentials")
                ),
                (_, Some(m)) => format!("{} ({status}): {m}", code.as_deref().unwrap_or("error")),
                // A 4xx/5xx whose body is not S3's XML error document.
                (_, None) if code.is_none() && status < 400 => format!("unreadable answer (HTTP {status})"),
                (_, None) if code.is_none() => format!("unexpected response (HTTP {status})"),
                (_, None) => format!("{} (HTTP {status})", code.as_deref().unwrap_or("error")),
            };
            let message = match err.request_id() {
                Some(id) if !id.is_empty() => format!("{message} [request id {id}]"),
                _ => message,
            };
            let mut e = StoreError::new(op, key, kind, message);
            if let Some(c) = code {
                e = e.with_code(c);
            }
            e.with_source(err)
        }
        SdkError::TimeoutError(_) => {
            StoreError::new(op, key, ErrorKind::Transient, "request timed out").with_source(err)
        }
        SdkError::ResponseError(_) => {
            let message = format!("unreadable response: {}", causes(&err));
            StoreError::new(op, key, ErrorKind::Transient, message).with_source(err)
        }
        SdkError::DispatchFailure(df) => {
            if let Some(reason) = unreachable(&err) {
                // The endpoint is filled in by the store, which knows it.
                StoreError::new(op, key, ErrorKind::Transient, reason.message())
                    .with_code(reason.code())
                    .with_source(err)
            } else if !df.is_user() && !mentions_credentials(&full) {
                // I/O, timeouts, and answers the HTTP layer could not parse
                // (a garbled header: hyper's `Parse(Header(Token))`): the
                // request can be sent again.
                let message = format!(
                    "connection failed: {}",
                    df.as_connector_error()
                        .map(|c| causes(c))
                        .unwrap_or_else(|| causes(&err))
                );
                StoreError::new(op, key, ErrorKind::Transient, message).with_source(err)
            } else if mentions_credentials(&full) {
                credentials_error(op, key, &full).with_source(err)
            } else {
                StoreError::new(op, key, ErrorKind::Other, causes(&err)).with_source(err)
            }
        }
        _ => {
            if mentions_credentials(&full) {
                credentials_error(op, key, &full).with_source(err)
            } else {
                StoreError::new(op, key, ErrorKind::Other, causes(&err)).with_source(err)
            }
        }
    }
}

/// Why a request never reached a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreachable {
    Refused,
    Dns,
}

impl Unreachable {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Unreachable::Refused => "ConnectionRefused",
            Unreachable::Dns => "DnsFailure",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Unreachable::Refused => "connection refused",
            Unreachable::Dns => "the host name does not resolve",
        }
    }
}

/// A connection refused, or a host name that does not resolve: found in
/// the error's causes (an `io::Error` of kind `ConnectionRefused`, or
/// hyper's "dns error").
fn unreachable(err: &(dyn std::error::Error + 'static)) -> Option<Unreachable> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return Some(Unreachable::Refused);
            }
        }
        let text = e.to_string().to_ascii_lowercase();
        if text.starts_with("dns error") || text.contains("failed to lookup address") {
            return Some(Unreachable::Dns);
        }
        cur = e.source();
    }
    None
}

/// The error's causes, each one's `Display` once, innermost last: readable
/// text where the SDK's context (`DisplayErrorContext`) would print
/// `Debug` structures.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        let debris = s.contains('{') || s.contains("Some(") || s.is_empty();
        if !debris && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    if parts.is_empty() {
        "no further detail".into()
    } else {
        parts.join(": ")
    }
}

fn mentions_credentials(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    s.contains("credential") || s.contains("identity") || s.contains("providererror") || s.contains("failedtoloadtoken")
}

fn credentials_error(op: Op, key: &str, full: &str) -> StoreError {
    tracing::debug!(error = full, "credentials");
    StoreError::new(
        op,
        key,
        ErrorKind::Credentials,
        "no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, choose a profile with --profile (or AWS_PROFILE), or configure SSO or credential_process",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    fn refused(code: &str, message: &str) -> StoreError {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        let raw = HttpResponse::new(
            StatusCode::try_from(403).unwrap_or_else(|e| panic!("{e}")),
            SdkBody::empty(),
        );
        map_sdk_error(
            Op::Get,
            "k",
            "b",
            SdkError::service_error(GetObjectError::generic(meta), raw),
        )
    }

    /// A status line damaged on the way (a flipped bit turns 200 into 600
    /// or 300) is a hiccup worth sending again, not a refusal.
    #[test]
    fn a_status_that_no_server_sends_is_transient() {
        for status in [600, 999, 300, 304, 42] {
            assert_eq!(kind_for("", status), ErrorKind::Transient, "{status}");
        }
        assert_eq!(kind_for("PermanentRedirect", 301), ErrorKind::Other);
        assert_eq!(kind_for("", 400), ErrorKind::InvalidRequest);
    }

    /// garage's refusals of a damaged signature or access key id read as
    /// AWS's, worth sending again once the server accepted haul's requests;
    /// a real refusal does not.
    #[test]
    fn garage_refusals_of_a_damaged_request_read_as_garbled() {
        let e = refused("AccessDenied", "Forbidden: No such key: GK0123456789abcdef01234167");
        assert_eq!(e.code.as_deref(), Some("InvalidAccessKeyId"), "{e}");
        assert!(e.is_garbled_request(), "{e}");
        let e = refused("AccessDenied", "Forbidden: Invalid signature");
        assert!(e.is_garbled_request(), "{e}");
        let e = refused(
            "AccessDenied",
            "Forbidden: Garage does not support anonymous access yet",
        );
        assert_eq!(e.code.as_deref(), Some("MissingSecurityHeader"), "{e}");
        assert!(e.is_garbled_request(), "{e}");
        let e = refused("AccessDenied", "Forbidden: Operation is not allowed for this key.");
        assert!(!e.is_garbled_request(), "{e}");
    }
}
