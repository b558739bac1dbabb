//! Listing: ListObjectsV2 pages, in byte order, cut to the requested key
//! range (servers that ignore StartAfter exist).

use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use futures::stream::{self, BoxStream, StreamExt};

use crate::checksum::clean_etag;
use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::{Key, KeyRange};
use crate::types::*;

use super::{to_system_time, S3Store};

/// Where a listing is between pages.
struct Cursor {
    token: Option<String>,
    first: bool,
    done: bool,
    /// The last key of the pages so far.
    last: Option<String>,
}

impl S3Store {
    /// Pages are asked for one at a time, as the reader takes entries.
    pub(super) fn list_objects(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
        let this = self.clone();
        let cursor = Cursor {
            token: None,
            first: true,
            done: false,
            last: None,
        };
        stream::try_unfold(cursor, move |cursor| {
            let this = this.clone();
            let req = req.clone();
            async move { this.next_page(&req, cursor).await }
        })
        .map(|r: Result<_>| match r {
            Ok(s) => s.left_stream(),
            Err(e) => stream::iter(vec![Err(e)]).right_stream(),
        })
        .flatten()
        .boxed()
    }

    /// The entries of the page after `cursor`, in byte order and within the
    /// requested range; `None` after the last page.
    async fn next_page(
        &self,
        req: &ListRequest,
        mut cursor: Cursor,
    ) -> Result<Option<(stream::Iter<std::vec::IntoIter<Result<ListEntry>>>, Cursor)>> {
        if cursor.done || (!cursor.first && cursor.token.is_none()) {
            return Ok(None);
        }
        let out = self.list_page(req, cursor.token.as_deref()).await?;
        cursor.first = false;
        cursor.token = out.next_continuation_token().map(str::to_string);
        if out.is_truncated() == Some(true) && cursor.token.is_none() {
            return Err(StoreError::new(
                Op::List,
                req.prefix.as_str(),
                ErrorKind::Transient,
                "the server said the listing is truncated but gave no continuation token",
            ));
        }
        let keys: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
        check_order(req, cursor.last.as_deref(), &keys)?;
        if let Some(k) = keys.last() {
            cursor.last = Some((*k).to_string());
        }
        let mut page = page_entries(&out, req.delimiter.is_some());
        // Enforce the range end and the start (servers that ignore
        // StartAfter exist).
        page.retain(|e| in_range(&req.range, e));
        if past_range_end(&keys, &req.range, out.is_truncated() == Some(true)) {
            cursor.done = true;
        }
        Ok(Some((stream::iter(page), cursor)))
    }

    /// One ListObjectsV2 request: the first page (from the range's start),
    /// or the one after `token`.
    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListObjectsV2Output> {
        let mut call = self.conn.client.list_objects_v2().bucket(&self.bucket);
        if !req.prefix.is_empty() {
            call = call.prefix(req.prefix.as_str());
        }
        if let Some(d) = req.delimiter {
            call = call.delimiter(d.to_string());
        }
        match token {
            Some(t) => call = call.continuation_token(t),
            None => {
                if let Some(s) = &req.range.start_after {
                    call = call.start_after(s.as_str());
                }
            }
        }
        call.send()
            .await
            .map_err(|e| self.err(Op::List, req.prefix.as_str(), e))
    }
}

/// The objects and common prefixes of one page, in byte order. A key that
/// is not valid is reported, never dropped silently.
fn page_entries(out: &ListObjectsV2Output, delimiter: bool) -> Vec<Result<ListEntry>> {
    let mut page: Vec<Result<ListEntry>> = Vec::new();
    for o in out.contents() {
        let Some(k) = o.key() else { continue };
        let key = match Key::prefix(k) {
            Ok(key) => key,
            Err(e) => {
                page.push(Err(StoreError { op: Op::List, ..e }));
                continue;
            }
        };
        page.push(Ok(ListEntry::Object(ObjectMeta {
            key,
            size: o.size().unwrap_or(0).max(0) as u64,
            last_modified: to_system_time(o.last_modified()),
            etag: o.e_tag().map(clean_etag),
            storage_class: o.storage_class().map(|s| s.as_str().to_string()),
            ..Default::default()
        })));
    }
    for p in out.common_prefixes() {
        if let Some(Ok(k)) = p.prefix().map(Key::prefix) {
            page.push(Ok(ListEntry::Prefix(k)));
        }
    }
    if delimiter {
        // Objects and prefixes come in two lists: merge them.
        page.sort_by(|a, b| match (a, b) {
            (Ok(a), Ok(b)) => a.key().as_str().as_bytes().cmp(b.key().as_str().as_bytes()),
            _ => std::cmp::Ordering::Equal,
        });
    }
    page
}

