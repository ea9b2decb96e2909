"""Signed approvals: the in-toto Statement, the signing keyring, and executor verification.

An approval is a DSSE envelope (``payloadType`` ``application/vnd.in-toto+json``) whose
payload is the RFC 8785 canonical JSON of an in-toto Statement v1::

    {
      "_type": "https://in-toto.io/Statement/v1",
      "subject": [{"name": "intent:<intent_id>",
                   "digest": {"sha256": "<hex of SHA-256 of the exact intent record bytes>"}}],
      "predicateType": "https://trustplane.dev/approval/v1",
      "predicate": {
        "approvalId": "...", "intentId": "...", "agentId": "...",
        "action": "...", "resource": "...",
        "parametersDigest": "sha256:<hex of SHA-256 of the RFC 8785 JSON of the parameters>",
        "verdicts": [{"layer": "...", "status": "ALLOW", "reasons": [...], "evidence": {...}}],
        "policyBundleDigest": "sha256:..." | null,
        "determiningPolicies": ["..."],
        "issuedAt": "2023-11-14T22:13:20.000Z", "issuedAtMs": 1700000000000,
        "expiresAt": "2023-11-14T22:18:20.000Z", "expiresAtMs": 1700000300000,
        "lineage": {"eventId": "...", "logIndex": 17 | null} | null
      }
    }

The predicate type ``https://trustplane.dev/approval/v1`` means: *every decision layer of
a trustplane gate explicitly allowed the intent named by the subject, and an executor may
act on it once, between issuedAt and expiresAt*. Fields may be added to the predicate in
v1 (verifiers ignore unknown fields); removing or changing the meaning of one is v2.

Signing keys are Ed25519 (:class:`SigningKeyring`), identified by their RFC 7638 JWK
thumbprint (the DSSE ``keyid``), and published as a JWKS (:meth:`SigningKeyring.jwks`).
Executors call :func:`verify_approval` before acting; it returns the verified approval
or raises a subclass of :class:`ApprovalVerificationError`, never a bool.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from processors.crypto.dsse import CanonicalizationError, canonical_json, pae, sign_envelope
from processors.crypto.keys import (
    KeyEntry,
    KeyError_,
    Keyset,
    SignatureError,
    SigningKey,
    generate_signing_key,
    load_private_key,
    private_key_from_pem,
    save_private_key,
    verify_signature,
)
from processors.enforcement import Enforcement, Outcome
from processors.exceptions import TrustplaneError
from processors.intent import Intent
from processors.verdict import Status, Verdict

__all__ = [
    # format
    "STATEMENT_TYPE",
    "PREDICATE_TYPE",
    "PAYLOAD_TYPE",
    "SIGNING_KEY_ENV",
    "DEFAULT_MAX_SKEW_MS",
    "LineagePosition",
    "build_statement",
    "parameters_digest",
    "rfc3339_ms",
    # signing
    "ApprovalSigningError",
    "KeyringError",
    "KeyringEntry",
    "SigningKeyring",
    "ApprovalSigner",
    # verification (executor SDK)
    "ApprovalVerificationError",
    "MalformedEnvelopeError",
    "PayloadTypeError",
    "SignatureInvalidError",
    "ApprovalKeyError",
    "StatementError",
    "ApprovalExpiredError",
    "IntentMismatchError",
    "ApprovalReusedError",
    "SeenStoreError",
    "VerifiedApproval",
    "verify_approval",
    "claim_once",
    "SeenStore",
    "InMemorySeenStore",
    "SqliteSeenStore",
]

log = logging.getLogger(__name__)

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://trustplane.dev/approval/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
SIGNING_KEY_ENV = "TRUSTPLANE_SIGNING_KEY"
"""Environment variable holding one PKCS#8 PEM signing key (instead of a key directory)."""

KEYRING_FILE = "keyring.json"
DEFAULT_MAX_SKEW_MS = 30_000
MAX_ENVELOPE_BYTES = 256 * 1024
MAX_SIGNATURES = 8

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_INTENT_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_KID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_EVIDENCE_MAX_KEYS = 32
_EVIDENCE_MAX_CHARS = 512


