//! How a dispatched file ended, recorded: in the journal (the row goes, is
//! requeued, fails or becomes a dead letter), in the run's counters, the
//! log and the observer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use haul_store::{Key, StoreError};

use super::journal::{now_ms, Due};
use super::upload::Outcome;
use super::{Inner, Uploaded, WatchError};
use crate::report::Failure;

impl Inner {
    /// Records how a dispatched file ended.
    pub(super) fn finish(&self, due: &Due, out: Outcome) -> Result<(), WatchError> {
        match out {
            Outcome::Uploaded {
                bytes,
                deleted,
                latency,
                dst_key,
            } => self.finish_uploaded(due, bytes, deleted, latency, &dst_key)?,
            Outcome::Vanished => {
                tracing::debug!(key = %due.key, "gone from the tree before upload");
                self.journal.forget(&due.key)?;
            }
            Outcome::NotSettled { id, at_ms } => {
                self.journal
                    .requeue(&due.key, id.size, id.mtime_ns, id.ctime_ns, at_ms)?;
            }
            Outcome::SkippedExists { dst_key } => self.finish_skipped_exists(due, &dst_key)?,
            Outcome::Released => self.journal.release(&due.key)?,
            Outcome::Failed(e) => self.finish_failed(due, &e)?,
        }
        Ok(())
    }

    /// A verified upload (and deletion): the row goes, unless the file
    /// changed meanwhile.
    fn finish_uploaded(
        &self,
        due: &Due,
        bytes: u64,
        deleted: bool,
        latency: Duration,
        dst_key: &Key,
    ) -> Result<(), WatchError> {
        let settle_until = now_ms() + self.opts.settle.as_millis() as i64;
        let again = self.journal.done(&due.key, bytes, deleted, settle_until)?;
        self.uploaded.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if deleted {
            self.deleted.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(
            key = %due.key,
            dst = %dst_key,
            bytes,
            latency_ms = latency.as_millis() as u64,
            deleted,
            "uploaded"
        );
        if again {
            tracing::info!(key = %due.key, "changed while uploading: will upload again");
        }
        self.observer.uploaded(&Uploaded {
            key: &due.key,
            dst_key,
            bytes,
            latency,
            deleted,
        });
        Ok(())
    }

    /// Not uploaded, kept: the key exists and `--if-exists skip` keeps it.
    fn finish_skipped_exists(&self, due: &Due, dst_key: &Key) -> Result<(), WatchError> {
        let msg = format!(
            "{dst_key} exists and --if-exists skip keeps it: the local file is kept, not uploaded \
             (`haul watch retry` tries again)"
        );
        tracing::warn!(key = %due.key, dst = %dst_key, "the destination key exists: not uploaded, the local file is kept");
        self.journal.skipped_exists(&due.key, &msg)?;
        self.observer.skipped_exists(&due.key, dst_key);
        Ok(())
    }

    /// A failed attempt: retried after a backoff, or a dead letter once out
    /// of attempts.
    fn finish_failed(&self, due: &Due, e: &StoreError) -> Result<(), WatchError> {
        let f = Failure::from_error(&due.key, e);
        let attempts = due.attempts + 1;
        let dead = self.opts.max_attempts.is_some_and(|m| attempts >= m);
        let retry_at = (!dead).then(|| now_ms() + self.backoff(due.attempts).as_millis() as i64);
        self.journal.failed(&due.key, &f.op, &f.code, &f.message, retry_at)?;
        self.failed.fetch_add(1, Ordering::Relaxed);
        if dead {
            tracing::error!(key = %due.key, op = %f.op, code = %f.code, attempts, "{}: giving up (dead letter; `haul watch retry` re-queues it)", f.message);
        } else {
            tracing::warn!(
                key = %due.key, op = %f.op, code = %f.code, attempts,
                retry_in_ms = retry_at.map_or(0, |t| (t - now_ms()).max(0)),
                "{}", f.message
            );
        }
        self.observer.failed(&f, attempts, dead);
        Ok(())
    }

    /// The wait before the next attempt, after `attempts` failed ones:
    /// from `retry_min`, doubling, capped at `retry_max`, with jitter.
    fn backoff(&self, attempts: u32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.opts.retry_min)
            .with_max_delay(self.opts.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts as usize)
            .unwrap_or(self.opts.retry_max)
    }
}
