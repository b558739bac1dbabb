//! `haul bundle`'s dead letters end to end, on moto: a member the source
//! refuses to read (IAM denies `s3:GetObject` on its key) is an
//! `access_denied` dead letter while every other object is archived; and
//! `--dlq FILE` lists every dead letter when there are more than the run
//! keeps in memory to print.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use common::*;

type R = Result<(), Box<dyn std::error::Error>>;

fn json_lines(o: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn dlq_file(path: &std::path::Path) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let mut v = Vec::new();
    for l in std::fs::read_to_string(path)?.lines() {
        v.push(serde_json::from_str(l)?);
    }
    Ok(v)
}

/// moto enforcing IAM after three free requests, which make an admin user
/// (its policy and access key); the admin then makes the buckets and a
/// `bundler` user allowed to list, read and write, but denied
/// `s3:GetObject` on `src/p/f05.bin`. Prints both users' keys.
const SETUP: &str = r#"
import boto3, json, sys
ep = sys.argv[1]
iam = boto3.client("iam", endpoint_url=ep)
doc = lambda *st: json.dumps({"Version": "2012-10-17", "Statement": list(st)})
iam.create_user(UserName="admin")
iam.put_user_policy(UserName="admin", PolicyName="all",
                    PolicyDocument=doc({"Effect": "Allow", "Action": "*", "Resource": "*"}))
a = iam.create_access_key(UserName="admin")["AccessKey"]
admin = boto3.Session(aws_access_key_id=a["AccessKeyId"], aws_secret_access_key=a["SecretAccessKey"],
                      region_name="us-east-1")
