//! Choosing a cell for a namespace: pure functions over what the fleet knows.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::fleet::{CellEntry, RingEntry};
use crate::api::namespace::{Placement, TenantId, Tier};

/// Cells with this label value may hold critical-tier namespaces.
pub const TIER_LABEL: &str = "cellplane.io/tier";

/// Capacity units a namespace of `tier` takes.
pub fn units(tier: Tier) -> i32 {
    match tier {
        Tier::Standard => 1,
        Tier::Critical => 4,
    }
}

/// A cell that could take the namespace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    pub cell: String,
    pub workflow_id: String,
}

/// The namespace being placed, as placement needs it.
#[derive(Clone, Debug)]
pub struct Applicant<'a> {
    /// Its identity `<name>.<account>`.
    pub id: String,
    pub region: &'a str,
    pub placement: &'a Placement,
    /// The operator's own probe tenant.
    pub synthetic: bool,
}

/// Eligible cells for `tenant`, least loaded first; or why every cell was refused. A cell in a
/// ring holds only what the ring admits. Tenants of other tiers go to cells labelled critical
/// only when no other cell can take them, so the critical cells' capacity stays for the critical
/// tenants that can live nowhere else.
///
/// Equally loaded cells are ordered by a hash of tenant and cell, so namespaces created together
/// spread over the cells instead of all asking the same cell first and queueing behind it.
pub fn rank(cells: &[CellEntry], tenant: &Applicant) -> Result<Vec<Candidate>, String> {
    let placement = tenant.placement;
    let mut eligible = Vec::new();
    let mut refusals = Refusals::default();
    let mut provisioning = Vec::new();
    for entry in cells {
        match refuse(entry, tenant) {
            Some(reason) => {
                if reason == NOT_PROVISIONED && !spends_critical_capacity(entry, placement) {
                    provisioning.push(entry.name.as_str());
                }
                refusals.add(&entry.name, reason);
            }
            None => eligible.push(((spends_critical_capacity(entry, placement), load(entry)), entry)),
        }
    }
    // A cell of its own still being provisioned will take this tenant soon: wait for it rather
    // than spend a critical cell's capacity now.
    if !provisioning.is_empty() {
        let kept = format!("kept for critical tenants while {} is provisioned", provisioning.join(", "));
        eligible.retain(|((critical, _), entry)| {
            if *critical {
                refusals.add(&entry.name, kept.clone());
            }
            !critical
        });
    }
    if eligible.is_empty() {
        if refusals.is_empty() {
            return Err("no cells exist".into());
        }
        return Err(refusals.to_string());
    }
    eligible.sort_by(|((ca, la), ea), ((cb, lb), eb)| {
        ca.cmp(cb).then_with(|| la.total_cmp(lb)).then_with(|| spread(&tenant.id, ea).cmp(&spread(&tenant.id, eb)))
    });
    Ok(eligible
        .into_iter()
        .map(|(_, entry)| Candidate { cell: entry.name.clone(), workflow_id: entry.workflow_id.clone() })
        .collect())
}

/// Why the cell's ring does not admit the tenant, if it does not.
fn not_admitted(ring: &RingEntry, tenant: &Applicant) -> Option<String> {
    let admits = &ring.admits;
    if tenant.synthetic {
        return None;
    }
    if admits.synthetic_only {
        return Some(format!("in ring {}, which admits only synthetic tenants", ring.name));
    }
    if let Some(max) = admits.max_priority
        && tenant.placement.priority > max
    {
        return Some(format!("in ring {}, which admits priorities up to {max}", ring.name));
    }
    if let Some(tiers) = &admits.tiers
        && !tiers.contains(&tenant.placement.tier)
    {
        let names: Vec<&str> = tiers.iter().map(|t| t.as_str()).collect();
        return Some(format!("in ring {}, which admits tiers {}", ring.name, names.join(", ")));
    }
    None
}

/// Why cells were refused, grouped by reason so that a fleet of hundreds of cells still gives
/// a message a person can read (and a status that stays small): `a, b and 98 more: cordoned`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Reasons in the order first seen, each with the cells refused for it.
    groups: Vec<(String, Vec<String>)>,
}

