"""docker-compose.yml is valid Compose and wires the services together as the docs say.

No Docker engine runs the tests, so the file is checked statically: against the Compose
Specification JSON schema (copied to ``tests/data/compose-spec.json``, see its README) and for the
few facts the schema cannot know (service names, the internal Kafka listener, port syntax).
"""

from __future__ import annotations

import copy
import json
import re
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
DOCKERFILE = REPO_ROOT / "Dockerfile"

SERVICES = {"kafka", "clickhouse", "worker", "prometheus"}

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
    kafka_env = _environment(services["kafka"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    internal = advertised[kafka_env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")]

    bootstrap = _environment(services["worker"])["TRUSTPLANE_BOOTSTRAP_SERVERS"]

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


def test_prometheus_scrapes_the_worker_metrics(compose: dict[str, Any]) -> None:
    mount = f"./{PROMETHEUS_FILE.relative_to(REPO_ROOT).as_posix()}:"
    assert any(
        str(volume).startswith(mount) for volume in compose["services"]["prometheus"]["volumes"]
    )
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    [job] = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["worker:6066"]
    assert "6066:6066" in compose["services"]["worker"]["ports"]


def test_worker_command_matches_the_image_entrypoint(compose: dict[str, Any]) -> None:
    instructions = dict(
        line.split(maxsplit=1)
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith(("ENTRYPOINT ", "CMD "))
    )
    assert json.loads(instructions["ENTRYPOINT"]) == ["trustplane"]
    assert json.loads(instructions["CMD"]) == ["worker"]
    assert compose["services"]["worker"]["command"] in (["worker"], "worker")
