"""docker-compose.yml is valid Compose and wires the services together as the docs say.

No Docker engine runs the tests, so the file is checked statically: against the Compose
Specification JSON schema (copied to ``tests/data/compose-spec.json``, see its README) and for the
few facts the schema cannot know (service names, the internal Kafka listener, port syntax, who
each service is to Kafka). The broker's start script runs here with stand-ins for Kafka's tools.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator, ValidationError

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SCHEMA_FILE = REPO_ROOT / "tests" / "data" / "compose-spec.json"  # origin: tests/data/README.md
PROMETHEUS_FILE = REPO_ROOT / "infra" / "prometheus" / "prometheus.yml"
ALERTS_FILE = REPO_ROOT / "infra" / "prometheus" / "alerts.yml"
GRAFANA_DIR = REPO_ROOT / "infra" / "grafana"
DOCKERFILE = REPO_ROOT / "Dockerfile"
BROKER_SCRIPT = REPO_ROOT / "infra" / "kafka" / "compose-broker.sh"
CLUSTER_ENV = REPO_ROOT / "infra" / "kafka" / "cluster.env"
KAFKA_NODES = ("kafka", "kafka-2", "kafka-3")
"""The three-node cluster: ``kafka`` is node 1, the others are in the ``cluster`` profile."""

SERVICES = {
    "kafka",
    "clickhouse",
    "worker",
    "sink",
    "notary",
    "prometheus",
    "grafana",
    "kafka-credentials",
    "kafka-provision",
}
ROLES = {"worker": "gate", "sink": "sink", "notary": "notary", "operator": "operator"}
"""Each trustplane service and the Kafka principal it runs as."""

# Compose short port syntax: [[HOST_IP:][HOST_PORT[-RANGE]]:]CONTAINER_PORT[-RANGE][/PROTOCOL]
_PORT = r"\d{1,5}"
_RANGE = rf"{_PORT}(?:-{_PORT})?"
_HOST_IP = r"(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\])"
SHORT_PORT = re.compile(
    rf"^(?:(?:(?P<host_ip>{_HOST_IP}):)?(?P<published>{_RANGE})?:)?"
    rf"(?P<target>{_RANGE})(?:/(?P<protocol>tcp|udp|sctp))?$"
)


# -- helpers ------------------------------------------------------------------


def load_schema(path: Path = SCHEMA_FILE) -> dict[str, Any]:
    """The Compose schema; a missing file is a test failure, never a skip."""
    if not path.is_file():
        pytest.fail(
            f"Compose Specification schema not found at {path}. It belongs in the repo at "
            "tests/data/compose-spec.json (compose-spec/compose-spec, schema/compose-spec.json; "
            "see tests/data/README.md).",
            pytrace=False,
        )
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


@cache
def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), f"{COMPOSE_FILE.name} must be a mapping at top level"
    return data


@pytest.fixture
def compose() -> dict[str, Any]:
    """A fresh copy of docker-compose.yml per test, free to modify."""
    return copy.deepcopy(_compose())


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whichever of the two Compose forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def _interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${NAME}`` and ``${NAME:-default}`` (``${NAME:?error}`` is left as is)."""

    def value_of(match: re.Match[str]) -> str:
        if variables.get(match["name"]):
            return variables[match["name"]]
        return match[0] if match["default"] is None else match["default"]

    return _VARIABLE.sub(value_of, value)


