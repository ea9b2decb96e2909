"""The lineage store on chDB (a tmp folder per test): migrations, writes, dedup, analytics.

chDB hosts one data folder per process, so every fixture closes its store before the
next test opens another folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.crypto.keys import KeyEntry, Keyset, generate_signing_key
from processors.log.attest import sign_event, verify_event_signature
from processors.log.chain import leaf_bytes, link, verify_event_hash
from processors.records import LineageEvent
from sinks.base import MappingError, MigrationError, QueryError, SinkError, SinkUnavailableError
from sinks.clickhouse import (
    SQL_DIR,
    TABLES,
    ClickHouseSink,
    checkpoint_row,
    load_migrations,
    map_record,
    named_queries,
    parse_json_compact,
    run_named_query,
)
from sinks.sql_guard import SqlGuardError
from streams.codec import default_codec

HOUR_10 = 1_735_725_600_000  # 2025-01-01 10:00:00 UTC
HOUR_11 = HOUR_10 + 3_600_000
MIGRATIONS = [m.name for m in load_migrations()[1:]]


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., ClickHouseSink]]:
    opened: list[ClickHouseSink] = []

    def make(path: Path | None = None, **kwargs: Any) -> ClickHouseSink:
        store = ClickHouseSink(path=path or tmp_path / "clickhouse", **kwargs)
        store.setup()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., ClickHouseSink]) -> ClickHouseSink:
    return open_store()


# -- records (valid Avro: each goes through the codec like a Kafka record would) --------


def avro(name: str, record: dict[str, Any]) -> dict[str, Any]:
    codec = default_codec()
    return codec.decode(codec.encode(name, record), name)


GATE_KEY = generate_signing_key()
GATE_KEYSET = Keyset([KeyEntry(GATE_KEY.kid, GATE_KEY.public_key)])


def lineage_verdicts(*layers: tuple[str, int]) -> list[dict[str, Any]]:
    """The verdicts inside an intent's decision event: (layer, duration_us) pairs."""
    return [
        {
            "layer": layer,
            "status": "ALLOW",
            "reasons": [],
            "evidence": {"checked": layer},
            "duration_us": us,
        }
        for layer, us in layers
    ]


def lineage(
    event_id: str,
    *,
    intent_id: str | None = "i-1",
    agent_id: str | None = "billing",
    stage: str = "enforcement",
    event_type: str = "intent.approved",
    status: str = "approved",
    at: int = HOUR_10,
    attributes: dict[str, str] | None = None,
    verdicts: list[dict[str, Any]] | None = None,
    reasons: list[str] | None = None,
    worker: str = "w-1",
) -> dict[str, Any]:
    """A linked event as the notary writes it to lineage-log (the next in a test log):
    signed by the gate, then given its log index and hashes."""
    event = {
        "event_id": event_id,
        "intent_id": intent_id,
        "agent_id": agent_id,
        "stage": stage,
        "event_type": event_type,
        "status": status,
        "reasons": reasons or [],
        "attributes": attributes or {},
        "occurred_at_ms": at,
        "worker": worker,
        "verdicts": verdicts or [],
        "signer": None,
        "signature": None,
        "log_index": _LOG["size"],
    }
    sign_event(event, GATE_KEY)
    linked = link(event, _LOG["head"])
    _LOG["size"] += 1
    _LOG["head"] = linked["event_hash"]
    return avro("LineageEvent", linked)


_LOG: dict[str, Any] = {"size": 0, "head": None}


def verdicts(*layers: tuple[str, int]) -> list[dict[str, Any]]:
    return [
        {"layer": layer, "status": "ALLOW", "reasons": [], "duration_us": us}
        for layer, us in layers
    ]


def approval(approval_id: str, agent: str, at: int) -> dict[str, Any]:
    return avro(
        "Approval",
        {
            "approval_id": approval_id,
            "intent_id": f"intent-of-{approval_id}",
            "agent_id": agent,
            "action": "payments.transfer",
            "resource": "invoice:1",
            "intent_digest": "sha256:" + "a" * 64,
            "verdicts": verdicts(("freshness", 3), ("allowlist", 5)),
            "envelope": b'{"payload":"e30=","payloadType":"application/vnd.in-toto+json"}',
            "issued_at_ms": at,
            "expires_at_ms": at + 300_000,
            "worker": "w-1",
        },
    )


def decision(
    decision_id: str, agent: str, outcome: str, reasons: list[str], at: int
) -> dict[str, Any]:
    return avro(
        "Decision",
        {
            "decision_id": decision_id,
            "intent_id": f"intent-of-{decision_id}",
            "agent_id": agent,
            "outcome": outcome,
            "reasons": reasons,
            "verdicts": verdicts(("freshness", 2)),
            "intent_digest": "sha256:" + "b" * 64,
            "decided_at_ms": at,
            "worker": "w-1",
        },
    )


def outcome(outcome_id: str, approval_id: str, status: str = "EXECUTED") -> dict[str, Any]:
    return avro(
        "Outcome",
        {
            "outcome_id": outcome_id,
            "approval_id": approval_id,
            "intent_id": f"intent-of-{approval_id}",
            "agent_id": "billing",
            "executor_id": "exec-1",
            "status": status,
            "detail": "",
            "reported_at_ms": HOUR_11 + 60_000,
        },
    )


def rejection(rejection_id: str, code: str) -> dict[str, Any]:
    return avro(
        "Rejection",
        {
            "rejection_id": rejection_id,
            "source_topic": "intents",
            "source_partition": 1,
            "source_offset": 42,
            "key": b"billing\xff",
            "value_sha256": "sha256:" + "c" * 64,
            "value_prefix": b"\xc3\x01\x00",
            "value_size": 3,
            "reason_code": code,
            "reason": "bad",
            "rejected_at_ms": HOUR_10,
            "worker": "w-1",
        },
    )


