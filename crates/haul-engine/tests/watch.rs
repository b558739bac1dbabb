//! `haul watch` in the engine: uploads, settling, re-uploads, deletion only
//! after verified uploads, outages, lost events and crashes, against an
//! in-memory store (the CLI tests run it against a real S3 server).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use haul_engine::report::Failure;
use haul_engine::watch::{FileState, Uploaded, Watch, WatchJournal, WatchObserver, WatchOptions, WatchSummary};
use haul_engine::TransferOptions;
use haul_store::memory::MemoryServer;
use haul_store::wrap::{FaultConfig, FaultStore};
use haul_store::{DynStore, Key, PutOptions};
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[derive(Default)]
struct Rec {
    uploads: Mutex<HashMap<String, u32>>,
    failures: Mutex<Vec<(Failure, u32, bool)>>,
}

impl WatchObserver for Rec {
    fn uploaded(&self, u: &Uploaded<'_>) {
        *self
            .uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(u.key.to_string())
            .or_default() += 1;
    }
    fn failed(&self, f: &Failure, attempts: u32, dead: bool) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((f.clone(), attempts, dead));
    }
}

impl Rec {
    fn uploads_of(&self, key: &str) -> u32 {
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
    fn failures(&self) -> usize {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn opts() -> WatchOptions {
    WatchOptions {
        dst_base: Key::prefix("in/").unwrap_or_else(|_| Key::root()),
        settle: Duration::from_millis(300),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        concurrency: 8,
        ..Default::default()
    }
}

fn watch(root: &Path, dst: &DynStore, state: &Path, o: WatchOptions, rec: &Arc<Rec>) -> Result<Watch, String> {
    let journal =
        WatchJournal::open(state, &root.display().to_string(), "memory://b/in/").map_err(|e| e.to_string())?;
    Watch::new(
        root,
        dst.clone(),
        Arc::new(journal),
        o,
        TransferOptions::default(),
        rec.clone(),
    )
    .map_err(|e| e.to_string())
}

async fn read(dst: &DynStore, key: &str) -> Option<Vec<u8>> {
    let g = dst.get(&Key::object(key).ok()?, None).await.ok()?;
    let chunks: Vec<bytes::Bytes> = g.body.try_collect().await.ok()?;
    Some(chunks.concat())
}

/// Runs a daemon until `done` holds (or `limit` passes), then stops it.
async fn run_until<F, Fut>(w: Watch, limit: Duration, mut done: F) -> Result<WatchSummary, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { w.run(s).await });
    let deadline = tokio::time::Instant::now() + limit;
    while !done().await {
        if tokio::time::Instant::now() > deadline {
            stop.cancel();
            let _ = task.await;
            return Err("condition not reached in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

/// A tree to watch and a state directory (both removed when dropped), and
/// the tree's path.
fn dirs() -> std::io::Result<(tempfile::TempDir, tempfile::TempDir, std::path::PathBuf)> {
    let root = tempfile::tempdir()?;
    let r = root.path().to_path_buf();
    Ok((root, tempfile::tempdir()?, r))
}

fn write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, data)
}

#[tokio::test]
async fn once_uploads_the_tree_deletes_only_verified_files_and_ignores_temp_files() -> TestResult {
    let (_root, state, r) = dirs()?;
    let r = r.as_path();
    let mut files = Vec::new();
    for (i, rel) in ["2026/11/20/a.csv", "2026/11/20/b.csv", "2026/11/21/c.json", "top.bin"]
        .iter()
        .enumerate()
    {
        let data = haul_testkit::data(1000 + i * 777, i as u64);
        write(&r.join(rel), &data)?;
        files.push((rel.to_string(), data));
    }
    for ignored in [
        "2026/11/21/.c.json.swp",
        "2026/11/21/d.tmp",
        "e.part",
        ".hidden/f",
        "2026/x.lock",
    ] {
        write(&r.join(ignored), b"not for upload")?;
    }
    let dst: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    let rec = Arc::new(Rec::default());
    let o = WatchOptions {
        once: true,
        delete_after_upload: true,
        prune_empty_dirs: true,
        keep_dirs_for: Duration::ZERO,
        settle: Duration::ZERO,
        exclude: vec!["**/*.lock".into()],
        ..opts()
    };
    let w = watch(r, &dst, state.path(), o, &rec)?;
    let summary = w.run(CancellationToken::new()).await?;
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!((summary.uploaded_files, summary.deleted_files), (4, 4));
    for (rel, data) in &files {
        assert_eq!(
            read(&dst, &format!("in/{rel}")).await.as_deref(),
            Some(&data[..]),
            "{rel}"
        );
        assert!(!r.join(rel).exists(), "{rel} deleted after its verified upload");
    }
    for ignored in [
        "2026/11/21/.c.json.swp",
        "2026/11/21/d.tmp",
        "e.part",
        ".hidden/f",
        "2026/x.lock",
    ] {
        assert!(r.join(ignored).exists(), "{ignored} left alone");
        assert!(
            read(&dst, &format!("in/{ignored}")).await.is_none(),
            "{ignored} not uploaded"
        );
    }
    assert!(!r.join("2026/11/20").exists(), "emptied folder pruned");
    assert!(r.join("2026/11/21").exists(), "a folder with ignored files stays");
    let j = WatchJournal::open_existing(state.path())?;
    assert_eq!(j.rows()?, 0, "done files leave no rows");
    let st = j.status(5)?;
    assert_eq!((st.counts.uploaded_files, st.counts.deleted_files), (4, 4));
    Ok(())
}

#[tokio::test]
async fn a_slowly_written_file_is_uploaded_once_complete_and_again_when_changed() -> TestResult {
    let (_root, state, r) = dirs()?;
    let dst: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    let rec = Arc::new(Rec::default());
    let o = WatchOptions {
        settle: Duration::from_millis(800),
        ..opts()
    };
    let w = watch(&r, &dst, state.path(), o, &rec)?;
    let full = haul_testkit::data(300_000, 7);
    let changed = haul_testkit::data(200_000, 8);
    let (r2, full2, changed2, rec2) = (r.clone(), full.clone(), changed.clone(), rec.clone());
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::create_dir_all(r2.join("2026/11/21"))?;
        // Several writes, 250 ms apart, on one open file.
        let mut f = std::fs::File::create(r2.join("2026/11/21/slow.bin"))?;
        for chunk in full2.chunks(100_000) {
            std::io::Write::write_all(&mut f, chunk)?;
            std::io::Write::flush(&mut f)?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        drop(f);
        // Changed after its upload: uploaded again.
        while rec2.uploads_of("2026/11/21/slow.bin") == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(r2.join("2026/11/21/slow.bin"), &changed2)?;
        Ok::<_, std::io::Error>(())
    });
    let (d, c) = (dst.clone(), changed.clone());
    let summary = run_until(w, Duration::from_secs(20), || {
        let (d, c) = (d.clone(), c.clone());
        async move { read(&d, "in/2026/11/21/slow.bin").await.as_deref() == Some(&c[..]) }
    })
    .await?;
    writer.await??;
    assert_eq!(
        rec.uploads_of("2026/11/21/slow.bin"),
        2,
        "once complete, once changed: {summary:?}"
    );
    assert_eq!(summary.failed_attempts, 0);
    assert!(
        r.join("2026/11/21/slow.bin").exists(),
        "kept without --delete-after-upload"
    );
    Ok(())
}

#[tokio::test]
async fn an_outage_is_retried_with_backoff_across_a_restart_and_nothing_is_deleted_before_upload() -> TestResult {
    let (_root, state, r) = dirs()?;
    let mem: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    let faulty = Arc::new(FaultStore::new(mem.clone(), FaultConfig::none(1)));
    let dst: DynStore = faulty.clone();
    let mut files = Vec::new();
    for i in 0..20 {
        let rel = format!("d{}/f{i}.dat", i % 3);
        let data = haul_testkit::data(5000 + i, i as u64);
        write(&r.join(&rel), &data)?;
        files.push((rel, data));
    }
    faulty.set_down(true);
    let o = WatchOptions {
        delete_after_upload: true,
        settle: Duration::ZERO,
        ..opts()
    };
    // First run: the server is down the whole time.
    let rec = Arc::new(Rec::default());
    let w = watch(&r, &dst, state.path(), o.clone(), &rec)?;
    let rec2 = rec.clone();
    run_until(w, Duration::from_secs(10), || {
        let n = rec2.failures();
        async move { n >= 40 }
    })
    .await?;
    for (rel, _) in &files {
        assert!(r.join(rel).exists(), "{rel} kept while its upload fails");
    }
    let j = WatchJournal::open_existing(state.path())?;
    let (st, attempts) = j.state_of(&files[0].0)?.ok_or("no row")?;
    assert!(
        matches!(st, FileState::Failed | FileState::Pending | FileState::Uploading) && attempts >= 1,
        "{st:?} {attempts}"
    );
    let status = j.status(3)?;
    assert_eq!(status.recent_failures[0].code, "ConnectionRefused");
    drop(j);

    // Restart during the outage; the server comes back after a while.
    let rec = Arc::new(Rec::default());
    let w = watch(&r, &dst, state.path(), o, &rec)?;
    let f2 = faulty.clone();
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        f2.set_down(false);
    });
    let rr = r.clone();
    let summary = run_until(w, Duration::from_secs(20), || {
        let n = std::fs::read_dir(&rr).map(|d| d.count()).unwrap_or(99);
        let up = rec.uploads.lock().map(|u| u.len()).unwrap_or(0);
        async move { n == 3 && up == 20 }
    })
    .await?;
    back.await?;
    assert_eq!(summary.uploaded_files, 20, "{summary:?}");
    for (rel, data) in &files {
        assert_eq!(
            read(&mem, &format!("in/{rel}")).await.as_deref(),
            Some(&data[..]),
            "{rel}"
        );
        assert!(!r.join(rel).exists(), "{rel} deleted after its upload");
    }
    Ok(())
}

