//! Reading one object to a writer (`haul cat`).

use futures::stream::TryStreamExt;
use haul_store::{DynStore, ErrorKind, Key, Op, StoreError};
use md5::Digest;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::verify::source_md5;
use super::{err, Result, Transfer};
use crate::report::Observer;

impl Transfer {
    /// Writes an object to `out`, checking it against its MD5 ETag when it has one.
    pub async fn download_to<W: AsyncWrite + Unpin + Send>(
        &self,
        src: &DynStore,
        key: &Key,
        mut out: W,
        obs: &dyn Observer,
    ) -> Result<u64> {
        let g = src.get(key, None).await?;
        let expect = source_md5(&g.meta).map(str::to_string);
        let mut h = md5::Md5::new();
        let mut n = 0u64;
        let mut body = g.body;
        while let Some(chunk) = body.try_next().await? {
            h.update(&chunk);
            n += chunk.len() as u64;
            obs.bytes(chunk.len() as u64);
            out.write_all(&chunk)
                .await
                .map_err(|e| StoreError::io(Op::Get, key.as_str(), e))?;
        }
        out.flush()
            .await
            .map_err(|e| StoreError::io(Op::Get, key.as_str(), e))?;
        if let Some(e) = expect {
            let got = hex::encode(h.finalize());
            if got != e {
                return Err(err(
                    Op::Verify,
                    key,
                    ErrorKind::Integrity,
                    format!("data read has MD5 {got}, the ETag says {e}"),
                ));
            }
        }
        Ok(n)
    }
}
