//! Uploading a stream of unknown length (stdin).

use bytes::BytesMut;
use haul_store::{ChecksumKind, DynStore, Key, Op, StoreError};
use tokio::io::AsyncRead;

use super::body::{read_up_to, sums_of};
use super::verify::check_written;
use super::writer::PartChecks;
use super::{Outcome, Result, Strategy, Transfer};
use crate::report::Observer;
use crate::tags::explicit_tags;

impl Transfer {
    /// Uploads a stream of unknown length (stdin) as one object: a single PUT
    /// when it ends before the threshold, multipart otherwise. Parts upload
    /// (through a [`super::MultipartWriter`]) while the next part is read.
    pub async fn upload_stream<R: AsyncRead + Unpin + Send>(
        &self,
        mut reader: R,
        dst: &DynStore,
        key: &Key,
        obs: &dyn Observer,
    ) -> Result<Outcome> {
        let read_err = |e: std::io::Error| StoreError::io(Op::Get, "-", e);
        let mut put = self.dest_options_for_new(key);
        put.tags = explicit_tags(&self.opts, dst, key).await?;
        let caps = dst.capabilities();
        let threshold = self.opts.multipart_threshold.clamp(1, caps.max_put_size);
        let base = self.opts.part_size.max(caps.min_part_size);
        // Every buffer is paid for from the byte budget *before* it is
        // filled: the first one may become the first part.
        let first_permit = self.budget.acquire(threshold.max(base)).await;
        let mut first = read_up_to(&mut reader, threshold as usize).await.map_err(read_err)?;
        obs.bytes(first.len() as u64);
        if (first.len() as u64) < threshold {
            let size = first.len() as u64;
            let crc64 = caps.upload_checksums.contains(&ChecksumKind::Crc64Nvme);
            put.checksums = sums_of(first.clone(), true, crc64).await;
            let md5 = put.checksums.md5_hex.clone().unwrap_or_default();
            let res = dst.put(key, first, &put).await?;
            let verified = check_written(dst, key, &put, &res, Some(&md5), size).await?;
            return Ok(Outcome {
                strategy: Strategy::Single,
                verified,
                bytes: size,
                etag: res.etag,
                unverified: false,
            });
        }
        // The part size doubles every tenth of the destination's part
        // limit (every 1,000 parts on S3) so any length up to 5 TiB fits;
        // a longer stream fails clearly at the limit, its upload aborted.
        let step = (caps.max_parts / 10).max(1);
        let cap = caps.max_put_size.max(base);
        let part_size = move |n: u32| (base << (n / step).min(10)).min(cap);
        // The first part must be a whole part (S3 refuses small non-last parts).
        if (first.len() as u64) < base {
            let more = read_up_to(&mut reader, (base - first.len() as u64) as usize)
                .await
                .map_err(read_err)?;
            obs.bytes(more.len() as u64);
            let mut b = BytesMut::from(&first[..]);
            b.extend_from_slice(&more);
            first = b.freeze();
        }
        // Every part's CRC64NVME, combined, is checked against the
        // destination's full-object one when it keeps one; every part's MD5
        // against its ETag, and the multipart ETag after completion.
        put.full_object_crc64 = caps.upload_checksums.contains(&ChecksumKind::Crc64Nvme);
        let checks = PartChecks {
            crc64: put.full_object_crc64,
            ..Default::default()
        };
        let mut w = self.multipart_writer(dst, key, put, checks).await?;
        obs.upload_started(key, w.upload_id());
        w.put_part(first, first_permit).await?;
        loop {
            let size = part_size(w.parts());
            let permit = w.reserve(size).await?;
            let data = w.drive(read_up_to(&mut reader, size as usize)).await?.map_err(read_err);
            let data = match data {
                Ok(d) => d,
                Err(e) => {
                    w.abort().await;
                    return Err(e);
                }
            };
            obs.bytes(data.len() as u64);
            if data.is_empty() {
                break;
            }
            w.put_part(data, permit).await?;
        }
        let done = w.finish().await?;
        Ok(Outcome {
            strategy: Strategy::Multipart { parts: done.parts },
            verified: done.verified,
            bytes: done.bytes,
            etag: done.result.etag,
            unverified: false,
        })
    }
}