#[tokio::test]
async fn a_burst_of_20000_files_all_arrive_even_when_the_event_queue_overflows() -> TestResult {
    let (_root, state, r) = dirs()?;
    let dst: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    let rec = Arc::new(Rec::default());
    let o = WatchOptions {
        settle: Duration::from_millis(200),
        event_queue: 16,
        concurrency: 32,
        delete_after_upload: true,
        ..opts()
    };
    let w = watch(&r, &dst, state.path(), o, &rec)?;
    let r2 = r.clone();
    let writer = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        for i in 0..20_000u32 {
            let rel = format!("2026/11/{:02}/{:03}/f{i}", i % 30, i % 100);
            write(&r2.join(rel), &i.to_le_bytes())?;
        }
        Ok::<_, std::io::Error>(())
    });
    let rec2 = rec.clone();
    let st = state.path().to_path_buf();
    // Every file uploaded, and each deleted after its second settle window.
    let summary = run_until(w, Duration::from_secs(240), || {
        let n = rec2.uploads.lock().map(|u| u.len()).unwrap_or(0);
        let rows = if n == 20_000 {
            WatchJournal::open_existing(&st).and_then(|j| j.rows()).unwrap_or(1)
        } else {
            1
        };
        async move { n == 20_000 && rows == 0 }
    })
    .await?;
    writer.await??;
    assert!(summary.scans >= 2, "the overflow caused a rescan: {summary:?}");
    for i in (0..20_000u32).step_by(997) {
        let rel = format!("2026/11/{:02}/{:03}/f{i}", i % 30, i % 100);
        assert_eq!(read(&dst, &format!("in/{rel}")).await, Some(i.to_le_bytes().to_vec()));
    }
    let j = WatchJournal::open_existing(state.path())?;
    assert_eq!(j.rows()?, 0);
    Ok(())
}

