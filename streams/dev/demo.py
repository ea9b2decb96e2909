"""The demo stream of ``make run``: allowed, denied, malformed and hostile intents.

Each demo item says what it expects; the summary shows what the running worker did
with it and why, so a reader sees the gate's decisions without reading topics.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.codec import Codec, default_codec
from streams.config import Settings
from streams.dev.estate import Estate, measurement, setup_estate
from streams.sdk.client import IntentPublisher, OutcomeReader, Received, new_intent
from streams.topics import ensure_topics

__all__ = ["DemoItem", "demo_items", "run_demo", "DemoResult"]


@dataclass
class DemoItem:
    label: str
    expected: str
    key: bytes | None
    value: bytes
    intent_id: str | None = None
    got: str | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def value_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.value).hexdigest()


def _item(codec: Codec, label: str, expected: str, intent: dict[str, Any]) -> DemoItem:
    return DemoItem(
        label,
        expected,
        str(intent["agent_id"]).encode(),
        codec.encode("Intent", intent),
        intent["intent_id"],
    )


def demo_items(estate: Estate, codec: Codec | None = None) -> list[DemoItem]:
    """A small, fixed mix: what a platform team would want to see the gate do."""
    c = codec or default_codec()
    e = estate
    tampered = {**e.agents["ops-agent"].runtime(), "code_digest": measurement("patched build")}
    items = [
        _item(
            c,
            "billing pays an invoice",
            "approved",
            e.intent(
                "billing-agent", "payments.transfer", "acct:ACME-42", amount=1250.0, currency="EUR"
            ),
        ),
        _item(
            c,
            "billing reads invoices",
            "approved",
            e.intent("billing-agent", "invoices.read", "invoice:2026-11"),
        ),
        _item(
            c,
            "support answers a ticket",
            "approved",
            e.intent("support-bot", "tickets.reply", "ticket:8812"),
        ),
        _item(
            c,
            "support emails a customer",
            "approved",
            e.intent("support-bot", "email.send", "mailto:customer@example.com"),
        ),
        _item(
            c,
            "deploy to staging",
            "approved",
            e.intent("deploy-bot", "deploy.staging", "service:checkout"),
        ),
        _item(
            c,
            "analytics runs a query",
            "approved",
            e.intent("analytics-agent", "warehouse.query", "table:orders"),
        ),
        _item(
            c,
            "support tries a payment",
            "denied",
            e.intent(
                "support-bot", "payments.transfer", "acct:ACME-42", amount=90.0, currency="EUR"
            ),
        ),
        _item(
            c,
            "a 75,000 EUR transfer",
            "denied",
            e.intent(
                "billing-agent", "payments.transfer", "acct:ACME-42", amount=75000.0, currency="EUR"
            ),
        ),
        _item(
            c,
            "deploy to production off CI",
            "denied",
            e.intent("deploy-bot", "deploy.production", "service:checkout"),
        ),
        _item(
            c,
            "export to an unknown bucket",
            "denied",
            e.intent("analytics-agent", "warehouse.export", "s3://unknown-bucket/dump"),
        ),
        _item(
            c,
            "unregistered agent",
            "denied",
            new_intent("shadow-agent", "db.drop", "db:production", sequence=1),
        ),
        _item(
            c,
            "signed with someone else's key",
            "denied",
            e.intent("billing-agent", "invoices.read", "invoice:1", sign_with=e.key("ops-agent")),
        ),
        _item(
            c,
            "tampered runtime (quarantines)",
            "denied",
            e.intent("ops-agent", "reports.read", "report:q3", runtime=tampered),
        ),
        _item(
            c,
            "same agent, next intent",
            "denied",
            e.intent("ops-agent", "reports.read", "report:q4"),
        ),
    ]
    good = items[1].value
    wrong_type = c.encode(
        "Outcome",
        {
            "outcome_id": "o-1",
            "approval_id": "a-1",
            "intent_id": "i-1",
            "agent_id": "billing-agent",
            "executor_id": "e-1",
            "status": "EXECUTED",
            "detail": "",
            "reported_at_ms": 0,
        },
    )
    bad_digest = e.intent("billing-agent", "invoices.read", "invoice:2")
    bad_digest["runtime"]["code_digest"] = "md5:abc"
    items += [
        DemoItem("random bytes", "rejected", b"billing-agent", os.urandom(64)),
        DemoItem("truncated Avro", "rejected", b"billing-agent", good[: len(good) // 2]),
        DemoItem("an Outcome record on intents", "rejected", b"billing-agent", wrong_type),
        DemoItem("intent without a key", "rejected", None, good),
        DemoItem("key is not the agent id", "rejected", b"support-bot", good),
        DemoItem(
            "malformed code digest", "rejected", b"billing-agent", c.encode("Intent", bad_digest)
        ),
        DemoItem("a 5 MiB value", "rejected", b"billing-agent", b"\xc3\x01" + b"\0" * (5 << 20)),
    ]
    return items


@dataclass
class DemoResult:
    items: list[DemoItem]
    elapsed_s: float

    @property
    def matched(self) -> int:
        return sum(1 for i in self.items if i.got == i.expected)

    @property
    def missing(self) -> int:
        return sum(1 for i in self.items if i.got is None)


def run_demo(
    settings: Settings,
    *,
    timeout_s: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    codec = default_codec()
    started = time.monotonic()
    ensure_topics(settings)  # the worker creates them too, but may still be starting
    estate = setup_estate(settings)
    items = demo_items(estate, codec)
    reader = OutcomeReader(settings, from_beginning=False)
    with IntentPublisher(settings.for_role("agent"), codec) as publisher:
        for item in items:
            publisher.publish_raw(item.key, item.value)
    by_intent = {i.intent_id: i for i in items if i.intent_id}
    by_digest = {(i.value_digest, i.key[:256] if i.key else None): i for i in items}
    done = 0
    deadline = time.monotonic() + timeout_s
    try:
        while done < len(items) and time.monotonic() < deadline:
            for received in reader.read(timeout=0.5):
                matched = _match(received, by_intent, by_digest)
                if matched is None or matched.got is not None:
                    continue
                matched.got = received.topic
                matched.reason = _reason(received)
                done += 1
                if progress:
                    progress(done, len(items))
            if progress:
                progress(done, len(items))
    finally:
        reader.close()
    return DemoResult(items, time.monotonic() - started)


def _match(
    received: Received,
    by_intent: dict[str, DemoItem],
    by_digest: dict[tuple[str, bytes | None], DemoItem],
) -> DemoItem | None:
    record = received.record or {}
    if received.topic == "rejected":
        return by_digest.get((record.get("value_sha256", ""), record.get("key")))
    return by_intent.get(str(record.get("intent_id")))


def _reason(received: Received) -> str:
    record = received.record or {}
    if received.topic == "approved":
        verdicts = {v["layer"]: v for v in record.get("verdicts", [])}
        policy = verdicts.get("policy") or {}
        return "; ".join(policy.get("reasons", [])) or "every layer allowed"
    if received.topic == "rejected":
        return f"{record.get('reason_code')}: {record.get('reason')}"
    return "; ".join(record.get("reasons", []))
