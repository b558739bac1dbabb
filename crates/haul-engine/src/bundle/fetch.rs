//! Reading one member before it is written: the whole object, conditional
//! on the listing's ETag (`If-Match`), paid for from the byte budget
//! before its buffer exists, its size checked and its CRC64NVME computed.
//! A member is fully read before its header is emitted, so an object that
//! fails — gone, denied, changed, throttled — becomes a dead letter and
//! never a corrupt archive.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use haul_store::checksum::crc64;
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

fn changed(m: &PlannedMember, msg: String) -> DeadLetter {
    let mut d = DeadLetter::new(&m.key, m.size, m.etag.as_deref(), DeadReason::Changed, msg);
    d.attempts = 1;
    d
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
    let dead = |e: &StoreError| DeadLetter::of_error(&m.key, m.size, m.etag.as_deref(), e, 1);
    let opts = GetOpts {
        range: None,
        if_match: m.etag.clone(),
    };
    let got = src.get_with(&key, opts).await.map_err(|e| dead(&e))?;
    if got.meta.size != m.size {
        let msg = format!("listed with {} bytes, now {} bytes", m.size, got.meta.size);
        return Err(changed(&m, msg));
    }
    let mut buf = BytesMut::with_capacity(m.size as usize);
    let mut body = got.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| dead(&e))?;
        if buf.len() as u64 + chunk.len() as u64 > m.size {
            let msg = format!("listed with {} bytes, the read gave more", m.size);
            return Err(changed(&m, msg));
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.len() as u64 != m.size {
        let e = StoreError::new(
            Op::Get,
            key.as_str(),
            ErrorKind::Transient,
            format!("the body ended after {} of {} bytes", buf.len(), m.size),
        );
        return Err(dead(&e));
    }
    let tags = match tags {
        true => match src.get_tags(&key).await {
            Ok(t) => t,
            Err(e) if e.kind == ErrorKind::NotSupported => Vec::new(),
            Err(e) => return Err(dead(&e)),
        },
        false => Vec::new(),
    };
    let data = buf.freeze();
    let crc = crc64(&data);
    Ok(Fetched {
        member: m,
        data,
        crc,
        meta: got.meta,
        tags,
        _permit: permit,
    })
}
