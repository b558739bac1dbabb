//! How to reach one S3 endpoint: the configuration of a side, and the
//! connection (one SDK client per endpoint and identity) that buckets share
//! with what is learnt about the server.

use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::types::*;

use super::crc::Crc64Support;
use super::{conditional, tagging, timeouts, S3Store};

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

/// A configured client for one endpoint and identity; cheap to clone.
#[derive(Clone, Debug)]
pub struct S3Connection {
    pub(super) client: Client,
    pub(super) domain: String,
    /// The endpoint as shown in messages ("AWS S3" for the default).
    pub(super) endpoint: String,
    /// The base time of one request attempt.
    pub(super) attempt: Duration,
    pub(super) crc64: Arc<Crc64Support>,
    pub(super) tagging: Arc<tagging::TaggingSupport>,
    pub(super) conditional: Arc<conditional::Conditional>,
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
