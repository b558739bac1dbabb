//! Benchmark: a no-op sync of N identical objects between two memory stores.
//! Prints the RSS the stores themselves take, the peak RSS during the sync
//! and the time, so the engine's own memory can be told from the data's.
//!
//!     cargo run --release -p haul-engine --example noop_sync_memory -- 1000000

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use haul_engine::job::JobOptions;
use haul_engine::report::NoObserver;
use haul_engine::shard::Shard;
use haul_engine::sync::SyncJob;
use haul_engine::{Executor, Transfer, TransferOptions};
use haul_store::memory::MemoryStore;
use haul_store::{DynStore, Key, ObjectStore, PutOptions};
use tokio_util::sync::CancellationToken;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let (a, b) = (MemoryStore::new("a"), MemoryStore::new("b"));
    let body = Bytes::from_static(b"x");
    for i in 0..n {
        let k = Key::object(format!("d{:03}/{:07}.bin", i % 1000, i))?;
        a.put(&k, body.clone(), &PutOptions::default()).await?;
        b.put(&k, body.clone(), &PutOptions::default()).await?;
    }
    let base = rss_kib("VmRSS:");
    let (src, dst): (DynStore, DynStore) = (Arc::new(a), Arc::new(b));
    let exec = Executor::new(
        Transfer::new(TransferOptions::default(), CancellationToken::new()),
        JobOptions::default(),
        Arc::new(NoObserver),
    );
    let job = SyncJob::new(Key::root(), Key::root());
    let t = Instant::now();
    let s = exec.sync(&src, &dst, &job, vec![(0, Shard::all())], &|_| {}).await;
    let secs = t.elapsed().as_secs_f64();
    let peak = rss_kib("VmHWM:");
    println!(
        "objects={n} copied={} skipped={} failed={} time_s={secs:.2} objects_per_s={:.0} rss_stores_mib={} peak_rss_mib={} sync_overhead_mib={}",
        s.objects,
        s.skipped,
        s.failed,
        n as f64 / secs,
        base / 1024,
        peak / 1024,
        peak.saturating_sub(base) / 1024
    );
    Ok(())
}
