"""The Docker files agree with the application: settings variables, ports, roles and the GPU profile.

The files are only parsed here; no Docker engine runs on the development machine (docker/README.md).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from segue.indexing.profiles import PROFILES
from segue.settings import SegueSettings, ServeSettings, StreamSettings, load_settings
from segue.streaming.kafka_jars import kafka_version

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
COMPOSE_GPU = DOCKER / "compose.gpu.yml"
DOCKERFILE = DOCKER / "Dockerfile"
ENTRYPOINT = DOCKER / "entrypoint.sh"
APP_IMAGE = "segue:latest"


def services(path: Path) -> dict[str, dict]:
    return yaml.safe_load(path.read_text())["services"]


def environment(service: dict) -> dict[str, str | None]:
    """A service's environment in either Compose form; None means "passed through from the shell"."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: None if v is None else _interpolate(str(v)) for k, v in env.items()}


def _interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` and `${VAR-default}` as they read with VAR unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)


def setting_path(variable: str) -> tuple[str, ...] | None:
    """`SEGUE_INDEX__URI` -> ("index", "uri") when that is a settings field, else None."""
    parts = tuple(variable.removeprefix("SEGUE_").lower().split("__"))
    model: type[BaseModel] | None = SegueSettings
    for part in parts:
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return None if model else parts  # a whole section is not one variable


def container_ports(service: dict) -> set[int]:
    """The container side of `ports` entries ("9092:29092" -> 29092)."""
    return {int(str(p).split(":")[-1].split("/")[0]) for p in service.get("ports", [])}


def entrypoint_roles() -> dict[str, str]:
    """Each role of entrypoint.sh's `case` with the command line of its branch."""
    body = re.search(r'case "\$role" in\n(.*?)\nesac', ENTRYPOINT.read_text(), re.S)
    assert body, f"{ENTRYPOINT.name}: no `case \"$role\" in ... esac` block"
    roles = {}
    for patterns, command in re.findall(r"^\s*([^\s#()]+)\)\s*(.*?)\s*;;", body.group(1), re.M):
        roles.update({p: command for p in patterns.split("|") if p != "*"})
    return roles


