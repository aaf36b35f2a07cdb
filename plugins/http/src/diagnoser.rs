//! The `http` diagnoser.

use healer_plugin_sdk::{Diagnoser, Error, Finding, Observation, Status};
use serde::Deserialize;

/// Options of the `http` diagnoser.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `http.slow` only after this many slow answers in a row.
    #[serde(default = "one")]
    slow_for_samples: usize,
}

fn one() -> usize {
    1
}

/// Every kind the diagnoser names.
const KINDS: [&str; 9] = [
    "http.status_5xx",
    "http.status_4xx",
    "http.status_unexpected",
    "http.timeout",
    "http.refused",
    "http.certificate",
    "http.slow",
    "http.body_mismatch",
    "http.error",
];

/// Names what went wrong with an HTTP check.
pub struct HttpDiagnoser(Config);

impl Diagnoser for HttpDiagnoser {
    type Config = Config;
    const NAME: &'static str = "http";
    // Reads only the observations: runs in place, no thread hop.
    const BLOCKS: bool = false;
    const DESCRIPTION: &'static str =
        "http.status_5xx, .status_4xx, .timeout, .refused, .certificate, .slow, .body_mismatch, .error";
    const SAMPLE_CONFIG: &'static str =
        "slow_for_samples = 3  # http.slow after this many slow answers in a row\n";

    fn new(config: Config) -> Result<Self, Error> {
        if config.slow_for_samples == 0 {
            return Err("`slow_for_samples` must be at least 1".into());
        }
        Ok(HttpDiagnoser(config))
    }

    /// Only a run of slow answers looks back: the ones before the latest.
    fn history_needed(config: &Config) -> usize {
        config.slow_for_samples.saturating_sub(1)
    }

    fn kinds(_config: &Config) -> Option<Vec<String>> {
        Some(KINDS.map(str::to_owned).to_vec())
    }

    fn diagnose(&mut self, latest: &Observation, history: &[Observation]) -> Vec<Finding> {
        // UNKNOWN: healer could not ask (DNS, a local socket error) or judged
        // a certificate on its own clock or CA store: that is no evidence
        // about the service (the host reports `http.unknown`).
        if matches!(latest.status, Status::Ok | Status::Unknown) {
            return Vec::new();
        }
        let error = latest.details.get("error").and_then(|e| e.as_str());
        let code = latest.details.get("status_code").and_then(|c| c.as_u64());
        let kind = match (error, code) {
            (Some("slow"), _) => {
                let slow = |seen: &Observation| {
                    seen.details.get("error").and_then(|e| e.as_str()) == Some("slow")
                };
                let run = history.iter().rev().take_while(|seen| slow(seen)).count() + 1;
                if run < self.0.slow_for_samples {
                    return Vec::new();
                }
                "http.slow"
            }
            (Some("body_mismatch"), _) => "http.body_mismatch",
            (Some("timeout"), _) => "http.timeout",
            (Some("refused"), _) => "http.refused",
            (Some("certificate"), _) => "http.certificate",
            (_, Some(500..=599)) => "http.status_5xx",
            (_, Some(400..=499)) => "http.status_4xx",
            (_, Some(_)) => "http.status_unexpected",
            _ => "http.error",
        };
        vec![Finding::new(kind, latest.status, latest.summary.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(seen: Observation) -> Option<String> {
        let mut diagnoser = HttpDiagnoser(Config {
            slow_for_samples: 1,
        });
        diagnoser
            .diagnose(&seen, &[])
            .first()
            .map(|f| f.kind.clone())
    }

    #[test]
    fn names_each_failure() {
        assert_eq!(
            kind_of(Observation::critical("x").detail("status_code", 503)).as_deref(),
            Some("http.status_5xx")
        );
        assert_eq!(
            kind_of(Observation::critical("x").detail("status_code", 404)).as_deref(),
            Some("http.status_4xx")
        );
        assert_eq!(
            kind_of(Observation::critical("x").detail("error", "timeout")).as_deref(),
            Some("http.timeout")
        );
        assert_eq!(
            kind_of(Observation::critical("x").detail("error", "refused")).as_deref(),
            Some("http.refused")
        );
        assert_eq!(
            kind_of(Observation::warning("x").detail("error", "slow")).as_deref(),
            Some("http.slow")
        );
        assert_eq!(
            kind_of(Observation::critical("x").detail("error", "certificate")).as_deref(),
            Some("http.certificate")
        );
        assert_eq!(kind_of(Observation::ok("fine")), None);
    }

    #[test]
    fn every_kind_it_names_is_one_it_declares() {
        let declared = HttpDiagnoser::kinds(&Config {
            slow_for_samples: 1,
        })
        .unwrap();
        let errors = [
            None,
            Some("slow"),
            Some("body_mismatch"),
            Some("timeout"),
            Some("refused"),
            Some("certificate"),
            Some("reset"),
        ];
        for error in errors {
            for code in [None, Some(200), Some(302), Some(404), Some(503), Some(99)] {
                for seen in [Observation::critical("x"), Observation::warning("x")] {
                    let seen = match error {
                        Some(error) => seen.detail("error", error),
                        None => seen,
                    };
                    let seen = match code {
                        Some(code) => seen.detail("status_code", code),
                        None => seen,
                    };
                    let kind = kind_of(seen).expect("a failed check is a finding");
                    assert!(declared.contains(&kind), "{kind} is not declared");
                }
            }
        }
    }

    #[test]
    fn an_unknown_observation_is_no_finding() {
        let seen = Observation::unknown("cannot resolve example.invalid: failed to lookup")
            .detail("error", "dns");
        assert_eq!(kind_of(seen), None);
        let seen = Observation::unknown("cannot connect: Too many open files (os error 24)")
            .detail("error", "connect");
        assert_eq!(kind_of(seen), None);
        // A certificate judged on this machine's clock or CA store.
        let seen = Observation::unknown(
            "the TLS certificate of https://example.com/ has expired \
             (judged by this machine's clock): certificate expired",
        )
        .detail("error", "certificate");
        assert_eq!(kind_of(seen), None);
    }

    #[test]
    fn slowness_must_last_for_the_configured_samples() {
        let slow = || Observation::warning("slow").detail("error", "slow");
        let mut diagnoser = HttpDiagnoser(Config {
            slow_for_samples: 3,
        });
        assert!(diagnoser
            .diagnose(&slow(), &[Observation::ok("x"), slow()])
            .is_empty());
        assert_eq!(
            diagnoser.diagnose(&slow(), &[slow(), slow()])[0].kind,
            "http.slow"
        );
    }
}