#[tokio::test]
async fn a_restart_aborts_the_multipart_upload_of_a_crashed_run_and_uploads_again() -> TestResult {
    let (_root, state, r) = dirs()?;
    let r = r.as_path();
    let server = MemoryServer::new();
    let mem = server.bucket("b");
    let dst: DynStore = Arc::new(mem.clone());
    let data = haul_testkit::data(3 << 20, 3);
    write(&r.join("big.bin"), &data)?;
    // What a run killed mid-upload leaves: a row `uploading` and an open upload.
    {
        let j = WatchJournal::open(state.path(), &r.canonicalize()?.display().to_string(), "memory://b/in/")?;
        let mtime = std::fs::metadata(r.join("big.bin"))?.modified()?;
        j.enqueue(&[haul_engine::watch::journal::Seen {
            key: "big.bin".into(),
            size: data.len() as u64,
            mtime_ns: haul_engine::watch::tree::time_ns(mtime),
            ctime_ns: 0,
            closed: false,
            not_before_ms: 0,
        }])?;
        j.take_due(i64::MAX, 1)?;
        let id = dst
            .create_multipart(&Key::object("in/big.bin")?, &PutOptions::default())
            .await?;
        j.set_upload("big.bin", "in/big.bin", &id.0)?;
    }
    assert_eq!(server.open_uploads(), 1);
    let rec = Arc::new(Rec::default());
    let journal = WatchJournal::open(state.path(), &r.canonicalize()?.display().to_string(), "memory://b/in/")?;
    let topts = TransferOptions {
        multipart_threshold: 1 << 20,
        part_size: 1 << 20,
        ..Default::default()
    };
    let o = WatchOptions {
        once: true,
        settle: Duration::ZERO,
        ..opts()
    };
    let w = Watch::new(r, dst.clone(), Arc::new(journal), o, topts, rec.clone())?;
    let summary = w.run(CancellationToken::new()).await?;
    assert_eq!(summary.uploaded_files, 1, "{summary:?}");
    assert_eq!(server.open_uploads(), 0, "the orphaned upload was aborted");
    assert_eq!(read(&dst, "in/big.bin").await.as_deref(), Some(&data[..]));
    Ok(())
}

