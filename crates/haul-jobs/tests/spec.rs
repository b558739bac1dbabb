//! Job specs survive TOML unchanged, with every field away from its
//! default; a minimal file gets the CLI's defaults.

use std::time::Duration;

use haul_engine::march::Compare;
use haul_engine::watch::IfExists;
use haul_jobs::spec::*;
use haul_jobs::JobSpec;

type R = Result<(), Box<dyn std::error::Error>>;

fn conn(tag: &str) -> ConnSpec {
    ConnSpec {
        profile: Some(format!("{tag}-profile")),
        endpoint_url: Some(format!("http://{tag}.example:9000")),
        region: Some("eu-west-3".into()),
        path_style: true,
        request_checksums: RequestChecksums::WhenRequired,
        crc64nvme: Some(false),
        max_requests: 7,
        retries: 3,
        request_timeout: Some(Dur(Duration::from_secs(45))),
    }
}

fn object() -> ObjectSpec {
    ObjectSpec {
        storage_class: Some("GLACIER_IR".into()),
        sse: Some(SseSpec::Kms),
        sse_kms_key_id: Some("alias/k".into()),
        metadata: [("team".to_string(), "data ü".to_string())].into(),
        tags: [("a=b".to_string(), "c&d".to_string())].into(),
        content_type: Some("text/csv".into()),
    }
}

fn transfer() -> TransferSpec {
    TransferSpec {
        concurrency: 3,
        part_size: Size(5 * 1024 * 1024 + 1),
        multipart_threshold: Size(1 << 30),
        parts_per_object: 2,
        max_buffer: Size(1000),
    }
}

fn write() -> WriteSpec {
    WriteSpec {
        metadata_directive: Directive::Replace,
        no_server_side: true,
        preserve_etag: true,
        require_tags: true,
        require_verified: true,
        strict: true,
    }
}

fn filter() -> FilterSpec {
    FilterSpec {
        include: vec!["**/*.gz".into(), "a\"b".into()],
        exclude: vec!["tmp/**".into()],
    }
}

fn loc(s: &str) -> Result<Loc, Box<dyn std::error::Error>> {
    Ok(Loc::parse(s)?)
}

fn every_kind() -> Result<Vec<JobSpec>, Box<dyn std::error::Error>> {
    Ok(vec![
        JobSpec::Cp(CpSpec {
            src: loc("/data/ü nicode")?,
            dst: loc("s3://bkt/x/")?,
            recursive: true,
            dry_run: true,
            filter: filter(),
            object: object(),
            write: write(),
            transfer: transfer(),
            src_conn: conn("src"),
            dst_conn: conn("dst"),
        }),
        JobSpec::Sync(SyncSpec {
            src: loc("s3://abc/p")?,
            dst: loc("./local dir")?,
            compare: Compare::Checksum,
            delete: true,
            max_delete: Some(5),
            dry_run: true,
            part_file: Some("parts.csv".into()),
            no_split: false,
            files_from: None,
            inventory: None,
            shards_in_flight: 9,
            split_min_keys: 11,
            state_dir: Some("/var/lib/haul".into()),
            no_journal: true,
            fresh: true,
            filter: filter(),
            object: object(),
            write: write(),
            transfer: transfer(),
            src_conn: conn("a"),
            dst_conn: conn("b"),
        }),
        JobSpec::Diff(DiffSpec {
            src: loc("s3://abc/p")?,
            dst: loc("s3://bkt/q")?,
            compare: Compare::Size,
            all: true,
            src_conn: conn("a"),
            dst_conn: ConnSpec::default(),
        }),
        JobSpec::Verify(VerifySpec {
            src: loc("s3://abc/p")?,
            dst: loc("s3://bkt/q")?,
            filter: filter(),
            concurrency: 2,
            all: true,
            src_conn: ConnSpec::default(),
            dst_conn: conn("b"),
        }),
        JobSpec::Rm(RmSpec {
            location: loc("s3://abc/tmp/")?,
            recursive: true,
            dry_run: true,
            conn: conn("a"),
        }),
        JobSpec::Restore(RestoreSpec {
            location: loc("s3://abc/2019/")?,
            days: 3,
            tier: Tier::Bulk,
            inventory: Some(loc("s3://inv/abc/manifest.json")?),
            concurrency: 4,
            dry_run: true,
            conn: conn("a"),
        }),
        JobSpec::Watch(WatchSpec {
            dir: "/data/incoming".into(),
            dst: loc("s3://bkt/ingest")?,
            settle: Dur(Duration::from_millis(1500)),
            rescan_every: Dur(Duration::from_secs(7)),
            exclude: vec!["*.lock".into()],
            delete_after_upload: true,
            prune_empty_dirs: true,
            keep_dirs_for: Dur(Duration::from_secs(3600)),
            max_attempts: Some(4),
            retry_max_delay: Dur(Duration::from_secs(90)),
            state_dir: Some("/var/lib/haul".into()),
            once: true,
            shutdown_timeout: Dur(Duration::from_secs(5)),
            log_file: Some("/var/log/haul/watch.log".into()),
            log_retention_days: 3,
            metrics_addr: Some("127.0.0.1:9464".parse()?),
            summary_every: Dur(Duration::from_secs(10)),
            no_events: true,
            if_exists: IfExists::Rename,
            event_queue: 10,
            object: object(),
            transfer: transfer(),
            conn: conn("b"),
        }),
    ])
}

