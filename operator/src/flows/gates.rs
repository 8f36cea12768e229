//! Health gates of a ring rollout. A gate goes through the shape that has served large fleets:
//! settle (`wait`, no checks), then become healthy before `window` ends or fail, then stay
//! healthy for `stableFor` (a relapse while the window is still open sends it back to waiting;
//! after the window, it fails). Through the bake a gate keeps being checked: a relapse opens a
//! new window in which health must come back. [`Tracker`] is that state machine, pure;
//! [`Gates`] measures health: cell conditions, synthetic probes, or a Prometheus query.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use super::fleet::Fleet;
use crate::api::cell::SyntheticStatus;
use crate::api::conditions;
use crate::api::ring::{Comparison, GateKind, GateVerdict, PrometheusGate, SyntheticGate};

/// A gate as the rollout runs it: its spec with durations in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatePlan {
    pub name: String,
    pub kind: GateKind,
    /// Condition types, for a cellConditions gate.
    pub conditions: Vec<String>,
    pub synthetic: SyntheticGate,
    pub prometheus: Option<PrometheusGate>,
    pub wait_ms: i64,
    pub window_ms: i64,
    pub stable_for_ms: i64,
    pub interval_ms: i64,
}

/// What one check of a gate found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub healthy: bool,
    /// What was measured, for status and Events.
    pub value: String,
}

/// Where one gate stands, with the times that move it on (workflow clock, ms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracker {
    pub verdict: GateVerdict,
    /// Checked through the bake (rather than after a batch).
    pub baking: bool,
    /// When the verdict last changed.
    pub since: i64,
    /// When health must have come (back) by.
    pub window_ends: i64,
    /// When health was first seen in the current healthy run (after a batch).
    pub healthy_since: Option<i64>,
    pub next_check: i64,
    pub value: String,
}

impl Tracker {
    /// A gate checked after a batch: settles first.
    pub fn after_batch(plan: &GatePlan, now: i64) -> Tracker {
        Tracker {
            verdict: GateVerdict::Settling,
            baking: false,
            since: now,
            window_ends: now + plan.wait_ms + plan.window_ms,
            healthy_since: None,
            next_check: now + plan.wait_ms,
            value: String::new(),
        }
    }

    /// A gate checked through the bake: healthy until a check says otherwise.
    pub fn during_bake(now: i64) -> Tracker {
        Tracker {
            verdict: GateVerdict::Watching,
            baking: true,
            since: now,
            window_ends: now,
            healthy_since: None,
            next_check: now,
            value: String::new(),
        }
    }

    /// Whether the gate needs no more checks (passed or failed).
    pub fn is_settled(&self) -> bool {
        matches!(self.verdict, GateVerdict::Passed | GateVerdict::Failed)
    }

    /// Takes in a check made at `now` and schedules the next.
    pub fn observe(&mut self, plan: &GatePlan, now: i64, check: Check) {
        let verdict = match (check.healthy, self.baking) {
            (true, true) => GateVerdict::Watching,
            (true, false) => {
                let since = *self.healthy_since.get_or_insert(now);
                if now - since >= plan.stable_for_ms { GateVerdict::Passed } else { GateVerdict::Stabilizing }
            }
            (false, true) if self.verdict == GateVerdict::Watching => {
                self.window_ends = now + plan.window_ms;
                GateVerdict::Waiting
            }
            (false, _) if now >= self.window_ends => GateVerdict::Failed,
            (false, _) => GateVerdict::Waiting,
        };
        if !check.healthy {
            self.healthy_since = None;
        }
        if verdict != self.verdict {
            self.since = now;
            self.verdict = verdict;
        }
        self.value = check.value;
        self.next_check = match (verdict, self.healthy_since) {
            // Check again exactly when stableFor will have passed.
            (GateVerdict::Stabilizing, Some(since)) => (now + plan.interval_ms).min(since + plan.stable_for_ms),
            _ => now + plan.interval_ms,
        };
    }
}

/// Measures the health a gate looks at.
pub struct Gates {
    fleet: Arc<Fleet>,
    http: HttpClient<hyper_rustls::HttpsConnector<HttpConnector>, http_body_util::Empty<bytes::Bytes>>,
    /// The Prometheus a gate without an address queries.
    default_prometheus: Option<String>,
}

