"""Identity: every intent is signed by a registered, currently valid key of its agent.

Intent signing payload (version 1)
==================================

An agent signs each intent with its Ed25519 key (RFC 8032 pure Ed25519, no pre-hash),
in any language, like this:

1. **Body.** Build a JSON object with exactly these 14 members, taken from the Intent
   record (``schemas/intent.avsc``) that will be published::

       intent_id, agent_id,
       runtime   {runtime_id, code_digest, config_digest, environment, host},
       action, resource,
       parameters {name: value, ...},    context {name: value, ...},
       sequence, issued_at_ms, expires_at_ms, nonce, key_id

   Every field of the record except ``signature``; ``runtime`` is a nested object with
   its 5 fields, ``parameters`` and ``context`` are JSON objects (``context`` is ``{}``
   when there is none). No other members: a field added to the schema later is not
   signed unless a new payload type says so. ``key_id`` **is** signed, so a signature
   cannot be re-attributed to another key.
2. **Canonical form.** Serialize the object with RFC 8785, the JSON Canonicalization
   Scheme (JCS): members sorted by the UTF-16 code units of their names (recursively),
   no white space, UTF-8, strings with the minimal JSON escapes, numbers as ECMAScript
   prints them (``1250.75``, ``3``, ``1e+21``; the double ``10.0`` is ``10``). Avro
   ``long`` values (``sequence``, the times, long parameters) must be within
   ±(2^53 - 1) and doubles must be finite, otherwise the intent has no canonical form
   and cannot be signed: send such values as strings. These bytes are *body*.
3. **Message.** ``message = PAE(payloadType, body)``, the DSSE v1 pre-authentication
   encoding::

       "DSSEv1" SP LEN(payloadType) SP payloadType SP LEN(body) SP body

   with ``SP`` one 0x20 byte, ``LEN`` the length in bytes as ASCII decimal, and
   ``payloadType = "application/vnd.trustplane.intent+json"``.
4. **Signature.** ``signature = Ed25519-Sign(private_key, message)``: the raw 64 bytes go
   into the record's ``signature`` field (Avro ``bytes``; not base64, not an envelope).
   ``key_id`` names that key as it was registered for the agent (``agent.register``).

Go: ``crypto/ed25519`` and a JCS implementation (e.g. the reference implementations in
github.com/cyberphone/json-canonicalization, which also has Java); Java 15+:
``Signature.getInstance("Ed25519")``. ``tests/processors/test_identity.py`` holds a
known-answer vector (key, record, body, signature) to check an implementation against.

The gate's check (:class:`IdentityCheck`) denies, with the reason: an unknown or revoked
agent, a key id the agent does not have, a revoked key, a key outside its validity window
(at the gate's clock), a missing signature or one that is not 64 bytes, an intent with no
canonical form, and a signature that does not verify over this intent's message.

Speed: ``rfc8785`` is pure Python (~35-60 µs for a typical intent on a
2-core CI machine; the fast path ~9 µs).
:func:`canonical_intent_body` uses the C JSON encoder when that provably gives the same
bytes -- every number an integer within ±(2^53 - 1), an integral double in that range
(written as the integer), or a non-integral double in [1e-4, 1e16) (where Python's
``repr`` and ECMAScript agree); every object key ASCII (where code-point and UTF-16
ordering agree) -- and ``rfc8785`` otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from processors.control.registry import AgentDirectory, iso_ms
from processors.crypto.jcs import CanonicalizationError, canonical_json
from processors.crypto.keys import SignatureError, SigningKey, verify_signature
from processors.intent import Intent
from processors.verdict import GateState, Verdict

__all__ = [
    "INTENT_PAYLOAD_TYPE",
    "SIGNED_FIELDS",
    "RUNTIME_FIELDS",
    "SIGNATURE_SIZE",
    "IdentityCheck",
    "canonical_intent_body",
    "intent_signing_body",
    "intent_signing_message",
    "signing_message_for",
    "sign_intent",
]

LAYER = "identity"
INTENT_PAYLOAD_TYPE = "application/vnd.trustplane.intent+json"
SIGNATURE_SIZE = 64
RUNTIME_FIELDS = ("runtime_id", "code_digest", "config_digest", "environment", "host")
SIGNED_FIELDS = (
    "intent_id",
    "agent_id",
    "runtime",
    "action",
    "resource",
    "parameters",
    "context",
    "sequence",
    "issued_at_ms",
    "expires_at_ms",
    "nonce",
    "key_id",
)
"""The members of the signed body, in schema order (the body itself is sorted by JCS)."""

_PAE_PREFIX = b"DSSEv1 %d %b " % (len(INTENT_PAYLOAD_TYPE), INTENT_PAYLOAD_TYPE.encode())
_MAX_SAFE_INT = 2**53 - 1
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


# -- the signing payload ------------------------------------------------------------


def _plain_scalar(value: object) -> bool:
    """True when the C JSON encoder writes ``value`` exactly as RFC 8785 does."""
    if value is None or type(value) is str or type(value) is bool:
        return True
    if type(value) is int:
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    if type(value) is float:
        # repr() of a non-integral double in [1e-4, 1e16) is plain decimal notation with
        # the shortest round-trip digits, which is what ECMAScript's Number::toString
        # prints; outside that range, or for integral values ("10.0" vs "10"), it is not.
        # NaN and infinities fail the range test.
        return 1e-4 <= abs(value) < 1e16 and not value.is_integer()
    return False


def _fast_body(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``body`` (or a copy with integral doubles as ints) if the C encoder gives its exact
    RFC 8785 bytes; None if it might not."""
    copied: dict[str, Any] | None = None
    for name, value in body.items():
        if type(value) is dict:
            fixed: dict[str, Any] | None = None
            for key, item in value.items():
                if type(key) is not str or not key.isascii():
                    return None
                if _plain_scalar(item):
                    continue
                # An integral double within ±(2^53 - 1) prints as that integer in ECMAScript
                # (every such integer is a double, so no shorter digit string rounds to it).
                if type(item) is float and item.is_integer() and abs(item) <= _MAX_SAFE_INT:
                    if fixed is None:
                        fixed = dict(value)
                    fixed[key] = int(item)
                    continue
                return None
            if fixed is not None:
                if copied is None:
                    copied = dict(body)
                copied[name] = fixed
        elif not _plain_scalar(value):
            return None
    return body if copied is None else copied


