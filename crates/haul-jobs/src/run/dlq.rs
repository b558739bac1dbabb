//! `--dlq FILE` of a bundle run, written as dead letters happen: one JSON
//! line each in FILE, and the keys of archived ones (GLACIER, DEEP_ARCHIVE)
//! one a line in `FILE.archived` for `haul restore --files-from`. Nothing
//! is held in memory, whatever the number of dead letters.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use haul_engine::bundle::{DeadLetter, DeadReason, DeadSink};

use crate::error::{JobError, Result};

/// The `--dlq` files of one run.
pub(crate) struct DlqFile {
    lines: BufWriter<File>,
    archived_path: PathBuf,
    /// Created with the first archived dead letter.
    archived: Option<BufWriter<File>>,
}

impl DlqFile {
    /// Creates (or truncates) FILE, and removes a `FILE.archived` of an
    /// earlier run: both describe this run only.
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let io = |e: io::Error| JobError::Invalid(format!("--dlq {}: {e}", path.display()));
        let mut archived_path = path.as_os_str().to_owned();
        archived_path.push(".archived");
        let archived_path = PathBuf::from(archived_path);
        match std::fs::remove_file(&archived_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        Ok(DlqFile {
            lines: BufWriter::new(File::create(path).map_err(io)?),
            archived_path,
            archived: None,
        })
    }
}

impl DeadSink for DlqFile {
    fn dead(&mut self, d: &DeadLetter) -> io::Result<()> {
        serde_json::to_writer(&mut self.lines, d)?;
        self.lines.write_all(b"\n")?;
        if d.reason == DeadReason::Archived {
            let f = match &mut self.archived {
                Some(f) => f,
                None => self.archived.insert(BufWriter::new(File::create(&self.archived_path)?)),
            };
            writeln!(f, "{}", d.key)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lines.flush()?;
        self.lines.get_ref().sync_all()?;
        if let Some(f) = &mut self.archived {
            f.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_letter_goes_to_the_file_and_archived_keys_to_file_archived(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("dead.jsonl");
        std::fs::write(dir.path().join("dead.jsonl.archived"), "stale\n")?;
        let mut f = DlqFile::create(&path)?;
        assert!(
            !dir.path().join("dead.jsonl.archived").exists(),
            "an earlier run's list is gone"
        );
        let letters: Vec<DeadLetter> = (0..250)
            .map(|i| {
                let reason = if i % 100 == 7 {
                    DeadReason::Archived
                } else {
                    DeadReason::NotFound
                };
                DeadLetter::new(&format!("k{i}"), i, None, reason, "x")
            })
            .collect();
        for d in &letters {
            f.dead(d)?;
        }
        f.flush()?;
        let back: Vec<DeadLetter> = std::fs::read_to_string(&path)?
            .lines()
            .map(serde_json::from_str)
            .collect::<std::result::Result<_, _>>()?;
        assert_eq!(back, letters);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("dead.jsonl.archived"))?,
            "k7\nk107\nk207\n"
        );
        Ok(())
    }
}