impl Gates {
    pub fn new(fleet: Arc<Fleet>, default_prometheus: Option<String>) -> Gates {
        let roots = hyper_rustls::HttpsConnectorBuilder::new().with_native_roots().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no system root certificates: https Prometheus addresses will not verify");
            let config = rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty());
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config.with_no_client_auth())
        });
        let connector = roots.https_or_http().enable_http1().build();
        let http = HttpClient::builder(TokioExecutor::new()).build(connector);
        Gates { fleet, http, default_prometheus }
    }

    /// Checks the gate over `cells`; every cell must be healthy, and no data is unhealthy.
    pub async fn check(&self, plan: &GatePlan, cells: &[String]) -> Check {
        let mut values = Vec::new();
        let mut healthy = !cells.is_empty();
        for cell in cells {
            let (ok, value) = match plan.kind {
                GateKind::CellConditions => self.conditions(cell, &plan.conditions),
                GateKind::Synthetic => self.synthetic(cell, &plan.synthetic),
                GateKind::Prometheus => match &plan.prometheus {
                    Some(query) => self.prometheus(cell, query).await,
                    None => (false, "no query".to_string()),
                },
            };
            healthy &= ok;
            values.push(format!("{cell}: {value}"));
        }
        Check { healthy, value: values.join("; ") }
    }

    fn conditions(&self, cell: &str, wanted: &[String]) -> (bool, String) {
        let Some(cell) = self.fleet.cell(cell) else { return (false, "no such cell".into()) };
        let status = cell.status.clone().unwrap_or_default();
        let generation = cell.metadata.generation;
        let mut parts = Vec::new();
        let mut ok = true;
        for type_ in wanted {
            let condition = conditions::find(&status.conditions, type_);
            let true_now = condition.is_some_and(|c| c.is_true_for(generation));
            ok &= true_now;
            let state = condition.map_or("missing", |c| c.status.as_str());
            parts.push(format!("{type_}={state}"));
        }
        (ok, parts.join(" "))
    }

    fn synthetic(&self, cell: &str, gate: &SyntheticGate) -> (bool, String) {
        let probes: Option<SyntheticStatus> =
            self.fleet.cell(cell).and_then(|c| c.status.clone()).and_then(|s| s.synthetic);
        match probes {
            Some(probes) if probes.probes() > 0 => {
                let ratio = probes.success_ratio();
                let ok = ratio >= gate.min_success_ratio && probes.p99_millis <= gate.max_p99_millis;
                (ok, format!("{ratio:.2} of {} probes ok, p99 {} ms", probes.probes(), probes.p99_millis))
            }
            _ => (false, "no probes".into()),
        }
    }

    async fn prometheus(&self, cell: &str, gate: &PrometheusGate) -> (bool, String) {
        let Some(address) = gate.address.clone().or(self.default_prometheus.clone()) else {
            return (false, "no Prometheus address (spec or --prometheus-url)".into());
        };
        let query = gate.query.replace("{cell}", cell);
        match self.instant_query(&address, &query).await {
            Ok(samples) if samples.is_empty() => (false, "no data".into()),
            Ok(samples) => {
                let ok = samples.iter().all(|value| compare(*value, gate.comparison, gate.threshold));
                let shown: Vec<String> = samples.iter().take(5).map(|v| format!("{v}")).collect();
                (ok, format!("{} {:?} {}", shown.join(", "), gate.comparison, gate.threshold).to_lowercase())
            }
            Err(error) => (false, error),
        }
    }

    /// The values of an instant query's result (a vector's samples, or a scalar).
    async fn instant_query(&self, address: &str, query: &str) -> Result<Vec<f64>, String> {
        let query: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let url = format!("{}/api/v1/query?query={query}", address.trim_end_matches('/'));
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), self.http.get(uri))
            .await
            .map_err(|_| "Prometheus did not answer within 10 s".to_string())?
            .map_err(|e| format!("Prometheus: {e}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("Prometheus: {e}"))?.to_bytes();
        let answer: QueryAnswer =
            serde_json::from_slice(&body).map_err(|e| format!("Prometheus answered {status}: {e}"))?;
        if answer.status != "success" {
            return Err(format!("Prometheus: {}", answer.error.unwrap_or(answer.status)));
        }
        let data = answer.data.ok_or("Prometheus: no data in the answer")?;
        Ok(match data.result {
            QueryResult::Vector(samples) => samples.iter().filter_map(|s| s.value.1.parse().ok()).collect(),
            QueryResult::Scalar((_, value)) => value.parse().into_iter().collect(),
        })
    }
}