s3 = admin.client("s3", endpoint_url=ep)
s3.create_bucket(Bucket="src")
s3.create_bucket(Bucket="dst")
iam = admin.client("iam", endpoint_url=ep)
iam.create_user(UserName="bundler")
iam.put_user_policy(UserName="bundler", PolicyName="bundle", PolicyDocument=doc(
    {"Effect": "Allow", "Resource": "*",
     "Action": ["s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                "s3:ListBucketMultipartUploads", "s3:ListMultipartUploadParts"]},
    {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::src/p/f05.bin"}))
b = iam.create_access_key(UserName="bundler")["AccessKey"]
print(a["AccessKeyId"], a["SecretAccessKey"], b["AccessKeyId"], b["SecretAccessKey"])
"#;

#[test]
fn a_member_denied_by_iam_is_an_access_denied_dead_letter_and_the_rest_are_archived() -> R {
    if !haul_testkit::s3_enabled() {
        eprintln!("HAUL_TEST_S3=off: S3 backend not tested");
        return Ok(());
    }
    let server = haul_testkit::moto_with_auth(3);
    let ep = server.endpoint.clone();
    let mut py = Command::new("python3");
    py.args(["-c", SETUP, &ep]);
    for (k, v) in haul_testkit::aws_env() {
        py.env(k, v);
    }
    let out = py.output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = String::from_utf8(out.stdout)?;
    let k: Vec<&str> = keys.split_whitespace().collect();
    let [admin_id, admin_secret, id, secret] = k[..] else {
        return Err(format!("keys: {keys:?}").into());
    };
    let admin = [("AWS_ACCESS_KEY_ID", admin_id), ("AWS_SECRET_ACCESS_KEY", admin_secret)];
    let bundler = [("AWS_ACCESS_KEY_ID", id), ("AWS_SECRET_ACCESS_KEY", secret)];
    let as_user = |env: &[(&str, &str); 2], args: &[&str]| haul().args(args).envs(env.iter().copied()).output();

    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    let mut want = BTreeMap::new();
    for i in 0..12u64 {
        let name = format!("f{i:02}.bin");
        let body = data(300 + 97 * i as usize, 40 + i);
        write(&src.join(&name), &body)?;
        want.insert(name, body);
    }
    let up = as_user(
        &admin,
        &["cp", "-r", &src.to_string_lossy(), "s3://src/p/", "--endpoint-url", &ep],
    )?;
    assert!(up.status.success(), "{}", stderr(&up));

    let dlq = dir.path().join("dead.jsonl");
    let dlq_s = dlq.to_string_lossy().to_string();
    let args = [
        "bundle",
        "s3://src/p/",
        "s3://dst/out/",
        "--endpoint-url",
        &ep,
        "--dlq",
        &dlq_s,
        "--json",
    ];
    let out = as_user(&bundler, &args)?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a dead letter makes exit 1: {}",
        stderr(&out)
    );
    let dead = dlq_file(&dlq)?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["key"], "p/f05.bin");
    assert_eq!(dead[0]["reason"], "access_denied");
    assert_eq!(dead[0]["status"], 403);
    let sum = last_json(&out)?;
    assert_eq!(
        (sum["members"].as_u64(), sum["dead_letters"].as_u64()),
        (Some(11), Some(1)),
        "{sum}"
    );
    assert_eq!(sum["dead_by_reason"]["access_denied"], 1, "{sum}");
    let events: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter(|v| v["event"] == "dead_letter")
        .collect();
    assert_eq!((events.len(), &events[0]["key"]), (1, &Value::from("p/f05.bin")));

    // Every other object is in the archive, byte for byte; the denied one
    // is not, and the source still has it (nothing was lost).
    let a = "s3://dst/out/bundle-000001.tar";
    let ls = as_user(&admin, &["ls", "--members", a, "--json", "--endpoint-url", &ep])?;
    assert!(ls.status.success(), "{}", stderr(&ls));
    let mut seen = BTreeMap::new();
    for e in json_lines(&ls).into_iter().filter(|v| v.get("name").is_some()) {
        let name = e["name"].as_str().unwrap_or_default().to_string();
        let cat = as_user(&admin, &["cat", "--member", &name, a, "--endpoint-url", &ep])?;
        assert!(cat.status.success(), "{}", stderr(&cat));
        seen.insert(name, cat.stdout);
    }
    let mut rest = want.clone();
    rest.remove("f05.bin");
    assert!(seen == rest, "members: {:?}", seen.keys().collect::<Vec<_>>());
    let kept = as_user(&admin, &["cat", "s3://src/p/f05.bin", "--endpoint-url", &ep])?;
    assert_eq!(kept.stdout, want["f05.bin"]);

    // A re-run finds the archive complete without it: not written again,
    // the same dead letter in --dlq, exit 1 again.
    let again = as_user(&bundler, &args)?;
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    let sum = last_json(&again)?;
    assert_eq!(
        (sum["archives_skipped"].as_u64(), sum["archives_written"].as_u64()),
        (Some(1), Some(0)),
        "{sum}"
    );
    assert_eq!(dlq_file(&dlq)?, dead);
    Ok(())
}

/// More archived (GLACIER) objects than the run keeps to print: `--dlq`
/// has every one, `FILE.archived` every key; the output shows the first
/// ones and says how many more there are.
#[test]
fn the_dlq_file_has_every_dead_letter_beyond_the_printed_sample() -> R {
    let b = bucket("dlq")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    let n = 130;
    for i in 0..n {
        write(&src.join(format!("cold/c{i:03}")), format!("cold {i}").as_bytes())?;
    }
    write(&src.join("warm"), b"warm")?;
    let up = format!("s3://{b}/p/");
    ok(&[
        "cp",
        "-r",
        &src.join("cold").to_string_lossy(),
        &format!("{up}cold/"),
        "--storage-class",
        "GLACIER",
        "--endpoint-url",
        &ep,
    ])?;
    ok(&[
        "cp",
        &src.join("warm").to_string_lossy(),
        &format!("{up}warm"),
        "--endpoint-url",
        &ep,
    ])?;
    let dlq = dir.path().join("dead.jsonl");
    let dlq_s = dlq.to_string_lossy().to_string();
    let arch = format!("s3://{b}/arch/");
    let base = [
        "bundle",
        up.as_str(),
        arch.as_str(),
        "--endpoint-url",
        ep.as_str(),
        "--dlq",
        dlq_s.as_str(),
    ];
    let json = run(&[&base[..], &["--json"]].concat())?;
    assert_eq!(json.status.code(), Some(1), "{}", stderr(&json));
    let keys: Vec<String> = (0..n).map(|i| format!("p/cold/c{i:03}")).collect();
    let dead = dlq_file(&dlq)?;
    let got: Vec<&str> = dead.iter().filter_map(|d| d["key"].as_str()).collect();
    assert_eq!(got, keys, "every dead letter, in order");
    assert!(dead.iter().all(|d| d["reason"] == "archived"));
    let archived = std::fs::read_to_string(format!("{dlq_s}.archived"))?;
    assert_eq!(archived.lines().collect::<Vec<_>>(), keys);
    let sum = last_json(&json)?;
    assert_eq!(
        (sum["dead_letters"].as_u64(), sum["members"].as_u64()),
        (Some(n), Some(1)),
        "{sum}"
    );
    assert_eq!(sum["dead_by_reason"], serde_json::json!({"archived": n}), "{sum}");
    assert!(sum.get("dead_sample").is_none(), "{sum}");
    let shown = json_lines(&json).iter().filter(|v| v["event"] == "dead_letter").count();
    assert_eq!(shown, 100);

    // Without --json: the first ones, then how many more.
    let text = run(&[&base[..], &["--run", "t"]].concat())?;
    assert_eq!(text.status.code(), Some(1));
    let err = stderr(&text);
    assert_eq!(err.matches("haul: dead letter: ").count(), 100, "{err}");
    assert!(err.contains("30 more dead letters not shown"), "{err}");
    assert!(err.contains("130 dead letters (archived 130)"), "{err}");
    assert_eq!(dlq_file(&dlq)?, dead, "the second run's --dlq has them all too");
    Ok(())
}
