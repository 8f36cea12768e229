//! Releases installed into a real cluster (the 1.37 control plane with KWOK's nodes that
//! `make test` starts; E2E_KUBECONFIG names it) as a cell's entity workflow installs them:
//! rendered, server-side applied in order, assessed by kstatus rules while KWOK's pods become
//! Ready (or never do), pruned, checked for drift and torn down. Helm charts are rendered by
//! the real Helm from a chart repository served on loopback.

use std::future::Future;
mod charts;

use std::path::{Path, PathBuf};

use charts::{helm, run_helm, serve};
use std::sync::Arc;
use std::time::Duration;

use cellplane::cell::CellError;
use cellplane::cell::release::{
    self, Action, CellCluster, CellValues, Health, ObjectRef, ReleaseError, Source, apply, apply_all, assess, drift,
    prune, remove, render, stale,
};
use cellplane::testing::{TestCluster, WITHIN, real_kubeconfig};
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// How long the cluster gets to converge (KWOK's pods, the Deployment controller).
const CONVERGE: Duration = WITHIN;
/// Between two looks at the cluster while waiting for a condition.
const POLL: Duration = Duration::from_millis(250);

/// Runs `body` on the real cluster (skipped without one, failed under `make test`), then removes
/// the run's namespaces and the CRDs its releases defined, also when the body panicked.
async fn on_real_cluster<F, Fut>(what: &str, body: F)
where
    F: FnOnce(Arc<TestCluster>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(path) = real_kubeconfig(what) else { return };
    let cluster = TestCluster::real(&path).await.expect("the real cluster");
    cluster
        .scenario(|cluster| async move {
            let outcome = std::panic::AssertUnwindSafe(body(cluster.clone())).catch_unwind().await;
            delete_test_crds(&cluster).await;
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
        })
        .await;
}

/// The API group of the run's own CRD, so runs sharing a cluster never meet.
fn test_group(cluster: &TestCluster) -> String {
    format!("r{}.release.cellplane.test", cluster.run)
}

async fn delete_test_crds(cluster: &TestCluster) {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let name = format!("widgets.{}", test_group(cluster));
    if let Err(e) = crds.delete(&name, &DeleteParams::default()).await
        && cellplane::kube_error::code(&e) != Some(404)
    {
        eprintln!("deleting CRD {name}: {e}");
    }
}

fn cell_values(cluster: &TestCluster) -> CellValues {
    CellValues {
        cell: format!("eu-{}", cluster.run),
        region: "eu-west-1".into(),
        domain: "eu-1.cells.example.net".into(),
        version: "1.0.0".into(),
        provider: "sim".into(),
        namespace: cluster.namespace.clone(),
        kubernetes_version: "1.37.0".into(),
        extra: [("replicas".to_string(), "3".to_string())].into(),
    }
}

