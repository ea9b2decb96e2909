"""The control state as every worker builds it, followed live from ``control``.

The same :class:`ControlState` and handlers as a gate worker (agents, kill switches,
reviews, runtimes, the policy store, enrolled operator keys), built from public keys
only: the console can show the registry, predict a command's verdict with the workers'
own code, and tell a browser the next place in its key's history. It also remembers
what a worker does not: each bundle published, for the bundle history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from processors.control import ControlResult, ControlState, Signer
from processors.control.commands import ChainLink, Refused
from processors.crypto.keys import Keyset
from processors.exceptions import TrustplaneError
from processors.layers.integrity.registry import RuntimeRegistry
from processors.layers.killswitch import KillSwitches
from processors.layers.policy import PolicyStore
from processors.review import ReviewAnswers
from streams.config import Settings
from streams.gatekeys import gate_jwks_path

__all__ = ["AppliedCommand", "BundleVersion", "ControlReplica"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppliedCommand:
    command_id: str
    kind: str
    subject: str
    issued_by: str
    key_id: str
    issued_at_ms: int
    applied: bool
    reason: str


@dataclass(frozen=True)
class BundleVersion:
    version: str
    digest: str
    issued_by: str
    key_id: str
    published_at_ms: int
    in_force: bool
    reason: str
    """Why the bundle was refused (empty when applied)."""


class ControlReplica:
    """Follows ``control`` in a thread; readers take :attr:`lock` for a consistent view."""

    def __init__(self, settings: Settings, *, history: int = 200) -> None:
        self.settings = settings
        path = settings.resolved_operator_keys_path
        root_keys = Keyset.from_file(path) if path.exists() else Keyset()
        jwks = gate_jwks_path(settings)
        self.policies = PolicyStore(decision_cache=0)
        self.state = ControlState(
            root_keys,
            policy_sink=self.policies.control_sink,
            gate_keys=Keyset.from_file(jwks) if jwks.exists() else None,
        )
        self.killswitches = KillSwitches()
        self.killswitches.install(self.state)
        self.reviews = ReviewAnswers()
        self.reviews.install(self.state)
        self.runtimes = RuntimeRegistry()
        self.runtimes.install(self.state)
        self.lock = threading.RLock()
        self.recent: deque[AppliedCommand] = deque(maxlen=history)
        self.bundles: list[BundleVersion] = []
        self.error: str = ""
        self.caught_up = threading.Event()
        self.listeners: list[Callable[[AppliedCommand], None]] = []
        self._results: dict[str, AppliedCommand] = {}
        self._waiters: dict[str, threading.Event] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._follower: Any = None

    # -- following -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="control-replica", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        from streams.gate.control import ControlFollower

        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self._follower is None:
                    self._follower = ControlFollower(
                        self.settings, self.state, on_result=self._on_result
                    )
                    with self.lock:
                        self._follower.catch_up(timeout=120)
                    self.caught_up.set()
                    self.error = ""
                    backoff = 0.5
                with self.lock:
                    self._follower.poll(timeout=0)
                time.sleep(0.05)
            except TrustplaneError as exc:
                self.error = exc.reason
                log.error("control replica: %s", exc.reason)
                self._drop_follower()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:  # noqa: BLE001 - keep serving pages; say why state is stale
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("control replica failed")
                self._drop_follower()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        self._drop_follower()

    def _drop_follower(self) -> None:
        if self._follower is not None:
            try:
                self._follower.close()
            except Exception:  # noqa: BLE001, S110 - closing a broken client
                pass
            self._follower = None

    def sync(self, timeout: float = 5.0) -> None:
        """Apply everything published before now (before relaying a command)."""
        with self.lock:
            if self._follower is None:
                raise Refused(self.error or "the console is still reading the control topic")
            self._follower.sync(timeout=timeout)

    def _on_result(
        self, record: dict[str, Any] | None, result: ControlResult | None, error: str | None
    ) -> None:
        record = record or {}
        command = AppliedCommand(
            command_id=str(record.get("command_id", "")),
            kind=str(record.get("kind", "")),
            subject=str(record.get("subject", "")),
            issued_by=str(record.get("issued_by", "")),
            key_id=str(record.get("key_id", "")),
            issued_at_ms=int(record.get("issued_at_ms") or 0),
            applied=bool(result and result.applied),
            reason=(result.reason if result is not None else error) or "",
        )
        self.recent.appendleft(command)
        if command.kind == "policy.publish":
            self._record_bundle(record, command)
        self._results[command.command_id] = command
        if len(self._results) > 10_000:
            self._results.pop(next(iter(self._results)))
        waiter = self._waiters.pop(command.command_id, None)
        if waiter is not None:
            waiter.set()
        for listener in self.listeners:
            listener(command)

    def _record_bundle(self, record: dict[str, Any], command: AppliedCommand) -> None:
        engine = self.policies.active
        in_force = command.applied and engine is not None
        version, digest = "", ""
        if in_force and engine is not None:
            version, digest = engine.version, engine.digest
        else:
            version = _payload_version(record)
        self.bundles = [
            BundleVersion(
                b.version, b.digest, b.issued_by, b.key_id, b.published_at_ms, False, b.reason
            )
            if in_force
            else b
            for b in self.bundles
        ]
        self.bundles.append(
            BundleVersion(
                version,
                digest,
                command.issued_by,
                command.key_id,
                command.issued_at_ms,
                in_force,
                "" if command.applied else command.reason,
            )
        )

    # -- what relaying needs ---------------------------------------------------------

    def next_link(self, key_id: str) -> ChainLink:
        with self.lock:
            return self.state.log.history.next_link(Signer("operator", key_id))

    def expect(self, command_id: str) -> threading.Event:
        """An event set once the replica has read ``command_id`` back from the log."""
        event = threading.Event()
        self._waiters[command_id] = event
        if command_id in self._results:
            event.set()
        return event

    def result(self, command_id: str) -> AppliedCommand | None:
        return self._results.get(command_id)


def _payload_version(record: dict[str, Any]) -> str:
    import json

    try:
        payload = json.loads(str(record.get("payload", "")))
        manifest = payload.get("manifest", {}) if isinstance(payload, dict) else {}
        return str(manifest.get("version", ""))
    except ValueError:
        return ""
