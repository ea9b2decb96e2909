"""The agent developer's front door: sign and publish intents, await what became of them.

::

    from streams.sdk import ClientConfig, IntentPublisher, OutcomeReader, new_intent
    from streams.sdk import load_private_key  # or however the agent keeps its key

    config = ClientConfig.load()            # TRUSTPLANE_BOOTSTRAP_SERVERS, _TOPIC_PREFIX, ...
    key = load_private_key(Path("billing-agent.pem"))  # the agent's registered Ed25519 key
    intent = new_intent("billing-agent", "invoices.read", "invoice:7", sequence=1,
                        key_id=key.kid, sign_with=key)
    with IntentPublisher(config) as publisher:
        publisher.publish(intent)
    with OutcomeReader(config) as reader:  # approved, denied, review or rejected
        ...

Executors import :mod:`streams.sdk.executor` (consume approvals, verify, mark used,
report the outcome). Neither needs the gate: ``pip install trustplane`` is enough.
"""

from __future__ import annotations

from processors.crypto.keys import SigningKey, load_private_key
from streams.sdk.client import IntentPublisher, OutcomeReader, Received, new_intent
from streams.sdk.config import ClientConfig
from streams.sdk.publish import PublishError

__all__ = [
    "ClientConfig",
    "IntentPublisher",
    "OutcomeReader",
    "Received",
    "new_intent",
    "load_private_key",
    "SigningKey",
    "PublishError",
]