/// A release of the service: its CRD and one Widget, a Deployment of `${replicas}` whose pods
/// KWOK makes Ready (or keeps unready with a `fate`), a Service and a ConfigMap per cell.
fn service_release(group: &str, fate: Option<&str>, deadline: Option<u32>) -> String {
    let fate = fate.map(|f| format!("\n        cellplane.io/kwok-fate: {f}")).unwrap_or_default();
    let deadline = deadline.map(|s| format!("\n  progressDeadlineSeconds: {s}")).unwrap_or_default();
    format!(
        r#"
apiVersion: {group}/v1
kind: Widget
metadata:
  name: front-door
spec:
  host: frontend.${{domain}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
spec:
  replicas: ${{replicas}}{deadline}
  selector:
    matchLabels: {{app: frontend}}
  template:
    metadata:
      labels:
        app: frontend{fate}
    spec:
      containers:
        - name: frontend
          image: "registry.example.com/cell-service:${{version}}"
          env:
            - {{name: CELL, value: "${{cell}}"}}
---
apiVersion: v1
kind: Service
metadata:
  name: frontend
spec:
  selector: {{app: frontend}}
  ports: [{{port: 443, targetPort: 8443}}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cell-service-config
data:
  cell: "${{cell}}"
  region: "${{region}}"
  tier: "${{tier:=standard}}"
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                host: {{type: string}}
"#
    )
}

async fn render_release(cluster: &TestCluster, yaml: &str) -> Vec<Value> {
    render(&Source::Manifests { yaml: yaml.into() }, &cell_values(cluster)).await.expect("the release renders")
}

/// Applies a release in order; CRDs' kinds get the convergence time to be served.
async fn install(target: &CellCluster, objects: &[Value]) -> Vec<ObjectRef> {
    let applied = apply_all(target, objects, false, CONVERGE).await.expect("the release applies");
    applied.into_iter().map(|a| a.object).collect()
}

/// Polls `look` until it returns Some, failing with its last answer after `CONVERGE`.
async fn until<T, Fut>(what: &str, mut look: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        match look().await {
            Ok(found) => return found,
            Err(last) if tokio::time::Instant::now() > deadline => {
                panic!("{what} within {CONVERGE:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| format!("{} {}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_applied_in_order_and_becomes_healthy() {
    on_real_cluster("a_release_is_applied_in_order_and_becomes_healthy", |cluster| async move {
        let group = test_group(&cluster);
        let objects = render_release(&cluster, &service_release(&group, None, None)).await;
        assert_eq!(
            kinds(&objects),
            [
                format!("CustomResourceDefinition widgets.{group}"),
                "ConfigMap cell-service-config".into(),
                "Service frontend".into(),
                "Deployment frontend".into(),
                "Widget front-door".into(),
            ],
            "CRDs first, the release's custom resources last"
        );
        let target = CellCluster::new(cluster.client.clone());
        let inventory = install(&target, &objects).await;
        assert_eq!(
            inventory[0].to_string(),
            format!("apiextensions.k8s.io/v1/CustomResourceDefinition//widgets.{group}")
        );

        let settings: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let settings = settings.get("cell-service-config").await.unwrap();
        let data = settings.data.unwrap_or_default();
        let values = cell_values(&cluster);
        assert_eq!(
            (data["cell"].as_str(), data["tier"].as_str()),
            (values.cell.as_str(), "standard"),
            "variables and defaults"
        );
        let labels = settings.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("cellplane.io/cell"), Some(&values.cell));
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("cellplane"));

        let report = until("the release healthy", || async {
            let report = assess(&target, &inventory).await.map_err(|e| e.to_string())?;
            if report.is_healthy() { Ok(report) } else { Err(report.to_string()) }
        })
        .await;
        assert_eq!(report.objects.len(), 5);
        let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let status = deployments.get("frontend").await.unwrap().status.unwrap_or_default();
        assert_eq!(status.available_replicas, Some(3), "healthy means all of ${{replicas}} available");

        // Teardown, stage by stage: the Widget, then the rest, the CRD last.
        let cell = cell_values(&cluster).cell;
        until("the release removed", || async {
            let report = remove(&target, &inventory, &cell).await.map_err(|e| e.to_string())?;
            if report.is_done() { Ok(report) } else { Err(format!("{report:?}")) }
        })
        .await;
        let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
        assert!(crds.get_opt(&format!("widgets.{group}")).await.unwrap().is_none(), "the CRD is gone");
        let left = assess(&target, &inventory).await.unwrap();
        assert!(left.objects.iter().all(|o| o.health == Health::Progressing("not found".into())), "{left}");
    })
    .await;
}

fn deployment_health(report: &release::HealthReport) -> Health {
    let found = report.objects.iter().find(|o| o.object.kind == "Deployment" && o.object.name == "frontend");
    found.map(|o| o.health.clone()).unwrap_or(Health::Progressing("not assessed".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_never_become_ready_are_reported_and_then_past_the_deadline_failed() {
    on_real_cluster(
        "pods_that_never_become_ready_are_reported_and_then_past_the_deadline_failed",
        |cluster| async move {
            let yaml = service_release(&test_group(&cluster), Some("never-ready"), Some(8));
            let objects = render_release(&cluster, &yaml).await;
            let target = CellCluster::new(cluster.client.clone());
            let inventory = install(&target, &objects).await;

            let unready = until("the Deployment reported unavailable", || async {
                let report = assess(&target, &inventory).await.map_err(|e| e.to_string())?;
                match deployment_health(&report) {
                    Health::Progressing(why) if why == "0/3 available" => Ok(report),
                    _ => Err(report.to_string()),
                }
            })
            .await;
            assert!(!unready.is_healthy() && !unready.has_failed());
            let line = format!("Deployment {}/frontend: 0/3 available", cluster.namespace);
            assert!(unready.to_string().lines().any(|l| l == line), "{unready}");

            let failed = until("the Deployment past its progress deadline", || async {
                let report = assess(&target, &inventory).await.map_err(|e| e.to_string())?;
                if report.has_failed() { Ok(report) } else { Err(report.to_string()) }
            })
            .await;
            assert_eq!(deployment_health(&failed), Health::Failed("0/3 available; ProgressDeadlineExceeded".into()));
            let others = failed.unhealthy().filter(|o| o.object.kind != "Deployment").count();
            assert_eq!(others, 0, "only the Deployment is unhealthy: {failed}");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_looping_pods_keep_a_release_unhealthy() {
    on_real_cluster("crash_looping_pods_keep_a_release_unhealthy", |cluster| async move {
        let yaml = service_release(&test_group(&cluster), Some("crash-loop"), None);
        let objects = render_release(&cluster, &yaml).await;
        let target = CellCluster::new(cluster.client.clone());
        let inventory = install(&target, &objects).await;
        until("the crash-looping Deployment reported", || async {
            let report = assess(&target, &inventory).await.map_err(|e| e.to_string())?;
            let pods: Api<k8s_openapi::api::core::v1::Pod> =
                Api::namespaced(cluster.client.clone(), &cluster.namespace);
            let crashing = pods.list(&ListParams::default().labels("app=frontend")).await.map_err(|e| e.to_string())?;
            let waiting =
                crashing.items.iter().filter(|p| format!("{:?}", p.status).contains("CrashLoopBackOff")).count();
            match deployment_health(&report) {
                Health::Progressing(why) if why == "0/3 available" && waiting == 3 => Ok(()),
                _ => Err(format!("{report} ({waiting} pods in CrashLoopBackOff)")),
            }
        })
        .await;
    })
    .await;
}

fn config_map(name: &str, data: Value) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata: {data}\n---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_two_prunes_what_it_dropped_and_leaves_what_others_made() {
    on_real_cluster("version_two_prunes_what_it_dropped_and_leaves_what_others_made", |cluster| async move {
        let target = CellCluster::new(cluster.client.clone());
        let cell = cell_values(&cluster).cell;
        let v1 = format!(
            "{}{}{}",
            config_map("settings", json!({ "v": "1" })),
            config_map("legacy", json!({ "v": "1" })),
            config_map("kept", json!({ "v": "1" }))
        );
        let v1_inventory = install(&target, &render_release(&cluster, &v1).await).await;
        let v2 = config_map("kept", json!({ "v": "2" }));
        let v2_inventory = install(&target, &render_release(&cluster, &v2).await).await;

        // Meanwhile someone replaced cellplane's `legacy` by one of their own, as kubectl does.
        let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        config_maps.delete("legacy", &DeleteParams::default()).await.unwrap();
        let theirs: ConfigMap =
            serde_json::from_value(json!({ "metadata": { "name": "legacy" }, "data": { "owner": "ops" } })).unwrap();
        let by_kubectl = PostParams { field_manager: Some("kubectl-client-side-apply".into()), ..Default::default() };
        config_maps.create(&by_kubectl, &theirs).await.unwrap();

        let dropped = stale(&v1_inventory, &v2_inventory);
        assert_eq!(dropped.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["settings", "legacy"]);
        for attempt in ["first", "repeated"] {
            let report = prune(&target, &dropped, &cell).await.expect("prune");
            assert_eq!(report.deleted.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["settings"], "{attempt}");
            assert!(report.is_done(), "{attempt}: {report:?}");
            let kept: Vec<String> = report.kept.iter().map(ToString::to_string).collect();
            assert_eq!(
                kept,
                [format!(
                    "ConfigMap {}/legacy: not applied by cellplane (managers: kubectl-client-side-apply)",
                    cluster.namespace
                )],
                "{attempt}"
            );
        }
        assert!(config_maps.get_opt("settings").await.unwrap().is_none(), "the dropped ConfigMap is gone");
        let legacy = config_maps.get("legacy").await.unwrap();
        assert_eq!(
            legacy.data.unwrap_or_default().get("owner").map(String::as_str),
            Some("ops"),
            "theirs is untouched"
        );
        assert!(config_maps.get_opt("kept").await.unwrap().is_some(), "what v2 has stays");

        // Teardown removes the rest of cellplane's, and still not theirs.
        let everything: Vec<ObjectRef> = v2_inventory.iter().chain(&dropped).cloned().collect();
        let removal = remove(&target, &everything, &cell).await.expect("remove");
        assert!(removal.is_done() && removal.kept.len() == 1, "{removal:?}");
        assert!(config_maps.get_opt("kept").await.unwrap().is_none());
        assert!(config_maps.get_opt("legacy").await.unwrap().is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_a_field_another_manager_owns_until_forced() {
    on_real_cluster("apply_refuses_a_field_another_manager_owns_until_forced", |cluster| async move {
        let target = CellCluster::new(cluster.client.clone());
        let objects = render_release(&cluster, &config_map("settings", json!({ "mode": "a", "size": "1" }))).await;
        assert_eq!(apply(&target, &objects[0], false).await.unwrap().action, Action::Created);

        // A hand edit, as `kubectl edit` makes it.
        let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let by_hand = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
        config_maps.patch("settings", &by_hand, &Patch::Merge(json!({ "data": { "mode": "b" } }))).await.unwrap();

        let refused = apply(&target, &objects[0], false).await.unwrap_err();
        assert!(matches!(refused, ReleaseError::Conflict { .. }), "{refused}");
        assert_eq!(
            refused.to_string(),
            format!(
                "ConfigMap {}/settings: apply refused, fields owned by other managers: .data.mode (kubectl-edit); \
                 apply with force to take them over",
                cluster.namespace
            )
        );
        assert!(matches!(refused.into_cell_error(), CellError::Invalid(_)), "retrying cannot help");
        assert_eq!(config_maps.get("settings").await.unwrap().data.unwrap()["mode"], "b", "nothing was applied");

        let forced = apply(&target, &objects[0], true).await.unwrap();
        assert_eq!(forced.action, Action::Configured);
        assert_eq!(config_maps.get("settings").await.unwrap().data.unwrap()["mode"], "a", "force takes the field over");
        assert_eq!(apply(&target, &objects[0], false).await.unwrap().action, Action::Unchanged, "and keeps it");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_names_a_hand_edit_and_a_forced_apply_corrects_it() {
    on_real_cluster("drift_names_a_hand_edit_and_a_forced_apply_corrects_it", |cluster| async move {
        let target = CellCluster::new(cluster.client.clone());
        let objects = render_release(&cluster, &service_release(&test_group(&cluster), None, None)).await;
        install(&target, &objects).await;
        assert_eq!(drift(&target, &objects).await.unwrap(), [], "nothing drifted right after applying");

        let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let by_hand = PatchParams { field_manager: Some("kubectl-scale".into()), ..Default::default() };
        deployments
            .patch_scale("frontend", &by_hand, &Patch::Merge(json!({ "spec": { "replicas": 5 } })))
            .await
            .unwrap();

        let drifted = drift(&target, &objects).await.unwrap();
        let text: Vec<String> = drifted.iter().map(ToString::to_string).collect();
        assert_eq!(text, [format!("Deployment {}/frontend: spec.replicas is 5, the release has 3", cluster.namespace)]);

        let refused = apply(&target, &objects[3], false).await.unwrap_err();
        assert!(refused.to_string().contains(".spec.replicas (kubectl-scale)"), "{refused}");
        for object in &objects {
            apply(&target, object, true).await.unwrap();
        }
        assert_eq!(drift(&target, &objects).await.unwrap(), [], "a forced apply corrected it");
        assert_eq!(deployments.get("frontend").await.unwrap().spec.unwrap().replicas, Some(3));

        let mut missing = objects.clone();
        missing.truncate(3);
        let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        config_maps.delete("cell-service-config", &DeleteParams::default()).await.unwrap();
        let text: Vec<String> = drift(&target, &missing).await.unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(text, [format!("ConfigMap {}/cell-service-config: not found", cluster.namespace)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_same_release_again_writes_nothing() {
    on_real_cluster("applying_the_same_release_again_writes_nothing", |cluster| async move {
        let target = CellCluster::new(cluster.client.clone());
        let objects = render_release(&cluster, &service_release(&test_group(&cluster), None, None)).await;
        let inventory = install(&target, &objects).await;
        // Once healthy, the controllers have nothing more to write either.
        until("the release healthy", || async {
            let report = assess(&target, &inventory).await.map_err(|e| e.to_string())?;
            if report.is_healthy() { Ok(()) } else { Err(report.to_string()) }
        })
        .await;
        let before = resource_versions(&target, &inventory).await;
        // A fresh cluster handle, as after a crash: nothing cached.
        let again = apply_all(&CellCluster::new(cluster.client.clone()), &objects, false, CONVERGE).await.unwrap();
        let actions: Vec<Action> = again.iter().map(|a| a.action).collect();
        assert_eq!(actions, vec![Action::Unchanged; objects.len()]);
        assert_eq!(resource_versions(&target, &inventory).await, before);
    })
    .await;
}

async fn resource_versions(target: &CellCluster, inventory: &[ObjectRef]) -> Vec<String> {
    let mut versions = Vec::new();
    for reference in inventory {
        let live = read(target, reference).await;
        versions.push(live["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string());
    }
    versions
}

async fn read(target: &CellCluster, reference: &ObjectRef) -> Value {
    let gvk = kube::api::GroupVersionKind::gvk(&reference.group, &reference.version, &reference.kind);
    let (resource, _) = kube::discovery::pinned_kind(target.client(), &gvk).await.unwrap();
    let api: Api<kube::api::DynamicObject> = if reference.namespace.is_empty() {
        Api::all_with(target.client().clone(), &resource)
    } else {
        Api::namespaced_with(target.client().clone(), &reference.namespace, &resource)
    };
    serde_json::to_value(api.get(&reference.name).await.unwrap()).unwrap()
}

const CHART_DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: web
          image: "{{ .Values.image }}:{{ .Chart.AppVersion }}"
          env:
            - name: CELL
              value: {{ .Values.cellplane.cell | quote }}
            - name: REGION
              value: {{ .Values.cellplane.region | quote }}
"#;

const CHART_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
  namespace: {{ .Release.Namespace }}
spec:
  selector: {app: {{ .Release.Name }}}
  ports: [{port: {{ .Values.port }}}]
"#;

/// A packaged chart `web` 0.3.0 with its index in `repo`.
fn chart_repository(helm: &Path, work: &Path) -> PathBuf {
    let chart = work.join("web");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: web\nversion: 0.3.0\nappVersion: \"2.4.1\"\n")
        .unwrap();
    std::fs::write(
        chart.join("values.yaml"),
        "replicas: 1\nimage: registry.example.com/web\nport: 80\ncellplane: {}\n",
    )
    .unwrap();
    std::fs::write(chart.join("templates/deployment.yaml"), CHART_DEPLOYMENT).unwrap();
    std::fs::write(chart.join("templates/service.yaml"), CHART_SERVICE).unwrap();
    let repo = work.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    run_helm(helm, work, &["package", chart.to_str().unwrap(), "--destination", repo.to_str().unwrap()]);
    run_helm(helm, work, &["repo", "index", repo.to_str().unwrap()]);
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_from_a_repository_renders_with_the_values_and_the_cells_name() {
    let Some(helm) = helm() else { return };
    let work = tempfile::tempdir().unwrap();
    let repo = chart_repository(&helm, work.path());
    let (repository, server) = serve(repo).await;
    let values = CellValues {
        cell: "eu-7".into(),
        region: "eu-north-1".into(),
        namespace: "svc".into(),
        kubernetes_version: "1.37.0".into(),
        ..Default::default()
    };
    let source = |version: &str, repository: &str| Source::Helm {
        repository: repository.into(),
        chart: "web".into(),
        version: version.into(),
        values: json!({ "replicas": 4, "port": 443 }),
    };

    let objects = render(&source("0.3.0", &repository), &values).await.expect("the chart renders");
    assert_eq!(kinds(&objects), ["Service web", "Deployment web"]);
    let (service, deployment) = (&objects[0], &objects[1]);
    assert_eq!(service["spec"]["ports"][0]["port"], 443, "the user's values");
    assert_eq!(deployment["spec"]["replicas"], 4);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example.com/web:2.4.1");
    assert_eq!(
        container["env"],
        json!([{ "name": "CELL", "value": "eu-7" }, { "name": "REGION", "value": "eu-north-1" }])
    );
    for object in &objects {
        assert_eq!(object["metadata"]["namespace"], "svc", "the release's namespace");
        assert_eq!(object["metadata"]["labels"]["cellplane.io/cell"], "eu-7");
    }

    let missing = render(&source("9.9.9", &repository), &values).await.unwrap_err();
    assert!(
        missing.to_string().contains("9.9.9") && missing.to_string().contains("not found"),
        "helm's own words: {missing}"
    );
    assert!(!missing.is_retryable(), "a missing chart version stays missing");

    server.abort();
    let _ = server.await;
    let unreachable = render(&source("0.3.0", &repository), &values).await.unwrap_err();
    assert!(unreachable.is_retryable(), "an unreachable repository may come back: {unreachable}");
}

/// The plain-manifests twin of the example chart is still the chart rendered with the cell's
/// values as `${...}`, and renders for a cell as the chart does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_manifests_are_the_example_chart_rendered() {
    let Some(helm) = helm() else { return };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = tempfile::tempdir().unwrap();
    let placeholders = ["cell", "region", "domain", "version"].map(|v| format!("cellplane.{v}=${{{v}}}"));
    let mut args = vec!["template", "cell-service"];
    let chart = root.join("examples/release/chart");
    args.push(chart.to_str().unwrap());
    for placeholder in &placeholders {
        args.extend(["--set-string", placeholder.as_str()]);
    }
    let rendered = run_helm(&helm, work.path(), &args);
    let file = std::fs::read_to_string(root.join("examples/release/manifests.yaml")).unwrap();
    let body: String = file.lines().skip_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    assert_eq!(body, rendered, "examples/release/manifests.yaml is out of date: render it again (see its header)");

    let values = CellValues {
        cell: "eu-1".into(),
        domain: "eu-1.example.net".into(),
        namespace: "svc".into(),
        ..Default::default()
    };
    let objects = render(&Source::Manifests { yaml: file.clone() }, &values).await.unwrap();
    assert_eq!(kinds(&objects), ["ConfigMap cell-service-config", "Service frontend", "Deployment frontend"]);

    // The example Releases carry the twin (comments aside).
    let uncommented = |text: &str| -> String {
        text.lines().filter(|l| !l.trim_start().starts_with('#') && *l != "---").map(|l| format!("{l}\n")).collect()
    };
    for examples in ["examples/releases.yaml", "examples/rollback/releases.yaml"] {
        let text = std::fs::read_to_string(root.join(examples)).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let release = <cellplane::api::Release as serde::Deserialize>::deserialize(document).unwrap();
            let manifests = release.spec.manifests.unwrap_or_default();
            assert_eq!(
                uncommented(&manifests),
                uncommented(&file),
                "{examples}: {} does not carry the twin",
                release.spec.version
            );
        }
    }
    assert_eq!(objects[0]["data"]["endpoint"], "frontend.eu-1.example.net");
    assert_eq!(objects[2]["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"], "eu-1");
}

/// The environment variable naming a `registry` binary (CNCF Distribution, which builds from
/// Go modules: `go install github.com/distribution/distribution/v3/cmd/registry@v3.0.0`).
const OCI_REGISTRY_ENV: &str = "CELLPLANE_OCI_REGISTRY";

/// A chart pushed to an OCI registry on loopback renders as `oci://` (runs where a registry
/// binary is named: no container runtime is needed, but `make test` does not build one yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_from_an_oci_registry_renders() {
    let Some(registry) = std::env::var_os(OCI_REGISTRY_ENV) else {
        println!("DID NOT RUN: set {OCI_REGISTRY_ENV} to a Distribution `registry` binary");
        return;
    };
    let Some(helm) = helm() else { return };
    let work = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "version: 0.1\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\nlog: {{level: error}}\n",
        work.path().join("data").display()
    );
    std::fs::write(work.path().join("config.yml"), config).unwrap();
    let _registry = tokio::process::Command::new(registry)
        .args(["serve", work.path().join("config.yml").to_str().unwrap()])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    until("the registry listening", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    let repo = chart_repository(&helm, work.path());
    let package = repo.join("web-0.3.0.tgz");
    let repository = format!("oci://127.0.0.1:{port}/charts");
    run_helm(&helm, work.path(), &["push", package.to_str().unwrap(), &repository, "--plain-http"]);

    let values = CellValues { cell: "eu-8".into(), namespace: "svc".into(), ..Default::default() };
    let source =
        Source::Helm { repository, chart: "web".into(), version: "0.3.0".into(), values: json!({ "replicas": 2 }) };
    let objects = render(&source, &values).await.expect("the chart renders from the registry");
    assert_eq!(kinds(&objects), ["Service web", "Deployment web"]);
    assert_eq!(objects[1]["spec"]["replicas"], 2);
    assert_eq!(objects[1]["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"], "eu-8");
}
