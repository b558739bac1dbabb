//! Conditional writes (`PutOptions::if_none_match`) beyond the conformance
//! suite: a local store leaves no temp file behind a refused write, and an
//! S3 server that answers `If-None-Match` with 501 NotImplemented is learnt
//! to lack it: HEAD, then a plain PUT.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use haul_store::local::LocalStore;
use haul_store::s3::{S3Config, S3Connection};
use haul_store::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn cond() -> PutOptions {
    PutOptions {
        if_none_match: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_local_write_refused_by_if_none_match_keeps_the_file_and_leaves_no_temp_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let s = LocalStore::new(dir.path())?;
    let k = Key::object("d/f.txt")?;
    s.put(&k, Bytes::from_static(b"first"), &PutOptions::default()).await?;
    let e = s
        .put(&k, Bytes::from_static(b"second"), &cond())
        .await
        .err()
        .ok_or("a conditional put over an existing key succeeded")?;
    assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e}");
    assert_eq!(e.code.as_deref(), Some("PreconditionFailed"));
    assert_eq!(std::fs::read(dir.path().join("d/f.txt"))?, b"first");
    let tmp = dir.path().join(".haul-tmp");
    let left: Vec<_> = match std::fs::read_dir(&tmp) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(left.is_empty(), "temp files left: {left:?}");
    Ok(())
}

/// A minimal S3 endpoint without conditional writes: a PUT with
/// If-None-Match gets 501 NotImplemented; HEAD and plain PUT work.
struct NoConditionals {
    objects: Mutex<HashMap<String, Vec<u8>>>,
    conditional_puts: AtomicUsize,
    heads: AtomicUsize,
}

fn serve(state: Arc<NoConditionals>, mut c: TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let key = path.split('?').next().unwrap_or("").to_string();
    let objects = &state.objects;
    let reply = match method.as_str() {
        "PUT" if headers.contains_key("if-none-match") => {
            state.conditional_puts.fetch_add(1, Ordering::SeqCst);
            let xml = "<?xml version=\"1.0\"?><Error><Code>NotImplemented</Code>\
                       <Message>A header you provided implies functionality that is not implemented</Message></Error>";
            format!(
                "HTTP/1.1 501 Not Implemented\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            )
        }
        "PUT" => {
            let etag = haul_store::checksum::md5_hex(&body);
            objects.lock().unwrap_or_else(|e| e.into_inner()).insert(key, body);
            format!("HTTP/1.1 200 OK\r\nETag: \"{etag}\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        "HEAD" => {
            state.heads.fetch_add(1, Ordering::SeqCst);
            match objects.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
                Some(b) => format!(
                    "HTTP/1.1 200 OK\r\nETag: \"{}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    haul_store::checksum::md5_hex(b),
                    b.len()
                ),
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
            }
        }
        _ => "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    };
    c.write_all(reply.as_bytes())?;
    c.flush()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_conditional_writes_is_learnt_and_guarded_by_head() -> TestResult {
    haul_testkit::set_aws_env();
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    let state = Arc::new(NoConditionals {
        objects: Mutex::default(),
        conditional_puts: AtomicUsize::new(0),
        heads: AtomicUsize::new(0),
    });
    let st = state.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let st = st.clone();
            std::thread::spawn(move || serve(st, c));
        }
    });
    let conn = S3Connection::connect(&S3Config {
        endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        path_style: true,
        ..Default::default()
    })
    .await?;
    let s = conn.bucket("b");
    let k = Key::object("daily/export.csv")?;
    s.put(&k, Bytes::from_static(b"monday"), &cond()).await?;
    assert_eq!(state.conditional_puts.load(Ordering::SeqCst), 1, "tried once, 501");
    let e = s
        .put(&k, Bytes::from_static(b"tuesday"), &cond())
        .await
        .err()
        .ok_or("the second conditional put replaced the object")?;
    assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e}");
    assert_eq!(
        state.conditional_puts.load(Ordering::SeqCst),
        1,
        "learnt: no more conditional requests"
    );
    assert_eq!(state.heads.load(Ordering::SeqCst), 2, "a HEAD guards each write");
    assert_eq!(
        state
            .objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get("/b/daily/export.csv")
            .map(Vec::as_slice),
        Some(&b"monday"[..]),
        "the first content is kept"
    );
    Ok(())
}
