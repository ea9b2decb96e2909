"""Ed25519 keys: ids, files, and JWKS keysets.

Key ids are RFC 7638 JWK thumbprints (SHA-256, base64url) unless a keyset names its
own ``kid``. Private key files are PKCS#8 PEM, created 0600; a file that group or
others can read is refused. Public keys travel as JWKS (RFC 7517/8037:
``{"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey as NaclSigningKey
from nacl.signing import VerifyKey

from processors.exceptions import TrustplaneError, VerificationError

__all__ = [
    "KeyError_",
    "KeyFileError",
    "KeysetError",
    "UnknownKeyError",
    "SignatureError",
    "KeyEntry",
    "Keyset",
    "SigningKey",
    "b64url",
    "b64url_decode",
    "generate_signing_key",
    "jwk_thumbprint",
    "public_jwk",
    "raw_public_key",
    "verify_signature",
    "load_private_key",
    "save_private_key",
]


class KeyError_(TrustplaneError):  # noqa: N801 - trailing underscore: not the builtin KeyError
    """A key could not be used."""


class KeyFileError(KeyError_):
    """A private key file is missing, unreadable, malformed or too open."""


class KeysetError(KeyError_):
    """A keyset (JWKS) is malformed or has keys of a type trustplane does not accept."""


class UnknownKeyError(KeyError_):
    """No key with that id in the keyset (or it is retired)."""


class SignatureError(KeyError_, VerificationError):
    """A signature does not verify."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def jwk_thumbprint(key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw_public_key(key))}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    return b64url(hashlib.sha256(canonical).digest())


def public_jwk(key: Ed25519PublicKey, kid: str | None = None, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(raw_public_key(key)),
        "kid": kid or jwk_thumbprint(key),
        "alg": "EdDSA",
        "use": "sig",
    }
    jwk.update({k: v for k, v in extra.items() if v is not None})
    return jwk


def verify_signature(key: Ed25519PublicKey, signature: bytes, message: bytes) -> None:
    """Return nothing or raise SignatureError (never a bool a caller could ignore).

    Verification runs in libsodium (PyNaCl), about twice as fast as OpenSSL's Ed25519
    here (60 vs 115 µs); libsodium is the stricter of the two (it refuses small-order
    keys and non-canonical signatures), so nothing OpenSSL would refuse is accepted.
    """
    if len(signature) != 64:
        raise SignatureError(f"an Ed25519 signature is 64 bytes, this one is {len(signature)}")
    try:
        _verify_key(key.public_bytes_raw()).verify(message, signature)
    except (BadSignatureError, ValueError) as exc:
        raise SignatureError("the Ed25519 signature does not verify") from exc


@functools.lru_cache(maxsize=65_536)
def _verify_key(raw: bytes) -> VerifyKey:
    return VerifyKey(raw)


@functools.lru_cache(maxsize=64)
def _nacl_signing_key(key: SigningKey) -> NaclSigningKey:
    return NaclSigningKey(key.private_key.private_bytes_raw())


@dataclass(frozen=True)
class SigningKey:
    """A private key with its id."""

    private_key: Ed25519PrivateKey = field(repr=False)
    kid: str

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign(self, message: bytes) -> bytes:
        """Ed25519 in libsodium (deterministic: the same bytes OpenSSL would produce,
        in about three quarters of its time here)."""
        return _nacl_signing_key(self).sign(message).signature

    def public_jwk(self, **extra: Any) -> dict[str, Any]:
        return public_jwk(self.public_key, self.kid, **extra)


def generate_signing_key(kid: str | None = None) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey(private, kid or jwk_thumbprint(private.public_key()))


def save_private_key(path: Path, key: SigningKey) -> None:
    """Write the key as PKCS#8 PEM, readable by its owner only (created 0600)."""
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(path, 0o600)


def load_private_key(path: Path, kid: str | None = None) -> SigningKey:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"private key {path} is readable by group or others (mode {mode & 0o777:o})",
                hint=f"chmod 600 {path}",
            )
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"private key {path} does not exist") from exc
    except OSError as exc:
        raise KeyFileError(f"private key {path} cannot be read: {exc}") from exc
    return private_key_from_pem(data, kid=kid, source=str(path))


