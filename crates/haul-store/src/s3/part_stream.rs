//! UploadPart from a stream: the part is sent as its chunks arrive, never
//! held whole in memory (a `--preserve-etag` copy of a source with parts
//! of up to 5 GiB).
//!
//! Nothing can be sent ahead of the data to protect it (no Content-MD5 is
//! known before the last byte): the caller hashes what it streams and
//! checks the part's ETag (the MD5 of what the server received) against it.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use aws_sdk_s3::primitives::ByteStream as SdkBody;
use bytes::Bytes;
use futures::StreamExt;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use super::S3Store;
use crate::checksum::clean_etag;
use crate::error::{Op, Result, StoreError};
use crate::key::Key;
use crate::types::{ByteStream, Checksums, CompletedPart, MultipartId};

/// A request body fed through a channel (the SDK wants a `Sync` body; the
/// stream is not).
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes>>,
    left: u64,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = StoreError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>>>> {
        match ready!(self.rx.poll_recv(cx)) {
            Some(Ok(b)) => {
                self.left = self.left.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

impl S3Store {
    /// Uploads part `part_number` from a stream of exactly `size` bytes.
    pub(super) async fn upload_part_streamed(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        size: u64,
        mut body: ByteStream,
    ) -> Result<CompletedPart> {
        let (tx, rx) = mpsc::channel(4);
        // Fed while the request is sent; ends when the body does, or when
        // the request gave up (the receiver is dropped).
        let feed = async move {
            while let Some(chunk) = body.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        };
        let send = self
            .conn
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(&upload.0)
            .part_number(part_number as i32)
            .content_length(size as i64)
            .body(SdkBody::from_body_1_x(ChannelBody { rx, left: size }))
            .customize()
            .config_override(self.sending(size))
            // The data cannot be hashed before it is sent: the caller checks
            // the part's ETag against the MD5 of what it streamed.
            .disable_payload_signing()
            .send();
        let ((), out) = tokio::join!(feed, send);
        let out = out.map_err(|e| self.err(Op::UploadPart, key.as_str(), e))?;
        Ok(CompletedPart {
            part_number,
            etag: out.e_tag().map(clean_etag).unwrap_or_default(),
            size,
            checksums: Checksums {
                crc64nvme: out.checksum_crc64_nvme().map(str::to_string),
                ..Default::default()
            },
            sse: out.server_side_encryption().map(super::sse_kind),
        })
    }
}
