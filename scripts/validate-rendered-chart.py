"""Validates one `helm template` output of charts/cellplane offline.

Every object is checked against the Kubernetes OpenAPI schema of the given version
(kubernetes-validate, strict: unknown fields are errors); kinds served by CRDs of other
projects (ServiceMonitor) have no offline schema and are skipped by name. On top of the
schema, the chart's own promises are checked: Pod Security "restricted", RBAC without
wildcards, the probes, and what the named values profile must produce.

Run by scripts/chart-check.sh with the tools venv's python:
    validate-rendered-chart.py RENDERED.yaml PROFILE KUBE_VERSION
Prints one line per finding and a summary; exits 1 when anything failed.
"""

import collections
import json
import pathlib
import sys

import kubernetes_validate
import yaml

# API groups whose kinds come from third-party CRDs; kubernetes-validate has no schema.
THIRD_PARTY_GROUPS = {"monitoring.coreos.com"}


def containers(pod):
    return pod.get("initContainers", []) + pod.get("containers", [])


def check_restricted(name, pod, problems):
    """Pod Security Standards, restricted profile (the parts a chart controls)."""
    psc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{name}: {key} is set")
    for vol in pod.get("volumes", []):
        allowed = {"name", "emptyDir", "persistentVolumeClaim", "configMap", "secret",
                   "projected", "downwardAPI", "ephemeral", "csi"}
        if set(vol) - allowed:
            problems.append(f"{name}: volume {vol['name']} has a type restricted forbids")
    for c in containers(pod):
        sc = c.get("securityContext", {})
        where = f"{name} container {c['name']}"
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            problems.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) in (None, 0):
            problems.append(f"{where}: runAsUser is unset or 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: capabilities.drop is not [ALL]")
        if sc.get("capabilities", {}).get("add"):
            problems.append(f"{where}: adds capabilities")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile is {seccomp!r}")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if "/tmp" not in mounts:
            problems.append(f"{where}: no writable /tmp (emptyDir) under a read-only root")


def check_probes(name, pod, problems):
    for c in pod.get("containers", []):
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            got = c.get(probe, {}).get("httpGet", {})
            if got.get("path") != path or got.get("port") != "metrics":
                problems.append(f"{name}: {probe} is not GET {path} on port metrics")


def check_rbac(name, obj, problems):
    for rule in obj.get("rules", []):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            if "*" in rule.get(field, []):
                problems.append(f"{name}: wildcard in {field}: {rule}")


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def one(objs, kind, problems):
    found = by_kind(objs, kind)
    if len(found) != 1:
        problems.append(f"expected one {kind}, rendered {len(found)}")
        return {}
    return found[0]


def check_profile(profile, objs, problems):
    """What each values profile (charts/cellplane/ci/*-values.yaml) must render."""
    deploy = one(objs, "Deployment", problems)
    spec = deploy.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    main = (pod.get("containers") or [{}])[0]
    args = main.get("args", [])
    env = {e["name"]: e for e in main.get("env", [])}
    crds = by_kind(objs, "CustomResourceDefinition")
    leases = [r for role in by_kind(objs, "Role") for r in role.get("rules", [])
              if "leases" in r.get("resources", [])]

    def expect(cond, what):
        if not cond:
            problems.append(f"profile {profile}: {what}")

    expect(args[:1] == ["run"], "container args do not start with `run`")
    expect("POD_NAME" in env and "POD_NAMESPACE" in env, "POD_NAME/POD_NAMESPACE not from the downward API")
    if profile in ("default", "sqlite", "crds-disabled"):
        expect(spec.get("replicas") == 1, "sqlite journal must run one replica")
        expect(spec.get("strategy", {}).get("type") == "Recreate", "sqlite journal must use strategy Recreate")
        expect("--journal=sqlite:///var/lib/cellplane/journal.db" in args, "no sqlite --journal flag")
        expect("--leader-election" not in args and not leases, "leader election on with one replica")
        expect(len(by_kind(objs, "PersistentVolumeClaim")) == 1, "no journal PersistentVolumeClaim")
    if profile == "postgres-ha":
        expect(spec.get("replicas") == 3, "replicas is not 3")
        expect(spec.get("strategy", {}).get("type") == "RollingUpdate", "strategy is not RollingUpdate")
        expect("--leader-election" in args, "leader election is off with 3 replicas")
        expect(leases, "no Role rule for coordination.k8s.io leases")
        ref = env.get("CELLPLANE_JOURNAL", {}).get("valueFrom", {}).get("secretKeyRef", {})
        expect(ref == {"name": "cellplane-journal", "key": "url"}, "CELLPLANE_JOURNAL not from the Secret key")
        expect(not any(a.startswith("--journal=") for a in args), "journal URL on the command line")
        expect(not by_kind(objs, "PersistentVolumeClaim"), "PVC rendered for the postgres journal")
        for kind in ("PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"):
            expect(len(by_kind(objs, kind)) == 1, f"no {kind}")
        rules = by_kind(objs, "PrometheusRule")
        expect(bool(rules) and len(rules[0]["spec"].get("groups", [])) > 0, "the PrometheusRule has no rule groups")
        dashboards = [c for c in by_kind(objs, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
        expect(len(dashboards) == 1, "no ConfigMap labelled grafana_dashboard: \"1\"")
        for dashboard in dashboards:
            expect(json.loads(dashboard["data"]["cellplane.json"]).get("uid") == "cellplane", "the dashboard is not valid JSON")
    if profile == "crds-disabled":
        expect(not crds, "CRDs rendered with crds.install=false")
    else:
        generated = len(list((pathlib.Path(__file__).resolve().parent.parent / "crds").glob("*.yaml")))
        expect(len(crds) == generated, f"expected the {generated} CRDs of crds/, rendered {len(crds)}")
        for crd in crds:
            keep = crd["metadata"].get("annotations", {}).get("helm.sh/resource-policy")
            expect(keep == "keep", f"{crd['metadata']['name']} lacks helm.sh/resource-policy: keep")


def main():
    path, profile, version = sys.argv[1:4]
    with open(path) as f:
        objs = [d for d in yaml.safe_load_all(f) if d]
    problems, counts, skipped = [], collections.Counter(), []
    for obj in objs:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        group = obj["apiVersion"].rpartition("/")[0]
        if group in THIRD_PARTY_GROUPS:
            skipped.append(f"{name} ({obj['apiVersion']}: third-party CRD kind, no offline schema)")
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            counts[obj["kind"]] += 1
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{name}: no Kubernetes {version} schema for {obj['apiVersion']} (typo or removed API?)")
        except kubernetes_validate.ValidationError as err:
            problems.append(f"{name}: {err.message} at {'.'.join(map(str, err.path))}")
        if obj["kind"] in ("ClusterRole", "Role"):
            check_rbac(name, obj, problems)
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            check_restricted(name, pod, problems)
            check_probes(name, pod, problems)
    check_profile(profile, objs, problems)

    kinds = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    print(f"      schema-valid against Kubernetes {version} (strict): {sum(counts.values())} objects ({kinds})")
    for s in skipped:
        print(f"      skipped {s}")
    for p in problems:
        print(f"      problem: {p}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
