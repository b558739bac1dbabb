//! Shards: the serializable units a bucket-scale job is cut into. A shard is
//! a prefix relative to the job's source prefix, optionally with the `/`
//! delimiter (then it holds only the keys directly at that level, not those
//! below it), optionally narrowed to a key range `[from, until)`. Shards
//! come from a Campanile-style part file, from automatic splitting along the
//! source's folders, or are one shard for all.
//!
//! Automatic splitting cuts the key space into contiguous ranges, so that
//! its shards partition *every* key under the job's prefix — the source's,
//! and the ones only the destination holds (which `--delete` must reach) —
//! whatever the number of folders: past [`MAX_SHARDS`], consecutive folders
//! share a range shard instead of being dropped.
//!
//! No shard depends on another's state: each lists its own key range on both
//! sides, so shards can run in any order, in parallel, or on other machines.

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use haul_store::{DynStore, Key, KeyRange, ListEntry, ListRequest, StoreError};
use serde::{Deserialize, Serialize};

/// The most shards automatic splitting makes (groups of consecutive folders
/// share a shard beyond that).
pub const MAX_SHARDS: usize = 10_000;

/// One unit of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// Relative to the job's prefix on each side.
    pub prefix: String,
    /// `Some('/')`: only keys with no `/` after the prefix.
    pub delimiter: Option<char>,
    /// Only keys (relative to the job's prefix) at or after this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Only keys (relative to the job's prefix) strictly before this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// A string strictly before `s` with (practically) no key between the two:
/// `s` with its last character decremented, then U+10FFFF. Used as the
/// exclusive `StartAfter` of an inclusive lower bound; the listing filters
/// the keys in between, if any, so the bound stays exact.
fn just_before(s: &str) -> Option<String> {
    let mut out = s.to_string();
    let last = out.pop()?;
    let prev = match last as u32 {
        0 => return Some(out),
        0xE000 => '\u{D7FF}',
        n => char::from_u32(n - 1)?,
    };
    out.push(prev);
    out.push('\u{10FFFF}');
    Some(out)
}

/// The first string after every string that starts with `prefix` (None:
/// no end, for the empty prefix or one of U+10FFFF only).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut out = prefix.to_string();
    while let Some(last) = out.pop() {
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(c) = next {
            out.push(c);
            return Some(out);
        }
    }
    None
}

/// The longest common prefix of two strings, on a character boundary.
fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let n = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| a.len().min(b.len()));
    &a[..n]
}

impl Shard {
    /// Everything under the job's prefix.
    pub fn all() -> Self {
        Shard::default()
    }

