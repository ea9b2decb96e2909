"""Operator keys enrolled by signed commands: ``operator.enroll`` and ``operator.retire``.

The trust root is the operator keyset a :class:`~processors.control.state.ControlState`
is built with (``operators.jwks.json``): its **root** keys. A root key may enrol more
operator keys -- the keys operators' browsers hold in the console -- with a command on
``control``, so every worker trusts a new key from the moment the broker appended its
enrolment, without a restart or a file to ship:

==================  ============================  ==========================================
kind                subject                       payload
==================  ============================  ==========================================
operator.enroll     ``control/operators/<kid>``   kid, x, label, not_after_ms?
operator.retire     ``control/operators/<kid>``   kid, reason
==================  ============================  ==========================================

Rules, checked in this order when a command is applied (a refused command changes
nothing):

(1) the command is signed by a root key valid when it was appended: an enrolled key can
    sign every other kind, but never enrol or retire an operator key;
(2) ``x`` is the raw 32-byte Ed25519 public key in base64url without padding, exactly as
    it re-encodes, and a valid (prime-order) curve point;
(3) ``kid`` is the key's RFC 7638 JWK thumbprint (what WebCrypto's exported JWK gives);
(4) ``label`` names the person or device (1-200 printable characters);
(5) ``not_after_ms`` (optional) lies after the enrolment;
(6) a key is enrolled once: a root key's id cannot be enrolled, and a retired key stays
    retired (enrol a new key instead).

An enrolled key signs from its enrolment's **append time** (inclusive) until
``not_after_ms`` or its retirement's append time (exclusive). Enrolled keys are never
deleted, only retired: their older commands must still verify when a worker replays the
log. Each enrolled key is a signer of its own (``Signer("operator", kid)``, its own
sequence chain; :mod:`processors.control.history`).

Everything is decided in log order at append time, so every worker and every replay
reaches the same verdict. A root key retired in the trust root file (``retired_at``)
refuses the enrolments appended after its retirement; the keys it enrolled before stay
enrolled until an ``operator.retire`` (by another root key) retires them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.bindings import crypto_core_ed25519_is_valid_point

from processors.control.commands import (
    MAX_SEQUENCE,
    ControlContext,
    Refused,
    check_members,
    operator_subject,
    reason_of,
)
from processors.crypto.keys import (
    KeyEntry,
    KeyError_,
    Keyset,
    UnknownKeyError,
    b64url,
    b64url_decode,
    jwk_thumbprint,
    raw_public_key,
)
from processors.exceptions import TrustplaneError
from processors.timefmt import iso_ms

__all__ = [
    "ENROLL_KIND",
    "RETIRE_KIND",
    "OPERATOR_KINDS",
    "MAX_LABEL_LENGTH",
    "EnrolledOperator",
    "EnrolledOperators",
    "OperatorKeyError",
    "OperatorKeys",
    "OperatorStatus",
    "check_label",
    "operator_subject",
    "parse_operator_key",
]

ENROLL_KIND = "operator.enroll"
RETIRE_KIND = "operator.retire"
OPERATOR_KINDS = frozenset({ENROLL_KIND, RETIRE_KIND})
MAX_LABEL_LENGTH = 200
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

OperatorStatus = Literal["pending", "active", "expired", "retired"]


class OperatorKeyError(TrustplaneError):
    """A public key (``x``, ``kid``) or label that cannot be enrolled as an operator key."""


# -- the key and its label ------------------------------------------------------------


def parse_operator_key(x: object, kid: object) -> Ed25519PublicKey:
    """The Ed25519 public key of JWK member ``x``, checked against its ``kid``.

    Raises :class:`OperatorKeyError` unless (2) ``x`` is strict base64url without padding
    of exactly 32 bytes that re-encodes to ``x`` and is a valid curve point, and (3)
    ``kid`` is its RFC 7638 thumbprint."""
    if not isinstance(x, str) or not x:
        raise OperatorKeyError(
            "x must be the raw Ed25519 public key in base64url without padding (43 characters)"
        )
    if not set(x) <= _B64URL:
        bad = sorted(set(x) - _B64URL)[:5]
        raise OperatorKeyError(
            f"x must be base64url without padding (A-Z a-z 0-9 - _); it has {bad!r}",
            hint="send the JWK member x as WebCrypto exports it (no '=' padding, no '+' '/')",
        )
    try:
        raw = b64url_decode(x)
    except ValueError:  # binascii.Error: a length no base64 text can have
        raise OperatorKeyError(f"x is not valid base64url ({len(x)} characters)") from None
    if len(raw) != 32:
        raise OperatorKeyError(
            f"x decodes to {len(raw)} bytes; an Ed25519 public key is 32 raw bytes "
            "(43 base64url characters)"
        )
    if b64url(raw) != x:
        raise OperatorKeyError(
            "x is not in canonical base64url (its last character carries stray bits)",
            hint=f"the canonical form of this key is {b64url(raw)}",
        )
    if not crypto_core_ed25519_is_valid_point(raw):
        raise OperatorKeyError("x is not a valid Ed25519 public key (not a prime-order point)")
    public = Ed25519PublicKey.from_public_bytes(raw)
    thumbprint = jwk_thumbprint(public)
    if not isinstance(kid, str) or kid != thumbprint:
        raise OperatorKeyError(
            f"kid {str(kid)[:80]!r} is not the RFC 7638 thumbprint of x ({thumbprint})",
            hint="an operator key's id is its JWK thumbprint: SHA-256 over "
            '{"crv":"Ed25519","kty":"OKP","x":...}, base64url',
        )
    return public


def check_label(label: object) -> str:
    """The label of an operator key (who or what holds it), stripped; raises
    :class:`OperatorKeyError` unless it is 1-200 printable characters."""
    if not isinstance(label, str) or not label.strip():
        raise OperatorKeyError(
            "an operator key needs a label: who holds it (a name, a device), 1-200 characters"
        )
    text = label.strip()
    if len(text) > MAX_LABEL_LENGTH:
        raise OperatorKeyError(f"the label has {len(text)} characters; at most {MAX_LABEL_LENGTH}")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        raise OperatorKeyError("the label must not contain control or format characters")
    return text


# -- the enrolled keys ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrolledOperator:
    """An operator key enrolled by an ``operator.enroll`` command (never deleted)."""

    kid: str
    x: str
    public_key: Ed25519PublicKey = field(repr=False, compare=False)
    label: str
    enrolled_at_ms: int
    """The enrolment's broker append time: the key signs from here (inclusive)."""
    enrolled_by: str
    """The root key that signed the enrolment."""
    command_id: str
    not_after_ms: int | None = None
    retired_at_ms: int | None = None
    """The retirement's append time: the key signs until here (exclusive)."""
    retired_by: str | None = None
    retire_reason: str = ""

    @property
    def until_ms(self) -> int | None:
        """The end of the key's window (exclusive): expiry or retirement, the earlier."""
        ends = [t for t in (self.not_after_ms, self.retired_at_ms) if t is not None]
        return min(ends) if ends else None

    def status(self, at_ms: int) -> OperatorStatus:
        if self.retired_at_ms is not None and at_ms >= self.retired_at_ms:
            return "retired"
        if self.not_after_ms is not None and at_ms >= self.not_after_ms:
            return "expired"
        if at_ms < self.enrolled_at_ms:
            return "pending"
        return "active"

    def problem(self, at_ms: int) -> str | None:
        """Why the key may not sign at ``at_ms``, or None."""
        status = self.status(at_ms)
        if status == "retired":
            return (
                f"operator key {self.kid!r} ({self.label}) was retired at "
                f"{iso_ms(self.retired_at_ms)}: {self.retire_reason}"
            )
        if status == "expired":
            return (
                f"operator key {self.kid!r} ({self.label}) expired at {iso_ms(self.not_after_ms)}"
            )
        if status == "pending":
            return (
                f"operator key {self.kid!r} ({self.label}) is enrolled only from "
                f"{iso_ms(self.enrolled_at_ms)}"
            )
        return None

    def key_entry(self) -> KeyEntry:
        """As a keyset entry: trusted from the enrolment until expiry or retirement."""
        return KeyEntry(self.kid, self.public_key, self.enrolled_at_ms, self.until_ms)

    def public_jwk(self) -> dict[str, Any]:
        """The key as a JWK, with its window (``nbf``, ``retired_at``) and label."""
        jwk: dict[str, Any] = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.x,
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
            "nbf": self.enrolled_at_ms,
            "label": self.label,
        }
        if self.until_ms is not None:
            jwk["retired_at"] = self.until_ms
        return jwk


