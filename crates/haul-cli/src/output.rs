//! What the user sees: a progress bar on a TTY, failures and the summary on
//! stderr, or JSON lines on stdout with `--json`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use haul_engine::job::Action;
use haul_engine::restore::RestoreOutcome;
use haul_engine::verify::Finding;
use haul_engine::watch::{Uploaded, WatchObserver};
use haul_engine::{Failure, Observer, Summary};
use haul_jobs::{PlanRow, Reporter};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::args::Global;

/// Prints events of a run.
#[derive(Debug)]
pub struct Output {
    json: bool,
    quiet: bool,
    bar: Option<ProgressBar>,
    planned: AtomicU64,
    listed: AtomicU64,
    shards: Mutex<Option<(u64, u64)>>,
    done: AtomicU64,
    failed: AtomicU64,
    stdout: Mutex<()>,
    report: Option<ReportFile>,
}

/// `--report FILE`: every failure as a JSON line, and with `--report-all`
/// every copy and delete too.
#[derive(Debug)]
pub struct ReportFile {
    out: Mutex<std::io::BufWriter<std::fs::File>>,
    all: bool,
}

impl ReportFile {
    pub fn create(path: &std::path::Path, all: bool) -> std::io::Result<Self> {
        Ok(ReportFile {
            out: Mutex::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
            all,
        })
    }

    fn record(&self, line: impl FnOnce() -> serde_json::Value, only_with_all: bool) {
        if only_with_all && !self.all {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(out, "{}", line()) {
            tracing::error!(error = %e, "cannot write the report file");
        }
    }

    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.flush() {
            eprintln!("haul: error: cannot write the report file: {e}");
        }
    }
}

impl Output {
    pub fn new(g: &Global, show_bar: bool) -> Self {
        let bar = (show_bar && !g.json && !g.quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(5));
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Output {
            json: g.json,
            quiet: g.quiet,
            bar,
            planned: AtomicU64::new(0),
            listed: AtomicU64::new(0),
            shards: Mutex::new(None),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stdout: Mutex::new(()),
            report: None,
        }
    }

    /// The output of a job that moves or deletes objects: with `--report`,
    /// the report file is created now, so a bad path fails before any work.
    pub fn for_job(g: &Global, show_bar: bool) -> anyhow::Result<Self> {
        let report = match &g.report {
            Some(p) => Some(
                ReportFile::create(p, g.report_all).map_err(|e| anyhow::anyhow!("--report {}: {e}", p.display()))?,
            ),
            None => None,
        };
        Ok(Output::new(g, show_bar).with_report(report))
    }

    /// Also writes a report file.
    pub fn with_report(mut self, report: Option<ReportFile>) -> Self {
        self.report = report;
        self
    }

    fn message(&self) {
        if let Some(b) = &self.bar {
            let listed = self.listed.load(Ordering::Relaxed);
            let listed = if listed > 0 {
                format!("{listed} listed, ")
            } else {
                String::new()
            };
            let shards = match *self.shards.lock().unwrap_or_else(|e| e.into_inner()) {
                Some((d, t)) => format!(", shards {d}/{t}"),
                None => String::new(),
            };
            b.set_message(format!(
                "{listed}{}/{} objects copied, {} failed{shards}",
                self.done.load(Ordering::Relaxed),
                self.planned.load(Ordering::Relaxed),
                self.failed.load(Ordering::Relaxed)
            ));
        }
    }

    /// Prints one line to stdout without interleaving with other lines.
    pub fn line(&self, s: &str) {
        let _g = self.stdout.lock().unwrap_or_else(|e| e.into_inner());
        let print = || {
            let mut out = std::io::stdout().lock();
            // A closed stdout (e.g. `| head`) is not an error of the run.
            let _ = writeln!(out, "{s}");
        };
        match &self.bar {
            Some(b) => b.suspend(print),
            None => print(),
        }
    }

