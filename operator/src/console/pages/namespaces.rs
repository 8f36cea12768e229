//! Namespaces (tenants): the list with filters, the create form, the detail page whose steps
//! turn green live, and deletion with a confirmation.

use std::fmt::Write as _;

use http::Method;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use super::{events_table, facts, list_or_forbidden, or_dash};
use crate::api::common::DNS_LABEL_PATTERN;
use crate::api::conditions::{self, ConditionStatus, types};
use crate::api::namespace::{
    EndpointSpec, MtlsSpec, NAMESPACE_STEPS, Namespace, NamespaceSpec, Placement, Retention, Tier,
};
use crate::console::ConsoleError;
use crate::console::auth::Kind;
use crate::console::html::{self, esc, url};
use crate::console::live::Watch;
use crate::console::server::{Ctx, Page, Reply};

const AREA: &str = "/namespaces";
const PHASES: &[&str] = &["", "Pending", "Provisioning", "Ready", "Degraded", "Deleting", "Failed"];

pub async fn route(ctx: &Ctx<'_>) -> Result<Reply, ConsoleError> {
    let segments = ctx.request.segments(AREA);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let get = ctx.request.method == Method::GET;
    match (get, segments.as_slice()) {
        (true, []) => list(ctx).await,
        (false, []) => create(ctx).await,
        (true, ["new"]) => Ok(Reply::Page(form(&Draft::new(ctx.request.query("account")), None, ctx.csrf()))),
        (true, [account, name]) => detail(ctx, account, name).await,
        (true, [account, name, "delete"]) => confirm_delete(ctx, account, name).await,
        (false, [account, name, "delete"]) => delete(ctx, account, name).await,
        _ => Err(ConsoleError::NotFound(format!("no page at {}", ctx.request.path))),
    }
}

fn path(account: &str, name: &str) -> String {
    format!("{AREA}/{}/{}", url(account), url(name))
}

fn phase(ns: &Namespace) -> Option<String> {
    ns.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}"))
}

