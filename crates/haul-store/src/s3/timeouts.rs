//! How long one attempt of a request may take before it is abandoned and
//! retried: a dead connection must never hold a request slot forever.
//!
//! * every request: `--request-timeout` (30 s) to its answer;
//! * a request with a payload: that plus the time to send it at a floor of
//!   1 MiB/s (a 16 MiB part: 46 s; 5 GiB: 1 h 25 min);
//! * server-side work (CopyObject, UploadPartCopy, CompleteMultipartUpload),
//!   silent while the server copies: a long ceiling, 30 minutes, with
//!   stalled-stream protection off (the answer may not start for minutes).
//!
//! Bodies being read are guarded by the SDK's stalled-stream protection (a
//! body that delivers nothing for its grace period fails, and the retry
//! layer resumes it where it stopped). A timed-out attempt is `Transient`:
//! retried like a reset connection.

use std::time::Duration;

use aws_sdk_s3::config::{Builder, StalledStreamProtectionConfig};
use aws_smithy_types::timeout::TimeoutConfig;

/// Connecting to the endpoint.
pub(crate) const CONNECT: Duration = Duration::from_secs(10);
/// The default base time for one attempt.
pub(crate) const DEFAULT_ATTEMPT: Duration = Duration::from_secs(30);
/// Server-side copies and completions.
pub(crate) const SERVER_SIDE: Duration = Duration::from_secs(30 * 60);
/// The slowest upload speed tolerated.
const FLOOR_BYTES_PER_SEC: u64 = 1024 * 1024;

/// The connection's default: every attempt within `base`.
pub(crate) fn default_config(base: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT)
        .operation_attempt_timeout(base)
        .build()
}

fn attempt(d: Duration) -> Builder {
    Builder::new().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT)
            .operation_attempt_timeout(d)
            .build(),
    )
}

/// An upload of `bytes`: the base plus its sending time at the floor speed.
pub(crate) fn with_payload(base: Duration, bytes: u64) -> Builder {
    attempt(base + Duration::from_secs(bytes / FLOOR_BYTES_PER_SEC))
}

/// Work the server does before answering (copies, completion).
pub(crate) fn server_side(base: Duration) -> Builder {
    attempt(SERVER_SIDE.max(base)).stalled_stream_protection(StalledStreamProtectionConfig::disabled())
}
