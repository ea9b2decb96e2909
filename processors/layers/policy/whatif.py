"""What-if before publishing: replay recorded intents against a *draft* policy bundle.

An operator edits a bundle in the console; before signing the ``policy.publish`` command
(whose payload is the bundle document) they see which recorded decisions the draft would
change, and why. Two steps, both pure (no broker, no database):

1. :func:`compile_draft` -- the draft document (or its JSON text) compiled exactly as the
   gate's :class:`~.store.PolicyStore` would compile it; a refusal raises
   :class:`~.exceptions.PolicyBundleError` with the compiler's ``reason``.
2. :func:`replay` -- every :class:`RecordedIntent` asked of the current engine (the "now"
   column; without one, the recorded policy verdict) and of the draft, giving a
   :class:`WhatIfReport` of :class:`WhatIfRow` s, each with an :class:`Effect`.

Each request is built with :meth:`PolicyRequest.build` from the same fields
:meth:`PolicyRequest.from_intent` uses, so the draft decides as the live layer would. A
decision becomes a class as the layer makes it a verdict: allowed by a permit that says
``@response("review")`` is REVIEW, allowed otherwise ALLOW, anything else (a forbid, the
default deny, a refused request, a Cedar failure) DENY.

What a replay cannot know, and says so:

- layers before policy (killswitch, freshness, identity, eligibility, integrity) are not
  re-run: an intent one of them denied is ``unaffected`` (policy never saw it);
- the anomaly layer after policy keeps per-agent state and is not replayed: an intent the
  draft newly allows is ``would_allow`` with :data:`ANOMALY_NOTE` (the final outcome is
  undetermined);
- roles are the agent's roles now (from the registry), not as they were when recorded.

Cost: one Cedar evaluation per intent and engine (~tens of microseconds; see
``bench/bench_policy.py``); a replay is capped at :data:`MAX_REPLAY` intents. It is CPU
work: an async caller runs it in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from processors.exceptions import TrustplaneError
from processors.intent import Intent
from processors.layers.policy.bundle import PolicyBundle
from processors.layers.policy.check import LAYER
from processors.layers.policy.compiler import compile_bundle
from processors.layers.policy.engine import PolicyEngine
from processors.layers.policy.exceptions import PolicyBundleError, PolicyError
from processors.layers.policy.request import PolicyRequest
from processors.timefmt import iso_seconds

__all__ = [
    "ANOMALY_NOTE",
    "MAX_REPLAY",
    "PRE_POLICY_LAYERS",
    "Effect",
    "PolicyClass",
    "PolicyJudgement",
    "RecordedIntent",
    "WhatIfError",
    "WhatIfReport",
    "WhatIfRow",
    "compile_draft",
    "recorded_policy_ids",
    "replay",
]

MAX_REPLAY: Final = 10_000
"""The most intents one replay may ask for (two Cedar evaluations each)."""

PRE_POLICY_LAYERS: Final = ("killswitch", "freshness", "identity", "eligibility", "integrity")
"""The gate's layers before policy, in order (``streams/gate/wiring.py``). Which layer
stopped an intent is read from its record; this names them for people."""

ANOMALY_NOTE: Final = (
    "the anomaly layer runs after policy and keeps per-agent state; it is not replayed, "
    "so whether the intent would finally be approved is undetermined"
)

_DETERMINING_EVIDENCE: Final = "determining_policies"
"""The policy layer's evidence key: the determining @ids, comma-joined."""
_STOPPING: Final = frozenset({"DENY", "ERROR"})
"""Statuses that end the chain (``Pipeline.decide``): later layers are not asked."""


class WhatIfError(PolicyError):
    """A replay asked for more than it may, or a record cannot be compared."""


class PolicyClass(StrEnum):
    """What the policy layer makes of a decision (its verdict's status, ERROR as DENY)."""

    ALLOW = "ALLOW"
    REVIEW = "REVIEW"
    DENY = "DENY"