def workload() -> list[tuple[str, dict[str, Any]]]:
    """(logical topic, record) pairs of a small, known day of the gate."""
    records: list[tuple[str, dict[str, Any]]] = []
    # billing: 3 approvals, 1 denial at 10:xx; support: 1 approval, 3 denials, 1 review at 11:xx
    for n in (1, 2, 3):
        records.append(("approved", approval(f"ap-{n}", "billing", HOUR_10 + n * 60_000)))
    records.append(("approved", approval("ap-4", "support", HOUR_11 + 60_000)))
    records.append(("denied", decision("d-1", "billing", "DENIED", ["amount over limit"], HOUR_10)))
    records.append(
        ("denied", decision("d-2", "support", "DENIED", ["action not allowed"], HOUR_11))
    )
    records.append(
        (
            "denied",
            decision(
                "d-3", "support", "DENIED", ["action not allowed", "amount over limit"], HOUR_11
            ),
        )
    )
    records.append(
        ("denied", decision("d-4", "support", "DENIED", ["action not allowed"], HOUR_11))
    )
    records.append(("review", decision("r-1", "support", "REVIEW", ["needs a person"], HOUR_11)))
    # outcomes: two for real approvals, one for an approval that was never issued
    records.append(("outcomes", outcome("o-1", "ap-1")))
    records.append(("outcomes", outcome("o-2", "ap-2", "FAILED")))
    records.append(("outcomes", outcome("o-3", "ap-ghost")))
    records.append(("rejected", rejection("rej-1", "not_avro")))
    # 101 intents with lineage: one decision event each, its layers taking i*10 us, and
    # the execution the executor reported i ms later (an event without verdicts)
    for i in range(101):
        intent, start = f"i-{i:03d}", HOUR_10 + i * 1000
        common = {"intent_id": intent, "agent_id": "billing"}
        records += [
            (
                "lineage-log",
                lineage(
                    f"ev-{i}-decision",
                    at=start,
                    verdicts=lineage_verdicts(("freshness", i * 4), ("allowlist", i * 6)),
                    attributes={"topic": "approved"},
                    **common,
                ),
            ),
            (
                "lineage-log",
                lineage(
                    f"ev-{i}-execution",
                    stage="execution",
                    event_type="execution.reported",
                    status="EXECUTED",
                    at=start + i,
                    **common,
                ),
            ),
        ]
    return records


LINEAGE_EVENTS = 101 * 2
NEWEST_EVENT_MS = HOUR_10 + 100 * 1000 + 100


def load(store: ClickHouseSink, records: list[tuple[str, dict[str, Any]]], batch: int = 0) -> None:
    """Add the records (flushing every ``batch`` rows when given) and flush."""
    for n, (topic, record) in enumerate(records, start=1):
        table, row = map_record(topic, record, partition=0, offset=n)
        store.add(table, row)
        if batch and n % batch == 0:
            store.flush()
    store.flush()


# -- migrations ------------------------------------------------------------------------


def test_migrations_are_applied_once_and_recorded(open_store, tmp_path):
    first = open_store()
    assert first.applied == MIGRATIONS
    ledger = first.query(
        "SELECT version, name, checksum FROM schema_migrations FINAL ORDER BY version"
    )
    assert [row[1] for row in ledger.rows] == ["000_schema_migrations.sql", *MIGRATIONS][1:]
    assert all(row[2].startswith("sha256:") for row in ledger.rows)
    first.close()

    again = open_store()
    assert again.applied == [], "a second setup applies nothing"
    assert again.count("schema_migrations") == len(MIGRATIONS)
    tables = {row[0] for row in again.query("SHOW TABLES").rows}
    assert {spec.storage for spec in TABLES.values()} | set(TABLES) <= tables
    assert {"intent_decisions", "intent_latency", "schema_migrations"} <= tables
    assert {"lineage_log", "lineage_id_conflicts"} <= tables
    assert TABLES["lineage_events"].storage == "lineage_log"


def test_every_column_a_row_can_give_exists_in_its_table(store):
    for spec in TABLES.values():
        described = store.query(f"DESCRIBE TABLE {spec.storage}")
        assert set(spec.columns) <= set(described.column("name")), spec.name


def test_an_edited_applied_migration_stops_setup(open_store, tmp_path):
    migrations = tmp_path / "sql"
    shutil.copytree(SQL_DIR, migrations, ignore=shutil.ignore_patterns("queries"))
    open_store(migrations_dir=migrations).close()
    path = migrations / "002_decisions.sql"
    path.write_text(path.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="002_decisions.sql was changed") as caught:
        open_store(migrations_dir=migrations)
    assert "new numbered migration" in (caught.value.hint or "")