#[tokio::test]
async fn a_file_changed_while_it_uploads_is_uploaded_again_and_deleted_only_then() -> TestResult {
    let (_root, state, r) = dirs()?;
    let mem: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    // Slow requests: the file is rewritten while its upload is under way.
    let cfg = FaultConfig {
        latency: Duration::from_millis(400),
        ..FaultConfig::none(2)
    };
    let dst: DynStore = Arc::new(FaultStore::new(mem.clone(), cfg));
    let first = haul_testkit::data(10_000, 1);
    let second = haul_testkit::data(12_000, 2);
    write(&r.join("x.dat"), &first)?;
    let old = filetime::FileTime::from_unix_time(1_700_000_000, 0);
    filetime::set_file_mtime(r.join("x.dat"), old)?;
    let rec = Arc::new(Rec::default());
    let o = WatchOptions {
        delete_after_upload: true,
        settle: Duration::from_millis(100),
        ..opts()
    };
    let w = watch(&r, &dst, state.path(), o, &rec)?;
    let r2 = r.clone();
    let s2 = second.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(r2.join("x.dat"), &s2)
    });
    let (m, rr) = (mem.clone(), r.clone());
    run_until(w, Duration::from_secs(20), || {
        let (m, gone) = (m.clone(), !rr.join("x.dat").exists());
        async move { gone && read(&m, "in/x.dat").await.is_some() }
    })
    .await?;
    writer.await??;
    assert_eq!(
        read(&mem, "in/x.dat").await.as_deref(),
        Some(&second[..]),
        "the file was deleted only once its current content was uploaded"
    );
    Ok(())
}

#[tokio::test]
async fn once_exits_1_when_the_destination_cannot_be_listed_and_keeps_every_file() -> TestResult {
    let (_root, state, r) = dirs()?;
    write(&r.join("a/x.csv"), b"x")?;
    let mem: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    let faulty = Arc::new(FaultStore::new(mem.clone(), FaultConfig::none(3)));
    faulty.set_down(true);
    let dst: DynStore = faulty.clone();
    let rec = Arc::new(Rec::default());
    // Without --delete-after-upload the scan marches against the
    // destination's listing, which fails: a --once run must not exit 0.
    let o = WatchOptions {
        once: true,
        settle: Duration::ZERO,
        ..opts()
    };
    let summary = watch(&r, &dst, state.path(), o, &rec)?
        .run(CancellationToken::new())
        .await?;
    assert_eq!(summary.scan_errors, 1, "{summary:?}");
    assert_eq!(summary.exit_code(), 1);
    assert!(r.join("a/x.csv").exists());
    assert!(read(&mem, "in/a/x.csv").await.is_none());
    Ok(())
}

