//! `--include` / `--exclude` globs on keys relative to the source prefix.
//!
//! A key is selected when it matches at least one include (or no includes
//! are given) and matches no exclude. `*` does not cross `/`; `**` does.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

/// A glob that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct FilterError {
    pub pattern: String,
    pub reason: String,
}

fn build(patterns: &[String]) -> Result<Option<GlobSet>, FilterError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g: Glob = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| FilterError {
                pattern: p.clone(),
                reason: e.kind().to_string(),
            })?;
        b.add(g);
    }
    b.build().map(Some).map_err(|e| FilterError {
        pattern: patterns.join(", "),
        reason: e.to_string(),
    })
}

impl Filter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, FilterError> {
        Ok(Filter {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    pub fn matches(&self, rel_key: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(rel_key))
            && !self.exclude.as_ref().is_some_and(|s| s.is_match(rel_key))
    }

    /// The listing hint for keys under `base` this filter drops, so that a
    /// local source never stats (or follows) an excluded entry; `None`
    /// without a filter.
    pub fn skip_keys(&self, base: &haul_store::Key) -> Option<haul_store::SkipKeys> {
        if self.is_empty() {
            return None;
        }
        let (f, base) = (self.clone(), base.as_str().to_string());
        Some(haul_store::SkipKeys(std::sync::Arc::new(move |key: &str| {
            !f.matches(key.strip_prefix(base.as_str()).unwrap_or(key))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_exclude() -> Result<(), FilterError> {
        let f = Filter::new(&["2026/**/*.json".into()], &["**/*.tmp".into(), "**/skip/**".into()])?;
        assert!(f.matches("2026/11/21/x.json"));
        assert!(!f.matches("2025/11/21/x.json"));
        assert!(!f.matches("2026/11/skip/x.json"));
        let g = Filter::new(&[], &["*.log".into()])?;
        assert!(g.matches("a/b.log"), "* must not cross /");
        assert!(!g.matches("b.log"));
        assert!(Filter::new(&["a[".into()], &[]).is_err());
        Ok(())
    }
}
