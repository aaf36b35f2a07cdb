//! What a diagnoser concludes from observations, and what a recoverer is
//! asked to fix and reports back.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::observation::{set_detail, Status};

/// A diagnosed problem with a target, e.g. kind `http.status_5xx`.
///
/// Issues are keyed by (target, kind): the same kind found again is the same
/// issue, not a new one. Recoverers are selected by globs on the kind
/// (`on = ["http.*"]`), so name kinds `<area>.<problem>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Dotted problem name, e.g. `process.not_running`.
    pub kind: String,
    /// WARNING or CRITICAL (OK and UNKNOWN are accepted but unusual).
    pub severity: Status,
    /// One line for logs and alerts.
    pub summary: String,
    /// Anything a recoverer may need, `null` when empty.
    #[serde(default)]
    pub details: Value,
}

/// The longest finding kind healer takes, in bytes.
pub const KIND_BYTES: usize = 128;

/// Whether `kind` can name an issue: 1 to [`KIND_BYTES`] ASCII letters,
/// digits, `_`, `-`, `.` or `:` (`http.status_5xx`). A diagnosis with any
/// other kind is refused by healer as an error would be, so a plugin whose
/// config names kinds checks them with this when it is created.
pub fn check_kind(kind: &str) -> Result<(), String> {
    let fits = !kind.is_empty() && kind.len() <= KIND_BYTES;
    if fits
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Ok(());
    }
    let shown: String = kind
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .collect();
    Err(format!(
        "\"{shown}\"{} cannot name an issue ({} bytes): a finding kind is 1 to {KIND_BYTES} ASCII letters, digits, '_', '-', '.' or ':', e.g. \"http.status_5xx\"",
        if kind.chars().count() > 64 { "…" } else { "" },
        kind.len()
    ))
}

impl Finding {
    /// A finding with the given severity.
    pub fn new(kind: impl Into<String>, severity: Status, summary: impl Into<String>) -> Finding {
        Finding {
            kind: kind.into(),
            severity,
            summary: summary.into(),
            details: Value::Null,
        }
    }

    /// A CRITICAL finding.
    pub fn critical(kind: impl Into<String>, summary: impl Into<String>) -> Finding {
        Finding::new(kind, Status::Critical, summary)
    }

    /// A WARNING finding.
    pub fn warning(kind: impl Into<String>, summary: impl Into<String>) -> Finding {
        Finding::new(kind, Status::Warning, summary)
    }

    /// Adds one key to the details object.
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        set_detail(&mut self.details, key.into(), value.into());
        self
    }
}

/// What a recoverer is asked to do: fix `finding` on `target`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// The target's name from the config (or the anomaly name for workflows).
    pub target: String,
    /// The problem to fix.
    pub finding: Finding,
    /// 1 for the first attempt at this issue, 2 for the second, ...
    pub attempt: u32,
    /// Parameters from the reflex map or workflow step (`{}` when none).
    #[serde(default)]
    pub params: Value,
    /// The claim that lets this recovery run, when healer shares the
    /// target with a fleet (SDK 1.5): a command gets it as `HEALER_FENCE`,
    /// a webhook as its `Idempotency-Key`. A service that records the
    /// highest claim it has seen can refuse a lower one (a deposed
    /// owner's). `None` on one machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
}

impl Recovery {
    /// Attempt `attempt` at fixing `finding` on `target`, with no params
    /// and no fence.
    pub fn new(target: impl Into<String>, finding: Finding, attempt: u32) -> Recovery {
        Recovery {
            target: target.into(),
            finding,
            attempt,
            params: Value::Object(Default::default()),
            fence: None,
        }
    }
}

/// A fleet's claim on one recovery: the etcd revision of the transaction
/// that claimed it (`claim`), made while this member owned the target's
/// shard since revision `epoch`. Claims only grow: a later claim on the
/// same target always has a higher `claim`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The claim's revision: unique, and higher for every later claim.
    pub claim: u64,
    /// The revision at which the claiming member took the shard.
    pub epoch: u64,
    /// The target's shard (0 to 4,095).
    pub shard: u32,
    /// The member that claimed it.
    pub member: String,
}

/// What a successful recovery reports. A failed one returns an error instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// One line: what was done.
    pub summary: String,
    /// Anything worth keeping in the history, `null` when empty.
    #[serde(default)]
    pub details: Value,
}

impl Outcome {
    /// A successful recovery that did `summary`.
    pub fn done(summary: impl Into<String>) -> Outcome {
        Outcome {
            summary: summary.into(),
            details: Value::Null,
        }
    }

    /// Adds one key to the details object.
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        set_detail(&mut self.details, key.into(), value.into());
        self
    }
}
