//! `cellplane workflows ...`: list, show, export, signal, cancel and retry workflows in a journal.

use std::fmt::Write as _;

use cellplane_workflows::clock::wall_ms;
use cellplane_workflows::{Event, Record, State};
use clap::Subcommand;

use super::{JournalArgs, open_journal};

#[derive(Subcommand)]
pub enum WorkflowsCommand {
    /// List workflows, most recently updated first.
    List {
        #[command(flatten)]
        journal: JournalArgs,
        /// Only workflows in this state (Pending, Running, Sleeping, WaitingSignal, Completed, Failed,
        /// Cancelled, NonDeterministic).
        #[arg(long)]
        state: Option<State>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one workflow: its checkpoint and its history (steps, attempts, durations, errors,
    /// signals, timers).
    Show {
        #[command(flatten)]
        journal: JournalArgs,
        id: String,
    },
    /// Print a workflow's complete recorded history (each run's input and records) as JSON, for a
    /// replay suite (`cellplane_workflows::Replayer`).
    Export {
        #[command(flatten)]
        journal: JournalArgs,
        id: String,
    },
    /// Send a signal with a JSON payload; it is kept until the workflow waits for it.
    Signal {
        #[command(flatten)]
        journal: JournalArgs,
        id: String,
        name: String,
        /// The payload, as JSON (e.g. '{"version":"1.4.2"}' or '42').
        json: String,
    },
    /// Request cooperative cancellation (cleanup steps still run).
    Cancel {
        #[command(flatten)]
        journal: JournalArgs,
        id: String,
    },
    /// Run a Failed workflow again from its failed step (or a NonDeterministic one, once its code
    /// is fixed).
    Retry {
        #[command(flatten)]
        journal: JournalArgs,
        id: String,
    },
}

pub async fn run(command: WorkflowsCommand) -> Result<(), String> {
    match command {
        WorkflowsCommand::List { journal, state, limit } => {
            let journal = open_journal(&journal, false).await?;
            let rows = journal.list(state, limit).await.map_err(|e| e.to_string())?;
            print!("{}", list_table(&rows));
            Ok(())
        }
        WorkflowsCommand::Show { journal, id } => {
            let journal = open_journal(&journal, false).await?;
            let row = journal.get(&id).await.map_err(|e| e.to_string())?.ok_or_else(|| unknown(&id))?;
            let history = journal.history(&id).await.map_err(|e| e.to_string())?;
            print!("{}", show(&row, &history));
            Ok(())
        }
        WorkflowsCommand::Export { journal, id } => export(&journal, &id).await,
        WorkflowsCommand::Signal { journal, id, name, json } => {
            let payload: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| format!("the payload is not valid JSON ({e}): {json}"))?;
            if name.starts_with("__") {
                return Err(format!("signal names starting with \"__\" are reserved for the engine: {name:?}"));
            }
            let journal = open_journal(&journal, false).await?;
            journal.send_signal(&id, &name, &payload, wall_ms()).await.map_err(|e| explain(e, &id))?;
            println!("signal {name:?} sent to {id}");
            Ok(())
        }
        WorkflowsCommand::Cancel { journal, id } => {
            let journal = open_journal(&journal, false).await?;
            journal.wake(&id, true, wall_ms()).await.map_err(|e| explain(e, &id))?;
            println!("cancellation requested for {id}");
            Ok(())
        }
        WorkflowsCommand::Retry { journal, id } => {
            let journal = open_journal(&journal, false).await?;
            journal.retry(&id, wall_ms()).await.map_err(|e| explain(e, &id))?;
            println!("{id} will run again from its failed step");
            Ok(())
        }
    }
}

async fn export(journal: &JournalArgs, id: &str) -> Result<(), String> {
    let journal = open_journal(journal, false).await?;
    let history = cellplane_workflows::journal::export(journal.as_ref(), id).await.map_err(|e| explain(e, id))?;
    let document = serde_json::to_string_pretty(&history).map_err(|e| e.to_string())?;
    println!("{document}");
    Ok(())
}

fn unknown(id: &str) -> String {
    format!("no workflow with id {id:?} in this journal (see `cellplane workflows list`)")
}

fn explain(error: cellplane_workflows::Error, id: &str) -> String {
    match error {
        cellplane_workflows::Error::NotFound(_) => unknown(id),
        other => other.to_string(),
    }
}

fn list_table(rows: &[cellplane_workflows::journal::WorkflowRow]) -> String {
    let mut table =
        vec![["ID", "WORKFLOW", "STATE", "STEP", "ATTEMPT", "UPDATED", "REASON"].map(String::from).to_vec()];
    for row in rows {
        let cp = &row.checkpoint;
        table.push(vec![
            cp.id.clone(),
            format!("{}@{}", cp.workflow, cp.version),
            cp.state.to_string(),
            cp.step.clone().unwrap_or_else(|| "-".into()),
            cp.attempt.to_string(),
            ago(cp.updated_at),
            cp.reason.clone().or_else(|| cp.last_error.clone()).unwrap_or_default(),
        ]);
    }
    columns(&table)
}

fn show(row: &cellplane_workflows::journal::WorkflowRow, history: &[Event]) -> String {
    let cp = &row.checkpoint;
    let mut out = String::new();
    let _ = writeln!(out, "ID:        {}", cp.id);
    let _ = writeln!(out, "Workflow:  {}@{} (run {})", cp.workflow, cp.version, cp.run);
    let _ = writeln!(out, "State:     {}", cp.state);
    if let Some(reason) = &cp.reason {
        let _ = writeln!(out, "Reason:    {reason}");
    }
    if let Some(step) = &cp.step {
        let _ = writeln!(out, "Step:      {step} (#{}, attempt {})", cp.step_seq.unwrap_or_default(), cp.attempt);
    }
    if let Some(error) = &cp.last_error {
        let _ = writeln!(out, "Error:     {error}");
    }
    if let Some(parent) = &cp.parent {
        let _ = writeln!(out, "Parent:    {parent}");
    }
    let _ = writeln!(
        out,
        "Owner:     {} (epoch {}, {} takeovers)",
        cp.owner.as_deref().unwrap_or("-"),
        row.epoch,
        row.takeovers
    );
    let _ = writeln!(out, "Created:   {}  Updated: {}", ago(cp.created_at), ago(cp.updated_at));
    if cp.state == State::Completed
        && let Some(output) = &row.output
    {
        let _ = writeln!(out, "Output:    {output}");
    }
    if let Some(state) = &cp.published {
        out.push_str(&published(state));
    }
    let _ = writeln!(out, "\nHistory:");
    let mut run = None;
    for event in history {
        if run != Some(event.run) {
            run = Some(event.run);
            let _ = writeln!(out, "  run {}", event.run);
        }
        let _ = writeln!(
            out,
            "    #{:<4} {:<7} {:<28} {}",
            event.seq,
            event.op.as_str(),
            event.name,
            describe(&event.record)
        );
    }
    out
}

/// What the workflow published, as indented pretty JSON.
fn published(state: &serde_json::Value) -> String {
    let pretty = serde_json::to_string_pretty(state).unwrap_or_else(|_| state.to_string());
    let mut out = String::from("Published:\n");
    for line in pretty.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn describe(record: &Record) -> String {
    match record {
        Record::StepDone { result: Ok(value), attempts, duration_ms } => {
            format!("ok after {attempts} attempt(s), {duration_ms} ms: {}", truncate(&value.to_string()))
        }
        Record::StepDone { result: Err(error), attempts, .. } => format!("FAILED after {attempts} attempt(s): {error}"),
        Record::StepRetry { attempt, error, next_at, duration_ms } => {
            format!("attempt {attempt} failed after {duration_ms} ms ({error}); retry at {}", at(*next_at))
        }
        Record::TimerStarted { until } => format!("timer until {}", at(*until)),
        Record::SignalWait { deadline: Some(d) } => format!("waiting, times out at {}", at(*d)),
        Record::SignalWait { deadline: None } => "waiting".into(),
        Record::SignalReceived { payload } => format!("received {}", truncate(&payload.to_string())),
        Record::SignalTimedOut => "timed out".into(),
        Record::ChildStarted { workflow } => format!("started child ({workflow})"),
        Record::Marker { value } => match record.patch_change() {
            Some(change) => format!("patch {change:?}"),
            None => format!("recorded {value}"),
        },
        Record::Cancelled => "cancelled here".into(),
        Record::Completed { output } => format!("completed: {}", truncate(&output.to_string())),
        Record::Failed { reason } => format!("failed: {reason}"),
        Record::WorkflowCancelled => "cancelled".into(),
        Record::ContinuedAsNew => "continued as new".into(),
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 80 { format!("{}...", s.chars().take(77).collect::<String>()) } else { s.to_string() }
}

/// Epoch milliseconds as a UTC timestamp.
fn at(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// How long ago an epoch-milliseconds time was, in the style of kubectl's AGE column.
fn ago(ms: i64) -> String {
    let secs = ((wall_ms() - ms) / 1000).max(0);
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("   ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_to_the_widest_cell() {
        let table = columns(&[vec!["ID".into(), "STATE".into()], vec!["cell-eu-1".into(), "Running".into()]]);
        assert_eq!(table, "ID          STATE\ncell-eu-1   Running\n");
    }

    #[test]
    fn published_state_shows_as_indented_json() {
        let state = serde_json::json!({"phase": "Ready", "vpc": "vpc-1"});
        assert_eq!(published(&state), "Published:\n  {\n    \"phase\": \"Ready\",\n    \"vpc\": \"vpc-1\"\n  }\n");
    }

    #[test]
    fn history_lines_say_what_happened() {
        let error = cellplane_workflows::StepError::transient("throttled");
        let retry = Record::StepRetry { attempt: 2, error, next_at: 0, duration_ms: 12 };
        assert_eq!(describe(&retry), "attempt 2 failed after 12 ms (throttled); retry at 1970-01-01T00:00:00Z");
    }

    #[test]
    fn patch_markers_name_their_change_and_other_markers_their_value() {
        let patch = Record::Marker { value: serde_json::json!({ "patch": "dns-before-certs" }) };
        assert_eq!(describe(&patch), "patch \"dns-before-certs\"");
        let uuid = Record::Marker { value: serde_json::json!("0b8f") };
        assert_eq!(describe(&uuid), "recorded \"0b8f\"");
    }
}