/// Whether a listed entry lies in `range` (errors are always kept).
fn in_range(range: &KeyRange, e: &Result<ListEntry>) -> bool {
    match e {
        Ok(ListEntry::Object(o)) => range.contains(o.key.as_str()),
        Ok(ListEntry::Unlisted(u)) => range.contains(u.key.as_str()),
        Ok(ListEntry::Prefix(p)) => !range.prefix_past_end(p.as_str()) && !range.prefix_before_start(p.as_str()),
        Err(_) => true,
    }
}

/// Whether the listing reached the range's end: two keys of the page are
/// at or past it, or one is and no page follows. A page whose only key
/// past the end is its last, with more pages to come, may carry a key
/// damaged on the way (a plain-HTTP answer has no checksum): the next page
/// is asked for, and `check_order` refuses it if that key was not real.
fn past_range_end(keys: &[&str], range: &KeyRange, truncated: bool) -> bool {
    let Some(end) = &range.end else {
        return false;
    };
    let past = keys.iter().filter(|k| **k >= end.as_str()).count();
    past >= 2 || (past == 1 && !truncated)
}

/// Refuses a page whose keys are not in strictly increasing byte order
/// (within the page and after the pages before) or not under the prefix:
/// no server lists that way, so the answer was damaged on the way — a key
/// changed by a flipped byte would otherwise end a ranged listing early or
/// drop objects without a word. Transient: the retry layer lists again
/// from the last key it handed out.
fn check_order(req: &ListRequest, before: Option<&str>, keys: &[&str]) -> Result<()> {
    let mut prev = before;
    for k in keys {
        let bad = if !k.starts_with(req.prefix.as_str()) {
            Some("a key outside the prefix")
        } else if prev.is_some_and(|p| p.as_bytes() >= k.as_bytes()) {
            Some("keys out of order")
        } else {
            None
        };
        if let Some(what) = bad {
            return Err(StoreError::new(
                Op::List,
                req.prefix.as_str(),
                ErrorKind::Transient,
                format!("a listing page with {what} ({k:?}): damaged on the way"),
            )
            .with_code("ListingDamaged"));
        }
        prev = Some(k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prefix: &str, end: Option<&str>) -> ListRequest {
        let mut r = ListRequest::prefix(Key::prefix(prefix).unwrap_or_else(|e| panic!("{e}")));
        r.range.end = end.map(|e| Key::prefix(e).unwrap_or_else(|e| panic!("{e}")));
        r
    }

    /// A key damaged in a listing answer (a flipped byte) breaks the order
    /// or leaves the prefix: the page is refused, not trusted.
    #[test]
    fn a_damaged_listing_page_is_refused() {
        let r = req("up/", None);
        assert!(check_order(&r, None, &["up/a", "up/b", "up/c"]).is_ok());
        assert!(
            check_order(&r, None, &["up/a", "up/z", "up/c"]).is_err(),
            "a key raised"
        );
        assert!(
            check_order(&r, Some("up/c"), &["up/b"]).is_err(),
            "after the page before"
        );
        assert!(check_order(&r, None, &["up/a", "uq/b"]).is_err(), "outside the prefix");
        let e = check_order(&r, None, &["up/b", "up/a"])
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert!(e.is_retryable(), "{e}");
    }

    /// A ranged listing stops at its end only on evidence: two keys past
    /// it, or one on the last page. A lone last key past the end of a
    /// truncated page (perhaps damaged) asks for the next page.
    #[test]
    fn a_lone_last_key_past_the_end_does_not_end_a_truncated_listing() {
        let r = req("", Some("d10/"));
        assert!(!past_range_end(&["d09/a", "d19/b"], &r.range, true));
        assert!(past_range_end(&["d09/a", "d19/b"], &r.range, false));
        assert!(past_range_end(&["d09/a", "d10/a", "d10/b"], &r.range, true));
        assert!(!past_range_end(&["d09/a", "d09/b"], &r.range, true));
    }
}