def test_a_new_migration_is_applied_on_the_next_setup(open_store, tmp_path):
    migrations = tmp_path / "sql"
    shutil.copytree(SQL_DIR, migrations, ignore=shutil.ignore_patterns("queries"))
    open_store(migrations_dir=migrations).close()
    (migrations / "099_extra.sql").write_text(
        "CREATE VIEW IF NOT EXISTS extra AS SELECT count() AS n FROM lineage_events;"
    )
    store = open_store(migrations_dir=migrations)
    assert store.applied == ["099_extra.sql"]
    assert store.query("SELECT n FROM extra").scalar() == 0


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"001_a.sql": "SELECT 1", "001_b.sql": "SELECT 1"}, "two migrations numbered 001"),
        ({"1_a.sql": "SELECT 1"}, "not named NNN_name.sql"),
        ({"001_a.sql": "SELECT 1"}, "has no 000_"),
    ],
)
def test_malformed_migration_folders_are_refused(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(MigrationError, match=message):
        load_migrations(tmp_path)


def test_a_failing_migration_names_the_file_and_statement(open_store, tmp_path):
    migrations = tmp_path / "sql"
    migrations.mkdir()
    shutil.copy(SQL_DIR / "000_schema_migrations.sql", migrations)
    (migrations / "001_broken.sql").write_text(
        "CREATE TABLE IF NOT EXISTS x (a Int8) ENGINE = Nope;"
    )
    with pytest.raises(MigrationError, match=r"001_broken.sql, statement 1 failed"):
        open_store(migrations_dir=migrations)


# -- writing and reading ---------------------------------------------------------------


def test_rows_of_every_topic_are_stored_and_read_back(store):
    load(store, workload())
    assert store.count("approvals") == 4
    assert store.count("decisions") == 5
    assert store.count("outcomes") == 3
    assert store.count("rejections") == 1
    assert store.count("lineage_events") == LINEAGE_EVENTS

    ap1 = store.query("SELECT * FROM approvals WHERE approval_id = 'ap-1'").dicts()[0]
    assert ap1["verdict_layers"] == ["freshness", "allowlist"]
    assert ap1["verdict_durations_us"] == [3, 5]
    assert ap1["issued_at"] == "2025-01-01 10:01:00.000"
    assert ap1["envelope"].startswith('{"payload"')
    review = store.query("SELECT outcome, kafka_topic FROM decisions WHERE decision_id = 'r-1'")
    assert review.rows == [("REVIEW", "review")]
    rej = store.query("SELECT key, value_prefix_hex, reason_code FROM rejections").rows
    assert rej == [("billing\\xff", "c30100", "not_avro")]
    event = store.query(
        "SELECT stage, event_type, status, attributes, occurred_at_ms, verdict_layers, "
        "verdict_statuses, verdict_reasons, verdict_durations_us, verdict_evidence, signer "
        "FROM lineage_events WHERE event_id = 'ev-7-decision'"
    )
    assert event.rows == [
        (
            "enforcement",
            "intent.approved",
            "approved",
            {"topic": "approved"},
            HOUR_10 + 7000,
            ["freshness", "allowlist"],
            ["ALLOW", "ALLOW"],
            [[], []],
            [28, 42],
            [{"checked": "freshness"}, {"checked": "allowlist"}],
            GATE_KEY.kid,
        )
    ]
    execution = store.query(
        "SELECT verdict_layers, verdict_evidence FROM lineage_events "
        "WHERE event_id = 'ev-7-execution'"
    )
    assert execution.rows == [([], [])]


def test_a_redelivered_batch_is_never_counted_twice(store):
    records = workload()
    load(store, records)
    load(store, records)  # the same batch again: dropped by its deduplication token
    load(store, records, batch=37)  # the same records in other batches: merged by key
    raw = store.query("SELECT count() FROM lineage_log").scalar()
    assert raw >= LINEAGE_EVENTS
    assert store.count("lineage_events") == LINEAGE_EVENTS
    dupes = store.query(
        "SELECT count() FROM (SELECT event_id FROM lineage_events GROUP BY event_id "
        "HAVING count() > 1)"
    )
    assert dupes.scalar() == 0
    for table, expected in (("approvals", 4), ("decisions", 5), ("outcomes", 3), ("rejections", 1)):
        assert store.count(table) == expected, table
    # and the analytics agree with a single load
    per_hour = run_named_query(store, "decisions_per_agent_hour")
    assert sum(per_hour.column("decisions")) == 9


def test_the_same_block_flushed_twice_is_dropped_at_insert(store):
    table, row = map_record("lineage-log", lineage("only-once"))
    for _ in range(3):
        store.add(table, row)
        store.flush()
    assert store.query("SELECT count() FROM lineage_log").scalar() == 1


def test_discard_drops_buffered_rows(store):
    table, row = map_record("lineage-log", lineage("never-written"))
    store.add(table, row)
    assert store.pending == 1
    assert store.discard() == 1
    assert store.flush() == 0
    assert store.count("lineage_events") == 0


def test_rows_must_match_their_table(store):
    with pytest.raises(SinkError, match="no table"):
        store.add("nope", {})
    with pytest.raises(SinkError, match="missing"):
        store.add("outcomes", {"outcome_id": "o"})
    table, row = map_record("outcomes", outcome("o-1", "ap-1"))
    with pytest.raises(SinkError, match="unknown"):
        store.add(table, {**row, "surprise": 1})


def test_an_intent_held_for_review_keeps_both_decisions_and_ends_where_it_ended(store):
    held = decision("d-held", "support", "REVIEW", ["needs a person"], HOUR_10)
    later = {
        **held,
        "outcome": "DENIED",
        "reasons": ["review: no answer"],
        "decided_at_ms": HOUR_11,
    }
    approved_later = approval("ap-after-review", "support", HOUR_11)
    held_2 = {**decision("d-held-2", "support", "REVIEW", [], HOUR_10)}
    held_2["intent_id"] = approved_later["intent_id"]
    records = [
        ("review", held),
        ("denied", later),
        ("review", held_2),
        ("approved", approved_later),
    ]
    load(store, records)
    load(store, records)  # redelivered: still one row per decision
    rows = store.query(
        "SELECT outcome, reasons FROM decisions WHERE decision_id = 'd-held' ORDER BY decided_at"
    ).rows
    assert rows == [("REVIEW", ["needs a person"]), ("DENIED", ["review: no answer"])]
    outcomes = store.query(
        "SELECT intent_id, final_outcome, held_for_review FROM intent_outcomes ORDER BY intent_id"
    ).rows
    assert [(o, bool(h)) for _, o, h in outcomes] == [("APPROVED", True), ("DENIED", True)]


# -- records that cannot be rows ------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "record", "name", "code", "match"),
    [
        ("lineage-log", {}, "dev.trustplane.Intent", "wrong_record_type", "carries"),
        ("metrics", {}, None, "wrong_record_type", "does not read topic"),
        (
            "lineage-log",
            {**lineage("x"), "event_id": " "},
            None,
            "invalid_field",
            "event_id is empty",
        ),
        (
            "lineage-log",
            {**lineage("x"), "occurred_at_ms": 10**17},
            None,
            "invalid_field",
            "between 1900",
        ),
        ("outcomes", {**outcome("o", "a"), "reported_at_ms": "soon"}, None, "invalid_field", "not"),
        ("approved", {**approval("a", "b", 0), "verdicts": [{}]}, None, "invalid_field", "verdict"),
        ("lineage-log", {**lineage("x"), "verdicts": [{}]}, None, "invalid_field", "verdict"),
        (
            "lineage-log",
            {**lineage("x"), "verdicts": [{**lineage_verdicts(("a", 1))[0], "duration_us": "x"}]},
            None,
            "invalid_field",
            "verdict",
        ),
        ("denied", {"decision_id": "d"}, None, "invalid_field", "Decision record is malformed"),
    ],
)
def test_unmappable_records_raise_a_mapping_error_with_a_rejection_code(
    topic, record, name, code, match
):
    with pytest.raises(MappingError, match=match) as caught:
        map_record(topic, record, record_name=name)
    assert caught.value.code == code


