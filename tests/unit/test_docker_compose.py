"""Static checks of the Docker path (Dockerfile, docker-compose.yml, deploy/docker/): no engine needed.

The compose file is validated against the compose-spec JSON schema that check-jsonschema ships, and kept in
step with the local topology: the ports of scripts/services, the defaults of core/settings.py, the routes
of the ops API and the metrics of core/metrics.py.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shlex
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from core.settings import Settings
from core.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy" / "docker"
PROMETHEUS_CONFIG = DEPLOY / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "fraud-scorer.json"
SCHEMA_PACKAGE = "check-jsonschema==0.38.0"

SCORER_SERVICES = {"topics", "trainer", "worker", "simulator"}
SCORER_COMMANDS = {"topics": ["topics"], "trainer": ["train"], "worker": ["worker"],
                   "simulator": ["simulate", "--kafka", "--rate", "200", "--days", "30"]}


# ---- loading -----------------------------------------------------------------------------------
def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def compose_spec_schema() -> dict:
    """The compose-spec schema vendored by check-jsonschema, read without importing its CLI."""
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"the compose-spec schema comes from a test dependency: pip install {SCHEMA_PACKAGE}")
    path = Path(list(spec.submodule_search_locations)[0]) / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text())


def schema_errors(document: dict) -> list[str]:
    schema = compose_spec_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path)))]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: None if v is None else str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in env.items()}


def command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def published_ports(service: dict) -> dict[int, int]:
    """host port -> container port, from short ("[ip:]host:container[/proto]") or long syntax."""
    out: dict[int, int] = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out[int(entry["published"])] = int(entry["target"])
            continue
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) in (2, 3), f"port {entry!r} publishes no fixed host port"
        out[int(parts[-2])] = int(parts[-1])
    return out


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) for each volume entry, short or long syntax."""
    out = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            out.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            parts = str(entry).split(":")
            out.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return out


def host_path(service: dict, container_path: str) -> Path | None:
    """The file on the host that a bind mount of `service` shows at `container_path`."""
    target = PurePosixPath(container_path)
    for source, mount_target in mounts(service):
        if source.startswith((".", "/")) and (target == PurePosixPath(mount_target)
                                              or PurePosixPath(mount_target) in target.parents):
            return (ROOT / source / target.relative_to(mount_target)).resolve()
    return None


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def url_port(url: str) -> int:
    return urlsplit(url if "://" in url else f"//{url}").port


