//! Cells by region: capacity, running and target version, release and its health, phase, cordon
//! and uncordon.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use http::Method;
use kube::Api;

use super::{list_or_forbidden, merge, or_dash};
use crate::api::Cell;
use crate::api::cell::{CellRelease, ReleaseHealth};
use crate::api::conditions::{self, ConditionStatus, types};
use crate::console::ConsoleError;
use crate::console::auth::Kind;
use crate::console::html::{self, esc, url};
use crate::console::live::Watch;
use crate::console::server::{Ctx, Page, Reply};

const AREA: &str = "/cells";

pub async fn route(ctx: &Ctx<'_>) -> Result<Reply, ConsoleError> {
    let segments = ctx.request.segments(AREA);
    match (ctx.request.method == Method::GET, segments.as_slice()) {
        (true, []) => list(ctx).await,
        (false, [name, action]) if action == "cordon" || action == "uncordon" => {
            cordon(ctx, name, action == "cordon").await
        }
        _ => Err(ConsoleError::NotFound(format!("no page at {}", ctx.request.path))),
    }
}

async fn list(ctx: &Ctx<'_>) -> Result<Reply, ConsoleError> {
    let mut page = Page::new("Cells", AREA);
    let body = match list_or_forbidden(&Api::<Cell>::all(ctx.client())).await? {
        None => html::empty("You may not list Cells."),
        Some(cells) if cells.is_empty() => html::empty("No cells yet."),
        Some(cells) => {
            let may_cordon = ctx.viewer.can("patch", Kind::Cell, None).await;
            by_region(&cells, may_cordon, ctx.csrf())
        }
    };
    page.live = Some((Watch::Cells.source(), body));
    Ok(Reply::Page(page))
}

fn by_region(cells: &[Cell], may_cordon: bool, csrf: &str) -> String {
    let mut regions: BTreeMap<&str, Vec<&Cell>> = BTreeMap::new();
    for cell in cells {
        regions.entry(cell.spec.region.as_str()).or_default().push(cell);
    }
    let mut out = String::new();
    for (region, mut cells) in regions {
        cells.sort_by_key(|c| c.metadata.name.clone());
        let rows: String = cells.iter().map(|c| row(c, may_cordon, csrf)).collect();
        let _ = write!(
            out,
            r#"<h2>{region}</h2><table><thead><tr><th scope="col">Cell</th><th scope="col">Phase</th><th scope="col">Capacity</th><th scope="col">Running</th><th scope="col">Target</th><th scope="col">Release</th><th scope="col">Cordoned</th><th scope="col">Waiting for</th>{}</tr></thead><tbody>{rows}</tbody></table>"#,
            if may_cordon { r#"<th scope="col">Actions</th>"# } else { "" },
            region = esc(region),
        );
    }
    out
}

fn row(cell: &Cell, may_cordon: bool, csrf: &str) -> String {
    let name = cell.metadata.name.as_deref().unwrap_or("");
    let status = cell.status.clone().unwrap_or_default();
    let used = status.capacity_used.as_ref().map_or(0, |u| u.namespaces);
    let max = cell.spec.capacity.max_namespaces;
    let ready = conditions::find(&status.conditions, types::READY);
    let waiting = ready.filter(|c| c.status != ConditionStatus::True).map_or("", |c| c.message.as_str());
    let upgrading = status.running_version.as_deref().is_some_and(|v| v != cell.spec.version);
    let action = if !may_cordon {
        String::new()
    } else if cell.spec.cordoned {
        format!(
            "<td>{}</td>",
            html::button_form(&format!("{AREA}/{}/uncordon", url(name)), csrf, &[], &format!("Uncordon {name}"), "")
        )
    } else {
        format!(
            "<td>{}</td>",
            html::button_form(&format!("{AREA}/{}/cordon", url(name)), csrf, &[], &format!("Cordon {name}"), "")
        )
    };
    format!(
        r#"<tr id="cell-{id}"><th scope="row">{id}</th><td>{phase}</td><td><meter min="0" max="{max}" value="{used}" aria-label="namespaces in {id}">{used}/{max}</meter> {used}/{max}</td><td>{running}</td><td>{target}{arrow}</td><td>{release}</td><td>{cordoned}</td><td class="msg">{waiting}</td>{action}</tr>"#,
        id = esc(name),
        phase = html::phase_badge(status.phase.map(|p| format!("{p:?}")).as_deref()),
        running = or_dash(status.running_version.as_deref()),
        target = esc(&cell.spec.version),
        release = release_badge(status.release.as_ref()),
        arrow = if upgrading { r#" <span class="badge wait">upgrading</span>"# } else { "" },
        cordoned = if cell.spec.cordoned { r#"<span class="badge bad">cordoned</span>"# } else { "no" },
        waiting = esc(waiting),
    )
}

/// The release a cell runs, as a badge coloured by its health (the unhealthy objects in full).
pub fn release_badge(release: Option<&CellRelease>) -> String {
    let Some(release) = release else { return "-".into() };
    let class = match release.health {
        ReleaseHealth::Healthy => "ok",
        ReleaseHealth::Progressing => "wait",
        ReleaseHealth::Failed => "bad",
    };
    format!(
        r#"<span class="badge {class}" title="{}">{} {:?}</span>"#,
        esc(&release.summary()),
        esc(&release.version),
        release.health
    )
}

async fn cordon(ctx: &Ctx<'_>, name: &str, cordoned: bool) -> Result<Reply, ConsoleError> {
    let api: Api<Cell> = Api::all(ctx.client());
    let result = merge(&api, name, serde_json::json!({ "spec": { "cordoned": cordoned } })).await;
    let verb = if cordoned { "cordoned: no new namespaces are placed there" } else { "uncordoned" };
    Ok(match result {
        Ok(()) => ctx.done(AREA, format!("Cell {name} {verb}")),
        Err(e) => ctx.failed(AREA, &e),
    })
}
