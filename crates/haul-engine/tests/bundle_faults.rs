//! The write side of `haul bundle` under faults and on S3 (moto): a
//! destination that goes down, a flaky source, a changed object refused by
//! the server's own `If-Match`.

mod bundle_common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bundle_common::*;
use futures::TryStreamExt;
use haul_engine::bundle::*;
use haul_store::memory::MemoryServer;
use haul_store::*;

/// S3 on moto: real `If-Match` (412 on a changed object) and suffix reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_roundtrip_with_a_changed_object() -> TestResult {
    if !haul_testkit::s3_enabled() {
        eprintln!("HAUL_TEST_S3=off: S3 backend not tested");
        return Ok(());
    }
    haul_testkit::set_aws_env();
    let server = haul_testkit::moto();
    let conn = haul_store::s3::S3Connection::connect(&haul_store::s3::S3Config {
        endpoint_url: Some(server.endpoint.clone()),
        path_style: true,
        ..Default::default()
    })
    .await?;
    let (bs, bd) = (haul_testkit::unique_bucket("bs"), haul_testkit::unique_bucket("bd"));
    haul_testkit::create_bucket(server, &bs)?;
    haul_testkit::create_bucket(server, &bd)?;
    let (src, dst): (DynStore, DynStore) = (Arc::new(conn.bucket(&bs)), Arc::new(conn.bucket(&bd)));
    let sources = objects(12, 9);
    for (name, body) in &sources {
        put(&src, &format!("src/{name}"), body, PutOptions::default()).await?;
    }
    let listed: Vec<ListEntry> = src.list(ListRequest::prefix(key("src/"))).try_collect().await?;
    let opts = BundleOptions::default();
    let mut g = Grouper::new("m", "src/", &opts);
    let mut planned = Vec::new();
    for e in listed {
        if let ListEntry::Object(m) = e {
            planned.extend(g.push(m));
        }
    }
    planned.extend(g.finish());
    let Some(Planned::Archive(unit)) = planned.pop() else {
        return Err("no archive".into());
    };
    let changed = sources.keys().nth(3).ok_or("keys")?.clone();
    put(&src, &format!("src/{changed}"), b"new bytes", PutOptions::default()).await?;
    let out = write_archive(&src, &dest(&dst, "out/"), &unit, &opts, &transfer()).await?;
    assert_eq!(out.dead.len(), 1);
    assert_eq!(
        (out.dead[0].reason, out.dead[0].status),
        (DeadReason::Changed, Some(412))
    );
    let mut rest = sources.clone();
    rest.remove(&changed);
    let names = check_archive(&dst, "out/m-000001.tar", &rest).await?;
    assert_eq!(names.len(), rest.len());
    check_gnu_tar(&read(&dst, "out/m-000001.tar").await?, &rest, &names)?;
    Ok(())
}

/// A destination that goes down mid-archive fails the archive — with its name — and
/// leaves neither an archive nor a sidecar behind; the sources are intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_fails_the_archive_and_leaves_nothing() -> TestResult {
    let (src, dst) = memory_pair();
    for i in 0..5 {
        put(
            &src,
            &format!("src/k{i}"),
            &haul_testkit::data(3000, i),
            PutOptions::default(),
        )
        .await?;
    }
    let faulty = Arc::new(haul_store::wrap::FaultStore::new(
        dst.clone(),
        haul_store::wrap::FaultConfig {
            latency: std::time::Duration::from_millis(10),
            ..haul_store::wrap::FaultConfig::none(1)
        },
    ));
    let opts = BundleOptions {
        part_size: 2048,
        ..Default::default()
    };
    let mut g = Grouper::new("f", "src/", &opts);
    let listed: Vec<ListEntry> = src.list(ListRequest::prefix(key("src/"))).try_collect().await?;
    let mut planned = Vec::new();
    for e in listed {
        if let ListEntry::Object(m) = e {
            planned.extend(g.push(m));
        }
    }
    let Some(Planned::Archive(unit)) = g.finish() else {
        return Err("no archive".into());
    };
    assert!(planned.is_empty());
    // Down in the middle of the parts.
    let switch = faulty.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(35)).await;
        switch.set_down(true);
    });
    let faulty: DynStore = faulty;
    let e = write_archive(&src, &dest(&faulty, "out/"), &unit, &opts, &transfer())
        .await
        .err()
        .ok_or("a write to a store that went down")?;
    assert!(e.to_string().starts_with("archive f-000001.tar: "), "{e}");
    let left: Vec<ListEntry> = dst.list(ListRequest::prefix(key("out/"))).try_collect().await?;
    assert!(left.is_empty(), "{left:?}");
    for i in 0..5 {
        assert_eq!(read(&src, &format!("src/k{i}")).await?, haul_testkit::data(3000, i));
    }
    Ok(())
}

/// Reads through the retry wrapper over a flaky source (failed requests,
/// bodies cut off, bytes flipped): every member in an archive equals its
/// source; a flipped read, caught by the source's CRC64NVME, is read
/// again, and a member flipped on every read is a dead letter — never a
/// corrupt member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_source_gives_exact_members_or_dead_letters() -> TestResult {
    let server = MemoryServer::new();
    let src: DynStore = Arc::new(server.bucket("src").with_default_crc64());
    let dst: DynStore = Arc::new(server.bucket("dst").with_limits(1, 5 << 30));
    let mut sources = BTreeMap::new();
    for i in 0..60u64 {
        let body = haul_testkit::data(200 + 97 * i as usize, i);
        put(&src, &format!("src/k{i:02}"), &body, PutOptions::default()).await?;
        sources.insert(format!("k{i:02}"), body);
    }
    let flaky: DynStore = Arc::new(haul_store::wrap::FaultStore::new(
        src,
        haul_store::wrap::FaultConfig {
            before_rate: 0.1,
            body_rate: 0.3,
            corrupt_rate: 0.5,
            ..haul_store::wrap::FaultConfig::none(11)
        },
    ));
    let policy = haul_store::wrap::RetryPolicy {
        max_attempts: 30,
        min_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(5),
    };
    let src: DynStore = Arc::new(haul_store::wrap::RetryStore::new(flaky, policy));
    let opts = BundleOptions {
        max_members: 25,
        part_size: 4096,
        ..Default::default()
    };
    let mut dead: Vec<DeadLetter> = Vec::new();
    let run = BundleRun {
        src: &src,
        src_prefix: &key("src/"),
        dst: &dest(&dst, "out/"),
        run: "f",
        opts: &opts,
        transfer: &transfer(),
    };
    let s = run
        .entries(src.list(ListRequest::prefix(key("src/"))), &mut dead)
        .await?;
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(s.members + dead.len() as u64, 60, "{s:?}");
    assert_eq!((s.dead_letters, &s.dead_sample), (dead.len() as u64, &dead));
    // Half the reads flipped, each member read up to 3 times: some are
    // flipped every time (1 in 8; none at all is a 1 in 3,000 chance).
    assert!(!dead.is_empty(), "some members were flipped on every read");
    for d in &dead {
        assert_eq!((d.reason, d.attempts), (DeadReason::Failed, 3), "{d:?}");
        assert!(d.message.contains("CRC64NVME"), "{}", d.message);
    }
    let lines = manifest(&read(&dst, "out/f.bundles.jsonl").await?);
    let mut n = 0;
    for (_, akey, members) in archives(&lines) {
        n += check_archive(&dst, &akey, &sources).await?.len() as u64;
        assert!(members <= 25);
    }
    assert_eq!(n, s.members);
    Ok(())
}
