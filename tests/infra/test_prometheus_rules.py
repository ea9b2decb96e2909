"""The alert rules, the generated Prometheus configuration and the Grafana dashboard are
what Prometheus accepts (``promtool``), and name only metrics the services export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.config import PROJECT_ROOT, Settings
from streams.dev.prometheus import LocalPrometheus, PrometheusConfig
from streams.gate.metrics import GateHealth, GateMetrics, GroupLag
from streams.notary.metrics import NotaryMetrics
from streams.sink.metrics import SinkMetrics

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed: `apt-get install prometheus` (Debian ships it there)",
)

INFRA = PROJECT_ROOT / "infra"
ALERTS = INFRA / "prometheus" / "alerts.yml"
ALERTS_TEST = INFRA / "prometheus" / "alerts_test.yml"
DASHBOARD = INFRA / "grafana" / "dashboards" / "trustplane-health.json"
README = INFRA / "prometheus" / "README.md"
TOKEN = "p" * 40
_METRIC = re.compile(r"\b(trustplane_[a-z0-9_]+)\b")


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


# -- promtool --------------------------------------------------------------------------


@needs_promtool
def test_the_alert_rules_are_valid() -> None:
    done = promtool("check", "rules", ALERTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_the_alert_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_every_alert_rule_has_a_unit_test() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - firing == set(), "alerts never shown firing in alerts_test.yml"


@needs_promtool
@pytest.mark.parametrize("with_tokens", [False, True], ids=["loopback", "tokens"])
def test_the_generated_configuration_is_valid(tmp_path: Path, with_tokens: bool) -> None:
    values: dict[str, Any] = {"state_dir": tmp_path}
    if with_tokens:
        values.update(web_token=TOKEN, notary_token=TOKEN)
    local = LocalPrometheus.for_settings(Settings(**values))
    path = local.write_config()

    done = promtool("check", "config", path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout  # the rule file too: "SUCCESS: 20 rules found"
    config = yaml.safe_load(path.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["trustplane-worker"]["static_configs"][0]["targets"] == ["127.0.0.1:6066"]
    assert jobs["trustplane-notary"]["static_configs"][0]["targets"] == ["127.0.0.1:6067"]
    assert jobs["trustplane-sink"]["static_configs"][0]["targets"] == ["127.0.0.1:6068"]
    assert config["rule_files"] == [str(ALERTS)]
    assert config["global"]["scrape_interval"] == "2s"
    assert "authorization" not in jobs["trustplane-sink"]  # its /metrics needs no token
    for job in ("trustplane-worker", "trustplane-notary"):
        if not with_tokens:
            assert "authorization" not in jobs[job]
            continue
        token_file = Path(jobs[job]["authorization"]["credentials_file"])
        assert token_file.read_text().strip() == TOKEN
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert TOKEN not in path.read_text(), "the token stays in its file"


# -- the metrics the rules and the dashboard name exist ---------------------------------


class _Log:
    """Enough of a NotaryLog for its metrics to show every family."""

    size = 3
    duplicates = reused_ids = undecodable = unsigned = 0

    def latest(self) -> tuple[int, str]:
        return 2, "note"


def exported_names() -> set[str]:
    """Every sample name the worker, the notary and the sink can export."""
    gate = GateMetrics()
    lag = GroupLag(lambda: None, "group", ["topic"])
    lag.stop()  # its families without its thread, which would ask no broker in a loop
    gate.watch(lambda: GateHealth(True, policy=("1", "sha256:x"), signing_key=("kid", 1.0)), lag)
    registries: list[CollectorRegistry] = [
        gate.registry,
        SinkMetrics().registry,
        NotaryMetrics(lambda: _Log()).registry,  # type: ignore[arg-type, return-value]
    ]
    names = {"up"}
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
        "gauge": ("",),
    }
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def dashboard_exprs() -> list[str]:
    """The PromQL of the Grafana dashboard and of the console's Health page."""
    from streams.console.health import PANELS

    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ] + [panel.query for panel in PANELS]


def test_the_alert_rules_name_only_exported_metrics() -> None:
    used = set(_METRIC.findall(ALERTS.read_text()))
    assert used, "the rules use trustplane metrics"
    assert used - exported_names() == set()


def test_the_dashboard_names_only_exported_metrics() -> None:
    used = {name for expr in dashboard_exprs() for name in _METRIC.findall(expr)}
    assert used - exported_names() == set()


def test_every_exported_metric_is_documented() -> None:
    documented = set(_METRIC.findall(README.read_text()))
    families = {
        name.removesuffix("_bucket")
        for name in exported_names()
        if name.startswith("trustplane_") and not name.endswith(("_sum", "_count"))
    }
    assert families - documented == set(), "add them to infra/prometheus/README.md"


@needs_promtool
def test_the_dashboard_queries_are_promql(tmp_path: Path) -> None:
    # promtool parses the PromQL of recording rules: one rule per dashboard query
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": expr}
                    for n, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_generated_configuration_leaves_out_disabled_services(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, web_port=7001, notary_port=-1, sink_http_port=0)
    config = PrometheusConfig.from_settings(settings, workers=None)
    path = LocalPrometheus(tmp_path / "prometheus", config).write_config()
    jobs = {job["job_name"]: job for job in yaml.safe_load(path.read_text())["scrape_configs"]}
    assert jobs["trustplane-worker"]["static_configs"][0]["targets"] == ["127.0.0.1:7001"]
    assert jobs["trustplane-notary"]["static_configs"][0]["targets"] == []
    assert jobs["trustplane-sink"]["static_configs"][0]["targets"] == []
