"""Runs the Argo CD health checks in charts/cellplane/argocd-health.lua.yaml on sample
objects with Lua 5.1 (Argo CD embeds gopher-lua, a Lua 5.1), as Argo CD does: the
object in the global `obj`, the script's return value the health.

    test-argocd-health.py argocd-health.lua.yaml
"""

import sys

import lupa.lua51 as lupa
import yaml

PREFIX = "resource.customizations.health.cellplane.io_"


def cond(type_, status, reason="", message="", generation=2):
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"}


def obj(kind, generation=2, status=None, spec=None, deleting=False):
    o = {"apiVersion": "cellplane.io/v1alpha1", "kind": kind,
         "metadata": {"name": "x", "generation": generation}, "spec": spec or {}}
    if deleting:
        o["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if status is not None:
        o["status"] = status
    return o


def st(*conditions, observed=2, **extra):
    return {"observedGeneration": observed, "conditions": list(conditions), **extra}


READY = cond("Ready", "True", "Ready", "endpoint db.example.com")
NOT_RECONCILING = cond("Reconciling", "False", "Reconciled")
NOT_STALLED = cond("Stalled", "False", "Healthy")

# (name, object builder for a kind, expected status, text the message must contain)
CASES = [
    ("no status yet", lambda k: obj(k), "Progressing", "report status"),
    ("generation not yet observed",
     lambda k: obj(k, status=st(READY, observed=1)), "Progressing", "observe generation 2"),
    ("first sight: conditions Unknown",
     lambda k: obj(k, status=st(cond("Ready", "Unknown", "Initializing", "not observed yet"))),
     "Progressing", "not observed yet"),
    ("Ready for the current generation",
     lambda k: obj(k, status=st(READY, NOT_RECONCILING, NOT_STALLED)), "Healthy", "endpoint"),
    ("Ready, but written for an older generation",
     lambda k: obj(k, status=st(cond("Ready", "True", "Ready", generation=1))),
     "Progressing", "Waiting for the Ready condition"),
    ("reconciling says what it waits for",
     lambda k: obj(k, status=st(cond("Ready", "False", "Provisioning"),
                                cond("Reconciling", "True", "Waiting", "step database, attempt 3"))),
     "Progressing", "attempt 3"),
    ("Stalled is Degraded with its reason",
     lambda k: obj(k, status=st(cond("Ready", "False", "Failed"),
                                cond("Stalled", "True", "AccessDenied", "ec2:CreateVpc denied"))),
     "Degraded", "AccessDenied: ec2:CreateVpc denied"),
    ("deleting names the blocker",
     lambda k: obj(k, deleting=True, status=st(READY, cond("Deleting", "True", "Draining", "3 namespaces left"))),
     "Progressing", "3 namespaces left"),
]
RING_CASES = [
    ("paused ring is Suspended",
     lambda k: obj(k, spec={"paused": True}, status=st(READY)), "Suspended", "Paused"),
    ("ring waiting for approval is Suspended",
     lambda k: obj(k, status=st(cond("Ready", "False", "WaitingForApproval"), phase="WaitingForApproval")),
     "Suspended", "approval"),
    ("halted ring is Degraded with why",
     lambda k: obj(k, status=st(cond("Ready", "False", "Halted"),
                                cond("Halted", "True", "GateFailed", "gate synthetic-probes failed"), phase="Halted")),
     "Degraded", "GateFailed: gate synthetic-probes failed"),
]


def main():
    with open(sys.argv[1]) as f:
        data = yaml.safe_load(f)["data"]
    scripts = {key[len(PREFIX):]: script for key, script in data.items() if key.startswith(PREFIX)}
    failures, runs = [], 0
    if sorted(scripts) != ["Cell", "DeploymentRing", "Namespace", "Release"]:
        failures.append(f"health checks for {sorted(scripts)}, want Cell, DeploymentRing, Namespace, Release")
    for kind, script in sorted(scripts.items()):
        cases = CASES + (RING_CASES if kind == "DeploymentRing" else [])
        for name, build, want, text in cases:
            lua = lupa.LuaRuntime(unpack_returned_tuples=True)
            lua.globals().obj = lua.table_from(build(kind), recursive=True)
            try:
                hs = lua.execute(script)
                got, message = hs["status"], hs["message"] or ""
            except lupa.LuaError as err:
                got, message = "LuaError", str(err)
            runs += 1
            if got != want or text not in message:
                failures.append(f"{kind}: {name}: got {got} {message!r}, want {want} with {text!r}")
    for failure in failures:
        print(f"      problem: {failure}")
    print(f"      {runs - len(failures)} of {runs} sample objects got the expected health "
          f"({', '.join(sorted(scripts))})")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