#[test]
fn every_kind_round_trips_through_toml() -> R {
    for spec in every_kind()? {
        let text = spec.to_toml()?;
        let back = JobSpec::from_toml(&text, "test.toml")?;
        assert_eq!(back, spec, "{text}");
        assert_eq!(back.to_toml()?, text);
    }
    Ok(())
}

#[test]
fn a_minimal_file_has_the_cli_defaults() -> R {
    let spec = JobSpec::from_toml("[cp]\nsrc = \"/data\"\ndst = \"s3://bkt/x\"\n", "min.toml")?;
    assert_eq!(spec, JobSpec::Cp(CpSpec::new(loc("/data")?, loc("s3://bkt/x")?)));
    let JobSpec::Cp(cp) = spec else {
        return Err("not cp".into());
    };
    assert_eq!(cp.transfer.concurrency, 64);
    assert_eq!(cp.transfer.part_size, Size(16 * 1024 * 1024));
    assert_eq!(cp.dst_conn.max_requests, 128);
    assert_eq!(cp.dst_conn.retries, 10);
    let sync = JobSpec::from_toml("[sync]\nsrc = \"/data\"\ndst = \"s3://bkt/x\"\n", "min.toml")?;
    let JobSpec::Sync(sync) = sync else {
        return Err("not sync".into());
    };
    assert_eq!(
        (sync.compare, sync.shards_in_flight, sync.split_min_keys),
        (Compare::Etag, 4, 20_000)
    );
    Ok(())
}

#[test]
fn sizes_and_durations_read_as_people_write_them() -> R {
    let spec = JobSpec::from_toml(
        "[watch]\ndir = \"/d\"\ndst = \"s3://bkt\"\nsettle = \"2m 30s\"\n[watch.transfer]\npart_size = 8388608\nmax_buffer = \"1GiB\"\n",
        "w.toml",
    )?;
    let JobSpec::Watch(w) = spec else {
        return Err("not watch".into());
    };
    assert_eq!(w.settle, Dur(Duration::from_secs(150)));
    assert_eq!(w.transfer.part_size, Size(8 * 1024 * 1024));
    assert_eq!(w.transfer.max_buffer, Size(1 << 30));
    Ok(())
}

#[test]
fn the_example_job_files_are_valid() -> R {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/jobs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let spec = JobSpec::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            assert_eq!(JobSpec::from_toml(&spec.to_toml()?, "again")?, spec);
            n += 1;
        }
    }
    assert!(n >= 3, "{n} example job files");
    Ok(())
}