class EnrolledOperators(Mapping[str, EnrolledOperator]):
    """The operator keys enrolled on ``control``, by key id, and the handlers of the
    ``operator.*`` kinds (:class:`~processors.control.state.ControlState` installs them).

    One writer (the state's); readers on other threads see whole entries, replaced on
    every change."""

    def __init__(self, roots: Keyset) -> None:
        self.roots = roots
        self._entries: dict[str, EnrolledOperator] = {}

    def __getitem__(self, kid: str) -> EnrolledOperator:
        return self._entries[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def key_for(self, kid: str, at_ms: int) -> Ed25519PublicKey:
        """The public key of enrolled key ``kid`` if it may sign at ``at_ms``; raises
        :class:`UnknownKeyError` with the reason otherwise."""
        entry = self._entries.get(kid)
        if entry is None:
            raise UnknownKeyError(f"no operator key {kid!r} was enrolled")
        problem = entry.problem(at_ms)
        if problem is not None:
            raise UnknownKeyError(problem)
        return entry.public_key

    def active(self, at_ms: int) -> list[EnrolledOperator]:
        """The keys that may sign at ``at_ms``, oldest enrolment first."""
        entries = list(self._entries.values())
        return sorted(
            (e for e in entries if e.status(at_ms) == "active"), key=lambda e: e.enrolled_at_ms
        )

    # -- the handlers ----------------------------------------------------------------

    def _root_signer(self, ctx: ControlContext) -> None:
        """(1) only a root key valid at the command's time enrols or retires keys."""
        try:
            self.roots.key_for(ctx.key_id, ctx.now_ms)
        except KeyError_ as exc:
            if ctx.key_id in self._entries:
                raise Refused(
                    f"{ctx.kind} must be signed by a root operator key (the operator keyset "
                    f"file); {ctx.key_id!r} is an enrolled key, and enrolled keys cannot enrol "
                    "or retire operator keys"
                ) from None
            raise Refused(
                f"{ctx.kind} must be signed by a root operator key valid at "
                f"{iso_ms(ctx.now_ms)}: {exc.reason}"
            ) from None

    def enroll(self, payload: dict[str, Any], ctx: ControlContext) -> str:
        """``operator.enroll``: trust key ``kid`` from the command's append time on."""
        check_members(payload, ctx.kind, {"kid", "x", "label"}, {"not_after_ms"})
        self._root_signer(ctx)
        operator_subject(payload)  # the kid's shape (the subject rule checked it too)
        kid = str(payload["kid"])
        try:
            public = parse_operator_key(payload["x"], kid)
            label = check_label(payload["label"])
        except OperatorKeyError as exc:
            raise Refused(f"{ctx.kind}: {exc.reason}") from None
        not_after = payload.get("not_after_ms")
        if not_after is not None:
            if isinstance(not_after, bool) or not isinstance(not_after, int):
                raise Refused("payload.not_after_ms must be an integer (ms since the epoch)")
            if not ctx.now_ms < not_after <= MAX_SEQUENCE:
                raise Refused(
                    f"payload.not_after_ms ({iso_ms(not_after)}) must lie after the enrolment "
                    f"({iso_ms(ctx.now_ms)})"
                )
        if kid in self.roots:
            raise Refused(f"{kid!r} is a root operator key already (the operator keyset file)")
        raw = raw_public_key(public)
        for root in self.roots.values():
            if raw_public_key(root.public_key) == raw:
                raise Refused(f"this public key is root operator key {root.kid!r} already")
        existing = self._entries.get(kid)
        if existing is not None:
            if existing.retired_at_ms is not None:
                raise Refused(
                    f"operator key {kid!r} ({existing.label}) was retired at "
                    f"{iso_ms(existing.retired_at_ms)}; a retired key stays retired: "
                    "generate a new key and enrol that one"
                )
            raise Refused(
                f"operator key {kid!r} is enrolled already (as {existing.label!r}, since "
                f"{iso_ms(existing.enrolled_at_ms)}); to change it, retire it and enrol a "
                "new key"
            )
        self._entries[kid] = EnrolledOperator(
            kid=kid,
            x=str(payload["x"]),
            public_key=public,
            label=label,
            enrolled_at_ms=ctx.now_ms,
            enrolled_by=ctx.key_id,
            command_id=ctx.command_id,
            not_after_ms=not_after,
        )
        until = f" until {iso_ms(not_after)}" if not_after is not None else ""
        return f"enrolled operator key {kid!r} ({label}) from {iso_ms(ctx.now_ms)}{until}"

    def retire(self, payload: dict[str, Any], ctx: ControlContext) -> str:
        """``operator.retire``: stop trusting enrolled key ``kid`` from the command's
        append time on (its earlier commands still verify)."""
        check_members(payload, ctx.kind, {"kid", "reason"})
        self._root_signer(ctx)
        kid = str(payload["kid"])
        reason = reason_of(payload, ctx.kind, required=True)
        existing = self._entries.get(kid)
        if existing is None:
            if kid in self.roots:
                raise Refused(
                    f"{kid!r} is a root operator key: retire it in the operator keyset file "
                    "(retired_at), not with a command"
                )
            raise Refused(f"no operator key {kid!r} was enrolled; nothing to retire")
        if existing.retired_at_ms is not None:
            return (
                f"operator key {kid!r} ({existing.label}) was already retired at "
                f"{iso_ms(existing.retired_at_ms)}"
            )
        self._entries[kid] = replace(
            existing, retired_at_ms=ctx.now_ms, retired_by=ctx.key_id, retire_reason=reason
        )
        return f"retired operator key {kid!r} ({existing.label}) at {iso_ms(ctx.now_ms)}: {reason}"


class OperatorKeys:
    """Every operator key a command may be signed with: the root keyset first, then the
    enrolled keys. What :class:`~processors.control.history.CommandVerifier` asks."""

    def __init__(self, roots: Keyset, enrolled: EnrolledOperators | None = None) -> None:
        self.roots = roots
        self.enrolled = enrolled

    def key_for(self, kid: str, at_ms: int) -> Ed25519PublicKey:
        """The public key of operator key ``kid`` trusted at ``at_ms``; raises
        :class:`UnknownKeyError` with the most telling reason otherwise."""
        try:
            return self.roots.key_for(kid, at_ms)
        except KeyError_ as exc:
            if self.enrolled is None or kid not in self.enrolled:
                raise UnknownKeyError(exc.reason, hint=exc.hint) from None
        return self.enrolled.key_for(kid, at_ms)

    def is_root(self, kid: str) -> bool:
        return kid in self.roots

    def __contains__(self, kid: object) -> bool:
        return kid in self.roots or (self.enrolled is not None and kid in self.enrolled)

    def __len__(self) -> int:
        return len(self.roots) + (len(self.enrolled) if self.enrolled is not None else 0)
