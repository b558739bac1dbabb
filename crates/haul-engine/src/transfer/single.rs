//! One GET, one PUT.

use bytes::Bytes;
use haul_store::{ChecksumKind, Checksums, DynStore, ErrorKind, Key, ObjectMeta, Op, PutOptions, PutResult};

use super::body::{collect, md5_of, sums_of};
use super::verify::{check_written, source_md5};
use super::{err, Outcome, Result, Strategy, Transfer, Verified};
use crate::integrity::{self, check_unchanged};
use crate::report::Observer;

/// What the data read was checked against at the source, before writing.
struct SourceRead {
    /// `SourceEtag`, the source's whole-object check, or `Etag` (nothing yet).
    verified: Verified,
    /// The source's full-object checksum or multipart ETag matched.
    whole_checked: Option<Verified>,
    /// Nothing the source declares could be compared.
    unverified: bool,
}

/// How the payload of a single PUT is protected.
#[derive(Clone, Copy)]
struct PutPlan {
    /// A local destination hashes what it writes and returns the MD5 as
    /// its ETag: no second pass here.
    local_dst: bool,
    /// The CRC64NVME goes alone (no MD5 computed here).
    crc_only: bool,
}

impl Transfer {
    pub(super) async fn single(
        &self,
        src: &DynStore,
        meta: &ObjectMeta,
        dst: &DynStore,
        dst_key: &Key,
        obs: &dyn Observer,
    ) -> Result<Outcome> {
        let _permit = self.budget.acquire(meta.size).await;
        // Before the GET: its request slot is held until the body is read.
        let tags = self.source_tags(src, dst, &meta.key).await?;
        let (full, data) = read_whole(src, meta, obs).await?;
        if src.capabilities().source_may_change {
            // Before anything replaces the destination.
            check_unchanged(src, meta).await?;
        }
        let src_local = src.capabilities().local_reads;
        let crc64 = dst.capabilities().upload_checksums.contains(&ChecksumKind::Crc64Nvme);
        let local_dst = dst.capabilities().hashes_writes && !crc64;
        // Into a store that keeps CRC64NVMEs, with no source MD5 to compare,
        // the CRC goes alone (the store protects the payload with an MD5 of
        // its own while it does not know whether the server checks CRCs).
        let plan = PutPlan {
            local_dst,
            crc_only: crc64 && !local_dst && source_md5(&full).is_none(),
        };
        // The source's MD5, when known, goes as Content-MD5: the store refuses
        // data that does not match before anything replaces the destination.
        let sums = if local_dst {
            Checksums {
                md5_hex: source_md5(&full).map(str::to_string),
                ..Default::default()
            }
        } else {
            sums_of(data.clone(), !plan.crc_only, crc64).await
        };
        let read = self
            .check_source_read(src, meta, &full, &data, &sums, src_local)
            .await?;
        let mut put = self.dest_options(src, dst, &full, tags);
        put.checksums = sums;
        let (res, v) = put_checked(dst, dst_key, put, data, plan, meta.size).await?;
        Ok(Outcome {
            strategy: Strategy::Single,
            verified: match (v, read.whole_checked) {
                (Verified::Etag, _) => read.verified,
                (_, Some(how)) => how,
                (v, None) => v,
            },
            bytes: meta.size,
            etag: res.etag,
            unverified: read.unverified,
        })
    }

    /// Checks the data read against the source before anything is written:
    /// its MD5 ETag, else its full-object checksum or multipart ETag
    /// recomputed (a local destination checks the source's MD5 it is given
    /// as Content-MD5 itself).
    async fn check_source_read(
        &self,
        src: &DynStore,
        meta: &ObjectMeta,
        full: &ObjectMeta,
        data: &Bytes,
        sums: &Checksums,
        src_local: bool,
    ) -> Result<SourceRead> {
        let mut read = SourceRead {
            verified: Verified::Etag,
            whole_checked: None,
            unverified: false,
        };
        if source_md5(full).is_none() {
            match integrity::check_whole(src, full, data).await? {
                Some(how) => {
                    read.verified = how;
                    read.whole_checked = Some(how);
                }
                None if src_local => {}
                None if self.opts.require_verified => return Err(integrity::unverified(full)),
                None => read.unverified = true,
            }
        }
        if let (Some(src_md5), Some(md5)) = (source_md5(full), sums.md5_hex.as_deref()) {
            if src_md5 != md5 {
                return Err(err(
                    Op::Get,
                    &meta.key,
                    ErrorKind::Integrity,
                    format!("data read does not match the source ETag (read MD5 {md5}, ETag {src_md5})"),
                ));
            }
            read.verified = Verified::SourceEtag;
        }
        Ok(read)
    }
}

/// GETs the whole object, checked to hold the size listed.
async fn read_whole(src: &DynStore, meta: &ObjectMeta, obs: &dyn Observer) -> Result<(ObjectMeta, Bytes)> {
    let g = src.get(&meta.key, None).await?;
    let full = g.meta.clone();
    if g.range.end != meta.size {
        let got = g.range.end;
        drop(g);
        // An answer garbled on the way, or a source really replaced:
        // ask again. Only a source that changed fails for good.
        let changed = src.head(&meta.key).await.map_or(true, |h| h.size != meta.size);
        return Err(err(
            Op::Get,
            &meta.key,
            if changed {
                ErrorKind::PreconditionFailed
            } else {
                ErrorKind::Transient
            },
            format!("the source changed: {} bytes now, {} when listed", got, meta.size),
        ));
    }
    let data = collect(g, meta.size, &meta.key, obs).await?;
    Ok((full, data))
}

/// PUTs the data and checks the answer. A CRC64NVME sent alone that the
/// server did not confirm is made up for by the store's own Content-MD5,
/// else by sending the data again with its MD5.
async fn put_checked(
    dst: &DynStore,
    dst_key: &Key,
    mut put: PutOptions,
    data: Bytes,
    plan: PutPlan,
    size: u64,
) -> Result<(PutResult, Verified)> {
    let mut res = dst.put(dst_key, data.clone(), &put).await?;
    let crc_confirmed = matches!(
        (put.checksums.full_crc64(), res.checksums.full_crc64()),
        (Some(sent), Some(got)) if sent == got
    );
    if plan.crc_only && !crc_confirmed {
        match res.checksums.md5_hex.take() {
            // The store sent an MD5 of its own as Content-MD5: the server
            // checked it; the ETag is checked against it below.
            Some(own) => put.checksums.md5_hex = Some(own),
            // Nothing checked the payload: it goes again with its MD5.
            None => {
                put.checksums.md5_hex = Some(md5_of(data.clone()).await);
                // The key holds the first write of these bytes: replaced.
                put.if_none_match = false;
                res = dst.put(dst_key, data, &put).await?;
            }
        }
    }
    let md5 = match (&put.checksums.md5_hex, &res.etag) {
        (Some(m), _) => Some(m.clone()),
        (None, Some(e)) if plan.local_dst => Some(e.clone()),
        // The server's CRC64NVME of what it stored is the data's.
        _ if crc_confirmed => None,
        _ => Some(String::new()),
    };
    let v = check_written(dst, dst_key, &put, &res, md5.as_deref(), size).await?;
    Ok((res, v))
}
