//! The rollout as a pipeline (ring 0 → ring 1 → …): per ring its batches and their cells, the
//! bake countdown, gate verdicts, and pause, resume and approve.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use http::Method;
use kube::Api;

use super::{facts, list_or_forbidden, merge, or_dash};
use crate::api::ring::{DeploymentRing, RingPhase};
use crate::api::{Cell, conditions};
use crate::console::ConsoleError;
use crate::console::auth::Kind;
use crate::console::html::{self, esc, url};
use crate::console::live::Watch;
use crate::console::server::{Ctx, Page, Reply};
use crate::flows::placement::ring_cells;
use crate::flows::ring::plan_batches;

const AREA: &str = "/rings";

pub async fn route(ctx: &Ctx<'_>) -> Result<Reply, ConsoleError> {
    let segments = ctx.request.segments(AREA);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (ctx.request.method == Method::GET, segments.as_slice()) {
        (true, []) => pipeline(ctx).await,
        (false, [name, "pause"]) => pause(ctx, name, true).await,
        (false, [name, "resume"]) => pause(ctx, name, false).await,
        (false, [name, "approve"]) => approve(ctx, name).await,
        _ => Err(ConsoleError::NotFound(format!("no page at {}", ctx.request.path))),
    }
}

/// One ring as the page shows it.
pub struct RingView {
    pub ring: DeploymentRing,
}

impl RingView {
    fn name(&self) -> &str {
        self.ring.metadata.name.as_deref().unwrap_or("")
    }

    fn target(&self) -> Option<&str> {
        self.ring.status.as_ref().and_then(|s| s.target_version.as_deref())
    }

    /// Waiting for a person's approval of the target version.
    fn awaits_approval(&self) -> bool {
        let approved = self.ring.spec.approval.as_ref().map(|a| a.version.as_str());
        self.ring.spec.manual_approval && self.target().is_some() && approved != self.target()
    }
}

/// Rings in rollout order: by order, a ring with an upstream right after it.
fn rollout_order(rings: &mut [RingView]) {
    let orders: BTreeMap<String, (Option<i32>, Option<String>)> =
        rings.iter().map(|r| (r.name().to_string(), (r.ring.spec.order, r.ring.spec.upstream.clone()))).collect();
    let depth = |name: &str| {
        let mut depth = 0;
        let mut at = name.to_string();
        for _ in 0..orders.len() {
            match orders.get(&at) {
                Some((Some(order), _)) => return depth + order * 100,
                Some((None, Some(upstream))) => {
                    depth += 1;
                    at = upstream.clone();
                }
                _ => break,
            }
        }
        depth
    };
    rings.sort_by_key(|r| (depth(r.name()), r.name().to_string()));
}

