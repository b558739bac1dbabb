//! The value types of job files: locations, sizes and durations that read
//! and write the way a person types them (`"s3://bucket/logs/"`, `"16MiB"`,
//! `"30s"`), and are checked when the file is read, so a bad value is
//! refused with its line and column before anything runs.

use std::fmt;
use std::time::Duration;

use haul_store::location::Location;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A location as written (`s3://bucket/prefix`, a local path, `-`), checked
/// when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    raw: String,
    parsed: Location,
}

impl Loc {
    pub fn parse(raw: &str) -> Result<Self, haul_store::location::LocationError> {
        Ok(Loc {
            raw: raw.to_string(),
            parsed: Location::parse(raw)?,
        })
    }

    /// What it points at.
    pub fn location(&self) -> &Location {
        &self.parsed
    }

    /// As the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for Loc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Loc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Loc::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A size in bytes, written `"16MiB"` (or a plain number of bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub const MIB: u64 = 1024 * 1024;

    /// Parses `16MiB`, `64M`, `1GiB`, `4096`; zero is refused.
    pub fn parse(s: &str) -> Result<Self, String> {
        let v: bytesize::ByteSize = s.parse().map_err(|e| format!("invalid size {s:?}: {e}"))?;
        if v.as_u64() == 0 {
            return Err(format!("invalid size {s:?}: must be more than 0"));
        }
        Ok(Size(v.as_u64()))
    }
}

impl fmt::Display for Size {
    /// The shortest exact form: `16MiB`, `1GiB`, `1000` (bytes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (n, unit) in UNITS {
            if self.0 >= n && self.0.is_multiple_of(n) {
                return write!(f, "{}{unit}", self.0 / n);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected a size such as \"16MiB\""))? {
            Raw::Bytes(0) => Err(serde::de::Error::custom("a size must be more than 0")),
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(t) => Size::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// A duration, written `"30s"`, `"10m"`, `"1day"` (humantime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        humantime::parse_duration(&raw)
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {raw:?}: {e}")))
    }
}

impl From<Duration> for Dur {
    fn from(d: Duration) -> Self {
        Dur(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_their_shortest_exact_form() {
        for (n, s) in [
            (16 * Size::MIB, "16MiB"),
            (1 << 30, "1GiB"),
            (1000, "1000"),
            (3072, "3KiB"),
            (1536, "1536"),
            (5 * Size::MIB + 1, "5242881"),
        ] {
            assert_eq!(Size(n).to_string(), s);
            assert_eq!(Size::parse(s), Ok(Size(n)));
        }
        assert!(Size::parse("0").is_err());
        assert!(Size::parse("lots").is_err());
    }
}