def unlinked(event_id: str) -> dict[str, Any]:
    """A lineage event as the gate writes it to `lineage`: no hashes, no log index."""
    return {**lineage(event_id), "prev_hash": None, "event_hash": None, "log_index": None}


@pytest.mark.parametrize(
    ("topic", "record", "match"),
    [
        ("lineage", lineage("x"), "stored from lineage-log"),
        ("lineage-log", unlinked("x"), "not a notary hash"),
        ("lineage-log", {**lineage("x"), "log_index": None}, "not a log position"),
        ("lineage-log", {**lineage("x"), "prev_hash": None}, "only the first event"),
        ("lineage-log", {**lineage("x"), "intent_id": ""}, "intent_id is an empty string"),
        ("lineage-log", {**lineage("x"), "agent_id": ""}, "agent_id is an empty string"),
    ],
)
def test_only_linked_lineage_is_stored(topic, record, match):
    with pytest.raises(MappingError, match=match):
        map_record(topic, record)


def test_a_stored_lineage_row_gives_back_the_signed_linked_event_and_its_merkle_leaf(store):
    events = [
        lineage(
            "p-1",
            intent_id=None,
            agent_id=None,
            stage="decode",
            event_type="input.rejected",
            status="not_avro",
            reasons=["not Avro"],
        ),
        lineage(
            "p-2",
            verdicts=[
                {
                    "layer": "policy",
                    "status": "REVIEW",
                    "reasons": ["over limit", "needs a person"],
                    "evidence": {"policy": "payments", "limit": "1000"},
                    "duration_us": 75,
                },
                *lineage_verdicts(("freshness", 3)),
            ],
            status="review",
            event_type="intent.review",
            reasons=["needs a person"],
        ),
    ]
    load(store, [("lineage-log", e) for e in events])
    rows = store.query(
        "SELECT * FROM lineage_events WHERE event_id IN ('p-1', 'p-2') ORDER BY log_index"
    ).dicts()
    assert [r["intent_id"] for r in rows] == ["", "i-1"]  # null is stored as ''
    for row, event in zip(rows, events, strict=True):
        rebuilt = LineageEvent.from_row(row).to_record()
        assert rebuilt == event
        verify_event_hash(rebuilt)
        assert verify_event_signature(rebuilt, GATE_KEYSET) == GATE_KEY.kid
        assert leaf_bytes(rebuilt) == leaf_bytes(event)
    unlinked_rows = (
        "SELECT count() FROM lineage_events WHERE event_hash IS NULL OR log_index IS NULL"
    )
    assert store.query(unlinked_rows).scalar() == 0


def _migrations_up_to(tmp_path: Path, last: int) -> Path:
    folder = tmp_path / f"sql-{last:03d}"
    folder.mkdir()
    for path in SQL_DIR.glob("*.sql"):
        if int(path.name[:3]) <= last:
            shutil.copy(path, folder / path.name)
    return folder


_OLD_ROW = (
    "INSERT INTO lineage_events_raw (event_id, intent_id, agent_id, stage, event_type, "
    "status, reasons, attributes, occurred_at_ms, worker{linked_columns}) VALUES ('{event_id}', "
    "'i-1', 'billing', 'decode', 'intent.received', 'ok', [], map('source', 'intents/0@1'), "
    "1735725600000, 'w-1'{linked_values})"
)


def _old_row(event_id: str, *, log_index: int | None = None, event_hash: str = "") -> str:
    """A row an older sink wrote: unlinked (from `lineage`, before 008) or linked."""
    if log_index is None:
        return _OLD_ROW.format(event_id=event_id, linked_columns="", linked_values="")
    return _OLD_ROW.format(
        event_id=event_id,
        linked_columns=", prev_hash, event_hash, log_index",
        linked_values=f", NULL, '{event_hash}', {log_index}",
    )