    /// Everything under `prefix` (relative to the job's prefix).
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Shard {
            prefix: prefix.into(),
            ..Shard::default()
        }
    }

    /// Whether the key `rel` (relative to the job's prefix) belongs here.
    pub fn contains(&self, rel: &str) -> bool {
        let Some(rest) = rel.strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        self.delimiter.is_none_or(|d| !rest.contains(d))
            && self.from.as_deref().is_none_or(|f| rel >= f)
            && self.until.as_deref().is_none_or(|u| rel < u)
    }

    /// The objects of this shard under `base` in `store`, in byte order.
    pub fn list(&self, store: &DynStore, base: &Key) -> BoxStream<'static, haul_store::Result<ListEntry>> {
        self.list_skipping(store, base, None)
    }

    /// [`Shard::list`], with keys the caller drops anyway not looked at by
    /// stores that would have to ([`ListRequest::skip`]).
    pub fn list_skipping(
        &self,
        store: &DynStore,
        base: &Key,
        skip: Option<haul_store::SkipKeys>,
    ) -> BoxStream<'static, haul_store::Result<ListEntry>> {
        let range = (|| {
            Ok::<_, StoreError>(KeyRange {
                // Too long to be a key: start at the prefix (the filter
                // below keeps the bound exact).
                start_after: self
                    .from
                    .as_deref()
                    .and_then(just_before)
                    .and_then(|b| base.join(&b).ok()),
                end: match &self.until {
                    Some(u) => Some(base.join(u)?),
                    None => None,
                },
            })
        })();
        let (prefix, range) = match (base.join(&self.prefix), range) {
            (Ok(p), Ok(r)) => (p, r),
            (Err(e), _) | (_, Err(e)) => return futures::stream::iter(vec![Err(e)]).boxed(),
        };
        // The exact bounds, whatever the store did with the range.
        let from = self.from.as_ref().map(|f| format!("{base}{f}"));
        let until = range.end.clone();
        store
            .list(ListRequest {
                prefix,
                range,
                delimiter: self.delimiter,
                skip,
            })
            .try_filter(move |e| {
                let k = e.key().as_str();
                futures::future::ready(
                    matches!(e, ListEntry::Object(_) | ListEntry::Unlisted(_))
                        && from.as_deref().is_none_or(|f| k >= f)
                        && until.as_ref().is_none_or(|u| k < u.as_str()),
                )
            })
            .boxed()
    }

    /// Whether two shards can hold the same key.
    pub fn overlaps(&self, other: &Shard) -> bool {
        let (a, b) = (self, other);
        // Disjoint ranges never meet (a prefix is a range too).
        let lo = [a.from.as_deref(), b.from.as_deref(), Some(&a.prefix), Some(&b.prefix)]
            .into_iter()
            .flatten()
            .max();
        let ends = [
            a.until.clone(),
            b.until.clone(),
            prefix_end(&a.prefix),
            prefix_end(&b.prefix),
        ];
        let hi = ends.iter().flatten().min();
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo >= hi.as_str() {
                return false;
            }
        }
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

    /// The shard as a part-file line (`delimiter,prefix`), with its range
    /// (which part files cannot express) after it.
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "{},{}",
            self.delimiter.map(String::from).unwrap_or_default(),
            self.prefix
        );
        if self.from.is_some() || self.until.is_some() {
            line.push_str(&format!(
                " [{:?}, {:?})",
                self.from.as_deref().unwrap_or(""),
                self.until.as_deref().unwrap_or("")
            ));
        }
        line
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
                ..Shard::all()
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

/// A shard being planned, and the folder (relative) whose subfolders may
/// cut it further: its only folder at the level where it was cut.
struct Piece {
    shard: Shard,
    descend: Option<String>,
}

/// Groups of consecutive folders directly under `dir` (relative to `base`):
/// at most `max_groups` of them, each its first folder and its size. Memory
/// stays bounded whatever the number of folders: when there are too many
/// groups, neighbours merge (and later groups grow by as much).
async fn folder_groups(
    src: &DynStore,
    base: &Key,
    dir: &str,
    max_groups: usize,
) -> Result<Vec<(String, usize)>, StoreError> {
    let mut listing = src.list(ListRequest {
        prefix: base.join(dir)?,
        delimiter: Some('/'),
        ..Default::default()
    });
    let (mut groups, mut stride): (Vec<(String, usize)>, usize) = (Vec::new(), 1);
    while let Some(e) = listing.try_next().await? {
        let ListEntry::Prefix(p) = e else { continue };
        let Some(rel) = p.strip_prefix(base) else { continue };
        match groups.last_mut() {
            Some(g) if g.1 < stride => g.1 += 1,
            _ => groups.push((rel.to_string(), 1)),
        }
        if groups.len() > max_groups.max(1) {
            groups = groups
                .chunks(2)
                .map(|c| (c[0].0.clone(), c.iter().map(|g| g.1).sum()))
                .collect();
            stride *= 2;
        }
    }
    Ok(groups)
}

/// Cuts `p` at the folders directly under `dir` (which lies wholly inside
/// `p`) into at most `budget` contiguous ranges: the first from `p`'s start
/// to the second group's first folder, …, the last to `p`'s end. Keys
/// beside the folders (files at that level, folders only the destination
/// has) fall in the range of the folder before them.
async fn cut(src: &DynStore, base: &Key, p: &Shard, dir: &str, budget: usize) -> Result<Vec<Piece>, StoreError> {
    let groups = folder_groups(src, base, dir, budget).await?;
    let n = groups.len();
    let mut out = Vec::with_capacity(n);
    for (i, (first, size)) in groups.iter().enumerate() {
        let from = if i == 0 { p.from.clone() } else { Some(first.clone()) };
        let until = match groups.get(i + 1) {
            Some((next, _)) => Some(next.clone()),
            None => p.until.clone(),
        };
        // Every key of [from, until) starts with their common prefix.
        let prefix = match (&from, &until) {
            (Some(f), Some(u)) => common_prefix(f, u).to_string(),
            _ => p.prefix.clone(),
        };
        out.push(Piece {
            shard: Shard {
                prefix,
                delimiter: None,
                from,
                until,
            },
            descend: (*size == 1).then(|| first.clone()),
        });
    }
    if out.is_empty() {
        // No folder under `dir`: nothing to cut along.
        out.push(Piece {
            shard: p.clone(),
            descend: None,
        });
    }
    Ok(out)
}

