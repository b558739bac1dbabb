//! `haul ls`: one level (folders as PRE) or, with -r, every object; totals at the end.

use anyhow::Result;
use futures::StreamExt;
use haul_store::location::Location;
use haul_store::{ListEntry, ListRequest};
use serde_json::json;

use crate::args::{Global, LsArgs};
use haul_jobs::{Connector, JobError};

use crate::output::Output;
use crate::to_spec::Side;

pub async fn run(g: &Global, a: LsArgs) -> Result<u8> {
    let loc = Location::parse(&a.location)?;
    let opened = Connector::default()
        .open_existing(&loc, &a.conn.side(Side::Only))
        .await?;
    let out = Output::new(g, false);
    let req = ListRequest {
        prefix: opened.key.clone(),
        delimiter: (!a.recursive).then_some('/'),
        ..Default::default()
    };
    let mut listing = opened.store.list(req);
    let (mut objects, mut bytes, mut prefixes) = (0u64, 0u64, 0u64);
    let mut first = true;
    while let Some(entry) = listing.next().await {
        let entry = match entry {
            Ok(e) => e,
            // The first page failing means the location is unusable; later
            // failures end the listing with what was printed so far.
            Err(e) if first => return Err(JobError::store(e).into()),
            Err(e) => {
                eprintln!("haul: error: {e}");
                return Ok(1);
            }
        };
        first = false;
        match entry {
            ListEntry::Unlisted(u) => eprintln!("skipped {}: {} ({})", u.key, u.detail, u.reason),
            ListEntry::Prefix(p) => {
                prefixes += 1;
                if g.json {
                    out.line(&json!({"prefix": p.as_str()}).to_string());
                } else {
                    out.line(&format!("{:>44} {}", "PRE", p));
                }
            }
            ListEntry::Object(o) => {
                objects += 1;
                bytes += o.size;
                if g.json {
                    out.line(&serde_json::to_string(&o).unwrap_or_default());
                } else {
                    let when = o
                        .last_modified
                        .map(|t| {
                            humantime::format_rfc3339_seconds(t)
                                .to_string()
                                .replace('T', " ")
                                .replace('Z', "")
                        })
                        .unwrap_or_else(|| "-".into());
                    out.line(&format!(
                        "{when:19} {:>12} {:<12} {:<36} {}",
                        o.size,
                        o.storage_class.as_deref().unwrap_or("-"),
                        o.etag.as_deref().unwrap_or("-"),
                        o.key
                    ));
                }
            }
        }
    }
    if g.json {
        out.line(&json!({"event": "summary", "objects": objects, "bytes": bytes, "prefixes": prefixes}).to_string());
    } else if !g.quiet {
        out.line(&format!(
            "Total: {objects} objects, {} ({bytes} bytes){}",
            bytesize::ByteSize(bytes).display().iec(),
            if prefixes > 0 {
                format!(", {prefixes} folders")
            } else {
                String::new()
            }
        ));
    }
    Ok(0)
}
