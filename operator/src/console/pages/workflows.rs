//! The journal's workflows: a filtered list and a history view (operations with attempts,
//! durations and errors, timers, signals), with signal, cancel and retry.
//!
//! The journal is read directly, so the console decides who may see it: a workflow belongs to
//! the object its id names (`cell/NAME/…`, `ns/ACCOUNT/NAME/…`, `ring/NAME/…`), and a user sees
//! it only if the API server says they may `get` that object, and steers it only if they may
//! `patch` it (SelfSubjectAccessReview). Workflows whose id names no object are the fleet
//! administrators': they need the same verb on every Cell.

use std::fmt::Write as _;

use cellplane_workflows::clock::wall_ms;
use cellplane_workflows::journal::{Journal, WorkflowRow};
use cellplane_workflows::{Event, Op, Record, State};
use http::Method;

use super::{facts, or_dash};
use crate::api::common::WorkflowStatus;
use crate::console::ConsoleError;
use crate::console::auth::Kind;
use crate::console::html::{self, esc, url};
use crate::console::live::Watch;
use crate::console::server::{Ctx, Page, Reply};
use crate::flows::{Owner, ids};

const AREA: &str = "/workflows";
/// Most workflows read from the journal for one list.
const SCAN: i64 = 1000;
/// Most rows shown.
const SHOWN: usize = 200;
const KINDS: &[&str] = &["", "cell", "ns", "ring", "other"];

pub async fn route(ctx: &Ctx<'_>) -> Result<Reply, ConsoleError> {
    let Some(journal) = ctx.console.journal.clone() else {
        let mut page = Page::new("Workflows", AREA);
        page.before =
            html::empty("This console reads no workflow journal: start it with --journal (or CELLPLANE_JOURNAL).");
        return Ok(Reply::Page(page));
    };
    let segments = ctx.request.segments(AREA);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (ctx.request.method == Method::GET, segments.as_slice()) {
        (true, []) => list(ctx, journal.as_ref()).await,
        (true, ["show"]) => show(ctx, journal.as_ref(), ctx.request.query("id")).await,
        (false, [action @ ("signal" | "cancel" | "retry")]) => steer(ctx, journal.as_ref(), action).await,
        _ => Err(ConsoleError::NotFound(format!("no page at {}", ctx.request.path))),
    }
}

fn show_path(id: &str) -> String {
    format!("{AREA}/show?id={}", url(id))
}

/// Whether the user may `verb` the object the workflow `id` belongs to.
async fn may(ctx: &Ctx<'_>, verb: &str, id: &str) -> bool {
    match ids::owner(id) {
        Some((Owner::Cell, _, name)) => ctx.viewer.can_named(verb, Kind::Cell, None, Some(name)).await,
        Some((Owner::Ring, _, name)) => ctx.viewer.can_named(verb, Kind::Ring, None, Some(name)).await,
        Some((Owner::Namespace, account, name)) => {
            ctx.viewer.can(verb, Kind::Namespace, account).await
                || ctx.viewer.can_named(verb, Kind::Namespace, account, Some(name)).await
        }
        None => ctx.viewer.can(verb, Kind::Cell, None).await,
    }
}

fn kind_of(id: &str) -> &'static str {
    match ids::owner(id) {
        Some((Owner::Cell, ..)) => "cell",
        Some((Owner::Namespace, ..)) => "ns",
        Some((Owner::Ring, ..)) => "ring",
        None => "other",
    }
}

async fn list(ctx: &Ctx<'_>, journal: &dyn Journal) -> Result<Reply, ConsoleError> {
    let (state, kind, text) = (ctx.request.query("state"), ctx.request.query("kind"), ctx.request.query("q"));
    let parsed = if state.is_empty() {
        None
    } else {
        Some(state.parse::<State>().map_err(|e| ConsoleError::BadRequest(e.to_string()))?)
    };
    let states: Vec<&str> = std::iter::once("").chain(State::ALL.iter().map(|s| s.as_str())).collect();
    let mut page = Page::new("Workflows", AREA);
    page.before = format!(
        r#"<form class="filters" method="get" action="{AREA}" role="search" aria-label="Filter workflows">
<label for="w-state">State<select id="w-state" name="state">{}</select></label>
<label for="w-kind">Kind<select id="w-kind" name="kind">{}</select></label>
<label for="w-q">Text<input id="w-q" name="q" value="{}" placeholder="id, workflow or reason"></label>
<button type="submit">Filter</button></form>"#,
        html::options(&states, state),
        html::options(KINDS, kind),
        esc(text)
    );
    let rows = journal.list(parsed, SCAN).await?;
    let mut shown = Vec::new();
    for row in rows.iter().filter(|r| matches(r, kind, text)) {
        if shown.len() >= SHOWN {
            break;
        }
        if may(ctx, "get", &row.checkpoint.id).await {
            shown.push(row);
        }
    }
    page.live = Some((Watch::Workflows.source(), table(&shown)));
    Ok(Reply::Page(page))
}

