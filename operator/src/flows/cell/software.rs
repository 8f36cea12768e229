//! The cell's software, as durable steps of its entity workflow: the release of a version
//! rendered once (journaled, so a replay never renders differently), its objects applied in
//! order one step each, what the previous release had and this one lacks pruned, then a wait
//! until it is healthy; on an interval, hand edits found and applied again; on teardown, every
//! object removed before the cluster goes.

use std::time::{Duration, Instant};

use cellplane_workflows::{StepError, WfError};
use serde::{Deserialize, Serialize};

use super::Entity;
use crate::api::cell::{CellRelease, DriftStatus, ReleaseHealth};
use crate::api::common::time_ms;
use crate::cell::release::{ObjectRef, stale};
use crate::cell::{CellError, ReleaseCheck, ReleaseRequest, RenderedRelease};
use crate::cloud::CloudError;
use crate::flows::call_retry;

/// How often a health wait asks the cell's cluster.
const HEALTH_POLL: Duration = Duration::from_secs(2);
/// How long one attempt at removing a release's objects waits for them to go.
const REMOVAL_WAIT: Duration = Duration::from_secs(120);

/// The release a cell runs (or was last asked to run).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstalledRelease {
    pub rendered: RenderedRelease,
    /// What may be in the cell's cluster and is cellplane's: what was applied, and until the
    /// previous release's leftovers are pruned, those too.
    pub inventory: Vec<String>,
    pub health: ReleaseHealth,
    /// The unhealthy objects and why, or what a prune left alone.
    pub message: Option<String>,
    pub drift: Option<DriftStatus>,
}

impl InstalledRelease {
    pub fn is_healthy(&self) -> bool {
        self.health == ReleaseHealth::Healthy
    }

    /// How status shows it.
    pub fn status(&self) -> CellRelease {
        CellRelease {
            version: self.rendered.version.clone(),
            name: self.rendered.name.clone(),
            health: self.health,
            message: self.message.clone(),
            inventory: self.inventory.iter().take(crate::api::cell::MAX_INVENTORY).cloned().collect(),
            drift: self.drift.clone(),
        }
    }
}

/// The inventory entries of `a` and those of `b` that are not the same objects.
fn union(a: &[String], b: &[String]) -> Vec<String> {
    let parsed: Vec<ObjectRef> = a.iter().filter_map(|t| t.parse().ok()).collect();
    let more = b.iter().filter(|t| t.parse::<ObjectRef>().is_ok_and(|r| !parsed.iter().any(|p| p.same_object(&r))));
    a.iter().chain(more).cloned().collect()
}

/// The entries of `previous` that `current` lacks.
fn stale_entries(previous: &[String], current: &[String]) -> Vec<String> {
    let parse = |list: &[String]| list.iter().filter_map(|t| t.parse().ok()).collect::<Vec<ObjectRef>>();
    stale(&parse(previous), &parse(current)).iter().map(ToString::to_string).collect()
}

fn step_failure(error: WfError) -> Result<String, WfError> {
    match error {
        WfError::Step { error, .. } => Ok(error.message),
        other => Err(other),
    }
}

