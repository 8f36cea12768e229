//! Application (binary) versions: which engine started a workflow and which ran it last.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The version of the application an engine runs in: `MAJOR.MINOR.PATCH`, optionally followed by
/// a `-pre-release` or `+build` suffix, which is shown but not compared. Journals compare versions
/// by [`AppVersion::number`], so minor and patch must stay below 1000.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppVersion {
    text: String,
    number: i64,
}

impl AppVersion {
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = || Error::BadAppVersion(text.to_string());
        let core = text.split(['-', '+']).next().unwrap_or_default();
        let parts: Vec<&str> = core.split('.').collect();
        let [major, minor, patch] = parts.as_slice() else { return Err(bad()) };
        let number = |part: &str, limit: i64| {
            let digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            part.parse::<i64>().ok().filter(|n| digits && *n < limit)
        };
        let (Some(major), Some(minor), Some(patch)) =
            (number(major, 1_000_000_000), number(minor, 1_000), number(patch, 1_000))
        else {
            return Err(bad());
        };
        Ok(AppVersion { text: text.to_string(), number: major * 1_000_000 + minor * 1_000 + patch })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `major × 1 000 000 + minor × 1 000 + patch`: the version as journals store and compare it.
    pub fn number(&self) -> i64 {
        self.number
    }
}

/// The version of this crate, for callers that do not name one of their own.
impl Default for AppVersion {
    fn default() -> Self {
        let text = env!("CARGO_PKG_VERSION");
        AppVersion::parse(text).unwrap_or(AppVersion { text: text.to_string(), number: 0 })
    }
}

impl FromStr for AppVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AppVersion::parse(s)
    }
}

impl fmt::Display for AppVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Option<i64> {
        AppVersion::parse(text).ok().map(|v| v.number())
    }

    #[test]
    fn versions_compare_by_major_minor_and_patch() {
        assert_eq!(number("0.2.0"), Some(2_000));
        assert_eq!(number("1.10.3"), Some(1_010_003));
        assert!(number("0.10.0") > number("0.9.999"));
        assert!(number("2.0.0") > number("1.999.999"));
    }

    #[test]
    fn suffixes_are_kept_for_show_but_not_compared() {
        let rc = AppVersion::parse("0.3.0-rc.1+build.7").map_err(|e| e.to_string());
        assert_eq!(rc.as_ref().map(|v| (v.as_str(), v.number())), Ok(("0.3.0-rc.1+build.7", 3_000)));
    }

    #[test]
    fn malformed_versions_are_refused() {
        for bad in ["", "1", "1.2", "1.2.3.4", "v1.2.3", "1.2.x", "1.1000.0", "1.0.1000", "1..3", "-1.2.3", "1.+2.3"] {
            assert!(AppVersion::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_default_is_this_crate_version() {
        assert_eq!(AppVersion::default().as_str(), env!("CARGO_PKG_VERSION"));
        assert!(AppVersion::default().number() > 0 || env!("CARGO_PKG_VERSION") == "0.0.0");
    }
}
