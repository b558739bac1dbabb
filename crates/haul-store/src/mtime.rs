//! The modification time haul keeps as user metadata on stores that have
//! no file mtime (S3: `x-amz-meta-mtime`), in rclone's format: seconds since
//! the epoch with a fraction. Local and memory stores report it under the
//! same key, so the engine reads one format from every backend.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The user-metadata key the modification time is kept under.
pub const METADATA_KEY: &str = "mtime";

/// The `mtime` user metadata haul writes (seconds since the epoch with
/// fractions, as rclone does).
pub fn format_mtime(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(_) => "0".into(),
    }
}

/// Parses `mtime` user metadata written by haul or rclone.
pub fn parse_mtime(s: &str) -> Option<SystemTime> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let secs: u64 = secs.parse().ok()?;
    let mut frac = frac.chars().take(9).collect::<String>();
    while frac.len() < 9 {
        frac.push('0');
    }
    let nanos: u32 = frac.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_metadata_roundtrips_and_never_panics() {
        let t = UNIX_EPOCH + Duration::new(1_795_253_869, 510_095_294);
        assert_eq!(parse_mtime(&format_mtime(t)), Some(t));
        assert_eq!(
            parse_mtime("1700000000"),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            parse_mtime("1700000000.5"),
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000))
        );
        // Hostile or broken metadata: no panic, no time.
        assert_eq!(parse_mtime("18446744073709551615"), None);
        assert_eq!(parse_mtime("-1"), None);
        assert_eq!(parse_mtime("abc"), None);
        assert_eq!(parse_mtime("1.x"), None);
    }
}