fn matches(row: &WorkflowRow, kind: &str, text: &str) -> bool {
    let cp = &row.checkpoint;
    let text = text.to_lowercase();
    (kind.is_empty() || kind_of(&cp.id) == kind)
        && (text.is_empty()
            || [Some(&cp.id), Some(&cp.workflow), cp.reason.as_ref(), cp.last_error.as_ref(), cp.step.as_ref()]
                .into_iter()
                .flatten()
                .any(|field| field.to_lowercase().contains(&text)))
}

fn table(rows: &[&WorkflowRow]) -> String {
    if rows.is_empty() {
        return html::empty("No workflows you may see match.");
    }
    let mut body = String::new();
    for row in rows {
        let cp = &row.checkpoint;
        let _ = write!(
            body,
            r#"<tr><th scope="row"><a class="mono" href="{}">{}</a></th><td>{}@{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="msg">{}</td></tr>"#,
            show_path(&cp.id),
            esc(&cp.id),
            esc(&cp.workflow),
            cp.version,
            html::phase_badge(Some(cp.state.as_str())),
            or_dash(cp.step.as_deref()),
            cp.attempt,
            html::ms_time(cp.updated_at),
            esc(cp.reason.as_deref().or(cp.last_error.as_deref()).unwrap_or("")),
        );
    }
    format!(
        r#"<table><caption>{} workflows</caption><thead><tr><th scope="col">ID</th><th scope="col">Workflow</th><th scope="col">State</th><th scope="col">Step</th><th scope="col">Attempt</th><th scope="col">Updated</th><th scope="col">Reason</th></tr></thead><tbody>{body}</tbody></table>"#,
        rows.len()
    )
}

