//! One GET, one PUT.

use haul_store::{ChecksumKind, DynStore, ErrorKind, Key, ObjectMeta, Op};

use super::body::{collect, md5_of, sums_of};
use super::verify::source_md5;
use super::{err, Outcome, Result, Strategy, Transfer, Verified};
use crate::integrity::{self, check_unchanged};
use crate::report::Observer;

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
        let src_local = src.capabilities().local_root.is_some();
        if src_local {
            // Before anything replaces the destination.
            check_unchanged(src, meta).await?;
        }
        let crc64 = dst.capabilities().upload_checksums.contains(&ChecksumKind::Crc64Nvme);
        // A local destination hashes what it writes and returns the MD5 as
        // its ETag: no second pass here.
        let local_dst = dst.capabilities().local_root.is_some() && !crc64;
        // Into a store that keeps CRC64NVMEs, with no source MD5 to compare,
        // the CRC goes alone (the store protects the payload with an MD5 of
        // its own while it does not know whether the server checks CRCs).
        let crc_only = crc64 && !local_dst && source_md5(&full).is_none();
        // The source's MD5, when known, goes as Content-MD5: the store refuses
        // data that does not match before anything replaces the destination.
        let sums = if local_dst {
            haul_store::Checksums {
                md5_hex: source_md5(&full).map(str::to_string),
                ..Default::default()
            }
        } else {
            sums_of(data.clone(), !crc_only, crc64).await
        };
        let mut verified = Verified::Etag;
        // A source whose ETag is not an MD5: its full-object checksum, else
        // its multipart ETag recomputed, before anything is written.
        let mut unverified = false;
        let mut whole_checked = None;
        if source_md5(&full).is_none() {
            match integrity::check_whole(src, &full, &data).await? {
                Some(how) => {
                    verified = how;
                    whole_checked = Some(how);
                }
                None if src_local => {}
                None if self.opts.require_verified => return Err(integrity::unverified(&full)),
                None => unverified = true,
            }
        }
        // Checked before anything is written (a local destination checks
        // the source's MD5 it was given as Content-MD5 itself).
        if let (Some(src_md5), Some(md5)) = (source_md5(&full), sums.md5_hex.as_deref()) {
            if src_md5 != md5 {
                return Err(err(
                    Op::Get,
                    &meta.key,
                    ErrorKind::Integrity,
                    format!("data read does not match the source ETag (read MD5 {md5}, ETag {src_md5})"),
                ));
            }
            verified = Verified::SourceEtag;
        }
        let mut put = self.dest_options(src, dst, &full, tags);
        put.checksums = sums;
        let mut res = dst.put(dst_key, data.clone(), &put).await?;
        let crc_confirmed = matches!(
            (put.checksums.full_crc64(), res.checksums.full_crc64()),
            (Some(sent), Some(got)) if sent == got
        );
        if crc_only && !crc_confirmed {
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
            (None, Some(e)) if local_dst => Some(e.clone()),
            // The server's CRC64NVME of what it stored is the data's.
            _ if crc_confirmed => None,
            _ => Some(String::new()),
        };
        let v = self
            .check_written(dst, dst_key, &put, &res, md5.as_deref(), meta.size)
            .await?;
        Ok(Outcome {
            strategy: Strategy::Single,
            verified: match (v, whole_checked) {
                (Verified::Etag, _) => verified,
                (_, Some(how)) => how,
                (v, None) => v,
            },
            bytes: meta.size,
            etag: res.etag,
            unverified,
        })
    }
}