/// Item 1 of issue 11: a link to a folder outside the tree, made while the
/// daemon runs, and a link to a file: nothing outside is read or deleted.
#[tokio::test]
async fn symlinks_made_while_watching_are_never_followed_nor_deleted_through() -> TestResult {
    let (_root, state, r) = dirs()?;
    let outside = tempfile::tempdir()?;
    write(&outside.path().join("keep/a.csv"), b"outside a")?;
    write(&outside.path().join("b.csv"), b"outside b")?;
    let dst: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    let rec = Arc::new(Rec::default());
    let o = WatchOptions {
        delete_after_upload: true,
        settle: Duration::from_millis(200),
        ..opts()
    };
    let w = watch(&r, &dst, state.path(), o, &rec)?;
    let (r2, out2) = (r.clone(), outside.path().to_path_buf());
    let maker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        std::os::unix::fs::symlink(&out2, r2.join("link"))?;
        std::os::unix::fs::symlink(out2.join("b.csv"), r2.join("flink.csv"))?;
        std::fs::create_dir(r2.join("sub"))?;
        std::os::unix::fs::symlink(&out2, r2.join("sub/deeper"))?;
        // Touch the files behind the links: events through them are not followed either.
        std::fs::write(out2.join("keep/c.csv"), b"outside c")?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        write(&r2.join("last.csv"), b"in the tree")
    });
    let rr = r.clone();
    let summary = run_until(w, Duration::from_secs(20), || {
        let done = !rr.join("last.csv").exists() && rec.uploads_of("last.csv") == 1;
        async move { done }
    })
    .await?;
    maker.await??;
    for f in ["keep/a.csv", "keep/c.csv", "b.csv"] {
        assert!(outside.path().join(f).exists(), "{f} outside the tree is never deleted");
    }
    let keys: Vec<String> = dst
        .list(haul_store::ListRequest::default())
        .map_ok(|e| e.key().as_str().to_string())
        .try_collect()
        .await?;
    assert_eq!(keys, vec!["in/last.csv".to_string()], "nothing read through a link");
    assert!(
        r.join("link").exists() && r.join("flink.csv").exists(),
        "links left alone"
    );
    assert_eq!(summary.skipped_symlinks, 3, "each link counted once: {summary:?}");
    assert_eq!(summary.failed_attempts, 0);
    let st = WatchJournal::open_existing(state.path())?.status(5)?;
    assert_eq!(st.counts.skipped_symlinks, 3);
    Ok(())
}

/// Item 1: a folder swapped for a link (to a folder holding a hard link of
/// the very file) between the upload and the deletion: nothing is deleted
/// through the link.
#[tokio::test]
async fn a_folder_swapped_for_a_link_after_the_upload_deletes_nothing_outside() -> TestResult {
    let (_root, state, r) = dirs()?;
    let outside = tempfile::tempdir_in(r.parent().ok_or("no parent")?)?;
    write(&r.join("d/f.csv"), b"the only copy")?;
    // The same inode outside the tree: a path-based check cannot tell them apart.
    std::fs::hard_link(r.join("d/f.csv"), outside.path().join("f.csv"))?;
    let mem: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    let cfg = FaultConfig {
        latency: Duration::from_millis(600),
        ..FaultConfig::none(4)
    };
    let dst: DynStore = Arc::new(FaultStore::new(mem.clone(), cfg));
    let rec = Arc::new(Rec::default());
    let o = WatchOptions {
        once: true,
        delete_after_upload: true,
        settle: Duration::ZERO,
        ..opts()
    };
    let w = watch(&r, &dst, state.path(), o, &rec)?;
    let (r2, out2) = (r.clone(), outside.path().to_path_buf());
    let swapper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        std::fs::rename(r2.join("d"), r2.join("d.old"))?;
        std::os::unix::fs::symlink(&out2, r2.join("d"))
    });
    let summary = w.run(CancellationToken::new()).await?;
    swapper.await??;
    assert_eq!(summary.deleted_files, 0, "{summary:?}");
    assert!(
        outside.path().join("f.csv").exists(),
        "nothing deleted through the link"
    );
    assert!(r.join("d.old/f.csv").exists());
    assert_eq!(summary.skipped_symlinks, 1, "{summary:?}");
    Ok(())
}