async fn show(ctx: &Ctx<'_>, journal: &dyn Journal, id: &str) -> Result<Reply, ConsoleError> {
    if !may(ctx, "get", id).await {
        return Err(ConsoleError::Forbidden(format!(
            "you may not see workflow {id}: it belongs to an object you may not get"
        )));
    }
    let row = journal
        .get(id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no workflow with id {id:?} in this journal")))?;
    let history = journal.history(id).await?;
    let mut page = Page::new(format!("Workflow {id}"), AREA);
    page.live = Some((Watch::Workflows.source(), format!("{}{}", checkpoint(&row), history_tables(&history))));
    if may(ctx, "patch", id).await {
        page.after = controls(ctx, &row);
    }
    Ok(Reply::Page(page))
}

fn checkpoint(row: &WorkflowRow) -> String {
    let cp = &row.checkpoint;
    let owner = match ids::owner(&cp.id) {
        Some((Owner::Namespace, Some(account), name)) => {
            format!(
                r#"<a href="/namespaces/{}/{}">Namespace {}.{}</a>"#,
                url(account),
                url(name),
                esc(name),
                esc(account)
            )
        }
        Some((Owner::Cell, _, name)) => format!(r#"<a href="/cells#cell-{}">Cell {}</a>"#, esc(name), esc(name)),
        Some((Owner::Ring, _, name)) => {
            format!(r#"<a href="/rings#ring-{}">DeploymentRing {}</a>"#, esc(name), esc(name))
        }
        _ => "-".into(),
    };
    facts(&[
        ("State", html::phase_badge(Some(cp.state.as_str()))),
        ("Workflow", format!("{}@{} (run {})", esc(&cp.workflow), cp.version, cp.run)),
        ("Object", owner),
        ("Reason", or_dash(cp.reason.as_deref())),
        ("Step", cp.step.as_deref().map_or_else(|| "-".into(), |s| format!("{} (attempt {})", esc(s), cp.attempt))),
        ("Last error", or_dash(cp.last_error.as_deref())),
        ("Next run", cp.next_attempt_at.map_or_else(|| "-".into(), html::ms_time)),
        ("Owner", format!("{} (epoch {}, {} takeovers)", or_dash(cp.owner.as_deref()), row.epoch, row.takeovers)),
        ("Created", html::ms_time(cp.created_at)),
        ("Updated", html::ms_time(cp.updated_at)),
    ])
}

/// One durable operation: every record of one sequence number in one run.
struct Operation<'a> {
    seq: i64,
    op: Op,
    name: &'a str,
    records: Vec<&'a Event>,
}

fn operations(history: &[Event]) -> Vec<(i64, Vec<Operation<'_>>)> {
    let mut runs: Vec<(i64, Vec<Operation<'_>>)> = Vec::new();
    for event in history {
        if runs.last().is_none_or(|(run, _)| *run != event.run) {
            runs.push((event.run, Vec::new()));
        }
        let Some((_, ops)) = runs.last_mut() else { continue };
        match ops.last_mut() {
            Some(op) if op.seq == event.seq && op.op == event.op => op.records.push(event),
            _ => ops.push(Operation { seq: event.seq, op: event.op, name: &event.name, records: vec![event] }),
        }
    }
    runs
}

fn history_tables(history: &[Event]) -> String {
    if history.is_empty() {
        return html::empty("No history yet.");
    }
    let mut out = String::new();
    for (run, ops) in operations(history) {
        let rows: String = ops.iter().map(operation_row).collect();
        let _ = write!(
            out,
            r#"<table class="history"><caption>History of run {run}</caption><thead><tr><th scope="col">#</th><th scope="col">Kind</th><th scope="col">Name</th><th scope="col">Outcome</th><th scope="col">Attempts</th><th scope="col">Duration</th><th scope="col">When</th><th scope="col">Details</th></tr></thead><tbody>{rows}</tbody></table>"#
        );
    }
    out
}

fn operation_row(op: &Operation<'_>) -> String {
    let last = op.records.last().map(|e| &e.record);
    let failed_attempts: Vec<String> = op
        .records
        .iter()
        .filter_map(|e| match &e.record {
            Record::StepRetry { attempt, error, next_at, duration_ms } => Some(format!(
                "attempt {attempt} failed after {duration_ms} ms: {}; retry {}",
                esc(&error.to_string()),
                html::ms_time(*next_at)
            )),
            _ => None,
        })
        .collect();
    let (outcome, attempts, duration, detail) = match last {
        Some(Record::StepDone { result: Ok(value), attempts, duration_ms }) => {
            ("Completed", attempts.to_string(), format!("{duration_ms} ms"), short(&value.to_string()))
        }
        Some(Record::StepDone { result: Err(error), attempts, duration_ms }) => {
            ("Failed", attempts.to_string(), format!("{duration_ms} ms"), esc(&error.to_string()))
        }
        Some(Record::StepRetry { attempt, .. }) => ("Retrying", attempt.to_string(), "-".into(), String::new()),
        Some(Record::TimerStarted { until }) => {
            ("Sleeping", "-".into(), "-".into(), format!("until {}", html::ms_time(*until)))
        }
        Some(Record::SignalWait { deadline }) => (
            "Waiting",
            "-".into(),
            "-".into(),
            deadline.map_or_else(|| "no deadline".into(), |d| format!("times out {}", html::ms_time(d))),
        ),
        Some(Record::SignalReceived { payload }) => ("Received", "-".into(), "-".into(), short(&payload.to_string())),
        Some(Record::SignalTimedOut) => ("TimedOut", "-".into(), "-".into(), String::new()),
        Some(Record::ChildStarted { workflow }) => ("Started", "-".into(), "-".into(), esc(workflow)),
        Some(Record::Marker { value }) => ("Recorded", "-".into(), "-".into(), short(&value.to_string())),
        Some(Record::Cancelled) => ("Cancelled", "-".into(), "-".into(), String::new()),
        Some(Record::Completed { output }) => ("Completed", "-".into(), "-".into(), short(&output.to_string())),
        Some(Record::Failed { reason }) => ("Failed", "-".into(), "-".into(), esc(reason)),
        Some(Record::WorkflowCancelled) => ("Cancelled", "-".into(), "-".into(), String::new()),
        Some(Record::ContinuedAsNew) => ("ContinuedAsNew", "-".into(), "-".into(), String::new()),
        None => ("-", "-".into(), "-".into(), String::new()),
    };
    let errors = if failed_attempts.is_empty() {
        String::new()
    } else {
        format!("<ul><li>{}</li></ul>", failed_attempts.join("</li><li>"))
    };
    let when = op.records.first().map_or_else(|| "-".into(), |e| html::ms_time(e.at));
    format!(
        r#"<tr><td>{}</td><td>{}</td><th scope="row">{}</th><td>{}</td><td>{attempts}</td><td>{duration}</td><td>{when}</td><td class="msg">{detail}{}</td></tr>"#,
        op.seq,
        op.op.as_str(),
        esc(op.name),
        html::phase_badge(Some(outcome)),
        if errors.is_empty() { String::new() } else { format!(r#"<div class="err">{errors}</div>"#) },
    )
}

fn short(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    esc(if cut.len() < text.len() { &cut } else { text })
}

/// Signal, cancel and retry, for the states in which each makes sense.
fn controls(ctx: &Ctx<'_>, row: &WorkflowRow) -> String {
    let cp = &row.checkpoint;
    let id = [("id", cp.id.as_str())];
    let mut out = String::from(r#"<h2>Steer</h2><div class="actions">"#);
    if !cp.state.is_finished() {
        out.push_str(&html::button_form(&format!("{AREA}/cancel"), ctx.csrf(), &id, "Cancel workflow", "danger"));
    }
    if matches!(cp.state, State::Failed | State::NonDeterministic) {
        out.push_str(&html::button_form(
            &format!("{AREA}/retry"),
            ctx.csrf(),
            &id,
            "Retry from the failed step",
            "primary",
        ));
    }
    out.push_str("</div>");
    if !cp.state.is_finished() {
        let _ = write!(
            out,
            r#"<form method="post" action="{AREA}/signal" class="card narrow">{}<input type="hidden" name="id" value="{}">
<label for="s-name">Signal name</label><input id="s-name" name="name" required maxlength="253">
<label for="s-payload">Payload (JSON)</label><textarea id="s-payload" name="payload" required>null</textarea>
<div class="actions"><button type="submit">Send signal</button></div></form>"#,
            html::csrf_field(ctx.csrf()),
            esc(&cp.id)
        );
    }
    out
}

async fn steer(ctx: &Ctx<'_>, journal: &dyn Journal, action: &str) -> Result<Reply, ConsoleError> {
    let id = ctx.request.field("id");
    if !may(ctx, "patch", id).await {
        return Err(ConsoleError::Forbidden(format!(
            "you may not steer workflow {id}: it belongs to an object you may not patch"
        )));
    }
    let back = show_path(id);
    let result = match action {
        "signal" => signal(ctx, journal, id).await,
        "cancel" => journal
            .wake(id, true, wall_ms())
            .await
            .map(|()| "cancellation requested".to_string())
            .map_err(ConsoleError::from),
        _ => journal
            .retry(id, wall_ms())
            .await
            .map(|()| "it runs again from its failed step".to_string())
            .map_err(ConsoleError::from),
    };
    Ok(match result {
        Ok(done) => ctx.done(back, format!("{id}: {done}")),
        Err(e) => ctx.failed(back, &e),
    })
}

async fn signal(ctx: &Ctx<'_>, journal: &dyn Journal, id: &str) -> Result<String, ConsoleError> {
    let name = ctx.request.field("name").trim();
    if name.is_empty() || name.starts_with("__") {
        return Err(ConsoleError::BadRequest(format!(
            "signal names must not be empty or start with \"__\" (the engine's): {name:?}"
        )));
    }
    let payload: serde_json::Value = serde_json::from_str(ctx.request.field("payload"))
        .map_err(|e| ConsoleError::BadRequest(format!("the payload is not valid JSON: {e}")))?;
    journal.send_signal(id, name, &payload, wall_ms()).await?;
    Ok(format!("signal {name:?} sent"))
}

/// The `workflow` block of an object's status, for its detail page.
pub fn status_block(ctx: &Ctx<'_>, workflow: &WorkflowStatus) -> String {
    let link = if ctx.console.journal.is_some() {
        format!(r#" <a href="{}">history</a>"#, show_path(&workflow.id))
    } else {
        String::new()
    };
    format!(
        r#"<h2>Workflow</h2>{}"#,
        facts(&[
            ("ID", format!("<code>{}</code>{link}", esc(&workflow.id))),
            ("State", html::phase_badge(Some(&format!("{:?}", workflow.state)))),
            ("Step", or_dash(workflow.step.as_deref())),
            ("Attempt", workflow.attempt.map_or_else(|| "-".into(), |a| a.to_string())),
            ("Last error", or_dash(workflow.last_error.as_deref())),
            ("Waiting for", or_dash(workflow.waiting_for.as_deref())),
            ("Next attempt", html::time_ago(workflow.next_attempt_at.as_ref())),
        ])
    )
}
