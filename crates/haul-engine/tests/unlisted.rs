//! Listing entries that cannot be objects (issue 11, item 6): a dangling
//! link, a link loop, a FIFO, a socket, a name that is not UTF-8 in a local
//! source, S3 folder markers into a local directory. Each is skipped and
//! reported with its reason; the rest of the tree is copied, and deletes of
//! other keys still run.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use haul_engine::job::JobOptions;
use haul_engine::march::Compare;
use haul_engine::report::{Observer, SkipReason};
use haul_engine::shard::Shard;
use haul_engine::sync::SyncJob;
use haul_engine::{Executor, Filter, Summary, Transfer, TransferOptions};
use haul_store::local::LocalStore;
use haul_store::memory::MemoryStore;
use haul_store::*;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn key(s: &str) -> Key {
    Key::object(s).unwrap_or_else(|e| panic!("{e}"))
}

/// Records skipped entries.
#[derive(Default)]
struct Seen(Mutex<BTreeMap<String, SkipReason>>);

impl Observer for Seen {
    fn unlisted(&self, key: &str, reason: SkipReason, _detail: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), reason);
    }
}

async fn sync(src: &DynStore, dst: &DynStore, exclude: &[String], obs: Arc<Seen>) -> Summary {
    let exec = Executor::new(
        Transfer::new(TransferOptions::default(), CancellationToken::new()),
        JobOptions::default(),
        obs,
    );
    let job = SyncJob {
        compare: Compare::Etag,
        delete: true,
        filter: Filter::new(&[], exclude).unwrap_or_else(|e| panic!("{e}")),
        ..SyncJob::new(Key::root(), Key::root())
    };
    exec.sync(src, dst, &job, vec![(0, Shard::all())], &|_| {}).await
}

async fn keys(s: &DynStore) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut l = s.list(ListRequest::prefix(Key::root()));
    while let Some(e) = l.try_next().await? {
        if let ListEntry::Object(o) = e {
            out.push(o.key.to_string());
        }
    }
    Ok(out)
}

#[tokio::test]
async fn entries_that_are_not_objects_are_skipped_and_the_sync_goes_on() -> TestResult {
    let dir = tempfile::tempdir()?;
    let t = dir.path();
    std::fs::write(t.join("a.txt"), b"a")?;
    std::fs::create_dir_all(t.join("m"))?;
    std::fs::write(t.join("m/real.txt"), b"real")?;
    // An editor's lock file: a dangling link.
    std::os::unix::fs::symlink("user@host.1234:1700000000", t.join("m/.#real.txt"))?;
    std::os::unix::fs::symlink(t.join("loop"), t.join("loop"))?;
    std::os::unix::fs::symlink(t.join("m/real.txt"), t.join("m/link.txt"))?;
    let made = std::process::Command::new("mkfifo").arg(t.join("fifo")).status()?;
    assert!(made.success(), "mkfifo");
    let _sock = std::os::unix::net::UnixListener::bind(t.join("sock"))?;
    std::fs::write(t.join(std::ffi::OsStr::from_bytes(b"bad-\xff.txt")), b"latin-1")?;
    std::fs::write(t.join("z.txt"), b"z")?;
    let src: DynStore = Arc::new(LocalStore::new(t)?);
    let mem = MemoryStore::new("dst");
    mem.put(&key("old.txt"), Bytes::from_static(b"gone"), &PutOptions::default())
        .await?;
    let dst: DynStore = Arc::new(mem);

    let seen = Arc::new(Seen::default());
    let s = sync(&src, &dst, &[], seen.clone()).await;
    assert_eq!(s.failed, 0, "{:?}", s.first_failures);
    assert_eq!(s.deleted, 1, "deletes of other keys still run");
    assert_eq!(s.unlisted, 5, "{s:?}");
    // Everything after the bad entries is copied; links to files followed.
    assert_eq!(keys(&dst).await?, ["a.txt", "m/link.txt", "m/real.txt", "z.txt"]);
    let got = seen.0.lock().map(|m| m.clone()).unwrap_or_default();
    let want: BTreeMap<String, SkipReason> = [
        ("bad-\u{FFFD}.txt", SkipReason::InvalidName),
        ("fifo", SkipReason::SpecialFile),
        ("loop", SkipReason::Symlink),
        ("m/.#real.txt", SkipReason::Symlink),
        ("sock", SkipReason::SpecialFile),
    ]
    .into_iter()
    .map(|(k, r)| (k.to_string(), r))
    .collect();
    assert_eq!(got, want);

    // Excluded entries are not reported at all.
    let seen = Arc::new(Seen::default());
    let s = sync(&src, &dst, &["**/.#*".into(), "fifo".into()], seen.clone()).await;
    assert_eq!((s.failed, s.unlisted), (0, 3), "{s:?}");
    assert!(!seen.0.lock().map(|m| m.contains_key("m/.#real.txt")).unwrap_or(true));
    Ok(())
}

