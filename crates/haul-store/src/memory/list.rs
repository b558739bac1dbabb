//! Paged listings of a memory bucket in byte order, with common prefixes:
//! each page is taken under the lock, like a paged LIST.

use std::ops::Bound;

use futures::stream::{self, BoxStream, StreamExt};

use crate::error::Result;
use crate::key::Key;
use crate::types::*;

use super::{list_meta, lock, Bucket};

pub(super) fn list(objects: Bucket, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
    const PAGE: usize = 1000;
    // Each step takes one page under the lock, like a paged LIST.
    let state = (req.range.start_after.clone().map(String::from), false);
    stream::unfold(state, move |(after, done)| {
        let objects = objects.clone();
        let req = req.clone();
        async move {
            if done {
                return None;
            }
            let map = lock(&objects);
            let prefix = req.prefix.as_str();
            let lower = match &after {
                Some(a) if a.as_str() >= prefix => Bound::Excluded(a.clone()),
                _ => Bound::Included(prefix.to_string()),
            };
            let mut page = Vec::new();
            let mut last: Option<String> = None;
            for (k, v) in map.range((lower, Bound::Unbounded)) {
                if !k.starts_with(prefix) || req.range.prefix_past_end(k) {
                    break;
                }
                if let Some(d) = req.delimiter {
                    if let Some(pos) = k[prefix.len()..].find(d) {
                        let cp = &k[..prefix.len() + pos + d.len_utf8()];
                        if last.as_deref() != Some(cp) {
                            if let Ok(p) = Key::prefix(cp) {
                                page.push(Ok(ListEntry::Prefix(p)));
                            }
                            last = Some(cp.to_string());
                        }
                        if page.len() >= PAGE {
                            break;
                        }
                        continue;
                    }
                }
                page.push(Ok(ListEntry::Object(list_meta(v))));
                last = Some(k.clone());
                if page.len() >= PAGE {
                    break;
                }
            }
            drop(map);
            let finished = page.len() < PAGE;
            // After a common prefix, continue past every key under it.
            let next = last.map(|l| {
                if req.delimiter.is_some_and(|d| l.ends_with(d)) {
                    format!("{l}\u{10FFFF}")
                } else {
                    l
                }
            });
            if page.is_empty() {
                return None;
            }
            Some((stream::iter(page), (next, finished)))
        }
    })
    .flatten()
    .boxed()
}