def test_migrations_008_and_009_upgrade_a_store_of_unlinked_rows(tmp_path):
    old = ClickHouseSink(path=tmp_path / "store", migrations_dir=_migrations_up_to(tmp_path, 7))
    old.setup()
    old.query(_old_row("upgraded"), readonly=False)  # the pre-008 sink's row: no hashes
    old.close()

    store = ClickHouseSink(path=tmp_path / "store")
    store.setup()
    try:
        assert store.applied[:2] == ["008_provable_lineage.sql", "009_signed_lineage.sql"]
        assert store.applied == [m for m in MIGRATIONS if int(m[:3]) > 7]
        # a row without a log position proves nothing: it stays in the old table only
        assert store.count("lineage_events") == 0
        assert store.query("SELECT count() FROM lineage_events_raw").scalar() == 1
        event = lineage("upgraded")
        load(store, [("lineage-log", event)])  # the sink stores what the notary logged
        rows = store.query("SELECT event_hash, log_index, signer FROM lineage_events").rows
        assert rows == [(event["event_hash"], event["log_index"], GATE_KEY.kid)]
    finally:
        store.close()


def test_migration_009_starts_a_new_signed_log_and_keeps_the_old_rows_apart(tmp_path):
    old = ClickHouseSink(path=tmp_path / "store", migrations_dir=_migrations_up_to(tmp_path, 8))
    old.setup()
    linked_hash = "sha256:" + "1" * 64
    for statement in (
        _old_row("linked-0", log_index=0, event_hash=linked_hash),
        _old_row("never-logged"),
    ):
        old.query(statement, readonly=False)
    old.close()

    store = ClickHouseSink(path=tmp_path / "store")
    store.setup()
    try:
        assert store.applied == [m for m in MIGRATIONS if int(m[:3]) > 8]
        assert store.applied[0] == "009_signed_lineage.sql"
        # the unsigned events of the previous log stay where they were, for reference
        assert store.query("SELECT count() FROM lineage_events").scalar() == 0
        assert store.query("SELECT count() FROM lineage_events_raw FINAL").scalar() == 2
        # signed events the sink stores next are rows of their own, at their positions
        event = lineage("after-009")
        load(store, [("lineage-log", event)])
        load(store, [("lineage-log", event)])
        indexes = store.query("SELECT log_index FROM lineage_events ORDER BY log_index").rows
        assert indexes == [(event["log_index"],)]
    finally:
        store.close()


def test_a_reused_event_id_with_other_content_is_two_rows_and_a_conflict(store):
    first = lineage("reused", at=HOUR_10, status="approved")
    other = lineage("reused", at=HOUR_10 + 5, status="denied", worker="w-2")
    alone = lineage("alone")
    records = [("lineage-log", e) for e in (first, other, alone)]
    load(store, records)
    load(store, records, batch=1)  # redelivered: still one row per log position
    rows = store.query(
        "SELECT log_index, status, worker FROM lineage_events WHERE event_id = 'reused' "
        "ORDER BY log_index"
    ).rows
    assert rows == [
        (first["log_index"], "approved", "w-1"),
        (other["log_index"], "denied", "w-2"),
    ]
    conflicts = store.query(
        "SELECT event_id, versions, arraySort(log_indexes), arraySort(workers), signers "
        "FROM lineage_id_conflicts"
    ).rows
    assert conflicts == [
        (
            "reused",
            2,
            [first["log_index"], other["log_index"]],
            ["w-1", "w-2"],
            [GATE_KEY.kid, GATE_KEY.kid],
        )
    ]
    assert store.count("lineage_events") == 3


# -- the analytics queries ------------------------------------------------------------


def test_decisions_per_agent_per_hour(store):
    load(store, workload())
    result = run_named_query(store, "decisions_per_agent_hour")
    assert result.dicts() == [
        {
            "hour": "2025-01-01 10:00:00",
            "agent_id": "billing",
            "approved": 3,
            "denied": 1,
            "review": 0,
            "decisions": 4,
        },
        {
            "hour": "2025-01-01 11:00:00",
            "agent_id": "support",
            "approved": 1,
            "denied": 3,
            "review": 1,
            "decisions": 5,
        },
    ]


def test_top_denial_reasons(store):
    load(store, workload())
    result = run_named_query(store, "top_denial_reasons")
    assert [(r["reason"], r["denials"], r["agents"]) for r in result.dicts()] == [
        ("action not allowed", 3, 1),
        ("amount over limit", 2, 2),
    ]


def test_decision_latency_percentiles(store):
    load(store, workload())
    result = run_named_query(store, "decision_latency")
    assert result.columns == ("intents", "p50_layers_us", "p99_layers_us", "max_layers_us")
    row = result.dicts()[0]
    # 101 intents: layers took 0, 10, ..., 1000 us (execution events carry no verdicts)
    assert row["intents"] == 101
    assert (row["p50_layers_us"], row["p99_layers_us"], row["max_layers_us"]) == (500, 990, 1000)


