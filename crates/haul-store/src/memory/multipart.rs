//! Multipart uploads of a memory server: parts kept by number until the
//! upload completes (checked like S3: ETags, minimum part size,
//! `If-None-Match`), part copies including ranges of virtual objects.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use crate::checksum::{md5_hex, multipart_etag};
use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;

use super::{check_md5, lock, meta_for, MemoryStore, Stored};

#[derive(Debug, Default)]
pub(super) struct Upload {
    /// The bucket it belongs to (uploads are kept per server).
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) opts: PutOptions,
    /// Part number → (bytes, ETag, size; the bytes are empty for a range of a virtual object).
    pub(super) parts: BTreeMap<u32, (Bytes, String, u64)>,
}

impl MemoryStore {
    pub(super) fn create_upload(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        let id = format!("mem-{}", self.server.next_id.fetch_add(1, Ordering::Relaxed));
        lock(&self.server.uploads).insert(
            id.clone(),
            Upload {
                bucket: self.caps.bucket.clone(),
                key: key.as_str().to_string(),
                opts: opts.clone(),
                parts: BTreeMap::new(),
            },
        );
        Ok(MultipartId(id))
    }

    /// This bucket's uploads in progress under `prefix`, by key then id.
    pub(super) fn pending_uploads(&self, prefix: &Key) -> Vec<(Key, MultipartId)> {
        let mut found: Vec<(Key, MultipartId)> = lock(&self.server.uploads)
            .iter()
            .filter(|(_, u)| u.bucket == self.caps.bucket && u.key.starts_with(prefix.as_str()))
            .filter_map(|(id, u)| Some((Key::object(u.key.clone()).ok()?, MultipartId(id.clone()))))
            .collect();
        found.sort_by(|a, b| (a.0.as_str(), &a.1 .0).cmp(&(b.0.as_str(), &b.1 .0)));
        found
    }

    pub(super) fn upload_part_buffer(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        let mut etag = check_md5(Op::UploadPart, key.as_str(), &payload, sums.md5_hex.as_deref())?;
        let crc64nvme =
            crate::checksum::check_crc64(Op::UploadPart, key.as_str(), &payload, sums.crc64nvme.as_deref())?;
        let size = payload.len() as u64;
        let mut uploads = lock(&self.server.uploads);
        let u = uploads
            .get_mut(&upload.0)
            .ok_or_else(|| no_upload(Op::UploadPart, key))?;
        let kms = self.default_kms || matches!(u.opts.sse, Some(Sse::Kms { .. }));
        if kms {
            etag = Self::kms_etag(&etag);
        }
        u.parts.insert(part_number, (payload, etag.clone(), size));
        Ok(CompletedPart {
            part_number,
            etag,
            size,
            checksums: Checksums {
                crc64nvme,
                ..Default::default()
            },
            sse: Self::sse_of(kms),
        })
    }

    pub(super) fn copy_part(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        let bucket = self.find_bucket(&src.bucket)?;
        let data = {
            let map = lock(&bucket);
            let s = map
                .get(src.key.as_str())
                .ok_or_else(|| Self::not_found(Op::UploadPartCopy, src.key.as_str()))?;
            if let Some(size) = s.virtual_size {
                if range.end > size || range.start >= range.end {
                    return Err(StoreError::new(
                        Op::UploadPartCopy,
                        key.as_str(),
                        ErrorKind::InvalidRequest,
                        "copy range outside the source",
                    ));
                }
                drop(map);
                // A range of a virtual object: a size and a synthetic ETag.
                let etag = md5_hex(format!("virtual:{}:{}-{}", src.key, range.start, range.end).as_bytes());
                let len = range.end - range.start;
                let mut uploads = lock(&self.server.uploads);
                let u = uploads
                    .get_mut(&upload.0)
                    .ok_or_else(|| no_upload(Op::UploadPartCopy, key))?;
                u.parts.insert(part_number, (Bytes::new(), etag.clone(), len));
                return Ok(CompletedPart {
                    part_number,
                    etag,
                    size: len,
                    checksums: Checksums::default(),
                    sse: None,
                });
            }
            if range.end > s.data.len() as u64 || range.start >= range.end {
                return Err(StoreError::new(
                    Op::UploadPartCopy,
                    key.as_str(),
                    ErrorKind::InvalidRequest,
                    "copy range outside the source",
                ));
            }
            s.data.slice(range.start as usize..range.end as usize)
        };
        let sums = Checksums::md5(&md5_hex(&data));
        self.upload_part_buffer(key, upload, part_number, data, &sums)
    }

    pub(super) fn complete_upload(
        &self,
        key: &Key,
        upload: &MultipartId,
        parts: &[CompletedPart],
    ) -> Result<PutResult> {
        let u = lock(&self.server.uploads)
            .remove(&upload.0)
            .ok_or_else(|| no_upload(Op::CompleteMultipart, key))?;
        let mut buf = BytesMut::new();
        let mut sizes = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let (data, etag, size) = u.parts.get(&p.part_number).ok_or_else(|| {
                StoreError::new(
                    Op::CompleteMultipart,
                    key.as_str(),
                    ErrorKind::InvalidRequest,
                    "missing part",
                )
                .with_code("InvalidPart")
            })?;
            if *etag != p.etag {
                return Err(StoreError::new(
                    Op::CompleteMultipart,
                    key.as_str(),
                    ErrorKind::InvalidRequest,
                    "part ETag mismatch",
                )
                .with_code("InvalidPart"));
            }
            if i + 1 < parts.len() && *size < self.caps.min_part_size {
                return Err(StoreError::new(
                    Op::CompleteMultipart,
                    key.as_str(),
                    ErrorKind::InvalidRequest,
                    "part smaller than the minimum",
                )
                .with_code("EntityTooSmall"));
            }
            buf.extend_from_slice(data);
            sizes.push(*size);
        }
        if u.opts.if_none_match && lock(&self.objects).contains_key(u.key.as_str()) {
            return Err(StoreError::new(
                Op::CompleteMultipart,
                key.as_str(),
                ErrorKind::PreconditionFailed,
                "If-None-Match: the key exists",
            ));
        }
        let total: u64 = sizes.iter().sum();
        let virtual_size = (total != buf.len() as u64).then_some(total);
        let etag = multipart_etag(parts.iter().map(|p| p.etag.as_str())).unwrap_or_default();
        let data = buf.freeze();
        let kms = self.kms(&u.opts);
        let mut meta = meta_for(&u.key, &data, etag.clone(), &u.opts);
        meta.size = total;
        meta.sse = meta.sse.or(Self::sse_of(kms));
        meta.parts_count = Some(parts.len() as u32);
        if virtual_size.is_none() {
            meta.checksums.crc64nvme = self.crc64_of(&data);
        }
        let checksums = meta.checksums.clone();
        lock(&self.objects).insert(
            u.key.clone(),
            Stored {
                data,
                meta,
                tags: self.kept(&u.opts.tags),
                parts: sizes,
                virtual_size,
            },
        );
        Ok(PutResult {
            etag: Some(etag),
            checksums,
            sse: Self::sse_of(kms),
        })
    }
}

fn no_upload(op: Op, key: &Key) -> StoreError {
    StoreError::new(op, key.as_str(), ErrorKind::NotFound, "no such upload").with_code("NoSuchUpload")
}
