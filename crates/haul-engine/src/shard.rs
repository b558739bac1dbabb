//! Shards: the serializable units a bucket-scale job is cut into. A shard is
//! a prefix relative to the job's source prefix, optionally with the `/`
//! delimiter (then it holds only the keys directly at that level, not those
//! below it). Shards come from a Campanile-style part file, from automatic
//! splitting on the source's top-level folders, or are one shard for all.
//!
//! No shard depends on another's state: each lists its own key range on both
//! sides, so shards can run in any order, in parallel, or on other machines.

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use haul_store::{DynStore, Key, ListEntry, ListRequest, StoreError};
use serde::{Deserialize, Serialize};

/// One unit of a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// Relative to the job's prefix on each side.
    pub prefix: String,
    /// `Some('/')`: only keys with no `/` after the prefix.
    pub delimiter: Option<char>,
}

impl Shard {
    /// Everything under the job's prefix.
    pub fn all() -> Self {
        Shard {
            prefix: String::new(),
            delimiter: None,
        }
    }

    /// The objects of this shard under `base` in `store`, in byte order.
    pub fn list(&self, store: &DynStore, base: &Key) -> BoxStream<'static, haul_store::Result<ListEntry>> {
        let prefix = match base.join(&self.prefix) {
            Ok(p) => p,
            Err(e) => return futures::stream::iter(vec![Err(e)]).boxed(),
        };
        store
            .list(ListRequest {
                prefix,
                delimiter: self.delimiter,
                ..Default::default()
            })
            .try_filter(|e| futures::future::ready(matches!(e, ListEntry::Object(_) | ListEntry::Unlisted(_))))
            .boxed()
    }

    /// Whether two shards can hold the same key.
    pub fn overlaps(&self, other: &Shard) -> bool {
        let (a, b) = (self, other);
        // Orient so that `outer`'s prefix is a prefix of `inner`'s.
        let (outer, inner) = if b.prefix.starts_with(&a.prefix) {
            (a, b)
        } else if a.prefix.starts_with(&b.prefix) {
            (b, a)
        } else {
            return false;
        };
        match outer.delimiter {
            // The outer shard holds everything below its prefix.
            None => true,
            // The outer shard holds only keys with no '/' after its prefix:
            // they meet the inner one only if the inner prefix adds no '/'.
            Some(d) => !inner.prefix[outer.prefix.len()..].contains(d),
        }
    }

    /// The shard as a part-file line (`delimiter,prefix`).
    pub fn to_line(&self) -> String {
        format!(
            "{},{}",
            self.delimiter.map(String::from).unwrap_or_default(),
            self.prefix
        )
    }
}

/// A part file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PartFileError {
    #[error("line {line}: {reason} (expected `delimiter,prefix`, e.g. `/,00` or `,000/`)")]
    Malformed { line: usize, reason: String },
    #[error("lines {first} and {second} overlap: `{a}` and `{b}` can hold the same keys")]
    Overlap {
        first: usize,
        second: usize,
        a: String,
        b: String,
    },
    #[error("the part file has no shards")]
    Empty,
}

/// Parses a Campanile part file: one `delimiter,prefix` per line (`/,00`:
/// the keys directly under `00…`; `,000/`: everything under `000/`). Blank
/// lines and `#` comments are ignored. Overlapping shards are an error:
/// they would copy (or delete) the same keys twice.
pub fn parse_part_file(text: &str) -> Result<Vec<Shard>, PartFileError> {
    let mut shards: Vec<(usize, Shard)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim_end_matches('\r');
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        let (d, prefix) = l.split_once(',').ok_or_else(|| PartFileError::Malformed {
            line,
            reason: format!("no comma in {l:?}"),
        })?;
        let delimiter = match d {
            "" => None,
            "/" => Some('/'),
            other => {
                return Err(PartFileError::Malformed {
                    line,
                    reason: format!("unsupported delimiter {other:?} (only '/' or none)"),
                })
            }
        };
        if let Err(e) = Key::prefix(prefix) {
            return Err(PartFileError::Malformed {
                line,
                reason: e.message,
            });
        }
        shards.push((
            line,
            Shard {
                prefix: prefix.to_string(),
                delimiter,
            },
        ));
    }
    if shards.is_empty() {
        return Err(PartFileError::Empty);
    }
    // Sorted by prefix, an overlapping pair shares a prefix relation; any
    // shard can only overlap shards whose prefix starts with its own, which
    // follow it directly in sorted order.
    let mut sorted: Vec<&(usize, Shard)> = shards.iter().collect();
    sorted.sort_by(|x, y| x.1.prefix.as_bytes().cmp(y.1.prefix.as_bytes()).then(x.0.cmp(&y.0)));
    for (i, (la, a)) in sorted.iter().map(|p| (p.0, &p.1)).enumerate() {
        for (lb, b) in sorted[i + 1..].iter().map(|p| (p.0, &p.1)) {
            if !b.prefix.starts_with(&a.prefix) {
                break;
            }
            if a.overlaps(b) {
                let (first, second) = (la.min(lb), la.max(lb));
                return Err(PartFileError::Overlap {
                    first,
                    second,
                    a: a.to_line(),
                    b: b.to_line(),
                });
            }
        }
    }
    Ok(shards.into_iter().map(|(_, s)| s).collect())
}

