"""The container image recipe, compose.yaml and the Kubernetes manifests, checked strictly (no
Docker engine or cluster here): every manifest against the Kubernetes 1.30 schemas
(kubernetes-validate), and the points the deployment promises — probes, drain, non-root,
read-only root filesystem, secrets by reference, autoscaling on load, disruption budgets — and
that every flag the manifests pass is one the binary takes."""
import glob
import os
import re
import subprocess

import kubernetes_validate
import pytest
import yaml

from conftest import BINARY, ROOT

K8S = os.path.join(ROOT, "deploy", "kubernetes")


def manifests():
    out = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        with open(path) as f:
            out += [(os.path.basename(path), d) for d in yaml.safe_load_all(f) if d]
    return out


def kinds(kind):
    return {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == kind}


@pytest.mark.parametrize("name,doc", manifests(), ids=lambda x: x if isinstance(x, str) else x["kind"] + "/" + x["metadata"]["name"])
def test_every_manifest_is_valid_for_kubernetes_1_30(name, doc):
    kubernetes_validate.validate(doc, "1.30", strict=True)


def test_the_kustomization_lists_what_exists_and_keeps_secrets_out_of_git():
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        k = yaml.safe_load(f)
    for r in k["resources"]:
        assert os.path.exists(os.path.join(K8S, r)), r
    listed = set(k["resources"])
    for path in glob.glob(os.path.join(K8S, "*.yaml")):
        base = os.path.basename(path)
        assert base in listed or base in ("kustomization.yaml", "prometheus-adapter-rules.yaml"), f"{base} is not in the kustomization"
    assert k["secretGenerator"][0]["envs"] == ["secrets.env"]
    with open(os.path.join(ROOT, ".gitignore")) as f:
        assert "/deploy/kubernetes/secrets.env" in f.read().split()
    with open(os.path.join(K8S, "secrets.env.example")) as f:
        example = {l.split("=", 1)[0] for l in f if "=" in l and not l.startswith("#")}
    # Every secret a pod reads is in the example (and so in the generated Secret).
    for _, d in manifests():
        for ref in re.findall(r"'key': '([A-Z_]+)'", str(d)):
            assert ref in example, ref


def containers(deployment):
    return deployment["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize("role", ["gateway", "worker"])
def test_each_role_drains_runs_unprivileged_and_reads_secrets_by_reference(role):
    d = kinds("Deployment")[f"playground-{role}"]
    pod = d["spec"]["template"]["spec"]
    c = containers(d)[0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    args = c["args"]
    assert args[0] == role
    drain = int(args[args.index("--drain-seconds") + 1])
    assert pod["terminationGracePeriodSeconds"] >= drain + 5, "the grace period covers the drain"
    hook = " ".join(c["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM 1" in hook, "the preStop hook starts the drain"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), "a writable /tmp beside the read-only root"
    assert pod["automountServiceAccountToken"] is False
    for e in c["env"]:
        if re.search(r"URL|SECRET|KEY|PASSWORD|TOKEN", e["name"]):
            assert "value" not in e and "secretKeyRef" in e["valueFrom"], f"{e['name']} must come from a Secret"
    # Every flag is one the binary takes for this role (a typo would crash-loop every pod).
    helptext = subprocess.run([BINARY, role, "--help"], capture_output=True, text=True, timeout=30).stdout
    for flag in [a for a in args if a.startswith("--")]:
        assert re.search(r"(^|\s)" + re.escape(flag) + r"\b", helptext), f"{role} does not take {flag}"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if role == "gateway":
        assert ports["link"] == int(args[args.index("--fleet-port") + 1])
        assert "$(POD_IP)" in args, "workers dial the gateway's own address"


def test_workers_scale_on_load_and_gateways_on_connections():
    hpa = kinds("HorizontalPodAutoscaler")
    worker = [m.get("external", m.get("pods", m.get("resource"))) for m in hpa["playground-worker"]["spec"]["metrics"]]
    names = [m["metric"]["name"] if "metric" in m else m["name"] for m in worker]
    assert names == ["playground_jobs_backlog", "playground_worker_busy_slots", "cpu"], "backlog, busy slots, then CPU"
    gw = hpa["playground-gateway"]["spec"]["metrics"]
    assert gw[0]["pods"]["metric"]["name"] == "playground_ws_connections"
    for h in hpa.values():
        assert h["spec"]["minReplicas"] >= 2
    # The adapter's rules name the metrics the autoscalers read, from metrics the nodes export.
    with open(os.path.join(K8S, "prometheus-adapter-rules.yaml")) as f:
        rules = yaml.safe_load(yaml.safe_load(f)["data"]["config.yaml"])
    made = {r["name"]["as"] for r in rules["rules"] + rules["externalRules"]}
    assert {"playground_jobs_backlog", "playground_worker_busy_slots", "playground_ws_connections"} <= made
    with open(os.path.join(ROOT, "Sources", "FleetCore", "Metrics.swift")) as f:
        exported = f.read()
    for r in rules["rules"] + rules["externalRules"]:
        series = re.match(r"(\w+)\{", r["seriesQuery"]).group(1)
        assert series.replace("playground", "\\(p)") in exported, series


def test_budgets_and_services():
    pdb = kinds("PodDisruptionBudget")
    assert set(pdb) == {"playground-gateway", "playground-worker"}
    svc = kinds("Service")
    assert svc["playground-gateway"]["spec"]["ports"][0]["targetPort"] == "http"
    links = svc["playground-gateway-links"]["spec"]
    assert links["clusterIP"] == "None" and links["ports"][0]["port"] == 8090


def test_the_dockerfile_builds_in_two_stages_and_runs_unprivileged():
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 2 and stages[1].startswith("debian:bookworm-slim"), stages
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root")), user
    assert re.search(r'^ENTRYPOINT \["/app/playground"\]', text, re.M), "exec form: the node is PID 1 and gets SIGTERM"
    for d in ("Public", "lua", "sql"):
        assert re.search(rf"^COPY {d} {d}$", text, re.M), d
    # The build stage installs the -dev packages install-deps.sh installs; the run stage their libraries.
    with open(os.path.join(ROOT, "scripts", "install-deps.sh")) as f:
        deps = f.read()
    for dev, runtime in [("libhiredis-dev", "libhiredis0.14"), ("libpq-dev", "libpq5"), ("libssl-dev", "libssl3")]:
        assert dev in deps and dev in text and runtime in text, dev
    ldd = subprocess.run(["ldd", BINARY], capture_output=True, text=True).stdout
    for lib, pkg in [("libhiredis.so.0.14", "libhiredis0.14"), ("libpq.so.5", "libpq5"), ("libssl.so.3", "libssl3")]:
        assert lib in ldd and pkg in text, lib


def test_compose_uses_the_image_and_installs_nothing_at_start():
    with open(os.path.join(ROOT, "compose.yaml")) as f:
        text = f.read()
    compose = yaml.safe_load(text)
    assert "apt-get" not in text
    nodes = {n: s for n, s in compose["services"].items() if s.get("image") == "playground:local"}
    assert {"migrate", "gateway1", "gateway2", "worker1", "worker2", "model-east", "model-west"} <= set(nodes)
    for n, s in nodes.items():
        assert s.get("read_only") is True, n
        assert s["build"] == "." if "build" in s else True
    for n in ("gateway1", "gateway2"):
        args = nodes[n]["command"]
        assert args[args.index("--fleet-advertise") + 1] == n
        helptext = subprocess.run([BINARY, "gateway", "--help"], capture_output=True, text=True, timeout=30).stdout
        for flag in [a for a in args if a.startswith("--")]:
            assert flag in helptext, flag
