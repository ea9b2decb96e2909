"""The gate's approval signing keys: Ed25519, with windows, in a key directory or the
environment. Keys are identified by their RFC 7638 JWK thumbprint (the DSSE ``keyid``)
and published to executors as a JWKS (:meth:`SigningKeyring.jwks`).

Executors never need this module: they verify against the published JWKS
(:class:`processors.crypto.keys.Keyset`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.approval.exceptions import ApprovalSigningError, KeyringError
from processors.approval.statement import rfc3339_ms
from processors.crypto.keys import (
    KeyEntry,
    KeyError_,
    Keyset,
    SigningKey,
    generate_signing_key,
    load_private_key,
    private_key_from_pem,
    save_private_key,
)

__all__ = ["SIGNING_KEY_ENV", "KEYRING_FILE", "KeyringEntry", "SigningKeyring"]

log = logging.getLogger(__name__)

SIGNING_KEY_ENV = "TRUSTPLANE_SIGNING_KEY"
"""Environment variable holding one PKCS#8 PEM signing key (instead of a key directory)."""

KEYRING_FILE = "keyring.json"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class KeyringEntry:
    """One signing key and its window: it signs from ``not_before_ms`` (if it is the
    newest such key) and its approvals stop verifying at ``retired_at_ms``."""

    key: SigningKey = field(repr=False)
    not_before_ms: int = 0
    retired_at_ms: int | None = None

    @property
    def kid(self) -> str:
        return self.key.kid

    def signs_at(self, now_ms: int) -> bool:
        return self.not_before_ms <= now_ms and (
            self.retired_at_ms is None or now_ms < self.retired_at_ms
        )

    def __repr__(self) -> str:
        return (
            f"KeyringEntry(kid={self.kid!r}, not_before_ms={self.not_before_ms}, "
            f"retired_at_ms={self.retired_at_ms})"
        )


