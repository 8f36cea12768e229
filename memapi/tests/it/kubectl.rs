//! The real kubectl against memapi served on loopback, with the cellplane CRDs of `crds/`:
//! it finds the resources by category and short name through discovery and prints the
//! CRDs' printer columns from server-side Tables.
//!
//! kubectl is `$KUBECTL`, else `kubectl` on PATH. Without one these tests say they did not
//! run and pass, unless `MEMAPI_REQUIRE_KUBECTL` is set (CI sets it), which makes them fail.

use std::path::{Path, PathBuf};

use cellplane_memapi::ApiServer;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::common::create_namespace;

fn kubectl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path).map(|dir| dir.join("kubectl")).find(|p| p.is_file());
    if found.is_none() && std::env::var_os("MEMAPI_REQUIRE_KUBECTL").is_some() {
        panic!("kubectl not found (set KUBECTL or put kubectl on PATH); MEMAPI_REQUIRE_KUBECTL forbids skipping");
    }
    if found.is_none() {
        println!("kubectl tests DID NOT RUN: no kubectl on PATH and KUBECTL unset");
    }
    found
}

/// The cellplane CRDs as shipped.
fn cellplane_crds() -> Vec<CustomResourceDefinition> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|f| serde_norway::from_str(&std::fs::read_to_string(f).unwrap()).unwrap()).collect()
}

fn crd<'a>(crds: &'a [CustomResourceDefinition], plural: &str) -> &'a CustomResourceDefinition {
    crds.iter().find(|c| c.spec.names.plural == plural).unwrap()
}

/// The header line kubectl prints for a CRD's columns (`wide` adds priority-1 columns).
fn header(crd: &CustomResourceDefinition, all_namespaces: bool, wide: bool) -> String {
    let columns = crd.spec.versions[0].additional_printer_columns.iter().flatten();
    let shown = columns.filter(|c| wide || c.priority.unwrap_or(0) == 0).map(|c| c.name.to_uppercase());
    let namespace = (all_namespaces && crd.spec.scope == "Namespaced").then(|| "NAMESPACE".to_string());
    namespace.into_iter().chain(["NAME".to_string()]).chain(shown).collect::<Vec<_>>().join(" ")
}