# =========================================================================================
# Errors
# =========================================================================================


class ApprovalSigningError(TrustplaneError):
    """An approval cannot be signed (not approved, no usable key, unencodable values)."""


class KeyringError(KeyError_):
    """The signing keyring (key directory, keyring.json, environment key) is unusable."""


class ApprovalVerificationError(TrustplaneError):
    """An approval must not be acted on. The subclass says which check failed."""


class MalformedEnvelopeError(ApprovalVerificationError):
    """Step 1: the envelope is not a DSSE envelope (not JSON, missing fields, bad base64)."""


class PayloadTypeError(ApprovalVerificationError):
    """Step 2: the envelope's payloadType is not application/vnd.in-toto+json."""


class SignatureInvalidError(ApprovalVerificationError):
    """Step 3: no signature verifies (tampered, wrong length, not base64, unsigned)."""


class ApprovalKeyError(ApprovalVerificationError):
    """Step 3/5: the signing key is unknown, retired, or was not valid when it signed."""


class StatementError(ApprovalVerificationError):
    """Step 4: the signed payload is not a trustplane approval Statement."""


class ApprovalExpiredError(ApprovalVerificationError):
    """Step 5: the approval has expired, or claims to be issued in the future."""


class IntentMismatchError(ApprovalVerificationError):
    """Step 6: the intent about to be executed is not the one that was approved."""


class ApprovalReusedError(ApprovalVerificationError):
    """Step 7: the approval was already used (approvals are single use)."""


class SeenStoreError(ApprovalVerificationError):
    """Step 7: the single-use store cannot be consulted; fail closed, do not execute."""


# =========================================================================================
# The Statement
# =========================================================================================


def rfc3339_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2023-11-14T22:13:20.000Z``."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parameters_digest(parameters: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the RFC 8785 canonical JSON of the intent's parameters.

    Raises CanonicalizationError for values JSON cannot carry exactly (integers with
    |n| >= 2^53, NaN, infinities): agents should send such values as strings.
    """
    return "sha256:" + hashlib.sha256(canonical_json(dict(parameters))).hexdigest()


@dataclass(frozen=True, slots=True)
class LineagePosition:
    """Where the approval's decision sits in the lineage log."""

    event_id: str
    log_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"eventId": self.event_id, "logIndex": self.log_index}

    @classmethod
    def coerce(cls, value: LineagePosition | Mapping[str, Any]) -> LineagePosition:
        if isinstance(value, LineagePosition):
            position = value
        else:
            position = cls(value.get("eventId"), value.get("logIndex"))  # type: ignore[arg-type]
        if not isinstance(position.event_id, str) or not position.event_id:
            raise ApprovalSigningError("lineage.eventId must be a non-empty string")
        index = position.log_index
        if index is not None and (
            isinstance(index, bool) or not isinstance(index, int) or index < 0
        ):
            raise ApprovalSigningError("lineage.logIndex must be an integer >= 0 or null")
        return position


def _evidence_value(value: object) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, str):
        if len(value) <= _EVIDENCE_MAX_CHARS:
            return value
        return value[: _EVIDENCE_MAX_CHARS - 1] + "…"
    if isinstance(value, list | tuple):
        return [_evidence_value(item) for item in value[:_EVIDENCE_MAX_KEYS]]
    return _evidence_value(str(value))


