//! Test helpers for the bundle readers: archives laid out as
//! `bundle::format` says (built with the `tar` crate's Builder until the
//! writer is merged), hostile tars written header by header, and a store
//! wrapper that records the requests made.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use haul_engine::bundle::format::{padding, IndexEntry, Locator, INDEX_MEMBER};
use haul_store::checksum::{crc64, crc64_to_b64};
use haul_store::memory::MemoryStore;
use haul_store::*;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A member to put in a test archive.
#[derive(Debug, Clone, Default)]
pub struct Member {
    pub name: String,
    pub data: Vec<u8>,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub mtime_ns: Option<i128>,
    pub storage_class: Option<String>,
}

impl Member {
    pub fn new(name: &str, data: Vec<u8>) -> Self {
        Member {
            name: name.into(),
            data,
            mtime_ns: Some(1_700_000_000_000_000_000),
            ..Default::default()
        }
    }
}

/// A test archive's bytes and the index it carries.
#[derive(Debug, Clone)]
pub struct Built {
    pub bytes: Vec<u8>,
    pub entries: Vec<IndexEntry>,
    /// The index as JSON lines.
    pub index: Vec<u8>,
    pub locator: Locator,
}

/// Deterministic bytes.
pub fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8 ^ (i >> 8) as u8)
        .collect()
}

/// Lays out a haul bundle: members, the index member, two zero blocks,
/// the locator. `tamper` edits the entries before the index is written
/// (a wrong offset the locator's CRC then covers).
pub fn build_with(
    members: &[Member],
    tamper: impl FnOnce(&mut Vec<IndexEntry>),
) -> Result<Built, Box<dyn std::error::Error>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut entries = Vec::new();
    for m in members {
        let header_offset = b.get_ref().len() as u64;
        let mut h = tar::Header::new_ustar();
        h.set_size(m.data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(m.mtime_ns.map_or(0, |n| (n / 1_000_000_000) as u64));
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, &m.name, &m.data[..])?;
        let size = m.data.len() as u64;
        let data_offset = b.get_ref().len() as u64 - size - padding(size);
        entries.push(IndexEntry {
            name: m.name.clone(),
            bucket: "src".into(),
            key: format!("data/{}", m.name),
            version_id: None,
            header_offset,
            data_offset,
            size,
            etag: Some(checksum::md5_hex(&m.data)),
            crc64nvme: crc64_to_b64(crc64(&m.data)),
            mtime_ns: m.mtime_ns,
            storage_class: m.storage_class.clone(),
            content_type: m.content_type.clone(),
            metadata: m.metadata.clone(),
            tags: m.tags.clone(),
            zstd: None,
        });
    }
    tamper(&mut entries);
    let mut index = Vec::new();
    for e in &entries {
        index.extend(serde_json::to_vec(e)?);
        index.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_size(index.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, INDEX_MEMBER, &index[..])?;
    let index_offset = b.get_ref().len() as u64 - index.len() as u64 - padding(index.len() as u64);
    let mut bytes = b.into_inner()?;
    let locator = Locator {
        index_offset,
        index_len: index.len() as u64,
        index_crc: crc64(&index),
        members: entries.len() as u64,
    };
    bytes.extend_from_slice(&locator.encode());
    Ok(Built {
        bytes,
        entries,
        index,
        locator,
    })
}

pub fn build(members: &[Member]) -> Result<Built, Box<dyn std::error::Error>> {
    build_with(members, |_| {})
}

/// Members of the given sizes, named `m<i>-<size>`.
pub fn sized(sizes: &[usize]) -> Vec<Member> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, n)| Member::new(&format!("m{i}-{n}"), data(*n, i as u8)))
        .collect()
}

pub async fn put(store: &dyn ObjectStore, key: &str, bytes: Vec<u8>) -> Result<Key, Box<dyn std::error::Error>> {
    let k = Key::object(key)?;
    store.put(&k, Bytes::from(bytes), &PutOptions::default()).await?;
    Ok(k)
}

/// One tar header block, written by hand so nothing is sanitized.
pub fn raw_header(name: &[u8], typeflag: u8, link: &[u8], size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, 0o644);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 1_700_000_000);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A raw member: name, type flag, link target, data.
pub type RawMember<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

/// A tar of raw members.
pub fn raw_tar(members: &[RawMember<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, t, link, body) in members {
        out.extend_from_slice(&raw_header(name, *t, link, body.len() as u64));
        out.extend_from_slice(body);
        out.resize(out.len() + padding(body.len() as u64) as usize, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A request seen by [`Recording`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Req {
    Head(String),
    Get(String, Option<Range<u64>>),
    Put(String),
    Other(&'static str),
}

/// A store that records the requests it is sent.
#[derive(Debug, Clone)]
pub struct Recording {
    pub inner: MemoryStore,
    pub log: Arc<Mutex<Vec<Req>>>,
}

impl Recording {
    pub fn new(inner: MemoryStore) -> Self {
        Recording {
            inner,
            log: Arc::default(),
        }
    }

    pub fn take(&self) -> Vec<Req> {
        self.log.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default()
    }

    fn note(&self, r: Req) {
        if let Ok(mut l) = self.log.lock() {
            l.push(r);
        }
    }
}

#[async_trait]
impl ObjectStore for Recording {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn url(&self) -> String {
        self.inner.url()
    }
    fn list(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
        self.note(Req::Other("list"));
        self.inner.list(req)
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.note(Req::Head(key.to_string()));
        self.inner.head(key).await
    }
    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
        self.note(Req::Get(key.to_string(), range.clone()));
        self.inner.get(key, range).await
    }
    async fn get_tags(&self, key: &Key) -> Result<Vec<(String, String)>> {
        self.note(Req::Other("get_tags"));
        self.inner.get_tags(key).await
    }
    async fn put(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult> {
        self.note(Req::Put(key.to_string()));
        self.inner.put(key, payload, opts).await
    }
    async fn create_multipart(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        self.note(Req::Other("create_multipart"));
        self.inner.create_multipart(key, opts).await
    }
    async fn upload_part(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        self.note(Req::Other("upload_part"));
        self.inner.upload_part(key, upload, part_number, payload, sums).await
    }
    async fn upload_part_copy(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        self.note(Req::Other("upload_part_copy"));
        self.inner.upload_part_copy(key, upload, part_number, src, range).await
    }
    async fn complete_multipart(&self, key: &Key, upload: &MultipartId, parts: &[CompletedPart]) -> Result<PutResult> {
        self.note(Req::Other("complete_multipart"));
        self.inner.complete_multipart(key, upload, parts).await
    }
    async fn abort_multipart(&self, key: &Key, upload: &MultipartId) -> Result<()> {
        self.note(Req::Other("abort_multipart"));
        self.inner.abort_multipart(key, upload).await
    }
    async fn list_multipart_uploads(&self, prefix: &Key) -> Result<Vec<(Key, MultipartId)>> {
        self.note(Req::Other("list_multipart_uploads"));
        self.inner.list_multipart_uploads(prefix).await
    }
    async fn copy(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult> {
        self.note(Req::Other("copy"));
        self.inner.copy(src, dst, opts).await
    }
    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<StoreError>> {
        self.note(Req::Other("delete_many"));
        self.inner.delete_many(keys).await
    }
}

/// Every path under `dir` (relative), links not followed, sorted.
pub fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.path().strip_prefix(dir).ok().map(|p| p.display().to_string()))
        .collect();
    out.sort();
    out
}