impl Refusals {
    /// Cells named per reason, and reasons shown, before the rest is counted instead.
    const NAMED: usize = 3;
    const REASONS: usize = 6;

    pub fn add(&mut self, cell: &str, reason: String) {
        match self.groups.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, cells)) => cells.push(cell.to_string()),
            None => self.groups.push((reason, vec![cell.to_string()])),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

impl std::fmt::Display for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (reason, cells)) in self.groups.iter().take(Self::REASONS).enumerate() {
            let separator = if i == 0 { "" } else { "; " };
            let named = cells[..cells.len().min(Self::NAMED)].join(", ");
            match cells.len().saturating_sub(Self::NAMED) {
                0 => write!(f, "{separator}{named}: {reason}")?,
                more => write!(f, "{separator}{named} and {more} more: {reason}")?,
            }
        }
        let unshown: usize = self.groups.iter().skip(Self::REASONS).map(|(_, cells)| cells.len()).sum();
        if unshown > 0 {
            write!(f, "; {unshown} more for other reasons")?;
        }
        Ok(())
    }
}

/// The tie-break between equally loaded cells: stable for a tenant, different across tenants.
fn spread(tenant: &str, entry: &CellEntry) -> u64 {
    let mut hasher = DefaultHasher::new();
    (tenant, &entry.name).hash(&mut hasher);
    hasher.finish()
}

/// Why a cell that will soon take tenants is refused now.
pub const NOT_PROVISIONED: &str = "not provisioned yet";

fn spends_critical_capacity(entry: &CellEntry, placement: &Placement) -> bool {
    placement.tier != Tier::Critical && entry.labels.get(TIER_LABEL).map(String::as_str) == Some("critical")
}

fn load(entry: &CellEntry) -> f64 {
    f64::from(entry.used.namespaces) / f64::from(entry.max_namespaces.max(1))
}

fn refuse(entry: &CellEntry, tenant: &Applicant) -> Option<String> {
    let (region, placement) = (tenant.region, tenant.placement);
    if placement.cell.as_ref().is_some_and(|pinned| pinned != &entry.name) {
        return Some("not the cell in spec.placement.cell".into());
    }
    if entry.region != region {
        return Some(format!("in region {}", entry.region));
    }
    if entry.cordoned {
        return Some("cordoned".into());
    }
    if !entry.provisioned {
        return Some(NOT_PROVISIONED.into());
    }
    if let Some(refusal) = entry.ring.as_ref().and_then(|ring| not_admitted(ring, tenant)) {
        return Some(refusal);
    }
    if placement.tier == Tier::Critical && entry.labels.get(TIER_LABEL).map(String::as_str) != Some("critical") {
        return Some(format!("not labelled {TIER_LABEL}=critical"));
    }
    if let Some(selector) = &placement.cell_selector
        && !selector_matches(selector, &entry.labels)
    {
        return Some("labels do not match the cell selector".into());
    }
    let (namespaces, units_used) = (entry.used.namespaces, entry.used.units);
    if namespaces >= entry.max_namespaces {
        return Some(format!("full ({namespaces}/{} namespaces)", entry.max_namespaces));
    }
    if let Some(max_units) = entry.max_units
        && units_used + units(placement.tier) > max_units
    {
        return Some(format!("full ({units_used}/{max_units} units)"));
    }
    None
}

/// The cells a ring's selector picks, sorted by name (the order its batches take them).
pub fn ring_cells<'a>(ring: &crate::api::DeploymentRing, cells: &'a [crate::api::Cell]) -> Vec<&'a crate::api::Cell> {
    use kube::ResourceExt;
    let mut selected: Vec<&crate::api::Cell> =
        cells.iter().filter(|c| selector_matches(&ring.spec.cell_selector, c.labels())).collect();
    selected.sort_by_key(|c| c.name_any());
    selected
}