/// Item 1: `--once` with links present: not followed, counted, exit 0.
#[tokio::test]
async fn once_skips_links_counts_them_and_exits_0() -> TestResult {
    let (_root, state, r) = dirs()?;
    let outside = tempfile::tempdir()?;
    write(&outside.path().join("x.csv"), b"outside")?;
    write(&r.join("a/in.csv"), b"inside")?;
    std::os::unix::fs::symlink(outside.path(), r.join("a/out"))?;
    std::os::unix::fs::symlink(outside.path().join("x.csv"), r.join("x.csv"))?;
    let dst: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    let rec = Arc::new(Rec::default());
    for _ in 0..2 {
        let o = WatchOptions {
            once: true,
            settle: Duration::ZERO,
            ..opts()
        };
        let summary = watch(&r, &dst, state.path(), o, &rec)?
            .run(CancellationToken::new())
            .await?;
        assert_eq!(summary.exit_code(), 0, "{summary:?}");
        assert_eq!(
            summary.skipped_symlinks, 2,
            "counted once, not once per run: {summary:?}"
        );
    }
    assert_eq!(read(&dst, "in/a/in.csv").await.as_deref(), Some(&b"inside"[..]));
    assert!(read(&dst, "in/x.csv").await.is_none());
    assert!(read(&dst, "in/a/out/x.csv").await.is_none());
    Ok(())
}

/// Item 2 of issue 11: a writer that pauses longer than the settle time
/// keeps its file: the object gets all its bytes, and the file is deleted
/// only after the writer closed it.
#[tokio::test]
async fn a_file_open_for_writing_is_neither_uploaded_half_nor_deleted_until_closed() -> TestResult {
    let (_root, state, r) = dirs()?;
    let dst: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    let rec = Arc::new(Rec::default());
    let settle = Duration::from_millis(300);
    let o = WatchOptions {
        delete_after_upload: true,
        settle,
        ..opts()
    };
    let w = watch(&r, &dst, state.path(), o, &rec)?;
    let data = haul_testkit::data(128 << 10, 11);
    let (r2, d2) = (r.clone(), data.clone());
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let path = r2.join("slow.bin");
        let mut f = std::fs::File::create(&path)?;
        std::io::Write::write_all(&mut f, &d2[..64 << 10])?;
        tokio::time::sleep(settle * 3).await;
        let present_before_second_write = path.exists();
        std::io::Write::write_all(&mut f, &d2[64 << 10..])?;
        let present_at_close = path.exists();
        drop(f);
        Ok::<_, std::io::Error>((present_before_second_write, present_at_close))
    });
    let (d, rr) = (dst.clone(), r.clone());
    run_until(w, Duration::from_secs(20), || {
        let (d, gone) = (d.clone(), !rr.join("slow.bin").exists());
        async move { gone && read(&d, "in/slow.bin").await.is_some() }
    })
    .await?;
    let (before, at_close) = writer.await??;
    assert!(before && at_close, "deleted while the writer had it open");
    assert_eq!(
        read(&dst, "in/slow.bin").await.map(|b| b.len()),
        Some(data.len()),
        "the object holds every byte written"
    );
    assert_eq!(read(&dst, "in/slow.bin").await.as_deref(), Some(&data[..]));
    Ok(())
}

/// Item 2 of issue 11: a writer that opened the file before the watch
/// started (no event tells of it) and pauses, open, for many settle times:
/// its first half is uploaded, but the file is not deleted while it is
/// open for writing (the read lease is refused); after the close the
/// object holds every byte and only then is the file deleted.
#[tokio::test]
async fn a_file_held_open_for_writing_since_before_the_watch_is_not_deleted_until_closed() -> TestResult {
    let (_root, state, r) = dirs()?;
    let dst: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    let rec = Arc::new(Rec::default());
    let settle = Duration::from_millis(200);
    let data = haul_testkit::data(128 << 10, 12);
    let path = r.join("held.bin");
    let mut f = std::fs::File::create(&path)?;
    std::io::Write::write_all(&mut f, &data[..64 << 10])?;
    let o = WatchOptions {
        delete_after_upload: true,
        settle,
        ..opts()
    };
    let w = watch(&r, &dst, state.path(), o, &rec)?;
    let (d2, p2, data2) = (dst.clone(), path.clone(), data.clone());
    let writer = tokio::spawn(async move {
        // The first half is uploaded: the watch took the file as settled.
        while read(&d2, "in/held.bin").await.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(settle * 6).await;
        let present_while_open = p2.exists();
        std::io::Write::write_all(&mut f, &data2[64 << 10..])?;
        drop(f);
        Ok::<_, std::io::Error>(present_while_open)
    });
    let (d, rr, full) = (dst.clone(), path.clone(), data.clone());
    let ran = run_until(w, Duration::from_secs(30), || {
        let (d, gone, full) = (d.clone(), !rr.exists(), full.clone());
        async move { gone && read(&d, "in/held.bin").await.as_deref() == Some(&full[..]) }
    })
    .await;
    assert!(writer.await??, "deleted while a writer had it open");
    ran?;
    assert_eq!(read(&dst, "in/held.bin").await.as_deref(), Some(&data[..]));
    Ok(())
}