def dockerfile_instructions(name: str) -> list[str]:
    """The arguments of every `name` instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", text, re.M)]


BASE = services(COMPOSE)
GPU = services(COMPOSE_GPU)
APP_SERVICES = sorted(name for name, s in BASE.items() if s.get("image") == APP_IMAGE and environment(s))


def app_environment(name: str) -> dict[str, str]:
    return {k: v for k, v in environment(BASE[name]).items() if k.startswith("SEGUE_") and v is not None}


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_every_segue_variable_is_a_setting(path):
    unknown = [f"{path.name}: service {name!r}: {variable} is not a setting (segue/settings.py)"
               for name, service in services(path).items()
               for variable in environment(service)
               if variable.startswith("SEGUE_") and setting_path(variable) is None]
    unknown += [f"{DOCKERFILE.name}: ENV {variable} is not a setting (segue/settings.py)"
                for line in dockerfile_instructions("ENV")
                for variable in re.findall(r"\b(SEGUE_\w+)=", line)
                if setting_path(variable) is None]
    assert not unknown, "\n".join(unknown)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_environment_loads_as_settings(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./segue.yaml in the way
    for variable in [v for v in os.environ if v.startswith("SEGUE_")]:
        monkeypatch.delenv(variable)
    env = app_environment(name)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)

    settings = load_settings()

    for variable, value in env.items():
        loaded = settings
        for part in setting_path(variable):
            loaded = getattr(loaded, part)
        assert str(loaded) == value, f"{COMPOSE.name}: service {name!r}: {variable}={value!r} loads as {loaded!r}"
    # The stack runs Redis and a Milvus server: the app must use them, not its local fallbacks.
    assert settings.features.profile == "redis", \
        f"{COMPOSE.name}: service {name!r}: SEGUE_FEATURES__PROFILE={settings.features.profile!r} is not redis"
    assert PROFILES[settings.index.profile].engine == "server", \
        f"{COMPOSE.name}: service {name!r}: SEGUE_INDEX__PROFILE={settings.index.profile!r} is not a server profile"


def test_api_port_is_the_serve_default():
    port = ServeSettings().port
    assert port in container_ports(BASE["api"]), \
        f"{COMPOSE.name}: service 'api' ports {BASE['api'].get('ports')} lack serve.port {port}"
    serve = entrypoint_roles()["serve"]
    assert f"--port {port}" in serve, f"{ENTRYPOINT.name}: serve runs `{serve}`, not on serve.port {port}"


def test_stream_port_is_the_health_port_default():
    port = StreamSettings().health_port
    assert port in container_ports(BASE["stream"]), \
        f"{COMPOSE.name}: service 'stream' ports {BASE['stream'].get('ports')} lack stream.health_port {port}"


def test_every_published_port_is_bound_to_the_loopback_interface():
    """No service here asks for a password: the host publishes them on 127.0.0.1 only."""
    for name, service in BASE.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), \
                f"{COMPOSE.name}: service {name!r} publishes {port!r} on every host interface; use 127.0.0.1:{port}"


def test_milvus_uri_names_the_milvus_service_and_port():
    uri = urlsplit(app_environment("api")["SEGUE_INDEX__URI"])
    assert uri.hostname in BASE, f"{COMPOSE.name}: SEGUE_INDEX__URI host {uri.hostname!r} is not a service"
    assert uri.port in container_ports(BASE[uri.hostname]), \
        f"{COMPOSE.name}: SEGUE_INDEX__URI port {uri.port} is not a port of service {uri.hostname!r}"


def test_kafka_bootstrap_is_an_advertised_listener():
    bootstrap = app_environment("stream")["SEGUE_KAFKA__BOOTSTRAP_SERVERS"]
    host = bootstrap.split(":")[0]
    assert host in BASE, f"{COMPOSE.name}: SEGUE_KAFKA__BOOTSTRAP_SERVERS host {host!r} is not a service"
    kafka = environment(BASE[host])
    advertised = {urlsplit(url).netloc: urlsplit(url).scheme
                  for url in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert bootstrap in advertised, \
        f"{COMPOSE.name}: service {host!r}: KAFKA_ADVERTISED_LISTENERS has no {bootstrap} (SEGUE_KAFKA__BOOTSTRAP_SERVERS)"
    listening = {urlsplit(url).scheme: urlsplit(url).port for url in kafka["KAFKA_LISTENERS"].split(",")}
    name = advertised[bootstrap]
    assert listening.get(name) == urlsplit(f"//{bootstrap}").port, \
        f"{COMPOSE.name}: service {host!r}: KAFKA_LISTENERS {name} is not on the advertised port of {bootstrap}"


def test_kafka_image_is_the_broker_version_the_tests_run():
    image = BASE["kafka"]["image"]
    assert image.endswith(f":{kafka_version()}"), \
        f"{COMPOSE.name}: service 'kafka' image {image} differs from kafka.version {kafka_version()} " \
        "(streaming/kafka/pom.xml)"


def test_redis_connection_string_names_the_redis_service_and_port():
    address = app_environment("api")["SEGUE_FEATURES__REDIS_CONNECTION_STRING"].split(",")[0]
    host, port = address.split(":")
    assert host in BASE, f"{COMPOSE.name}: SEGUE_FEATURES__REDIS_CONNECTION_STRING host {host!r} is not a service"
    assert int(port) in container_ports(BASE[host]), \
        f"{COMPOSE.name}: SEGUE_FEATURES__REDIS_CONNECTION_STRING port {port} is not a port of service {host!r}"


def test_spark_master_url_names_the_master_service_and_port():
    master = app_environment("api")["SEGUE_SPARK__MASTER"]
    url = urlsplit(master)
    assert url.scheme == "spark" and url.hostname in BASE, \
        f"{COMPOSE.name}: SEGUE_SPARK__MASTER {master} does not name a service"
    command = BASE[url.hostname]["command"]
    options = dict(zip(command[1::2], command[2::2]))
    assert options.get("--host") == url.hostname and options.get("--port") == str(url.port), \
        f"{COMPOSE.name}: service {url.hostname!r} command {command} does not listen on {master}"
    assert master in BASE["spark-worker"]["command"], \
        f"{COMPOSE.name}: service 'spark-worker' command {BASE['spark-worker']['command']} does not join {master}"


def test_depends_on_names_existing_services():
    missing = [f"{COMPOSE.name}: service {name!r}: depends_on {dependency!r} is not a service"
               for name, service in BASE.items() for dependency in service.get("depends_on", {})
               if dependency not in BASE]
    assert not missing, "\n".join(missing)


def test_app_image_commands_are_entrypoint_roles():
    roles = entrypoint_roles()
    wrong = [f"{COMPOSE.name}: service {name!r}: command {service['command'][0]!r} is not a role of "
             f"{ENTRYPOINT.name} ({sorted(roles)})"
             for name, service in BASE.items()
             if service.get("image") == APP_IMAGE and service["command"][0] not in roles]
    assert not wrong, "\n".join(wrong)


def test_entrypoint_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, f"{ENTRYPOINT.name}: {result.stderr}"


def test_gpu_override_runs_gpu_milvus_with_a_gpu_profile():
    milvus = GPU["milvus"]
    assert milvus["image"] == BASE["milvus"]["image"] + "-gpu", \
        f"{COMPOSE_GPU.name}: service 'milvus' image {milvus['image']} is not the GPU build of {BASE['milvus']['image']}"
    devices = milvus["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), \
        f"{COMPOSE_GPU.name}: service 'milvus' reserves no nvidia GPU: {devices}"

    assert set(GPU) <= set(BASE), f"{COMPOSE_GPU.name}: services {sorted(set(GPU) - set(BASE))} not in {COMPOSE.name}"
    for name in (n for n in BASE if "SEGUE_INDEX__PROFILE" in environment(BASE[n])):
        profile = environment(GPU.get(name, {})).get("SEGUE_INDEX__PROFILE")
        assert profile in PROFILES and PROFILES[profile].gpu, \
            f"{COMPOSE_GPU.name}: service {name!r}: SEGUE_INDEX__PROFILE={profile!r} is not a GPU index profile " \
            f"({sorted(p for p in PROFILES if PROFILES[p].gpu)})"


def test_dockerfile_installs_the_lock_java_and_exposes_the_ports():
    runs = " ".join(dockerfile_instructions("RUN"))
    assert "requirements.lock" in " ".join(dockerfile_instructions("COPY")) \
        and re.search(r"pip install [^&]*-r requirements\.lock", runs), \
        f"{DOCKERFILE.name}: RUN pip install -r requirements.lock missing"
    assert "openjdk-17-jre-headless" in runs, f"{DOCKERFILE.name}: no Java 17 (Spark needs it)"
    exposed = {int(p) for line in dockerfile_instructions("EXPOSE") for p in line.split()}
    for setting, port in (("serve.port", ServeSettings().port), ("stream.health_port", StreamSettings().health_port)):
        assert port in exposed, f"{DOCKERFILE.name}: EXPOSE {sorted(exposed)} lacks {setting} {port}"


def test_dockerfile_entrypoint_is_the_copied_script():
    copies = [line.split() for line in dockerfile_instructions("COPY")]
    destination = next((c[-1] for c in copies if c[-2] == "docker/entrypoint.sh"), None)
    assert destination, f"{DOCKERFILE.name}: docker/entrypoint.sh is never copied"
    (entrypoint,) = dockerfile_instructions("ENTRYPOINT")
    assert destination in entrypoint, f"{DOCKERFILE.name}: ENTRYPOINT {entrypoint} does not run {destination}"
    assert ENTRYPOINT.is_file(), f"{DOCKERFILE.name}: copies {ENTRYPOINT.relative_to(ROOT)}, which does not exist"


def test_dockerfile_copies_every_package_and_dockerignore_keeps_them():
    """A stage folder missing from the image, or dropped by .dockerignore, would only fail at build time."""
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    sources = [s.rstrip("/") for line in dockerfile_instructions("COPY") if "--from" not in line
               for s in line.split()[:-1] if not s.startswith("--")]
    for source in sources:
        assert (ROOT / source).exists(), f"{DOCKERFILE.name}: COPY {source}: no such path"
        assert not any(fnmatch.fnmatch(source, p.removeprefix("**/")) for p in ignored), \
            f".dockerignore excludes {source}, which {DOCKERFILE.name} copies"
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    missing = sorted(set(package_dirs.values()) - set(sources))
    assert not missing, f"{DOCKERFILE.name}: package folders {missing} (pyproject.toml) are not copied"


PROMETHEUS = DOCKER / "prometheus.yml"
GRAFANA = DOCKER / "grafana"


def emitted_metrics() -> dict[str, set[str]]:
    """Every sample name the API and the stream daemon expose, with its label names: rendered by the
    real collectors after one observation of each kind, as Prometheus scrapes them."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from segue.serving.api_metrics import ServingMetrics
    from segue.streaming.daemon_metrics import StreamMetrics

    api = ServingMetrics()
    api.requests.inc("/v1/recommendations 200")
    api.request_seconds.observe(0.01, "/v1/recommendations")
    api.stage_seconds.observe(0.002, "search")
    api.dependency_failures.inc("milvus")
    api.partial.inc()
    api.target = ("tracks_v1", "v1")
    stream = StreamMetrics()
    stream.events.inc("indexed")
    stream.failures.inc("write")
    stream.lag.set("0", 3)
    stream.committed(1, 0.0)
    stream.freshness.observe(0.5)
    stream.batch_seconds.observe(0.1)
    stream.stage_seconds.observe(0.05, "feast_push")
    names: dict[str, set[str]] = {}
    for registry in (api.registry, stream.registry):
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads((GRAFANA / "dashboards" / "segue.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_dashboard_queries_name_metrics_and_labels_the_code_emits():
    emitted = emitted_metrics()
    queries = dashboard_queries()
    assert queries, "the Segue dashboard has no queries"
    for expr in queries:
        used = re.findall(r"\b(segue_[a-z_]+)\b(?:\{([^}]*)\})?", expr)
        assert used, f"{expr!r} reads no Segue metric"
        labels = {label for name, _ in used for label in emitted.get(name, ())} | {"le"}
        for name, selector in used:
            assert name in emitted, f"dashboard query {expr!r}: {name} is not emitted; the code emits {sorted(emitted)}"
            for label in re.findall(r"(\w+)\s*=~?", selector):
                assert label in emitted[name], f"dashboard query {expr!r}: {name} has no label {label!r}"
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",")):
                assert label in labels, f"dashboard query {expr!r} groups by {label!r}, which its metrics lack"
    # Every family is on the dashboard: what the code measures, an operator sees.
    shown = {re.sub(r"_(total|bucket|sum|count|created)$", "", m) for expr in queries
             for m in re.findall(r"\bsegue_[a-z_]+", expr)}
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", m) for m in emitted}
    missing = families - shown - {"segue_api_serving_target", "segue_api_target_swaps", "segue_stream_batches",
                                  "segue_stream_events_per_second", "segue_stream_batch_seconds"}
    assert not missing, f"metrics on no dashboard panel: {sorted(missing)}"


