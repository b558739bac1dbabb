//! Multipart uploads: a directory `mpu-<id>` under `.haul-tmp` holding the
//! upload's options and one record per part; with a part-size hint the
//! parts are written in place into one `data` file, so completing costs a
//! rename, not a second copy.

use std::fs::{self, File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::stream::StreamExt;
use serde::{Deserialize, Serialize};

use crate::checksum::{md5_hex, multipart_etag};
use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;

use super::attrs::{attrs_from, Attrs};
use super::paths::check_key;
use super::{blocking, Inner, LocalStore};

impl LocalStore {
    pub(super) async fn create_upload(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        check_key(Op::CreateMultipart, key.as_str())?;
        let inner = self.inner.clone();
        let k = key.as_str().to_string();
        let state = UploadState {
            key: k.clone(),
            opts: opts.clone(),
        };
        blocking(Op::CreateMultipart, key.as_str(), move || {
            let op = Op::CreateMultipart;
            let id = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
            let dir = inner.tmp.new_upload_dir(&id).map_err(|e| StoreError::io(op, &k, e))?;
            let written = serde_json::to_vec(&state)
                .map_err(|e| StoreError::new(op, &k, ErrorKind::Other, e.to_string()))
                .and_then(|raw| fs::write(dir.join("upload.json"), raw).map_err(|e| StoreError::io(op, &k, e)));
            if let Err(e) = written {
                let _ = fs::remove_dir_all(&dir);
                inner.tmp.upload_ended(&id);
                return Err(e);
            }
            Ok(MultipartId(id))
        })
        .await
    }

    pub(super) async fn write_part_buffer(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        let inner = self.inner.clone();
        let k = key.as_str().to_string();
        let id = upload.clone();
        let given = sums.clone();
        blocking(Op::UploadPart, key.as_str(), move || {
            let op = Op::UploadPart;
            let (dir, state) = inner.part_target(&k, &id, part_number, payload.len() as u64)?;
            let mut kept = Checksums {
                crc64nvme: crate::checksum::check_crc64(op, &k, &payload, given.crc64nvme.as_deref())?,
                ..Default::default()
            };
            // Without an MD5 from the caller the part is hashed, and its MD5
            // returned as the ETag — unless the caller checks the object by
            // its CRC64NVME and gave its ETag (PutOptions::etag).
            let crc_only = given.md5_hex.is_none() && kept.crc64nvme.is_some() && state.opts.etag.is_some();
            if !crc_only {
                let got = md5_hex(&payload);
                if let Some(want) = given.md5_hex.as_deref().filter(|m| *m != got) {
                    return Err(StoreError::new(
                        op,
                        &k,
                        ErrorKind::Integrity,
                        format!("Content-MD5 {want} does not match the part ({got})"),
                    )
                    .with_code("BadDigest"));
                }
                kept.md5_hex = Some(got);
            }
            inner.write_part(&k, &dir, &state, part_number, &payload, &kept)?;
            Ok(CompletedPart {
                part_number,
                etag: kept.md5_hex.clone().unwrap_or_default(),
                size: payload.len() as u64,
                checksums: Checksums { md5_hex: None, ..kept },
                sse: None,
            })
        })
        .await
    }

    pub(super) async fn write_part_stream(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        size: u64,
        body: ByteStream,
    ) -> Result<CompletedPart> {
        let op = Op::UploadPart;
        let inner = self.inner.clone();
        let k = key.as_str().to_string();
        let id = upload.clone();
        // A writer thread takes the chunks as they arrive and hashes what it
        // writes; a few chunks in flight bound the memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let writer = tokio::task::spawn_blocking(move || inner.write_streamed_part(&k, &id, part_number, size, rx));
        let failed = feed_part(body, &tx, key, part_number, size).await;
        drop(tx);
        let written = writer
            .await
            .map_err(|e| StoreError::new(op, key.as_str(), ErrorKind::Other, format!("writer thread failed: {e}")));
        match (failed, written) {
            (Some(e), _) => Err(e),
            (None, r) => r?,
        }
    }

    pub(super) async fn copy_part(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        check_key(Op::UploadPartCopy, src.key.as_str())?;
        let path = Path::new(&src.bucket).join(src.key.as_str());
        let inner = self.inner.clone();
        let k = src.key.as_str().to_string();
        let data = blocking(Op::UploadPartCopy, &k.clone(), move || {
            inner.read_range(Op::UploadPartCopy, &k, &path, range)
        })
        .await?;
        let sums = Checksums::md5(&md5_hex(&data));
        self.write_part_buffer(key, upload, part_number, data, &sums)
            .await
            .map_err(|e| e.during(Op::UploadPartCopy))
    }

    pub(super) async fn complete_upload(
        &self,
        key: &Key,
        upload: &MultipartId,
        parts: &[CompletedPart],
    ) -> Result<PutResult> {
        let inner = self.inner.clone();
        let k = key.as_str().to_string();
        let id = upload.clone();
        let parts = parts.to_vec();
        let (etag, crc64nvme) = blocking(Op::CompleteMultipart, key.as_str(), move || {
            inner.complete(&k, &id, &parts)
        })
        .await?;
        Ok(PutResult {
            etag: Some(etag),
            checksums: Checksums {
                crc64nvme,
                ..Default::default()
            },
            sse: None,
        })
    }

    pub(super) async fn abort_upload(&self, key: &Key, upload: &MultipartId) -> Result<()> {
        let inner = self.inner.clone();
        let k = key.as_str().to_string();
        let id = upload.clone();
        blocking(Op::AbortMultipart, key.as_str(), move || {
            let r = match inner.upload_dir(Op::AbortMultipart, &k, &id) {
                Ok(dir) => fs::remove_dir_all(&dir).map_err(|e| StoreError::io(Op::AbortMultipart, &k, e)),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            };
            if r.is_ok() {
                inner.tmp.upload_ended(&id.0);
            }
            r
        })
        .await
    }
}

impl LocalStore {
    /// The uploads in `.haul-tmp` (this process's and others') whose key
    /// starts with `prefix`, by key then id. An upload whose state cannot
    /// be read (being created or removed right now) is not listed.
    pub(super) async fn list_uploads(&self, prefix: &Key) -> Result<Vec<(Key, MultipartId)>> {
        let inner = self.inner.clone();
        let p = prefix.as_str().to_string();
        blocking(Op::List, prefix.as_str(), move || {
            let rd = match fs::read_dir(inner.tmp_dir()) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(StoreError::io(Op::List, &p, e)),
            };
            let mut found = Vec::new();
            for ent in rd.flatten() {
                let name = ent.file_name();
                let Some(id) = name.to_str().and_then(|n| n.strip_prefix("mpu-")) else {
                    continue;
                };
                let Ok(state) = inner.load_upload(Op::List, &p, &ent.path()) else {
                    continue;
                };
                if state.key.starts_with(&p) {
                    found.push((Key::object(state.key)?, MultipartId(id.to_string())));
                }
            }
            found.sort_by(|a, b| (a.0.as_str(), &a.1 .0).cmp(&(b.0.as_str(), &b.1 .0)));
            Ok(found)
        })
        .await
    }
}

