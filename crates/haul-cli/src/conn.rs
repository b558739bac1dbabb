//! Turns locations and per-side connection flags into stores. Connections
//! with the same settings are shared, so two sides on the same endpoint and
//! identity get the same copy domain (and copy server-side).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use haul_store::local::LocalStore;
use haul_store::location::Location;
use haul_store::s3::{ChecksumPolicy, S3Config, S3Connection};
use haul_store::wrap::{resilient, RetryPolicy};
use haul_store::{DynStore, ErrorKind, Key, ListRequest, StoreError};

use crate::args::{ChecksumPolicyArg, Conn};

/// Which side of a two-sided command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
    /// One-sided commands: only the plain flags apply.
    Only,
}

/// Opens stores, sharing connections.
#[derive(Debug)]
pub struct Connector {
    conn: Conn,
    cache: HashMap<S3Config, S3Connection>,
}

/// A store and the key or prefix the location points at.
#[derive(Debug, Clone)]
pub struct Opened {
    pub store: DynStore,
    pub key: Key,
    /// How the user wrote it, for messages.
    pub shown: String,
}

impl Connector {
    pub fn new(conn: Conn) -> Self {
        Connector {
            conn,
            cache: HashMap::new(),
        }
    }

    fn s3_config(&self, side: Side) -> S3Config {
        let c = &self.conn;
        let pick = |src: &Option<String>, dst: &Option<String>, both: &Option<String>| match side {
            Side::Src => src.clone().or_else(|| both.clone()),
            Side::Dst => dst.clone().or_else(|| both.clone()),
            Side::Only => both.clone(),
        };
        S3Config {
            profile: pick(&c.src_profile, &c.dst_profile, &c.profile),
            endpoint_url: pick(&c.src_endpoint_url, &c.dst_endpoint_url, &c.endpoint_url),
            region: pick(&c.src_region, &c.dst_region, &c.region),
            path_style: c.path_style
                || match side {
                    Side::Src => c.src_path_style,
                    Side::Dst => c.dst_path_style,
                    Side::Only => false,
                },
            checksum_policy: match c.request_checksums {
                ChecksumPolicyArg::Auto => ChecksumPolicy::Auto,
                ChecksumPolicyArg::WhenRequired => ChecksumPolicy::WhenRequired,
                ChecksumPolicyArg::WhenSupported => ChecksumPolicy::WhenSupported,
            },
            send_crc64nvme: c.crc64nvme,
            request_timeout: c.request_timeout,
        }
    }

    /// The endpoint a side uses (`None`: AWS, or the environment's).
    pub fn endpoint(&self, side: Side) -> Option<String> {
        self.s3_config(side).endpoint_url
    }

    /// The store of an S3 bucket, with retries and the per-endpoint limit.
    pub async fn s3(&mut self, bucket: &str, side: Side) -> Result<DynStore> {
        let cfg = self.s3_config(side);
        let conn = match self.cache.get(&cfg) {
            Some(c) => c.clone(),
            None => {
                let c = S3Connection::connect(&cfg).await.map_err(fatal)?;
                self.cache.insert(cfg, c.clone());
                c
            }
        };
        let policy = RetryPolicy {
            max_attempts: self.conn.retries.max(1),
            ..Default::default()
        };
        Ok(resilient(Arc::new(conn.bucket(bucket)), self.conn.max_requests, policy))
    }

    /// A local directory as a store (created when `create`).
    pub fn local_dir(&self, dir: &Path, create: bool) -> Result<DynStore> {
        let store = if create {
            LocalStore::create(dir)
        } else {
            LocalStore::new(dir)
        };
        let store = store.map_err(fatal)?;
        let policy = RetryPolicy {
            max_attempts: 3,
            ..Default::default()
        };
        Ok(resilient(Arc::new(store), 256, policy))
    }

    /// Opens a location that is read (ls, cat, rm, a cp source): an S3
    /// bucket and key, or a local file (its directory and name) or directory.
    pub async fn open_existing(&mut self, loc: &Location, side: Side) -> Result<Opened> {
        match loc {
            Location::S3 { bucket, key } => Ok(Opened {
                store: self.s3(bucket, side).await?,
                key: key.clone(),
                shown: loc.to_string(),
            }),
            Location::Local { path } => {
                let md = std::fs::metadata(path).map_err(|e| {
                    let e = StoreError::io(haul_store::Op::Head, path.display().to_string(), e);
                    anyhow!(match e.kind {
                        ErrorKind::NotFound => format!("{}: no such file or directory", path.display()),
                        _ => format!("{}: {}", path.display(), e.message),
                    })
                })?;
                if md.is_dir() {
                    Ok(Opened {
                        store: self.local_dir(path, false)?,
                        key: Key::root(),
                        shown: path.display().to_string(),
                    })
                } else {
                    let (dir, name) = split_file(path)?;
                    Ok(Opened {
                        store: self.local_dir(&dir, false)?,
                        key: Key::object(name).map_err(fatal)?,
                        shown: path.display().to_string(),
                    })
                }
            }
            Location::Stdio => bail!("'-' (stdin/stdout) cannot be used here"),
        }
    }
}

/// A file path as (its directory, its name).
pub fn split_file(path: &Path) -> Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", path.display()))?
        .to_str()
        .ok_or_else(|| anyhow!("{}: the file name is not valid UTF-8", path.display()))?
        .to_string();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// A store error that ends the command (exit 2), with the kind's advice.
pub fn fatal(e: StoreError) -> anyhow::Error {
    anyhow!(Fatal(e))
}

/// Marks errors that end the whole command.
#[derive(Debug)]
pub struct Fatal(pub StoreError);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = &self.0;
        match e.kind {
            ErrorKind::NoSuchBucket | ErrorKind::Credentials => f.write_str(&e.message),
            _ => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Fatal {}

/// Fails fast when a store cannot be used at all: missing bucket, bad
/// credentials, access denied to the source. Reads at most one page.
pub async fn probe(store: &DynStore, prefix: &Key, what: &str, must_read: bool) -> Result<()> {
    let mut s = store.list(ListRequest::prefix(prefix.clone()));
    if let Some(Err(e)) = s.next().await {
        if e.is_unreachable() {
            // "cannot reach http://127.0.0.1:5999: connection refused"
            return Err(anyhow!(e.message));
        }
        let stop = match e.kind {
            ErrorKind::NoSuchBucket | ErrorKind::Credentials => true,
            ErrorKind::PermissionDenied => must_read,
            _ => false,
        };
        if stop {
            return Err(fatal(e)).with_context(|| format!("{what} {}", store.url()));
        }
    }
    Ok(())
}