def _evidence_summary(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """The evidence, bounded: at most 32 keys (sorted), strings cut at 512 characters."""
    keys = sorted(str(k) for k in evidence)[:_EVIDENCE_MAX_KEYS]
    return {k: _evidence_value(evidence[k]) for k in keys}


def _policy_list(value: object) -> list[str]:
    """determining_policies evidence: a list, a JSON list in a string, or comma-separated."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return [str(item) for item in parsed]
    return [part.strip() for part in text.split(",") if part.strip()]


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "layer": verdict.layer,
        "status": verdict.status.value,
        "reasons": list(verdict.reasons),
        "evidence": _evidence_summary(verdict.evidence),
    }


def build_statement(
    intent: Intent,
    enforcement: Enforcement,
    *,
    intent_digest: str,
    approval_id: str,
    issued_at_ms: int,
    expires_at_ms: int,
    lineage: LineagePosition | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The in-toto Statement v1 of one approval (see the module docstring)."""
    if not _INTENT_DIGEST.match(intent_digest):
        raise ApprovalSigningError(
            f"intent_digest must be sha256:<64 lowercase hex>, got {intent_digest[:80]!r}"
        )
    policy = next((v for v in enforcement.verdicts if v.layer == "policy"), None)
    policy_evidence: Mapping[str, Any] = policy.evidence if policy is not None else {}
    bundle = policy_evidence.get("bundle_digest")
    try:
        params = parameters_digest(intent.parameters)
    except CanonicalizationError as exc:
        raise ApprovalSigningError(
            f"intent {intent.intent_id}: the parameters cannot be signed: {exc.reason}",
            hint="send integers beyond 2^53 and non-finite numbers as strings",
        ) from exc
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {
                "name": f"intent:{intent.intent_id}",
                "digest": {"sha256": intent_digest.removeprefix("sha256:")},
            }
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "approvalId": approval_id,
            "intentId": intent.intent_id,
            "agentId": intent.agent_id,
            "action": intent.action,
            "resource": intent.resource,
            "parametersDigest": params,
            "verdicts": [_verdict_json(v) for v in enforcement.verdicts],
            "policyBundleDigest": str(bundle) if bundle else None,
            "determiningPolicies": _policy_list(policy_evidence.get("determining_policies")),
            "issuedAt": rfc3339_ms(issued_at_ms),
            "issuedAtMs": issued_at_ms,
            "expiresAt": rfc3339_ms(expires_at_ms),
            "expiresAtMs": expires_at_ms,
            "lineage": LineagePosition.coerce(lineage).to_json() if lineage is not None else None,
        },
    }


# =========================================================================================
# Signing keys
# =========================================================================================


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


# =========================================================================================
# Signing
# =========================================================================================


class ApprovalSigner:
    """Signs approvals with the keyring's current key."""

    def __init__(self, keyring: SigningKeyring) -> None:
        self._keyring = keyring
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ApprovalSigner({self._keyring!r})"

    @property
    def keyring(self) -> SigningKeyring:
        return self._keyring

    def use(self, keyring: SigningKeyring) -> None:
        """Swap in a reloaded keyring (e.g. after a rotation), atomically."""
        with self._lock:
            self._keyring = keyring

    def public_keyset(self) -> Keyset:
        return self._keyring.public_keyset()

    def sign(
        self,
        intent: Intent,
        enforcement: Enforcement,
        *,
        intent_digest: str,
        approval_id: str,
        now_ms: int,
        ttl_ms: int,
        lineage: LineagePosition | Mapping[str, Any] | None = None,
    ) -> tuple[bytes, int]:
        """Return (DSSE envelope as UTF-8 JSON, expires_at_ms).

        The approval expires ``ttl_ms`` after ``now_ms`` or when the intent expires,
        whichever is first. Raises ApprovalSigningError for anything not approved by
        every layer, an approval that would be born expired, or no usable key.
        """
        if enforcement.outcome is not Outcome.APPROVED:
            raise ApprovalSigningError(
                f"refusing to sign an approval for a {enforcement.outcome} intent"
            )
        if not enforcement.verdicts or any(
            v.status is not Status.ALLOW for v in enforcement.verdicts
        ):
            raise ApprovalSigningError(
                "refusing to sign: an approval needs an explicit ALLOW from every layer"
            )
        if ttl_ms <= 0:
            raise ApprovalSigningError(f"ttl_ms must be > 0, got {ttl_ms}")
        expires_at_ms = min(now_ms + ttl_ms, intent.expires_at_ms)
        if expires_at_ms <= now_ms:
            raise ApprovalSigningError(
                f"intent {intent.intent_id} expired at {intent.expires_at_ms}, before the "
                f"approval would be issued ({now_ms})"
            )
        statement = build_statement(
            intent,
            enforcement,
            intent_digest=intent_digest,
            approval_id=approval_id,
            issued_at_ms=now_ms,
            expires_at_ms=expires_at_ms,
            lineage=lineage,
        )
        try:
            payload = canonical_json(statement)
        except CanonicalizationError as exc:
            raise ApprovalSigningError(
                f"intent {intent.intent_id}: the approval cannot be canonicalized: {exc.reason}",
                hint="send integers beyond 2^53 and non-finite numbers as strings",
            ) from exc
        key = self._keyring.signing_key(now_ms)
        envelope = sign_envelope(payload, PAYLOAD_TYPE, key)
        return json.dumps(envelope, separators=(",", ":")).encode(), expires_at_ms


