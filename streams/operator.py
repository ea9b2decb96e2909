"""Operator side: local keys, and signed control commands published to ``control``.

``ensure_local_keys`` sets up a single-machine estate (what ``make run`` and the
tests use): an operator key and the operator keyset (the trust root the workers
load), the gate's approval signing keyring, its public JWKS for executors, and the
gate state key (the secret the workers seal ``gate-state`` with). In production,
operator keys live with operators, and only the JWKS files are shipped to workers and
executors; the gate state key is shared by the gate workers and nobody else.

Operator keys beyond the trust root (the keys operators' browsers hold in the console) are
enrolled by a root key with a command on ``control`` (:func:`enroll_operator`,
:func:`retire_operator`); :func:`read_operators` replays ``control`` to list them.
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
    ControlState,
    HistoryProblem,
    LogEntry,
    Signer,
    sign_command,
)
from processors.control.commands import Refused
from processors.control.history import ControlLog
from processors.control.operators import (
    ENROLL_KIND,
    OPERATOR_KINDS,
    RETIRE_KIND,
    check_label,
    parse_operator_key,
)
from processors.crypto.keys import (
    KeyEntry,
    KeyError_,
    KeyFileError,
    Keyset,
    KeysetError,
    SigningKey,
    generate_signing_key,
    load_private_key,
    save_private_key,
)
from processors.exceptions import TrustplaneError
from processors.timefmt import iso_ms
from streams import kafka, names
from streams.codec import default_codec
from streams.config import Settings
from streams.gate.seal import create_state_key, state_key_path
from streams.sdk.publish import PublishError

__all__ = [
    "LocalKeys",
    "ensure_local_keys",
    "OperatorClient",
    "OperatorCommandRefused",
    "agent_key",
    "enroll_operator",
    "retire_operator",
    "read_operators",
    "root_keyset",
    "PublishError",
    "ControlHistoryError",
]

log = logging.getLogger(__name__)

PUBLISH_ATTEMPTS = 3


class OperatorCommandRefused(TrustplaneError):
    """A command the workers refuse (or refused when they read it): nothing changed."""

    def __init__(
        self, reason: str, *, hint: str | None = None, result: ControlResult | None = None
    ) -> None:
        super().__init__(reason, hint=hint)
        self.result = result


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

    The key is a root key (of the operator keyset file) or a key a root key enrolled on
    ``control`` (``operator.enroll``): the client reads the topic before its first
    command, as the workers do, and refuses to sign with a key they would not trust now.

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
        self._state: ControlState | None = None

    # -- the key's history ------------------------------------------------------------

    def _keyset(self) -> Keyset:
        """The root operator keyset (for the key windows the workers judge by), or this
        key when there is no keyset file."""
        path = self.settings.resolved_operator_keys_path
        if not path.exists():
            return Keyset([KeyEntry(self.key.kid, self.key.public_key)])
        keyset = Keyset.from_file(path)
        if self.key.kid in keyset:  # a key not in the file may be enrolled: _read_history
            try:
                keyset.key_for(self.key.kid, _now_ms())
            except KeyError_ as exc:
                raise PublishError(
                    f"the workers would refuse commands signed with key {self.key.kid!r}: "
                    f"{exc.reason}",
                    hint=f"use an operator key of {path} that is valid now",
                ) from None
        return keyset

    def _read_history(self) -> ControlLog:
        reader = _HistoryReader(ControlState(self._keyset()), self.signer)
        _read_control(self.settings, reader)
        try:
            reader.state.verifier.keys.key_for(self.key.kid, _now_ms())
        except KeyError_ as exc:
            raise PublishError(
                f"the workers would refuse commands signed with key {self.key.kid!r}: {exc.reason}",
                hint=f"sign with a root key of {self.settings.resolved_operator_keys_path}, or "
                "have a root key enrol this one first (`trustplane operators add`)",
            ) from None
        self._state = reader.state
        return reader.state.log

    @property
    def state(self) -> ControlState:
        """The control state as this client read it before its first command: the
        signers' histories and the operator keys (root and enrolled). The other layers'
        kinds (kill switch, policy, ...) are not applied in it."""
        self._start()
        assert self._state is not None  # noqa: S101 - _start() read it
        return self._state

    def read_back(self, record: Mapping[str, Any], timeout: float = 30.0) -> ControlResult:
        """Read ``control`` again up to its end and return what the workers' code made
        of the command ``record`` (published earlier). The verdict is the workers' for
        built-in kinds (agents, operators); other kinds read ``in place`` when admitted.
        Raises :class:`PublishError` when the command is not in the log."""
        command_id = str(record.get("command_id", ""))
        found: list[ControlResult] = []

        def keep(
            reported: dict[str, Any] | None, result: ControlResult | None, error: str | None
        ) -> None:
            if result is not None and reported and reported.get("command_id") == command_id:
                found.append(result)

        reader = _HistoryReader(ControlState(self._keyset()), self.signer)
        _read_control(self.settings, reader, on_result=keep, timeout=timeout)
        if not found:
            raise PublishError(
                f"command {command_id} is not in {self.topic}",
                hint="it was not published: is the broker up? `trustplane kafka status`",
            )
        return found[0]

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
    """Reads the control log for one signer's history and the operator keys: every
    record is admitted (its place in its signer's history), only the ``operator.*``
    kinds are applied (as the workers apply them). Only that signer's history problems
    (and the log's own) stop the client; other signers' are logged."""

    def __init__(self, state: ControlState, signer: Signer | None) -> None:
        self.state = state
        self.signer = signer

    @property
    def log(self) -> ControlLog:
        return self.state.log

    def apply_logged(self, entry: LogEntry) -> ControlResult:
        record = entry.record or {}
        kind, subject = str(record.get("kind", "")), str(record.get("subject", ""))
        try:
            admitted = self.log.admit(entry)
        except Refused as exc:
            return ControlResult(False, kind, subject, exc.reason, str(record.get("command_id")))
        if admitted.command.kind in OPERATOR_KINDS:
            return self.state.apply_admitted(admitted, entry)
        return ControlResult(True, kind, subject, "in place", admitted.command.command_id)

    @property
    def problems(self) -> Sequence[HistoryProblem]:
        return [p for p in self.log.history.problems if p.signer in (None, self.signer)]

    @property
    def others(self) -> Sequence[HistoryProblem]:
        return [p for p in self.log.history.problems if p.signer not in (None, self.signer)]

    def latest_applied(self) -> dict[str, dict[str, Any]]:
        return {}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _read_control(
    settings: Settings,
    reader: _HistoryReader,
    *,
    on_result: Any = None,
    timeout: float = 30.0,
) -> None:
    from streams.gate.control import ControlFollower

    follower = ControlFollower(settings, reader, on_result=on_result)
    try:
        follower.catch_up(timeout=timeout)
    finally:
        follower.close()
    for problem in reader.others:
        log.warning("control history: %s", problem.reason)


# -- operator keys enrolled on control -------------------------------------------------


def root_keyset(settings: Settings) -> Keyset:
    """The root operator keys (the trust root file the workers load)."""
    path = settings.resolved_operator_keys_path
    if not path.exists():
        raise KeysetError(
            f"the operator keyset {path} does not exist",
            hint="`trustplane keys init` creates it with the local operator key",
        )
    return Keyset.from_file(path)


def read_operators(settings: Settings, *, timeout: float = 30.0) -> ControlState:
    """Replay ``control`` for the operator keys, with public keys only: the root keys
    (:attr:`ControlState.operator_keys`) and those enrolled on the topic
    (:attr:`ControlState.operators`), as every worker has them now. Only the
    ``operator.*`` kinds are applied in the state returned."""
    reader = _HistoryReader(ControlState(root_keyset(settings)), None)
    _read_control(settings, reader, timeout=timeout)
    return reader.state


def enroll_operator(
    settings: Settings,
    *,
    kid: str,
    x: str,
    label: str,
    not_after_ms: int | None = None,
    key: SigningKey | None = None,
    issued_by: str = "operator",
) -> ControlResult:
    """Enrol public key ``x`` (id ``kid``, its JWK thumbprint) as an operator key:
    ``operator.enroll`` signed with the root key ``key`` (default: the local operator
    key), published, then read back. The workers trust the key from the command's
    append time on.

    Raises :class:`~processors.control.OperatorKeyError` for a bad key or label (nothing
    sent), :class:`OperatorCommandRefused` when the workers refuse (or would refuse) it,
    :class:`PublishError` when it cannot be published."""
    parse_operator_key(x, kid)
    payload: dict[str, Any] = {"kid": kid, "x": x, "label": check_label(label)}
    if not_after_ms is not None:
        if not_after_ms <= _now_ms():
            raise OperatorCommandRefused(
                f"the key would expire at {iso_ms(not_after_ms)}, which is past",
                hint="give a --not-after in the future, or none",
            )
        payload["not_after_ms"] = not_after_ms
    with OperatorClient(settings, key, issued_by=issued_by) as client:
        _check_root(client)
        known = client.state.operators
        existing = known.get(kid)
        if existing is not None:
            if existing.retired_at_ms is not None:
                raise OperatorCommandRefused(
                    f"operator key {kid!r} ({existing.label}) was retired at "
                    f"{iso_ms(existing.retired_at_ms)}: {existing.retire_reason}",
                    hint="a retired key stays retired: generate a new key and enrol that one",
                )
            raise OperatorCommandRefused(
                f"operator key {kid!r} is enrolled already (as {existing.label!r}, since "
                f"{iso_ms(existing.enrolled_at_ms)})",
                hint="`trustplane operators list` shows every operator key",
            )
        if kid in known.roots:
            raise OperatorCommandRefused(f"{kid!r} is a root operator key already")
        record = client.send(ENROLL_KIND, payload)
        return _confirmed(client, record, "enrolment")


def retire_operator(
    settings: Settings,
    *,
    kid: str,
    reason: str,
    key: SigningKey | None = None,
    issued_by: str = "operator",
) -> ControlResult:
    """Retire enrolled operator key ``kid`` (``operator.retire`` signed with the root key
    ``key``): the workers refuse its commands appended from then on; its older ones
    still count. Raises :class:`OperatorCommandRefused` or :class:`PublishError`."""
    if not reason.strip():
        raise OperatorCommandRefused("say why the key is retired (--reason)")
    with OperatorClient(settings, key, issued_by=issued_by) as client:
        _check_root(client)
        existing = client.state.operators.get(kid)
        if existing is None:
            root = kid in client.state.operator_keys
            raise OperatorCommandRefused(
                f"{kid!r} is a root operator key" if root else f"no operator key {kid!r} enrolled",
                hint=f"retire a root key in {settings.resolved_operator_keys_path} (retired_at)"
                if root
                else "`trustplane operators list` shows every operator key",
            )
        if existing.retired_at_ms is not None:
            raise OperatorCommandRefused(
                f"operator key {kid!r} ({existing.label}) was retired already at "
                f"{iso_ms(existing.retired_at_ms)}: {existing.retire_reason}"
            )
        record = client.send(RETIRE_KIND, {"kid": kid, "reason": reason.strip()})
        return _confirmed(client, record, "retirement")


def _check_root(client: OperatorClient) -> None:
    if client.key.kid not in client.state.operator_keys:
        raise OperatorCommandRefused(
            f"key {client.key.kid!r} is an enrolled operator key; only a root key (of "
            f"{client.settings.resolved_operator_keys_path}) enrols or retires operator keys",
            hint="run this with a root key (TRUSTPLANE_OPERATOR_KEY_PATH)",
        )


def _confirmed(client: OperatorClient, record: Mapping[str, Any], what: str) -> ControlResult:
    result = client.read_back(record)
    if not result.applied:
        raise OperatorCommandRefused(
            f"the workers refused the {what} (command {record['command_id']}): {result.reason}",
            result=result,
        )
    return result
