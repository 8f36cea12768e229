//! The replay suite: every workflow history recorded from real runs of a released version
//! (tests/histories/<version>/, made by `make histories`) replays on the code as it is now. No
//! step runs; each operation must be the one the history recorded, so a change to a workflow's
//! steps that would strand a running workflow of that release fails here, naming the history
//! and the operation, instead of in the fleet. A change goes behind `ctx.patched(...)`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cellplane::cell::sim::SimCellServices;
use cellplane::cloud::sim::{SimCloud, SimConfig};
use cellplane::flows::cell::CellWorkflow;
use cellplane::flows::namespace::NamespaceWorkflow;
use cellplane::flows::ring::RingRollout;
use cellplane::flows::{Fleet, FlowDeps};
use cellplane_workflows::{History, Replayer};

/// Every recorded history, as (label, history), by release then file name.
fn histories() -> Vec<(String, History)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .flat_map(|release| std::fs::read_dir(release).unwrap())
        .map(|file| file.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let label = path.strip_prefix(&root).unwrap().display().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let history = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{label}: {e}"));
            (label, history)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recorded_history_replays_on_this_code() {
    let cloud = Arc::new(SimCloud::new(SimConfig::default()));
    let services = Arc::new(SimCellServices::new(Duration::ZERO));
    let deps = FlowDeps::new(cloud, services, Fleet::empty(), None);
    let cell = Arc::new(CellWorkflow { deps: deps.clone() });
    let namespace = Arc::new(NamespaceWorkflow { deps: deps.clone() });
    let ring = Arc::new(RingRollout { deps });
    let replayer = Replayer::new().unwrap();
    let histories = histories();
    let mut failures = Vec::new();
    for (label, history) in &histories {
        let replayed = match history.workflow.as_str() {
            "cell" => replayer.replay(label, history, &cell).await,
            "namespace" => replayer.replay(label, history, &namespace).await,
            "ring-rollout" => replayer.replay(label, history, &ring).await,
            other => panic!("{label}: no workflow named {other:?} in this code"),
        };
        if let Err(e) = replayed {
            failures.push(e.to_string());
        }
    }
    for workflow in ["cell", "namespace", "ring-rollout"] {
        assert!(histories.iter().any(|(_, h)| h.workflow == workflow), "no recorded history of {workflow}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} recorded histories no longer replay:\n{}",
        failures.len(),
        histories.len(),
        failures.join("\n")
    );
}
