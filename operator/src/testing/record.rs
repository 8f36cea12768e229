//! Recording workflow histories from real runs for the replay suite (`make histories`): with
//! `CELLPLANE_RECORD_HISTORIES=DIR` set, every test operator that stops cleanly exports the
//! histories in its journal into DIR, one file per shape. A shape is the operations a history
//! recorded, each once, in the order they first appear (numbers left out of names, so a bake's
//! hundred gate checks count once), so a test suite's thousands of workflows reduce to the few
//! distinct paths the code took; those are what a code change must keep replaying.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use cellplane_workflows::History;
use cellplane_workflows::journal::Journal;

/// The directory `make histories` records into.
pub const RECORD_ENV: &str = "CELLPLANE_RECORD_HISTORIES";

/// Exports the histories of `journal` into the directory `CELLPLANE_RECORD_HISTORIES` names, if
/// it is set; returns how many new shapes were written.
pub async fn record(journal: &dyn Journal) -> Result<usize, String> {
    let Some(dir) = std::env::var_os(RECORD_ENV).map(PathBuf::from) else { return Ok(0) };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = 0;
    for row in journal.list(None, i64::MAX).await.map_err(|e| e.to_string())? {
        let history =
            cellplane_workflows::journal::export(journal, &row.checkpoint.id).await.map_err(|e| e.to_string())?;
        if write_if_new(&dir, &history)? {
            written += 1;
        }
    }
    Ok(written)
}

/// What a history did, as far as the paths through the code go: per run, each operation once in
/// the order it first appears, with the digits of names (versions, generations) and what follows
/// a colon (request ids) left out.
pub fn shape(history: &History) -> Vec<String> {
    let mut shape = vec![history.workflow.clone()];
    for run in &history.runs {
        let mut seen = Vec::new();
        for event in &run.events {
            // A reply's signal is named for its request: `reply:<id>` counts as `reply`.
            let name = event.name.split(':').next().unwrap_or_default();
            let name: String = name.chars().filter(|c| !c.is_ascii_digit()).collect();
            let operation = format!("{}:{name}", event.op.as_str());
            if !seen.contains(&operation) {
                seen.push(operation);
            }
        }
        shape.push(seen.join(" "));
    }
    shape.dedup();
    shape
}

fn write_if_new(dir: &Path, history: &History) -> Result<bool, String> {
    let digest = Sha256::digest(shape(history).join("\n").as_bytes());
    let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{}-{short}.json", history.workflow));
    if path.exists() {
        return Ok(false);
    }
    let json = serde_json::to_string_pretty(history).map_err(|e| e.to_string())?;
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(true)
}
