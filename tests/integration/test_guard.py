"""The guard on the real broker and gate, as the ``guard`` principal: an approved call
runs once and its outcome reaches lineage; a denied, unmapped, forged or replayed one
never runs; the decorator does the same for plain functions, sync and async."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.approval import ApprovalSigner, LineagePosition
from processors.approval.keyring import SigningKeyring
from processors.enforcement import Enforcement, Outcome
from processors.intent import Intent
from processors.records import approval_record
from processors.verdict import Verdict
from streams.codec import default_codec
from streams.config import Settings
from streams.dev.estate import setup_estate
from streams.dev.localkafka import LocalKafka
from streams.kafka import producer as kafka_producer
from streams.operator import OperatorClient
from streams.sdk import OutcomeReader
from streams.sdk.guard import (
    Denied,
    Guard,
    NeedsReview,
    Unavailable,
    Unmapped,
    Unverified,
    guarded,
    load_mapping,
)
from streams.sdk.guard.waiter import Answer
from tests.conftest import TEST_STATE_DIR
from tests.integration.guardkit import gated_settings, make_guard

pytestmark = pytest.mark.broker

CODEC = default_codec()


@pytest.fixture
def gated(settings: Settings, worker_factory: Callable[[Settings], Any]) -> Settings:
    return gated_settings(settings, worker_factory)


@pytest.fixture
def guard(gated: Settings, tmp_path: Path) -> Iterator[Guard]:
    with make_guard(gated, tmp_path) as g:
        yield g


def lineage_events(settings: Settings, intent_id: str, want: set[str], timeout: float = 30):
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with OutcomeReader(settings, ["lineage"]) as reader:
        while time.monotonic() < deadline and not want <= set(seen):
            for received in reader.read(timeout=1.0):
                record = received.record or {}
                if record.get("intent_id") == intent_id:
                    seen[str(record["event_type"])] = record
    return seen


def test_an_approved_call_runs_once_and_its_outcome_reaches_lineage(
    guard: Guard, gated: Settings
) -> None:
    runs: list[str] = []

    def read_invoice() -> dict[str, str]:
        runs.append("INV-7")
        return {"invoice": "INV-7", "total": "12.50"}

    result = guard.run("read_invoice", {"invoice_id": "INV-7"}, read_invoice)

    assert result == {"invoice": "INV-7", "total": "12.50"}
    assert runs == ["INV-7"]
    auth_intent = None
    with OutcomeReader(gated, ["outcomes"]) as reader:
        outcomes = [r.record for r in reader.read(timeout=3.0) if r.record]
    assert len(outcomes) == 1
    (outcome,) = outcomes
    assert outcome["status"] == "EXECUTED" and outcome["detail"].startswith("result sha256:")
    auth_intent = outcome["intent_id"]
    events = lineage_events(gated, auth_intent, {"intent.approved", "execution.reported"})
    assert {"intent.approved", "execution.reported"} <= set(events)


def test_a_denied_call_does_not_run_and_the_agent_sees_the_reason(guard: Guard) -> None:
    runs: list[float] = []
    with pytest.raises(Denied) as denied:
        guard.run(
            "pay",
            {"account": "ACME-42", "amount": 75000.0, "currency": "EUR"},
            lambda: runs.append(75000.0),
        )
    assert runs == []
    assert "payments.limit-50k" in denied.value.message() or "50,000" in denied.value.message()
    assert denied.value.intent_id


def test_an_unmapped_tool_is_denied_before_anything_is_published(guard: Guard) -> None:
    with pytest.raises(Unmapped, match="no mapping for tool 'drop_database'"):
        guard.run("drop_database", {"name": "prod"}, lambda: pytest.fail("ran"))


def test_a_forged_approval_does_not_run_the_tool(settings: Settings, tmp_path: Path) -> None:
    # no gate at all: the only answer is the forger's, signed by a key the JWKS lacks
    setup_estate(settings)
    SigningKeyring.generate(tmp_path / "forger")
    forger = SigningKeyring.from_directory(tmp_path / "forger")
    admin = kafka_producer(settings)
    with make_guard(settings, tmp_path, deadline_s=8.0) as g:
        publish = g.publisher.publish_raw

        def publish_and_forge(key: bytes | None, value: bytes | None) -> None:
            publish(key, value)
            record = CODEC.decode(value or b"", "Intent")
            intent = Intent.from_record(record, key=key)
            forged = approval_record(
                intent,
                Enforcement(Outcome.APPROVED, (), (Verdict.allow("policy", "forged"),)),
                intent_digest="sha256:" + hashlib.sha256(value or b"").hexdigest(),
                intent_bytes=value or b"",
                now_ms=time.time_ns() // 1_000_000,
                worker="w-forger",
                signer=ApprovalSigner(forger),
                ttl_ms=60_000,
                lineage=LineagePosition("event-forged"),
            )
            admin.produce(settings.topic("approved"), CODEC.encode("Approval", forged), key)
            admin.flush(10)

        g.publisher.publish_raw = publish_and_forge  # type: ignore[method-assign]
        runs: list[str] = []
        with pytest.raises(Unverified, match="does not verify"):
            g.run("read_invoice", {"invoice_id": "INV-9"}, lambda: runs.append("ran"))
        assert runs == []


def test_a_replayed_approval_is_refused(guard: Guard, gated: Settings) -> None:
    guard.run("read_invoice", {"invoice_id": "INV-11"}, lambda: "first")
    # the approval and its intent, as they are on the broker
    with OutcomeReader(gated, ["approved", "outcomes"]) as reader:
        records = list(reader.read(timeout=3.0))
    (approved,) = [r for r in records if r.topic == "approved"]
    with OutcomeReader(gated, ["intents"]) as reader:
        (intent_record,) = [r for r in reader.read(timeout=3.0)]
    raw_intent = approved.record["intent"] if approved.record else b""
    answer = Answer(
        "approved", approved.key, CODEC.encode("Approval", approved.record), approved.record
    )
    with pytest.raises(Unverified, match="already used"):
        guard.verify("read_invoice", intent_record.record or {}, raw_intent, answer)


def test_the_decorator_guards_sync_and_async_functions(guard: Guard) -> None:
    calls: list[str] = []

    @guarded(guard, action="invoices.read", resource="invoice:{invoice_id}")
    def read_invoice(invoice_id: str, *, verbose: bool = False) -> str:
        calls.append(f"sync {invoice_id}")
        return f"invoice {invoice_id}"

    @guarded(
        guard,
        action="payments.transfer",
        resource="acct:{account}",
        parameters=["amount", "currency"],
    )
    async def pay(account: str, amount: float, currency: str = "EUR") -> str:
        calls.append(f"async {account}")
        return "paid"

    assert read_invoice("INV-21") == "invoice INV-21"
    assert asyncio.run(pay("ACME-42", 120.0)) == "paid"
    with pytest.raises(Denied):
        asyncio.run(pay("ACME-42", 75000.0))
    assert calls == ["sync INV-21", "async ACME-42"]
    assert read_invoice.__name__ == "read_invoice"


def test_example_mappings_load() -> None:
    for path in sorted(Path("policies/tools").glob("*.toml")):
        mapping = load_mapping(path)
        assert mapping.tools, path


def test_a_held_call_runs_only_after_a_reviewer_approves(guard: Guard, gated: Settings) -> None:
    runs: list[str] = []
    with pytest.raises(NeedsReview) as held:
        guard.run("refund", {"account": "ACME-42", "amount": 12.0, "currency": "EUR"}, runs.append)
    assert runs == [] and "payments.refunds" in held.value.message()
    intent_id = held.value.intent_id
    assert intent_id
    with OperatorClient(gated) as operator:
        operator.send(
            "review.approve",
            {"intent_id": intent_id, "reason": "refund checked"},
            subject=f"review/{intent_id}",
        )
    auth = guard.await_review(intent_id, timeout_s=30)
    assert guard.execute(auth, lambda: runs.append("refunded") or "ok") == "ok"
    assert runs == ["refunded"]


def test_with_the_broker_stopped_the_call_fails_closed_within_the_deadline(
    guard: Guard, kafka_broker: Any
) -> None:
    guard.deadline_s = 3.0
    guard.run("read_invoice", {"invoice_id": "INV-31"}, lambda: "warm")  # connections up
    info = LocalKafka(TEST_STATE_DIR).status()
    assert info is not None
    runs: list[str] = []
    os.kill(info.pid, signal.SIGSTOP)  # the broker stops answering
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            guard.run("read_invoice", {"invoice_id": "INV-32"}, lambda: runs.append("ran"))
        elapsed = time.monotonic() - started
    finally:
        os.kill(info.pid, signal.SIGCONT)
    assert runs == []
    assert elapsed < guard.deadline_s + 2.0
