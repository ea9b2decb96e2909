"""Operator side: local keys, and signed control commands published to ``control``.

``ensure_local_keys`` sets up a single-machine estate (what ``make run`` and the
tests use): an operator key and the operator keyset (the trust root the workers
load), the gate's approval signing keyring, and its public JWKS for executors.
In production, operator keys live with operators, and only the JWKS files are
shipped to workers and executors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processors.approval.keyring import SigningKeyring
from processors.control import sign_command
from processors.crypto.keys import (
    KeyFileError,
    SigningKey,
    generate_signing_key,
    load_private_key,
    save_private_key,
)
from streams import kafka
from streams.codec import default_codec
from streams.config import Settings
from streams.sdk.publish import Publisher, PublishError

__all__ = ["LocalKeys", "ensure_local_keys", "OperatorClient", "agent_key", "PublishError"]


@dataclass(frozen=True)
class LocalKeys:
    operator_key_path: Path
    operator_keyset_path: Path
    signing_keys_dir: Path
    approval_jwks_path: Path
    created: tuple[str, ...]


def ensure_local_keys(settings: Settings) -> LocalKeys:
    """Create whatever local key material is missing; never overwrite existing keys."""
    created: list[str] = []
    operator_path = settings.resolved_operator_key_path
    if not operator_path.exists():
        save_private_key(operator_path, generate_signing_key())
        created.append(str(operator_path))
    operator = load_private_key(operator_path)
    keyset_path = settings.resolved_operator_keys_path
    if not keyset_path.exists():
        keyset_path.parent.mkdir(parents=True, exist_ok=True)
        keyset_path.write_text(json.dumps({"keys": [operator.public_jwk()]}, indent=2) + "\n")
        created.append(str(keyset_path))
    signing_dir = settings.resolved_signing_keys_dir
    if not (signing_dir / "keyring.json").exists():
        SigningKeyring.generate(signing_dir)
        created.append(str(signing_dir))
    jwks_path = settings.resolved_keys_dir / "approvals.jwks.json"
    jwks = SigningKeyring.from_directory(signing_dir).jwks()
    text = json.dumps(jwks, indent=2) + "\n"
    if not jwks_path.exists() or jwks_path.read_text() != text:
        jwks_path.write_text(text)
        created.append(str(jwks_path))
    return LocalKeys(operator_path, keyset_path, signing_dir, jwks_path, tuple(created))


def agent_key(settings: Settings, agent_id: str, *, create: bool = True) -> SigningKey:
    """The local key of an agent (``<keys_dir>/agents/<agent_id>.pem``), for demos."""
    path = settings.resolved_keys_dir / "agents" / f"{agent_id}.pem"
    if not path.exists():
        if not create:
            raise KeyFileError(f"no key for agent {agent_id!r} at {path}")
        save_private_key(path, generate_signing_key())
    return load_private_key(path)


class OperatorClient:
    """Signs control commands with the operator key and publishes them."""

    def __init__(
        self, settings: Settings, key: SigningKey | None = None, *, issued_by: str = "operator"
    ) -> None:
        self.settings = settings
        self.key = key or load_private_key(settings.resolved_operator_key_path)
        self.issued_by = issued_by
        self.codec = default_codec()
        self.topic = settings.topic("control")
        self.producer = kafka.producer(settings)
        self._publisher = Publisher(
            self.producer,
            what="control commands",
            hint="is the broker up? `trustplane kafka status`",
        )

    def command(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        subject: str | None = None,
        now_ms: int | None = None,
    ) -> dict[str, Any]:
        """Sign one command (not yet sent)."""
        return sign_command(kind, subject, payload, self.key, self.issued_by, now_ms=now_ms)

    def send(
        self, kind: str, payload: Mapping[str, Any], *, subject: str | None = None
    ) -> dict[str, Any]:
        record = self.command(kind, payload, subject=subject)
        value = self.codec.encode("ControlCommand", record)
        self._publisher.send(self.topic, str(record["subject"]).encode(), value)
        return record

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every command sent is delivered, or raise PublishError."""
        self._publisher.flush(timeout)

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
