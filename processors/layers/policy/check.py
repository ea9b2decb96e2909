"""The Cedar policy layer: :class:`PolicyCheck` (``evaluate(intent, state) -> Verdict``),
fail closed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from processors.exceptions import TrustplaneError
from processors.intent import Intent
from processors.layers.policy.request import PolicyRequest
from processors.layers.policy.store import PolicyStore
from processors.timefmt import iso_seconds
from processors.verdict import GateState, Verdict

__all__ = ["LAYER", "PolicyCheck"]

LAYER: Final = "policy"


class PolicyCheck:
    """The Cedar policy layer (``evaluate(intent, state) -> Verdict``), fail closed.

    No valid bundle, an expired bundle, a request the schema refuses or a Cedar
    failure all deny (ERROR for failures); only a Cedar allow without errors allows. An
    allow by a permit that says ``@response("review")`` holds the intent for a person
    (REVIEW) instead; a reviewer's approval asks this layer again.
    """

    name = LAYER

    def __init__(self, store: PolicyStore, roles_for: Callable[[str], Sequence[str]]) -> None:
        self._store = store
        self._roles_for = roles_for

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        engine = self._store.active
        if engine is None:
            why = "no valid policy bundle loaded"
            if self._store.last_refusal:
                why += f" (the last one offered was refused: {self._store.last_refusal})"
            return Verdict.deny(LAYER, why)
        evidence = {"bundle_digest": engine.digest, "bundle_version": engine.version}
        if engine.expired(state.now_ms):
            return Verdict.deny(
                LAYER,
                f"policy bundle {engine.version} expired at {iso_seconds(engine.expires_at_ms)}",
                **evidence,
            )
        try:
            roles = tuple(self._roles_for(intent.agent_id))
        except Exception as exc:  # noqa: BLE001 - a registry failure is an error verdict
            return Verdict.error(
                LAYER,
                f"could not look up the roles of agent {intent.agent_id!r}: "
                f"{type(exc).__name__}: {exc}",
                **evidence,
            )
        try:
            decision = engine.authorize(PolicyRequest.from_intent(intent, roles))
        except Exception as exc:  # noqa: BLE001 - Cedar failing is an error verdict
            reason = (
                exc.reason if isinstance(exc, TrustplaneError) else f"{type(exc).__name__}: {exc}"
            )
            return Verdict.error(LAYER, reason, **evidence)
        evidence["determining_policies"] = ",".join(decision.determining_policies)
        if decision.allowed and engine.holds_for_review(decision.determining_policies):
            held = [
                f"held for review by {pid}" + (f": {why}" if (why := engine.reason_of(pid)) else "")
                for pid in decision.determining_policies
                if engine.holds_for_review((pid,))
            ]
            return Verdict.review(LAYER, *held, **evidence)
        if decision.allowed:
            return Verdict.allow(
                LAYER,
                f"allowed by {', '.join(decision.determining_policies)} "
                f"(policy bundle {engine.version})",
                **evidence,
            )
        if decision.determining_policies:
            reasons = [
                f"forbidden by {pid}" + (f": {why}" if (why := engine.reason_of(pid)) else "")
                for pid in decision.determining_policies
            ]
            return Verdict.deny(LAYER, *reasons, *decision.errors, **evidence)
        if decision.errors:
            return Verdict.deny(
                LAYER, *(f"policy request refused: {e}" for e in decision.errors), **evidence
            )
        roles_text = ", ".join(roles) if roles else "none"
        return Verdict.deny(
            LAYER,
            f"no policy permits agent {intent.agent_id!r} (roles: {roles_text}) to take "
            f"{intent.action!r} on {intent.resource!r} (default deny)",
            **evidence,
        )
