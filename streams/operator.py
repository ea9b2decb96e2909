"""Operator side: local keys, and signed control commands published to ``control``.

``ensure_local_keys`` sets up a single-machine estate (what ``make run`` and the
tests use): an operator key and the operator keyset (the trust root the workers
load), the gate's approval signing keyring, its public JWKS for executors, and the
gate state key (the secret the workers seal ``gate-state`` with). In production,
operator keys live with operators, and only the JWKS files are shipped to workers and
executors; the gate state key is shared by the gate workers and nobody else.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from processors.approval.keyring import SigningKeyring
from processors.control import (
    ControlHistoryError,
    ControlResult,
    HistoryProblem,
    LogEntry,
    Signer,
    sign_command,
)
from processors.control.commands import Refused
from processors.control.history import CommandVerifier, ControlLog
from processors.crypto.keys import (
    KeyEntry,
    KeyError_,
    KeyFileError,
    Keyset,
    SigningKey,
    generate_signing_key,
    load_private_key,
    save_private_key,
)
from streams import kafka, names
from streams.codec import default_codec
from streams.config import Settings
from streams.gate.seal import create_state_key, state_key_path
from streams.sdk.publish import PublishError

__all__ = [
    "LocalKeys",
    "ensure_local_keys",
    "OperatorClient",
    "agent_key",
    "PublishError",
    "ControlHistoryError",
]

log = logging.getLogger(__name__)

PUBLISH_ATTEMPTS = 3


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
    state_key = state_key_path(settings)
    if create_state_key(state_key):
        created.append(str(state_key))
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
    """Signs control commands with an operator key, as the next of the key's history on
    ``control``, and publishes each in its own transaction.

    Raises :class:`ControlHistoryError` when the key's history on the topic is broken
    (workers refuse to start on it: another key must act) and :class:`PublishError` when
    a command cannot be published.
    """

    def __init__(
        self, settings: Settings, key: SigningKey | None = None, *, issued_by: str = "operator"
    ) -> None:
        self.settings = settings
        self.key = key or load_private_key(settings.resolved_operator_key_path)
        self.issued_by = issued_by
        self.codec = default_codec()
        self.topic = settings.topic("control")
        self.signer = Signer("operator", self.key.kid)
        self.transactional_id = names.operator_transaction(settings, self.key.kid)
        self._producer: Producer | None = None
        self._log: ControlLog | None = None

    # -- the key's history ------------------------------------------------------------

    def _keyset(self) -> Keyset:
        """The operator keyset (for the key windows the workers judge by), or this key."""
        path = self.settings.resolved_operator_keys_path
        if not path.exists():
            return Keyset([KeyEntry(self.key.kid, self.key.public_key)])
        keyset = Keyset.from_file(path)
        try:
            keyset.key_for(self.key.kid, time.time_ns() // 1_000_000)
        except KeyError_ as exc:
            raise PublishError(
                f"the workers would refuse commands signed with key {self.key.kid!r}: {exc.reason}",
                hint=f"use an operator key of {path} that is valid now",
            ) from None
        return keyset

    def _read_history(self) -> ControlLog:
        from streams.gate.control import ControlFollower

        reader = _HistoryReader(ControlLog(CommandVerifier(self._keyset())), self.signer)
        follower = ControlFollower(self.settings, reader)
        try:
            follower.catch_up(timeout=30)
        finally:
            follower.close()
        for problem in reader.others:
            log.warning("control history: %s", problem.reason)
        return reader.log

    def _start(self) -> tuple[Producer, ControlLog]:
        if self._producer is None or self._log is None:
            producer = kafka.transactional_producer(
                self.settings,
                self.transactional_id,
                {"client.id": self.transactional_id},
            )
            # fence an older client with this key before reading: from here on, only
            # this client appends to the key's history, or its commit fails
            kafka.start_transactions(producer, PublishError)
            self._log = self._read_history()
            self._producer = producer
        return self._producer, self._log

    # -- signing and publishing -------------------------------------------------------

    def command(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        subject: str | None = None,
        now_ms: int | None = None,
    ) -> dict[str, Any]:
        """Sign one command as the next of the key's history (not sent)."""
        _, history = self._start()
        try:
            link = history.history.next_link(self.signer)
        except Refused as exc:
            raise PublishError(exc.reason) from None
        return sign_command(
            kind, subject, payload, self.key, self.issued_by, now_ms=now_ms, link=link
        )

    def send(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        subject: str | None = None,
        now_ms: int | None = None,
    ) -> dict[str, Any]:
        """Sign a command and publish it (committed when this returns) under its subject."""
        failure = ""
        for _ in range(PUBLISH_ATTEMPTS):
            producer, history = self._start()
            record = self.command(kind, payload, subject=subject, now_ms=now_ms)
            value = self.codec.encode("ControlCommand", record)
            try:
                producer.begin_transaction()
                producer.produce(self.topic, key=str(record["subject"]).encode(), value=value)
                producer.commit_transaction(30)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                failure = str(error or exc)
                if isinstance(error, KafkaError) and error.txn_requires_abort():
                    try:
                        producer.abort_transaction(30)
                    except KafkaException:
                        self._producer = None
                else:  # fenced by another client with this key, or fatal: start over
                    self._producer = None
                self._log = None  # read the history again: another client may have added
                continue
            try:  # the next command follows this one
                command = history.verifier.verify(record, int(record["issued_at_ms"]))
                history.history.place_local(command)
            except Refused:  # (a key not valid at the date asked for): read the history again
                self._log = None
            return record
        raise PublishError(
            f"control command {kind} not published after {PUBLISH_ATTEMPTS} attempts: {failure}",
            hint="is the broker up? `trustplane kafka status`; another client publishing with "
            f"key {self.key.kid!r} at the same time makes this one start over",
        )

    def flush(self, timeout: float = 30.0) -> None:
        """Nothing to wait for: :meth:`send` returns once its command is committed."""

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


class _HistoryReader:
    """Reads the control log for one signer's history: only that history's problems
    (and the log's own) stop the client; other signers' are logged."""

    def __init__(self, log: ControlLog, signer: Signer) -> None:
        self.log = log
        self.signer = signer

    def apply_logged(self, entry: LogEntry) -> ControlResult:
        record = entry.record or {}
        kind, subject = str(record.get("kind", "")), str(record.get("subject", ""))
        try:
            admitted = self.log.admit(entry)
        except Refused as exc:
            return ControlResult(False, kind, subject, exc.reason)
        return ControlResult(True, kind, subject, "in place", admitted.command.command_id)

    @property
    def problems(self) -> Sequence[HistoryProblem]:
        return [p for p in self.log.history.problems if p.signer in (None, self.signer)]

    @property
    def others(self) -> Sequence[HistoryProblem]:
        return [p for p in self.log.history.problems if p.signer not in (None, self.signer)]

    def latest_applied(self) -> dict[str, dict[str, Any]]:
        return {}
