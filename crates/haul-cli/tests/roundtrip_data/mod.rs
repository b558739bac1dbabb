//! The roundtrip test's source objects: 20,000 deterministic names of 1
//! to 1,021 bytes (under `in/`: keys up to 1,024 bytes) with sizes,
//! content types, metadata and tags, apart from the test's steps.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

/// Objects bundled (the figure).
pub const N: usize = 20_000;
/// Source and restore prefix: keys are `in/` + name, at most 1,024 bytes.
pub const PREFIX: &str = "in/";
pub const MAX_NAME: usize = 1024 - PREFIX.len();
/// A path component longer than this cannot be a local file name.
pub const NAME_MAX: usize = 255;
/// The content type moto gives an object PUT without one.
pub const DEFAULT_TYPE: &str = "binary/octet-stream";

/// Pieces names are made of: multi-byte UTF-8, spaces and the characters
/// URLs, query strings and shells treat specially.
pub const PIECES: &[&str] = &[
    "a", "b", "z", "0", "7", "é", "ü", "Ω", "日本", "中文", "😀", "🚀", " ", "+", "%", "=", "&", "%20", "-", "_", "~",
    "(", ")", "!", ",", ";", "@", "$", "'", "#", "?", "*", "[", "]", ".txt", "data", "x y", "a+b=c&d",
];
/// Folder names (shared by many keys, so folders nest and fill up).
pub const DIRS: &[&str] = &[
    "a",
    "b",
    "c",
    "日本",
    "dir with space",
    "x+y",
    "p%2Fq",
    "é",
    "😀",
    "k=v&w",
    "2026",
    "+",
    "%",
    "a b",
];

/// One source object.
pub struct Obj {
    pub name: String,
    pub size: usize,
    pub seed: u64,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

impl Obj {
    pub fn key(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }
    pub fn body(&self) -> Vec<u8> {
        haul_testkit::data(self.size, self.seed)
    }
    /// A component no file system takes.
    pub fn too_long(&self) -> bool {
        self.name.split('/').any(|c| c.len() > NAME_MAX)
    }
    /// The permission bits tar shows (from the `file-mode` metadata).
    pub fn perms(&self) -> &'static str {
        match self.metadata.get("file-mode").map(String::as_str) {
            Some("0600") => "-rw-------",
            _ => "-rw-r--r--",
        }
    }
}

pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A path component of exactly `n` bytes (never `.` or `..`).
fn fill(rng: &mut Rng, n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        let p = PIECES[rng.below(PIECES.len())];
        if s.len() + p.len() <= n {
            s.push_str(p);
        } else {
            s.push((b'a' + rng.below(26) as u8) as char);
        }
    }
    s
}

/// A name of exactly `target` bytes: a few shared folders, then
/// components of at most 255 bytes.
fn make_name(rng: &mut Rng, target: usize) -> String {
    let mut name = String::new();
    for _ in 0..rng.below(5) {
        let d = DIRS[rng.below(DIRS.len())];
        if name.len() + d.len() + 2 <= target {
            name.push_str(d);
            name.push('/');
        }
    }
    loop {
        let left = target - name.len();
        if left <= NAME_MAX {
            name.push_str(&fill(rng, left));
            return name;
        }
        let c = 1 + rng.below(NAME_MAX.min(left - 2));
        name.push_str(&fill(rng, c));
        name.push('/');
    }
}

/// The 20,000 objects, deterministic. Names are unique, and no name is
/// another's folder (S3 allows `a` and `a/b`; a file system does not).
pub fn objects() -> Vec<Obj> {
    let mut rng = Rng(0x5EE_D0FB_0D1E);
    let (mut files, mut dirs) = (BTreeSet::new(), BTreeSet::new());
    let mut out = Vec::with_capacity(N);
    for i in 0..N {
        let mut target = match i {
            4 => MAX_NAME,
            5 => 1,
            _ => match rng.below(10) {
                0 => 1 + rng.below(8),
                1..=6 => 9 + rng.below(112),
                7 | 8 => 121 + rng.below(480),
                _ => 601 + rng.below(MAX_NAME - 600),
            },
        };
        let name = loop {
            let n = match i {
                // Components of 256, 276 and 296 bytes: not local files.
                0..=2 => format!("long{i}/{}", fill(&mut rng, NAME_MAX + 1 + i * 20)),
                3 => format!("max/{}", fill(&mut rng, NAME_MAX)),
                _ => make_name(&mut rng, target),
            };
            let parents: Vec<&str> = n.match_indices('/').map(|(at, _)| &n[..at]).collect();
            if !files.contains(&n) && !dirs.contains(&n) && !parents.iter().any(|p| files.contains(*p)) {
                dirs.extend(parents.iter().map(|p| p.to_string()));
                break n;
            }
            if rng.below(4) == 0 {
                target = (target + 1).min(MAX_NAME);
            }
        };
        files.insert(name.clone());
        let size = match (i % 100, rng.below(10)) {
            (0, _) => 0,
            (_, 0..=2) => 512 * (1 + rng.below(4)) + rng.below(3) - 1,
            _ => rng.below(1500),
        };
        let mut o = Obj {
            name,
            size,
            seed: i as u64 + 1,
            content_type: None,
            metadata: BTreeMap::new(),
            tags: BTreeMap::new(),
        };
        if i % 50 == 0 {
            o.content_type = Some("text/x-haul; charset=utf-8".into());
            o.metadata.insert("team".into(), "data".into());
            o.metadata.insert("note".into(), "a b+c%20=d&e".into());
            o.metadata.insert("file-mode".into(), "0600".into());
        }
        if i % 50 == 0 || i % 50 == 25 {
            o.tags.insert("owner".into(), "é 日本".into());
            o.tags.insert("n".into(), i.to_string());
            o.tags.insert("k+=:/@ x".into(), "v w".into());
        }
        out.push(o);
    }
    out
}
