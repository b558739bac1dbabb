//! Helpers shared by the bundle tests: stores, objects with hostile
//! names and sizes around tar blocks, and the checks of an archive
//! against its sources (the `tar` crate, GNU tar, the index, the locator).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use haul_engine::bundle::format::{Locator, BLOCK, INDEX_MEMBER};
use haul_engine::bundle::*;
use haul_engine::{Transfer, TransferOptions};
use haul_store::checksum::{crc64, crc64_to_b64, md5_hex};
use haul_store::memory::MemoryServer;
use haul_store::*;
use tokio_util::sync::CancellationToken;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub fn key(s: &str) -> Key {
    Key::prefix(s).unwrap_or_else(|e| panic!("test key {s:?}: {e}"))
}

/// A small deterministic generator (xorshift64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub async fn put(s: &DynStore, k: &str, body: &[u8], opts: PutOptions) -> Result<(), StoreError> {
    let opts = PutOptions {
        checksums: Checksums::md5(&md5_hex(body)),
        ..opts
    };
    s.put(&key(k), Bytes::copy_from_slice(body), &opts).await.map(|_| ())
}

pub async fn read(s: &DynStore, k: &str) -> Result<Bytes, StoreError> {
    let g = s.get(&key(k), None).await?;
    let chunks: Vec<Bytes> = g.body.try_collect().await?;
    Ok(chunks.concat().into())
}

pub fn transfer() -> Transfer {
    Transfer::new(TransferOptions::default(), CancellationToken::new())
}

/// Two buckets of one memory server; the destination keeps full-object
/// CRC64NVMEs (as AWS S3 does) and takes small parts (multipart exercised
/// with small archives).
pub fn memory_pair() -> (DynStore, DynStore) {
    let server = MemoryServer::new();
    let dst = server.bucket("dst").with_limits(1, 5 << 30).with_default_crc64();
    (Arc::new(server.bucket("src")), Arc::new(dst))
}

pub fn dest(store: &DynStore, prefix: &str) -> Destination {
    Destination {
        store: store.clone(),
        prefix: key(prefix),
        storage_class: None,
    }
}

/// A name of `len` bytes (at least 8) with unicode, spaces, `+` and `%`,
/// cut into path components of at most 200 bytes; unique by `i`.
pub fn name_of(i: usize, len: usize, rng: &mut Rng) -> String {
    const PIECES: [&str; 8] = ["a", "Z", " ", "+", "%", "é", "日", "-"];
    let mut s = format!("o{i:04}/");
    let mut comp = 0;
    while s.len() < len {
        if comp >= 200 {
            s.push('/');
            comp = 0;
            continue;
        }
        let p = PIECES[rng.below(PIECES.len() as u64) as usize];
        if s.len() + p.len() > len {
            s.push('x');
            comp += 1;
            continue;
        }
        s.push_str(p);
        comp += p.len();
    }
    while s.ends_with('/') || s.ends_with(' ') {
        s.pop();
        s.push('y');
    }
    s
}

/// The objects of the roundtrip: names of 1..=1,020 bytes and sizes
/// around multiples of 512, from a fixed seed.
pub fn objects(n: usize, seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng(seed);
    let edges = [0u64, 1, 511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097];
    let mut out = BTreeMap::new();
    for i in 0..n {
        let len = match i % 4 {
            0 => 8,
            1 => 8 + rng.below(92) as usize,
            2 => 100 + rng.below(200) as usize,
            _ => 900 + rng.below(121) as usize,
        };
        let size = if i % 2 == 0 {
            edges[i / 2 % edges.len()]
        } else {
            rng.below(3 * 512 + 3)
        };
        out.insert(name_of(i, len, &mut rng), haul_testkit::data(size as usize, i as u64));
    }
    out.insert("x".into(), b"one-byte-name".to_vec());
    out
}

pub fn manifest(body: &[u8]) -> Vec<ManifestLine> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or_else(|e| panic!("manifest line: {e}")))
        .collect()
}