def test_intent_latency_is_read_from_each_intent_s_decision_event(store):
    load(store, workload())
    load(
        store,
        [
            (
                "lineage-log",
                lineage(
                    "held",
                    intent_id="i-held",
                    agent_id="support",
                    event_type="intent.review",
                    status="review",
                    at=HOUR_11,
                    verdicts=lineage_verdicts(("freshness", 5), ("policy", 20)),
                ),
            ),
            (
                "lineage-log",
                lineage(
                    "held-answered",
                    intent_id="i-held",
                    agent_id="support",
                    stage="review",
                    event_type="review.resolved",
                    status="denied",
                    at=HOUR_11 + 60_000,
                    verdicts=lineage_verdicts(("review", 7)),
                ),
            ),
            ("lineage-log", lineage("anomaly", intent_id="i-odd", stage="anomaly")),
        ],
    )
    result = store.query("SELECT * FROM intent_latency ORDER BY intent_id")
    assert result.columns == ("intent_id", "agent_id", "decided_at_ms", "layers_us", "outcome")
    rows = {r["intent_id"]: r for r in result.dicts()}
    assert len(rows) == 102, "the 101 decided intents and the held one, not the anomaly"
    assert rows["i-007"] == {
        "intent_id": "i-007",
        "agent_id": "billing",
        "decided_at_ms": HOUR_10 + 7000,
        "layers_us": 70,
        "outcome": "approved",
    }
    # held for review: both decisions count, the last one is the outcome
    assert rows["i-held"] == {
        "intent_id": "i-held",
        "agent_id": "support",
        "decided_at_ms": HOUR_11,
        "layers_us": 32,
        "outcome": "denied",
    }


def test_anomalies_per_scenario_is_empty_without_anomaly_events(store):
    load(store, workload())
    result = run_named_query(store, "anomalies_per_scenario")
    assert result.rows == []
    assert result.columns[:2] == ("scenario", "anomalies")


def test_anomalies_per_scenario_counts_anomaly_stage_events(store):
    load(
        store,
        [
            (
                "lineage-log",
                lineage(
                    "a1", stage="anomaly", event_type="rate.spike", attributes={"scenario": "burst"}
                ),
            ),
            (
                "lineage-log",
                lineage(
                    "a2",
                    stage="anomaly",
                    event_type="rate.spike",
                    attributes={"scenario": "burst"},
                    agent_id="support",
                ),
            ),
            ("lineage-log", lineage("a3", stage="anomaly", event_type="new.resource")),
            ("lineage-log", lineage("n1")),
        ],
    )
    result = run_named_query(store, "anomalies_per_scenario")
    assert [(r["scenario"], r["anomalies"], r["agents"]) for r in result.dicts()] == [
        ("burst", 2, 2),
        ("new.resource", 1, 1),
    ]


def test_approvals_without_outcome_and_outcomes_without_approval(store):
    load(store, workload())
    waiting = run_named_query(store, "approvals_without_outcome")
    assert waiting.column("approval_id") == ["ap-3", "ap-4"]
    assert all(waiting.column("expired")), "issued in 2025, long expired"
    unauthorized = run_named_query(store, "outcomes_without_approval")
    assert unauthorized.column("outcome_id") == ["o-3"]
    assert unauthorized.column("approval_id") == ["ap-ghost"]


def test_checkpoint_lag(store):
    load(store, workload())
    before = run_named_query(store, "checkpoint_lag").dicts()
    assert before == [
        {
            "origin": "",
            "checkpointed_size": 0,
            "lineage_events": LINEAGE_EVENTS,
            "lag_events": LINEAGE_EVENTS,
            "latest_checkpoint_at": None,
            "lag_ms": None,
        }
    ]
    origin = "trustplane.example/lineage"
    store.add("checkpoints", checkpoint_row(origin, 100, b"\x01" * 32, "note 1", HOUR_10 + 5_000))
    store.add("checkpoints", checkpoint_row(origin, 300, b"\x02" * 32, "note 2", HOUR_10 + 60_000))
    store.add("checkpoints", checkpoint_row(origin, 300, b"\x02" * 32, "note 2", HOUR_10 + 60_000))
    store.flush()
    after = run_named_query(store, "checkpoint_lag").dicts()
    assert after == [
        {
            "origin": origin,
            "checkpointed_size": 300,
            "lineage_events": LINEAGE_EVENTS,
            "lag_events": LINEAGE_EVENTS - 300,
            "latest_checkpoint_at": "2025-01-01 10:01:00.000",
            "lag_ms": NEWEST_EVENT_MS - (HOUR_10 + 60_000),
        }
    ]
    assert store.count("checkpoints") == 2


def test_a_signed_checkpoint_note_becomes_a_checkpoints_row(store):
    from processors.crypto.keys import generate_signing_key
    from processors.log.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
    from sinks.clickhouse import checkpoint_from_note

    signer = NoteSigner("trustplane.example/lineage", generate_signing_key())
    note = sign_checkpoint(Checkpoint("trustplane.example/lineage", 7, b"\x07" * 32), signer)
    row = checkpoint_from_note(note.encode(), HOUR_10)
    assert (row["origin"], row["tree_size"], row["note"]) == ("trustplane.example/lineage", 7, note)
    store.add("checkpoints", row)
    store.flush()
    stored = store.query("SELECT root_hash, created_at FROM checkpoints").rows
    assert stored == [("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", "2025-01-01 10:00:00.000")]
    with pytest.raises(MappingError, match="not a checkpoint"):
        checkpoint_from_note("hello\n\n— sig\n", HOUR_10)


def test_every_named_query_runs_on_an_empty_store(store):
    for name in named_queries():
        run_named_query(store, name)  # no error: empty results are fine


# -- read-only queries --------------------------------------------------------------


