//! The Release controller: a Release needs no workflow of its own (the cells install it), so its
//! reconcile only reports, from the fleet: whether its version is its own (two Releases of one
//! version stall both, since neither can be chosen) and which cells run it, and how many of them
//! healthily. It runs on every change to a Release or a Cell.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::context::Context;
use super::driver::World;
use super::error::ReconcileError;
use super::runner::{controller_for, drain_until_shutdown, error_policy};
use super::status;
use crate::api::cell::{Cell, ReleaseHealth};
use crate::api::conditions::{self, Stall};
use crate::api::release::{MAX_LISTED_CELLS, RELEASE_CONDITIONS, Release, ReleaseStatus};
use crate::flows::fleet::release_of;

const KIND: &str = "Release";

pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api: Api<Release> = Api::all(ctx.client.clone());
    let controller = controller_for(api, ctx.watch_config());
    let (store, releases) = (controller.store(), controller.store());
    let every_release = move || releases.state().iter().map(|r| ObjectRef::from(r.as_ref())).collect::<Vec<_>>();
    let results = controller
        .watches(Api::<Cell>::all(ctx.client.clone()), ctx.watch_config(), move |_| every_release())
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx);
    drain_until_shutdown(store, results, shutdown).await;
}

async fn reconcile(release: Arc<Release>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let span = tracing::info_span!("reconcile", kind = KIND, name = %release.name_any());
    let result = async {
        let report = report(&release, &ctx.world());
        let api: Api<Release> = Api::all(ctx.client.clone());
        status::apply(&api, release.as_ref(), release.status.as_ref(), &report).await
    }
    .instrument(span)
    .await;
    ctx.metrics.count(KIND, result.is_ok());
    result.map(|()| Action::requeue(Duration::from_secs(600)))
}

/// A Release's status from the fleet.
pub fn report(release: &Release, world: &World) -> ReleaseStatus {
    let generation = release.metadata.generation;
    let version = &release.spec.version;
    let mut running: Vec<(String, bool)> = world
        .cells
        .iter()
        .filter_map(|cell| {
            let running = cell.status.as_ref()?.release.as_ref().filter(|r| &r.version == version)?;
            Some((cell.name_any(), running.health == ReleaseHealth::Healthy))
        })
        .collect();
    running.sort();
    let stall = match release_of(&world.releases, version) {
        Err(refusal) if !refusal.starts_with(crate::flows::fleet::NO_RELEASE) => {
            Some(Stall { reason: "DuplicateVersion".into(), message: refusal })
        }
        _ => None,
    };
    let now = world.time();
    let mut conditions = release.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    conditions::init_conditions(&mut conditions, RELEASE_CONDITIONS, generation, &now);
    conditions::set_summary(&mut conditions, &[], generation, stall.as_ref(), &now);
    ReleaseStatus {
        observed_generation: generation,
        conditions,
        cell_count: running.len() as i32,
        healthy_cells: running.iter().filter(|(_, healthy)| *healthy).count() as i32,
        cells: running.into_iter().map(|(name, _)| name).take(MAX_LISTED_CELLS).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::{from_yaml, release, world};

    const RUNNING_1_1: &str = "apiVersion: cellplane.io/v1alpha1\nkind: Cell\nmetadata: {name: eu-1}\n\
        spec: {provider: sim, region: eu, network: {cidr: 10.0.0.0/16}, cluster: {kubernetesVersion: '1.33', nodePools: []}, \
        capacity: {maxNamespaces: 5}, version: 1.0.0, ingress: {domain: example.com}}\n\
        status: {release: {version: 1.1.0, name: service-1.1.0, health: Healthy}}\n";

    #[test]
    fn a_release_names_the_cells_that_run_it_and_how_many_are_healthy() {
        let world = world(&[RUNNING_1_1, &RUNNING_1_1.replace("eu-1", "eu-2").replace("Healthy", "Failed")], &[]);
        let status = report(&release("1.1.0"), &world);
        assert_eq!(
            (status.cell_count, status.healthy_cells, status.cells.clone()),
            (2, 1, vec!["eu-1".into(), "eu-2".into()])
        );
        assert!(conditions::is_true(&status.conditions, conditions::types::READY));
        assert_eq!(report(&release("1.0.0"), &world).cell_count, 0);
    }

    #[test]
    fn two_releases_of_one_version_both_stall_naming_each_other() {
        let mut world = world(&[], &[]);
        let twin: Release =
            from_yaml(&serde_norway::to_string(&release("1.1.0")).unwrap().replace("service-1.1.0", "twin"));
        world.releases.push(Arc::new(twin.clone()));
        let status = report(&twin, &world);
        let stalled = conditions::find(&status.conditions, conditions::types::STALLED).unwrap();
        assert_eq!(stalled.reason, "DuplicateVersion");
        assert!(stalled.message.contains("service-1.1.0") && stalled.message.contains("twin"), "{}", stalled.message);
    }
}
