"""Why a guarded tool call did not run.

Every path that does not end in a verified approval raises one of these, and the tool
does not run. Adapters turn them into what their framework shows the model and the user
(:meth:`Blocked.message`): an MCP tool error, a LangChain tool message, a guardrail
rejection.

::

    Blocked                   the tool did not run
    ├── Unmapped              no mapping names this tool (and no default is allowed)
    ├── Denied                the gate denied the intent, or rejected it as malformed
    ├── NeedsReview           the gate holds the intent for a person
    ├── Unavailable           no decision within the deadline, broker unreachable
    └── Unverified            an answer arrived that did not verify (forged, replayed,
                              for other bytes, expired): the worst case, logged loudly
"""

from __future__ import annotations

from collections.abc import Sequence

from processors.exceptions import TrustplaneError

__all__ = ["Blocked", "Unmapped", "Denied", "NeedsReview", "Unavailable", "Unverified"]


class Blocked(TrustplaneError):
    """A guarded tool call that did not run, and why."""

    outcome = "blocked"

    def __init__(
        self,
        reason: str,
        *,
        tool: str,
        reasons: Sequence[str] = (),
        intent_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(reason, hint=hint)
        self.tool = tool
        self.reasons = tuple(reasons) or (reason,)
        self.intent_id = intent_id

    def message(self) -> str:
        """One paragraph for the model and the user: what was refused and why."""
        why = "; ".join(self.reasons)
        ref = f" (intent {self.intent_id})" if self.intent_id else ""
        return f"trustplane {self.outcome}: the tool {self.tool!r} did not run{ref}: {why}"


class Unmapped(Blocked):
    outcome = "unmapped"


class Denied(Blocked):
    outcome = "denied"


class NeedsReview(Blocked):
    """Held for a person. ``intent_id`` is what the reviewer answers
    (``trustplane review approve <intent id>``); :meth:`Guard.await_review` waits for it."""

    outcome = "held for review"


class Unavailable(Blocked):
    outcome = "unavailable"


class Unverified(Blocked):
    outcome = "unverified"