    fn err_line(&self, s: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{s}")),
            None => eprintln!("{s}"),
        }
    }

    /// Ends the bar and prints the summary (human on stderr, or JSON on stdout).
    pub fn summary(&self, verb: &str, s: &Summary) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Some(r) = &self.report {
            r.record(|| serde_json::to_value(s).unwrap_or_default(), false);
            r.flush();
        }
        if self.json {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("event".into(), json!("summary"));
                o.insert("command".into(), json!(verb));
            }
            self.line(&v.to_string());
            return;
        }
        if self.quiet {
            return;
        }
        let dry = if s.dry_run { " (dry run: nothing changed)" } else { "" };
        if verb == "Deleted" {
            eprintln!(
                "Deleted {} objects in {:.1}s; {} failed{dry}",
                s.deleted, s.elapsed_secs, s.failed
            );
            return;
        }
        let deleted = if s.deleted > 0 {
            format!("{} deleted, ", s.deleted)
        } else {
            String::new()
        };
        let server = if s.server_side > 0 {
            format!(", {} server-side", s.server_side)
        } else {
            String::new()
        };
        let listed = if s.listed > 0 {
            format!("{} listed; ", s.listed)
        } else {
            String::new()
        };
        let shards = if s.shards > 1 || s.shards_resumed > 0 {
            format!(" [{} shards, {} done in an earlier run]", s.shards, s.shards_resumed)
        } else {
            String::new()
        };
        let unlisted = if s.unlisted > 0 {
            format!(" ({} not objects)", s.unlisted)
        } else {
            String::new()
        };
        let unverified = if s.unverified > 0 {
            format!(", {} unverified (source not checkable)", s.unverified)
        } else {
            String::new()
        };
        eprintln!(
            "{listed}{verb} {} objects ({}) in {:.1}s, {}/s{server}{unverified}; {deleted}{} skipped{unlisted}, {} failed{dry}{shards}",
            s.objects,
            bytesize::ByteSize(s.bytes).display().iec(),
            s.elapsed_secs,
            bytesize::ByteSize(s.bytes_per_sec as u64).display().iec(),
            s.skipped,
            s.failed,
        );
        if s.retries > 0 {
            eprintln!("{} requests sent again after retryable failures", s.retries);
        }
        for n in &s.notices {
            eprintln!("note: {n}");
        }
        if s.failed > s.first_failures.len() as u64 {
            eprintln!(
                "(first {} failures shown; use --json for all of them)",
                s.first_failures.len()
            );
        }
    }
}

impl Observer for Output {
    fn planned(&self, objects: u64, bytes: u64) {
        self.planned.fetch_add(objects, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc_length(bytes);
        }
        self.message();
    }
    fn listed(&self, n: u64) {
        self.listed.fetch_add(n, Ordering::Relaxed);
    }
    fn shard_finished(&self, done: u64, total: u64) {
        *self.shards.lock().unwrap_or_else(|e| e.into_inner()) = Some((done, total));
        self.message();
    }
    fn bytes(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn done(&self, key: &str, bytes: u64) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.message();
        if let Some(r) = &self.report {
            r.record(|| json!({"event": "copied", "key": key, "bytes": bytes}), true);
        }
    }
    fn deleted(&self, key: &str) {
        if let Some(r) = &self.report {
            r.record(|| json!({"event": "deleted", "key": key}), true);
        }
    }
    fn unlisted(&self, key: &str, reason: haul_engine::report::SkipReason, detail: &str) {
        if let Some(r) = &self.report {
            r.record(
                || json!({"event": "skipped", "key": key, "reason": reason, "message": detail}),
                false,
            );
        }
        if self.json {
            self.line(&json!({"event": "skipped", "key": key, "reason": reason, "message": detail}).to_string());
        } else if !self.quiet {
            self.err_line(&format!("skipped {key}: {detail} [{reason}]"));
        }
    }
    fn unverified(&self, key: &str) {
        if let Some(r) = &self.report {
            r.record(|| json!({"event": "unverified", "key": key}), false);
        }
        if self.json {
            self.line(&json!({"event": "unverified", "key": key}).to_string());
        }
    }
    fn skipped(&self, key: &str, reason: &str) {
        if self.json {
            self.line(&json!({"event": "skip", "key": key, "reason": reason}).to_string());
        } else if !self.quiet {
            self.err_line(&format!("skipped {key}: {reason}"));
        }
    }
    fn failed(&self, f: &Failure) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.message();
        if let Some(r) = &self.report {
            r.record(
                || json!({"event": "failure", "key": f.key, "op": f.op, "code": f.code, "message": f.message}),
                false,
            );
        }
        if self.json {
            let mut v = serde_json::to_value(f).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("event".into(), json!("failure"));
            }
            self.line(&v.to_string());
        } else {
            self.err_line(&format!("failed: {} [{}]", f.message, f.code));
        }
    }
}