def private_key_from_pem(data: bytes, *, kid: str | None = None, source: str = "key") -> SigningKey:
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source} is not an unencrypted PKCS#8 PEM private key") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{source} is a {type(private).__name__}, not an Ed25519 key")
    return SigningKey(private, kid or jwk_thumbprint(private.public_key()))


@dataclass(frozen=True)
class KeyEntry:
    """A public key in a keyset, with the window in which its signatures count."""

    kid: str
    public_key: Ed25519PublicKey = field(repr=False)
    not_before_ms: int | None = None
    retired_at_ms: int | None = None

    def valid_at(self, now_ms: int) -> bool:
        if self.not_before_ms is not None and now_ms < self.not_before_ms:
            return False
        return self.retired_at_ms is None or now_ms < self.retired_at_ms


class Keyset(Mapping[str, KeyEntry]):
    """Public keys by id, read from and written as JWKS.

    Window members (``nbf``, ``retired_at``: milliseconds since the epoch) are
    trustplane extensions; JWKS readers that do not know them ignore them.
    """

    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self._entries: dict[str, KeyEntry] = {}
        for entry in entries:
            if entry.kid in self._entries:
                raise KeysetError(f"two keys have the id {entry.kid!r}")
            self._entries[entry.kid] = entry

    def __getitem__(self, kid: str) -> KeyEntry:
        return self._entries[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def key_for(self, kid: str, now_ms: int | None = None) -> Ed25519PublicKey:
        entry = self._entries.get(kid)
        if entry is None:
            raise UnknownKeyError(
                f"no key with id {kid!r} in the keyset",
                hint=f"known ids: {', '.join(self) or 'none'}",
            )
        if now_ms is not None and not entry.valid_at(now_ms):
            raise UnknownKeyError(
                f"key {kid!r} is not valid at {now_ms} (retired or not yet valid)"
            )
        return entry.public_key

    def verify(self, kid: str, signature: bytes, message: bytes, now_ms: int | None = None) -> None:
        verify_signature(self.key_for(kid, now_ms), signature, message)

    @classmethod
    def from_jwks(cls, jwks: object, *, source: str = "keyset") -> Keyset:
        if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
            raise KeysetError(f'{source} is not a JWKS: expected {{"keys": [...]}}')
        entries = []
        for n, jwk in enumerate(jwks["keys"]):
            if not isinstance(jwk, Mapping):
                raise KeysetError(f"{source}: keys[{n}] is not an object")
            if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                raise KeysetError(
                    f"{source}: keys[{n}] is kty={jwk.get('kty')!r} crv={jwk.get('crv')!r}; "
                    "only OKP/Ed25519 keys are accepted"
                )
            try:
                raw = b64url_decode(str(jwk["x"]))
                public = Ed25519PublicKey.from_public_bytes(raw)
            except (KeyError, ValueError) as exc:
                raise KeysetError(f"{source}: keys[{n}] has no valid 32-byte 'x'") from exc
            entries.append(
                KeyEntry(
                    str(jwk.get("kid") or jwk_thumbprint(public)),
                    public,
                    _optional_int(jwk.get("nbf"), f"{source}: keys[{n}].nbf"),
                    _optional_int(jwk.get("retired_at"), f"{source}: keys[{n}].retired_at"),
                )
            )
        return cls(entries)

    @classmethod
    def from_file(cls, path: Path) -> Keyset:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise KeysetError(f"keyset {path} does not exist") from exc
        except (OSError, ValueError) as exc:
            raise KeysetError(f"keyset {path} is not readable JSON: {exc}") from exc
        return cls.from_jwks(data, source=str(path))

    def to_jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                public_jwk(e.public_key, e.kid, nbf=e.not_before_ms, retired_at=e.retired_at_ms)
                for e in self._entries.values()
            ]
        }


def _optional_int(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise KeysetError(f"{where} must be an integer (milliseconds since the epoch)")
    return value