class Effect(StrEnum):
    """What publishing the draft would do to one recorded intent."""

    UNAFFECTED = "unaffected"
    """A layer before policy denied it: policy never ran, the draft cannot change it."""
    UNCHANGED = "unchanged"
    """Same policy class now and under the draft."""
    WOULD_DENY = "would_deny"
    WOULD_ALLOW = "would_allow"
    """Newly allowed by policy; the anomaly layer is not replayed (see the note)."""
    WOULD_HOLD = "would_hold"
    """Newly held for a person (a ``@response("review")`` permit)."""


_RECORDED_CLASS: Final[Mapping[str, PolicyClass]] = {
    "ALLOW": PolicyClass.ALLOW,
    "REVIEW": PolicyClass.REVIEW,
    "DENY": PolicyClass.DENY,
    "ERROR": PolicyClass.DENY,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedIntent:
    """One decided intent as the console reads it back: the intent's fields, the roles its
    agent has *now* (from the registry), and the gate's recorded decision.

    ``recorded_layers`` are the (layer, status) pairs of the decision event, in order
    (``verdict_layers`` zipped with ``verdict_statuses``); ``recorded_policies`` the
    determining @ids the policy layer recorded (see :func:`recorded_policy_ids`).
    Sequences are stored as tuples and ``parameters`` as a copy.
    """

    intent_id: str
    agent_id: str
    roles: tuple[str, ...]
    action: str
    resource: str
    environment: str
    runtime_id: str
    issued_at_ms: int
    parameters: Mapping[str, Any] = field(default_factory=dict, hash=False)
    risk: Any = None
    recorded_outcome: str
    recorded_layers: tuple[tuple[str, str], ...] = ()
    recorded_policies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.roles, str):
            raise WhatIfError(
                f"intent {self.intent_id}: roles must be a sequence of role names, "
                f"not the string {self.roles!r}"
            )
        pairs: list[tuple[str, str]] = []
        for i, pair in enumerate(self.recorded_layers):
            if (
                isinstance(pair, str)
                or not isinstance(pair, Sequence)
                or len(pair) != 2
                or not all(isinstance(part, str) for part in pair)
            ):
                raise WhatIfError(
                    f"intent {self.intent_id}: recorded_layers[{i}] is {pair!r}, "
                    "not a (layer, status) pair",
                    hint="zip the decision event's verdict_layers with its verdict_statuses",
                )
            pairs.append((pair[0], pair[1]))
        object.__setattr__(self, "roles", tuple(self.roles))
        object.__setattr__(self, "parameters", dict(self.parameters))
        object.__setattr__(self, "recorded_layers", tuple(pairs))
        object.__setattr__(self, "recorded_policies", tuple(self.recorded_policies))

    @classmethod
    def from_intent(
        cls,
        intent: Intent,
        roles: Sequence[str],
        *,
        recorded_outcome: str,
        recorded_layers: Iterable[tuple[str, str]] = (),
        recorded_policies: Iterable[str] = (),
    ) -> RecordedIntent:
        """From a decoded :class:`Intent` (read back from the ``intents`` topic), with the
        fields :meth:`PolicyRequest.from_intent` reads."""
        return cls(
            intent_id=intent.intent_id,
            agent_id=intent.agent_id,
            roles=tuple(roles),
            action=intent.action,
            resource=intent.resource,
            environment=intent.runtime.environment,
            runtime_id=intent.runtime.runtime_id,
            issued_at_ms=intent.issued_at_ms,
            parameters=intent.parameters,
            risk=intent.context.get("risk"),
            recorded_outcome=recorded_outcome,
            recorded_layers=tuple(recorded_layers),
            recorded_policies=tuple(recorded_policies),
        )

    def request(self) -> PolicyRequest:
        """The request the policy layer sends for this intent."""
        return PolicyRequest.build(
            agent_id=self.agent_id,
            roles=self.roles,
            action=self.action,
            resource=self.resource,
            environment=self.environment,
            runtime_id=self.runtime_id,
            issued_at_ms=self.issued_at_ms,
            parameters=self.parameters,
            risk=self.risk,
        )

    @property
    def stopped_before_policy(self) -> str | None:
        """The layer that denied (or failed) before policy ran, as recorded, else None."""
        for layer, status in self.recorded_layers:
            if layer == LAYER:
                return None
            if status.upper() in _STOPPING:
                return layer
        return None

    @property
    def recorded_class(self) -> PolicyClass | None:
        """The policy layer's recorded status as a class (ERROR as DENY), or None."""
        statuses = [status for layer, status in self.recorded_layers if layer == LAYER]
        return _RECORDED_CLASS.get(statuses[-1].upper()) if statuses else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "intent_id": self.intent_id,
            "agent_id": self.agent_id,
            "roles": list(self.roles),
            "action": self.action,
            "resource": self.resource,
            "environment": self.environment,
            "runtime_id": self.runtime_id,
            "issued_at_ms": self.issued_at_ms,
            "issued_at": iso_seconds(self.issued_at_ms),
            "parameters": dict(self.parameters),
            "risk": self.risk,
            "recorded_outcome": self.recorded_outcome,
            "recorded_layers": [list(pair) for pair in self.recorded_layers],
            "recorded_policies": list(self.recorded_policies),
        }


