//! Uploading a stream of unknown length (stdin).

use bytes::BytesMut;
use futures::stream::StreamExt;
use haul_store::checksum::multipart_etag;
use haul_store::{ChecksumKind, CompletedPart, DynStore, ErrorKind, Key, Op, StoreError};
use tokio::io::AsyncRead;

use super::body::{md5_of, read_up_to, sums_of};
use super::verify::check_part;
use super::writer::{joined, or_abort};
use super::{cancelled, err, Outcome, Result, Strategy, Transfer};
use crate::report::Observer;
use crate::tags::explicit_tags;

impl Transfer {
    /// Uploads a stream of unknown length (stdin) as one object: a single PUT
    /// when it ends before the threshold, multipart otherwise. Parts upload
    /// in background tasks while the next part is read; the part size
    /// doubles every 1,000 parts so any length up to 5 TiB fits.
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
            let verified = self.check_written(dst, key, &put, &res, Some(&md5), size).await?;
            return Ok(Outcome {
                strategy: Strategy::Single,
                verified,
                bytes: size,
                etag: res.etag,
                unverified: false,
            });
        }
        let part_size = |n: u32| base << (n / 1000).min(10);
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
        let upload = dst.create_multipart(key, &put).await?;
        obs.upload_started(key, &upload);
        // Part tasks run in the background; on an error or a cancel they are
        // stopped and joined before the upload is aborted, so no part can
        // land after the abort.
        let mut pending = futures::stream::FuturesOrdered::new();
        let mut stops: Vec<tokio::task::AbortHandle> = Vec::new();
        let run = async {
            let mut parts: Vec<(CompletedPart, String)> = Vec::new();
            let mut total = 0u64;
            let mut next = Some((first, first_permit));
            let mut n = 0u32;
            loop {
                let (data, permit) = match next.take() {
                    Some(d) => d,
                    None => {
                        let permit = self.budget.acquire(part_size(n)).await;
                        let d = read_up_to(&mut reader, part_size(n) as usize).await.map_err(read_err)?;
                        obs.bytes(d.len() as u64);
                        (d, permit)
                    }
                };
                if data.is_empty() {
                    break;
                }
                n += 1;
                if n > caps.max_parts {
                    return Err(err(
                        Op::UploadPart,
                        key,
                        ErrorKind::InvalidRequest,
                        "the stream is too long for one object",
                    ));
                }
                total += data.len() as u64;
                let (d, k, u, o) = (dst.clone(), key.clone(), upload.clone(), self.opts.put.clone());
                let task = tokio::spawn(async move {
                    let _permit = permit;
                    let md5 = md5_of(data.clone()).await;
                    let p = d
                        .upload_part(&k, &u, n, data, &haul_store::Checksums::md5(&md5))
                        .await?;
                    check_part(&d, &o, &k, &p, &md5)?;
                    Ok::<_, StoreError>((p, md5))
                });
                stops.push(task.abort_handle());
                pending.push_back(task);
                // At most `parts_per_object` parts in flight.
                while pending.len() >= self.opts.parts_per_object.max(1) {
                    if let Some(p) = pending.next().await {
                        parts.push(joined(p, key)?);
                    }
                }
            }
            while let Some(p) = pending.next().await {
                parts.push(joined(p, key)?);
            }
            Ok::<_, StoreError>((parts, total))
        };
        let res = tokio::select! {
            r = run => r,
            _ = self.cancel.cancelled() => Err(cancelled(key)),
        };
        if res.is_err() {
            for s in &stops {
                s.abort();
            }
            while pending.next().await.is_some() {}
        }
        let (parts, total) = or_abort(dst, key, &upload, res).await?;
        let expected = multipart_etag(parts.iter().map(|(_, m)| m.as_str())).unwrap_or_default();
        let parts: Vec<CompletedPart> = parts.into_iter().map(|(p, _)| p).collect();
        let done = dst.complete_multipart(key, &upload, &parts).await;
        let done = or_abort(dst, key, &upload, done).await?;
        let verified = self
            .check_written(dst, key, &put, &done, Some(&expected), total)
            .await?;
        Ok(Outcome {
            strategy: Strategy::Multipart {
                parts: parts.len() as u32,
            },
            verified,
            bytes: total,
            etag: done.etag,
            unverified: false,
        })
    }
}
