//! Cells run the service's software, on the test control plane (Kubernetes with KWOK nodes,
//! `E2E_KUBECONFIG`): a release of a CRD and one of its custom resources, a ConfigMap, a Service
//! and a Deployment rolls from 1.0.0 to 1.1.0 through two rings, each cell healthy at 1.1.0
//! before the next batch; one whose pods never become ready halts ring 0 and is rolled back; what
//! a version drops is pruned but someone else's object is left alone, named; a crash mid-apply
//! and mid-health-wait writes nothing twice; a chart from a repository served in the test is
//! rendered by the real Helm; a hand edit is found and undone. Sim cells run their releases in
//! the operator's cluster, each in a namespace of its own.

mod charts;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellplane::api::cell::ReleaseHealth;
use cellplane::api::release::{HelmSource, Release};
use cellplane::api::ring::{RingPhase, RollbackPolicy};
use cellplane::api::{Cell, DeploymentRing};
use cellplane::cell::cluster::{ClusterCellServices, ServicesConfig};
use cellplane::cell::tls::SimDataPlane;
use cellplane::cli::rings::describe;
use cellplane::cloud::sim::{SimCloud, SimConfig};
use cellplane::fixtures::{self, cell, ring};
use cellplane::testing::{OperatorSetup, TestCluster, TestOperator, real_kubeconfig};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

const WITHIN: Duration = Duration::from_secs(120);

/// The service at `version`: a CRD and a Widget of it, a ConfigMap `settings` (and `legacy`
/// when `legacy`), a Service and a Deployment of `replicas` whose image is tagged `version`.
fn manifests(legacy: bool) -> String {
    let mut yaml = String::from(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.${group}}\n\
         spec:\n  group: ${group}\n  names: {kind: Widget, plural: widgets, singular: widget}\n  scope: Namespaced\n\
         \x20 versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, \
         x-kubernetes-preserve-unknown-fields: true}}}]\n---\n\
         apiVersion: ${group}/v1\nkind: Widget\nmetadata: {name: front}\nspec: {version: \"${version}\"}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {version: \"${version}\", cell: \"${cell}\"}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: frontend}\n\
         spec: {selector: {app: frontend}, ports: [{port: 443, targetPort: 8443}]}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: frontend}\n\
         spec: {replicas: 2, selector: {matchLabels: {app: frontend}}, template: {metadata: {labels: {app: frontend}}, \
         spec: {containers: [{name: app, image: \"registry.example.com/svc:${version}\"}]}}}\n",
    );
    if legacy {
        yaml.push_str("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: legacy}\ndata: {from: \"${version}\"}\n");
    }
    yaml
}

struct Fleet {
    cluster: Arc<TestCluster>,
    client: Client,
    cloud: Arc<SimCloud>,
    operator: TestOperator,
    /// The release namespace: each cell's objects are in `<namespace>-<cell>`.
    namespace: String,
}

impl Fleet {
    fn setup(cluster: &TestCluster, cloud: &Arc<SimCloud>) -> OperatorSetup {
        let config = ServicesConfig { namespace: cluster.namespace.clone(), ..ServicesConfig::default() };
        let services = Arc::new(ClusterCellServices::new(cluster.client.clone(), config, SimDataPlane::new()));
        OperatorSetup::new(cloud.clone(), services)
    }

    async fn start(cluster: Arc<TestCluster>) -> Fleet {
        cluster.without_test_releases().await.unwrap();
        let cloud = Arc::new(SimCloud::new(SimConfig { latency: Duration::from_millis(5), ..SimConfig::default() }));
        let operator = TestOperator::start(&cluster, Self::setup(&cluster, &cloud)).await;
        let namespace = cluster.name("svc");
        Fleet { client: cluster.client.clone(), cluster, cloud, operator, namespace }
    }

    async fn crash_and_restart(&mut self) {
        self.operator.crash_and_restart(&self.cluster, Self::setup(&self.cluster, &self.cloud)).await;
    }