/// Cuts the key space under `base` into shards along its folders: the keys
/// at the top level are one shard, and each top-level folder another. While
/// there are fewer than `target` shards, the biggest level is split again
/// (up to `max_depth` levels). Returns shards in key order.
///
/// A source of fewer than `min_keys` keys stays one shard: splitting costs a
/// delimiter listing per folder on both sides, which only pays when the
/// listings are long (found by reading up to `min_keys` keys of the source).
pub async fn auto_split(
    src: &DynStore,
    base: &Key,
    target: usize,
    max_depth: usize,
    min_keys: usize,
) -> Result<Vec<Shard>, StoreError> {
    const MAX_SHARDS: usize = 10_000;
    let mut shards = vec![Shard::all()];
    if min_keys > 0 {
        let seen = src
            .list(ListRequest::prefix(base.clone()))
            .take(min_keys)
            .try_fold(0usize, |n, _| futures::future::ready(Ok(n + 1)))
            .await?;
        if seen < min_keys {
            return Ok(shards);
        }
    }
    for _ in 0..max_depth {
        if shards.len() >= target {
            break;
        }
        let mut next = Vec::with_capacity(shards.len());
        let mut split_any = false;
        for s in shards {
            if s.delimiter.is_some() || next.len() >= MAX_SHARDS {
                next.push(s);
                continue;
            }
            let prefix = base.join(&s.prefix)?;
            let folders: Vec<String> = src
                .list(ListRequest {
                    prefix: prefix.clone(),
                    delimiter: Some('/'),
                    ..Default::default()
                })
                .try_filter_map(|e| {
                    futures::future::ready(Ok(match e {
                        ListEntry::Prefix(p) => p.strip_prefix(base).map(str::to_string),
                        ListEntry::Object(_) | ListEntry::Unlisted(_) => None,
                    }))
                })
                .take(MAX_SHARDS)
                .try_collect()
                .await?;
            if folders.is_empty() {
                next.push(s);
                continue;
            }
            split_any = true;
            next.push(Shard {
                prefix: s.prefix.clone(),
                delimiter: Some('/'),
            });
            next.extend(folders.into_iter().map(|f| Shard {
                prefix: f,
                delimiter: None,
            }));
        }
        shards = next;
        if !split_any {
            break;
        }
    }
    shards.sort_by(|a, b| a.prefix.as_bytes().cmp(b.prefix.as_bytes()));
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(d: Option<char>, p: &str) -> Shard {
        Shard {
            prefix: p.into(),
            delimiter: d,
        }
    }

    #[test]
    fn parses_campanile_lines() {
        let s = parse_part_file("# shards\n/,00\n,000/\n,001/\n\n/,01\n");
        assert_eq!(
            s,
            Ok(vec![
                sh(Some('/'), "00"),
                sh(None, "000/"),
                sh(None, "001/"),
                sh(Some('/'), "01")
            ])
        );
        // The root level (`/,`) holds every key without a '/', `00…` included.
        assert!(parse_part_file("/,00\n/,\n").is_err());
    }

    #[test]
    fn rejects_bad_lines_and_overlaps() {
        let e = parse_part_file("/,00\nno-comma\n");
        assert!(matches!(e, Err(PartFileError::Malformed { line: 2, .. })), "{e:?}");
        let e = parse_part_file("|,00\n");
        assert!(matches!(e, Err(PartFileError::Malformed { line: 1, .. })), "{e:?}");
        assert_eq!(parse_part_file("\n# nothing\n"), Err(PartFileError::Empty));
        // `,00` holds everything under 00…, including 000/x.
        let e = parse_part_file(",00\n,000/\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(e, "lines 1 and 2 overlap: `,00` and `,000/` can hold the same keys");
        // `/,00` holds 00x but not 000/x; it overlaps `,00a` (00a, 00ab...).
        assert!(parse_part_file("/,00\n,000/\n").is_ok());
        assert!(parse_part_file("/,00\n,00a\n").is_err());
        assert!(parse_part_file("/,00\n/,00a\n").is_err());
        assert!(parse_part_file(",a/\n,b/\n/,\n").is_ok());
    }

    #[tokio::test]
    async fn auto_split_covers_every_key_once() -> Result<(), Box<dyn std::error::Error>> {
        use haul_store::memory::MemoryStore;
        use haul_store::{ObjectStore, PutOptions};
        let m = MemoryStore::new("b");
        let keys = [
            "base/top.txt",
            "base/2026/11/a",
            "base/2026/12/b",
            "base/2027/x",
            "base/2027y",
            "base/z/q/r",
        ];
        for k in keys {
            m.put(
                &Key::object(k)?,
                bytes::Bytes::from_static(b"1"),
                &PutOptions::default(),
            )
            .await?;
        }
        let store: DynStore = std::sync::Arc::new(m);
        let base = Key::prefix("base/")?;
        let shards = auto_split(&store, &base, 6, 3, 0).await?;
        assert!(shards.len() >= 5, "{shards:?}");
        for (i, a) in shards.iter().enumerate() {
            for b in &shards[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
        let mut seen = Vec::new();
        for s in &shards {
            let part: Vec<ListEntry> = s.list(&store, &base).try_collect().await?;
            seen.extend(part.into_iter().map(|e| e.key().to_string()));
        }
        seen.sort();
        let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        want.sort();
        assert_eq!(seen, want, "the shards partition the keys");
        Ok(())
    }
}