class SigningKeyring:
    """The gate's Ed25519 signing keys with their windows. Never shows key material.

    On disk (``generate``/``rotate``/``retire`` keep it consistent)::

        <dir>/                     0700
          <kid>.pem                0600, PKCS#8 PEM; kid = RFC 7638 thumbprint
          keyring.json             {"keys": {"<kid>": {"not_before_ms": 0,
                                                       "retired_at_ms": null}}}

    Or one key in the environment variable ``TRUSTPLANE_SIGNING_KEY`` (PEM text; ``\\n``
    escapes are accepted), which signs from time 0 and never retires.
    """

    def __init__(self, entries: Sequence[KeyringEntry], *, source: str = "memory") -> None:
        if not entries:
            raise KeyringError(
                f"the signing keyring ({source}) has no keys",
                hint="create one: SigningKeyring.generate(<dir>) (`trustplane keys generate`)",
            )
        seen: set[str] = set()
        for entry in entries:
            if entry.kid in seen:
                raise KeyringError(f"the signing keyring ({source}) has key {entry.kid} twice")
            seen.add(entry.kid)
        self._entries = tuple(entries)
        self.source = source

    def __repr__(self) -> str:
        return f"SigningKeyring(source={self.source!r}, keys={list(self._entries)!r})"

    @property
    def entries(self) -> tuple[KeyringEntry, ...]:
        return self._entries

    # -- loading --------------------------------------------------------------------------

    @classmethod
    def load(
        cls, directory: Path | None = None, *, environ: Mapping[str, str] | None = None
    ) -> SigningKeyring:
        """The key in ``TRUSTPLANE_SIGNING_KEY`` if set, else the keys in ``directory``."""
        env = os.environ if environ is None else environ
        if env.get(SIGNING_KEY_ENV):
            return cls.from_env(env)
        if directory is None:
            raise KeyringError(
                f"no signing key: {SIGNING_KEY_ENV} is not set and no key directory is given",
                hint="create a key directory with `trustplane keys generate --dir DIR`",
            )
        return cls.from_directory(directory)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SigningKeyring:
        env = os.environ if environ is None else environ
        text = env.get(SIGNING_KEY_ENV, "")
        if not text.strip():
            raise KeyringError(f"{SIGNING_KEY_ENV} is not set or empty")
        if "\\n" in text and "\n" not in text:
            text = text.replace("\\n", "\n")
        try:
            key = private_key_from_pem(text.encode(), source=f"${SIGNING_KEY_ENV}")
        except KeyError_ as exc:
            raise KeyringError(
                exc.reason, hint="it must hold an unencrypted PKCS#8 PEM Ed25519 private key"
            ) from exc
        return cls([KeyringEntry(key, 0, None)], source=f"env {SIGNING_KEY_ENV}")

    @classmethod
    def from_directory(cls, directory: Path) -> SigningKeyring:
        """Load ``keyring.json`` and each listed ``<kid>.pem`` (refused if group/world
        readable); every PEM in the directory must be listed, and match its kid."""
        directory = Path(directory)
        windows = _read_keyring_file(directory)
        entries = []
        for kid, (not_before, retired) in windows.items():
            key = load_private_key(directory / f"{kid}.pem")
            if key.kid != kid:
                raise KeyringError(
                    f"{directory / (kid + '.pem')} holds key {key.kid}, not {kid}",
                    hint="the file was replaced; restore it, or retire the kid and rotate",
                )
            entries.append(KeyringEntry(key, not_before, retired))
        listed = {f"{kid}.pem" for kid in windows}
        strays = sorted(p.name for p in directory.glob("*.pem") if p.name not in listed)
        if strays:
            raise KeyringError(
                f"{directory} has key files not listed in {KEYRING_FILE}: {', '.join(strays)}",
                hint="remove them (e.g. left by an interrupted rotate) or add them with rotate",
            )
        return cls(entries, source=f"directory {directory}")

    # -- managing a key directory ---------------------------------------------------------

    @classmethod
    def generate(cls, directory: Path, *, not_before_ms: int = 0) -> KeyringEntry:
        """Create ``directory`` with its first key (0600), signing from ``not_before_ms``."""
        directory = Path(directory)
        if (directory / KEYRING_FILE).exists():
            raise KeyringError(
                f"{directory} already has a keyring",
                hint="add a key with rotate (`trustplane keys rotate`) instead",
            )
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = generate_signing_key()
        save_private_key(directory / f"{key.kid}.pem", key)
        _write_keyring_file(directory, {key.kid: (not_before_ms, None)})
        log.info("signing key %s created in %s", key.kid, directory)
        return KeyringEntry(key, not_before_ms, None)

    @classmethod
    def rotate(cls, directory: Path, not_before_ms: int) -> KeyringEntry:
        """Add a new key that signs from ``not_before_ms`` on; older keys keep verifying.

        Publish the new JWKS to executors before ``not_before_ms``, and restart (or
        reload) gate workers so they have the key when it starts signing.
        """
        directory = Path(directory)
        windows = _read_keyring_file(directory)
        key = generate_signing_key()
        save_private_key(directory / f"{key.kid}.pem", key)
        windows[key.kid] = (not_before_ms, None)
        _write_keyring_file(directory, windows)
        log.info("signing key %s added to %s, signs from %d", key.kid, directory, not_before_ms)
        return KeyringEntry(key, not_before_ms, None)

    @classmethod
    def retire(cls, directory: Path, kid: str, at_ms: int, *, force: bool = False) -> KeyringEntry:
        """From ``at_ms`` on the key neither signs nor verifies.

        Retire an old key after its last approval expired (``not_before`` of its
        successor + the approval TTL). Refused if no other key would sign after
        ``at_ms`` unless ``force`` (a compromised key: every approval is denied until a
        new key is rotated in).
        """
        directory = Path(directory)
        windows = _read_keyring_file(directory)
        if kid not in windows:
            raise KeyringError(
                f"no key {kid!r} in {directory}", hint=f"keys: {', '.join(windows) or 'none'}"
            )
        others = [nb for k, (nb, retired) in windows.items() if k != kid and retired is None]
        if not others and not force:
            raise KeyringError(
                f"retiring {kid} leaves {directory} no key to sign approvals after {at_ms}",
                hint="rotate in a new key first, or pass force=True to stop all approvals",
            )
        windows[kid] = (windows[kid][0], at_ms)
        _write_keyring_file(directory, windows)
        log.info("signing key %s in %s retired at %d", kid, directory, at_ms)
        return cls.from_directory(directory)._by_kid(kid)

    def _by_kid(self, kid: str) -> KeyringEntry:
        for entry in self._entries:
            if entry.kid == kid:
                return entry
        raise KeyringError(f"no key {kid!r} in the keyring ({self.source})")

    # -- using it -------------------------------------------------------------------------

    def signing_key(self, now_ms: int) -> SigningKey:
        """The newest key (greatest not_before_ms) that may sign at ``now_ms``."""
        usable = [e for e in self._entries if e.signs_at(now_ms)]
        if not usable:
            raise ApprovalSigningError(
                f"no signing key is valid at {now_ms} ({rfc3339_ms(now_ms)}) in {self.source}",
                hint="rotate in a key whose not_before is now (`trustplane keys rotate`)",
            )
        # max() keeps the first of equals; reversed: the later-listed key wins a tie
        return max(reversed(usable), key=lambda e: e.not_before_ms).key

    def public_keyset(self) -> Keyset:
        """Every key with its window (retired keys stay, marked ``retired_at``)."""
        return Keyset(
            KeyEntry(e.kid, e.key.public_key, e.not_before_ms, e.retired_at_ms)
            for e in self._entries
        )

    def jwks(self) -> dict[str, Any]:
        """The public keys as JWKS (OKP/Ed25519, kid = RFC 7638 thumbprint, plus the
        trustplane members ``nbf`` and ``retired_at`` in ms since the epoch)."""
        return self.public_keyset().to_jwks()