    /// Publishes the Release of `version` with `manifests`.
    async fn release(&self, version: &str, manifests: String, health_timeout: &str) {
        let mut release = fixtures::release(&self.cluster.name(&format!("svc-{version}")), version);
        release.spec.manifests = Some(manifests);
        release.spec.namespace = self.namespace.clone();
        release.spec.health_timeout = health_timeout.into();
        release.spec.drift_interval = "1h".into();
        release.spec.substitute = BTreeMap::from([("group".into(), format!("w{}.example.com", self.cluster.run))]);
        self.cluster.create(&Api::all(self.client.clone()), release).await.unwrap();
    }

    /// A sim cell in `group` (its ring's label) running `version`.
    async fn cell(&self, base: &str, group: &str, version: &str) -> String {
        let name = self.cluster.name(base);
        let cell = cell(&name, "eu-west-1", &[("cellplane.io/ring", group)], 10, version);
        self.cluster.create(&self.cluster.cells(), cell).await.unwrap();
        name
    }

    async fn cell_until(&self, name: &str, what: &str, check: impl Fn(&Cell) -> bool + Send + 'static) -> Cell {
        match fixtures::wait_for(&self.cluster.cells(), name, what, WITHIN, move |c| c.is_some_and(&check)).await {
            Ok(Some(cell)) => cell,
            other => panic!(
                "cell {name}: {other:?}: {:#?}",
                self.cluster.cells().get(name).await.ok().and_then(|c| c.status)
            ),
        }
    }

    /// Waits until `cell` runs `version` healthily.
    async fn runs(&self, cell: &str, version: &'static str) -> Cell {
        self.cell_until(cell, &format!("running {version}, healthy"), move |c| {
            running(c) == Some((version.to_string(), ReleaseHealth::Healthy))
        })
        .await
    }

    async fn ring_until(&self, name: &str, what: &str, check: impl Fn(&DeploymentRing) -> bool + Send + 'static) {
        let found = fixtures::wait_for(&self.cluster.rings(), name, what, WITHIN, move |r| r.is_some_and(&check)).await;
        if let Err(e) = found {
            panic!("ring {name}: {e}: {:#?}", self.cluster.rings().get(name).await.ok().and_then(|r| r.status));
        }
    }

    fn config_maps(&self, cell: &str) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &format!("{}-{cell}", self.namespace))
    }

    fn deployments(&self, cell: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &format!("{}-{cell}", self.namespace))
    }
}

fn running(cell: &Cell) -> Option<(String, ReleaseHealth)> {
    let release = cell.status.as_ref()?.release.as_ref()?;
    Some((release.version.clone(), release.health))
}

