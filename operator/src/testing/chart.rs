//! The operator as its Helm chart installs it, for tests on a real cluster: the chart rendered
//! by the real Helm, its ServiceAccount and RBAC applied for this test run, and the operator's
//! client authenticated with a token of that ServiceAccount (TokenRequest), as a pod's would be.
//! A test that runs the operator this way sees every permission the chart forgot.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

use super::{TestCluster, TestError};

/// What the chart renders that makes up the operator's identity, in the order it is applied.
const IDENTITY_KINDS: [(&str, &str, &str); 5] = [
    ("", "ServiceAccount", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "ClusterRole", "clusterroles"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings"),
    ("rbac.authorization.k8s.io", "Role", "roles"),
    ("rbac.authorization.k8s.io", "RoleBinding", "rolebindings"),
];

/// The chart's directory in this repository.
pub fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/cellplane")
}

/// The Helm to render with: `HELM` (set by `make test`), else `helm` on PATH.
fn helm() -> PathBuf {
    std::env::var_os("HELM").map(PathBuf::from).unwrap_or_else(|| "helm".into())
}

/// The chart rendered by the real Helm as release `release` in `namespace` for Kubernetes
/// `kube_version`, with `--set` values.
pub fn render(release: &str, namespace: &str, kube_version: &str, values: &[String]) -> Result<String, TestError> {
    let mut command = Command::new(helm());
    command.args(["template", release]).arg(chart_dir()).args(["--namespace", namespace]);
    command.args(["--kube-version", kube_version, "--set", "crds.install=false"]);
    for value in values {
        command.args(["--set", value]);
    }
    let output = command.output().map_err(|e| TestError::Chart(format!("running {:?}: {e}", helm())))?;
    if !output.status.success() {
        return Err(TestError::Chart(format!("helm template failed: {}", String::from_utf8_lossy(&output.stderr))));
    }
    String::from_utf8(output.stdout).map_err(|e| TestError::Chart(e.to_string()))
}

/// The objects of a rendered chart.
pub fn objects(rendered: &str) -> Result<Vec<DynamicObject>, TestError> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(rendered)
        .filter_map(|doc| match serde_json::Value::deserialize(doc) {
            Ok(serde_json::Value::Null) => None,
            Ok(value) => Some(serde_json::from_value(value).map_err(|e| TestError::Chart(e.to_string()))),
            Err(e) => Some(Err(TestError::Chart(e.to_string()))),
        })
        .collect()
}