def kafka_listeners(value: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in value.split(","):
        name, address = item.split("://", 1)
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


# ---- the local topology that the compose file must follow -------------------------------------
def services_script_ports() -> dict[str, int]:
    text = (ROOT / "scripts" / "services").read_text()
    ports = {name: int(port) for name, port in re.findall(r"\b([A-Z]+)_PORT=(\d+)\b", text)}
    assert {"KAFKA", "CONTROLLER", "REGISTRY", "REDIS", "MLFLOW"} <= set(ports), ports
    return ports


def settings_default(field: str):
    return Settings.model_fields[field].default


def local_kafka_properties() -> dict[str, str]:
    props = {}
    for line in (ROOT / "deploy" / "local" / "kafka.properties").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def ops_api_get_routes() -> set[str]:
    from ops_api.app import create_api

    app = create_api(Settings(auth="disabled"), Metrics())
    return {route.resource.canonical for route in app.router.routes() if route.method == "GET"}


# ---- Dockerfile --------------------------------------------------------------------------------
def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions (KEYWORD, arguments) grouped by build stage; continuations joined, comments dropped."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        assert stages, f"instruction before FROM: {line}"
        stages[-1].append((keyword.upper(), args.strip()))
    return stages


def instructions(stage, keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return value


# ---- PromQL ------------------------------------------------------------------------------------
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                   "unless", "offset", "inf", "nan", "atan2"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)        # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)                                         # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                                        # ranges, subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)                                       # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def exported_metric_names() -> set[str]:
    """Every series name core.metrics.Metrics can expose, by metric type."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "gauge": ("",), "summary": ("", "_count", "_sum", "_created")}
    names = set()
    for family in Metrics().registry.collect():
        names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    return [(p.get("title", "?"), t["expr"]) for p in panels(board["panels"]) for t in p.get("targets", [])
            if t.get("expr")]


# ================================================================================================
def test_compose_file_is_valid_against_the_compose_spec(compose):
    errors = schema_errors(compose)
    assert not errors, "docker-compose.yml breaks the compose spec:\n" + "\n".join(errors)


def test_the_compose_spec_check_rejects_a_broken_file(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["depends_on"]["trainer"]["condition"] = "service_finished"
    broken["services"]["redis"]["helthcheck"] = {"test": ["CMD", "true"]}
    errors = schema_errors(broken)
    assert any("services/worker/depends_on" in e for e in errors), errors
    assert any("helthcheck" in e for e in errors), errors


def test_compose_file_has_no_obsolete_version_key(compose):
    assert "version" not in compose


def test_compose_ports_match_the_local_services_script(services):
    script = services_script_ports()
    settings_ports = {"KAFKA": url_port(settings_default("kafka_bootstrap")),
                      "REGISTRY": url_port(settings_default("schema_registry_url")),
                      "REDIS": url_port(settings_default("redis_url")),
                      "MLFLOW": url_port(settings_default("mlflow_uri"))}
    for name, port in settings_ports.items():
        assert port == script[name], f"core/settings.py and scripts/services disagree on {name}"

    expected = {"kafka": script["KAFKA"], "schema-registry": script["REGISTRY"], "redis": script["REDIS"],
                "mlflow": script["MLFLOW"], "worker": settings_default("api_port"),
                "kafka-ui": 8080, "prometheus": 9090, "grafana": 3000}
    for service, port in expected.items():
        assert port in published_ports(services[service]), (
            f"{service} should publish host port {port}, publishes {published_ports(services[service])}")

    # Inside the network, each service listens where the scorer is told to look.
    assert published_ports(services["schema-registry"])[script["REGISTRY"]] == script["REGISTRY"]
    registry_listener = environment(services["schema-registry"])["SCHEMA_REGISTRY_LISTENERS"]
    assert url_port(registry_listener) == script["REGISTRY"]
    assert published_ports(services["redis"])[script["REDIS"]] == script["REDIS"]
    assert published_ports(services["mlflow"])[script["MLFLOW"]] == script["MLFLOW"]
    mlflow_cmd = command(services["mlflow"])
    assert mlflow_cmd[mlflow_cmd.index("--port") + 1] == str(script["MLFLOW"])
    assert published_ports(services["worker"])[settings_default("api_port")] == settings_default("api_port")

    # A host port is published by one service only.
    seen: dict[int, str] = {}
    for name, service in services.items():
        for port in published_ports(service):
            assert port not in seen, f"host port {port} published by {seen[port]} and {name}"
            seen[port] = name


def test_kafka_listeners_match_the_addresses_clients_are_given(services):
    script = services_script_ports()
    env = environment(services["kafka"])
    listeners = kafka_listeners(env["KAFKA_LISTENERS"])
    advertised = kafka_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))

    assert set(listeners) <= set(protocols), "every listener needs a security protocol"
    assert listeners["PLAINTEXT"][1] == script["KAFKA"]
    assert advertised["PLAINTEXT"] == ("kafka", script["KAFKA"])
    assert listeners["CONTROLLER"][1] == script["CONTROLLER"]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    voters = env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") or env.get("KAFKA_CONTROLLER_QUORUM_BOOTSTRAP_SERVERS")
    assert voters and voters.split("@")[-1] == f"kafka:{script['CONTROLLER']}"
    assert voters.split("@")[0] == env["KAFKA_NODE_ID"] or "@" not in voters

    # Every published port lands on a listener that advertises the address a host client can use.
    by_port = {port: name for name, (_, port) in listeners.items()}
    for host_port, container_port in published_ports(services["kafka"]).items():
        name = by_port.get(container_port)
        assert name and name != "CONTROLLER", f"host port {host_port} reaches no client listener"
        assert advertised[name] == ("localhost", host_port), (
            f"a host client on {host_port} would be redirected to {advertised[name]}")

    cluster_id = env["CLUSTER_ID"]
    raw = base64.urlsafe_b64decode(cluster_id + "==")
    assert len(raw) == 16 and base64.urlsafe_b64encode(raw).decode().rstrip("=") == cluster_id


def test_kafka_container_matches_the_local_broker_settings(services):
    env = environment(services["kafka"])
    local = local_kafka_properties()
    for key in ("node.id", "process.roles", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor", "transaction.state.log.min.isr",
                "share.coordinator.state.topic.replication.factor", "share.coordinator.state.topic.min.isr",
                "group.initial.rebalance.delay.ms"):
        env_key = "KAFKA_" + key.upper().replace(".", "_")
        assert env.get(env_key) == local[key], f"{env_key}={env.get(env_key)}, deploy/local has {local[key]}"
    assert int(env["KAFKA_NUM_PARTITIONS"]) == settings_default("partitions")
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"


def test_every_scorer_service_gets_every_service_address(services):
    script = services_script_ports()
    scorer_image = services["worker"]["image"]
    scorers = {name for name, s in services.items() if s.get("image") == scorer_image}
    assert scorers == SCORER_SERVICES

    expected = {
        "FRAUD_KAFKA_BOOTSTRAP": f"kafka:{script['KAFKA']}",
        "FRAUD_SCHEMA_REGISTRY_URL": f"http://schema-registry:{script['REGISTRY']}",
        "FRAUD_REDIS_URL": f"redis://redis:{script['REDIS']}/0",
        "FRAUD_MLFLOW_URI": f"http://mlflow:{script['MLFLOW']}",
        "FRAUD_API_HOST": "0.0.0.0",
    }
    fields = {f"FRAUD_{name.upper()}" for name in Settings.model_fields}
    for name in sorted(scorers):
        env = environment(services[name])
        for key, value in expected.items():
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}, expected {value!r}"
        assert "/apis/ccompat" not in env["FRAUD_SCHEMA_REGISTRY_URL"], "Confluent's API is at the root"
        unknown = {k for k in env if k.startswith("FRAUD_")} - fields
        assert not unknown, f"{name}: {unknown} are not core.settings.Settings fields"
        for key in expected:
            host = urlsplit(env[key] if "://" in env[key] else f"//{env[key]}").hostname
            assert host == "0.0.0.0" or host in services, f"{name}: {key} names no compose service"
        assert command(services[name]) == SCORER_COMMANDS[name]


def test_scorer_state_lives_on_a_writable_volume(compose, services):
    named_volumes = set(compose.get("volumes") or {})
    for name in SCORER_SERVICES:
        env = environment(services[name])
        volume_targets = {PurePosixPath(target): source for source, target in mounts(services[name])}
        for key in ("FRAUD_MODEL_CACHE_DIR", "FRAUD_STATE_DIR"):
            path = PurePosixPath(env[key])
            hits = [t for t in volume_targets if t == path or t in path.parents]
            assert hits, f"{name}: {key}={path} is on no volume"
            assert all(volume_targets[t] in named_volumes for t in hits), f"{name}: {key} on no named volume"

    # The image creates those dirs for its non-root user, so a fresh named volume inherits the owner.
    final = dockerfile_stages(DOCKERFILE.read_text())[-1]
    run = " ".join(instructions(final, "RUN"))
    for key in ("FRAUD_MODEL_CACHE_DIR", "FRAUD_STATE_DIR"):
        assert environment(services["worker"])[key] in run


def test_dependencies_name_services_and_wait_on_what_they_can_report(services):
    final = dockerfile_stages(DOCKERFILE.read_text())[-1]
    image_has_healthcheck = bool(instructions(final, "HEALTHCHECK"))
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            target = services[dep]
            if condition == "service_healthy":
                check = target.get("healthcheck") or {}
                inherited = dep in SCORER_SERVICES and image_has_healthcheck
                assert not check.get("disable") and (check.get("test") or inherited), (
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")
            if condition == "service_completed_successfully":
                assert target.get("restart", "no") == "no", f"{dep} is waited on to exit: it must not restart"


def test_scorer_services_start_in_order_topics_train_worker_simulate(services):
    assert depends_on(services["topics"]) == {"kafka": "service_healthy",
                                              "schema-registry": "service_healthy"}
    assert depends_on(services["trainer"])["topics"] == "service_completed_successfully"
    assert {"mlflow", "redis"} <= set(depends_on(services["trainer"]))
    assert depends_on(services["worker"])["trainer"] == "service_completed_successfully"
    assert "worker" in depends_on(services["simulator"])
    for service in ("kafka", "schema-registry", "redis", "mlflow", "postgres"):
        assert services[service].get("healthcheck", {}).get("test"), f"{service} has no healthcheck"


def test_backing_services_use_the_agreed_images_and_settings(services):
    assert services["schema-registry"]["image"] == "confluentinc/cp-schema-registry:7.7.1"
    registry = environment(services["schema-registry"])
    assert registry["SCHEMA_REGISTRY_HOST_NAME"] == "schema-registry"
    kafka_port = services_script_ports()["KAFKA"]
    assert registry["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == f"kafka:{kafka_port}"

    assert services["kafka-ui"]["image"].startswith("ghcr.io/kafbat/kafka-ui:")
    ui = environment(services["kafka-ui"])
    assert ui["KAFKA_CLUSTERS_0_NAME"]
    scorer = environment(services["worker"])
    assert ui["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == scorer["FRAUD_KAFKA_BOOTSTRAP"]
    assert ui["KAFKA_CLUSTERS_0_SCHEMAREGISTRY"] == scorer["FRAUD_SCHEMA_REGISTRY_URL"]

    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"


def test_mlflow_server_uses_postgres_and_the_client_version_of_the_scorer(services):
    cmd = command(services["mlflow"])
    option = lambda flag: cmd[cmd.index(flag) + 1]  # noqa: E731
    assert cmd[:2] == ["mlflow", "server"]
    assert option("--host") == "0.0.0.0"
    store = urlsplit(option("--backend-store-uri"))
    assert store.scheme.startswith("postgresql") and store.hostname == "postgres"
    pg = environment(services["postgres"])
    assert (store.username, store.password, store.path.lstrip("/")) == (
        pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    artifacts = option("--artifacts-destination")
    assert any(target == artifacts for _, target in mounts(services["mlflow"])), "artifacts not on a volume"

    port = services_script_ports()["MLFLOW"]
    allowed = set(option("--allowed-hosts").split(","))
    hosts = {"mlflow", "localhost", "127.0.0.1"}
    assert hosts | {f"{host}:{port}" for host in hosts} <= allowed

    build = services["mlflow"]["build"]
    dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
    pinned = re.search(r"^mlflow==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert re.search(rf"MLFLOW_VERSION={re.escape(pinned)}\b", dockerfile), (
        f"mlflow server image should run mlflow {pinned}, the client pinned in constraints.txt")
    assert "psycopg2-binary" in dockerfile


def test_compose_files_and_build_contexts_exist(services):
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: no build context {context}"
            in_context = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            dockerfile = context / in_context
            assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        for source, _ in mounts(service):
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount source {source} is missing"


def test_grafana_dashboard_queries_only_metrics_the_scorer_exports():
    exported = exported_metric_names()
    exprs = dashboard_exprs()
    assert exprs, "the dashboard has no queries"
    for title, expr in exprs:
        names = promql_metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"panel {title!r} queries {sorted(unknown)}, not in core/metrics.py"


def test_the_promql_name_check_catches_a_misspelt_metric():
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(fraud_end_to_end_latency_ms_bucket{job="x"}[1m])))'
    ) == {"fraud_end_to_end_latency_ms_bucket"}
    assert promql_metric_names("sum(rate(a_total[5m])) / ignoring(x) sum(b_count offset 5m)") == {
        "a_total", "b_count"}
    assert "fraud_decision_total" not in exported_metric_names()
    assert "fraud_consumer_lag_total" not in exported_metric_names()       # a gauge has no _total
    assert "fraud_decisions_total" in exported_metric_names()


def test_grafana_dashboard_shows_the_scorer_key_signals():
    queried = {name for _, expr in dashboard_exprs() for name in promql_metric_names(expr)}
    required = {"fraud_transactions_scored_total", "fraud_decisions_total", "fraud_dead_letters_total",
                "fraud_end_to_end_latency_ms_bucket", "fraud_batch_scoring_seconds_bucket",
                "fraud_consumer_lag", "fraud_model_version", "fraud_drift_psi"}
    assert required <= queried, f"missing panels for {sorted(required - queried)}"
    exprs = [expr for _, expr in dashboard_exprs()]
    for pattern in (r"^histogram_quantile\(0\.50?\s*,[^,]*\bfraud_end_to_end_latency_ms_bucket\b",
                    r"^histogram_quantile\(0\.99\s*,[^,]*\bfraud_end_to_end_latency_ms_bucket\b",
                    r"^histogram_quantile\(0\.99\s*,[^,]*\bfraud_batch_scoring_seconds_bucket\b",
                    r"\bby \(decision\).*\bfraud_decisions_total\b"):
        assert any(re.search(pattern, expr) for expr in exprs), f"no query matches {pattern}"


def test_prometheus_loads_the_drift_alert_psi_above_0_2_for_15_minutes_on_exported_metrics(services):
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    [rule_file] = config["rule_files"]
    source = host_path(services["prometheus"], rule_file)
    assert source and source.is_file(), f"{rule_file} is not mounted into the prometheus service"
    rules = [rule for group in yaml.safe_load(source.read_text())["groups"] for rule in group["rules"]]
    [drift] = [rule for rule in rules if rule["alert"] == "FraudInputDrift"]
    assert drift["for"] == "15m"
    assert re.search(r"\bfraud_drift_psi\)\s*>\s*0\.2\b", drift["expr"]), drift["expr"]
    assert promql_metric_names(drift["expr"]) <= exported_metric_names()


def test_grafana_provisioning_finds_the_dashboard_and_the_prometheus_datasource(services):
    grafana = services["grafana"]
    datasources_dir = host_path(grafana, "/etc/grafana/provisioning/datasources")
    dashboards_dir = host_path(grafana, "/etc/grafana/provisioning/dashboards")
    assert datasources_dir and (datasources_dir / "prometheus.yml").is_file()
    assert dashboards_dir and (dashboards_dir / "dashboards.yml").is_file()

    datasources = yaml.safe_load((datasources_dir / "prometheus.yml").read_text())["datasources"]
    prometheus = [d for d in datasources if d["type"] == "prometheus"]
    assert len(prometheus) == 1
    source = urlsplit(prometheus[0]["url"])
    assert source.hostname == "prometheus" and source.port == 9090 and "prometheus" in services

    providers = yaml.safe_load((dashboards_dir / "dashboards.yml").read_text())["providers"]
    found = [host_path(grafana, p["options"]["path"]) for p in providers]
    assert DASHBOARD.resolve() in {f / DASHBOARD.name for f in found if f}, "no provider loads the dashboard"

    board = json.loads(DASHBOARD.read_text())
    uids = {json.dumps(p.get("datasource"), sort_keys=True) for p in board["panels"]}
    uids |= {json.dumps(t.get("datasource"), sort_keys=True)
             for p in board["panels"] for t in p.get("targets", [])}
    assert uids == {json.dumps({"type": "prometheus", "uid": prometheus[0]["uid"]}, sort_keys=True)}
    assert board["uid"] and board["title"]


def test_prometheus_scrapes_the_worker_metrics_path(services):
    assert host_path(services["prometheus"], "/etc/prometheus/prometheus.yml") == PROMETHEUS_CONFIG.resolve()
    assert "--config.file=/etc/prometheus/prometheus.yml" in command(services["prometheus"])

    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    api_port = settings_default("api_port")
    jobs = [job for job in config["scrape_configs"]
            if any(f"worker:{api_port}" in sc.get("targets", []) for sc in job.get("static_configs", []))]
    assert len(jobs) == 1, "exactly one job should scrape the worker's ops API"
    path = jobs[0].get("metrics_path", "/metrics")
    assert path == "/metrics/prometheus"
    assert path in ops_api_get_routes(), f"the ops API serves no {path}"
    assert published_ports(services["worker"])[api_port] == api_port


def test_dockerfile_runs_as_a_non_root_user():
    stages = dockerfile_stages(DOCKERFILE.read_text())
    final = stages[-1]
    users = instructions(final, "USER")
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"} and user == "scorer"
    assert re.search(r"useradd\b.*\bscorer\b", " ".join(instructions(final, "RUN")))
    # Nothing after the last USER switches back, and the entry point comes after it.
    keywords = [kw for kw, _ in final]
    last_user = max(i for i, kw in enumerate(keywords) if kw == "USER")
    assert keywords.index("ENTRYPOINT") > last_user


def test_dockerfile_builds_in_stages_and_installs_with_the_constraints():
    stages = dockerfile_stages(DOCKERFILE.read_text())
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    builder, final = stages[0], stages[-1]
    assert instructions(final, "FROM")[0].split()[0] == "python:3.11-slim"
    # The venv's interpreter links point into the base image: both stages must use the same one.
    assert instructions(builder, "FROM")[0].split()[0] == instructions(final, "FROM")[0].split()[0]
    pyproject = (ROOT / "pyproject.toml").read_text()
    requires = re.search(r'requires-python\s*=\s*">=(\d+\.\d+)', pyproject).group(1)
    assert instructions(final, "FROM")[0].startswith(f"python:{requires}")
    builder_name = instructions(builder, "FROM")[0].split()[-1]
    assert any(re.search(r"pip install\b.*-c constraints\.txt\s+\.(\s|$)", run)
               for run in instructions(builder, "RUN"))
    copies = instructions(final, "COPY")
    assert any(f"--from={builder_name}" in c and "/opt/venv" in c for c in copies), "no venv from builder"
    assert "/app" == instructions(final, "WORKDIR")[-1]
    assert exec_form(instructions(final, "ENTRYPOINT")[-1]) == ["fraud"]
    assert exec_form(instructions(final, "CMD")[-1]) == ["worker"]
    assert str(settings_default("api_port")) in instructions(final, "EXPOSE")[-1].split()
    env = " ".join(instructions(final, "ENV"))
    assert "/opt/venv/bin" in env


def test_dockerfile_copies_every_package_the_project_declares():
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = json.loads(re.search(r"^packages\s*=\s*(\[.*\])", pyproject, re.M).group(1))
    final = dockerfile_stages(DOCKERFILE.read_text())[-1]
    copied = {PurePosixPath(source).name for copy in instructions(final, "COPY") if "--from" not in copy
              for source in copy.split()[:-1] if not source.startswith("--")}
    for package in packages:
        assert package in copied, f"the image lacks {package}/"
    assert {"pyproject.toml", "constraints.txt"} <= copied


def test_dockerfile_healthcheck_hits_the_live_endpoint_of_the_ops_api():
    final = dockerfile_stages(DOCKERFILE.read_text())[-1]
    checks = instructions(final, "HEALTHCHECK")
    assert len(checks) == 1
    check = checks[0]
    url = re.search(r"https?://[^'\"\s]+", check).group(0)
    parsed = urlsplit(url)
    assert parsed.port == settings_default("api_port")
    assert parsed.path == "/health/live" and parsed.path in ops_api_get_routes()
    assert "urllib" in check and "curl" not in check and "wget" not in check, "slim has neither curl nor wget"


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    patterns = {line.strip().strip("/") for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for required in (".venv", ".services", ".git", "**/__pycache__", "tests", "data"):
        assert required in patterns, f".dockerignore should exclude {required}"
    final = dockerfile_stages(DOCKERFILE.read_text())[-1]
    for copy in instructions(final, "COPY"):
        for source in copy.split()[:-1]:
            if not source.startswith("--"):
                assert source.rstrip("/") not in patterns, f"COPY {source} is excluded by .dockerignore"
