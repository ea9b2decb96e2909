"""The chDB store's reader connections: engine limits, a pool that runs queries side by
side (and says when it is full), and no answer that carries another caller's rows.

chDB hosts one data folder per process: each test opens its own and closes it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sinks.base import QueryError
from sinks.clickhouse import ClickHouseSink, parse_json_compact
from sinks.clickhouse.backends import ChdbBackend, QueryBusyError, ReaderLimits

SLOW = "SELECT count() FROM numbers({rows}) WHERE NOT ignore(SHA256(toString(number)))"
"""Slow but allowed: about 6 M rows/s per core (the guard refuses ``sleep``). 6 M rows
took 0.3 s on two cores, so the tests that wait 0.3 s for it to be running raced its end:
they read 40 M rows (about 2 s here, longer on one core)."""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A migrated, empty lineage store (closed again)."""
    path = tmp_path / "clickhouse"
    store = ClickHouseSink(path=path)
    store.setup()
    store.close()
    return path


@pytest.fixture
def open_backend(folder: Path) -> Iterator[Callable[..., ChdbBackend]]:
    opened: list[ChdbBackend] = []

    def make(**options: Any) -> ChdbBackend:
        options.setdefault("timeout_s", 30)
        options.setdefault("max_rows", 1000)
        backend = ChdbBackend(folder, create=False, **options)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


def select(backend: ChdbBackend, sql: str) -> list[tuple[Any, ...]]:
    return parse_json_compact(backend.select(sql, {}, readonly=True)).rows


def test_every_reader_runs_with_readonly_1_and_the_limits(open_backend):
    limits = ReaderLimits(max_memory_usage=50_000_000, max_threads=1, max_result_bytes=1_000_000)
    backend = open_backend(limits=limits, timeout_s=7, max_rows=123)
    names = ["readonly", "max_execution_time", "max_memory_usage", "max_threads"]
    names += ["max_rows_to_read", "max_bytes_to_read", "max_result_rows", "max_result_bytes"]
    with backend.reader() as run:  # below the guard, which would refuse getSetting
        values = json.loads(
            run("SELECT " + ", ".join(f"toString(getSetting('{n}'))" for n in names), {})
        )["data"][0]
        # the engine holds them: readonly=1 forbids a query to change them
        with pytest.raises(QueryError) as caught:
            run("SELECT 1 SETTINGS max_memory_usage = 0", {})
        assert caught.value.code == 164
    assert dict(zip(names, values, strict=True)) == {
        "readonly": "1",
        "max_execution_time": "7",
        "max_memory_usage": "50000000",
        "max_threads": "1",
        "max_rows_to_read": "100000000",
        "max_bytes_to_read": "5000000000",
        "max_result_rows": "123",
        "max_result_bytes": "1000000",
    }


def test_limits_must_be_positive():
    with pytest.raises(Exception, match="max_memory_usage must be >= 1"):
        ReaderLimits(max_memory_usage=0)


def test_a_memory_hungry_query_is_stopped_by_the_cap_and_the_next_one_runs(open_backend):
    backend = open_backend()  # the default cap: ~95 MiB per query
    started = time.monotonic()
    with pytest.raises(QueryError) as caught:
        select(backend, "SELECT length(groupArray(number)) FROM numbers(50000000)")
    assert caught.value.code == 241  # MEMORY_LIMIT_EXCEEDED
    assert time.monotonic() - started < 5
    assert select(backend, "SELECT 1 AS one") == [(1,)]


def test_a_query_that_reads_too_much_is_stopped(open_backend):
    backend = open_backend(limits=ReaderLimits(max_rows_to_read=10_000_000))
    with pytest.raises(QueryError) as caught:
        select(backend, "SELECT count() FROM numbers(1000000000000)")
    assert caught.value.code == 158  # TOO_MANY_ROWS


PARTIAL = "SELECT number FROM numbers(1000000000000) WHERE number % 10000000 = 0"
"""Sends a row every 10 M numbers, until the time limit (1 s here) stops it."""


def test_a_failed_query_leaves_nothing_for_the_next_caller(open_backend, folder):
    limits = ReaderLimits(max_rows_to_read=10**13, max_bytes_to_read=10**14)
    backend = open_backend(readers=1, limits=limits, timeout_s=1)
    # why: a chDB connection keeps what a failed query had sent, and hands it to the
    # connection's next query (here, the first rows of the failed one)
    import chdb

    raw = chdb.connect(f"{folder}?readonly=1&max_execution_time=1&max_threads=1")
    try:
        with pytest.raises(Exception, match="TIMEOUT_EXCEEDED"):
            raw.query(PARTIAL, "JSONCompact")
        leftover = bytes(raw.query("SELECT 'next caller' AS x", "JSONCompact").bytes())
    finally:
        raw.close()
    assert leftover.count(b'"meta"') == 2 and b"[10000000]" in leftover

    # the store's reader that failed is closed, not lent again: the next caller (on the
    # only reader there is) gets its own answer and nothing else
    with pytest.raises(QueryError) as caught:
        select(backend, PARTIAL)
    assert caught.value.code == 159
    answer = backend.select("SELECT 'next caller' AS x", {}, readonly=True)
    assert answer.count(b'"meta"') == 1 and b"10000000" not in answer
    assert parse_json_compact(answer).rows == [("next caller",)]


class Slow(threading.Thread):
    """A slow read-only query in a thread, timed."""

    def __init__(self, backend: ChdbBackend, rows: int = 40_000_000) -> None:
        super().__init__(daemon=True)
        self.backend = backend
        self.sql = SLOW.format(rows=rows)
        self.result: list[tuple[Any, ...]] | None = None
        self.error: BaseException | None = None
        self.finished_at = 0.0

    def run(self) -> None:
        try:
            self.result = select(self.backend, self.sql)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc
        self.finished_at = time.monotonic()


def test_a_slow_query_does_not_hold_up_the_other_reader_nor_the_writer(open_backend):
    backend = open_backend(timeout_s=30)
    slow = Slow(backend)
    slow.start()
    time.sleep(0.3)  # the slow query is running
    started = time.monotonic()
    assert select(backend, "SELECT count() FROM decisions") == [(0,)]
    read_done = time.monotonic()
    backend.execute("CREATE TABLE written_meanwhile (a Int8) ENGINE = Memory")
    backend.execute("INSERT INTO written_meanwhile VALUES (1)")
    write_done = time.monotonic()
    slow.join(30)
    assert slow.error is None and slow.result == [(40_000_000,)]
    assert read_done - started < 0.5 and read_done < slow.finished_at
    assert write_done < slow.finished_at, "the writer waited for a reader"


def test_when_every_reader_is_busy_the_caller_is_told_at_once(open_backend):
    backend = open_backend(readers=1, reader_wait_s=0.2, timeout_s=30)
    slow = Slow(backend)
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(QueryBusyError, match="busy") as caught:
        select(backend, "SELECT 1")
    assert 0.15 < time.monotonic() - started < 1.5
    assert "try again" in (caught.value.hint or "")
    slow.join(30)
    assert slow.error is None
    assert select(backend, "SELECT 1 AS one") == [(1,)]  # the reader is free again


def test_a_closed_store_lends_no_reader(open_backend):
    backend = open_backend()
    assert select(backend, "SELECT 1 AS one") == [(1,)]
    backend.close()
    with pytest.raises(Exception, match="closed"):
        select(backend, "SELECT 1 AS one")
