//! Types and validation patterns shared by the three resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::MAX_MESSAGE_LENGTH;

/// RFC 1123 DNS label: lower-case alphanumerics and '-', starting and ending alphanumeric.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Whether a name can be a DNS label (names reach hostnames, cloud tags and SQL identifiers):
/// the rule of [`DNS_LABEL_PATTERN`], without a regex engine.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The time now, as statuses carry it.
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// A time in epoch milliseconds (as workflows record it), as statuses carry it.
pub fn time_ms(ms: i64) -> Option<Time> {
    Timestamp::from_millisecond(ms).ok().map(Time)
}

/// A duration such as `90s`, `5m`, `1h30m` or `7d`: one or more number+unit pairs,
/// units `d`, `h`, `m`, `s`. Parsed by [`parse_duration`].
pub const DURATION_PATTERN: &str = "^([0-9]+(d|h|m|s))+$";

/// A semantic version, optionally prefixed with `v`: `1.4.2`, `v2.0.0-rc.1`, `1.4.2+build.7`.
pub const VERSION_PATTERN: &str =
    r"^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$";

/// Reference to a Secret by name and namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Secret. Defaults to the namespace the operator runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// The state of a control-plane workflow, as recorded in the workflow journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkflowState {
    /// Pending: accepted, not yet picked up by a worker.
    Pending,
    /// Running: a step is executing.
    Running,
    /// Waiting: parked on a durable timer, a signal or a child workflow (see `waitingFor`).
    Waiting,
    /// Retrying: the last attempt of the current step failed with a transient error and the
    /// step is backing off until `nextAttemptAt`.
    Retrying,
    /// Completed: finished successfully.
    Completed,
    /// Failed: stopped on a terminal error (see `lastError`); it is not retried by itself.
    Failed,
    /// Cancelled: stopped on request, for example because the object was deleted or superseded.
    Cancelled,
}

/// Checkpoint of the durable workflow that does the long-running work for this object,
/// mirrored from the workflow journal. `cellplane workflows show <id>` prints the full history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    /// Workflow id, derived from the object's uid (and generation where a new spec means new work).
    #[schemars(length(max = 253))]
    pub id: String,
    /// Workflow state: Pending, Running, Waiting, Retrying, Completed, Failed or Cancelled.
    pub state: WorkflowState,
    /// Name of the step the workflow is executing or last executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub step: Option<String>,
    /// Attempt number of the current step, starting at 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub attempt: Option<i32>,
    /// Error of the last failed attempt, kept until the step succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE_LENGTH))]
    pub last_error: Option<String>,
    /// What the workflow waits for when it is Waiting or Retrying: a timer, a signal, a gate,
    /// an approval, a lease or capacity, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE_LENGTH))]
    pub waiting_for: Option<String>,
    /// When a Retrying step makes its next attempt, or a Waiting timer fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
    /// When this checkpoint was last written by the workflow engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
}

/// A duration string that does not match [`DURATION_PATTERN`] or overflows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    /// The string that failed to parse.
    pub input: String,
    /// Why it failed.
    pub reason: &'static str,
}

/// Parse a duration in the format the CRDs accept ([`DURATION_PATTERN`]), e.g. `1h30m` or `7d`.
pub fn parse_duration(input: &str) -> Result<std::time::Duration, DurationError> {
    let err = |reason| DurationError { input: input.to_owned(), reason };
    if input.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in input.chars() {
        if let Some(digit) = c.to_digit(10) {
            let n = number
                .unwrap_or(0)
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(digit)))
                .ok_or_else(|| err("too large"))?;
            number = Some(n);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(err("unknown unit; use d, h, m or s")),
        };
        let n = number.take().ok_or_else(|| err("unit without a number"))?;
        total = n.checked_mul(unit).and_then(|secs| total.checked_add(secs)).ok_or_else(|| err("too large"))?;
    }
    if number.is_some() {
        return Err(err("number without a unit"));
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in ["", "5", "m", "1h30", "5ms", "1.5h", "-1m", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
