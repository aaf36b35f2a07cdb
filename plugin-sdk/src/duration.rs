//! Durations as people write them in configs: `"5s"`, `"250ms"`,
//! `"1m 30s"`, `"2h"` (or a bare number of seconds).

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A [`std::time::Duration`] that deserializes from `"5s"`, `"250ms"`,
/// `"1m 30s"` or a number of seconds, and serializes back to the same form.
///
/// ```
/// use healer_plugin_sdk::Duration;
/// #[derive(serde::Deserialize)]
/// struct Config { timeout: Duration }
/// let config: Config = serde_json::from_str(r#"{"timeout": "1m 30s"}"#).unwrap();
/// assert_eq!(config.timeout.as_secs(), 90);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The longest duration a config may give: a year and a day. Anything
    /// longer is a typo (or `"1e30s"`), and would overflow the arithmetic
    /// of deadlines and schedules.
    pub const MAX: Duration = Duration::from_secs(366 * 86_400);

    /// This many seconds.
    pub const fn from_secs(secs: u64) -> Duration {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// This many milliseconds.
    pub const fn from_millis(millis: u64) -> Duration {
        Duration(std::time::Duration::from_millis(millis))
    }

    /// Parses `"5s"`, `"250ms"`, `"1m 30s"`; at most [`Duration::MAX`].
    pub fn parse(text: &str) -> Result<Duration, String> {
        let parsed = humantime::parse_duration(text.trim()).map_err(|err| {
            format!("invalid duration {text:?}: {err} (write e.g. \"5s\", \"250ms\", \"1m 30s\")")
        })?;
        Duration(parsed).at_most_max(text)
    }

    fn at_most_max(self, written: &str) -> Result<Duration, String> {
        if self <= Duration::MAX {
            Ok(self)
        } else {
            Err(format!(
                "invalid duration {written:?}: longer than the longest allowed, {}",
                Duration::MAX
            ))
        }
    }
}

impl Deref for Duration {
    type Target = std::time::Duration;

    fn deref(&self) -> &std::time::Duration {
        &self.0
    }
}

impl From<Duration> for std::time::Duration {
    fn from(duration: Duration) -> std::time::Duration {
        duration.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&humantime::format_duration(self.0), f)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Seconds(f64),
        }
        match Written::deserialize(d)? {
            Written::Text(text) => Duration::parse(&text).map_err(serde::de::Error::custom),
            Written::Seconds(secs) if secs.is_finite() && secs >= 0.0 => {
                let written = secs.to_string();
                let duration = std::time::Duration::try_from_secs_f64(secs)
                    .unwrap_or(std::time::Duration::MAX);
                Duration(duration)
                    .at_most_max(&written)
                    .map_err(serde::de::Error::custom)
            }
            Written::Seconds(secs) => Err(serde::de::Error::custom(format!(
                "invalid duration {secs}: durations are zero or more seconds"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Duration, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_units_and_bare_seconds() {
        assert_eq!(parse("\"250ms\"").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("\"1m 30s\"").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("0.5").unwrap(), Duration::from_millis(500));
    }

    #[test]
    fn explains_what_a_duration_looks_like() {
        let err = parse("\"5 parsecs\"").unwrap_err();
        assert!(err.contains("invalid duration \"5 parsecs\""), "{err}");
        assert!(err.contains("write e.g. \"5s\""), "{err}");
        assert!(parse("-1").is_err());
    }

    #[test]
    fn refuses_what_no_config_means_instead_of_overflowing() {
        for written in [
            "\"1e30s\"",
            "1e30",
            "\"99999999999999999999s\"",
            "\"367days\"",
            "1e300",
        ] {
            let err = parse(written).unwrap_err();
            assert!(err.contains("invalid duration"), "{written}: {err}");
        }
        assert_eq!(parse("\"366days\"").unwrap(), Duration::MAX);
    }

    #[test]
    fn prints_the_way_it_is_written() {
        assert_eq!(Duration::from_secs(90).to_string(), "1m 30s");
        assert_eq!(
            serde_json::to_string(&Duration::from_millis(250)).unwrap(),
            "\"250ms\""
        );
    }
}
