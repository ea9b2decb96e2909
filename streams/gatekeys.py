"""The gate's public keys, as the services that check its signatures read them.

The notary and the sink verify every lineage event (and the sink every approval) against
the gate's published JWKS (``approvals.jwks.json``, written by ``trustplane keys init``
and ``keys rotate``). The file is read again when a signature names a key id it does not
hold yet, so a rotation needs no restart; at most once per ``reload_every_s``, so junk
key ids cannot make a service re-read the file per record.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processors.crypto.keys import Keyset, KeysetError
from processors.exceptions import ConfigError
from processors.log.attest import verify_event_signature

__all__ = ["GateKeys", "gate_jwks_path"]

log = logging.getLogger(__name__)


def gate_jwks_path(settings: Any) -> Path:
    """Where the gate's public keys are published (``<keys_dir>/approvals.jwks.json``)."""
    configured = getattr(settings, "gate_jwks_path", None)
    return Path(configured) if configured else settings.resolved_keys_dir / "approvals.jwks.json"


class GateKeys:
    """The gate's keyset from a JWKS file, re-read when a new key id shows up."""

    def __init__(self, path: Path, *, reload_every_s: float = 5.0) -> None:
        self.path = path
        self.reload_every_s = reload_every_s
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._keyset = self._read()

    @classmethod
    def of(cls, keyset: Keyset) -> GateKeys:
        """A fixed keyset (tests, embedded use): never re-read."""
        keys = cls.__new__(cls)
        keys.path = Path("<memory>")
        keys.reload_every_s = float("inf")
        keys._lock = threading.Lock()
        keys._loaded_at = time.monotonic()
        keys._keyset = keyset
        return keys

    @property
    def keyset(self) -> Keyset:
        return self._keyset

    def verify_event(self, event: Mapping[str, Any], *, at_ms: int | None = None) -> str:
        """The signer of a lineage event, or raise LineageSignatureError (``at_ms``: the
        key must be valid then too)."""
        self._refresh_for(event.get("signer"))
        return verify_event_signature(event, self._keyset, at_ms=at_ms)

    def refresh_for_envelope(self, envelope: object) -> None:
        """Re-read the keys if a DSSE envelope names a key id not held yet."""
        try:
            signatures = json.loads(envelope)["signatures"]  # type: ignore[arg-type]
            kids = [s.get("keyid") for s in signatures]
        except (TypeError, ValueError, KeyError, AttributeError):
            return  # malformed: verification will say so
        for kid in kids:
            self._refresh_for(kid)

    def _refresh_for(self, kid: object) -> None:
        if not isinstance(kid, str) or kid in self._keyset:
            return
        with self._lock:
            if time.monotonic() - self._loaded_at < self.reload_every_s:
                return
            try:
                self._keyset = self._read()
            except ConfigError as exc:  # keep the keys we have; the signature will fail
                log.error("cannot re-read the gate's keys: %s", exc.diagnostics())

    def _read(self) -> Keyset:
        self._loaded_at = time.monotonic()
        try:
            return Keyset.from_jwks(json.loads(self.path.read_text()), source=str(self.path))
        except FileNotFoundError as exc:
            raise ConfigError(
                f"the gate's public keys are not at {self.path}",
                hint="run `trustplane keys init` (it publishes approvals.jwks.json), or set "
                "TRUSTPLANE_GATE_JWKS_PATH to the gate's published JWKS",
            ) from exc
        except (OSError, ValueError, KeysetError) as exc:
            raise ConfigError(f"cannot read the gate's public keys at {self.path}: {exc}") from exc