def canonical_intent_body(body: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of a signing body (one level of nested objects, scalar leaves).

    Byte-identical to :func:`processors.crypto.dsse.canonical_json`, faster for typical intents.
    Raises :class:`CanonicalizationError` for values RFC 8785 cannot represent.
    """
    fast = _fast_body(body)
    if fast is not None:
        try:
            return _ENCODER.encode(fast).encode("utf-8")
        except (UnicodeEncodeError, ValueError, TypeError):
            pass  # lone surrogates and the like: let rfc8785 give the reason
    return canonical_json(body)


def _as_object(value: object, where: str) -> dict[str, Any]:
    if type(value) is dict:
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise CanonicalizationError(
        f"the intent's {where} must be an object (a map), not {type(value).__name__}"
    )


def _body_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
    missing = [name for name in SIGNED_FIELDS if name not in record and name != "context"]
    if missing:
        raise CanonicalizationError(
            f"the intent record has no {', '.join(missing)} field(s); every field of "
            "schemas/intent.avsc except signature is signed"
        )
    runtime = record["runtime"]
    if not isinstance(runtime, Mapping):
        raise CanonicalizationError(
            f"the intent's runtime must be an object, not {type(runtime).__name__}"
        )
    absent = [name for name in RUNTIME_FIELDS if name not in runtime]
    if absent:
        raise CanonicalizationError(f"the intent's runtime has no {', '.join(absent)} field(s)")
    return {
        "intent_id": record["intent_id"],
        "agent_id": record["agent_id"],
        "runtime": {name: runtime[name] for name in RUNTIME_FIELDS},
        "action": record["action"],
        "resource": record["resource"],
        "parameters": _as_object(record["parameters"], "parameters"),
        "context": _as_object(record.get("context") or {}, "context"),
        "sequence": record["sequence"],
        "issued_at_ms": record["issued_at_ms"],
        "expires_at_ms": record["expires_at_ms"],
        "nonce": record["nonce"],
        "key_id": record["key_id"],
    }


def _body_from_intent(intent: Intent) -> dict[str, Any]:
    runtime = intent.runtime
    return {
        "intent_id": intent.intent_id,
        "agent_id": intent.agent_id,
        "runtime": {
            "runtime_id": runtime.runtime_id,
            "code_digest": runtime.code_digest,
            "config_digest": runtime.config_digest,
            "environment": runtime.environment,
            "host": runtime.host,
        },
        "action": intent.action,
        "resource": intent.resource,
        "parameters": _as_object(intent.parameters, "parameters"),
        "context": _as_object(intent.context, "context"),
        "sequence": intent.sequence,
        "issued_at_ms": intent.issued_at_ms,
        "expires_at_ms": intent.expires_at_ms,
        "nonce": intent.nonce,
        "key_id": intent.key_id,
    }


def _message(body: bytes) -> bytes:
    # pae(INTENT_PAYLOAD_TYPE, body), with the constant prefix computed once
    return b"%b%d %b" % (_PAE_PREFIX, len(body), body)


def intent_signing_body(record: Mapping[str, Any]) -> bytes:
    """The canonical JSON body of an Intent record (step 1 and 2 of the spec above)."""
    return canonical_intent_body(_body_from_record(record))


def intent_signing_message(record: Mapping[str, Any]) -> bytes:
    """The bytes an agent signs for this Intent record: PAE(payloadType, body)."""
    return _message(intent_signing_body(record))


def signing_message_for(intent: Intent) -> bytes:
    """The same bytes as :func:`intent_signing_message`, from a validated Intent."""
    return _message(canonical_intent_body(_body_from_intent(intent)))


def sign_intent(record: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """A copy of the Intent record with ``key_id = key.kid`` and its signature set."""
    signed = dict(record)
    for name in ("runtime", "parameters", "context"):
        if isinstance(signed.get(name), Mapping):
            signed[name] = dict(signed[name])
    signed["key_id"] = key.kid
    signed["signature"] = key.sign(intent_signing_message(signed))
    return signed


# -- the layer ----------------------------------------------------------------------


class IdentityCheck:
    """Deny any intent not signed by a valid, unrevoked, registered key of its agent.

    Reads the registry from an :class:`AgentDirectory` (the live ``ControlState``), so
    registrations and revocations apply from the next intent on. Public keys are parsed
    once, at registration. ``evaluate`` does not raise on purpose.
    """

    name = LAYER

    def __init__(self, directory: AgentDirectory) -> None:
        self._directory = directory

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        agent_id = intent.agent_id
        kid = intent.key_id
        agent = self._directory.agents.get(agent_id)
        if agent is None:
            return Verdict.deny(
                LAYER, f"agent {agent_id!r} is not registered", agent_id=agent_id, kid=kid
            )
        if agent.status == "revoked":
            return Verdict.deny(
                LAYER,
                f"agent {agent_id!r} was revoked at {iso_ms(agent.status_since_ms)}: "
                f"{agent.status_reason or 'no reason given'}",
                agent_id=agent_id,
                kid=kid,
            )
        key = agent.keys.get(kid)
        if key is None:
            known = ", ".join(sorted(agent.keys)) or "none"
            return Verdict.deny(
                LAYER,
                f"key {kid!r} is not a registered key of agent {agent_id!r} (its keys: {known})",
                agent_id=agent_id,
                kid=kid,
            )
        if key.revoked_at_ms is not None:
            return Verdict.deny(
                LAYER,
                f"key {kid!r} of agent {agent_id!r} was revoked at {iso_ms(key.revoked_at_ms)}",
                agent_id=agent_id,
                kid=kid,
            )
        problem = key.window_problem(state.now_ms)
        if problem is not None:
            return Verdict.deny(LAYER, f"{problem}", agent_id=agent_id, kid=kid)
        signature = intent.signature
        if signature is None or len(signature) == 0:
            return Verdict.deny(
                LAYER,
                f"the intent is not signed; sign it with key {kid!r} "
                f"(payload type {INTENT_PAYLOAD_TYPE})",
                agent_id=agent_id,
                kid=kid,
            )
        if len(signature) != SIGNATURE_SIZE:
            return Verdict.deny(
                LAYER,
                f"the signature is {len(signature)} bytes; an Ed25519 signature is "
                f"{SIGNATURE_SIZE} raw bytes (not base64, not an envelope)",
                agent_id=agent_id,
                kid=kid,
            )
        try:
            message = signing_message_for(intent)
        except CanonicalizationError as exc:
            return Verdict.deny(
                LAYER,
                f"the intent has no canonical signing payload: {exc.reason}",
                agent_id=agent_id,
                kid=kid,
            )
        try:
            verify_signature(key.public_key, bytes(signature), message)
        except SignatureError:
            return Verdict.deny(
                LAYER,
                f"the signature does not verify with key {kid!r} of agent {agent_id!r}: "
                "it was made over other bytes (a field changed after signing, or the "
                "signer built the payload differently) or with another key",
                agent_id=agent_id,
                kid=kid,
            )
        return Verdict.allow(
            LAYER, f"signed by key {kid!r} of agent {agent_id!r}", agent_id=agent_id, kid=kid
        )