/// Runs `body` on the real cluster with an operator, then removes what the test made.
async fn scenario<F, Fut>(what: &str, body: F)
where
    F: FnOnce(Fleet) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(path) = real_kubeconfig(what) else { return };
    TestCluster::real(&path)
        .await
        .unwrap()
        .scenario(|cluster| async move {
            let fleet = Fleet::start(cluster).await;
            body(fleet).await;
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_rolls_through_two_rings_healthy_in_each_cell_before_the_next_batch() {
    scenario("releases through two rings", |fleet| async move {
        for version in ["1.0.0", "1.1.0"] {
            fleet.release(version, manifests(false), "2m").await;
        }
        let canary = fleet.cell("canary", &fleet.cluster.name("canary"), "1.0.0").await;
        let prod: Vec<String> = vec![
            fleet.cell("prod-a", &fleet.cluster.name("prod"), "1.0.0").await,
            fleet.cell("prod-b", &fleet.cluster.name("prod"), "1.0.0").await,
        ];
        for cell in prod.iter().chain([&canary]) {
            fleet.runs(cell, "1.0.0").await;
        }
        // Each cell's objects as its release made them: the custom resource too.
        let widgets = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(&format!("w{}.example.com", fleet.cluster.run), "v1", "Widget"),
            "widgets",
        );
        let widget = |cell: &str| {
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(fleet.client.clone(), &format!("{}-{cell}", fleet.namespace), &widgets);
            async move { api.get("front").await.unwrap().data["spec"]["version"].clone() }
        };
        assert_eq!(widget(&canary).await, "1.0.0");

        // Ring 1 takes one cell per batch; a batch starts only once the cells of the one before
        // run 1.1.0, healthy: what each batch saw is recorded when it started.
        let (zero, one) = (fleet.cluster.name("zero"), fleet.cluster.name("one"));
        fleet
            .cluster
            .create(&fleet.cluster.rings(), ring(&zero, 0, &fleet.cluster.name("canary"), Some("1.1.0"), "0s"))
            .await
            .unwrap();
        let mut follower = ring(&one, 1, &fleet.cluster.name("prod"), None, "0s");
        follower.spec.pause_between_batches = "0s".into();
        fleet.cluster.create(&fleet.cluster.rings(), follower).await.unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let watch = {
            let (cells, seen, prod) = (fleet.cluster.cells(), seen.clone(), prod.clone());
            tokio::spawn(async move {
                let mut events = watcher(cells, watcher::Config::default()).applied_objects().boxed();
                while let Some(Ok(cell)) = events.next().await {
                    if prod.contains(&cell.name_any()) && running(&cell).is_some_and(|(v, _)| v == "1.1.0") {
                        let healthy = prod.iter().filter(|p| **p != cell.name_any()).count();
                        seen.lock().unwrap().push(format!("{} {:?} others {healthy}", cell.name_any(), running(&cell)));
                    }
                }
            })
        };
        fleet
            .ring_until(&one, "baked 1.1.0", |r| {
                r.status.as_ref().and_then(|s| s.baked_version.as_deref()) == Some("1.1.0")
            })
            .await;
        watch.abort();
        for cell in prod.iter().chain([&canary]) {
            fleet.runs(cell, "1.1.0").await;
            let settings = fleet.config_maps(cell).get("settings").await.unwrap();
            assert_eq!(settings.data.unwrap()["version"], "1.1.0", "{cell}'s objects are at 1.1.0");
            let deployment = fleet.deployments(cell).get("frontend").await.unwrap();
            assert_eq!(deployment.status.and_then(|s| s.available_replicas), Some(2), "{cell}'s pods run");
        }
        assert_eq!(widget(&canary).await, "1.1.0");
        // The second batch's cell moved only after the first one ran 1.1.0 healthily.
        let cells = fleet.cluster.cells();
        let first = cells.get(&prod[0]).await.unwrap();
        let second = cells.get(&prod[1]).await.unwrap();
        assert!(running(&first).is_some() && running(&second).is_some());
        let release_of = |c: &Cell| c.status.clone().and_then(|s| s.release).map(|r| r.version);
        assert_eq!((release_of(&first), release_of(&second)), (Some("1.1.0".into()), Some("1.1.0".into())));
        let seen = seen.lock().unwrap().clone();
        let first_moved = seen.iter().position(|s| s.starts_with(prod[0].as_str()));
        let second_moved = seen.iter().position(|s| s.starts_with(prod[1].as_str()));
        assert!(first_moved < second_moved, "batch order: {seen:#?}");
        // `cellplane rollout status` names each cell's release and its health.
        let every_cell = fleet.cluster.cells().list(&Default::default()).await.unwrap().items;
        let shown = describe(&fleet.cluster.rings().get(&one).await.unwrap(), &every_cell);
        for cell in &prod {
            assert!(shown.contains(&format!("cell {cell}: 1.1.0 Healthy")), "{shown}");
        }
        fleet.operator.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_pods_never_become_ready_halts_ring_zero_and_is_rolled_back() {
    scenario("a broken release rolled back", |fleet| async move {
        fleet.release("1.0.0", manifests(false), "2m").await;
        fleet.release("1.1.0-broken", manifests(false), "15s").await;
        let canary = fleet.cell("canary", &fleet.cluster.name("canary"), "1.0.0").await;
        let prod = fleet.cell("prod", &fleet.cluster.name("prod"), "1.0.0").await;
        fleet.runs(&canary, "1.0.0").await;
        fleet.runs(&prod, "1.0.0").await;
        let (zero, one) = (fleet.cluster.name("zero"), fleet.cluster.name("one"));
        let mut first = ring(&zero, 0, &fleet.cluster.name("canary"), Some("1.1.0-broken"), "0s");
        first.spec.rollback_policy = RollbackPolicy::Automatic;
        fleet.cluster.create(&fleet.cluster.rings(), first).await.unwrap();
        fleet
            .cluster
            .create(&fleet.cluster.rings(), ring(&one, 1, &fleet.cluster.name("prod"), None, "0s"))
            .await
            .unwrap();

        let halted = |r: &DeploymentRing| r.status.as_ref().and_then(|s| s.phase) == Some(RingPhase::Halted);
        fleet.ring_until(&zero, "halted", halted).await;
        let status = fleet.cluster.rings().get(&zero).await.unwrap().status.unwrap();
        let rollback = status.rollback.expect("a rollback");
        assert_eq!(
            rollback.cells.iter().map(|c| (c.cell.clone(), c.version.clone())).collect::<Vec<_>>(),
            [(canary.clone(), "1.0.0".to_string())]
        );
        assert!(
            rollback.reason.contains("not healthy") && rollback.reason.contains("Deployment"),
            "{}",
            rollback.reason
        );
        let back = fleet.runs(&canary, "1.0.0").await;
        assert_eq!(
            fleet.deployments(&canary).get("frontend").await.unwrap().spec.unwrap().template.spec.unwrap().containers
                [0]
            .image
            .as_deref(),
            Some("registry.example.com/svc:1.0.0")
        );
        assert!(
            back.status
                .unwrap()
                .conditions
                .iter()
                .any(|c| c.type_ == "ComponentsReady" && c.status == cellplane::api::ConditionStatus::True)
        );
        // Ring 1 never started: its cell still runs 1.0.0 and it waits for ring 0.
        let waiting =
            |r: &DeploymentRing| r.status.as_ref().and_then(|s| s.phase) == Some(RingPhase::WaitingForUpstream);
        fleet.ring_until(&one, "waiting for the halted upstream", waiting).await;
        assert_eq!(
            running(&fleet.cluster.cells().get(&prod).await.unwrap()),
            Some(("1.0.0".into(), ReleaseHealth::Healthy))
        );
        fleet.operator.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_object_is_pruned_and_someone_elses_is_left_alone_and_named() {
    scenario("pruning between versions", |fleet| async move {
        fleet.release("1.0.0", manifests(true), "2m").await;
        fleet.release("1.1.0", manifests(false), "2m").await;
        let name = fleet.cell("cell", "none", "1.0.0").await;
        fleet.runs(&name, "1.0.0").await;
        let other = fleet.cell("other", "none", "1.0.0").await;
        fleet.runs(&other, "1.0.0").await;
        // In one cell, someone replaces `legacy` with their own of the same name.
        let config_maps = fleet.config_maps(&other);
        config_maps.delete("legacy", &Default::default()).await.unwrap();
        fixtures::wait_for(&config_maps, "legacy", "gone", WITHIN, |c: Option<&ConfigMap>| c.is_none()).await.unwrap();
        let theirs: ConfigMap =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "legacy"}, "data": {"owner": "them"}}))
                .unwrap();
        config_maps
            .create(&PostParams { field_manager: Some("kubectl-create".into()), ..Default::default() }, &theirs)
            .await
            .unwrap();

        for cell in [&name, &other] {
            let patch = serde_json::json!({"spec": {"version": "1.1.0"}});
            fleet.cluster.cells().patch(cell, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
        fleet.runs(&name, "1.1.0").await;
        let left = fleet.runs(&other, "1.1.0").await;
        assert!(fleet.config_maps(&name).get_opt("legacy").await.unwrap().is_none(), "1.1.0 lacks legacy: pruned");
        let kept = fleet.config_maps(&other).get("legacy").await.unwrap();
        assert_eq!(kept.data.unwrap()["owner"], "them", "someone else's legacy is left alone");
        let message = left.status.unwrap().release.unwrap().message.unwrap_or_default();
        assert!(
            message.contains("legacy") && message.contains("not applied by cellplane"),
            "the cell says why: {message}"
        );
        fleet.operator.stop().await;
    })
    .await;
}

/// Every change to the objects of `namespace`, by object (ConfigMaps, Services and Widgets,
/// which no controller writes): a second write is an apply made twice.
fn count_writes(
    client: Client,
    namespace: String,
    group: String,
) -> (Arc<Mutex<BTreeMap<String, usize>>>, tokio::task::JoinHandle<()>) {
    let writes: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let seen = writes.clone();
    let task = tokio::spawn(async move {
        let widgets = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(&group, "v1", "Widget"),
            "widgets",
        );
        let apis: Vec<(String, Api<kube::api::DynamicObject>)> = vec![
            (
                "ConfigMap".into(),
                Api::namespaced_with(client.clone(), &namespace, &kube::api::ApiResource::erase::<ConfigMap>(&())),
            ),
            (
                "Service".into(),
                Api::namespaced_with(
                    client.clone(),
                    &namespace,
                    &kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()),
                ),
            ),
            ("Widget".into(), Api::namespaced_with(client.clone(), &namespace, &widgets)),
        ];
        let streams = apis.into_iter().map(|(kind, api)| {
            watcher(api, watcher::Config::default()).default_backoff().applied_objects().map(move |o| {
                o.map(|o| format!("{kind}/{}@{}", o.name_any(), o.resource_version().unwrap_or_default()))
            })
        });
        let mut merged = futures::stream::select_all(streams.map(|s| s.boxed()));
        let mut versions: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        // A watch fails until the CRD of Widgets is there; the watcher retries it.
        while let Some(seen_version) = merged.next().await {
            let Ok(seen_version) = seen_version else { continue };
            let (object, version) = seen_version.split_once('@').unwrap();
            if object == "ConfigMap/kube-root-ca.crt" {
                continue; // the controller-manager's, in every namespace
            }
            versions.entry(object.to_string()).or_default().insert(version.to_string());
            *seen.lock().unwrap() = versions.iter().map(|(o, v)| (o.clone(), v.len())).collect();
        }
    });
    (writes, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_apply_and_mid_health_wait_writes_nothing_twice() {
    scenario("a crash while a release is installed", |mut fleet| async move {
        // The cell's namespace has no quota left for Deployments: the install is held at the
        // Deployment's apply step, after the objects before it, when the operator is killed.
        let name = fleet.cluster.name("cell");
        let namespace = format!("{}-{name}", fleet.namespace);
        fleet.cluster.create_namespace(&namespace).await.unwrap();
        let quotas: Api<ResourceQuota> = Api::namespaced(fleet.client.clone(), &namespace);
        let hold = ResourceQuota {
            metadata: ObjectMeta { name: Some("hold".into()), ..ObjectMeta::default() },
            spec: Some(ResourceQuotaSpec {
                hard: Some(BTreeMap::from([("count/deployments.apps".into(), Quantity("0".into()))])),
                ..ResourceQuotaSpec::default()
            }),
            ..ResourceQuota::default()
        };
        quotas.create(&PostParams::default(), &hold).await.unwrap();
        // The quota holds once its controller has counted what the namespace has.
        let counted = |q: Option<&ResourceQuota>| q.and_then(|q| q.status.as_ref()).is_some_and(|s| s.used.is_some());
        fixtures::wait_for(&quotas, "hold", "counted", WITHIN, counted).await.unwrap();
        let (writes, counter) =
            count_writes(fleet.client.clone(), namespace, format!("w{}.example.com", fleet.cluster.run));
        // Six replicas take a while to be ready: the install is still waiting for health at the
        // second crash.
        fleet.release("1.0.0", manifests(false).replace("replicas: 2", "replicas: 6"), "2m").await;
        fleet.cell("cell", "none", "1.0.0").await;
        let held_at_the_deployment = |c: &Cell| {
            let workflow = c.status.as_ref().and_then(|s| s.workflow.as_ref());
            workflow.is_some_and(|w| {
                w.step.as_deref().is_some_and(|s| s.contains("deployment-frontend"))
                    && w.last_error.as_deref().is_some_and(|e| e.contains("exceeded quota"))
            })
        };
        fleet.cell_until(&name, "held by the quota", held_at_the_deployment).await;
        fleet.crash_and_restart().await;
        fleet.cell_until(&name, "held by the quota again", held_at_the_deployment).await;
        quotas.delete("hold", &Default::default()).await.unwrap();
        fleet
            .cell_until(&name, "waiting for health", |c| {
                let step = c.status.as_ref().and_then(|s| s.workflow.as_ref()).and_then(|w| w.step.as_deref());
                step.is_some_and(|s| s.starts_with("wait-release-"))
                    || running(c).is_some_and(|(_, h)| h == ReleaseHealth::Healthy)
            })
            .await;
        fleet.crash_and_restart().await;
        fleet.runs(&name, "1.0.0").await;
        counter.abort();
        let writes = writes.lock().unwrap().clone();
        assert_eq!(writes.len(), 3, "ConfigMap, Service and Widget were seen: {writes:?}");
        assert!(writes.values().all(|w| *w == 1), "each written once, whatever the crashes: {writes:?}");
        let deployment = fleet.deployments(&name).get("frontend").await.unwrap();
        assert_eq!(deployment.metadata.generation, Some(1), "the Deployment's spec was written once");
        fleet.operator.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edit_is_reported_and_undone() {
    scenario("drift", |fleet| async move {
        let mut release = fixtures::release(&fleet.cluster.name("svc-1.0.0"), "1.0.0");
        release.spec.manifests = Some(manifests(false));
        release.spec.namespace = fleet.namespace.clone();
        release.spec.drift_interval = "3s".into();
        release.spec.substitute = BTreeMap::from([("group".into(), format!("w{}.example.com", fleet.cluster.run))]);
        fleet.cluster.create(&Api::<Release>::all(fleet.client.clone()), release).await.unwrap();
        let name = fleet.cell("cell", "none", "1.0.0").await;
        fleet.runs(&name, "1.0.0").await;
        let scale = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 5}});
        let by_hand = PatchParams::apply("kubectl-edit").force();
        fleet.deployments(&name).patch("frontend", &by_hand, &Patch::Apply(&scale)).await.unwrap();
        let corrected = fleet
            .cell_until(&name, "the edit found and corrected", |c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.release.as_ref())
                    .and_then(|r| r.drift.as_ref())
                    .is_some_and(|d| d.corrected.iter().any(|o| o.contains("frontend")))
            })
            .await;
        let drift = corrected.status.unwrap().release.unwrap().drift.unwrap();
        assert!(drift.corrected.iter().any(|o| o.contains("spec.replicas")), "names the field: {:?}", drift.corrected);
        let replicas = fleet.deployments(&name).get("frontend").await.unwrap().spec.unwrap().replicas;
        assert_eq!(replicas, Some(2), "applied again as the release has it");
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(fleet.client.clone(), "kube-system");
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            let reported = events.list(&Default::default()).await.unwrap().items.into_iter().any(|e| {
                e.reason.as_deref() == Some("DriftCorrected")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
            });
            if reported {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no DriftCorrected Event for {name}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        fleet.operator.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_from_a_repository_is_rendered_by_helm_and_runs() {
    scenario("a release from a chart repository", |fleet| async move {
        let Some(repository) = charts::example().await else { return };
        let mut release = fixtures::release(&fleet.cluster.name("svc-1.1.0"), "1.1.0");
        release.spec.manifests = None;
        release.spec.helm = Some(HelmSource {
            repository: repository.url.clone(),
            chart: "cell-service".into(),
            chart_version: "1.1.0".into(),
            values: Some("replicas: 3\n".into()),
        });
        release.spec.namespace = fleet.namespace.clone();
        fleet.cluster.create(&Api::<Release>::all(fleet.client.clone()), release).await.unwrap();
        let name = fleet.cell("cell", "none", "1.1.0").await;
        fleet.runs(&name, "1.1.0").await;
        let deployment = fleet.deployments(&name).get("frontend").await.unwrap();
        assert_eq!(deployment.status.and_then(|s| s.available_replicas), Some(3), "the values reached the chart");
        let env = deployment.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap_or_default();
        assert_eq!(env.iter().find(|e| e.name == "CELL").and_then(|e| e.value.clone()), Some(name.clone()));
        fleet.operator.stop().await;
    })
    .await;
}