pub fn archives(lines: &[ManifestLine]) -> Vec<(String, String, u64)> {
    lines
        .iter()
        .filter_map(|l| match l {
            ManifestLine::Archive { name, key, members, .. } => Some((name.clone(), key.clone(), *members)),
            _ => None,
        })
        .collect()
}

/// Checks one archive against the sources: the tar crate's reading, the
/// index (offsets, CRCs, sizes), the locator, the sidecar.
pub async fn check_archive(
    dst: &DynStore,
    archive_key: &str,
    sources: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let bytes = read(dst, archive_key).await?;
    // The tar crate: every member, in order, equal to its source.
    let mut tar = ::tar::Archive::new(&bytes[..]);
    let mut seen = Vec::new();
    let mut index_data = Vec::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8(entry.path_bytes().into_owned())?;
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        if name == INDEX_MEMBER {
            index_data = data;
            continue;
        }
        assert_eq!(entry.header().entry_type(), ::tar::EntryType::Regular);
        assert_eq!(entry.size(), data.len() as u64);
        let src = sources
            .get(&name)
            .ok_or_else(|| format!("unexpected member {name:?}"))?;
        assert_eq!(&data, src, "member {name:?}");
        seen.push((name, entry.raw_file_position()));
    }
    // The index: one entry per member, offsets into the archive's bytes.
    let index = parse_index(&index_data, "index")?;
    assert_eq!(index.len(), seen.len());
    for (e, (name, pos)) in index.iter().zip(&seen) {
        assert_eq!(&e.name, name);
        assert_eq!(e.data_offset, *pos, "{name:?}");
        let data = &bytes[e.data_range().start as usize..e.data_range().end as usize];
        assert_eq!(data, &sources[name][..]);
        assert_eq!(e.crc64nvme, crc64_to_b64(crc64(data)));
        assert!(e.header_offset < e.data_offset && e.header_offset % BLOCK == 0);
        assert_eq!(e.key, format!("src/{name}"));
    }
    // The locator: the archive's last block, found with one suffix read.
    let g = dst.get_with(&key(archive_key), GetOpts::suffix(BLOCK)).await?;
    let last: Vec<Bytes> = g.body.try_collect().await?;
    let loc = Locator::decode(&last.concat(), bytes.len() as u64)?;
    assert_eq!(loc.members, index.len() as u64);
    let idx = &bytes[loc.index_offset as usize..(loc.index_offset + loc.index_len) as usize];
    assert_eq!(idx, &index_data[..]);
    assert_eq!(loc.index_crc, crc64(idx));
    // The sidecar is the same index.
    assert_eq!(read(dst, &format!("{archive_key}.index")).await?, index_data);
    Ok(seen.into_iter().map(|(n, _)| n).collect())
}

/// GNU tar lists and extracts the archive to the same names and bytes.
pub fn check_gnu_tar(archive: &[u8], sources: &BTreeMap<String, Vec<u8>>, names: &[String]) -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("a.tar");
    std::fs::write(&file, archive)?;
    let list = std::process::Command::new("tar")
        .args(["--quoting-style=literal", "-tf"])
        .arg(&file)
        .output()?;
    assert!(
        list.status.success(),
        "tar -tf: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed: Vec<&str> = std::str::from_utf8(&list.stdout)?.lines().collect();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.push(INDEX_MEMBER);
    assert_eq!(listed, want);
    let verbose = std::process::Command::new("tar").arg("-tvf").arg(&file).output()?;
    assert!(verbose.status.success());
    assert_eq!(std::str::from_utf8(&verbose.stdout)?.lines().count(), want.len());
    let out = dir.path().join("x");
    std::fs::create_dir(&out)?;
    let x = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&file)
        .arg("-C")
        .arg(&out)
        .output()?;
    assert!(x.status.success(), "tar -xf: {}", String::from_utf8_lossy(&x.stderr));
    assert!(x.stderr.is_empty(), "tar -xf: {}", String::from_utf8_lossy(&x.stderr));
    for n in names {
        assert_eq!(&std::fs::read(out.join(n))?, &sources[n], "extracted {n:?}");
    }
    Ok(())
}
