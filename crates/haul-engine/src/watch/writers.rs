//! Which files someone has open for writing, as inotify tells: a file is
//! opened (`IN_OPEN`, which does not say for what), then closed either
//! after writing (`IN_CLOSE_WRITE`) or not (`IN_CLOSE_NOWRITE`). A file
//! created or modified while open is being written until every open of it
//! is closed; a file only read (haul's own upload, a reader) is not.
//!
//! Events are hints: every event is numbered as it arrives, and an open
//! that came before a lost event (a queue overflow) is not trusted any
//! more — its close may be what was lost. A writer that opened the file
//! before the watch started is not known either.
//! Settling by time and the checks before a deletion still apply.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Open {
    opens: u32,
    written: bool,
    /// The number of the event that opened it first (of the opens now counted).
    since: u64,
}

/// Open files of the tree, by relative path (only those open now).
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

    /// `IN_CREATE` of a file: whoever opens it next is writing it.
    pub fn created(&self, rel: &str) {
        self.with(|m| m.entry(rel.to_string()).or_default().written = true);
    }

    /// `IN_OPEN`, event number `seq`.
    pub fn opened(&self, rel: &str, seq: u64) {
        self.with(|m| {
            let o = m.entry(rel.to_string()).or_default();
            if o.opens == 0 {
                o.since = seq;
            }
            o.opens += 1;
        });
    }

    /// `IN_MODIFY`: written by one of those who have it open.
    pub fn modified(&self, rel: &str) {
        self.with(|m| {
            if let Some(o) = m.get_mut(rel) {
                o.written = true;
            }
        });
    }

    /// `IN_CLOSE_WRITE` or `IN_CLOSE_NOWRITE`.
    pub fn closed(&self, rel: &str) {
        self.with(|m| {
            if let Some(o) = m.get_mut(rel) {
                o.opens = o.opens.saturating_sub(1);
                if o.opens == 0 {
                    m.remove(rel);
                }
            }
        });
    }

    /// The file is gone (deleted or renamed away).
    pub fn forget(&self, rel: &str) {
        self.with(|m| m.remove(rel));
    }

    /// The kernel's queue overflowed at event `seq`.
    pub fn lost_at(&self, seq: u64) {
        self.lost.fetch_max(seq, Ordering::SeqCst);
    }

    /// Events were lost: opens from before are not known any more.
    pub fn clear(&self) {
        let lost = self.lost.load(Ordering::SeqCst);
        self.with(|m| m.retain(|_, o| o.opens > 0 && o.since > lost));
    }

    /// Whether someone has `rel` open and has written it (or created it)
    /// since, as far as events tell (none lost since it was opened).
    pub fn writing(&self, rel: &str) -> bool {
        let lost = self.lost.load(Ordering::SeqCst);
        self.with(|m| m.get(rel).is_some_and(|o| o.opens > 0 && o.written && o.since > lost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_holds_the_file_until_its_last_close_and_readers_do_not() {
        let w = Writers::default();
        w.created("a");
        w.opened("a", 1);
        assert!(w.writing("a"), "created and open");
        w.opened("a", 2); // haul reads it meanwhile
        w.closed("a");
        assert!(w.writing("a"), "the writer still has it");
        w.closed("a");
        assert!(!w.writing("a"));
        // A reader alone is not a writer.
        w.opened("b", 3);
        assert!(!w.writing("b"));
        w.modified("b");
        assert!(w.writing("b"), "opened and written (an append)");
        // An event lost after the open: its close may be what was lost.
        w.lost.store(4, Ordering::SeqCst);
        assert!(!w.writing("b"));
        w.clear();
        w.closed("b"); // after a clear: no underflow, no entry
        assert!(!w.writing("b"));
    }
}
