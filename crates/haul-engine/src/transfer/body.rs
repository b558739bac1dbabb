//! Reading bodies into buffers and hashing them.

use bytes::{Bytes, BytesMut};
use futures::stream::TryStreamExt;
use haul_store::checksum::{crc64 as crc64_of, crc64_to_b64, Hasher};
use haul_store::{ErrorKind, GetResult, Key, Op};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{err, Result};
use crate::report::Observer;

/// Reads a whole body into one buffer, checking that it holds the `want`
/// bytes asked for — whatever length the answer announced.
pub(super) async fn collect(g: GetResult, want: u64, key: &Key, obs: &dyn Observer) -> Result<Bytes> {
    let mut body = g.body;
    let mut buf: Option<BytesMut> = None;
    let mut first: Option<Bytes> = None;
    while let Some(chunk) = body.try_next().await? {
        obs.bytes(chunk.len() as u64);
        match (&mut buf, first.take()) {
            (None, None) => first = Some(chunk),
            (None, Some(f)) => {
                let mut b = BytesMut::with_capacity(want as usize);
                b.extend_from_slice(&f);
                b.extend_from_slice(&chunk);
                buf = Some(b);
            }
            (Some(b), _) => b.extend_from_slice(&chunk),
        }
    }
    let data = match (buf, first) {
        (Some(b), _) => b.freeze(),
        (None, Some(f)) => f,
        (None, None) => Bytes::new(),
    };
    if data.len() as u64 != want {
        return Err(err(
            Op::Get,
            key,
            ErrorKind::PreconditionFailed,
            format!(
                "read {} bytes, expected {want}: the source changed or was truncated",
                data.len()
            ),
        ));
    }
    Ok(data)
}

/// The MD5 and/or CRC64NVME of a buffer, off the async threads when it is big.
pub(super) async fn sums_of(data: Bytes, md5: bool, crc64: bool) -> haul_store::Checksums {
    if !md5 && !crc64 {
        return haul_store::Checksums::default();
    }
    let big = data.len() > 256 * 1024;
    let run = move || {
        if md5 {
            let mut h = Hasher::new(false, crc64);
            h.update(&data);
            h.finish()
        } else {
            haul_store::Checksums {
                crc64nvme: Some(crc64_to_b64(crc64_of(&data))),
                ..Default::default()
            }
        }
    };
    if big {
        // A failed hashing thread leaves no checksum, which fails verification.
        tokio::task::spawn_blocking(run).await.unwrap_or_default()
    } else {
        run()
    }
}

pub(super) async fn md5_of(data: Bytes) -> String {
    sums_of(data, true, false).await.md5_hex.unwrap_or_default()
}

pub(super) async fn read_up_to<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(n);
    while buf.len() < n {
        let got = (&mut *r).take((n - buf.len()) as u64).read_buf(&mut buf).await?;
        if got == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}