def test_queries_are_read_only_at_two_levels(store):
    with pytest.raises(SqlGuardError, match="INSERT"):
        store.query("INSERT INTO lineage_log (event_id) VALUES ('x')")
    # below the guard, ClickHouse itself refuses: readonly=1 is set on the connection
    backend = store._backend
    assert backend is not None
    with pytest.raises(SqlGuardError, match="CREATE"):
        backend.select("CREATE TABLE sneaky (a Int8) ENGINE = Memory", {}, readonly=True)
    with backend.reader() as run, pytest.raises(QueryError) as caught:
        run("CREATE TABLE sneaky (a Int8) ENGINE = Memory", {})
    assert caught.value.code == 164
    assert store.count("lineage_events") == 0


def test_query_errors_carry_the_clickhouse_code_and_a_hint(store):
    with pytest.raises(SqlGuardError, match="no_such_table") as refused:
        store.query("SELECT * FROM no_such_table")
    assert "SHOW TABLES" in (refused.value.hint or "")
    with pytest.raises(QueryError) as caught:
        store.query("SELECT no_such_column FROM decisions")
    assert caught.value.code == 47
    assert "DESCRIBE" in (caught.value.hint or "")
    with pytest.raises(QueryError) as caught:
        store.query("SELECT number FROM numbers(200001)")
    assert caught.value.code == 396


def test_parameters_are_bound_server_side(store):
    load(store, workload())
    result = store.query(
        "SELECT count() FROM decisions WHERE agent_id = {agent:String}", {"agent": "support"}
    )
    assert result.scalar() == 4
    hostile = store.query("SELECT {v:String} AS v", {"v": "x'; DROP TABLE decisions_raw; --"})
    assert hostile.scalar() == "x'; DROP TABLE decisions_raw; --"
    with pytest.raises(QueryError, match="needs a value"):
        store.query("SELECT {v:String}")
    with pytest.raises(QueryError, match="not used"):
        store.query("SELECT 1", {"v": 1})


def test_server_style_json_with_quoted_64_bit_integers_parses_to_ints():
    raw = (
        b'{"meta":[{"name":"n","type":"UInt64"},{"name":"a","type":"Array(Nullable(Int64))"},'
        b'{"name":"m","type":"Map(String, UInt64)"},'
        b'{"name":"t","type":"Tuple(a UInt64, b String)"},'
        b'{"name":"s","type":"LowCardinality(String)"}],'
        b'"data":[["18446744073709551615",["1",null],{"k":"2"},{"a":"3","b":"x"},"y"]],"rows":1}'
    )
    result = parse_json_compact(raw)
    assert result.rows == [(2**64 - 1, [1, None], {"k": 2}, {"a": 3, "b": "x"}, "y")]
    with pytest.raises(QueryError, match="JSONCompact"):
        parse_json_compact(b"1,2,3\n")


# -- one folder, one process ------------------------------------------------------------


def test_a_second_process_cannot_open_the_folder_and_is_told_why(store):
    assert store.path is not None
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from sinks.base import SinkUnavailableError
        from sinks.clickhouse import ClickHouseSink
        try:
            ClickHouseSink(path=Path({str(store.path)!r})).setup()
        except SinkUnavailableError as exc:
            print("REFUSED", exc.reason)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert "REFUSED" in done.stdout, done.stdout + done.stderr
    assert "in use by another process" in done.stdout


def test_opening_a_missing_store_read_only_says_how_to_create_it(tmp_path):
    store = ClickHouseSink(path=tmp_path / "absent")
    with pytest.raises(SinkUnavailableError, match="no lineage store") as caught:
        store.setup(migrate=False)
    assert "trustplane sink" in (caught.value.hint or "")


# -- the clickhouse-connect backend: same DDL, same queries, same answers ---------------


def test_the_clickhouse_connect_backend_gives_the_same_answers(tmp_path):
    clickhouse_connect = pytest.importorskip("clickhouse_connect")
    answers: list[dict[str, list[tuple[Any, ...]]]] = []
    for backend in ("chdb", "clickhouse-connect"):
        folder = tmp_path / backend
        if backend == "chdb":
            store = ClickHouseSink(path=folder)
        else:
            client = clickhouse_connect.get_client(interface="chdb", path=str(folder))
            store = ClickHouseSink(client=client)
        try:
            store.setup()
            assert store.applied == MIGRATIONS
            records = workload()
            load(store, records)
            load(store, records, batch=50)
            answers.append({name: run_named_query(store, name).rows for name in named_queries()})
            assert store._backend is not None
            with pytest.raises(SqlGuardError, match="DROP"):
                store._backend.select("DROP TABLE decisions_raw", {}, readonly=True)
            with store._backend.reader() as run, pytest.raises(QueryError) as caught:
                run("DROP TABLE decisions_raw", {})
            assert caught.value.code == 164
        finally:
            store.close()
    chdb_answers, connect_answers = answers
    assert connect_answers == chdb_answers
    assert sum(r[5] for r in connect_answers["decisions_per_agent_hour"]) == 9


def test_write_mode_runs_one_statement_as_a_command(tmp_path):
    clickhouse_connect = pytest.importorskip("clickhouse_connect")
    client = clickhouse_connect.get_client(interface="chdb", path=str(tmp_path / "server"))
    store = ClickHouseSink(client=client)  # stands in for a server: the same client API
    try:
        store.setup()
        load(store, workload())
        done = store.query(
            "ALTER TABLE outcomes_raw DELETE WHERE outcome_id = 'o-3'", readonly=False
        )
        assert done.rows == [] and done.columns == ()
        store.query("OPTIMIZE TABLE outcomes_raw FINAL", readonly=False)
        assert store.query("SELECT count() FROM outcomes", readonly=False).scalar() == 2
        with pytest.raises(SqlGuardError, match="2 statements"):
            store.query("SELECT 1; SELECT 2", readonly=False)
        with pytest.raises(QueryError, match="only bound"):
            store.query("DROP TABLE x", {"a": 1}, readonly=False)
    finally:
        store.close()


