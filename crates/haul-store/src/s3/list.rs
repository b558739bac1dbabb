//! Listing: ListObjectsV2 pages, in byte order, cut to the requested key
//! range (servers that ignore StartAfter exist).

use futures::stream::{self, BoxStream, StreamExt};

use crate::checksum::clean_etag;
use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;

use super::{to_system_time, S3Store};

impl S3Store {
    pub(super) fn list_objects(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
        struct St {
            token: Option<String>,
            first: bool,
            done: bool,
        }
        let this = self.clone();
        let st = St {
            token: None,
            first: true,
            done: false,
        };
        stream::try_unfold(st, move |mut st| {
            let this = this.clone();
            let req = req.clone();
            async move {
                if st.done || (!st.first && st.token.is_none()) {
                    return Ok(None);
                }
                let mut call = this.conn.client.list_objects_v2().bucket(&this.bucket);
                if !req.prefix.is_empty() {
                    call = call.prefix(req.prefix.as_str());
                }
                if let Some(d) = req.delimiter {
                    call = call.delimiter(d.to_string());
                }
                match &st.token {
                    Some(t) => call = call.continuation_token(t),
                    None => {
                        if let Some(s) = &req.range.start_after {
                            call = call.start_after(s.as_str());
                        }
                    }
                }
                let out = call
                    .send()
                    .await
                    .map_err(|e| this.err(Op::List, req.prefix.as_str(), e))?;
                st.first = false;
                st.token = out.next_continuation_token().map(str::to_string);
                if out.is_truncated() == Some(true) && st.token.is_none() {
                    return Err(StoreError::new(
                        Op::List,
                        req.prefix.as_str(),
                        ErrorKind::Transient,
                        "the server said the listing is truncated but gave no continuation token",
                    ));
                }
                let mut page: Vec<Result<ListEntry>> = Vec::new();
                for o in out.contents() {
                    let Some(k) = o.key() else { continue };
                    let key = match Key::prefix(k) {
                        Ok(key) => key,
                        // Reported, never dropped silently.
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
                if req.delimiter.is_some() {
                    // Objects and prefixes come in two lists: merge them.
                    page.sort_by(|a, b| match (a, b) {
                        (Ok(a), Ok(b)) => a.key().as_str().as_bytes().cmp(b.key().as_str().as_bytes()),
                        _ => std::cmp::Ordering::Equal,
                    });
                }
                // Enforce the range end and the start (servers that ignore
                // StartAfter exist).
                let range = req.range.clone();
                let before = page.len();
                page.retain(|e| match e {
                    Ok(ListEntry::Object(o)) => range.contains(o.key.as_str()),
                    Ok(ListEntry::Unlisted(u)) => range.contains(u.key.as_str()),
                    Ok(ListEntry::Prefix(p)) => {
                        !range.prefix_past_end(p.as_str()) && !range.prefix_before_start(p.as_str())
                    }
                    Err(_) => true,
                });
                if let Some(end) = &range.end {
                    let past = out
                        .contents()
                        .last()
                        .and_then(|o| o.key())
                        .is_some_and(|k| k >= end.as_str());
                    if past
                        || page.len() < before
                            && out
                                .contents()
                                .iter()
                                .any(|o| o.key().is_some_and(|k| k >= end.as_str()))
                    {
                        st.done = true;
                    }
                }
                Ok(Some((stream::iter(page), st)))
            }
        })
        .map(|r: Result<_>| match r {
            Ok(s) => s.left_stream(),
            Err(e) => stream::iter(vec![Err(e)]).right_stream(),
        })
        .flatten()
        .boxed()
    }
}