def recorded_policy_ids(
    verdict_layers: Sequence[str], verdict_evidence: Sequence[Mapping[str, str]]
) -> tuple[str, ...]:
    """The determining @ids the policy layer recorded in its evidence (comma-joined under
    ``determining_policies``), from a decision event's parallel verdict columns."""
    for layer, evidence in zip(verdict_layers, verdict_evidence, strict=False):
        if layer == LAYER:
            joined = evidence.get(_DETERMINING_EVIDENCE, "")
            return tuple(pid for pid in joined.split(",") if pid)
    return ()


@dataclass(frozen=True, slots=True)
class PolicyJudgement:
    """One answer for one intent: its class, the determining policies as (@id, @reason),
    Cedar's errors, and ``why`` in the words the policy layer would use. ``source`` is
    ``current``, ``draft`` or ``record`` (the recorded verdict: @reasons unknown)."""

    policy_class: PolicyClass
    source: str
    policies: tuple[tuple[str, str], ...] = ()
    errors: tuple[str, ...] = ()
    why: tuple[str, ...] = ()

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return tuple(pid for pid, _ in self.policies)

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.policy_class.value,
            "source": self.source,
            "policies": [{"id": pid, "reason": reason} for pid, reason in self.policies],
            "errors": list(self.errors),
            "why": list(self.why),
        }