/// Cuts the key space under `base` into shards along the source's folders:
/// each top-level folder starts a shard that runs to the next one (the
/// first shard starts at the beginning, the last runs to the end), so the
/// shards partition every possible key, not only the source's. While there
/// are fewer than `target` shards, shards holding a single folder are cut
/// again along its subfolders (up to `max_depth` levels). More folders than
/// [`MAX_SHARDS`] at a level: consecutive folders share a shard. Returns
/// shards in key order.
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
    if min_keys > 0 {
        let seen = src
            .list(ListRequest::prefix(base.clone()))
            .take(min_keys)
            .try_fold(0usize, |n, _| futures::future::ready(Ok(n + 1)))
            .await?;
        if seen < min_keys {
            return Ok(vec![Shard::all()]);
        }
    }
    let mut pieces = vec![Piece {
        shard: Shard::all(),
        descend: Some(String::new()),
    }];
    for _ in 0..max_depth {
        if pieces.len() >= target || pieces.iter().all(|p| p.descend.is_none()) {
            break;
        }
        let mut next: Vec<Piece> = Vec::with_capacity(pieces.len());
        let count = pieces.len();
        for (i, p) in pieces.into_iter().enumerate() {
            // Room left: every piece still to come keeps at least one shard.
            let budget = MAX_SHARDS.saturating_sub(next.len() + (count - i - 1));
            match p.descend {
                Some(dir) if budget > 0 => next.extend(cut(src, base, &p.shard, &dir, budget).await?),
                _ => next.push(Piece {
                    shard: p.shard,
                    descend: None,
                }),
            }
        }
        pieces = next;
    }
    Ok(pieces.into_iter().map(|p| p.shard).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(d: Option<char>, p: &str) -> Shard {
        Shard {
            prefix: p.into(),
            delimiter: d,
            ..Shard::all()
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

    #[test]
    fn ranges_bound_membership_and_overlaps() {
        let r = |f: Option<&str>, u: Option<&str>| Shard {
            from: f.map(str::to_string),
            until: u.map(str::to_string),
            ..Shard::all()
        };
        let (first, mid, last) = (r(None, Some("b/")), r(Some("b/"), Some("d/")), r(Some("d/"), None));
        for (k, want) in [
            ("a/x", 0),
            ("b.txt", 0),
            ("b/", 1),
            ("b/x", 1),
            ("c", 1),
            ("d/", 2),
            ("zz", 2),
        ] {
            let inside: Vec<usize> = [&first, &mid, &last]
                .iter()
                .enumerate()
                .filter(|(_, s)| s.contains(k))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(inside, [want], "{k}");
        }
        assert!(!first.overlaps(&mid) && !mid.overlaps(&last) && !first.overlaps(&last));
        assert!(mid.overlaps(&Shard::prefix("c")) && !mid.overlaps(&Shard::prefix("e/")));
        // Just before: smaller, and nothing but U+10FFFF-led keys between.
        assert_eq!(just_before("b/").as_deref(), Some("b.\u{10FFFF}"));
        assert!(just_before("b/").is_some_and(|s| s.as_str() < "b/" && s.as_str() > "b.zzz"));
        assert_eq!(just_before("\u{E000}").as_deref(), Some("\u{D7FF}\u{10FFFF}"));
        assert_eq!(just_before(""), None);
        assert_eq!(prefix_end("e/").as_deref(), Some("e0"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
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
        // 2026/11/, 2026/12/, 2027/ (with 2027y and top.txt), z/.
        assert_eq!(shards.len(), 4, "{shards:?}");
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
