//! Reading one member before it is written: the whole object, conditional
//! on the listing's ETag (`If-Match`), paid for from the byte budget
//! before its buffer exists, its size checked and its CRC64NVME computed
//! (and compared with the source's, when the source states one).
//! A listed version (an inventory of a versioned bucket) is read as that
//! version, never as the current object.
//! A member is fully read before its header is emitted, so an object that
//! fails — gone, denied, changed, throttled — becomes a dead letter and
//! never a corrupt archive.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use haul_store::checksum::{crc64, crc64_to_b64};
use haul_store::{DynStore, ErrorKind, GetOpts, Key, ObjectMeta, Op, StoreError};

use super::dead::{DeadLetter, DeadReason};
use super::plan::PlannedMember;
use crate::budget::{BudgetPermit, ByteBudget};

/// A member read whole.
#[derive(Debug)]
pub(super) struct Fetched {
    pub(super) member: PlannedMember,
    pub(super) data: Bytes,
    pub(super) crc: u64,
    /// What the GET said of the object (content type, user metadata).
    pub(super) meta: ObjectMeta,
    /// Its tags, when asked for.
    pub(super) tags: Vec<(String, String)>,
    pub(super) _permit: BudgetPermit,
}

/// Reads of one member: bytes that do not match the source's checksum,
/// or a body cut short, are read again (the store retries the rest).
pub(super) const READ_ATTEMPTS: u32 = 3;

/// Why one read of a member failed.
enum Miss {
    /// Worth another read (damaged or short bytes).
    Again(StoreError),
    /// Final.
    Dead(DeadLetter),
}

/// Reads `m` from `src` (and its tags when `tags`); a dead letter when it
/// cannot be read as listed. A source without the tagging API gives none.
pub(super) async fn fetch(
    src: &DynStore,
    m: PlannedMember,
    budget: &ByteBudget,
    tags: bool,
) -> Result<Fetched, DeadLetter> {
    let key = Key::object(m.key.clone())
        .map_err(|e| DeadLetter::new(&m.key, m.size, m.etag.as_deref(), DeadReason::UnsafeName, e.to_string()))?;
    let permit = budget.acquire(m.size).await;
    let mut attempt = 1;
    let (data, crc, meta) = loop {
        match read_once(src, &key, &m, attempt).await {
            Ok(read) => break read,
            Err(Miss::Again(e)) if attempt < READ_ATTEMPTS => {
                tracing::info!(key = %m.key, attempt, error = %e, "reading the member again");
                attempt += 1;
            }
            Err(Miss::Again(e)) => {
                return Err(DeadLetter::of_error(&m.key, m.size, m.etag.as_deref(), &e, attempt));
            }
            Err(Miss::Dead(d)) => return Err(d),
        }
    };
    let tags = match tags {
        true => match src.get_tags(&key).await {
            Ok(t) => t,
            Err(e) if e.kind == ErrorKind::NotSupported => Vec::new(),
            Err(e) => return Err(DeadLetter::of_error(&m.key, m.size, m.etag.as_deref(), &e, attempt)),
        },
        false => Vec::new(),
    };
    Ok(Fetched {
        member: m,
        data,
        crc,
        meta,
        tags,
        _permit: permit,
    })
}

/// One conditional GET of the whole member: its bytes, their CRC64NVME
/// and what the GET said of the object.
async fn read_once(
    src: &DynStore,
    key: &Key,
    m: &PlannedMember,
    attempt: u32,
) -> Result<(Bytes, u64, ObjectMeta), Miss> {
    let dead = |e: &StoreError| Miss::Dead(DeadLetter::of_error(&m.key, m.size, m.etag.as_deref(), e, attempt));
    let changed = |msg: String| {
        let mut d = DeadLetter::new(&m.key, m.size, m.etag.as_deref(), DeadReason::Changed, msg);
        d.attempts = attempt;
        Miss::Dead(d)
    };
    // The version listed, not the current object (`--versions`).
    let opts = GetOpts {
        range: None,
        if_match: m.etag.clone(),
        version_id: m.version_id.clone(),
    };
    let got = src.get_with(key, opts).await.map_err(|e| dead(&e))?;
    if got.meta.size != m.size {
        return Err(changed(format!(
            "listed with {} bytes, now {} bytes",
            m.size, got.meta.size
        )));
    }
    let mut buf = BytesMut::with_capacity(m.size as usize);
    let mut body = got.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| dead(&e))?;
        if buf.len() as u64 + chunk.len() as u64 > m.size {
            return Err(changed(format!("listed with {} bytes, the read gave more", m.size)));
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.len() as u64 != m.size {
        return Err(Miss::Again(StoreError::new(
            Op::Get,
            key.as_str(),
            ErrorKind::Transient,
            format!("the body ended after {} of {} bytes", buf.len(), m.size),
        )));
    }
    let data = buf.freeze();
    let crc = crc64(&data);
    // A source that states its full-object CRC64NVME is held to it.
    if let Some(want) = got.meta.checksums.full_crc64() {
        if want != crc {
            return Err(Miss::Again(StoreError::new(
                Op::Get,
                key.as_str(),
                ErrorKind::Integrity,
                format!(
                    "the bytes read have CRC64NVME {}, the source states {}",
                    crc64_to_b64(crc),
                    crc64_to_b64(want)
                ),
            )));
        }
    }
    Ok((data, crc, got.meta))
}