/// The operator installed by the chart, for one test run.
pub struct ChartInstall {
    /// The release name (`cp-<run>`), which names the chart's objects.
    pub release: String,
    /// What the chart rendered.
    pub objects: Vec<DynamicObject>,
    /// A client with a token of the chart's ServiceAccount.
    pub client: Client,
    /// A kubeconfig with that token, for running `cellplane run` as the chart's pod would.
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChartInstall {
    /// The rendered object of `kind` named `name`.
    pub fn object(&self, kind: &str, name: &str) -> Option<&DynamicObject> {
        self.objects.iter().find(|o| o.types.as_ref().is_some_and(|t| t.kind == kind) && o.name_any() == name)
    }

    /// The operator container's arguments, as the chart's Deployment runs them.
    pub fn args(&self) -> Vec<String> {
        let deployment = self.object("Deployment", &format!("{}-cellplane", self.release));
        let args = deployment.and_then(|d| d.data.pointer("/spec/template/spec/containers/0/args"));
        args.and_then(|a| serde_json::from_value(a.clone()).ok()).unwrap_or_default()
    }
}

impl TestCluster {
    /// Renders the chart for this run's operator namespace with `values` and applies its
    /// ServiceAccount and RBAC (labelled as this run's, so cleanup removes the cluster-scoped
    /// ones); returns the operator's identity. Applying again with other values changes the
    /// rules in place (nothing is pruned).
    pub async fn install_chart(&self, values: &[String]) -> Result<ChartInstall, TestError> {
        let path = self.kubeconfig.clone().ok_or_else(|| TestError::Chart("the chart needs a real cluster".into()))?;
        let version = self.client.apiserver_version().await?;
        let release = format!("cp-{}", self.run);
        let rendered = render(&release, &self.namespace, &version.git_version, values)?;
        let objects = objects(&rendered)?;
        for (group, kind, plural) in IDENTITY_KINDS {
            let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural);
            for object in objects.iter().filter(|o| o.types.as_ref().is_some_and(|t| t.kind == kind)) {
                self.apply(&resource, object).await?;
            }
        }
        let account = format!("{release}-cellplane");
        let token = self.token(&account).await?;
        let dir = tempfile::tempdir().map_err(|e| TestError::Chart(e.to_string()))?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, token_kubeconfig(&path, &token)?).map_err(|e| TestError::Chart(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).map_err(|e| TestError::Chart(e.to_string()))?,
            &Default::default(),
        )
        .await
        .map_err(|e| TestError::Chart(e.to_string()))?;
        let client = Client::try_from(config)?;
        Ok(ChartInstall { release, objects, client, kubeconfig, _dir: dir })
    }

    /// Lets the chart's operator run a sim cell's release of ConfigMaps in `namespace` (made
    /// here) without `rbac.simCells`, as an administrator would grant it: Namespaces get and
    /// patch cluster-wide, ConfigMaps in that namespace only.
    pub async fn grant_release_namespace(&self, chart: &ChartInstall, namespace: &str) -> Result<(), TestError> {
        crate::fixtures::ensure_namespace(&self.client, namespace).await?;
        let name = format!("{}-release-{namespace}", chart.release);
        let subject = serde_json::json!([{
            "kind": "ServiceAccount", "name": format!("{}-cellplane", chart.release), "namespace": self.namespace
        }]);
        let rbac = |kind: &str, namespace: Option<&str>, body: serde_json::Value| {
            let mut object: DynamicObject = serde_json::from_value(body).expect("an RBAC object");
            object.types =
                Some(kube::api::TypeMeta { api_version: "rbac.authorization.k8s.io/v1".into(), kind: kind.into() });
            object.metadata.name = Some(name.clone());
            object.metadata.namespace = namespace.map(str::to_string);
            object
        };
        let role_ref =
            |kind: &str| serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name});
        let verbs = ["get", "list", "create", "patch", "delete"];
        let objects = [
            rbac(
                "ClusterRole",
                None,
                serde_json::json!({"rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": verbs}]}),
            ),
            rbac(
                "ClusterRoleBinding",
                None,
                serde_json::json!({"roleRef": role_ref("ClusterRole"), "subjects": subject}),
            ),
            rbac(
                "Role",
                Some(namespace),
                serde_json::json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}]}),
            ),
            rbac("RoleBinding", Some(namespace), serde_json::json!({"roleRef": role_ref("Role"), "subjects": subject})),
        ];
        for object in &objects {
            let kind = object.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
            let (group, _, plural) = IDENTITY_KINDS.iter().find(|(_, k, _)| *k == kind).copied().unwrap_or_default();
            let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", &kind), plural);
            self.apply(&resource, object).await?;
        }
        Ok(())
    }

    async fn apply(&self, resource: &ApiResource, object: &DynamicObject) -> Result<(), TestError> {
        let api: Api<DynamicObject> = match &object.metadata.namespace {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        let object = self.own(object.clone());
        let params = PatchParams::apply("cellplane-test").force();
        api.patch(&object.name_any(), &params, &Patch::Apply(&object)).await?;
        Ok(())
    }

    /// A token of this run's ServiceAccount `name`, valid for an hour.
    async fn token(&self, name: &str) -> Result<String, TestError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() },
            ..Default::default()
        };
        let issued = api.create_token_request(name, &PostParams::default(), &request).await?;
        issued.status.map(|s| s.token).ok_or_else(|| TestError::Chart(format!("no token issued for {name}")))
    }
}

/// The admin kubeconfig at `path` with its user replaced by a bearer token.
fn token_kubeconfig(path: &std::path::Path, token: &str) -> Result<String, TestError> {
    let text = std::fs::read_to_string(path).map_err(|e| TestError::Chart(format!("{}: {e}", path.display())))?;
    let mut kubeconfig: serde_json::Value =
        serde_norway::from_str(&text).map_err(|e| TestError::Chart(e.to_string()))?;
    for user in kubeconfig["users"].as_array_mut().into_iter().flatten() {
        user["user"] = serde_json::json!({ "token": token });
    }
    serde_norway::to_string(&kubeconfig).map_err(|e| TestError::Chart(e.to_string()))
}