# -- the SQL endpoint and `trustplane sql`, without Kafka ---------------------------------


def test_the_sql_endpoint_answers_reads_and_refuses_writes(store):
    import urllib.error
    import urllib.request

    from streams.sink import QueryServer, SinkQueryClient

    load(store, workload())
    from streams.httpauth import AuthenticationError

    server = QueryServer(store, "127.0.0.1", 0).start()
    try:
        # the token is in <state_dir>/sink/sql.token, next to the chDB folder, mode 0600
        assert store.path is not None
        token_file = store.path.parent / "sink" / "sql.token"
        assert server.token.path == token_file and token_file.stat().st_mode & 0o777 == 0o600
        client = SinkQueryClient(f"http://127.0.0.1:{server.port}", token_file=token_file)
        assert client.health() == {"ready": True}
        anonymous = SinkQueryClient(f"http://127.0.0.1:{server.port}")
        assert anonymous.health() == {"ready": True}  # health needs no token; queries do
        with pytest.raises(AuthenticationError, match="Bearer"):
            anonymous.query("SELECT 1")
        result = client.query(
            "SELECT count() AS n FROM decisions WHERE agent_id = {a:String}", {"a": "support"}
        )
        assert result.columns == ("n",) and result.rows == [(4,)]
        event = client.query(
            "SELECT verdict_durations_us, verdict_evidence FROM lineage_events "
            "WHERE event_id = 'ev-3-decision'"
        )
        assert event.rows == [([12, 18], [{"checked": "freshness"}, {"checked": "allowlist"}])]
        with pytest.raises(SqlGuardError, match="DROP"):
            client.query("DROP TABLE decisions_raw")
        with pytest.raises(SqlGuardError, match="nowhere") as caught:
            client.query("SELECT * FROM nowhere")
        assert caught.value.hint
        with pytest.raises(QueryError) as failed:
            client.query("SELECT nothing FROM decisions")
        assert failed.value.code == 47 and failed.value.hint
        with pytest.raises(SqlGuardError, match="only reads"):
            client.query("SELECT 1", readonly=False)
        # a browser cannot post a simple form to it: JSON only
        plain = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/sql",
            data=b"SELECT 1",
            method="POST",
            headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(plain, timeout=5)  # noqa: S310 - loopback
        assert refused.value.code == 415
        refused.value.close()
    finally:
        server.stop()
    assert store.count("decisions") == 5


def _cli_settings(tmp_path: Path, port: int) -> Any:
    from dataclasses import dataclass

    from streams.config import Settings

    @dataclass(frozen=True)
    class WithSink(Settings):  # the fields streams/config.py is to get
        sink_http_port: int = 0

    return WithSink(state_dir=tmp_path, sink_http_port=port)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_trustplane_sql_reads_the_folder_when_no_sink_runs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import streams.cli.sql as sql_cli

    store = ClickHouseSink(path=tmp_path / "clickhouse")
    store.setup()
    try:
        load(store, workload())
    finally:
        store.close()
    monkeypatch.setattr(sql_cli, "_settings", lambda: _cli_settings(tmp_path, _free_port()))
    runner = CliRunner()

    done = runner.invoke(sql_cli.app, ["sql", "--query", "top_denial_reasons", "--format", "csv"])
    assert done.exit_code == 0, done.output
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "reason,denials,agents,first_seen,last_seen"
    assert lines[1].startswith("action not allowed,3,1,")

    done = runner.invoke(
        sql_cli.app,
        [
            "sql",
            "SELECT agent_id, count() AS n FROM decisions "
            "WHERE agent_id = {a:String} GROUP BY agent_id",
            "-p",
            "a=billing",
            "-f",
            "json",
        ],
    )
    assert done.exit_code == 0, done.output
    assert '"agent_id": "billing"' in done.stdout and '"n": 1' in done.stdout

    done = runner.invoke(
        sql_cli.app, ["sql", "SELECT reasons, verdict_durations_us FROM decisions LIMIT 1"]
    )
    assert done.exit_code == 0, done.output
    assert "reasons" in done.stdout

    done = runner.invoke(sql_cli.app, ["sql", "--list", "--format", "json"])
    assert done.exit_code == 0 and "checkpoint_lag" in done.stdout

    done = runner.invoke(sql_cli.app, ["sql", "TRUNCATE TABLE decisions_raw"])
    assert isinstance(done.exception, SqlGuardError)
    done = runner.invoke(sql_cli.app, ["sql", "SELECT 1", "--write"])
    assert isinstance(done.exception, SqlGuardError) and "server" in done.exception.reason
    done = runner.invoke(sql_cli.app, ["sql", "--query", "nope"])
    assert isinstance(done.exception, QueryError) and "known queries" in (done.exception.hint or "")


def test_trustplane_sql_without_a_store_says_to_run_the_sink(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import streams.cli.sql as sql_cli

    monkeypatch.setattr(sql_cli, "_settings", lambda: _cli_settings(tmp_path, _free_port()))
    done = CliRunner().invoke(sql_cli.app, ["sql", "SELECT 1"])
    assert isinstance(done.exception, SinkUnavailableError)
    assert "trustplane sink" in (done.exception.hint or "")


def test_a_text_parameter_reaches_the_query_exactly(store):
    value = "back\\slash\nnew line\ttab"
    assert store.query("SELECT {v:String} AS v", {"v": value}).rows == [(value,)]
