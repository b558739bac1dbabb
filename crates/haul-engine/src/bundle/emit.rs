//! The archive's byte stream on its way to the destination: bytes are
//! appended in archive order, cut into parts of `part_size` and handed to
//! a [`MultipartWriter`] as they fill — no temporary file, memory bounded
//! by the parts in flight. The CRC64NVME of everything written is combined
//! as it passes (members' CRCs are computed once, when they are read).
//!
//! The upload is created with the first full part: an archive smaller
//! than one part is written with one PUT instead.

use bytes::{Bytes, BytesMut};
use haul_store::checksum::{crc64, crc64_combine, crc64_to_b64, md5_hex};
use haul_store::{ChecksumKind, Checksums, DynStore, ErrorKind, Key, Op, PutOptions, StoreError};

use crate::budget::ByteBudget;
use crate::transfer::{Limits, MultipartWriter, PartChecks};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Parts of one archive uploading at once (plus the one filling).
pub(super) const ARCHIVE_PARTS_IN_FLIGHT: usize = 2;

/// An archive being written.
pub(super) struct Emitter {
    dst: DynStore,
    key: Key,
    put: PutOptions,
    checks: PartChecks,
    limits: Limits,
    part_size: u64,
    writer: Option<MultipartWriter<'static>>,
    pending: BytesMut,
    offset: u64,
    crc: Option<u64>,
}

/// What was written.
#[derive(Debug, Clone)]
pub(super) struct Emitted {
    pub(super) bytes: u64,
    pub(super) crc: u64,
    pub(super) parts: u32,
}

impl Emitter {
    /// An archive at `key` in `dst`, written with `put`, parts of
    /// `part_size` (within the transfer's part slots and cancel; part
    /// buffers are paid for from a budget of their own, so they never wait
    /// on members still held by the read window).
    pub(super) fn new(dst: &DynStore, key: Key, mut put: PutOptions, part_size: u64, limits: Limits) -> Self {
        let caps = dst.capabilities();
        let part_size = part_size.max(caps.min_part_size).max(1);
        put.full_object_crc64 = caps.upload_checksums.contains(&ChecksumKind::Crc64Nvme);
        put.part_size = Some(part_size);
        let dst_local = caps.hashes_writes;
        let checks = PartChecks {
            dst_hashes: dst_local,
            dst_checks_crc: !dst_local && put.full_object_crc64,
            crc64: true,
            whole_md5: false,
        };
        // Archives are written several at once: each keeps few parts in
        // flight so a run's memory stays small (parts × part size × archives).
        let per_object = limits.parts_per_object.clamp(1, ARCHIVE_PARTS_IN_FLIGHT);
        let limits = Limits {
            budget: ByteBudget::new(part_size.saturating_mul(per_object as u64 + 1)),
            ..limits
        };
        Emitter {
            dst: dst.clone(),
            key,
            put,
            checks,
            limits,
            part_size,
            writer: None,
            pending: BytesMut::new(),
            offset: 0,
            crc: None,
        }
    }

    /// The archive's key.
    pub(super) fn key(&self) -> &Key {
        &self.key
    }

    /// The offset the next byte lands at.
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends `data`, whose CRC64NVME is `crc` when known.
    pub(super) async fn write(&mut self, data: &[u8], crc: Option<u64>) -> Result<()> {
        let crc = crc.unwrap_or_else(|| crc64(data));
        self.crc = Some(match self.crc {
            None => crc,
            Some(a) => crc64_combine(a, crc, data.len() as u64),
        });
        self.offset += data.len() as u64;
        self.pending.extend_from_slice(data);
        while self.pending.len() as u64 >= self.part_size {
            let part = self.pending.split_to(self.part_size as usize).freeze();
            self.send(part).await?;
        }
        Ok(())
    }

    async fn send(&mut self, part: Bytes) -> Result<()> {
        if self.writer.is_none() {
            let w = MultipartWriter::create(&self.dst, &self.key, self.put.clone(), self.checks, self.limits.clone())
                .await?;
            self.writer = Some(w);
        }
        if let Some(w) = self.writer.as_mut() {
            let permit = w.reserve(part.len() as u64).await?;
            w.put_part(part, permit).await?;
        }
        Ok(())
    }

    /// Runs `fut` while the parts in flight progress.
    pub(super) async fn drive<T>(&mut self, fut: impl std::future::Future<Output = T>) -> Result<T> {
        match self.writer.as_mut() {
            Some(w) => w.drive(fut).await,
            None => Ok(fut.await),
        }
    }

    /// Sends what is left and completes the archive (one PUT when it never
    /// filled a part).
    pub(super) async fn finish(mut self) -> Result<Emitted> {
        let rest = std::mem::take(&mut self.pending).freeze();
        let crc = self.crc.unwrap_or(0);
        match self.writer.take() {
            None => {
                let mut put = self.put.clone();
                put.part_size = None;
                put.checksums = Checksums {
                    md5_hex: Some(md5_hex(&rest)),
                    crc64nvme: put.full_object_crc64.then(|| crc64_to_b64(crc)),
                    ..Default::default()
                };
                put.full_object_crc64 = false;
                self.dst.put(&self.key, rest, &put).await?;
                Ok(Emitted {
                    bytes: self.offset,
                    crc,
                    parts: 1,
                })
            }
            Some(mut w) => {
                if !rest.is_empty() {
                    let permit = w.reserve(rest.len() as u64).await?;
                    w.put_part(rest, permit).await?;
                }
                let done = w.finish().await?;
                if done.bytes != self.offset {
                    return Err(StoreError::new(
                        Op::CompleteMultipart,
                        self.key.as_str(),
                        ErrorKind::Integrity,
                        format!("{} bytes sent in parts, {} written", done.bytes, self.offset),
                    ));
                }
                Ok(Emitted {
                    bytes: self.offset,
                    crc,
                    parts: done.parts,
                })
            }
        }
    }

    /// Stops: an upload in progress is aborted.
    pub(super) async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            w.abort().await;
        }
    }
}
