//! Turns a location and a side's [`ConnSpec`] into a store, wrapped with
//! retries and the per-endpoint request limit. Connections with the same
//! settings are shared, so two sides on the same endpoint and identity get
//! the same copy domain (and copy server-side).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use haul_store::local::LocalStore;
use haul_store::location::Location;
use haul_store::s3::{ChecksumPolicy, S3Config, S3Connection};
use haul_store::wrap::{resilient, RetryPolicy};
use haul_store::{DynStore, ErrorKind, Key, ListRequest, Op, StoreError};

use crate::error::{invalid, JobError, Result};
use crate::spec::{ConnSpec, RequestChecksums};

/// Opens stores, sharing connections.
#[derive(Debug, Default)]
pub struct Connector {
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

/// The SDK settings of a side.
pub fn s3_config(c: &ConnSpec) -> S3Config {
    S3Config {
        profile: c.profile.clone(),
        endpoint_url: c.endpoint_url.clone(),
        region: c.region.clone(),
        path_style: c.path_style,
        checksum_policy: match c.request_checksums {
            RequestChecksums::Auto => ChecksumPolicy::Auto,
            RequestChecksums::WhenRequired => ChecksumPolicy::WhenRequired,
            RequestChecksums::WhenSupported => ChecksumPolicy::WhenSupported,
        },
        send_crc64nvme: c.crc64nvme,
        request_timeout: c.request_timeout.map(|d| d.0),
    }
}

/// Opens one location with one side's settings (a fresh [`Connector`]).
pub async fn connect(loc: &Location, conn: &ConnSpec) -> Result<Opened> {
    Connector::default().open_existing(loc, conn).await
}

impl Connector {
    /// The store of an S3 bucket, with retries and the per-endpoint limit.
    pub async fn s3(&mut self, bucket: &str, conn: &ConnSpec) -> Result<DynStore> {
        let cfg = s3_config(conn);
        let connection = match self.cache.get(&cfg) {
            Some(c) => c.clone(),
            None => {
                let c = S3Connection::connect(&cfg).await.map_err(JobError::store)?;
                self.cache.insert(cfg, c.clone());
                c
            }
        };
        let policy = RetryPolicy {
            max_attempts: conn.retries.max(1),
            ..Default::default()
        };
        Ok(resilient(
            Arc::new(connection.bucket(bucket)),
            conn.max_requests,
            policy,
        ))
    }

    /// A local directory as a store (created when `create`).
    pub fn local_dir(&self, dir: &Path, create: bool) -> Result<DynStore> {
        let store = if create {
            LocalStore::create(dir)
        } else {
            LocalStore::new(dir)
        };
        let store = store.map_err(JobError::store)?;
        let policy = RetryPolicy {
            max_attempts: 3,
            ..Default::default()
        };
        Ok(resilient(Arc::new(store), 256, policy))
    }

    /// Opens a location that is read (ls, cat, rm, a cp source): an S3
    /// bucket and key, or a local file (its directory and name) or directory.
    pub async fn open_existing(&mut self, loc: &Location, conn: &ConnSpec) -> Result<Opened> {
        match loc {
            Location::S3 { bucket, key } => Ok(Opened {
                store: self.s3(bucket, conn).await?,
                key: key.clone(),
                shown: loc.to_string(),
            }),
            Location::Local { path } => {
                let md = std::fs::metadata(path).map_err(|e| {
                    let e = StoreError::io(Op::Head, path.display().to_string(), e);
                    JobError::Invalid(match e.kind {
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
                        key: Key::object(name).map_err(JobError::store)?,
                        shown: path.display().to_string(),
                    })
                }
            }
            Location::Stdio => invalid("'-' (stdin/stdout) cannot be used here"),
        }
    }
}

/// A file path as (its directory, its name).
pub fn split_file(path: &Path) -> Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .ok_or_else(|| JobError::Invalid(format!("{}: not a file name", path.display())))?
        .to_str()
        .ok_or_else(|| JobError::Invalid(format!("{}: the file name is not valid UTF-8", path.display())))?
        .to_string();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// Fails fast when a store cannot be used at all: missing bucket, bad
/// credentials, access denied to the source. Reads at most one page.
pub async fn probe(store: &DynStore, prefix: &Key, what: &str, must_read: bool) -> Result<()> {
    let mut s = store.list(ListRequest::prefix(prefix.clone()));
    if let Some(Err(e)) = s.next().await {
        if e.is_unreachable() {
            // "cannot reach http://127.0.0.1:5999: connection refused"
            return Err(JobError::store(e));
        }
        let stop = match e.kind {
            ErrorKind::NoSuchBucket | ErrorKind::Credentials => true,
            ErrorKind::PermissionDenied => must_read,
            _ => false,
        };
        if stop {
            return Err(JobError::store_in(format!("{what} {}", store.url()), e));
        }
    }
    Ok(())
}