impl Entity<'_> {
    /// Once per cell: lets the operator's identity administer the cell's cluster, as the
    /// release's cluster-scoped objects (CRDs, namespaces) need (an EKS access entry on AWS).
    async fn grant_cluster_access(&mut self) -> Result<(), WfError> {
        if self.state.cluster_access_granted {
            return Ok(());
        }
        let (cloud, scope, cluster) = (&self.deps.cloud, &self.scope, self.cluster_id());
        let cluster = cluster.as_str();
        self.ctx
            .step("grant-cluster-access")
            .retry(call_retry())
            .run(|key| async move {
                cloud.grant_cluster_access(&Self::key(&key), scope, cluster).await.map_err(CloudError::into_step)
            })
            .await?;
        self.state.cluster_access_granted = true;
        Ok(())
    }

    /// Installs the release of `version`: Ok(Err(why)) when it cannot be installed or is not
    /// healthy within its timeout (the cell then keeps what it applied, to prune later).
    pub(super) async fn install_release(&mut self, version: &str) -> Result<Result<(), String>, WfError> {
        if let Err(error) = self.grant_cluster_access().await {
            return step_failure(error).map(Err);
        }
        let rendered = match self.render_release(version).await {
            Ok(rendered) => rendered,
            Err(error) => return step_failure(error).map(Err),
        };
        let previous = self.state.release.take().map(|r| r.inventory).unwrap_or_default();
        self.state.release =
            Some(InstalledRelease { rendered: rendered.clone(), inventory: previous.clone(), ..Default::default() });
        self.publish(|_| {}).await?;
        let mut applied = Vec::new();
        for (index, object) in rendered.objects.iter().enumerate() {
            match self.apply_object(version, index, object, rendered.force).await {
                Ok(entry) => applied.push(entry),
                Err(error) => {
                    let why = step_failure(error)?;
                    self.record(|r| {
                        r.inventory = union(&previous, &applied);
                        r.health = ReleaseHealth::Failed;
                        r.message = Some(why.clone());
                    });
                    self.publish(|_| {}).await?;
                    return Ok(Err(why));
                }
            }
        }
        self.record(|r| r.inventory = union(&applied, &previous));
        let kept = self.prune(&format!("prune-{version}"), &stale_entries(&previous, &applied)).await?;
        self.record(|r| {
            r.inventory = applied.clone();
            r.message = (!kept.is_empty()).then(|| format!("left alone: {}", kept.join("; ")));
        });
        self.publish(|_| {}).await?;
        let check = self.wait_healthy(version, &applied, rendered.health_timeout_ms).await?;
        self.record(|r| {
            r.health = if check.healthy { ReleaseHealth::Healthy } else { ReleaseHealth::Failed };
            if !check.healthy {
                r.message = Some(check.report.clone());
            }
        });
        self.schedule_drift_check().await?;
        self.publish(|_| {}).await?;
        Ok(if check.healthy { Ok(()) } else { Err(format!("release {version} is not healthy: {}", check.report)) })
    }

    fn record(&mut self, update: impl FnOnce(&mut InstalledRelease)) {
        if let Some(release) = self.state.release.as_mut() {
            update(release);
        }
    }

    /// The Release of `version` rendered for this cell, once. A version that no Release has is
    /// waited for (GitOps may create it after the ring or the Cell that names it).
    async fn render_release(&self, version: &str) -> Result<RenderedRelease, WfError> {
        let (deps, cell) = (self.deps, self.context());
        let kubernetes_version = self.state.cluster.as_ref().map(|c| c.kubernetes_version.clone()).unwrap_or_default();
        let (cell, kubernetes_version) = (&cell, kubernetes_version.as_str());
        self.ctx
            .step(format!("render-release-{version}"))
            .retry(call_retry())
            .run(|_| async move {
                let release = deps.fleet.release(version).map_err(StepError::blocked)?;
                let request = ReleaseRequest {
                    name: kube::ResourceExt::name_any(release.as_ref()),
                    spec: release.spec.clone(),
                    kubernetes_version: kubernetes_version.to_string(),
                };
                deps.services.render_release(cell, &request).await.map_err(CellError::into_step)
            })
            .await
    }

    async fn apply_object(
        &self,
        version: &str,
        index: usize,
        object: &serde_json::Value,
        force: bool,
    ) -> Result<String, WfError> {
        let (services, cell) = (&self.deps.services, self.context());
        let cell = &cell;
        let kind = object["kind"].as_str().unwrap_or("object").to_lowercase();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        self.ctx
            .step(format!("apply-{version}-{index:02}-{kind}-{name}"))
            .retry(call_retry())
            .run(|_| async move { services.apply_release_object(cell, object, force).await.map_err(CellError::into_step) })
            .await
    }

    /// Deletes `stale` entries that are cellplane's, waiting for them to go; returns what was
    /// left alone, with why.
    async fn prune(&self, step: &str, stale: &[String]) -> Result<Vec<String>, WfError> {
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let (services, cell) = (&self.deps.services, self.context());
        let cell = &cell;
        self.ctx
            .step(step)
            .retry(call_retry())
            .run(|_| async move {
                let deadline = Instant::now() + REMOVAL_WAIT;
                loop {
                    let pruned = services.prune_release(cell, stale).await.map_err(CellError::into_step)?;
                    if pruned.done {
                        return Ok(pruned.kept);
                    }
                    if Instant::now() > deadline {
                        return Err(StepError::waiting("the release's objects are still being deleted"));
                    }
                    tokio::time::sleep(HEALTH_POLL).await;
                }
            })
            .await
    }

    /// Waits until the objects are healthy, one has failed for good, or `timeout_ms` passed.
    async fn wait_healthy(
        &self,
        version: &str,
        inventory: &[String],
        timeout_ms: u64,
    ) -> Result<ReleaseCheck, WfError> {
        let (services, cell) = (&self.deps.services, self.context());
        let cell = &cell;
        self.ctx
            .step(format!("wait-release-{version}"))
            .retry(call_retry())
            .run(|_| async move {
                let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                loop {
                    let check = services.check_release(cell, inventory).await.map_err(CellError::into_step)?;
                    if check.healthy || check.failed {
                        return Ok(check);
                    }
                    if Instant::now() > deadline {
                        let report = format!(
                            "not healthy within {}: {}",
                            humantime::format_duration(Duration::from_millis(timeout_ms)),
                            check.report
                        );
                        return Ok(ReleaseCheck { report, ..check });
                    }
                    tokio::time::sleep(HEALTH_POLL).await;
                }
            })
            .await
    }

    /// When the next drift check is due, from now.
    async fn schedule_drift_check(&mut self) -> Result<(), WfError> {
        let interval = self.state.release.as_ref().map_or(0, |r| r.rendered.drift_interval_ms);
        self.state.next_drift_ms = match interval {
            0 => None,
            ms => Some(self.now_ms().await? + ms as i64),
        };
        Ok(())
    }

    /// Finds the objects changed by hand since they were applied, and applies them again
    /// (taking back the fields the edit took).
    pub(super) async fn check_drift(&mut self) -> Result<(), WfError> {
        let Some(release) = self.state.release.clone() else { return Ok(()) };
        self.state.drift_checks += 1;
        let check = self.state.drift_checks;
        let (services, cell) = (&self.deps.services, self.context());
        let (cell, objects) = (&cell, release.rendered.objects.as_slice());
        let drifted = self
            .ctx
            .step(format!("check-drift-{check}"))
            .retry(call_retry())
            .run(|_| async move { services.release_drift(cell, objects).await.map_err(CellError::into_step) })
            .await?;
        for (index, _) in &drifted {
            let Some(object) = objects.get(*index) else { continue };
            let step = format!("correct-drift-{check}-{index:02}");
            self.ctx
                .step(step)
                .retry(call_retry())
                .run(|_| async move {
                    services.apply_release_object(cell, object, true).await.map_err(CellError::into_step)
                })
                .await?;
        }
        let at = self.now_ms().await?;
        self.record(|r| {
            r.drift = Some(DriftStatus {
                checked_at: time_ms(at),
                corrected: drifted.iter().map(|(_, what)| what.clone()).collect(),
            });
        });
        self.schedule_drift_check().await?;
        self.publish(|_| {}).await
    }

    /// Removes the release's objects from the cell's cluster, before the cluster goes.
    pub(super) async fn remove_release(&mut self) -> Result<(), WfError> {
        let Some(release) = self.state.release.clone() else { return Ok(()) };
        self.prune("remove-release", &release.inventory).await?;
        self.state.release = None;
        Ok(())
    }
}