/// Lines of output with runs of spaces collapsed, as kubectl aligns columns.
fn lines(output: &str) -> Vec<String> {
    output.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

struct Sandbox {
    _server: ApiServer,
    kubeconfig: tempfile::NamedTempFile,
    /// kubectl's discovery cache, kept out of ~/.kube (every sandbox has a port of its own).
    cache: tempfile::TempDir,
    crds: Vec<CustomResourceDefinition>,
}

impl Sandbox {
    async fn start() -> Self {
        let server = ApiServer::new();
        let crds = cellplane_crds();
        for crd in &crds {
            server.register_crd(crd).unwrap();
        }
        let client = server.client();
        let create = |crd: &CustomResourceDefinition, namespace: Option<&str>, name: &str, fields: Value| {
            let gvk = GroupVersionKind::gvk(&crd.spec.group, &crd.spec.versions[0].name, &crd.spec.names.kind);
            let ar = ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural);
            let api: Api<DynamicObject> = match namespace {
                Some(ns) if crd.spec.scope == "Namespaced" => Api::namespaced_with(client.clone(), ns, &ar),
                _ => Api::all_with(client.clone(), &ar),
            };
            let obj = DynamicObject::new(name, &ar).data(fields);
            let name = name.to_string();
            async move {
                api.create(&PostParams::default(), &obj).await.unwrap();
                if let Some(status) = obj.data.get("status") {
                    let patch = Patch::Merge(json!({"status": status}));
                    api.patch_status(&name, &PatchParams::default(), &patch).await.unwrap();
                }
            }
        };
        let ready = json!([{"type": "Ready", "status": "True", "reason": "Ready", "message": "all good",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        let cell = json!({
            "spec": {"provider": "sim", "region": "eu-west-1", "version": "1.0.0", "cordoned": false},
            "status": {"phase": "Ready", "conditions": ready, "capacityUsed": {"namespaces": 3, "units": 3}},
        });
        create(crd(&crds, "cells"), None, "eu-canary-1", cell).await;
        create(
            crd(&crds, "deploymentrings"),
            None,
            "ring-0",
            json!({"spec": {"order": 0, "version": "1.0.0", "cellSelector": {}}}),
        )
        .await;
        create_namespace(&client, "tenant-acme").await;
        // No status: a cluster-scoped `namespaces` kind (crds/ before it became namespaced)
        // cannot be written by name.
        let tenant = json!({"spec": {"region": "eu-west-1", "placement": {"tier": "critical"}}});
        create(crd(&crds, "namespaces"), Some("tenant-acme"), "acme", tenant).await;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "tenant-acme");
        let tls = json!({"metadata": {"name": "acme-server-tls"}, "type": "kubernetes.io/tls",
                         "stringData": {"tls.crt": "cert", "tls.key": "key"}});
        secrets.create(&PostParams::default(), &serde_json::from_value(tls).unwrap()).await.unwrap();

        let mut kubeconfig = tempfile::NamedTempFile::new().unwrap();
        let config = server.serve_on_loopback().await.unwrap();
        std::io::Write::write_all(&mut kubeconfig, config.to_string().as_bytes()).unwrap();
        Self { _server: server, kubeconfig, cache: tempfile::tempdir().unwrap(), crds }
    }

    async fn kubectl(&self, kubectl: &Path, args: &[&str]) -> Vec<String> {
        let out = tokio::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(self.kubeconfig.path())
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .output()
            .await
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "kubectl {args:?}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        lines(&stdout)
    }
}

fn has_row(lines: &[String], starts: &str, values: &[&str]) -> bool {
    lines.iter().any(|l| l.starts_with(starts) && values.iter().all(|v| l.split(' ').any(|w| w == *v)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_finds_cellplane_by_category_and_prints_the_crd_columns() {
    let Some(kubectl) = kubectl() else { return };
    let sandbox = Sandbox::start().await;
    let out = sandbox.kubectl(&kubectl, &["get", "cellplane", "-A"]).await;
    for plural in ["cells", "deploymentrings", "namespaces"] {
        let expected = header(crd(&sandbox.crds, plural), true, false);
        assert!(out.contains(&expected), "no header {expected:?} in {out:#?}");
    }
    assert!(
        has_row(&out, "cell.cellplane.io/eu-canary-1", &["sim", "eu-west-1", "1.0.0", "3", "Ready", "True"]),
        "{out:#?}"
    );
    assert!(has_row(&out, "deploymentring.cellplane.io/ring-0", &["0"]), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_resolves_short_names_across_namespaces() {
    let Some(kubectl) = kubectl() else { return };
    let sandbox = Sandbox::start().await;
    let out = sandbox.kubectl(&kubectl, &["get", "cellns", "-A"]).await;
    let namespaces = crd(&sandbox.crds, "namespaces");
    assert_eq!(out[0], header(namespaces, true, false), "{out:#?}");
    let namespaced = namespaces.spec.scope == "Namespaced";
    let row = if namespaced { "tenant-acme acme" } else { "acme" };
    assert!(has_row(&out, row, &["eu-west-1", "critical"]), "{out:#?}");
    let ring = sandbox.kubectl(&kubectl, &["get", "ring", "ring-0"]).await;
    assert_eq!(ring[0], header(crd(&sandbox.crds, "deploymentrings"), false, false), "{ring:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wide_output_adds_the_priority_columns() {
    let Some(kubectl) = kubectl() else { return };
    let sandbox = Sandbox::start().await;
    let cells = crd(&sandbox.crds, "cells");
    let narrow = sandbox.kubectl(&kubectl, &["get", "cells"]).await;
    assert_eq!(narrow[0], header(cells, false, false), "{narrow:#?}");
    let wide = sandbox.kubectl(&kubectl, &["get", "cells", "-o", "wide"]).await;
    assert_eq!(wide[0], header(cells, false, true), "{wide:#?}");
    assert_ne!(wide[0], narrow[0], "the CRD has priority-1 columns");
    assert!(has_row(&wide, "eu-canary-1", &["false", "all", "good"]), "{wide:#?}");
}

/// Built-in kinds print the apiserver's columns for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_prints_builtin_kinds() {
    let Some(kubectl) = kubectl() else { return };
    let sandbox = Sandbox::start().await;
    let out = sandbox.kubectl(&kubectl, &["get", "namespaces"]).await;
    assert_eq!(out[0], "NAME STATUS AGE", "{out:#?}");
    assert!(has_row(&out, "tenant-acme", &["Active"]), "{out:#?}");
    let secrets = sandbox.kubectl(&kubectl, &["get", "secrets", "-A"]).await;
    assert_eq!(secrets[0], "NAMESPACE NAME TYPE DATA AGE", "{secrets:#?}");
    assert!(has_row(&secrets, "tenant-acme acme-server-tls", &["kubernetes.io/tls", "2"]), "{secrets:#?}");
}
