"""The policy store: the active compiled bundle, swapped atomically when a newer one is
published on the control topic (``policy.publish``, subject :data:`CONTROL_SUBJECT`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Final, Protocol

from processors.layers.policy.bundle import PolicyBundle
from processors.layers.policy.compiler import MAX_BUNDLE_BYTES, MAX_POLICIES, compile_bundle
from processors.layers.policy.engine import DECISION_CACHE, PolicyEngine
from processors.layers.policy.exceptions import PolicyBundleError
from processors.timefmt import iso_seconds

__all__ = ["CONTROL_SUBJECT", "PolicyStore"]

CONTROL_SUBJECT: Final = "policy"
"""The control-topic subject of ``policy.publish`` commands: one key, so compaction keeps
only the latest bundle."""


class _Clocked(Protocol):
    @property
    def now_ms(self) -> int: ...


class PolicyStore:
    """The active compiled bundle. ``offer`` swaps it in atomically, or refuses and keeps
    the one in force. Publisher trust (the control command's signature) is checked by
    whoever calls ``offer``, not here.

    ``decision_cache`` is how many decisions each compiled bundle remembers (0 turns the
    decision cache off); a new bundle starts with an empty cache.
    """

    def __init__(
        self,
        *,
        max_policies: int = MAX_POLICIES,
        max_bytes: int = MAX_BUNDLE_BYTES,
        decision_cache: int = DECISION_CACHE,
    ) -> None:
        self._limits = {"max_policies": max_policies, "max_bytes": max_bytes}
        self._decision_cache = decision_cache
        self._active: PolicyEngine | None = None
        self._lock = threading.Lock()
        self.last_refusal: str | None = None

    @property
    def active(self) -> PolicyEngine | None:
        return self._active

    def offer(self, document: Mapping[str, Any] | PolicyBundle, now_ms: int) -> str | None:
        """Compile and activate a bundle. Returns None when it is active (also when it
        already was), else the reason it was refused; a refusal keeps the previous one."""
        with self._lock:
            refusal = self._offer(document, now_ms)
            self.last_refusal = refusal
            return refusal

    def control_sink(self, payload: Mapping[str, Any], ctx: _Clocked) -> str | None:
        """``ControlState(policy_sink=store.control_sink)``: a verified ``policy.publish``
        command's payload is the bundle document."""
        return self.offer(payload, ctx.now_ms)

    def _offer(self, document: Mapping[str, Any] | PolicyBundle, now_ms: int) -> str | None:
        try:
            bundle = (
                document
                if isinstance(document, PolicyBundle)
                else PolicyBundle.from_document(document)
            )
            current = self._active
            if current is not None and bundle.digest == current.digest:
                return None
            if current is not None and bundle.manifest.created_at_ms < current.created_at_ms:
                created = iso_seconds(bundle.manifest.created_at_ms)
                return (
                    f"policy bundle {bundle.version} (created {created}) "
                    f"is older than the active {current.version} (created "
                    f"{iso_seconds(current.created_at_ms)}); to roll back, republish it with a "
                    "newer created_at_ms"
                )
            engine = compile_bundle(
                bundle,
                now_ms,
                max_policies=self._limits["max_policies"],
                max_bytes=self._limits["max_bytes"],
                decision_cache=self._decision_cache,
            )
        except PolicyBundleError as exc:
            return exc.reason
        except Exception as exc:  # noqa: BLE001 - a bad bundle must never take the store down
            return f"the bundle could not be loaded: {type(exc).__name__}: {exc}"
        self._active = engine
        return None
