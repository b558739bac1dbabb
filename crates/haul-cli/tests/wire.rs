//! The binary's manners on the wire and in a terminal: a wrong endpoint is
//! one clean line within seconds, logs are coloured only on a terminal.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> Result<u16, std::io::Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    drop(l);
    Ok(port)
}

fn assert_no_debris(s: &str) {
    for debris in ["{", "Some(", "Extensions", "ConnectorError", "DispatchFailure"] {
        assert!(!s.contains(debris), "debug debris {debris:?} in: {s}");
    }
}

/// `haul ls --endpoint-url http://127.0.0.1:5999 s3://b/` waited ~35 s and
/// then printed SDK debug structures (issue 12, item 3).
#[test]
fn a_wrong_endpoint_fails_at_once_with_one_clean_line() -> TestResult {
    let port = closed_port()?;
    let ep = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir()?;
    write(&dir.path().join("a.txt"), b"hello")?;
    let src = dir.path().to_string_lossy().to_string();
    for args in [
        vec!["ls", "--endpoint-url", &ep, "s3://bucket/"],
        vec!["cp", "-r", "--endpoint-url", &ep, &src, "s3://bucket/in/"],
        vec!["sync", "--endpoint-url", &ep, &src, "s3://bucket/in/"],
    ] {
        let t = Instant::now();
        let out = run(&args)?;
        let took = t.elapsed();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert_eq!(
            err.trim_end(),
            format!("haul: error: cannot reach {ep}: connection refused"),
            "{args:?}"
        );
        assert_no_debris(&err);
    }
    Ok(())
}

/// With stderr redirected, log lines had ANSI colour codes (issue 12, item 4).
#[test]
fn logs_are_plain_text_off_a_terminal() -> TestResult {
    // The SDK's debug logs, from a request to a closed port.
    let ep = format!("http://127.0.0.1:{}", closed_port()?);
    let out = run(&["-vv", "ls", "--endpoint-url", &ep, "s3://bucket/"])?;
    let err = stderr(&out);
    assert!(
        err.contains("DEBUG") || err.contains("INFO"),
        "no log lines to check: {err}"
    );
    assert!(!err.contains('\u{1b}'), "escape codes in redirected logs: {err:?}");
    Ok(())
}

/// On a terminal (a pseudo-terminal from `script`), logs are coloured
/// unless `NO_COLOR` is set.
#[test]
fn logs_are_coloured_on_a_terminal_unless_no_color() -> TestResult {
    let has_script = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        return Err("`script` (util-linux) is needed for the terminal test".into());
    }
    let cmdline = format!(
        "{} -vv ls --endpoint-url http://127.0.0.1:{} s3://bucket/",
        env!("CARGO_BIN_EXE_haul"),
        closed_port()?
    );
    let on_tty = |no_color: Option<&str>| -> Result<String, std::io::Error> {
        let mut c = Command::new("script");
        c.args(["-qec", &cmdline, "/dev/null"]);
        for (k, v) in haul_testkit::aws_env() {
            c.env(k, v);
        }
        match no_color {
            Some(v) => c.env("NO_COLOR", v),
            None => c.env_remove("NO_COLOR"),
        };
        let out = c.output()?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    };
    let coloured = on_tty(None)?;
    assert!(coloured.contains("\u{1b}["), "no colour on a terminal: {coloured:?}");
    let plain = on_tty(Some("1"))?;
    assert!(plain.contains("DEBUG") || plain.contains("INFO"), "{plain:?}");
    assert!(!plain.contains("\u{1b}["), "colour despite NO_COLOR: {plain:?}");
    Ok(())
}

/// A server that accepts the connection and never answers held a request
/// slot forever: no request timeout was set (issue 12, item 2). Each
/// attempt now gives up after `--request-timeout`, is retried, and the
/// command ends with the reason.
#[test]
fn a_server_that_never_answers_times_out_and_is_retried() -> TestResult {
    let port = haul_testkit::blackhole()?;
    let ep = format!("http://127.0.0.1:{port}");
    let mut child = haul()
        .args([
            "ls",
            "--endpoint-url",
            &ep,
            "--request-timeout",
            "1s",
            "--retries",
            "2",
            "s3://bucket/",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            return Err("haul still waiting on a silent server after 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err)?;
    }
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "both attempts waited their second"
    );
    assert_no_debris(&err);
    Ok(())
}

/// Keys whose failures a `--json` run reported.
fn failed_keys(out: &std::process::Output) -> std::collections::BTreeSet<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "failure")
        .filter_map(|v| v["key"].as_str().map(str::to_string))
        .collect()
}