fn compare(value: f64, comparison: Comparison, threshold: f64) -> bool {
    match comparison {
        Comparison::Lt => value < threshold,
        Comparison::Le => value <= threshold,
        Comparison::Gt => value > threshold,
        Comparison::Ge => value >= threshold,
    }
}

#[derive(Deserialize)]
struct QueryAnswer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<QueryData>,
}

#[derive(Deserialize)]
struct QueryData {
    #[serde(flatten)]
    result: QueryResult,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum QueryResult {
    Vector(Vec<Sample>),
    Scalar((f64, String)),
}

#[derive(Deserialize)]
struct Sample {
    value: (f64, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> GatePlan {
        GatePlan {
            name: "health".into(),
            kind: GateKind::CellConditions,
            conditions: vec!["Ready".into()],
            synthetic: SyntheticGate::default(),
            prometheus: None,
            wait_ms: 100,
            window_ms: 1_000,
            stable_for_ms: 300,
            interval_ms: 100,
        }
    }

    fn check(healthy: bool) -> Check {
        Check { healthy, value: if healthy { "ok" } else { "down" }.into() }
    }

    /// Feeds `results` at the times the tracker asks for; returns each verdict.
    fn run(mut tracker: Tracker, results: &[bool]) -> Vec<GateVerdict> {
        let plan = plan();
        results
            .iter()
            .map(|healthy| {
                let now = tracker.next_check;
                tracker.observe(&plan, now, check(*healthy));
                tracker.verdict
            })
            .collect()
    }

    #[test]
    fn a_gate_settles_then_passes_after_staying_healthy() {
        let tracker = Tracker::after_batch(&plan(), 0);
        assert_eq!(tracker.next_check, 100, "no check while settling");
        let verdicts = run(tracker, &[true, true, true, true]);
        assert_eq!(
            verdicts,
            [GateVerdict::Stabilizing, GateVerdict::Stabilizing, GateVerdict::Stabilizing, GateVerdict::Passed]
        );
    }

    #[test]
    fn a_flap_inside_stable_for_starts_the_stable_period_again() {
        let verdicts = run(Tracker::after_batch(&plan(), 0), &[true, false, true, true, true, true]);
        assert_eq!(
            verdicts,
            [
                GateVerdict::Stabilizing,
                GateVerdict::Waiting,
                GateVerdict::Stabilizing,
                GateVerdict::Stabilizing,
                GateVerdict::Stabilizing,
                GateVerdict::Passed
            ]
        );
    }

    #[test]
    fn a_gate_that_never_becomes_healthy_fails_when_its_window_ends() {
        let verdicts = run(Tracker::after_batch(&plan(), 0), &[false; 11]);
        assert_eq!(verdicts[9], GateVerdict::Waiting);
        assert_eq!(verdicts[10], GateVerdict::Failed, "the window ends 1,100 ms after the batch");
    }

    #[test]
    fn during_the_bake_a_relapse_opens_a_window_for_health_to_return() {
        let verdicts = run(Tracker::during_bake(0), &[true, false, true, false, false, false]);
        assert_eq!(verdicts[..3], [GateVerdict::Watching, GateVerdict::Waiting, GateVerdict::Watching]);
        let failing = run(Tracker::during_bake(0), &[false; 11]);
        assert_eq!(failing[9], GateVerdict::Waiting);
        assert_eq!(failing[10], GateVerdict::Failed, "the window opened at 0 ends at 1,000 ms");
    }

    #[test]
    fn thresholds_compare_as_named() {
        assert!(compare(0.005, Comparison::Lt, 0.01));
        assert!(!compare(0.01, Comparison::Lt, 0.01));
        assert!(compare(0.01, Comparison::Le, 0.01));
        assert!(compare(2.0, Comparison::Gt, 1.0));
        assert!(compare(1.0, Comparison::Ge, 1.0));
    }

    #[test]
    fn prometheus_answers_parse() {
        let vector =
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.5"]}]}}"#;
        let answer: QueryAnswer = serde_json::from_str(vector).unwrap();
        assert!(matches!(answer.data.unwrap().result, QueryResult::Vector(v) if v[0].value.1 == "0.5"));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#;
        let answer: QueryAnswer = serde_json::from_str(scalar).unwrap();
        assert!(matches!(answer.data.unwrap().result, QueryResult::Scalar((_, v)) if v == "2"));
    }
}