# =========================================================================================
# Verification (executor SDK)
# =========================================================================================


@dataclass(frozen=True)
class VerifiedApproval:
    """An approval whose every check passed: act on exactly this, once."""

    approval_id: str
    intent_id: str
    agent_id: str
    action: str
    resource: str
    intent_digest: str
    """``sha256:<hex>`` of the approved intent record's bytes."""
    issued_at_ms: int
    expires_at_ms: int
    predicate: dict[str, Any] = field(compare=False, repr=False)
    keyid: str = ""

    @property
    def parameters_digest(self) -> str:
        return str(self.predicate.get("parametersDigest", ""))

    def check_parameters(self, parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return ``parameters`` if they are the approved ones, else raise IntentMismatchError."""
        try:
            actual = parameters_digest(parameters)
        except CanonicalizationError as exc:
            raise IntentMismatchError(
                f"the parameters cannot be digested, so they are not the approved ones: "
                f"{exc.reason}"
            ) from exc
        if not hmac.compare_digest(actual, self.parameters_digest):
            raise IntentMismatchError(
                f"parameters digest {actual} is not the approved {self.parameters_digest}: "
                "the executor is about to run something other than what was approved"
            )
        return parameters


@runtime_checkable
class SeenStore(Protocol):
    """Remembers which approvals were used. ``claim`` is atomic: True the first time an
    approval id is claimed, False ever after (at least until it expired)."""

    def claim(self, approval_id: str, expires_at_ms: int) -> bool: ...


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class InMemorySeenStore:
    """A SeenStore for one process. Entries are dropped ``grace_ms`` after their approval
    expired (by ``clock``, which must be the clock the verifier's ``now_ms`` comes from)."""

    def __init__(self, *, clock: Callable[[], int] = _wall_ms, grace_ms: int = 300_000) -> None:
        self._clock = clock
        self._grace_ms = grace_ms
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def claim(self, approval_id: str, expires_at_ms: int) -> bool:
        with self._lock:
            horizon = self._clock() - self._grace_ms
            while self._heap and self._heap[0][0] <= horizon:
                _, old = heapq.heappop(self._heap)
                self._expiry.pop(old, None)
            if approval_id in self._expiry:
                return False
            self._expiry[approval_id] = expires_at_ms
            heapq.heappush(self._heap, (expires_at_ms, approval_id))
            return True


class SqliteSeenStore:
    """A durable SeenStore in a SQLite file: survives restarts, shared by the executor
    processes of one host (SQLite locking makes ``claim`` atomic across them).

    ``synchronous=FULL``: a claim is on disk before ``claim`` returns, so a crash or
    power loss cannot forget it (a forgotten claim would allow a second execution).
    """

    _PURGE_EVERY = 1000

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], int] = _wall_ms,
        grace_ms: int = 300_000,
        timeout_s: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._grace_ms = grace_ms
        self._lock = threading.Lock()
        self._claims = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS claimed_approvals ("
                " approval_id TEXT PRIMARY KEY,"
                " expires_at_ms INTEGER NOT NULL,"
                " claimed_at_ms INTEGER NOT NULL) WITHOUT ROWID"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS claimed_approvals_expiry"
                " ON claimed_approvals (expires_at_ms)"
            )
            self._purge()
        except sqlite3.Error as exc:
            raise SeenStoreError(
                f"cannot open the seen-approvals store {self.path}: {exc}",
                hint="check the path is writable by the executor",
            ) from exc

    def __repr__(self) -> str:
        return f"SqliteSeenStore({str(self.path)!r})"

    def _purge(self) -> None:
        self._db.execute(
            "DELETE FROM claimed_approvals WHERE expires_at_ms <= ?",
            (self._clock() - self._grace_ms,),
        )

    def claim(self, approval_id: str, expires_at_ms: int) -> bool:
        with self._lock:
            try:
                self._claims += 1
                if self._claims % self._PURGE_EVERY == 0:
                    self._purge()
                cursor = self._db.execute(
                    "INSERT INTO claimed_approvals VALUES (?, ?, ?)"
                    " ON CONFLICT(approval_id) DO NOTHING",
                    (approval_id, expires_at_ms, self._clock()),
                )
            except sqlite3.Error as exc:
                raise SeenStoreError(
                    f"cannot record approval {approval_id} in {self.path}: {exc}",
                    hint="the approval was not executed; fix the store and redeliver it",
                ) from exc
            return cursor.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteSeenStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _b64decode(text: str, what: str, error: type[ApprovalVerificationError]) -> bytes:
    """Standard or URL-safe base64, padding optional (as the DSSE spec allows)."""
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.b64decode(padded, altchars=b"-_", validate=True)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"the {what} is not valid base64") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        names = [name for name, _ in pairs]
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"duplicate member {duplicate!r}")
    return result


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(predicate: Mapping[str, Any], name: str) -> str:
    value = predicate.get(name)
    if not isinstance(value, str) or not value:
        raise StatementError(f"predicate.{name} is missing or not a non-empty string")
    return value


