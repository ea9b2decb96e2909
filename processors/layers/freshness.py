"""Freshness: an intent is decided only while it is fresh.

Expired intents, and intents issued further in the future than the allowed clock
skew, are denied. (Replay, sequence and attestation checks join this in the runtime
integrity layer.)
"""

from __future__ import annotations

from processors.intent import Intent
from processors.verdict import GateState, Verdict

__all__ = ["Freshness"]

LAYER = "freshness"


class Freshness:
    name = LAYER

    def __init__(self, max_clock_skew_ms: int = 30_000) -> None:
        if max_clock_skew_ms < 0:
            raise ValueError("max_clock_skew_ms must be >= 0")
        self.max_clock_skew_ms = max_clock_skew_ms

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        now = state.now_ms
        if now >= intent.expires_at_ms:
            return Verdict.deny(
                LAYER,
                f"expired {now - intent.expires_at_ms} ms ago (expires_at_ms "
                f"{intent.expires_at_ms}, now {now})",
            )
        if intent.issued_at_ms > now + self.max_clock_skew_ms:
            return Verdict.deny(
                LAYER,
                f"issued {intent.issued_at_ms - now} ms in the future; the allowed clock skew "
                f"is {self.max_clock_skew_ms} ms",
            )
        return Verdict.allow(LAYER, f"fresh: expires in {intent.expires_at_ms - now} ms")
