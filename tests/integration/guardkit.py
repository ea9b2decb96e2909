"""Shared by the guard's and its adapters' integration tests: a gated estate (the demo
agents registered, the example bundle, a real worker) and a guard of ``billing-agent``
running as the ``guard`` Kafka principal."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from processors.crypto.keys import load_private_key
from streams.config import Settings
from streams.dev.estate import DEMO_AGENTS, setup_estate
from streams.sdk import ClientConfig
from streams.sdk.guard import AgentIdentity, Guard, ToolMapping
from streams.sdk.guard.mapping import mapping_from_document

BILLING = mapping_from_document(
    {
        "toolset": {"name": "billing"},
        "tools": {
            "read_invoice": {"action": "invoices.read", "resource": "invoice:{invoice_id}"},
            "pay": {
                "action": "payments.transfer",
                "resource": "acct:{account}",
                "parameters": ["amount", "currency"],
            },
            "refund": {
                "action": "refunds.issue",
                "resource": "acct:{account}",
                "parameters": ["amount", "currency"],
            },
        },
    }
)
"""read_invoice(invoice_id) is approved for billing-agent; pay(account, amount, currency)
is approved up to 10,000 EUR and denied above 50,000 (payments.limit-50k); refund(account,
amount, currency) is held for review (payments.refunds)."""


def guard_config(settings: Settings) -> ClientConfig:
    """The client settings of a process running as the ``guard`` principal."""
    return ClientConfig(
        bootstrap_servers=settings.bootstrap_servers,
        topic_prefix=settings.topic_prefix,
        group_id=settings.group_id,
        username="guard",
        password_file=settings.resolved_kafka_credentials_dir / "guard",
    )


def gated_settings(settings: Settings, worker_factory: Callable[[Settings], Any]) -> Settings:
    """Register the demo estate and start a real gate worker for ``settings``."""
    setup_estate(settings)
    worker_factory(settings).start()
    return settings


def billing_identity(settings: Settings) -> AgentIdentity:
    agent = DEMO_AGENTS["billing-agent"]
    key = load_private_key(settings.resolved_keys_dir / "agents" / "billing-agent.pem")
    return AgentIdentity(agent.agent_id, key, agent.runtime())


def make_guard(
    settings: Settings, tmp_path: Path, *, mapping: ToolMapping = BILLING, **options: Any
) -> Guard:
    """A guard of billing-agent (its own fresh state folder under ``tmp_path``)."""
    return Guard(
        guard_config(settings),
        billing_identity(settings),
        mapping,
        settings.resolved_keys_dir / "approvals.jwks.json",
        state_dir=tmp_path / f"guard-{uuid.uuid4().hex[:6]}",
        **options,
    )