/// The server behind the fault proxy.
struct Upstream {
    port: u16,
    endpoint: String,
    bucket: fn(&str) -> Result<String, String>,
    /// (Nearly) everything must arrive: the server checks signatures and
    /// Content-MD5, so garbled requests are refused and sent again. A
    /// damaged answer of a kind not yet recognised may still fail an object
    /// (reported, never corrupted): at most one in a hundred. (moto checks
    /// neither: a flipped byte in a path can name another bucket or key,
    /// which no client can tell from a real answer.)
    all_arrive: bool,
}

/// Through a proxy that cuts 1% and flips a byte in 1% of the chunks, both
/// ways: uploads, downloads and bucket-to-bucket copies either arrive byte
/// for byte or are reported failed — never a corrupted object, never exit 0
/// with one missing (issue 12, item 6).
#[test]
fn through_a_lossy_corrupting_network_nothing_lands_corrupted() -> TestResult {
    lossy(Upstream {
        port: haul_testkit::moto().port,
        endpoint: endpoint(),
        bucket,
        all_arrive: false,
    })
}

/// The same through garage, which refuses garbled requests (bad signature,
/// bad digest, unparseable headers): they are sent again, and at most one
/// object in a hundred fails (usually none: exit 0).
#[test]
fn through_a_lossy_corrupting_network_everything_arrives_on_garage() -> TestResult {
    if !haul_testkit::garage_enabled() {
        eprintln!("HAUL_TEST_GARAGE=off: garage not tested");
        return Ok(());
    }
    let g = haul_testkit::garage();
    lossy(Upstream {
        port: g.server.port,
        endpoint: g.server.endpoint.clone(),
        bucket: |tag| {
            let b = haul_testkit::unique_bucket(tag);
            haul_testkit::garage().create_bucket(&b)?;
            Ok(b)
        },
        all_arrive: true,
    })
}