/// Item 7 of issue 11: a file dated in 2099 settles by haul's clock.
#[tokio::test]
async fn a_future_dated_file_is_uploaded() -> TestResult {
    let (_root, state, r) = dirs()?;
    write(&r.join("cam/img.jpg"), b"from a camera with a bad clock")?;
    let y2099 = filetime::FileTime::from_unix_time(4_070_908_800, 0);
    filetime::set_file_mtime(r.join("cam/img.jpg"), y2099)?;
    let dst: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    let rec = Arc::new(Rec::default());
    let o = WatchOptions {
        once: true,
        delete_after_upload: true,
        settle: Duration::from_millis(200),
        ..opts()
    };
    let w = watch(&r, &dst, state.path(), o, &rec)?;
    let summary = tokio::time::timeout(Duration::from_secs(15), w.run(CancellationToken::new()))
        .await
        .map_err(|_| "a future-dated file never settled")??;
    assert_eq!((summary.uploaded_files, summary.deleted_files), (1, 1), "{summary:?}");
    assert_eq!(
        read(&dst, "in/cam/img.jpg").await.as_deref(),
        Some(&b"from a camera with a bad clock"[..])
    );
    Ok(())
}

/// Item 8 of issue 11: a path that comes back does not replace the only
/// copy of its earlier content with `--if-exists skip` (kept locally, a
/// dead letter) or `rename` (uploaded beside it).
#[tokio::test]
async fn if_exists_skip_keeps_the_object_and_the_file_and_rename_uploads_beside_it() -> TestResult {
    use haul_engine::watch::IfExists;
    let dst: DynStore = Arc::new(MemoryServer::new().bucket("b"));
    dst.put(
        &Key::object("in/export.csv")?,
        bytes::Bytes::from_static(b"yesterday"),
        &PutOptions::default(),
    )
    .await?;
    for mode in [IfExists::Skip, IfExists::Rename] {
        let (_root, state, r) = dirs()?;
        write(&r.join("export.csv"), b"today")?;
        let rec = Arc::new(Rec::default());
        let o = WatchOptions {
            once: true,
            delete_after_upload: true,
            settle: Duration::ZERO,
            if_exists: mode,
            ..opts()
        };
        let summary = watch(&r, &dst, state.path(), o, &rec)?
            .run(CancellationToken::new())
            .await?;
        assert_eq!(
            read(&dst, "in/export.csv").await.as_deref(),
            Some(&b"yesterday"[..]),
            "{mode:?}"
        );
        let keys: Vec<String> = dst
            .list(haul_store::ListRequest::default())
            .map_ok(|e| e.key().as_str().to_string())
            .try_collect()
            .await?;
        match mode {
            IfExists::Skip => {
                assert!(r.join("export.csv").exists(), "not uploaded: kept");
                assert_eq!((summary.skipped_exists, summary.dead), (1, 1), "{summary:?}");
                assert_eq!(summary.exit_code(), 1);
                assert_eq!(keys.len(), 1, "{keys:?}");
            }
            _ => {
                assert!(
                    !r.join("export.csv").exists(),
                    "uploaded under a new name, then deleted"
                );
                assert_eq!(keys.len(), 2, "{keys:?}");
                let renamed = keys.iter().find(|k| *k != "in/export.csv").ok_or("no renamed key")?;
                assert!(
                    renamed.starts_with("in/export.2") && renamed.ends_with("Z.csv"),
                    "{renamed}"
                );
                assert_eq!(read(&dst, renamed).await.as_deref(), Some(&b"today"[..]));
                assert_eq!(summary.exit_code(), 0, "{summary:?}");
            }
        }
    }
    Ok(())
}