async fn list(ctx: &Ctx<'_>) -> Result<Reply, ConsoleError> {
    let account = ctx.request.query("account").trim().to_string();
    let state = ctx.request.query("state");
    let api: Api<Namespace> =
        if account.is_empty() { Api::all(ctx.client()) } else { Api::namespaced(ctx.client(), &account) };
    let mut page = Page::new("Namespaces", AREA);
    let can_create = ctx.viewer.can("create", Kind::Namespace, (!account.is_empty()).then_some(account.as_str())).await;
    let create = if can_create {
        format!(r#"<a class="button primary" href="{AREA}/new?account={}">Create Namespace</a>"#, url(&account))
    } else {
        String::new()
    };
    page.before = format!(
        r#"<div class="actions">{create}</div><form class="filters" method="get" action="{AREA}" role="search" aria-label="Filter namespaces">
<label for="account">Account<input id="account" name="account" value="{}" pattern="{DNS_LABEL_PATTERN}" maxlength="63"></label>
<label for="state">Phase<select id="state" name="state">{}</select></label><button type="submit">Filter</button></form>"#,
        esc(&account),
        html::options(PHASES, state)
    );
    let body = match list_or_forbidden(&api).await? {
        None => html::empty("You may not list Namespaces here: name an account you belong to."),
        Some(mut items) => {
            items.retain(|ns| state.is_empty() || phase(ns).as_deref() == Some(state));
            items.sort_by_key(|ns| (ns.metadata.namespace.clone(), ns.metadata.name.clone()));
            table(&items)
        }
    };
    page.live = Some((Watch::Namespaces { account: (!account.is_empty()).then_some(account) }.source(), body));
    Ok(Reply::Page(page))
}

fn table(items: &[Namespace]) -> String {
    if items.is_empty() {
        return html::empty("No namespaces match.");
    }
    let mut rows = String::new();
    for ns in items {
        let (account, name) =
            (ns.metadata.namespace.as_deref().unwrap_or(""), ns.metadata.name.as_deref().unwrap_or(""));
        let status = ns.status.clone().unwrap_or_default();
        let ready = conditions::find(&status.conditions, types::READY);
        let _ = write!(
            rows,
            r#"<tr><th scope="row"><a href="{}">{}</a></th><td>{}</td><td>{}</td><td>{}</td><td class="mono">{}</td><td>{}</td><td class="msg">{}</td></tr>"#,
            path(account, name),
            esc(name),
            esc(account),
            html::phase_badge(phase(ns).as_deref()),
            or_dash(status.assigned_cell.as_deref()),
            or_dash(status.endpoint.as_deref()),
            html::time_ago(ns.metadata.creation_timestamp.as_ref()),
            esc(ready.filter(|c| c.status != ConditionStatus::True).map_or("", |c| c.message.as_str())),
        );
    }
    format!(
        r#"<table><caption>{} namespaces</caption><thead><tr><th scope="col">Name</th><th scope="col">Account</th><th scope="col">Phase</th><th scope="col">Cell</th><th scope="col">Endpoint</th><th scope="col">Age</th><th scope="col">Waiting for</th></tr></thead><tbody>{rows}</tbody></table>"#,
        items.len()
    )
}

/// What the create form holds, to show it again with the API's answer.
#[derive(Default)]
struct Draft {
    account: String,
    name: String,
    region: String,
    tier: String,
    priority: String,
    retention: String,
    mtls: String,
    ca: String,
}

impl Draft {
    fn new(account: &str) -> Self {
        Draft {
            account: account.into(),
            tier: "standard".into(),
            priority: "0".into(),
            retention: "30".into(),
            mtls: "issue".into(),
            ..Draft::default()
        }
    }

    fn from_form(ctx: &Ctx<'_>) -> Self {
        let field = |name: &str| ctx.request.field(name).trim().to_string();
        Draft {
            account: field("account"),
            name: field("name"),
            region: field("region"),
            tier: field("tier"),
            priority: field("priority"),
            retention: field("retention"),
            mtls: field("mtls"),
            ca: ctx.request.field("ca").to_string(),
        }
    }

    /// The object to create. Only what the API cannot say clearly is checked here (numbers that
    /// are not numbers); the rest is the API server's to refuse, with its own message.
    fn namespace(&self) -> Result<Namespace, ConsoleError> {
        let number = |what: &str, text: &str| {
            text.parse::<i32>()
                .map_err(|_| ConsoleError::BadRequest(format!("{what} must be a whole number, not {text:?}")))
        };
        let tier = match self.tier.as_str() {
            "critical" => Tier::Critical,
            _ => Tier::Standard,
        };
        let mtls = match self.mtls.as_str() {
            "upload" => MtlsSpec { accepted_client_ca: Some(self.ca.clone()), issue_client_certificate: None },
            _ => MtlsSpec { accepted_client_ca: None, issue_client_certificate: Some(true) },
        };
        let spec = NamespaceSpec {
            region: self.region.clone(),
            placement: Placement { tier, priority: number("Priority", &self.priority)?, ..Placement::default() },
            retention: Retention { days: number("Retention", &self.retention)? },
            mtls,
            endpoint: EndpointSpec::default(),
            synthetic: false,
        };
        let mut ns = Namespace::new(&self.name, spec);
        ns.metadata.namespace = Some(self.account.clone());
        Ok(ns)
    }
}

/// The create form; its constraints are the CRD's, so the browser stops what the API would refuse.
fn form(draft: &Draft, error: Option<&ConsoleError>, csrf: &str) -> Page {
    let mut page = Page::new("Create Namespace", AREA);
    if let Some(error) = error {
        page.status = error.status();
    }
    let error = error
        .map(|e| {
            format!(
                r#"<p class="banner error" role="alert" id="form-error">The API server refused the Namespace: {}</p>"#,
                esc(&e.to_string())
            )
        })
        .unwrap_or_default();
    let checked = |value: &str| if draft.mtls == value { " checked" } else { "" };
    let tiers = html::options(&["standard", "critical"], &draft.tier);
    page.before = format!(
        r#"{error}<form method="post" action="{AREA}" class="card narrow" aria-describedby="form-help">{csrf}
<p id="form-help" class="hint">A tenant lives in the Kubernetes namespace of its account; its identity is <code>name.account</code>. Names are DNS labels: lower-case letters, digits and '-'.</p>
<label for="f-account">Account</label><input id="f-account" name="account" required maxlength="63" pattern="{pattern}" value="{account}">
<label for="f-name">Name</label><input id="f-name" name="name" required maxlength="63" pattern="{pattern}" value="{name}">
<label for="f-region">Region</label><input id="f-region" name="region" required maxlength="63" pattern="{pattern}" value="{region}" placeholder="eu-west-1">
<label for="f-tier">Tier</label><select id="f-tier" name="tier">{tiers}</select>
<label for="f-priority">Priority (0 to 1000)</label><input id="f-priority" name="priority" type="number" min="0" max="1000" required value="{priority}">
<label for="f-retention">Retention in days (1 to 90)</label><input id="f-retention" name="retention" type="number" min="1" max="90" required value="{retention}">
<fieldset><legend>Client certificates (mutual TLS)</legend>
<label><input type="radio" name="mtls" value="issue" id="f-mtls-issue"{issue}> Issue a client certificate for me</label>
<label><input type="radio" name="mtls" value="upload" id="f-mtls-upload"{upload}> Accept clients of my own CA</label>
<label for="f-ca">CA certificate (PEM), when accepting your own CA</label>
<textarea id="f-ca" name="ca" maxlength="65536" aria-describedby="ca-hint">{ca}</textarea>
<p id="ca-hint" class="hint">Paste it, or choose the file: <input type="file" accept=".pem,.crt,.cer" data-fill="f-ca" aria-label="CA certificate file"></p>
</fieldset>
<div class="actions"><button type="submit" class="primary" id="f-create">Create</button><a class="button" href="{AREA}">Cancel</a></div></form>"#,
        csrf = html::csrf_field(csrf),
        pattern = esc(DNS_LABEL_PATTERN),
        account = esc(&draft.account),
        name = esc(&draft.name),
        region = esc(&draft.region),
        priority = esc(&draft.priority),
        retention = esc(&draft.retention),
        issue = checked("issue"),
        upload = checked("upload"),
        ca = esc(&draft.ca),
    );
    page
}

async fn create(ctx: &Ctx<'_>) -> Result<Reply, ConsoleError> {
    let draft = Draft::from_form(ctx);
    let result = match draft.namespace() {
        Ok(ns) => Api::<Namespace>::namespaced(ctx.client(), &draft.account)
            .create(&PostParams { field_manager: Some(super::MANAGER.into()), ..Default::default() }, &ns)
            .await
            .map_err(ConsoleError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => {
            Ok(ctx
                .done(path(&draft.account, &draft.name), format!("Namespace {}.{} created", draft.name, draft.account)))
        }
        Err(e) => Ok(Reply::Page(form(&draft, Some(&e), ctx.csrf()))),
    }
}

async fn detail(ctx: &Ctx<'_>, account: &str, name: &str) -> Result<Reply, ConsoleError> {
    let api: Api<Namespace> = Api::namespaced(ctx.client(), account);
    let ns = api
        .get_opt(name)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no Namespace {name} in account {account}")))?;
    let mut page = Page::new(format!("Namespace {name}.{account}"), AREA);
    let body =
        format!("{}{}", detail_body(ctx, &ns).await, events_table(ctx.client(), account, "Namespace", name).await);
    page.live = Some((Watch::Namespace { account: account.into(), name: name.into() }.source(), body));
    if ctx.viewer.can_named("delete", Kind::Namespace, Some(account), Some(name)).await {
        page.after = format!(
            r#"<div class="actions"><a class="button danger" href="{}/delete">Delete…</a></div>"#,
            path(account, name)
        );
    }
    Ok(Reply::Page(page))
}

async fn detail_body(ctx: &Ctx<'_>, ns: &Namespace) -> String {
    let status = ns.status.clone().unwrap_or_default();
    let spec = &ns.spec;
    let deleting = ns.metadata.deletion_timestamp.is_some();
    let cell = status
        .assigned_cell
        .as_deref()
        .map_or_else(|| "-".into(), |c| format!(r#"<a href="/cells#cell-{}">{}</a>"#, esc(c), esc(c)));
    let mtls = if spec.mtls.accepted_client_ca.is_some() {
        "accepts clients of its own CA"
    } else {
        "client certificate issued by cellplane"
    };
    let secrets = status.secrets.clone().unwrap_or_default();
    let secret_names: Vec<String> = [secrets.client_certificate, secrets.client_ca, secrets.database_credentials]
        .into_iter()
        .flatten()
        .map(|s| format!("<code>{}</code>", esc(&s)))
        .collect();
    let mut out = facts(&[
        ("Phase", html::phase_badge(if deleting { Some("Deleting".into()) } else { phase(ns) }.as_deref())),
        ("Region", esc(&spec.region)),
        ("Tier", esc(&format!("{:?}", spec.placement.tier).to_lowercase())),
        ("Cell", cell),
        ("Endpoint", format!("<code>{}</code>", or_dash(status.endpoint.as_deref()))),
        ("mTLS", mtls.into()),
        ("Secrets (names only)", if secret_names.is_empty() { "-".into() } else { secret_names.join(", ") }),
        ("Created", html::time_ago(ns.metadata.creation_timestamp.as_ref())),
    ]);
    out.push_str(&steps(&status.conditions, ns.metadata.generation));
    if let Some(workflow) = &status.workflow {
        out.push_str(&super::workflows::status_block(ctx, workflow));
    }
    out.push_str(&html::conditions_table(&status.conditions));
    out
}

/// The provisioning steps in order, each green once its condition is True for this generation.
fn steps(all: &[crate::api::conditions::Condition], generation: Option<i64>) -> String {
    let mut out = String::from(r#"<h2 id="steps">Provisioning</h2><ol class="steps" aria-labelledby="steps">"#);
    for step in NAMESPACE_STEPS.iter().chain([&types::READY]) {
        let condition = conditions::find(all, step);
        let (class, state) = match condition {
            Some(c) if c.is_true_for(generation) => ("ok", "done"),
            Some(c) if c.status == ConditionStatus::False => ("bad", "failed"),
            Some(c) if c.reason == "InProgress" => ("wait", "in progress"),
            _ => ("wait", "waiting"),
        };
        let detail = condition
            .map(|c| if c.message.is_empty() { c.reason.clone() } else { c.message.clone() })
            .unwrap_or_default();
        let _ = write!(
            out,
            r#"<li class="{class}" data-step="{step}" data-state="{state}"><span class="name">{step}</span><span class="badge {class}">{state}</span><p class="hint">{}</p></li>"#,
            esc(&detail)
        );
    }
    out.push_str("</ol>");
    out
}

async fn confirm_delete(ctx: &Ctx<'_>, account: &str, name: &str) -> Result<Reply, ConsoleError> {
    let mut page = Page::new(format!("Delete {name}.{account}?"), AREA);
    page.before = format!(
        r#"<form method="post" action="{}/delete" class="card narrow">{}
<p>Deleting the Namespace tears the tenant down: its route, certificates and Secrets, database and role, and the capacity it holds in its cell. This cannot be undone.</p>
<label for="confirm">Type <code>{}</code> to confirm</label><input id="confirm" name="confirm" required autocomplete="off">
<div class="actions"><button type="submit" class="danger" id="confirm-delete">Delete</button><a class="button" href="{}">Cancel</a></div></form>"#,
        path(account, name),
        html::csrf_field(ctx.csrf()),
        esc(name),
        path(account, name)
    );
    Ok(Reply::Page(page))
}

async fn delete(ctx: &Ctx<'_>, account: &str, name: &str) -> Result<Reply, ConsoleError> {
    if ctx.request.field("confirm").trim() != name {
        ctx.session.flash(true, format!("Not deleted: type {name} to confirm"));
        return Ok(Reply::Redirect(format!("{}/delete", path(account, name))));
    }
    let api: Api<Namespace> = Api::namespaced(ctx.client(), account);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(ctx.done(path(account, name), format!("Deleting {name}.{account}: its teardown runs now"))),
        Err(e) => Ok(ctx.failed(path(account, name), &e.into())),
    }
}
