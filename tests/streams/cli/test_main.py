"""``trustplane`` itself: global options travel in the context, errors exit 2, and the
command starts with the SDK's dependencies alone (no Faust, Cedar, ClickHouse, RocksDB)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from processors.exceptions import ConfigError
from streams.cli.main import cli
from streams.config import PROJECT_ROOT

HEAVY = ("faust", "cedarpy", "chdb", "rocksdict", "clickhouse_connect")
"""What only the gate worker, the policy engine and the lineage sink need."""

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_trustplane_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TRUSTPLANE_"):
            monkeypatch.delenv(name)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTPLANE_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_importing_the_cli_imports_no_server_dependency() -> None:
    done = _python(
        f"""
        import sys
        import streams.cli.main
        print([name for name in {HEAVY!r} if name in sys.modules])
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_help_works_with_only_the_sdk_dependencies_installed() -> None:
    # Make the server-side packages unimportable, as in an install of the SDK alone.
    done = _python(
        f"""
        import sys
        from importlib.abc import MetaPathFinder

        class Missing(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {(*HEAVY, "prometheus_client")!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Missing())
        from streams.cli.main import cli

        for args in (["--help"], ["verify", "--help"], ["proof", "--help"], ["sql", "--help"]):
            try:
                cli(args, prog_name="trustplane")
            except SystemExit as exc:
                assert exc.code == 0, (args, exc.code)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: trustplane [OPTIONS] COMMAND" in done.stdout
    assert "Usage: trustplane verify [OPTIONS]" in done.stdout


def test_the_cli_modules_import_one_way() -> None:
    """main imports the command modules; none of them imports main back."""
    for path in (PROJECT_ROOT / "streams" / "cli").glob("*.py"):
        if path.stem == "main":
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        assert "streams.cli.main" not in imported, path.name


def test_config_given_to_trustplane_reaches_the_command(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    config = tmp_path / "trustplane.toml"
    config.write_text(f'[trustplane]\nstate_dir = "{tmp_path}"\nkeys_dir = "{keys}"\n')
    done = runner.invoke(cli, ["--config", str(config), "keys", "init"])
    assert done.exit_code == 0, done.output
    assert (keys / "operator.pem").is_file()
    done = runner.invoke(cli, ["-c", str(config), "keys", "jwks"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["keys"]


def test_an_error_prints_its_diagnostics_and_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    done = runner.invoke(cli, ["--config", str(missing), "keys", "jwks"])
    assert done.exit_code == 2
    printed = " ".join(done.stderr.split())  # rich wraps long lines
    assert printed.startswith("error: ConfigError: config file ")
    assert "nowhere.toml does not exist" in printed
    assert "Traceback" not in done.output


def test_verbose_lets_the_error_raise_with_its_traceback(tmp_path: Path) -> None:
    done = runner.invoke(cli, ["-v", "--config", str(tmp_path / "nowhere.toml"), "keys", "jwks"])
    assert isinstance(done.exception, ConfigError)


def test_the_benchmark_is_no_trustplane_command() -> None:
    done = runner.invoke(cli, ["bench", "--quick"])
    assert done.exit_code != 0
    assert "bench" not in runner.invoke(cli, ["--help"]).stdout.split("Commands")[1]