def verify_approval(
    envelope: bytes | str | Mapping[str, Any],
    keyset: Mapping[str, KeyEntry],
    now_ms: int,
    intent: bytes | None = None,
    seen: SeenStore | None = None,
    *,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
) -> VerifiedApproval:
    """Verify a signed approval before acting on it; return it or raise.

    Every failure is an :class:`ApprovalVerificationError` subclass naming the step. Pass
    ``intent`` (the raw intent record bytes) to check the approval is for exactly that
    intent, and ``seen`` to make the approval single use (the claim is made last, so a
    rejected approval is never marked used; a claimed one must then be executed or
    reported FAILED: it will not verify again).
    """
    # (1) Parse the envelope: a JSON object with payload, payloadType and signatures.
    if isinstance(envelope, bytes | bytearray | memoryview | str):
        if len(envelope) > MAX_ENVELOPE_BYTES:
            raise MalformedEnvelopeError(
                f"the envelope is {len(envelope)} bytes; approvals are at most {MAX_ENVELOPE_BYTES}"
            )
        try:
            parsed = json.loads(bytes(envelope) if not isinstance(envelope, str) else envelope)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedEnvelopeError(f"the envelope is not JSON: {exc}") from exc
    elif isinstance(envelope, Mapping):
        parsed = dict(envelope)
    else:
        raise MalformedEnvelopeError(
            f"the envelope must be JSON bytes/text or a mapping, not {type(envelope).__name__}"
        )
    if not isinstance(parsed, dict):
        raise MalformedEnvelopeError("the envelope is not a JSON object")
    payload_b64 = parsed.get("payload")
    payload_type = parsed.get("payloadType")
    signatures = parsed.get("signatures")
    if not isinstance(payload_b64, str) or not isinstance(payload_type, str):
        raise MalformedEnvelopeError("the envelope's payload or payloadType is missing or not text")
    if not isinstance(signatures, list):
        raise MalformedEnvelopeError("the envelope's signatures is missing or not a list")
    if len(signatures) > MAX_SIGNATURES:
        raise MalformedEnvelopeError(
            f"the envelope has {len(signatures)} signatures; at most {MAX_SIGNATURES} are read"
        )
    payload = _b64decode(payload_b64, "envelope's payload", MalformedEnvelopeError)

    # (2) The payload type is the in-toto one (it is signed too, via PAE).
    if payload_type != PAYLOAD_TYPE:
        raise PayloadTypeError(
            f"payloadType is {payload_type[:100]!r}, expected {PAYLOAD_TYPE!r}: "
            "this is not a trustplane approval"
        )

    # (3) A signature by a known key that is not retired verifies over PAE(type, payload).
    keyid, entry = _verify_signatures(
        signatures, keyset, pae(payload_type, payload), now_ms, max_skew_ms
    )

    # (4) The payload is an in-toto Statement v1 with the trustplane approval predicate.
    try:
        statement = json.loads(payload, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StatementError(f"the signed payload is not a JSON document: {exc}") from exc
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise StatementError(f"the signed payload is not an in-toto Statement ({STATEMENT_TYPE})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise StatementError(
            f"predicateType is {str(statement.get('predicateType'))[:100]!r}, "
            f"expected {PREDICATE_TYPE!r}"
        )
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise StatementError("an approval has exactly one subject, the intent")
    name = subjects[0].get("name")
    digests = subjects[0].get("digest")
    if not isinstance(name, str) or not name.startswith("intent:") or len(name) == 7:
        raise StatementError("the subject's name must be intent:<intent_id>")
    sha256_hex = digests.get("sha256") if isinstance(digests, dict) else None
    if not isinstance(sha256_hex, str) or not _HEX64.match(sha256_hex):
        raise StatementError("the subject has no sha256 digest of 64 lowercase hex digits")
    intent_id = name[len("intent:") :]
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        raise StatementError("the Statement has no predicate object")
    approval_id = _text(predicate, "approvalId")
    agent_id = _text(predicate, "agentId")
    action = _text(predicate, "action")
    resource = _text(predicate, "resource")
    if predicate.get("intentId", intent_id) != intent_id:
        raise StatementError("predicate.intentId is not the intent named by the subject")
    if not _is_int(predicate.get("issuedAtMs")) or not _is_int(predicate.get("expiresAtMs")):
        raise StatementError("predicate.issuedAtMs / expiresAtMs must be integers (ms)")
    issued_at_ms: int = predicate["issuedAtMs"]
    expires_at_ms: int = predicate["expiresAtMs"]
    if expires_at_ms <= issued_at_ms:
        raise StatementError("the approval expires before it is issued")
    verdicts = predicate.get("verdicts")
    if (
        not isinstance(verdicts, list)
        or not verdicts
        or any(not isinstance(v, dict) or v.get("status") != "ALLOW" for v in verdicts)
    ):
        raise StatementError(
            "predicate.verdicts must list every layer, each with status ALLOW; "
            "anything else is not an approval"
        )

    # (5) Fresh: not expired at now_ms, not issued in the future (beyond the clock skew),
    #     and signed while its key was valid.
    if now_ms >= expires_at_ms:
        raise ApprovalExpiredError(
            f"approval {approval_id} expired at {rfc3339_ms(expires_at_ms)} "
            f"({now_ms - expires_at_ms} ms ago)",
            hint="do not execute; the agent must submit the intent again",
        )
    if issued_at_ms > now_ms + max_skew_ms:
        raise ApprovalExpiredError(
            f"approval {approval_id} claims to be issued at {rfc3339_ms(issued_at_ms)}, "
            f"{issued_at_ms - now_ms} ms in the future (allowed skew {max_skew_ms} ms)",
            hint="check the clocks of the gate and this executor (NTP)",
        )
    if entry.not_before_ms is not None and issued_at_ms + max_skew_ms < entry.not_before_ms:
        raise ApprovalKeyError(
            f"approval {approval_id} was issued before key {keyid} became valid "
            f"({entry.not_before_ms})"
        )
    if entry.retired_at_ms is not None and issued_at_ms >= entry.retired_at_ms:
        raise ApprovalKeyError(
            f"approval {approval_id} was issued after key {keyid} was retired "
            f"({entry.retired_at_ms})"
        )

    # (6) If the intent is at hand: it is exactly the approved one.
    intent_digest = "sha256:" + sha256_hex
    if intent is not None:
        actual = hashlib.sha256(intent).hexdigest()
        if not hmac.compare_digest(actual, sha256_hex):
            raise IntentMismatchError(
                f"the intent's sha256 is {actual}, the approval is for {sha256_hex}: the "
                "executor is about to run something other than what was approved",
                hint="execute only the intent record the approval names (intent_id "
                f"{intent_id!r}), byte for byte",
            )

    verified = VerifiedApproval(
        approval_id=approval_id,
        intent_id=intent_id,
        agent_id=agent_id,
        action=action,
        resource=resource,
        intent_digest=intent_digest,
        issued_at_ms=issued_at_ms,
        expires_at_ms=expires_at_ms,
        predicate=predicate,
        keyid=keyid,
    )

    # (7) Single use: claim the approval id (last, so only a fully valid approval is used up).
    if seen is not None:
        claim_once(seen, verified)
    return verified


def claim_once(seen: SeenStore, approval: VerifiedApproval) -> VerifiedApproval:
    """Step 7 on its own: claim ``approval`` in ``seen`` or raise ApprovalReusedError.

    For callers that run further checks of their own after :func:`verify_approval`
    (called without ``seen``) and want the claim to stay the very last step.
    """
    try:
        claimed = seen.claim(approval.approval_id, approval.expires_at_ms)
    except ApprovalVerificationError:
        raise
    except Exception as exc:  # a third-party store failed: fail closed, typed
        raise SeenStoreError(
            f"the single-use store {seen!r} failed for approval {approval.approval_id}: "
            f"{type(exc).__name__}: {exc}",
            hint="the approval was not executed; fix the store and redeliver it",
        ) from exc
    if not claimed:
        raise ApprovalReusedError(
            f"approval {approval.approval_id} was already used; an approval authorizes one "
            "execution",
            hint="a redelivered record: it was executed (or claimed) before; do not run it again",
        )
    return approval


def _verify_signatures(
    signatures: list[Any],
    keyset: Mapping[str, KeyEntry],
    message: bytes,
    now_ms: int,
    max_skew_ms: int,
) -> tuple[str, KeyEntry]:
    """Step 3: the first signature that verifies wins; otherwise the most telling error."""
    if not signatures:
        raise SignatureInvalidError(
            "the envelope has no signatures: an unsigned approval must not be acted on"
        )
    key_problems: list[str] = []
    sig_problems: list[str] = []
    for n, item in enumerate(signatures):
        if not isinstance(item, dict) or not isinstance(item.get("sig"), str):
            sig_problems.append(f"signatures[{n}] has no 'sig' text")
            continue
        kid = item.get("keyid")
        if not isinstance(kid, str) or not kid:
            key_problems.append(f"signatures[{n}] names no keyid")
            continue
        entry = keyset.get(kid)
        if entry is None:
            key_problems.append(f"signatures[{n}]: key {kid!r} is not in the keyset")
            continue
        if entry.retired_at_ms is not None and now_ms >= entry.retired_at_ms:
            key_problems.append(
                f"signatures[{n}]: key {kid!r} was retired at {rfc3339_ms(entry.retired_at_ms)}"
            )
            continue
        if entry.not_before_ms is not None and now_ms + max_skew_ms < entry.not_before_ms:
            key_problems.append(
                f"signatures[{n}]: key {kid!r} is not valid before "
                f"{rfc3339_ms(entry.not_before_ms)}"
            )
            continue
        try:
            signature = _b64decode(item["sig"], f"signatures[{n}].sig", SignatureInvalidError)
        except SignatureInvalidError as exc:
            sig_problems.append(exc.reason)
            continue
        if len(signature) != 64:
            sig_problems.append(
                f"signatures[{n}] is {len(signature)} bytes; an Ed25519 signature is 64"
            )
            continue
        try:
            verify_signature(entry.public_key, signature, message)
        except SignatureError:
            sig_problems.append(
                f"signatures[{n}] by key {kid!r} does not verify: the payload or its type "
                "was changed after signing, or the signature is corrupt"
            )
            continue
        return kid, entry
    if sig_problems:
        raise SignatureInvalidError(
            "; ".join(sig_problems + key_problems),
            hint="do not execute; the approval was altered or damaged in transit",
        )
    raise ApprovalKeyError(
        "; ".join(key_problems),
        hint="refresh the keyset (JWKS) from the gate operators; if the key is retired, the "
        f"approval is no longer valid. Known keys: {', '.join(keyset) or 'none'}",
    )