impl WatchObserver for Output {
    fn uploaded(&self, u: &Uploaded<'_>) {
        if self.json {
            self.line(
                &json!({
                    "event": "uploaded",
                    "key": u.key,
                    "dst": u.dst_key.as_str(),
                    "bytes": u.bytes,
                    "latency_ms": u.latency.as_millis() as u64,
                    "deleted": u.deleted,
                })
                .to_string(),
            );
        }
    }

    fn failed(&self, f: &Failure, attempts: u32, dead: bool) {
        if self.json {
            self.line(
                &json!({
                    "event": "failed",
                    "key": f.key,
                    "op": f.op,
                    "code": f.code,
                    "message": f.message,
                    "attempts": attempts,
                    "dead": dead,
                })
                .to_string(),
            );
        }
    }

    fn skipped_exists(&self, key: &str, dst_key: &haul_store::Key) {
        if self.json {
            self.line(
                &json!({"event": "skipped", "key": key, "dst": dst_key.as_str(), "reason": "exists"}).to_string(),
            );
        }
    }
}

impl Reporter for Output {
    fn would(&self, src_url: &str, dst_url: &str, action: Action<'_>) {
        let line = match (action, self.json) {
            (Action::Copy { dst, .. }, false) if src_url == "stdin" => format!("(dry run) upload stdin -> {dst_url}/{dst}"),
            (Action::Copy { src, dst, size }, true) => json!({"event": "plan", "action": "copy", "src": format!("{src_url}/{src}"), "dst": format!("{dst_url}/{dst}"), "size": size}).to_string(),
            (Action::Copy { src, dst, size }, false) => format!("(dry run) copy {src_url}/{src} -> {dst_url}/{dst} ({size} bytes)"),
            (Action::Delete { key }, true) => json!({"event": "plan", "action": "delete", "key": format!("{dst_url}/{key}")}).to_string(),
            (Action::Delete { key }, false) => format!("(dry run) delete {dst_url}/{key}"),
        };
        self.line(&line);
    }

    fn plan_started(&self) {
        if !self.json {
            self.line("action\treason\tkey\tsize\tetag\tmtime");
        }
    }

    fn plan_row(&self, r: &PlanRow) {
        if self.json {
            self.line(
                &json!({"action": r.action, "reason": r.reason, "key": r.key, "size": r.size, "etag": r.etag, "mtime": r.mtime})
                    .to_string(),
            );
        } else {
            let key = r.key.replace(['\t', '\n'], " ");
            self.line(&format!(
                "{}\t{}\t{key}\t{}\t{}\t{}",
                r.action, r.reason, r.size, r.etag, r.mtime
            ));
        }
    }

    fn finding(&self, f: &Finding) {
        if self.json {
            self.line(&serde_json::to_string(f).unwrap_or_default());
            return;
        }
        let line = match f {
            Finding::Same { key, how } => format!("same\t{key}\t{how}"),
            Finding::Missing { key } => format!("missing\t{key}"),
            Finding::Mismatch { key, reason } => format!("mismatch\t{key}\t{reason}"),
            Finding::Extra { key } => format!("extra\t{key}\tonly in the destination"),
            Finding::Skipped { key, reason } => format!("skipped\t{key}\t{reason}"),
            Finding::Error { key, message } => format!("error\t{key}\t{message}"),
        };
        self.line(&line);
    }

    fn restored(&self, url: &str, o: &RestoreOutcome, dry_run: bool) {
        if self.json {
            self.line(&serde_json::to_string(o).unwrap_or_default());
        } else if let (RestoreOutcome::Requested { key }, true) = (o, dry_run) {
            self.line(&format!("(dry run) restore {url}/{key}"));
        }
    }

    fn notice(&self, message: &str) {
        if !self.quiet {
            self.err_line(message);
        }
    }
}
