"""The sink's SQL endpoint without Kafka: a bearer token on every query, loopback unless a
token is configured, 429 when every reader is busy, and `trustplane sql` finding the token.

chDB hosts one data folder per process: each test opens its own and closes it.
"""

from __future__ import annotations

import json
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from processors.exceptions import ConfigError
from sinks.clickhouse import ClickHouseSink
from sinks.clickhouse.backends import ChdbBackend, QueryBusyError
from sinks.sql_guard import SqlGuardError
from streams.config import Settings
from streams.httpauth import AuthenticationError, BearerToken, is_loopback, read_token_file
from streams.sink import QueryServer, SinkQueryClient
from streams.sink.sql_server import sql_token_file

TOKEN = "t" * 40


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseSink]:
    sink = ClickHouseSink(path=tmp_path / "clickhouse")
    sink.setup()
    try:
        yield sink
    finally:
        sink.close()


@pytest.fixture
def serve(store: ClickHouseSink) -> Iterator[Any]:
    servers: list[QueryServer] = []

    def start(host: str = "127.0.0.1", **options: Any) -> QueryServer:
        server = QueryServer(store, host, 0, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def post(port: int, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any, Any]:
    """(status, JSON answer, response headers) of a POST /sql."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"http://127.0.0.1:{port}/sql",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read()), error.headers


def test_every_query_needs_the_token_from_the_private_token_file(serve, tmp_path):
    server = serve()
    token_file = tmp_path / "sink" / "sql.token"  # <state_dir>/sink/sql.token
    assert server.token.path == token_file and server.token.source == "generated"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    token = read_token_file(token_file)
    assert token and len(token) >= 32

    status, answer, headers = post(server.port, {"sql": "SELECT 1 AS one"}, {})
    assert status == 401 and answer["error"]["type"] == "AuthenticationError"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert str(token_file) in answer["error"]["hint"]
    for wrong in ("Bearer " + "x" * 43, f"Basic {token}", token, "Bearer"):
        status, answer, _ = post(server.port, {"sql": "SELECT 1 AS one"}, {"Authorization": wrong})
        assert status == 401, wrong
    status, answer, _ = post(
        server.port, {"sql": "SELECT 1 AS one"}, {"Authorization": f"Bearer {token}"}
    )
    assert status == 200 and answer["rows"] == [[1]]

    # the client sends it; without it the client says where the token should come from
    client = SinkQueryClient(f"http://127.0.0.1:{server.port}", token_file=token_file)
    assert client.query("SELECT 2 AS two").rows == [(2,)]
    elsewhere = SinkQueryClient(f"http://127.0.0.1:{server.port}", token_file=tmp_path / "none")
    with pytest.raises(AuthenticationError, match="does not exist") as caught:
        elsewhere.query("SELECT 1")
    assert "sql.token" in (caught.value.hint or "")


def test_the_token_file_is_kept_across_restarts_and_must_stay_private(serve, store, tmp_path):
    first = serve()
    again = serve()
    assert again.token.source == "file" and again.token.value == first.token.value
    token_file = tmp_path / "sink" / "sql.token"
    token_file.chmod(0o644)
    with pytest.raises(ConfigError, match="can be read by other users") as caught:
        QueryServer(store, "127.0.0.1", 0)
    assert "chmod 600" in (caught.value.hint or "")
    token_file.chmod(0o600)
    token_file.write_text("short\n")
    with pytest.raises(ConfigError, match="not usable"):
        QueryServer(store, "127.0.0.1", 0)


def test_a_configured_token_replaces_the_file(serve, tmp_path):
    server = serve(token=TOKEN)
    assert server.token.explicit and server.token.path is None
    assert not (tmp_path / "sink" / "sql.token").exists()
    client = SinkQueryClient(f"http://127.0.0.1:{server.port}", token=TOKEN)
    assert client.query("SELECT 1 AS one").rows == [(1,)]
    with pytest.raises(ConfigError, match="at least 32"):
        serve(token="too-short")  # noqa: S106 - a test value


def test_only_a_configured_token_lets_the_endpoint_leave_loopback(serve, store):
    with pytest.raises(ConfigError, match="other machines") as caught:
        QueryServer(store, "0.0.0.0", 0)  # noqa: S104 - the point of the test
    assert "sink_sql_token" in (caught.value.hint or "")
    with pytest.raises(ConfigError, match="other machines"):
        QueryServer(store, "", 0)
    server = serve("0.0.0.0", token=TOKEN)  # noqa: S104 - explicitly configured
    assert server.token.explicit


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - a case
        ("::", False),
        ("", False),
        ("10.1.2.3", False),
        ("no-such-host.invalid", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_token_file_of_another_kind_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text(TOKEN)
    target.chmod(0o600)
    link = tmp_path / "sql.token"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="not a regular file"):
        BearerToken.from_file(link)
    assert BearerToken.from_file(target).value == TOKEN
    assert repr(BearerToken.from_file(target)).count(TOKEN) == 0  # never printed


def test_when_every_reader_is_busy_the_endpoint_answers_429(store, serve, tmp_path):
    # a store with one reader that waits 0.1 s for it
    assert store.path is not None and store._backend is not None
    store._backend.close()
    store._backend = ChdbBackend(
        store.path, timeout_s=30, max_rows=1000, create=False, readers=1, reader_wait_s=0.1
    )
    server = serve()
    client = SinkQueryClient(
        f"http://127.0.0.1:{server.port}", token_file=tmp_path / "sink" / "sql.token"
    )
    # long enough to hold the reader through both checks below on an idle machine (~5 s)
    slow_sql = "SELECT count() FROM numbers(30000000) WHERE NOT ignore(SHA256(toString(number)))"
    answers: list[Any] = []
    slow = threading.Thread(target=lambda: answers.append(client.query(slow_sql)), daemon=True)
    slow.start()
    try:
        time.sleep(0.5)  # the slow query holds the only reader
        token = read_token_file(tmp_path / "sink" / "sql.token")
        status, answer, headers = post(
            server.port, {"sql": "SELECT 1 AS one"}, {"Authorization": f"Bearer {token}"}
        )
        assert status == 429, answer
        assert answer["error"]["type"] == "QueryBusyError" and headers["Retry-After"] == "1"
        with pytest.raises(QueryBusyError, match="busy"):
            client.query("SELECT 1 AS one")
    finally:
        slow.join(30)
    assert answers and answers[0].rows == [(30_000_000,)]
    assert client.query("SELECT 1 AS one").rows == [(1,)]


def test_the_endpoint_refuses_what_the_guard_refuses(serve, tmp_path):
    server = serve()
    client = SinkQueryClient(
        f"http://127.0.0.1:{server.port}", token_file=tmp_path / "sink" / "sql.token"
    )
    secret = tmp_path / "secret.key"
    secret.write_text("private key material")
    for sql in (
        f"SELECT `file`('{secret}')",
        f"SELECT \"file\"('{secret}')",
        f"SELECT * APPLY(file) FROM (SELECT '{secret}' AS p)",  # noqa: S608 - the attack
        "DESCRIBE TABLE `url`('http://127.0.0.1:9/', 'JSONEachRow')",
        "SELECT * FROM system.processes",
    ):
        with pytest.raises(SqlGuardError) as caught:
            client.query(sql)
        assert "private key" not in caught.value.reason


# -- `trustplane sql` reads the same token file -------------------------------------------


def _cli_settings(state_dir: Path, port: int) -> Settings:
    @dataclass(frozen=True)
    class WithSink(Settings):  # the fields streams/config.py is to get
        sink_http_port: int = 0

    return WithSink(state_dir=state_dir, sink_http_port=port)


def test_trustplane_sql_sends_the_token_of_its_state_dir(serve, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import streams.cli.sql as sql_cli

    server = serve()
    assert server.token.path == sql_token_file(tmp_path)
    monkeypatch.setattr(sql_cli, "_settings", lambda: _cli_settings(tmp_path, server.port))
    done = CliRunner().invoke(sql_cli.app, ["sql", "SELECT 41 + 1 AS answer", "-f", "csv"])
    assert done.exit_code == 0, done.output
    assert done.stdout.split() == ["answer", "42"]

    # another state dir (another user, say) has no token: refused, and told why
    other = tmp_path / "other"
    other.mkdir()
    (other / "clickhouse").mkdir()
    monkeypatch.setattr(sql_cli, "_settings", lambda: _cli_settings(other, server.port))
    done = CliRunner().invoke(sql_cli.app, ["sql", "SELECT 1"])
    assert isinstance(done.exception, AuthenticationError)
    assert str(sql_token_file(other)) in done.exception.reason
