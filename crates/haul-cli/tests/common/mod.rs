//! Helpers shared by the end-to-end tests: the `haul` binary with the test
//! server's environment, and boto3 as the independent reader.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub const MIB: usize = 1024 * 1024;

pub fn data(n: usize, seed: u64) -> Vec<u8> {
    haul_testkit::data(n, seed)
}

pub fn endpoint() -> String {
    haul_testkit::moto().endpoint.clone()
}

pub fn bucket(tag: &str) -> Result<String, String> {
    let b = haul_testkit::unique_bucket(tag);
    haul_testkit::create_bucket(haul_testkit::moto(), &b)?;
    Ok(b)
}

/// `haul` with the test server's environment.
pub fn haul() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_haul"));
    for (k, v) in haul_testkit::aws_env() {
        c.env(k, v);
    }
    // The resume journal of these tests lives in the temp dir, not in $HOME.
    c.env(
        "HAUL_STATE_DIR",
        std::env::temp_dir().join(format!("haul-test-state-{}", std::process::id())),
    );
    c.env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_S3");
    c
}

/// `haul` run as an unprivileged user (nobody) when the tests run as root
/// — root reads every file, whatever its mode — with `HOME=/tmp`.
pub fn haul_as_nobody() -> Command {
    let bin = env!("CARGO_BIN_EXE_haul");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let mut c = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups", bin]);
        c
    } else {
        Command::new(bin)
    };
    c.env("HOME", "/tmp");
    c
}

pub fn run(args: &[&str]) -> Result<Output, std::io::Error> {
    haul().args(args).output()
}

pub fn ok(args: &[&str]) -> Result<Output, Box<dyn std::error::Error>> {
    let out = run(args)?;
    if !out.status.success() {
        return Err(format!(
            "haul {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

/// The last JSON line a command printed (the summary with `--json`).
pub fn last_json(o: &Output) -> Result<Value, Box<dyn std::error::Error>> {
    let text = String::from_utf8(o.stdout.clone())?;
    Ok(serde_json::from_str(text.lines().last().unwrap_or("{}"))?)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// What boto3 sees under a prefix, by key.
pub fn inspect(bucket: &str, prefix: &str) -> Result<BTreeMap<String, Value>, Box<dyn std::error::Error>> {
    inspect_at(&endpoint(), bucket, prefix)
}

/// What boto3 sees under a prefix of a bucket on `endpoint`, by key.
pub fn inspect_at(
    endpoint: &str,
    bucket: &str,
    prefix: &str,
) -> Result<BTreeMap<String, Value>, Box<dyn std::error::Error>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_inspect.py");
    let mut c = Command::new("python3");
    c.arg(script).args([endpoint, bucket, prefix]);
    for (k, v) in haul_testkit::aws_env() {
        c.env(k, v);
    }
    let out = c.output()?;
    if !out.status.success() {
        return Err(format!("s3_inspect.py: {}", stderr(&out)).into());
    }
    let mut m = BTreeMap::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: Value = serde_json::from_str(line)?;
        m.insert(v["key"].as_str().unwrap_or_default().to_string(), v);
    }
    Ok(m)
}

/// The multipart uploads still open under a prefix (boto3's ListMultipartUploads).
pub fn open_uploads(bucket: &str, prefix: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_inspect.py");
    let mut c = Command::new("python3");
    c.arg(script).args(["--uploads", &endpoint(), bucket, prefix]);
    for (k, v) in haul_testkit::aws_env() {
        c.env(k, v);
    }
    let out = c.output()?;
    if !out.status.success() {
        return Err(format!("s3_inspect.py --uploads: {}", stderr(&out)).into());
    }
    let mut keys = Vec::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: Value = serde_json::from_str(line)?;
        keys.push(v["key"].as_str().unwrap_or_default().to_string());
    }
    Ok(keys)
}

pub fn write(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, body)
}
