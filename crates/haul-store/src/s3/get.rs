//! Reading: HEAD (of the object or of one part), GET of the object or a
//! byte range, its tags, and a restore of an archived object.

use std::collections::BTreeMap;
use std::ops::Range;

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::ChecksumMode;
use futures::stream::{self, StreamExt};

use crate::checksum::clean_etag;
use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;
use crate::ObjectStore;

use super::{range_header, sse_kind, to_system_time, S3Store};

impl S3Store {
    pub(super) async fn head_object(&self, key: &Key) -> Result<ObjectMeta> {
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
            sse: out.server_side_encryption().map(sse_kind),
            restore: out.restore().map(str::to_string),
            version_id: out.version_id().map(str::to_string),
        })
    }

    pub(super) async fn head_object_part(&self, key: &Key, part_number: u32) -> Result<(u64, u32)> {
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

    pub(super) async fn get_object(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
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
        check_answered_range(key, range.as_ref(), out.content_range(), len)?;
        let meta = meta_of_get(key, &out, total);
        let body = body_stream(key, out.body);
        Ok(GetResult {
            meta,
            range: start..start + len,
            body,
        })
    }

    pub(super) async fn object_tags(&self, key: &Key) -> Result<Vec<(String, String)>> {
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

    pub(super) async fn probe_tagging(&self) -> Result<bool> {
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

    pub(super) async fn restore_object(&self, key: &Key, days: u32, tier: &str) -> Result<()> {
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
}

/// Refuses an answer that is not the range asked for: a server that ignores
/// Range sends the whole object, never to be taken for the part asked for.
pub(super) fn check_answered_range(
    key: &Key,
    range: Option<&Range<u64>>,
    content_range: Option<&str>,
    len: u64,
) -> Result<()> {
    let Some(r) = range else {
        return Ok(());
    };
    let ranged = content_range.is_some_and(|cr| cr.starts_with(&format!("bytes {}-", r.start)));
    let whole_asked = r.start == 0 && len == r.end;
    if ranged || whole_asked {
        return Ok(());
    }
    Err(StoreError::new(
        Op::Get,
        key.as_str(),
        ErrorKind::InvalidRequest,
        format!(
            "asked for bytes {}-{}, the server did not answer with that range",
            r.start,
            r.end - 1
        ),
    )
    .with_code("RangeMismatch"))
}

/// What a GET answer says about the object (`total`: its whole size).
pub(super) fn meta_of_get(key: &Key, out: &GetObjectOutput, total: u64) -> ObjectMeta {
    ObjectMeta {
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
        sse: out.server_side_encryption().map(sse_kind),
        restore: out.restore().map(str::to_string),
        version_id: out.version_id().map(str::to_string),
    }
}

/// The body as a stream of chunks; a failed read is transient (retried).
pub(super) fn body_stream(key: &Key, body: SdkBody) -> ByteStream {
    let k = key.as_str().to_string();
    stream::try_unfold(body, move |mut b: SdkBody| {
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
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer whose Content-Range is not the range asked for (a header
    /// damaged on the way) is refused, as worth sending again once the
    /// server has accepted a request.
    #[test]
    fn another_range_than_asked_is_refused_and_worth_sending_again(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let k = Key::object("k")?;
        check_answered_range(&k, Some(&(10..20)), Some("bytes 10-19/100"), 10)?;
        let e = check_answered_range(&k, Some(&(10..20)), Some("bytes 70-19/100"), 10)
            .err()
            .ok_or("another range was accepted")?;
        assert!(e.is_garbled_request(), "{e}");
        Ok(())
    }
}