/// Multipart upload state, kept in `<tmp>/mpu-<id>/`.
#[derive(Debug, Serialize, Deserialize)]
struct UploadState {
    key: String,
    opts: PutOptions,
}

impl Inner {
    fn tmp_dir(&self) -> PathBuf {
        self.tmp.path().to_path_buf()
    }

    fn upload_dir(&self, op: Op, key: &str, id: &MultipartId) -> Result<PathBuf> {
        if id.0.is_empty() || !id.0.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::new(op, key, ErrorKind::NotFound, "no such upload").with_code("NoSuchUpload"));
        }
        let dir = self.tmp_dir().join(format!("mpu-{}", id.0));
        if !dir.is_dir() {
            return Err(StoreError::new(op, key, ErrorKind::NotFound, "no such upload").with_code("NoSuchUpload"));
        }
        Ok(dir)
    }

    fn load_upload(&self, op: Op, key: &str, dir: &Path) -> Result<UploadState> {
        let raw = fs::read(dir.join("upload.json")).map_err(|e| StoreError::io(op, key, e))?;
        serde_json::from_slice(&raw)
            .map_err(|e| StoreError::new(op, key, ErrorKind::Other, format!("corrupt upload state: {e}")))
    }

    /// The directory and state of the upload a part of `size` bytes goes
    /// to, after checking the part number and size.
    fn part_target(&self, key: &str, id: &MultipartId, part_number: u32, size: u64) -> Result<(PathBuf, UploadState)> {
        let op = Op::UploadPart;
        if part_number == 0 {
            return Err(StoreError::new(
                op,
                key,
                ErrorKind::InvalidRequest,
                "part numbers start at 1",
            ));
        }
        let dir = self.upload_dir(op, key, id)?;
        let state = self.load_upload(op, key, &dir)?;
        if state.opts.part_size.is_some_and(|ps| size > ps) {
            return Err(StoreError::new(
                op,
                key,
                ErrorKind::InvalidRequest,
                "part larger than the declared part size",
            ));
        }
        Ok((dir, state))
    }

    /// Writes part `n` and its record: `size md5 crc64` (`-` for a
    /// checksum not known).
    fn write_part(
        &self,
        key: &str,
        dir: &Path,
        state: &UploadState,
        n: u32,
        data: &[u8],
        sums: &Checksums,
    ) -> Result<()> {
        let io = |e| StoreError::io(Op::UploadPart, key, e);
        match state.opts.part_size {
            Some(ps) => {
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(dir.join("data"))
                    .map_err(io)?;
                f.write_all_at(data, (u64::from(n) - 1) * ps).map_err(io)?;
            }
            None => fs::write(dir.join(format!("p{n}.data")), data).map_err(io)?,
        }
        self.write_part_record(key, dir, n, data.len() as u64, sums)
    }

    fn write_part_record(&self, key: &str, dir: &Path, n: u32, size: u64, sums: &Checksums) -> Result<()> {
        let field = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let rec = format!("{size} {} {}", field(&sums.md5_hex), field(&sums.crc64nvme));
        fs::write(dir.join(format!("p{n}.md5")), rec).map_err(|e| StoreError::io(Op::UploadPart, key, e))
    }

    /// Assembles the parts; returns the ETag and the full-object CRC64NVME.
    fn complete(&self, key: &str, id: &MultipartId, parts: &[CompletedPart]) -> Result<(String, Option<String>)> {
        let op = Op::CompleteMultipart;
        let io = |e| StoreError::io(op, key, e);
        let dir = self.upload_dir(op, key, id)?;
        let state = self.load_upload(op, key, &dir)?;
        let invalid = |msg: String| StoreError::new(op, key, ErrorKind::InvalidRequest, msg).with_code("InvalidPart");
        let mut md5s = Vec::with_capacity(parts.len());
        let mut crcs = Vec::with_capacity(parts.len());
        let mut total = 0u64;
        for (i, p) in parts.iter().enumerate() {
            let rec = fs::read_to_string(dir.join(format!("p{}.md5", p.part_number)))
                .map_err(|_| invalid(format!("part {} was not uploaded", p.part_number)))?;
            let mut fields = rec.split(' ');
            let (Some(size), Some(md5), crc) = (fields.next(), fields.next(), fields.next()) else {
                return Err(invalid("corrupt part record".into()));
            };
            let size: u64 = size.parse().map_err(|_| invalid("corrupt part record".into()))?;
            let md5 = if md5 == "-" { "" } else { md5 };
            crcs.push(crc.and_then(crate::checksum::crc64_from_b64).map(|c| (c, size)));
            if md5 != p.etag {
                return Err(invalid(format!("part {} ETag does not match", p.part_number)));
            }
            if let Some(ps) = state.opts.part_size {
                let last = i + 1 == parts.len();
                if p.part_number as usize != i + 1 || (!last && size != ps) || size > ps {
                    return Err(invalid(format!(
                        "part {} does not fit the declared part size {ps}",
                        p.part_number
                    )));
                }
            }
            total += size;
            if !md5.is_empty() {
                md5s.push(md5.to_string());
            }
        }
        let etag = match (&state.opts.etag, md5s.len() == parts.len()) {
            (Some(given), _) => given.clone(),
            (None, true) => multipart_etag(md5s.iter().map(String::as_str)).unwrap_or_default(),
            (None, false) => return Err(invalid("parts without an MD5 need the object's ETag".into())),
        };
        let crc64 = crcs
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .and_then(crate::checksum::crc64_of_parts)
            .map(crate::checksum::crc64_to_b64);
        let data = dir.join("data");
        if state.opts.part_size.is_none() {
            let mut out = File::create(&data).map_err(io)?;
            for p in parts {
                let mut f = File::open(dir.join(format!("p{}.data", p.part_number))).map_err(io)?;
                std::io::copy(&mut f, &mut out).map_err(io)?;
            }
        } else if parts.is_empty() {
            File::create(&data).map_err(io)?;
        }
        let file = OpenOptions::new().write(true).open(&data).map_err(io)?;
        file.set_len(total).map_err(io)?;
        let attrs = Attrs {
            crc64nvme: crc64.clone(),
            ..attrs_from(&state.opts, etag.clone())
        };
        self.commit(op, key, &data, file, attrs, state.opts.mtime, state.opts.if_none_match)?;
        let _ = fs::remove_dir_all(&dir);
        self.tmp.upload_ended(&id.0);
        Ok((etag, crc64))
    }

    /// The writer thread of [`LocalStore::write_part_stream`]: writes the
    /// chunks of part `part_number` as they arrive, hashing what it writes,
    /// and records the part once exactly `size` bytes arrived.
    fn write_streamed_part(
        &self,
        k: &str,
        id: &MultipartId,
        part_number: u32,
        size: u64,
        mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> Result<CompletedPart> {
        let op = Op::UploadPart;
        let (dir, state) = self.part_target(k, id, part_number, size)?;
        let io = |e| StoreError::io(op, k, e);
        let (path, start) = match state.opts.part_size {
            Some(ps) => (dir.join("data"), (u64::from(part_number) - 1) * ps),
            None => (dir.join(format!("p{part_number}.data")), 0),
        };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // On a local disk, whole blocks bypass the page cache.
        let mut out = crate::direct::RangeWriter::open(&path, file, start, self.inline, &self.buffers);
        let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
        let mut md5 = state.opts.etag.is_none().then(<md5::Md5 as md5::Digest>::new);
        while let Some(chunk) = rx.blocking_recv() {
            out.write(&chunk).map_err(io)?;
            crc.update(&chunk);
            if let Some(h) = md5.as_mut() {
                md5::Digest::update(h, &chunk);
            }
        }
        let arrived = out.offset() - start;
        if arrived != size {
            // The body ended early; the caller reports why.
            return Err(StoreError::new(
                op,
                k,
                ErrorKind::PreconditionFailed,
                format!("part {part_number}: {arrived} bytes arrived, {size} expected"),
            ));
        }
        out.finish().map_err(io)?;
        // Flushing each part as it completes, in parallel with the
        // parts still arriving, leaves little for the fsync before the
        // rename at the end (which otherwise waits for the whole file).
        if self.durable {
            out.sync_data().map_err(io)?;
        }
        let kept = Checksums {
            md5_hex: md5.map(|h| hex::encode(md5::Digest::finalize(h))),
            crc64nvme: Some(crate::checksum::crc64_to_b64(crc.finalize())),
            ..Default::default()
        };
        self.write_part_record(k, &dir, part_number, size, &kept)?;
        Ok(CompletedPart {
            part_number,
            etag: kept.md5_hex.clone().unwrap_or_default(),
            size,
            checksums: Checksums { md5_hex: None, ..kept },
            sse: None,
        })
    }
}

/// Sends the chunks of `body` to the part's writer; the body's error, or
/// one for a body longer than `size`, if any. A writer that stopped (its
/// own error is reported) ends the feed.
async fn feed_part(
    mut body: ByteStream,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
    key: &Key,
    part_number: u32,
    size: u64,
) -> Option<StoreError> {
    let mut sent = 0u64;
    let mut failed = None;
    while let Some(next) = body.next().await {
        match next {
            Ok(chunk) => {
                sent += chunk.len() as u64;
                if sent > size {
                    failed = Some(StoreError::new(
                        Op::Get,
                        key.as_str(),
                        ErrorKind::PreconditionFailed,
                        format!("part {part_number}: more than the {size} bytes expected arrived"),
                    ));
                    break;
                }
                if tx.send(chunk).await.is_err() {
                    break; // The writer failed: its error is reported.
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    failed
}
