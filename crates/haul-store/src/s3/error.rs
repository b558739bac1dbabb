//! Maps AWS SDK errors to [`StoreError`] kinds: what is retryable, what is
//! throttling, what the user must fix (credentials, access, missing bucket).

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

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
            500..=599 | 408 => ErrorKind::Transient,
            400..=499 => ErrorKind::InvalidRequest,
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
            let kind = kind_for(code.as_deref().unwrap_or(""), status);
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
                (_, None) if code.is_none() => format!("unexpected response (HTTP {status}): {}", short(&full)),
                (_, None) => format!("{} (HTTP {status})", code.as_deref().unwrap_or("error")),
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
            StoreError::new(op, key, ErrorKind::Transient, format!("bad response: {full}")).with_source(err)
        }
        SdkError::DispatchFailure(df) => {
            if df.is_io() || df.is_timeout() {
                let message = format!("connection failed: {}", short(&full));
                StoreError::new(op, key, ErrorKind::Transient, message).with_source(err)
            } else if mentions_credentials(&full) {
                credentials_error(op, key, &full).with_source(err)
            } else {
                StoreError::new(op, key, ErrorKind::Other, short(&full)).with_source(err)
            }
        }
        _ => {
            if mentions_credentials(&full) {
                credentials_error(op, key, &full).with_source(err)
            } else {
                StoreError::new(op, key, ErrorKind::Other, short(&full)).with_source(err)
            }
        }
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

/// The SDK's context chain repeats itself; keep the most specific part.
fn short(full: &str) -> String {
    let parts: Vec<&str> = full.split(": ").collect();
    let tail = parts.iter().rev().take(2).rev().cloned().collect::<Vec<_>>().join(": ");
    tail.chars().take(300).collect()
}