fn lossy(up: Upstream) -> TestResult {
    use std::collections::BTreeMap;
    let faults = haul_testkit::ProxyFaults {
        seed: 12,
        cut_rate: 0.01,
        flip_rate: 0.01,
        delay: Duration::ZERO,
    };
    let proxy = haul_testkit::FaultProxy::start(up.port, faults)?;
    let via = proxy.endpoint.clone();
    let direct = up.endpoint.clone();
    let (b1, b2) = ((up.bucket)("lossy")?, (up.bucket)("lossy2")?);
    let dir = tempfile::tempdir()?;
    let mut want = BTreeMap::new();
    // HAUL_LOSSY_OBJECTS=2000 for the issue's full measurement.
    let count: u64 = std::env::var("HAUL_LOSSY_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    for i in 0..count {
        let body = data(100 + (i as usize * 97) % 40_000, i);
        let rel = format!("d{:02}/o{i:04}.bin", i % 20);
        write(&dir.path().join(&rel), &body)?;
        want.insert(rel, haul_store::checksum::md5_hex(&body));
    }
    let local = dir.path().to_string_lossy().to_string();
    let fast = ["--retries", "12", "--json"];
    // Checks a destination against the source: identical, or reported.
    let check = |what: &str, out: &std::process::Output, got: &BTreeMap<String, String>| -> TestResult {
        let failed = failed_keys(out);
        let mut wrong = Vec::new();
        for (rel, md5) in &want {
            match got.get(rel) {
                Some(m) if m == md5 => {}
                Some(_) => wrong.push(format!("{rel}: CORRUPTED")),
                None if failed.iter().any(|k| k.ends_with(rel.as_str())) => {}
                None => wrong.push(format!("{rel}: missing and not reported")),
            }
        }
        assert!(
            wrong.is_empty(),
            "{what}: exit {:?}: {}: {} wrong, first: {:?}",
            out.status.code(),
            stderr(out)
                .lines()
                .filter(|l| !l.contains("DEBUG"))
                .collect::<Vec<_>>()
                .join("\n"),
            wrong.len(),
            wrong.iter().take(5).collect::<Vec<_>>()
        );

        if out.status.code() == Some(0) {
            assert_eq!(got.len(), want.len(), "{what}: exit 0 with objects missing");
        } else {
            assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(out));
            assert!(!failed.is_empty(), "{what}: exit 1 without a reported failure");
        }
        for l in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"failure\""))
        {
            eprintln!("{what}: {l}");
        }
        let retries = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "summary")
            .and_then(|v| v["retries"].as_u64());
        assert!(retries.is_some(), "{what}: the summary counts retries");
        eprintln!("{what}: {} requests sent again", retries.unwrap_or_default());
        eprintln!(
            "{what}: exit {:?}, {} of {} arrived, {} reported failed; proxy so far: {}",
            out.status.code(),
            got.len(),
            want.len(),
            failed.len(),
            proxy.report()
        );
        if up.all_arrive {
            assert!(failed.len() * 100 <= want.len(), "{what}: {failed:?}");
        }
        Ok(())
    };
    let md5s_in = |b: &str, prefix: &str| -> Result<BTreeMap<String, String>, Box<dyn std::error::Error>> {
        Ok(inspect_at(&direct, b, prefix)?
            .into_iter()
            .map(|(k, v)| {
                (
                    k.strip_prefix(prefix).unwrap_or(&k).to_string(),
                    v["md5"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    };

    // Up through the proxy.
    let up_to = format!("s3://{b1}/up/");
    let mut args = vec!["cp", "-r", "--endpoint-url", &via, &local, &up_to];
    args.extend(fast);
    let out = run(&args)?;
    check("upload", &out, &md5s_in(&b1, "up/")?)?;
    // Fill in what the lossy run could not (direct), for the next steps.
    ok(&["sync", "--endpoint-url", &direct, &local, &up_to])?;

    // Down through the proxy.
    let down = tempfile::tempdir()?;
    let down_s = down.path().to_string_lossy().to_string();
    let mut args = vec!["cp", "-r", "--endpoint-url", &via, &up_to, &down_s];
    args.extend(fast);
    let out = run(&args)?;
    let mut got = BTreeMap::new();
    for rel in want.keys() {
        if let Ok(body) = std::fs::read(down.path().join(rel)) {
            got.insert(rel.clone(), haul_store::checksum::md5_hex(&body));
        }
    }
    check("download", &out, &got)?;

    // Bucket to bucket, read through the proxy, written directly.
    let copy_to = format!("s3://{b2}/copy/");
    let mut args = vec![
        "cp",
        "-r",
        "--src-endpoint-url",
        &via,
        "--dst-endpoint-url",
        &direct,
        &up_to,
        &copy_to,
    ];
    args.extend(fast);
    let out = run(&args)?;
    check("bucket to bucket", &out, &md5s_in(&b2, "copy/")?)?;
    assert!(
        proxy.stats.flips.load(std::sync::atomic::Ordering::Relaxed) > 5
            && proxy.stats.cuts.load(std::sync::atomic::Ordering::Relaxed) > 5,
        "too few faults to mean anything: {}",
        proxy.report()
    );
    Ok(())
}

/// A 100 MiB object up, down and bucket to bucket through a proxy that
/// cuts 1% of the chunks: broken bodies resume at the byte they stopped,
/// failed parts are sent again, and everything arrives with exit 0. A cut
/// part must be sent whole again, so 5 MiB parts (about 80 chunks: 45% of
/// attempts get through) and 30 attempts; at 16 MiB only 8% would.
#[test]
fn a_large_object_survives_a_connection_cut_every_hundred_chunks() -> TestResult {
    let faults = haul_testkit::ProxyFaults {
        seed: 21,
        cut_rate: 0.01,
        flip_rate: 0.0,
        delay: Duration::ZERO,
    };
    let proxy = haul_testkit::FaultProxy::start(haul_testkit::moto().port, faults)?;
    let (via, direct) = (proxy.endpoint.clone(), endpoint());
    let (b1, b2) = (bucket("cut")?, bucket("cut2")?);
    let dir = tempfile::tempdir()?;
    let body = data(100 * MIB + 7, 99);
    let md5 = haul_store::checksum::md5_hex(&body);
    let file = dir.path().join("big.bin");
    write(&file, &body)?;
    let up = format!("s3://{b1}/big.bin");
    let lossy = [
        "--part-size",
        "5MiB",
        "--multipart-threshold",
        "5MiB",
        "--retries",
        "30",
    ];
    let mut args = vec!["cp", "--endpoint-url", &via];
    let file_s = file.to_string_lossy().to_string();
    args.extend([file_s.as_str(), up.as_str()]);
    args.extend(lossy);
    ok(&args)?;
    let seen = inspect_at(&direct, &b1, "big.bin")?;
    assert_eq!(
        seen.get("big.bin").map(|v| v["md5"].clone()),
        Some(md5.clone().into()),
        "upload"
    );
    let back = dir.path().join("back.bin");
    let back_s = back.to_string_lossy().to_string();
    let mut args = vec!["cp", "--endpoint-url", &via, &up, &back_s];
    args.extend(lossy);
    ok(&args)?;
    assert!(std::fs::read(&back)? == body, "download");
    let copy = format!("s3://{b2}/big.bin");
    let mut args = vec![
        "cp",
        "--src-endpoint-url",
        &via,
        "--dst-endpoint-url",
        &direct,
        &up,
        &copy,
    ];
    args.extend(lossy);
    ok(&args)?;
    let seen = inspect_at(&direct, &b2, "big.bin")?;
    assert_eq!(
        seen.get("big.bin").map(|v| v["md5"].clone()),
        Some(md5.into()),
        "bucket to bucket"
    );
    let cuts = proxy.stats.cuts.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("proxy: {}", proxy.report());
    assert!(cuts >= 10, "too few cuts to mean anything: {}", proxy.report());
    Ok(())
}

/// The failures a `--json` run reported, one a line.
fn failures(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"failure\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `retries` of a `--json` run's summary.
fn summary_retries(out: &std::process::Output) -> Option<u64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .and_then(|v| v["retries"].as_u64())
}

/// Issue 12, item 6: a 100 MiB object up, down and bucket to bucket
/// (streamed) through a proxy that cuts 1% and flips a byte in 1% of the chunks.
/// Each 5 MiB part read is damaged more often than not, so the whole
/// object never reads clean at once: the damaged parts are read again
/// until two reads agree, the object is checked against the source's
/// ETag or CRC64NVME, and everything arrives byte for byte with exit 0.
/// Through garage: it refuses garbled requests by their signature (moto
/// checks none, and a flipped byte in a request's path or range can name
/// another object or range, which no client can tell from an answer).
#[test]
fn a_large_object_damaged_in_transit_arrives_up_down_and_across() -> TestResult {
    if !haul_testkit::garage_enabled() {
        eprintln!("HAUL_TEST_GARAGE=off: garage not tested");
        return Ok(());
    }
    let started = Instant::now();
    let g = haul_testkit::garage();
    let (b1, b2) = (
        haul_testkit::unique_bucket("flip"),
        haul_testkit::unique_bucket("flip2"),
    );
    g.create_bucket(&b1)?;
    g.create_bucket(&b2)?;
    let (port, direct) = (g.server.port, g.server.endpoint.clone());
    let faults = haul_testkit::ProxyFaults {
        seed: 61,
        cut_rate: 0.01,
        flip_rate: 0.01,
        delay: Duration::ZERO,
    };
    let proxy = haul_testkit::FaultProxy::start(port, faults)?;
    let via = proxy.endpoint.clone();
    let dir = tempfile::tempdir()?;
    let body = data(100 * MIB + 7, 98);
    let md5 = haul_store::checksum::md5_hex(&body);
    let file = dir.path().join("big.bin");
    write(&file, &body)?;
    let file_s = file.to_string_lossy().to_string();
    let up = format!("s3://{b1}/big.bin");
    let parts = ["--part-size", "5MiB", "--multipart-threshold", "5MiB"];
    let lossy = ["--retries", "30", "--json", "-v"];
    let mut args = vec!["cp", "--endpoint-url", &via, &file_s, &up];
    args.extend(parts);
    args.extend(lossy);
    let out = run(&args)?;
    assert_eq!(out.status.code(), Some(0), "upload: {}{}", stderr(&out), failures(&out));
    let seen = inspect_at(&direct, &b1, "big.bin")?;
    assert_eq!(
        seen.get("big.bin").map(|v| v["md5"].clone()),
        Some(md5.clone().into()),
        "upload"
    );
    eprintln!(
        "upload: {:?} requests sent again; proxy: {}",
        summary_retries(&out),
        proxy.report()
    );

    let back = dir.path().join("back.bin");
    let back_s = back.to_string_lossy().to_string();
    let mut args = vec!["cp", "--endpoint-url", &via, &up, &back_s];
    args.extend(parts);
    args.extend(lossy);
    let out = run(&args)?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "download: {}{}",
        stderr(&out),
        failures(&out)
    );
    assert!(std::fs::read(&back)? == body, "download: bytes differ");
    assert!(stderr(&out).contains("repaired"), "download: no repair logged");
    eprintln!(
        "download: {:?} requests sent again, {:.1?} so far; proxy: {}",
        summary_retries(&out),
        started.elapsed(),
        proxy.report()
    );

    let copy = format!("s3://{b2}/big.bin");
    let mut args = vec![
        "cp",
        "--src-endpoint-url",
        &via,
        "--dst-endpoint-url",
        &direct,
        &up,
        &copy,
    ];
    args.extend(parts);
    args.extend(lossy);
    let out = run(&args)?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "bucket to bucket: {}{}",
        stderr(&out),
        failures(&out)
    );
    let seen = inspect_at(&direct, &b2, "big.bin")?;
    assert_eq!(
        seen.get("big.bin").map(|v| v["md5"].clone()),
        Some(md5.into()),
        "bucket to bucket"
    );
    assert!(stderr(&out).contains("repaired"), "bucket to bucket: no repair logged");
    eprintln!(
        "bucket to bucket: {:?} requests sent again, {:.1?} in all; proxy: {}",
        summary_retries(&out),
        started.elapsed(),
        proxy.report()
    );
    let flips = proxy.stats.flips.load(std::sync::atomic::Ordering::Relaxed);
    assert!(flips >= 10, "too few flips to mean anything: {}", proxy.report());
    Ok(())
}
