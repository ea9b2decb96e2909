"""The SQL endpoint of a real `trustplane sink` process, attacked over HTTP.

The sink runs with the operator's private key on its disk. Through its endpoint, with the
endpoint's own token: reading the key with ``file()`` (however quoted) is refused and the
answer does not carry it; ``DESCRIBE url(...)`` sends no request; a request without the
token is refused with 401; a memory-hungry query is stopped by the cap; a slow query does
not hold up another one; and `trustplane sql` keeps working for the local operator.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from streams.config import Settings
from streams.sink.sql_server import sql_token_file
from tests.conftest import free_port, http_json, settings_env

pytestmark = pytest.mark.broker


def post_sql(port: int, sql: str, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"http://127.0.0.1:{port}/sql",
        data=json.dumps({"sql": sql}).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


class Listener(threading.Thread):
    """A TCP port on 127.0.0.1 that counts the connections it gets."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.2)
        self.port = int(self.socket.getsockname()[1])
        self.connections = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.socket.close()


def test_the_sql_endpoint_of_a_running_sink_is_locked_down(
    settings_factory, service_factory, monkeypatch
):
    port = free_port()
    settings: Settings = settings_factory(sink_http_port=port)
    sink = service_factory(
        "sink",
        [sys.executable, "-m", "streams.cli.sql", "sink", "--batch-ms", "100"],
        settings_env(settings),
        ready=lambda: bool((http_json(f"http://127.0.0.1:{port}/healthz") or {}).get("ready")),
    ).start(timeout=90)
    token_file = sql_token_file(settings.state_dir)
    token = token_file.read_text().strip()
    key = settings.resolved_operator_key_path
    secret = key.read_text()
    assert "PRIVATE KEY" in secret  # what an attacker is after

    # 1. no token, a wrong token: 401, and the query is not even looked at
    for given in (None, "x" * 43):
        status, answer = post_sql(port, f"SELECT `file`('{key}')", given)
        assert status == 401, answer
        assert answer["error"]["type"] == "AuthenticationError"
    status, answer = post_sql(port, "SELECT count() FROM lineage_events", token)
    assert status == 200 and answer["rows"] == [[0]], answer

    # 2. the attack of the old token blocklist, with the right token: refused, key kept
    for sql in (
        f"SELECT `file`('{key}')",
        f"SELECT \"file\"('{key}')",
        f"SELECT file('{key}')",
        f"WITH '{key}' AS p SELECT `file`(p)",
        f"SELECT arrayMap(p -> `file`(p), ['{key}'])",
        f"SELECT * APPLY(file) FROM (SELECT '{key}' AS p)",  # noqa: S608 - the attack
        f"SELECT * FROM `file`('{key}', 'LineAsString')",  # noqa: S608 - the attack
        f"SELECT * FROM url('http://127.0.0.1:9/{key.name}', 'LineAsString')",  # noqa: S608
    ):
        status, answer = post_sql(port, sql, token)
        assert status == 400, (sql, answer)
        assert answer["error"]["type"] in ("SqlGuardError", "SqlSyntaxError"), answer
        assert "PRIVATE KEY" not in json.dumps(answer)

    # DESCRIBE of a table function would fetch what it names: refused, nothing fetched
    listener = Listener()
    listener.start()
    try:
        for sql in (
            f"DESCRIBE TABLE url('http://127.0.0.1:{listener.port}/x', 'JSONEachRow')",
            f"DESCRIBE TABLE `url`('http://127.0.0.1:{listener.port}/x', 'JSONEachRow')",
            f"SELECT * FROM `url`('http://127.0.0.1:{listener.port}/x', 'CSV')",  # noqa: S608
        ):
            status, answer = post_sql(port, sql, token)
            assert status == 400 and answer["error"]["type"] == "SqlGuardError", answer
        time.sleep(0.3)
    finally:
        listener.stop()
    assert listener.connections == 0

    # 3. a memory-hungry query stops at the cap (code 241), and the next one runs
    started = time.monotonic()
    status, answer = post_sql(
        port, "SELECT length(groupArray(number)) FROM numbers(50000000)", token
    )
    assert status == 400 and answer["error"]["code"] == 241, answer
    assert time.monotonic() - started < 10
    status, answer = post_sql(port, "SELECT 1 AS one", token)
    assert status == 200 and answer["rows"] == [[1]]

    # 4. a slow query (allowed, ~2 s) does not hold up a count on the other reader
    slow_sql = "SELECT count() FROM numbers(12000000) WHERE NOT ignore(SHA256(toString(number)))"
    slow: list[Any] = []

    def run_slow() -> None:
        slow.append(post_sql(port, slow_sql, token))
        slow.append(time.monotonic())

    thread = threading.Thread(target=run_slow, daemon=True)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    status, answer = post_sql(port, "SELECT count() FROM decisions", token)
    counted = time.monotonic()
    thread.join(60)
    assert status == 200 and answer["rows"] == [[0]]
    assert slow[0][0] == 200 and slow[0][1]["rows"] == [[12_000_000]]
    assert counted - started < 1.0 and counted < slow[1], "the count waited for the slow query"

    # 5. `trustplane sql` finds the token in <state_dir>/sink/sql.token by itself
    from typer.testing import CliRunner

    import streams.cli.sql as sql_cli

    monkeypatch.setattr(sql_cli, "_settings", lambda: settings)
    done = CliRunner().invoke(sql_cli.app, ["sql", "SELECT 40 + 2 AS answer", "-f", "csv"])
    assert done.exit_code == 0, done.output
    assert done.stdout.split() == ["answer", "42"]
    done = CliRunner().invoke(sql_cli.app, ["sql", f"SELECT `file`('{key}')"])
    assert done.exception is not None and "file" in str(done.exception)
    assert "PRIVATE KEY" not in done.output
    assert sink.proc is not None and sink.proc.poll() is None