def test_dashboard_endpoint_labels_are_api_routes():
    from segue.serving.app import create_app
    from segue.settings import SegueSettings

    routes = set(create_app(SegueSettings()).openapi()["paths"])
    for expr in dashboard_queries():
        for endpoint in re.findall(r'endpoint="([^"]+)"', expr):
            assert endpoint in routes, f"dashboard query {expr!r}: no API route {endpoint!r}; routes: {sorted(routes)}"


def test_prometheus_scrapes_the_api_and_the_stream_on_their_ports():
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {target for job in config["scrape_configs"] for group in job["static_configs"]
               for target in group["targets"]}
    assert targets == {f"api:{ServeSettings().port}", f"stream:{StreamSettings().health_port}"}, targets
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"])


def test_grafana_and_prometheus_services_mount_their_files():
    mounts = {name: [str(v).split(":")[0] for v in BASE[name]["volumes"]] for name in ("prometheus", "grafana")}
    assert "./prometheus.yml" in mounts["prometheus"], mounts
    assert {"./grafana/provisioning", "./grafana/dashboards"} <= set(mounts["grafana"]), mounts
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "segue.yml").read_text())
    dashboards_in_container = next(v.split(":")[1] for v in BASE["grafana"]["volumes"]
                                   if v.startswith("./grafana/dashboards"))
    assert provider["providers"][0]["options"]["path"] == dashboards_in_container
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert urlsplit(source["url"]).hostname == "prometheus" and urlsplit(source["url"]).port == 9090
    assert all(t["datasource"]["uid"] == source["uid"] for p in json.loads(
        (GRAFANA / "dashboards" / "segue.json").read_text())["panels"] for t in p["targets"])
