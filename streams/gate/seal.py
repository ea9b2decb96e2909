"""The gate state key and the sealed ``gate-state`` record: only the gate's own writes
count (``streams/gate/state.py`` restores them and says what happens to the others).

gate-state record, format 2
===========================

Anyone who can write to ``gate-state`` could otherwise wipe an agent's replay memory
(one empty record and a restart, and a replayed intent is approved again). So every
record is sealed with the *gate state key*, a 32-byte secret every gate worker shares
(``<keys_dir>/gate-state.key``: 64 hex characters, mode 0600, made by
``trustplane keys init``)::

    key    agent id, UTF-8                       (partition: the agent's intents partition)
    value  b"tpgs2 " || hex(mac) || b" " || body        (71 bytes of header)
    body   JSON {"layers": {state_key: layer state, ...}, "n": N}   (sorted keys, compact)
    mac    HMAC-SHA256(gate state key, b"trustplane gate-state v2\\x00"
                       || u32be(partition) || u32be(len(key)) || key || body)

The MAC covers the partition and the agent id, so a genuine record cannot be moved to
another agent. ``N`` counts the agent's writes (1, 2, ...): a genuine but older record
written again later (a rollback) is caught while the newer one is still in the log.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import struct
from pathlib import Path
from typing import Final

from processors.exceptions import ConfigError, TrustplaneError, VerificationError
from streams.config import Settings

__all__ = [
    "FORMAT_VERSION",
    "HEADER_BYTES",
    "KEY_BYTES",
    "STATE_KEY_FILE",
    "StateAuthenticationError",
    "StateError",
    "StateSeal",
    "create_state_key",
    "load_state_key",
    "state_key_path",
]

FORMAT_VERSION = 2
STATE_KEY_FILE = "gate-state.key"
KEY_BYTES: Final = 32

_MAGIC: Final = b"tpgs2 "
_MAC_HEX: Final = 64
HEADER_BYTES: Final = len(_MAGIC) + _MAC_HEX + 1
"""The sealed value's header; the JSON body follows it."""
_DOMAIN: Final = b"trustplane gate-state v2\x00"
_HEX_KEY = re.compile(r"[0-9a-f]{64}")


class StateError(TrustplaneError):
    """Agent state could not be restored or saved."""


class StateAuthenticationError(StateError, VerificationError):
    """A gate-state record is not one the gate wrote (missing or wrong MAC)."""


# -- the gate state key ------------------------------------------------------------------


def state_key_path(settings: Settings) -> Path:
    """``<keys_dir>/gate-state.key``: the secret every gate worker seals its state with."""
    return settings.resolved_keys_dir / STATE_KEY_FILE


def create_state_key(path: Path) -> bool:
    """Write a new random gate state key to ``path`` (mode 0600) unless a file is there;
    True if it was created. Never overwrites: the state sealed with a key needs it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    os.chmod(path, 0o600)
    return True


def load_state_key(path: Path) -> bytes:
    """Read the gate state key; a missing, group/other-readable or malformed file is a
    ConfigError saying what to do."""
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise ConfigError(
                f"gate state key {path} is readable by group or others (mode {mode & 0o777:o})",
                hint=f"chmod 600 {path}",
            )
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no gate state key at {path}",
            hint="run `trustplane keys init` (it creates it); every gate worker of an estate "
            "needs the same key, so copy it to the others",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read gate state key {path}: {exc}") from exc
    if not _HEX_KEY.fullmatch(text):
        raise ConfigError(
            f"gate state key {path} is not 64 lowercase hex characters ({KEY_BYTES} bytes)",
            hint="restore it from another gate worker; a new key makes every stored agent "
            "state untrusted",
        )
    return bytes.fromhex(text)


class StateSeal:
    """Seals and opens ``gate-state`` values (format 2, see the module doc)."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ConfigError(f"a gate state key is {KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def ephemeral(cls) -> StateSeal:
        """A random key: for state that never leaves this process (tests, evaluation)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_settings(cls, settings: Settings) -> StateSeal:
        return cls(load_state_key(state_key_path(settings)))

    def _mac(self, partition: int, agent_id: str, body: bytes) -> bytes:
        agent = agent_id.encode()
        message = _DOMAIN + struct.pack(">II", partition, len(agent)) + agent + body
        return hmac.digest(self._key, message, "sha256")

    def seal(self, partition: int, agent_id: str, body: bytes) -> bytes:
        return _MAGIC + self._mac(partition, agent_id, body).hex().encode() + b" " + body

    def open(self, partition: int, agent_id: str, value: bytes) -> bytes:
        """The body of a value this gate sealed for this partition and agent, or raise
        StateAuthenticationError (the reason is a predicate about the record)."""
        # (1) the format-2 header: magic, 64 hex characters, a space
        if (
            len(value) < HEADER_BYTES
            or not value.startswith(_MAGIC)
            or value[HEADER_BYTES - 1] != 0x20
        ):
            raise StateAuthenticationError(
                "failed authentication (it is not a sealed gate-state record of format "
                f"{FORMAT_VERSION}: it starts with {bytes(value[:16])!r})"
            )
        try:
            mac = bytes.fromhex(value[len(_MAGIC) : HEADER_BYTES - 1].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            mac = b""
        body = bytes(value[HEADER_BYTES:])
        # (2) the MAC over partition, agent id and body, compared in constant time
        if not hmac.compare_digest(mac, self._mac(partition, agent_id, body)):
            raise StateAuthenticationError(
                "failed authentication (its HMAC-SHA256 does not verify with the gate state "
                "key: not written by this gate, moved from another agent or partition, or "
                "changed)"
            )
        return body
