"""`trustplane prometheus up|status|down` with the real Debian binary (no broker needed:
its targets simply answer nothing)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli.main import cli
from streams.config import Settings
from streams.dev.ports import free_ports
from streams.dev.prometheus import LocalPrometheus, PrometheusConfig, PrometheusError

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus is not installed: `apt-get install prometheus`",
)


def eventually(read: Callable[[], Any], timeout: float = 20.0) -> Any:
    """``read()``'s first truthy value (Prometheus applies new targets within ~5 s)."""
    deadline = time.monotonic() + timeout
    while not (value := read()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return value


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalPrometheus]:
    worker, port = free_ports(2)
    config = PrometheusConfig(port=port, workers=(f"127.0.0.1:{worker}",), notaries=(), sinks=())
    server = LocalPrometheus(tmp_path / "prometheus", config)
    yield server
    server.down()


@needs_prometheus
def test_up_starts_it_once_and_down_stops_it(local: LocalPrometheus) -> None:
    info = local.up(timeout=60)
    assert info.url == f"http://127.0.0.1:{local.config.port}"
    assert local.status() == info

    again = local.up(timeout=60)  # idempotent: the running one reloads its configuration

    assert again.pid == info.pid
    [target] = eventually(local.targets)
    assert target["job"] == "trustplane-worker"
    assert target["instance"] == local.config.workers[0]
    assert local.query("vector(1)")[0]["value"][1] == "1"
    assert local.down() is True
    assert local.status() is None
    assert local.down() is False


@needs_prometheus
def test_a_port_in_use_is_a_clear_error(local: LocalPrometheus, tmp_path: Path) -> None:
    local.up(timeout=60)
    other = LocalPrometheus(tmp_path / "other", local.config)
    with pytest.raises(PrometheusError, match=f"port {local.config.port} .* is in use"):
        other.up(timeout=10)


def test_a_missing_binary_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus here
    local = LocalPrometheus.for_settings(Settings(state_dir=tmp_path))
    with pytest.raises(PrometheusError) as refused:
        local.up()
    assert "not installed" in refused.value.reason
    assert "apt-get install prometheus" in (refused.value.hint or "")


def test_the_cli_reports_the_missing_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("TRUSTPLANE_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["prometheus", "up"])
    assert result.exit_code == 2
    assert "apt-get install prometheus" in result.output


@needs_prometheus
def test_the_cli_starts_and_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker, port = free_ports(2)
    monkeypatch.setenv("TRUSTPLANE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("TRUSTPLANE_PROMETHEUS_PORT", str(port))
    monkeypatch.setenv("TRUSTPLANE_WEB_PORT", str(worker))
    runner = CliRunner()
    try:
        up = runner.invoke(cli, ["prometheus", "up", "--timeout", "60"])
        assert up.exit_code == 0, up.output
        assert f"Prometheus is up at http://127.0.0.1:{port}" in up.output
        status = eventually(
            lambda: (
                (done := runner.invoke(cli, ["prometheus", "status"])).exit_code == 0
                and f"127.0.0.1:{worker}" in done.output  # the worker target (down here)
                and done
            )
        )
        assert "trustplane-worker" in status.output
    finally:
        down = runner.invoke(cli, ["prometheus", "down"])
    assert down.exit_code == 0
    assert "Prometheus stopped." in down.output
    assert runner.invoke(cli, ["prometheus", "status"]).exit_code == 1