#[tokio::test]
async fn folder_markers_into_a_local_directory_are_skipped() -> TestResult {
    let mem = MemoryStore::new("src");
    for k in ["logs/", "logs/a.gz", "logs/2026/", "logs/2026/b.gz"] {
        mem.put(&key(k), Bytes::from_static(b"x"), &PutOptions::default())
            .await?;
    }
    let src: DynStore = Arc::new(mem);
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("extra.txt"), b"only here")?;
    let dst: DynStore = Arc::new(LocalStore::new(dir.path())?);
    let seen = Arc::new(Seen::default());
    let s = sync(&src, &dst, &[], seen.clone()).await;
    assert_eq!(s.failed, 0, "{:?}", s.first_failures);
    assert_eq!((s.unlisted, s.deleted), (2, 1), "{s:?}");
    assert_eq!(keys(&dst).await?, ["logs/2026/b.gz", "logs/a.gz"]);
    let got = seen.0.lock().map(|m| m.clone()).unwrap_or_default();
    assert_eq!(got.get("logs/2026/"), Some(&SkipReason::FolderMarker));
    Ok(())
}

/// `--exclude` applies before an entry is looked at: the local walk asks
/// the filter about every non-folder entry before it stats it or follows a
/// link, so an excluded dangling link is neither classified nor reported,
/// and folders are never asked about (their files may be included).
#[tokio::test]
async fn exclusions_apply_before_an_entry_is_looked_at() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::write(root.join("a.txt"), b"a")?;
    std::fs::write(root.join("x.tmp"), b"x")?;
    std::fs::create_dir(root.join("d"))?;
    std::fs::write(root.join("d/b.txt"), b"b")?;
    std::os::unix::fs::symlink(root.join("nowhere"), root.join(".#lock"))?;
    let store: DynStore = Arc::new(LocalStore::new(root)?);
    let filter = Filter::new(&[], &[".#*".into(), "**/*.tmp".into(), "*.tmp".into()])?;
    let asked = Arc::new(Mutex::new(Vec::<String>::new()));
    let (inner, log) = (filter.skip_keys(&Key::root()), asked.clone());
    let inner = inner.ok_or("a filter gives a skip hint")?;
    let skip = SkipKeys(Arc::new(move |k: &str| {
        log.lock().unwrap_or_else(|e| e.into_inner()).push(k.to_string());
        inner.skips(k)
    }));
    let listed: Vec<ListEntry> = store
        .list(ListRequest {
            skip: Some(skip),
            ..ListRequest::prefix(Key::root())
        })
        .try_collect()
        .await?;
    let keys: Vec<String> = listed.iter().map(|e| e.key().to_string()).collect();
    assert_eq!(keys, vec!["a.txt".to_string(), "d/b.txt".to_string()]);
    let mut asked = asked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    asked.sort();
    assert_eq!(
        asked,
        vec![".#lock", "a.txt", "d/b.txt", "x.tmp"],
        "folders are never asked about"
    );
    // Without the hint the dangling link is an entry to report.
    let plain: Vec<ListEntry> = store.list(ListRequest::prefix(Key::root())).try_collect().await?;
    assert!(plain
        .iter()
        .any(|e| matches!(e, ListEntry::Unlisted(u) if u.key.as_str() == ".#lock")));
    Ok(())
}
