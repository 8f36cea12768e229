//! Rendering a chart with the real `helm template`, in a Helm home of its own so that nothing
//! depends on the machine's Helm setup (repositories, caches, plugins).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use super::{CellValues, ReleaseError};

/// The Helm binary: `HELM`, else `helm` on PATH.
fn binary() -> PathBuf {
    std::env::var_os("HELM").map(PathBuf::from).unwrap_or_else(|| "helm".into())
}

/// The chart as `helm template` takes it, and the `--repo` it needs: an OCI chart is one
/// reference, a chart of an HTTP repository is named within it.
fn chart_reference(repository: &str, chart: &str) -> (String, Option<String>) {
    if repository.starts_with("oci://") {
        (format!("{}/{chart}", repository.trim_end_matches('/')), None)
    } else {
        (chart.to_string(), Some(repository.to_string()))
    }
}

/// The user's values with `cellplane` set to the cell's values (which win over a `cellplane`
/// map the user gave).
fn merged_values(user: &Value, cell: &CellValues) -> Result<Value, ReleaseError> {
    let mut values = match user {
        Value::Null => serde_json::Map::new(),
        Value::Object(map) => map.clone(),
        _ => {
            return Err(ReleaseError::Helm { message: "the chart's values must be a map".into(), retryable: false });
        }
    };
    let mut cellplane = match values.remove("cellplane") {
        Some(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    cellplane.extend(cell.variables().into_iter().map(|(k, v)| (k, Value::String(v))));
    values.insert("cellplane".into(), Value::Object(cellplane));
    Ok(Value::Object(values))
}

fn io_error(what: &str, e: std::io::Error) -> ReleaseError {
    ReleaseError::Helm { message: format!("{what}: {e}"), retryable: true }
}

/// The rendered manifests of `chart` at `version` from `repository`, for the cell.
pub(super) async fn template(
    repository: &str,
    chart: &str,
    version: &str,
    user_values: &Value,
    cell: &CellValues,
) -> Result<String, ReleaseError> {
    let home = tempfile::tempdir().map_err(|e| io_error("making a Helm home", e))?;
    let values_file = home.path().join("values.json");
    let values = serde_json::to_vec(&merged_values(user_values, cell)?)
        .map_err(|e| ReleaseError::Helm { message: format!("the chart's values: {e}"), retryable: false })?;
    std::fs::write(&values_file, values).map_err(|e| io_error("writing the chart's values", e))?;
    let (reference, repo) = chart_reference(repository, chart);
    let release = chart.rsplit('/').next().unwrap_or(chart);
    let mut command = helm_command(home.path());
    command.args(["template", release, &reference]);
    if let Some(repo) = &repo {
        command.args(["--repo", repo]);
    }
    command.args(["--version", version, "--namespace", &cell.namespace, "--include-crds", "--skip-tests"]);
    command.arg("--values").arg(&values_file);
    if !cell.kubernetes_version.is_empty() {
        command.args(["--kube-version", &cell.kubernetes_version]);
    }
    let output = command.output().await.map_err(|e| spawn_error(&e))?;
    let what = format!("helm template {chart} {version} from {repository}");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let retryable = reads_like_the_network(&stderr);
        return Err(ReleaseError::Helm { message: format!("{what} failed: {stderr}"), retryable });
    }
    String::from_utf8(output.stdout)
        .map_err(|e| ReleaseError::Helm { message: format!("{what}: output is not UTF-8: {e}"), retryable: false })
}

fn helm_command(home: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary());
    for (variable, dir) in [("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")] {
        command.env(variable, home.join(dir));
    }
    for variable in ["HELM_REPOSITORY_CONFIG", "HELM_REPOSITORY_CACHE", "HELM_REGISTRY_CONFIG", "HELM_PLUGINS"] {
        command.env_remove(variable);
    }
    // A caller's timeout drops the future: the process goes with it.
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

fn spawn_error(e: &std::io::Error) -> ReleaseError {
    let helm = binary().display().to_string();
    if e.kind() == std::io::ErrorKind::NotFound {
        ReleaseError::Helm { message: format!("{helm} not found: install Helm 3 or set HELM"), retryable: false }
    } else {
        ReleaseError::Helm { message: format!("running {helm}: {e}"), retryable: true }
    }
}

/// Whether Helm failed reaching the repository rather than on the chart or its values.
fn reads_like_the_network(stderr: &str) -> bool {
    let stderr = stderr.to_lowercase();
    [
        "connection refused",
        "connection reset",
        "timeout",
        "timed out",
        "no such host",
        "temporary failure",
        "network is unreachable",
        "unexpected eof",
        "tls handshake",
        "429 too many requests",
        "500 internal server error",
        "502 bad gateway",
        "503 service unavailable",
        "504 gateway timeout",
    ]
    .iter()
    .any(|sign| stderr.contains(sign))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn oci_charts_are_one_reference_and_http_charts_are_named_in_their_repository() {
        assert_eq!(
            chart_reference("oci://registry.example.com/charts/", "web"),
            ("oci://registry.example.com/charts/web".into(), None)
        );
        assert_eq!(
            chart_reference("https://charts.example.com", "web"),
            ("web".into(), Some("https://charts.example.com".into()))
        );
    }

    #[test]
    fn the_cells_values_are_under_cellplane_and_win() {
        let cell = CellValues { cell: "eu-1".into(), ..Default::default() };
        let user = json!({ "replicas": 2, "cellplane": { "cell": "mine", "team": "a" } });
        let values = merged_values(&user, &cell).unwrap();
        assert_eq!(values["replicas"], 2);
        assert_eq!(values["cellplane"]["cell"], "eu-1");
        assert_eq!(values["cellplane"]["team"], "a");
        assert!(merged_values(&json!([1]), &cell).is_err());
    }

    #[test]
    fn network_failures_are_retryable_and_chart_failures_are_not() {
        assert!(reads_like_the_network(
            "Error: Get \"http://127.0.0.1:9/index.yaml\": dial tcp 127.0.0.1:9: connect: connection refused"
        ));
        assert!(!reads_like_the_network(
            "Error: chart \"web\" version \"9.9.9\" not found in http://127.0.0.1:8080 repository"
        ));
        assert!(!reads_like_the_network("Error: template: web/templates/d.yaml:7:20: executing ... nil pointer"));
    }
}