def _resolved(service: dict[str, Any], variables: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment as Compose passes it, given the interpolation variables."""
    return {k: _interpolate(v, variables or {}) for k, v in _environment(service).items()}


def _env_file(path: Path) -> dict[str, str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _listeners(value: str) -> dict[str, str]:
    """``NAME://host:port,...`` -> {NAME: "host:port"}."""
    pairs = (item.strip().split("://", 1) for item in value.split(",") if item.strip())
    return {name: address for name, address in pairs}


def port_syntax_errors(entry: object) -> list[str]:
    """What is wrong with one ``ports:`` entry (empty when it is valid)."""
    if isinstance(entry, dict):
        target = entry.get("target")
        if not isinstance(target, int) or not 1 <= target <= 65535:
            return [f"{entry!r}: long syntax needs an integer `target` in 1..65535"]
        return []
    if not isinstance(entry, str):
        # YAML 1.1 reads an unquoted 22:22 as the base-60 number 1342.
        return [f"{entry!r}: write port mappings as quoted strings"]
    match = SHORT_PORT.match(entry)
    if match is None:
        return [f"{entry!r}: not [[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL]"]
    errors = []
    for part in ("published", "target"):
        if match[part] is None:
            continue
        bounds = [int(number) for number in match[part].split("-")]
        if not all(1 <= number <= 65535 for number in bounds):
            errors.append(f"{entry!r}: {part} port out of range 1..65535")
        elif bounds != sorted(bounds):
            errors.append(f"{entry!r}: {part} range is descending")
    return errors


# -- the schema and the file ----------------------------------------------------


def test_missing_schema_fails_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="schema not found at .*tests/data/README"):
        load_schema(tmp_path / "compose-spec.json")


def test_vendored_schema_is_a_valid_draft7_schema() -> None:
    Draft7Validator.check_schema(load_schema())


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    Draft7Validator(load_schema()).validate(compose)


