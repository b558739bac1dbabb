//! Which files someone is writing, as inotify tells: a file created or
//! modified (`IN_CREATE`, `IN_MODIFY`) is being written until a writer
//! closes it (`IN_CLOSE_WRITE`). Opens say nothing (`IN_OPEN` does not tell
//! for what) and reads are not reported closed (notify does not ask for
//! `IN_CLOSE_NOWRITE`), so readers — haul's own upload included — never
//! count. A writer that has opened a file but not written it yet is not
//! known, nor one that opened it before the watch started.
//!
//! Events are hints: every event is numbered as it arrives, and a write
//! seen before a lost event (a queue overflow) is not trusted any more —
//! its close may be what was lost. Settling by time and the checks before
//! a deletion still apply.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Open {
    /// The number of the first write event seen since the last close.
    since: u64,
}

/// Files being written, by relative path (only those written now).
#[derive(Debug, Default)]
pub struct Writers {
    open: Mutex<HashMap<String, Open>>,
    /// Events numbered as they arrive; the number of the last one lost.
    seq: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
}

impl Writers {
    /// The numbering of events, and the mark of lost ones, for the watcher.
    pub fn counters(&self) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
        (self.seq.clone(), self.lost.clone())
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Open>) -> T) -> T {
        f(&mut self.open.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `IN_CREATE` or `IN_MODIFY`, event number `seq`: someone writes it.
    pub fn written(&self, rel: &str, seq: u64) {
        self.with(|m| {
            m.entry(rel.to_string()).or_insert(Open { since: seq });
        });
    }

    /// `IN_CLOSE_WRITE`: a writer closed it.
    pub fn closed(&self, rel: &str) {
        self.with(|m| m.remove(rel));
    }

    /// The file is gone (deleted or renamed away).
    pub fn forget(&self, rel: &str) {
        self.with(|m| m.remove(rel));
    }

    /// The kernel's queue overflowed at event `seq`.
    pub fn lost_at(&self, seq: u64) {
        self.lost.fetch_max(seq, Ordering::SeqCst);
    }

    /// Events were lost: writes from before are not known any more.
    pub fn clear(&self) {
        let lost = self.lost.load(Ordering::SeqCst);
        self.with(|m| m.retain(|_, o| o.since > lost));
    }

    /// Whether someone writes `rel` and has not closed it, as far as events
    /// tell (none lost since the write).
    pub fn writing(&self, rel: &str) -> bool {
        let lost = self.lost.load(Ordering::SeqCst);
        self.with(|m| m.get(rel).is_some_and(|o| o.since > lost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_holds_the_file_until_it_closes_it_and_lost_events_release_it() {
        let w = Writers::default();
        w.written("a", 1);
        w.written("a", 2);
        assert!(w.writing("a"));
        w.closed("a");
        assert!(!w.writing("a"));
        w.written("b", 3);
        assert!(w.writing("b"));
        // An event lost after the write: its close may be what was lost.
        w.lost_at(4);
        assert!(!w.writing("b"));
        w.clear();
        w.written("b", 5);
        assert!(w.writing("b"), "a write after the loss counts");
    }
}
