"""The browser's signing module (static/tpsign.js), run in Node's WebCrypto, produces
commands the workers' verifier accepts, and the canonical JSON Python produces."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from processors.control.commands import CONTROL_PAYLOAD_TYPE, ChainLink
from processors.control.history import CommandVerifier
from processors.crypto.dsse import pae
from processors.crypto.jcs import canonical_json
from processors.crypto.keys import KeyEntry, Keyset, jwk_thumbprint

STATIC = Path(__file__).resolve().parents[3] / "streams" / "console" / "static"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

PAYLOADS = [
    {"scope": "agent", "target": "billing-assistant", "reason": "drill <script>alert(1)</script>"},
    {"intent_id": "i-1", "reason": "é 😀 \u2028 \u0007 ｡"},
    {
        "numbers": [0, -0.0, 1.5, 9007199254740991, 1e-7],
        "nested": {"b": 1, "a": [True, None]},
    },
    {"😀": 1, "｡": 2, "a": 3, "\u00e9": 4},
]


def _node(script: str) -> dict:
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script],  # type: ignore[list-item]
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _sign_in_node(payloads: list[dict], link: ChainLink) -> dict:
    module = (STATIC / "tpsign.js").as_uri()
    prepared = {
        "subject": "killswitch/agent/billing-assistant",
        "sequence": link.sequence,
        "previous": link.previous,
        "now_ms": 1_764_500_000_000,
        "issued_by": "ada",
    }
    return _node(
        f"""
import {{ canonicalize, publicIdentity, signCommand }} from {json.dumps(module)};
const pair = await crypto.subtle.generateKey({{name: "Ed25519"}}, false, ["sign", "verify"]);
const id = await publicIdentity(pair.publicKey);
const key = {{ privateKey: pair.privateKey, kid: id.kid }};
const payloads = {json.dumps(payloads)};
const out = {{ x: id.x, kid: id.kid, canonical: payloads.map(canonicalize), signed: [] }};
const signed = await signCommand(key, "killswitch.engage", payloads[0], {json.dumps(prepared)});
out.signed.push(signed);
console.log(JSON.stringify(out));
"""
    )


def test_canonical_json_matches_python_rfc8785() -> None:
    result = _sign_in_node(PAYLOADS, ChainLink.first())
    for payload, text in zip(PAYLOADS, result["canonical"], strict=True):
        assert text.encode() == canonical_json(json.loads(json.dumps(payload)))


def test_a_browser_signed_command_verifies_with_the_workers_verifier() -> None:
    result = _sign_in_node(PAYLOADS, ChainLink.first())
    raw = base64.urlsafe_b64decode(result["x"] + "==")
    public = Ed25519PublicKey.from_public_bytes(raw)
    assert result["kid"] == jwk_thumbprint(public)
    verifier = CommandVerifier(Keyset([KeyEntry(result["kid"], public)]))
    record = dict(result["signed"][0]["record"])
    record["signature"] = base64.b64decode(record["signature"])
    verified = verifier.verify(record, record["issued_at_ms"])
    assert verified.digest == result["signed"][0]["digest"]
    assert verified.command_id == record["command_id"]


def test_a_tampered_browser_command_is_refused() -> None:
    from processors.control.commands import Refused

    result = _sign_in_node(PAYLOADS, ChainLink.first())
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(result["x"] + "=="))
    verifier = CommandVerifier(Keyset([KeyEntry(result["kid"], public)]))
    record = dict(result["signed"][0]["record"])
    record["signature"] = base64.b64decode(record["signature"])
    record["issued_by"] = "mallory"
    with pytest.raises(Refused):
        verifier.verify(record, record["issued_at_ms"])


def test_pae_counts_bytes_not_characters() -> None:
    module = (STATIC / "tpsign.js").as_uri()
    body = "é😀"
    result = _node(
        f"""
import {{ pae }} from {json.dumps(module)};
const out = pae({json.dumps(CONTROL_PAYLOAD_TYPE)}, new TextEncoder().encode({json.dumps(body)}));
console.log(JSON.stringify({{ hex: Buffer.from(out).toString("hex") }}));
"""
    )
    assert bytes.fromhex(result["hex"]) == pae(CONTROL_PAYLOAD_TYPE, body.encode())