async fn pipeline(ctx: &Ctx<'_>) -> Result<Reply, ConsoleError> {
    let mut page = Page::new("Deployment rings", AREA);
    let body = match list_or_forbidden(&Api::<DeploymentRing>::all(ctx.client())).await? {
        None => html::empty("You may not list DeploymentRings."),
        Some(objects) if objects.is_empty() => html::empty("No rings yet."),
        Some(objects) => {
            let mut rings: Vec<RingView> = objects.into_iter().map(|ring| RingView { ring }).collect();
            rollout_order(&mut rings);
            let cells = list_or_forbidden(&Api::<Cell>::all(ctx.client())).await?.unwrap_or_default();
            let may_steer = ctx.viewer.can("patch", Kind::Ring, None).await;
            let cards: String = rings.iter().map(|r| card(r, &cells, may_steer, ctx.csrf())).collect();
            format!(r#"<ol class="pipeline" aria-label="Rollout order">{cards}</ol>"#)
        }
    };
    page.live = Some((Watch::Rings.source(), body));
    Ok(Reply::Page(page))
}

fn card(view: &RingView, cells: &[Cell], may_steer: bool, csrf: &str) -> String {
    let ring = &view.ring;
    let name = view.name();
    let status = ring.status.clone().unwrap_or_default();
    let phase = status.phase.map(|p| format!("{p:?}"));
    let position = match (&ring.spec.order, &ring.spec.upstream) {
        (Some(order), _) => format!("order {order}"),
        (None, Some(upstream)) => format!("after {}", esc(upstream)),
        _ => "order 0".into(),
    };
    let batch = match (status.current_batch, status.total_batches) {
        (Some(current), Some(total)) if total > 0 => {
            format!(
                r#"<progress max="{total}" value="{current}" aria-label="batch {current} of {total}"></progress> batch {current} of {total}"#
            )
        }
        _ => "-".into(),
    };
    let bake = match (&status.baked_until, status.phase) {
        (Some(until), Some(RingPhase::Baking)) => {
            format!(r#"<time data-countdown datetime="{}">until {}</time>"#, until.0, until.0)
        }
        (Some(until), _) => format!(r#"<time datetime="{}">{}</time>"#, until.0, until.0),
        _ => "-".into(),
    };
    let approval = match &ring.spec.approval {
        Some(a) => format!("{} approved by {}", esc(&a.version), or_dash(a.approved_by.as_deref())),
        None if ring.spec.manual_approval => "required, none yet".into(),
        None => "not required".into(),
    };
    let mut out = format!(
        r#"<li class="card" id="ring-{id}" aria-labelledby="ring-{id}-title"><h2 id="ring-{id}-title">{id} {phase}</h2>"#,
        id = esc(name),
        phase = html::phase_badge(phase.as_deref()),
    );
    out.push_str(&facts(&[
        ("Position", position),
        ("Target version", or_dash(view.target())),
        ("Current version", or_dash(status.current_version.as_deref())),
        ("Baked version", or_dash(status.baked_version.as_deref())),
        ("Progress", batch),
        ("Bake ends", bake),
        ("Paused", if ring.spec.paused { r#"<span class="badge wait">paused</span>"#.into() } else { "no".into() }),
        ("Approval", approval),
    ]));
    if let Some(ready) =
        conditions::find(&status.conditions, conditions::types::READY).filter(|c| !c.message.is_empty())
    {
        let _ = write!(out, r#"<p class="hint">{}</p>"#, esc(&ready.message));
    }
    out.push_str(&batches(view, cells, status.current_batch));
    out.push_str(&gates(view));
    if may_steer {
        out.push_str(&actions(view, csrf));
    }
    out.push_str("</li>");
    out
}

/// The ring's cells in the batches a rollout takes them (sorted by name, `maxBatch` at a time).
fn batches(view: &RingView, cells: &[Cell], current: Option<i32>) -> String {
    let ring = &view.ring;
    let selected = ring_cells(ring, cells);
    if selected.is_empty() {
        return html::empty("No cells match this ring's selector.");
    }
    let target = view.target();
    let mut out = String::from("<h3>Batches</h3>");
    for (i, batch) in plan_batches(&selected, &ring.spec.max_batch).iter().enumerate() {
        let number = i as i32 + 1;
        let is_current = current == Some(number);
        let cells: Vec<String> = batch
            .iter()
            .map(|cell| {
                let status = cell.status.as_ref();
                let running = status.and_then(|s| s.running_version.as_deref());
                let class = if running.is_some() && running == target { "ok" } else { "wait" };
                let release = status.and_then(|s| s.release.as_ref()).map(|r| super::cells::release_badge(Some(r)));
                format!(
                    r#"{} <span class="badge {class}">{}</span>{}"#,
                    esc(cell.metadata.name.as_deref().unwrap_or("")),
                    or_dash(running),
                    release.map(|badge| format!(" {badge}")).unwrap_or_default()
                )
            })
            .collect();
        let _ = write!(
            out,
            r#"<div class="batch{}"{}><strong>Batch {number}</strong>: {}</div>"#,
            if is_current { " current" } else { "" },
            if is_current { r#" aria-current="step""# } else { "" },
            cells.join(", ")
        );
    }
    out
}

/// The gates the spec asks for, and the verdicts the status reports.
fn gates(view: &RingView) -> String {
    let mut out = String::new();
    if !view.ring.spec.gates.is_empty() {
        let rows: String = view
            .ring
            .spec
            .gates
            .iter()
            .map(|g| {
                format!(
                    "<tr><th scope=\"row\">{}</th><td>{:?}</td><td>wait {}, healthy within {}, stable for {}</td></tr>",
                    esc(&g.name),
                    g.kind,
                    esc(&g.wait),
                    esc(&g.window),
                    esc(&g.stable_for)
                )
            })
            .collect();
        let _ = write!(out, r#"<table><caption>Gates</caption><tbody>{rows}</tbody></table>"#);
    }
    let verdicts = view.ring.status.as_ref().map(|s| s.gates.as_slice()).unwrap_or_default();
    if !verdicts.is_empty() {
        let rows: String = verdicts
            .iter()
            .map(|gate| {
                let checks = if gate.batch == 0 { "bake".to_string() } else { format!("batch {}", gate.batch) };
                format!(
                    "<tr><th scope=\"row\">{}</th><td>{}</td><td>{checks}</td><td class=\"msg\">{}</td></tr>",
                    esc(&gate.name),
                    html::phase_badge(Some(&format!("{:?}", gate.verdict))),
                    or_dash(Some(gate.value.as_str()).filter(|v| !v.is_empty())),
                )
            })
            .collect();
        let _ = write!(
            out,
            r#"<table><caption>Gate verdicts</caption><thead><tr><th scope="col">Gate</th><th scope="col">Verdict</th><th scope="col">Checks</th><th scope="col">Last value</th></tr></thead><tbody>{rows}</tbody></table>"#
        );
    }
    out
}

fn actions(view: &RingView, csrf: &str) -> String {
    let name = view.name();
    let base = format!("{AREA}/{}", url(name));
    let mut out = String::from(r#"<div class="actions">"#);
    if view.ring.spec.paused {
        out.push_str(&html::button_form(&format!("{base}/resume"), csrf, &[], &format!("Resume {name}"), ""));
    } else {
        out.push_str(&html::button_form(&format!("{base}/pause"), csrf, &[], &format!("Pause {name}"), ""));
    }
    if view.awaits_approval()
        && let Some(target) = view.target()
    {
        out.push_str(&html::button_form(
            &format!("{base}/approve"),
            csrf,
            &[("version", target)],
            &format!("Approve {target} for {name}"),
            "primary",
        ));
    }
    out.push_str("</div>");
    out
}

async fn pause(ctx: &Ctx<'_>, name: &str, paused: bool) -> Result<Reply, ConsoleError> {
    let api: Api<DeploymentRing> = Api::all(ctx.client());
    let what = if paused { "paused: no new batch starts" } else { "resumed" };
    Ok(match merge(&api, name, serde_json::json!({ "spec": { "paused": paused } })).await {
        Ok(()) => ctx.done(AREA, format!("Ring {name} {what}")),
        Err(e) => ctx.failed(AREA, &e),
    })
}

/// Approves the version the user saw: refused when the target moved on meanwhile.
async fn approve(ctx: &Ctx<'_>, name: &str) -> Result<Reply, ConsoleError> {
    let api: Api<DeploymentRing> = Api::all(ctx.client());
    let ring = api.get(name).await?;
    let target = ring.status.as_ref().and_then(|s| s.target_version.clone());
    let seen = ctx.request.field("version");
    let Some(target) = target.filter(|t| t == seen) else {
        let error =
            ConsoleError::BadRequest(format!("not approved: ring {name}'s target is no longer {seen}; look again"));
        return Ok(ctx.failed(AREA, &error));
    };
    let patch = serde_json::json!({ "spec": { "approval": { "version": target, "approvedBy": ctx.viewer.user } } });
    Ok(match merge(&api, name, patch).await {
        Ok(()) => ctx.done(AREA, format!("Approved {target} for ring {name}")),
        Err(e) => ctx.failed(AREA, &e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ring::{DeploymentRingStatus, GateStatus, GateVerdict};

    fn view(name: &str, order: Option<i32>, upstream: Option<&str>) -> RingView {
        let mut ring = crate::fixtures::ring(name, order.unwrap_or(0), "x=y", Some("1.0.0"), "1h");
        ring.spec.order = order;
        ring.spec.upstream = upstream.map(str::to_string);
        RingView { ring }
    }

    #[test]
    fn rings_line_up_by_order_and_upstream() {
        let mut rings = vec![view("c", None, Some("b")), view("a", Some(0), None), view("b", Some(1), None)];
        rollout_order(&mut rings);
        assert_eq!(rings.iter().map(RingView::name).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn gate_verdicts_show_the_verdict_the_batch_and_the_last_value() {
        let mut ring = crate::fixtures::ring("r", 0, "x=y", Some("1.0.0"), "1h");
        ring.status = Some(DeploymentRingStatus {
            gates: vec![GateStatus {
                name: "errors".into(),
                verdict: GateVerdict::Failed,
                value: "eu-1: 0.2 (want < 0.01)".into(),
                batch: 2,
                since: None,
            }],
            ..Default::default()
        });
        let html = gates(&RingView { ring });
        for shown in ["errors", "Failed", "batch 2", "eu-1: 0.2 (want &lt; 0.01)"] {
            assert!(html.contains(shown), "{shown} missing from {html}");
        }
    }
}