def _read_keyring_file(directory: Path) -> dict[str, tuple[int, int | None]]:
    path = directory / KEYRING_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KeyringError(
            f"{path} does not exist",
            hint=f"create a key directory with SigningKeyring.generate({str(directory)!r})",
        ) from exc
    except (OSError, ValueError) as exc:
        raise KeyringError(f"{path} is not readable JSON: {exc}") from exc
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, dict):
        raise KeyringError(f'{path} must be {{"keys": {{"<kid>": {{"not_before_ms": ...}}}}}}')
    windows: dict[str, tuple[int, int | None]] = {}
    for kid, window in keys.items():
        if not _KID.match(kid):
            raise KeyringError(f"{path}: {kid!r} is not a key id (base64url characters only)")
        if not isinstance(window, dict):
            raise KeyringError(f"{path}: keys[{kid!r}] must be an object")
        not_before = window.get("not_before_ms", 0)
        retired = window.get("retired_at_ms")
        if isinstance(not_before, bool) or not isinstance(not_before, int):
            raise KeyringError(f"{path}: keys[{kid!r}].not_before_ms must be an integer")
        if retired is not None and (isinstance(retired, bool) or not isinstance(retired, int)):
            raise KeyringError(f"{path}: keys[{kid!r}].retired_at_ms must be an integer or null")
        windows[kid] = (not_before, retired)
    return windows


def _write_keyring_file(directory: Path, windows: Mapping[str, tuple[int, int | None]]) -> None:
    """Replace keyring.json atomically (write a temporary file, fsync, rename)."""
    body = {
        "keys": {
            kid: {"not_before_ms": nb, "retired_at_ms": retired}
            for kid, (nb, retired) in windows.items()
        }
    }
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".keyring-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(body, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / KEYRING_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