def _rejection(instance: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as excinfo:
        Draft7Validator(load_schema()).validate(instance)
    return excinfo.value


def test_validator_rejects_wrong_types() -> None:
    broken = {"services": {"kafka": {"image": 123, "ports": "x"}}}
    error = _rejection(broken)
    assert error.validator == "type"
    assert re.fullmatch(r"(123|'x') is not of type '(string|array)'", error.message)
    # Both mistakes are found, not just the first one.
    errors = {tuple(e.path) for e in Draft7Validator(load_schema()).iter_errors(broken)}
    assert errors == {("services", "kafka", "image"), ("services", "kafka", "ports")}


def test_validator_rejects_an_unknown_top_level_key(compose: dict[str, Any]) -> None:
    compose["servicez"] = compose.pop("services")
    error = _rejection(compose)
    assert error.validator == "additionalProperties"
    assert list(error.path) == []
    assert "'servicez'" in error.message


def test_validator_rejects_a_typo_in_a_service(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    worker["dependson"] = worker.pop("depends_on")
    error = _rejection(compose)
    assert error.validator == "additionalProperties"
    assert list(error.path) == ["services", "worker"]
    assert "'dependson'" in error.message


# -- what the schema cannot know ------------------------------------------------------


def test_all_services_are_defined(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= SERVICES


def test_worker_bootstraps_from_the_kafka_internal_listener(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka_env = _resolved(services["kafka"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    internal = advertised[kafka_env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")]

    bootstrap = _resolved(services["worker"])["TRUSTPLANE_BOOTSTRAP_SERVERS"]

    assert bootstrap == internal == "kafka:9092"
    assert bootstrap.split(":")[0] in services, "bootstrap host must be a compose service"
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_ports_use_valid_syntax(compose: dict[str, Any], name: str) -> None:
    ports = compose["services"][name].get("ports", [])
    errors = [error for entry in ports for error in port_syntax_errors(entry)]
    assert errors == []


@pytest.mark.parametrize(
    "entry",
    [
        "6066",
        "6066:6066",
        "127.0.0.1:8123:8123",
        "127.0.0.1::80",
        "[::1]:9090:9090",
        "9000-9001:9000-9001",
        "514:514/udp",
        {"target": 80, "published": "8080"},
    ],
)
def test_port_checker_accepts_valid_entries(entry: object) -> None:
    assert port_syntax_errors(entry) == []


@pytest.mark.parametrize(
    "entry",
    ["x", "80:", ":80:80", "70000:80", "81-80:80", "80:80/http", "a:80", 1342, {"published": 80}],
)
def test_port_checker_rejects_invalid_entries(entry: object) -> None:
    assert port_syntax_errors(entry) != []


# -- the files compose points at -------------------------------------------------------


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts (short syntax) as {host path: container path}."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str) and volume.startswith("./"):
            source, target = volume.split(":")[:2]
            found[source] = target
    return found


def _prometheus_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_prometheus_scrapes_the_worker_metrics(compose: dict[str, Any]) -> None:
    mounts = _mounts(compose["services"]["prometheus"])
    assert mounts[f"./{PROMETHEUS_FILE.relative_to(REPO_ROOT).as_posix()}"] == (
        "/etc/prometheus/prometheus.yml"
    )
    job = _prometheus_jobs()["trustplane-worker"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["worker:6066"]
    assert "6066:6066" in compose["services"]["worker"]["ports"]
    # the worker listens beyond loopback there, so its pages need its bearer token
    assert "TRUSTPLANE_WEB_TOKEN" in compose["services"]["worker"]["environment"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/web_token"
    assert "web_token" in compose["services"]["prometheus"]["secrets"]


def test_prometheus_scrapes_the_notary_with_its_token(compose: dict[str, Any]) -> None:
    job = _prometheus_jobs()["trustplane-notary"]
    assert job["static_configs"][0]["targets"] == ["notary:6067"]
    env = _environment(compose["services"]["notary"])
    # beyond its container's loopback the notary refuses to listen without a token
    assert env["TRUSTPLANE_NOTARY_BIND"] == "0.0.0.0"  # noqa: S104 - what compose sets
    assert env["TRUSTPLANE_NOTARY_TOKEN"].startswith("${TRUSTPLANE_NOTARY_TOKEN:?")
    assert job["authorization"]["credentials_file"] == "/run/secrets/notary_token"
    assert compose["secrets"]["notary_token"] == {"environment": "TRUSTPLANE_NOTARY_TOKEN"}
    assert "notary_token" in compose["services"]["prometheus"]["secrets"]


def test_prometheus_loads_the_alert_rules_it_is_given(compose: dict[str, Any]) -> None:
    mounts = _mounts(compose["services"]["prometheus"])
    target = mounts[f"./{ALERTS_FILE.relative_to(REPO_ROOT).as_posix()}"]
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    assert config["rule_files"] == [target]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = GRAFANA_DIR / "provisioning"
    assert mounts["./infra/grafana/provisioning"] == "/etc/grafana/provisioning"
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090", "the compose service, by name"
    assert "prometheus" in grafana["depends_on"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "trustplane.yml").read_text())[
        "providers"
    ]
    assert mounts["./infra/grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "trustplane-health.json").read_text())
    used = {
        target["datasource"]["uid"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }
    assert used == {datasource["uid"]}
    home = _environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/trustplane-health.json"
    # the admin password comes from the environment, and Grafana answers on loopback only
    assert _environment(grafana)["GF_SECURITY_ADMIN_PASSWORD"].startswith(
        "${GRAFANA_ADMIN_PASSWORD:?"
    )
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]


def test_worker_command_matches_the_image_entrypoint(compose: dict[str, Any]) -> None:
    instructions = dict(
        line.split(maxsplit=1)
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith(("ENTRYPOINT ", "CMD "))
    )
    assert json.loads(instructions["ENTRYPOINT"]) == ["trustplane"]
    assert json.loads(instructions["CMD"]) == ["worker"]
    assert compose["services"]["worker"]["command"] in (["worker"], "worker")


# -- Kafka authentication and ACLs -----------------------------------------------------


def test_every_kafka_listener_authenticates_and_acls_are_enforced(compose: dict[str, Any]) -> None:
    env = _resolved(compose["services"]["kafka"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(protocols) == set(_listeners(env["KAFKA_LISTENERS"]))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, (
        "no PLAINTEXT listener, not even the controller's"
    )
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert env["KAFKA_SASL_MECHANISM_CONTROLLER_PROTOCOL"] == "SCRAM-SHA-512"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith(".StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_SUPER_USERS"] == "User:broker;User:admin"
    assert set(env["TRUSTPLANE_SASL_LISTENERS"].split()) == {name.lower() for name in protocols}


def _credential_mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        v
        for v in service.get("volumes", [])
        if isinstance(v, dict) and v.get("source") == "kafka-credentials"
    ]


@pytest.mark.parametrize(("name", "role"), sorted(ROLES.items()))
def test_each_service_is_its_role_and_sees_only_its_own_password(
    compose: dict[str, Any], name: str, role: str
) -> None:
    service = compose["services"][name]
    env = _environment(service)
    assert env["TRUSTPLANE_KAFKA_PRINCIPAL"] == role
    [mount] = _credential_mounts(service)
    assert mount["read_only"] is True
    assert mount["volume"]["subpath"] == role
    assert env["TRUSTPLANE_KAFKA_CREDENTIALS_DIR"] == mount["target"]
    assert not [key for key in env if "PASSWORD" in key], "passwords stay in files"
    assert service["depends_on"]["kafka-provision"]["condition"] == "service_completed_successfully"


def test_provisioning_runs_as_admin_once_the_broker_is_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    provision = services["kafka-provision"]
    assert provision["command"] == ["kafka", "provision"]
    assert provision["depends_on"]["kafka"]["condition"] == "service_healthy"
    [mount] = _credential_mounts(provision)
    assert mount["volume"]["subpath"] == "all"
    [broker_mount] = _credential_mounts(services["kafka"])
    assert broker_mount["volume"]["subpath"] == "broker"
    assert services["kafka"]["depends_on"]["kafka-credentials"]["condition"] == (
        "service_completed_successfully"
    )
    script = services["kafka-credentials"]["command"][0]
    for role in ROLES.values():
        assert role in script


def _run_broker_script(env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """Run compose-broker.sh with ``env`` and stand-ins for Kafka's tools; return the
    server.properties it wrote and the tools' calls."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "broker").write_text("broker-pw\n")
    (secrets / "admin").write_text("admin-pw\n")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("kafka-storage.sh", "kafka-server-start.sh"):
        (tools / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {tmp_path}/calls\n')
        (tools / tool).chmod(0o755)
    env = {
        **env,
        "KAFKA_LOG_DIRS": str(tmp_path / "data"),
        "TRUSTPLANE_SECRETS": str(secrets),
        "TRUSTPLANE_KAFKA_BIN": str(tools),
        "TRUSTPLANE_BROKER_CONFIG": str(tmp_path / "config"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    done = subprocess.run(
        ["bash", str(BROKER_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "config" / "server.properties").stat().st_mode & 0o777 == 0o600
    properties = (tmp_path / "config" / "server.properties").read_text()
    assert "admin-pw" not in properties
    props = dict(line.split("=", 1) for line in properties.splitlines())
    return props, (tmp_path / "calls").read_text().splitlines()


def test_the_broker_script_formats_with_scram_users_and_logs_in_on_every_listener(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    props, calls = _run_broker_script(_resolved(compose["services"]["kafka"]), tmp_path)

    assert props["listener.security.protocol.map"].count("SASL_PLAINTEXT") == 3
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["super.users"] == "User:broker;User:admin"
    for listener in ("internal", "host", "controller"):
        login = props[f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"]
        assert 'username="broker" password="broker-pw";' in login
    assert props["controller.quorum.voters"] == "1@kafka:9093"
    assert props["sasl.mechanism.controller.protocol"] == "SCRAM-SHA-512"
    assert not [key for key in props if ".plain." in key]
    assert calls[0].startswith("kafka-storage.sh format -t 1ojitqHbULazmRIuqlbqLA")
    assert "--add-scram SCRAM-SHA-512=[name=broker,password=broker-pw]" in calls[0]
    assert "--add-scram SCRAM-SHA-512=[name=admin,password=admin-pw]" in calls[0]
    assert calls[1] == f"kafka-server-start.sh {tmp_path}/config/server.properties"


# -- the three-node cluster (profile "cluster", infra/kafka/cluster.env) ---------------------


def test_plain_docker_compose_up_still_starts_one_broker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    started = {name for name, service in services.items() if not service.get("profiles")}
    assert started == SERVICES
    for node in KAFKA_NODES[1:]:
        assert services[node]["profiles"] == ["cluster"]
    env = _resolved(services["kafka"])
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    for name, service in services.items():
        bootstrap = _resolved(service).get("TRUSTPLANE_BOOTSTRAP_SERVERS")
        assert bootstrap in (None, "kafka:9092"), name
    for node in KAFKA_NODES[1:]:  # the cluster's nodes are ignored without the profile
        assert services["kafka-provision"]["depends_on"][node]["required"] is False


def _cluster(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    variables = _env_file(CLUSTER_ENV)
    return {node: _resolved(compose["services"][node], variables) for node in KAFKA_NODES}


def test_the_cluster_env_file_turns_on_the_profile_and_three_voters(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert _env_file(CLUSTER_ENV)["COMPOSE_PROFILES"] == "cluster"
    nodes = _cluster(compose)

    voters = {
        f"{env['KAFKA_NODE_ID']}@{services[name]['hostname']}:"
        + _listeners(env["KAFKA_LISTENERS"])["CONTROLLER"].rsplit(":", 1)[1]
        for name, env in nodes.items()
    }
    assert {env["KAFKA_NODE_ID"] for env in nodes.values()} == {"1", "2", "3"}
    for name, env in nodes.items():
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert env["KAFKA_SASL_MECHANISM_CONTROLLER_PROTOCOL"] == "PLAIN"
        assert env["KAFKA_LISTENER_NAME_CONTROLLER_SASL_ENABLED_MECHANISMS"] == "PLAIN"
        advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
        assert advertised["INTERNAL"] == f"{services[name]['hostname']}:9092"
        host_port = advertised["HOST"].rsplit(":", 1)[1]
        assert services[name]["ports"] == [f"{host_port}:{host_port}"]
        assert _listeners(env["KAFKA_LISTENERS"])["HOST"] == f":{host_port}"


def test_the_cluster_nodes_share_everything_but_their_identity(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nodes = _cluster(compose)
    own = {"KAFKA_NODE_ID", "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS"}

    shared = [{k: v for k, v in env.items() if k not in own} for env in nodes.values()]
    assert shared[0] == shared[1] == shared[2]  # cluster id, security, ACLs, limits
    data = [
        next(v for v in services[node]["volumes"] if str(v).endswith(":/var/lib/kafka/data"))
        for node in KAFKA_NODES
    ]
    assert len(set(data)) == 3
    for node in KAFKA_NODES:
        service = services[node]
        [mount] = _credential_mounts(service)
        assert mount["volume"]["subpath"] == "broker" and mount["read_only"] is True
        assert service["healthcheck"] == services["kafka"]["healthcheck"]
        assert service["entrypoint"] == services["kafka"]["entrypoint"]
        assert service["image"] == services["kafka"]["image"]
    declared = set(compose["volumes"])
    assert {str(v).split(":")[0] for v in data} <= declared


def test_with_the_cluster_every_service_bootstraps_from_all_nodes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nodes = _cluster(compose)
    internal = {_listeners(env["KAFKA_ADVERTISED_LISTENERS"])["INTERNAL"] for env in nodes.values()}
    variables = _env_file(CLUSTER_ENV)

    for name in (*ROLES, "kafka-provision"):
        bootstrap = _resolved(services[name], variables)["TRUSTPLANE_BOOTSTRAP_SERVERS"]
        assert set(bootstrap.split(",")) == internal, name
    for node in KAFKA_NODES:
        assert services["kafka-provision"]["depends_on"][node]["condition"] == "service_healthy"


def test_the_broker_script_gives_a_cluster_controller_listener_plain_logins(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    props, calls = _run_broker_script(_cluster(compose)["kafka-2"], tmp_path)

    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    login = props["listener.name.controller.plain.sasl.jaas.config"]
    assert login.startswith("org.apache.kafka.common.security.plain.PlainLoginModule required")
    assert login.endswith('username="broker" password="broker-pw" user_broker="broker-pw";')
    assert props["listener.name.internal.scram-sha-512.sasl.jaas.config"].endswith(
        'username="broker" password="broker-pw";'
    )
    assert calls[0].startswith("kafka-storage.sh format -t 1ojitqHbULazmRIuqlbqLA")