/// Whether `labels` match a Kubernetes label selector (matchLabels and matchExpressions).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match =
        selector.match_labels.iter().flatten().all(|(key, value)| labels.get(key).is_some_and(|v| v == value));
    let expressions_match = selector.match_expressions.iter().flatten().all(|expr| {
        let values = expr.values.as_deref().unwrap_or_default();
        let value = labels.get(&expr.key);
        match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

/// The endpoint hostname from a template with `{namespace}`, `{account}`, `{cell}`, `{region}`,
/// `{domain}`.
pub fn render_hostname(template: &str, tenant: &TenantId, cell: &str, region: &str, domain: &str) -> String {
    template
        .replace("{namespace}", &tenant.name)
        .replace("{account}", &tenant.account)
        .replace("{cell}", cell)
        .replace("{region}", region)
        .replace("{domain}", domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cell::{CapacityUsage, IngressSpec};
    use crate::api::ring::Admission;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn cell(name: &str, region: &str, used: i32, max: i32) -> CellEntry {
        CellEntry {
            name: name.into(),
            workflow_id: format!("cell/{name}/uid"),
            region: region.into(),
            labels: BTreeMap::new(),
            cordoned: false,
            max_namespaces: max,
            max_units: None,
            ingress: IngressSpec { domain: "example.com".into(), ..IngressSpec::default() },
            database: None,
            used: CapacityUsage { namespaces: used, units: used },
            provisioned: true,
            ring: None,
        }
    }

    fn applicant<'a>(id: &str, region: &'a str, placement: &'a Placement) -> Applicant<'a> {
        Applicant { id: id.into(), region, placement, synthetic: false }
    }

    fn names(ranked: Vec<Candidate>) -> Vec<String> {
        ranked.into_iter().map(|c| c.cell).collect()
    }

    #[test]
    fn least_loaded_cell_of_the_region_comes_first() {
        let cells = vec![cell("a", "eu", 5, 10), cell("b", "eu", 1, 10), cell("c", "us", 0, 10)];
        assert_eq!(names(rank(&cells, &applicant("t", "eu", &Placement::default())).unwrap()), ["b", "a"]);
    }

    #[test]
    fn tenants_created_together_spread_over_equally_loaded_cells() {
        let cells: Vec<_> = (0..10).map(|i| cell(&format!("c{i}"), "eu", 0, 10)).collect();
        let first_choices: std::collections::BTreeSet<String> = (0..100)
            .map(|i| {
                names(rank(&cells, &applicant(&format!("tenant-{i}"), "eu", &Placement::default())).unwrap()).remove(0)
            })
            .collect();
        assert!(first_choices.len() >= 8, "100 tenants chose only {first_choices:?}");
        let again = names(rank(&cells, &applicant("tenant-7", "eu", &Placement::default())).unwrap());
        assert_eq!(again, names(rank(&cells, &applicant("tenant-7", "eu", &Placement::default())).unwrap()));
    }

    #[test]
    fn full_cordoned_and_unprovisioned_cells_are_refused_with_reasons() {
        let mut cordoned = cell("b", "eu", 0, 10);
        cordoned.cordoned = true;
        let mut fresh = cell("c", "eu", 0, 10);
        fresh.provisioned = false;
        let cells = vec![cell("a", "eu", 10, 10), cordoned, fresh];
        let refusal = rank(&cells, &applicant("t", "eu", &Placement::default())).unwrap_err();
        assert_eq!(refusal, "a: full (10/10 namespaces); b: cordoned; c: not provisioned yet");
    }

    #[test]
    fn refusals_of_a_large_fleet_are_grouped_by_reason() {
        let mut cells: Vec<_> = (0..100).map(|i| cell(&format!("c{i:02}"), "us", 0, 10)).collect();
        cells.extend((0..100).map(|i| {
            let mut c = cell(&format!("d{i:02}"), "eu", 0, 10);
            c.provisioned = false;
            c
        }));
        let refusal = rank(&cells, &applicant("t", "eu", &Placement::default())).unwrap_err();
        assert_eq!(refusal, "c00, c01, c02 and 97 more: in region us; d00, d01, d02 and 97 more: not provisioned yet");
    }

    #[test]
    fn critical_tier_needs_a_labelled_cell_and_units() {
        let mut labelled = cell("b", "eu", 0, 10);
        labelled.labels.insert(TIER_LABEL.into(), "critical".into());
        let cells = vec![cell("a", "eu", 0, 10), labelled.clone()];
        let critical = Placement { tier: Tier::Critical, ..Placement::default() };
        assert_eq!(names(rank(&cells, &applicant("t", "eu", &critical)).unwrap()), ["b"]);
        labelled.max_units = Some(3);
        assert!(rank(&[labelled], &applicant("t", "eu", &critical)).unwrap_err().contains("units"));
    }

    #[test]
    fn other_tiers_use_a_critical_cell_only_when_no_other_cell_can_take_them() {
        let mut critical = cell("a", "eu", 0, 10);
        critical.labels.insert(TIER_LABEL.into(), "critical".into());
        let cells = vec![critical.clone(), cell("b", "eu", 9, 10)];
        assert_eq!(names(rank(&cells, &applicant("t", "eu", &Placement::default())).unwrap()), ["b", "a"]);
        assert_eq!(names(rank(&[critical.clone()], &applicant("t", "eu", &Placement::default())).unwrap()), ["a"]);
        let mut provisioning = cell("c", "eu", 0, 10);
        provisioning.provisioned = false;
        let refusal = rank(&[critical, provisioning], &applicant("t", "eu", &Placement::default())).unwrap_err();
        assert_eq!(refusal, "c: not provisioned yet; a: kept for critical tenants while c is provisioned");
    }

    #[test]
    fn a_ring_admits_what_it_says() {
        let ring = |admits: Admission| RingEntry { name: "ring-0".into(), admits };
        let mut canary = cell("canary", "eu", 0, 10);
        canary.ring = Some(ring(Admission { synthetic_only: true, ..Admission::default() }));
        let standard = Placement::default();
        let refusal = rank(std::slice::from_ref(&canary), &applicant("t", "eu", &standard)).unwrap_err();
        assert_eq!(refusal, "canary: in ring ring-0, which admits only synthetic tenants");
        let probe = Applicant { synthetic: true, ..applicant("probe", "eu", &standard) };
        assert_eq!(names(rank(std::slice::from_ref(&canary), &probe).unwrap()), ["canary"]);

        canary.ring = Some(ring(Admission {
            max_priority: Some(300),
            tiers: Some(vec![Tier::Standard]),
            ..Admission::default()
        }));
        let urgent = Placement { priority: 900, ..Placement::default() };
        let refusal = rank(std::slice::from_ref(&canary), &applicant("t", "eu", &urgent)).unwrap_err();
        assert_eq!(refusal, "canary: in ring ring-0, which admits priorities up to 300");
        canary.labels.insert(TIER_LABEL.into(), "critical".into());
        let critical = Placement { tier: Tier::Critical, ..Placement::default() };
        let refusal = rank(std::slice::from_ref(&canary), &applicant("t", "eu", &critical)).unwrap_err();
        assert_eq!(refusal, "canary: in ring ring-0, which admits tiers standard");
        assert_eq!(names(rank(&[canary], &applicant("t", "eu", &standard)).unwrap()), ["canary"]);
    }

    #[test]
    fn a_pinned_namespace_goes_to_its_cell_only() {
        let cells = vec![cell("a", "eu", 0, 10), cell("b", "eu", 9, 10)];
        let pinned = Placement { cell: Some("b".into()), ..Placement::default() };
        assert_eq!(names(rank(&cells, &applicant("t", "eu", &pinned)).unwrap()), ["b"]);
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [("ring".to_string(), "canary".to_string())].into();
        let by_label = LabelSelector { match_labels: Some(labels.clone()), ..Default::default() };
        assert!(selector_matches(&by_label, &labels));
        assert!(!selector_matches(&by_label, &BTreeMap::new()));
        let not_in = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "ring".into(),
                operator: "NotIn".into(),
                values: Some(vec!["canary".into()]),
            }]),
            ..Default::default()
        };
        assert!(!selector_matches(&not_in, &labels));
        assert!(selector_matches(&not_in, &BTreeMap::new()));
        assert!(selector_matches(&LabelSelector::default(), &labels));
    }

    #[test]
    fn hostnames_render_every_placeholder() {
        let tenant = TenantId::new("web", "acme");
        let host =
            render_hostname("{namespace}.{account}.{cell}.{region}.{domain}", &tenant, "c1", "eu", "example.com");
        assert_eq!(host, "web.acme.c1.eu.example.com");
    }
}