@dataclass(frozen=True, slots=True)
class WhatIfRow:
    """One recorded intent: what policy says now, what the draft would say, the effect.

    ``now`` and ``draft`` are None when the intent is ``unaffected`` (``stopped_by``
    names the layer that denied it before policy ran)."""

    intent: RecordedIntent
    effect: Effect
    now: PolicyJudgement | None
    draft: PolicyJudgement | None
    stopped_by: str | None = None
    note: str = ""

    @property
    def now_class(self) -> PolicyClass | None:
        return None if self.now is None else self.now.policy_class

    @property
    def draft_class(self) -> PolicyClass | None:
        return None if self.draft is None else self.draft.policy_class

    @property
    def policies_changed(self) -> bool:
        """The determining policies differ (also when the class does not)."""
        if self.now is None or self.draft is None:
            return False
        return set(self.now.policy_ids) != set(self.draft.policy_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent.to_dict(),
            "effect": self.effect.value,
            "now_class": None if self.now_class is None else self.now_class.value,
            "draft_class": None if self.draft_class is None else self.draft_class.value,
            "now": None if self.now is None else self.now.to_dict(),
            "draft": None if self.draft is None else self.draft.to_dict(),
            "policies_changed": self.policies_changed,
            "stopped_by": self.stopped_by,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class WhatIfReport:
    """A replay's rows, counted by effect. ``truncated``: more intents were offered than
    ``limit``; only the first ``limit`` were replayed."""

    draft_version: str
    draft_digest: str
    current_version: str | None
    current_digest: str | None
    rows: tuple[WhatIfRow, ...]
    limit: int
    truncated: bool
    elapsed_ms: float

    @property
    def counts(self) -> dict[Effect, int]:
        """Rows per effect, every effect present (zero if none)."""
        counts = dict.fromkeys(Effect, 0)
        for row in self.rows:
            counts[row.effect] += 1
        return counts

    @property
    def changed(self) -> tuple[WhatIfRow, ...]:
        """The rows whose policy class the draft changes."""
        return tuple(
            row
            for row in self.rows
            if row.effect in (Effect.WOULD_DENY, Effect.WOULD_ALLOW, Effect.WOULD_HOLD)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "draft": {"version": self.draft_version, "digest": self.draft_digest},
            "current": (
                None
                if self.current_digest is None
                else {"version": self.current_version, "digest": self.current_digest}
            ),
            "total": len(self.rows),
            "counts": {effect.value: n for effect, n in self.counts.items()},
            "limit": self.limit,
            "truncated": self.truncated,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "rows": [row.to_dict() for row in self.rows],
        }


def compile_draft(
    draft: Mapping[str, Any] | str | bytes | PolicyBundle,
    now_ms: int,
    *,
    active: PolicyEngine | None = None,
) -> PolicyEngine:
    """Compile a draft bundle as the gate's policy store would, for a replay.

    ``draft`` is the bundle document (``PolicyBundle.to_document()``, the payload of a
    ``policy.publish`` command), its JSON text, or a :class:`PolicyBundle`. With
    ``active`` (the bundle in force), a draft the store would refuse as older is refused
    here too. The engine keeps no decision cache (a replay asks each request once).

    Raises :class:`PolicyBundleError` whose ``reason`` is the compiler's (or the store's).
    """
    document: Any = draft
    if isinstance(draft, (str, bytes)):
        try:
            document = json.loads(draft)
        except ValueError as exc:
            raise PolicyBundleError(
                f"the draft is not a JSON bundle document: {exc}",
                hint='send {"manifest": {...}, "policies": "<cedar>", "schema": ...}',
            ) from exc
    try:
        bundle = (
            document if isinstance(document, PolicyBundle) else PolicyBundle.from_document(document)
        )
        if active is not None and bundle.manifest.created_at_ms < active.created_at_ms:
            raise PolicyBundleError(
                f"policy bundle {bundle.version} (created "
                f"{iso_seconds(bundle.manifest.created_at_ms)}) is older than the active "
                f"{active.version} (created {iso_seconds(active.created_at_ms)}); the gate "
                "would refuse it",
                hint="set manifest.created_at_ms to now",
            )
        return compile_bundle(bundle, now_ms, decision_cache=0)
    except PolicyBundleError:
        raise
    except Exception as exc:  # noqa: BLE001 - as the store: any failure is a refusal, with why
        raise PolicyBundleError(
            f"the bundle could not be loaded: {type(exc).__name__}: {exc}"
        ) from exc


def replay(
    current: PolicyEngine | None,
    draft: PolicyEngine,
    intents: Iterable[RecordedIntent],
    *,
    limit: int,
) -> WhatIfReport:
    """Ask ``draft`` (and ``current``, if given) about each recorded intent.

    Reads at most ``limit`` intents (at most :data:`MAX_REPLAY`); more are left unread
    and the report says ``truncated``. Without ``current``, "now" is the recorded policy
    verdict; an intent whose record has none (and no earlier denial) raises
    :class:`WhatIfError`.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise WhatIfError(f"limit must be a positive number of intents, got {limit!r}")
    if limit > MAX_REPLAY:
        raise WhatIfError(
            f"limit {limit} is above the what-if cap of {MAX_REPLAY} intents",
            hint=f"replay the latest {MAX_REPLAY} or fewer, or narrow by agent or action",
        )
    started = time.perf_counter()
    rows: list[WhatIfRow] = []
    truncated = False
    for recorded in intents:
        if len(rows) == limit:
            truncated = True
            break
        rows.append(_row(current, draft, recorded))
    return WhatIfReport(
        draft_version=draft.version,
        draft_digest=draft.digest,
        current_version=None if current is None else current.version,
        current_digest=None if current is None else current.digest,
        rows=tuple(rows),
        limit=limit,
        truncated=truncated,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def _row(current: PolicyEngine | None, draft: PolicyEngine, recorded: RecordedIntent) -> WhatIfRow:
    stopped_by = recorded.stopped_before_policy
    if stopped_by is not None:
        return WhatIfRow(
            recorded,
            Effect.UNAFFECTED,
            None,
            None,
            stopped_by=stopped_by,
            note=f"denied by the {stopped_by} layer before policy ran; the draft cannot change it",
        )
    request = recorded.request()
    now = _from_record(recorded) if current is None else _judge(current, request, "current")
    after = _judge(draft, request, "draft")
    if now.policy_class is after.policy_class:
        return WhatIfRow(recorded, Effect.UNCHANGED, now, after)
    if after.policy_class is PolicyClass.DENY:
        return WhatIfRow(recorded, Effect.WOULD_DENY, now, after)
    if after.policy_class is PolicyClass.ALLOW:
        return WhatIfRow(recorded, Effect.WOULD_ALLOW, now, after, note=ANOMALY_NOTE)
    note = (
        "the anomaly layer after policy is not replayed; it could still deny before review"
        if now.policy_class is PolicyClass.DENY
        else ""
    )
    return WhatIfRow(recorded, Effect.WOULD_HOLD, now, after, note=note)


def _from_record(recorded: RecordedIntent) -> PolicyJudgement:
    policy_class = recorded.recorded_class
    if policy_class is None:
        raise WhatIfError(
            f"intent {recorded.intent_id}: its record has no policy verdict to compare with "
            f"(recorded layers: {', '.join(layer for layer, _ in recorded.recorded_layers)})",
            hint="pass the current policy engine, so that 'now' is asked of Cedar",
        )
    ids = recorded.recorded_policies
    why = (f"recorded: {policy_class.value}" + (f" by {', '.join(ids)}" if ids else ""),)
    return PolicyJudgement(policy_class, "record", tuple((pid, "") for pid in ids), (), why)


def _judge(engine: PolicyEngine, request: PolicyRequest, source: str) -> PolicyJudgement:
    """As :meth:`PolicyCheck.evaluate` turns a decision into a verdict."""
    try:
        decision = engine.authorize(request)
    except Exception as exc:  # noqa: BLE001 - as the layer: Cedar failing is an ERROR (a deny)
        reason = exc.reason if isinstance(exc, TrustplaneError) else f"{type(exc).__name__}: {exc}"
        return PolicyJudgement(PolicyClass.DENY, source, (), (reason,), (reason,))
    ids = decision.determining_policies
    cited = tuple((pid, engine.reason_of(pid)) for pid in ids)
    if decision.allowed and engine.holds_for_review(ids):
        why = tuple(
            f"held for review by {pid}" + (f": {reason}" if reason else "")
            for pid, reason in cited
            if engine.holds_for_review((pid,))
        )
        return PolicyJudgement(PolicyClass.REVIEW, source, cited, (), why)
    if decision.allowed:
        why = (f"allowed by {', '.join(ids)} (policy bundle {engine.version})",)
        return PolicyJudgement(PolicyClass.ALLOW, source, cited, (), why)
    if ids:
        why = tuple(
            f"forbidden by {pid}" + (f": {reason}" if reason else "") for pid, reason in cited
        )
        return PolicyJudgement(PolicyClass.DENY, source, cited, decision.errors, why)
    if decision.errors:
        why = tuple(f"policy request refused: {e}" for e in decision.errors)
        return PolicyJudgement(PolicyClass.DENY, source, (), decision.errors, why)
    roles = ", ".join(request.roles) if request.roles else "none"
    why = (
        f"no policy permits agent {request.agent_id!r} (roles: {roles}) to take "
        f"{request.action!r} on {request.resource!r} (default deny)",
    )
    return PolicyJudgement(PolicyClass.DENY, source, (), (), why)
