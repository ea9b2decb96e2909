"""The Proof Viewer's verifiers (static/proofs.js), run in Node's WebCrypto: the RFC 9162
vectors, Go's signed-note known answer, and real approvals, lineage events, proofs and
checkpoints made by the Python code, genuine (PASS) and tampered (FAIL, naming the step).

Each test sends its cases to one ``node`` run (a batch), so the module stays fast.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from processors.approval import (
    PAYLOAD_TYPE,
    ApprovalSigner,
    KeyringEntry,
    LineagePosition,
    SigningKeyring,
    parameters_digest,
    verify_approval,
)
from processors.crypto.dsse import sign_envelope
from processors.crypto.jcs import CanonicalizationError, canonical_json
from processors.crypto.keys import KeyEntry, Keyset, generate_signing_key, jwk_thumbprint
from processors.intent import Intent
from processors.lineage import LineageRecorder
from processors.log.attest import sign_event, verify_event_signature
from processors.log.chain import compute_event_hash, leaf_bytes, link, verify_chain
from processors.log.checkpoint import Checkpoint, NoteSigner, open_note, sign_checkpoint
from processors.log.merkle import MerkleLog, leaf_hash
from processors.log.notary import Notary
from streams.cli.proof import verify_inclusion_answer
from streams.codec import MAGIC, default_codec
from streams.console.evidence import EVIDENCE_FORMAT
from streams.notary.log import event_json
from tests.processors.approval.test_approval import approved
from tests.processors.factories import intent_record
from tests.processors.log.test_chain import make_event
from tests.processors.log.test_checkpoint import (
    ENOCH_SIG,
    ENOCH_VKEY,
    GO_NOTE,
    PETER_SIG,
    PETER_VKEY,
    TEXT,
)

ROOT = Path(__file__).resolve().parents[3]
MODULE = (ROOT / "streams" / "console" / "static" / "proofs.js").as_uri()
VECTORS = ROOT / "tests" / "data" / "rfc9162-vectors"
SCHEMAS = ROOT / "schemas"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

ORIGIN = "lineage.trustplane.example/proofs"
NOW = 1_700_000_000_000
TTL = 120_000
CHECK_AT = NOW + 1_000

# Runs [fn, *args] calls against proofs.js. {"$b64": …} arguments become Uint8Array and
# {"$big": "…"} BigInt; results come back the same way. A call that throws is reported
# as {"threw": …}: proofs.js promises never to throw, so the tests fail on it.
DRIVER = f"""
import * as P from {json.dumps(MODULE)};
import {{ readFileSync }} from "node:fs";
const revive = (v) =>
  Array.isArray(v) ? v.map(revive)
  : v && typeof v === "object"
    ? "$b64" in v ? Uint8Array.from(Buffer.from(v.$b64, "base64"))
    : "$big" in v ? BigInt(v.$big)
    : Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]))
  : v;
const plain = (v) =>
  v instanceof Uint8Array ? {{ $b64: Buffer.from(v).toString("base64") }}
  : typeof v === "bigint" ? {{ $big: String(v) }}
  : v instanceof Map ? plain(Object.fromEntries(v))
  : Array.isArray(v) ? v.map(plain)
  : v && typeof v === "object"
    ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]))
  : v;
const out = [];
for (const [fn, ...args] of JSON.parse(readFileSync(0, "utf8"))) {{
  try {{
    out.push({{ value: plain(fn === "$const" ? P[args[0]] : await P[fn](...args.map(revive))) }});
  }} catch (error) {{
    out.push({{ threw: String((error && error.stack) || error) }});
  }}
}}
process.stdout.write(JSON.stringify(out));
"""


def _b(data: bytes) -> dict[str, str]:
    return {"$b64": base64.b64encode(data).decode()}


def _unb(value: dict[str, str]) -> bytes:
    return base64.b64decode(value["$b64"])


def run(calls: list[list[Any]]) -> list[Any]:
    """One node process for all ``calls``; their results in order."""
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", DRIVER],  # type: ignore[list-item]
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == len(calls)
    thrown = [(call[0], r["threw"]) for call, r in zip(calls, results, strict=True) if "threw" in r]
    assert not thrown, f"proofs.js threw (it must return failing steps instead): {thrown}"
    return [r["value"] for r in results]


def failed(steps: list[dict[str, Any]]) -> dict[str, str]:
    return {s["id"]: s["reason"] for s in steps if not s["ok"]}


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 1 << bit
    return bytes(changed)


# -- 1. RFC 9162 ------------------------------------------------------------------------


def test_every_rfc9162_vector_passes_and_every_negative_case_fails() -> None:
    check_rfc9162_vectors(run)


def check_rfc9162_vectors(run: Callable[[list[list[Any]]], list[Any]]) -> None:
    """The RFC 9162 vectors through ``run`` (Node here; Chromium in tests/browser)."""
    files = sorted(VECTORS.rglob("*.json"))
    assert len(files) == 196, "the RFC 9162 vectors (tests/data/rfc9162-vectors) are missing"
    vectors = [json.loads(path.read_text()) for path in files]
    calls = []
    for v in vectors:
        proof = v["proof"] or []
        if "leafIdx" in v:  # sizes as text: 2^64 - 1 has no exact JavaScript number
            args = [v["leafHash"], str(v["leafIdx"]), str(v["treeSize"]), proof, v["root"]]
            calls.append(["verifyInclusion", *args])
        else:
            args = [str(v["size1"]), str(v["size2"]), proof, v["root1"], v["root2"]]
            calls.append(["verifyConsistency", *args])
    results = run(calls)
    wrong = [
        f"{path.relative_to(VECTORS)} ({v['desc']}): wantErr={v['wantErr']}, got {r}"
        for path, v, r in zip(files, vectors, results, strict=True)
        if r["ok"] == v["wantErr"]
    ]
    assert not wrong, "\n".join(wrong)
    assert sum(not v["wantErr"] for v in vectors) >= 10 and sum(v["wantErr"] for v in vectors) > 100
    assert all(r["reason"] for r in results)


def test_merkle_proofs_of_the_python_log_verify_and_altered_ones_do_not() -> None:
    log = MerkleLog()
    leaves = [f"leaf {n}".encode() for n in range(20)]
    for leaf in leaves:
        log.append(leaf)
    calls: list[list[Any]] = [["leafHash", _b(leaves[3])]]
    expect: list[bool] = [True]
    for size in range(1, 21):
        root = _b(log.root(size))
        for index in range(size):
            path = [_b(h) for h in log.inclusion_proof(index, size)]
            calls.append(["verifyInclusion", _b(log.leaf_hash(index)), index, size, path, root])
            expect.append(True)
        for old in range(1, size + 1):
            proof = [_b(h) for h in log.consistency_proof(old, size)]
            calls.append(["verifyConsistency", old, size, proof, _b(log.root(old)), root])
            expect.append(True)
    # wrong leaf, wrong index, a flipped path bit, a root of another size
    path = [_b(h) for h in log.inclusion_proof(5, 13)]
    bad_path = [path[0], _b(flip(log.inclusion_proof(5, 13)[1], 7)), *path[2:]]
    calls += [
        ["verifyInclusion", _b(log.leaf_hash(6)), 5, 13, path, _b(log.root(13))],
        ["verifyInclusion", _b(log.leaf_hash(5)), 6, 13, path, _b(log.root(13))],
        ["verifyInclusion", _b(log.leaf_hash(5)), 5, 13, bad_path, _b(log.root(13))],
        ["verifyInclusion", _b(log.leaf_hash(5)), 5, 13, path, _b(log.root(12))],
        [
            "verifyConsistency",
            7,
            13,
            [_b(h) for h in log.consistency_proof(7, 13)],
            _b(log.root(6)),
            _b(log.root(13)),
        ],
        [
            "verifyConsistency",
            7,
            13,
            [_b(h) for h in log.consistency_proof(6, 13)],
            _b(log.root(7)),
            _b(log.root(13)),
        ],
    ]
    expect += [False] * 6
    results = run(calls)
    assert _unb(results[0]) == leaf_hash(leaves[3])
    assert [r["ok"] for r in results[1:]] == expect[1:]


# -- 2. C2SP signed notes ------------------------------------------------------------------


def test_go_signed_note_known_answer_verifies_and_a_flipped_bit_fails() -> None:
    check_go_note(run)


def check_go_note(run: Callable[[list[list[Any]]], list[Any]]) -> None:
    """Go's signed-note known answer through ``run`` (Node here; Chromium in tests/browser)."""
    blob = base64.b64decode(PETER_SIG.split(" ")[2])
    sig_flipped = (
        TEXT + "\n" + "— PeterNeumann " + base64.b64encode(flip(blob, 20, 3)).decode() + "\n"
    )
    kid_flipped = TEXT + "\n" + "— PeterNeumann " + base64.b64encode(flip(blob, 1)).decode() + "\n"
    text_flipped = [
        GO_NOTE[:n] + chr(ord(GO_NOTE[n]) ^ 1) + GO_NOTE[n + 1 :] for n in (0, 30, 60, 90)
    ]
    vkey_data = base64.b64decode(PETER_VKEY.split("+")[2])
    bad_vkey = "PeterNeumann+c74f20a3+" + base64.b64encode(flip(vkey_data, 9)).decode()
    long_sig = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]  # Go's "invalid signature" case
    calls: list[list[Any]] = [
        ["parseVerifierKey", PETER_VKEY],
        ["openNote", GO_NOTE, PETER_VKEY],
        ["openNote", TEXT + "\n" + ENOCH_SIG + PETER_SIG, PETER_VKEY],
        ["openNote", TEXT + "\n" + PETER_SIG + ENOCH_SIG, ENOCH_VKEY],
        ["openNote", _b(GO_NOTE.encode()), PETER_VKEY],
        ["openNote", sig_flipped, PETER_VKEY],
        ["openNote", kid_flipped, PETER_VKEY],
        *[["openNote", note, PETER_VKEY] for note in text_flipped],
        ["openNote", TEXT + "\n" + ENOCH_SIG, PETER_VKEY],
        ["openNote", TEXT + "\n" + long_sig, PETER_VKEY],
        ["parseVerifierKey", bad_vkey],
        ["verifyNote", GO_NOTE, PETER_VKEY],
    ]
    (key, go, both, enoch, as_bytes, sig_bad, kid_bad, *rest) = run(calls)
    texts_bad, (enoch_only, too_long, vkey_bad, not_checkpoint) = rest[:4], rest[4:]
    assert key["ok"] and key["keyIdHex"] == "c74f20a3" and key["name"] == "PeterNeumann"
    assert key["vkey"] == PETER_VKEY
    assert go == {"ok": True, "text": TEXT, "reason": "signed by PeterNeumann+c74f20a3"}
    assert both["ok"] and enoch["ok"] and as_bytes["ok"]
    assert not sig_bad["ok"] and "does not verify" in sig_bad["reason"]
    assert not kid_bad["ok"] and "no signature by the pinned key" in kid_bad["reason"]
    for result in texts_bad:
        assert not result["ok"], result
        assert re.search("does not verify|no signature by the pinned key|em dash", result["reason"])
    assert not enoch_only["ok"] and "EnochRoot+af0cfe78" in enoch_only["reason"]
    assert not too_long["ok"] and "67 bytes" in too_long["reason"]
    assert not vkey_bad["ok"] and "does not match the name and key" in vkey_bad["reason"]
    assert not not_checkpoint["ok"] and "at least 3 lines" in not_checkpoint["reason"]


# -- 3. the Intent in Avro -----------------------------------------------------------------


def _intent_schema_forms() -> dict[str, str]:
    forms = {}
    for path in [SCHEMAS / "intent.avsc", *sorted((SCHEMAS / "history").glob("intent*.avsc"))]:
        form = to_parsing_canonical_form(json.loads(path.read_text()))
        forms[fingerprint(form, "CRC-64-AVRO")] = form
    return forms


def _v0_record(record: dict[str, Any]) -> bytes:
    path = SCHEMAS / "history" / "intent.v0.avsc"
    raw = json.loads(path.read_text())
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))
    body = io.BytesIO()
    v0 = {k: v for k, v in record.items() if k not in ("context", "signature")}
    fastavro.schemaless_writer(body, fastavro.parse_schema(raw), v0)
    return MAGIC + fp + body.getvalue()


PARAMETER_SETS: list[dict[str, Any]] = [
    {"amount": 10.5, "currency": "EUR"},
    {"n": 9007199254740991, "neg": -42, "zero": 0, "t": True, "f": False, "none": None},
    {"big": 1e21, "tiny": 1e-7, "minus_zero": -0.0, "whole": 5.0, "pi": 3.141592653589793},
    {"é": "é😀 \u2028", "😀": "", "a": "x", "__proto__": "p", "": "empty key"},
    {},
]


def test_the_intent_schemas_in_proofs_js_are_the_schema_files() -> None:
    (schemas,) = run([["$const", "INTENT_SCHEMAS"]])
    assert schemas == _intent_schema_forms()


def test_intents_decode_as_python_encodes_them_and_parameters_digest_alike() -> None:
    codec = default_codec()
    records = [intent_record(parameters=p, context={"ticket": "T-1"}) for p in PARAMETER_SETS]
    encoded = [codec.encode("Intent", r) for r in records] + [_v0_record(records[1])]
    calls: list[list[Any]] = [["decodeIntent", _b(data)] for data in encoded]
    calls += [["parametersDigest", p] for p in PARAMETER_SETS]
    # beyond 2^53: Python refuses to digest it (the gate will not sign it); so does JS
    unsafe = codec.encode("Intent", intent_record(parameters={"n": 2**53 + 1}))
    good = encoded[0]
    broken = [
        unsafe,
        good[:-1],
        good + b"\x00",
        b"\x00" + good[1:],
        good[:2] + bytes(8) + good[10:],
    ]
    calls += [["decodeIntent", _b(data)] for data in broken]
    results = run(calls)
    decoded, digests = results[: len(encoded)], results[len(encoded) : len(encoded) + 5]
    for data, result in zip(encoded, decoded, strict=True):
        assert result["ok"], result
        expected = codec.decode(data, "Intent")
        record = result["record"]
        assert canonical_json(record["parameters"]) == canonical_json(expected["parameters"])
        for field in ("intent_id", "agent_id", "runtime", "action", "resource", "nonce"):
            assert record[field] == expected[field]
    assert decoded[-1]["fingerprint"] == "e3d16ae8be51df58"  # the v0 record
    for parameters, result in zip(PARAMETER_SETS, digests, strict=True):
        assert result == {"ok": True, "digest": parameters_digest(parameters)}
    too_big, truncated, trailing, no_marker, unknown = results[len(encoded) + 5 :]
    with pytest.raises(CanonicalizationError):
        parameters_digest({"n": 2**53 + 1})
    assert too_big["ok"] and too_big["record"]["parameters"]["n"] == {"$big": str(2**53 + 1)}
    assert "ends early" in truncated["reason"]
    assert "1 bytes follow" in trailing["reason"]
    assert "marker" in no_marker["reason"]
    assert "0000000000000000" in unknown["reason"]
    (digest,) = run([["parametersDigest", {"n": {"$big": str(2**53 + 1)}}]])
    assert not digest["ok"] and "beyond 2^53" in digest["reason"]


# -- 4. real artifacts: approvals, lineage events, proofs, checkpoints ------------------------


@dataclass
class World:
    """An approved intent, its lineage in a notary's log, and an evidence bundle."""

    jwks: dict[str, Any]
    keyset: Keyset
    gate_key: Any
    signer: NoteSigner
    notary: Notary
    intent_bytes: bytes
    envelope: dict[str, Any]
    events: list[dict[str, Any]]  # every linked event of the log, as the notary serves them
    decision: int  # log index of the decision event
    execution: int
    note_a: str  # checkpoint of size 11
    note_b: str  # checkpoint of size 17
    bundle: dict[str, Any]

    def answer(self, index: int, size: int, note: str) -> dict[str, Any]:
        return {
            "event": copy.deepcopy(self.events[index]),
            "index": index,
            "proof": self.notary.prove_inclusion(index, size).to_dict(),
            "checkpoint": note,
        }

    def consistency(self, old: int, new: int) -> dict[str, Any]:
        return {"proof": self.notary.prove_consistency(old, new).to_dict()}

    def remembered(self, size: int) -> dict[str, Any]:
        root = self.notary.log.root(size)
        return {"origin": ORIGIN, "size": size, "rootHash": base64.b64encode(root).decode()}


def _sign_and_log(notary: Notary, event: dict[str, Any], key: Any) -> dict[str, Any]:
    """What the gate and the notary do: sign, Avro on the wire, log index, link."""
    codec = default_codec()
    full = codec.decode(codec.encode("LineageEvent", event), "LineageEvent")  # every field
    signed = codec.decode(codec.encode("LineageEvent", sign_event(full, key)), "LineageEvent")
    signed["log_index"] = notary.size
    _, linked = notary.append(signed)
    stored = codec.decode(codec.encode("LineageEvent", linked), "LineageEvent")
    return event_json(stored)


@pytest.fixture(scope="module")
def world() -> World:
    codec = default_codec()
    ring = SigningKeyring([KeyringEntry(generate_signing_key())])
    gate_key = ring.signing_key(NOW)
    record = intent_record(
        intent_id="intent-proof-1",
        parameters={"amount": 10.5, "currency": "EUR", "memo": "é😀", "n": 3, "urgent": True},
        context={"ticket": "T-7"},
    )
    intent_bytes = codec.encode("Intent", record)
    intent = Intent.from_record(codec.decode(intent_bytes, "Intent"), key=b"billing-agent")
    digest = "sha256:" + hashlib.sha256(intent_bytes).hexdigest()
    recorder = LineageRecorder("gate-1")
    subject = "intents/0/17"
    decision_id = recorder.decision_event_id(subject, "enforcement")
    envelope_bytes, _ = ApprovalSigner(ring).sign(
        intent,
        approved(),
        intent_digest=digest,
        approval_id="approval-proof-1",
        now_ms=NOW,
        ttl_ms=TTL,
        lineage=LineagePosition(decision_id),
    )
    signer = NoteSigner(ORIGIN, generate_signing_key())
    notary = Notary(ORIGIN, signer)
    events = [_sign_and_log(notary, make_event(n), gate_key) for n in range(5)]
    decided = recorder.decided(
        intent,
        digest,
        approved(),
        subject=subject,
        stage="enforcement",
        topic="approved",
        now_ms=NOW,
    )
    assert decided["event_id"] == decision_id
    events.append(_sign_and_log(notary, decided, gate_key))
    executed = recorder.event(
        subject="outcome:o-1",
        stage="execution",
        event_type="execution.reported",
        status="ok",
        now_ms=NOW + 500,
        intent_id=intent.intent_id,
        agent_id=intent.agent_id,
        reasons=("executed once",),
        attributes={
            "approval_id": "approval-proof-1",
            "executor_id": "ex-1",
            "outcome": "SUCCEEDED",
        },
    )
    events.append(_sign_and_log(notary, executed, gate_key))
    events += [_sign_and_log(notary, make_event(n), gate_key) for n in range(7, 11)]
    note_a = notary.checkpoint(NOW + 600)
    events += [_sign_and_log(notary, make_event(n), gate_key) for n in range(11, 17)]
    note_b = notary.checkpoint(NOW + 1200)
    w = World(
        jwks=ring.jwks(),
        keyset=ring.public_keyset(),
        gate_key=gate_key,
        signer=signer,
        notary=notary,
        intent_bytes=intent_bytes,
        envelope=json.loads(envelope_bytes),
        events=events,
        decision=5,
        execution=6,
        note_a=note_a,
        note_b=note_b,
        bundle={},
    )
    w.bundle = {
        "format": EVIDENCE_FORMAT,
        "created_at": "2023-11-14T22:13:21.000Z",
        "intent_id": intent.intent_id,
        "intent": {
            "record_b64": base64.b64encode(intent_bytes).decode(),
            "intent_digest": digest,
            "agent_id": intent.agent_id,
            "action": intent.action,
            "resource": intent.resource,
            "parameters": json.loads(json.dumps(dict(intent.parameters))),
            "context": dict(intent.context),
        },
        "approvals": [{"approval_id": "approval-proof-1", "envelope": w.envelope}],
        "outcomes": [],
        "events": [w.answer(5, 11, note_a), w.answer(6, 11, note_a)],
        "unproven_events": [],
        "checkpoints": [note_a],
        "keys": {"gate_jwks": w.jwks, "notary_vkey": signer.vkey},
    }
    # The fixture is genuine by the Python verifiers' own account.
    verify_approval(w.envelope, w.keyset, CHECK_AT, intent=intent_bytes)
    verify_chain(events)
    for event in events:
        verify_event_signature(event, w.keyset)
    for answer in w.bundle["events"]:
        verify_inclusion_answer(answer, signer.verifier)
    return w


APPROVAL_IDS = [
    "approval.envelope",
    "approval.payloadType",
    "approval.payload",
    "approval.signature",
    "approval.statement",
    "approval.expiry",
    "approval.intent",
    "approval.parameters",
]


def test_python_artifacts_verify_one_by_one(world: World) -> None:
    w = world
    envelope_text = json.dumps(w.envelope)
    jwks_without_kids = {
        "keys": [{k: v for k, v in j.items() if k != "kid"} for j in w.jwks["keys"]]
    }
    linked_chain = w.events[:8]
    cp = Checkpoint.parse(open_note(w.note_a, w.signer.verifier)[0])
    calls: list[list[Any]] = [
        [
            "verifyApproval",
            envelope_text,
            w.jwks,
            {"intentBytes": _b(w.intent_bytes), "nowMs": CHECK_AT},
        ],
        [
            "verifyApproval",
            _b(envelope_text.encode()),
            w.jwks,
            {"intentBytes": _b(w.intent_bytes), "nowMs": CHECK_AT},
        ],
        ["verifyApproval", w.envelope, w.jwks, {"nowMs": CHECK_AT}],  # no intent bytes
        ["parseJwks", jwks_without_kids],
        ["parseVerifierKey", w.signer.vkey],
        ["verifyNote", w.note_a, w.signer.vkey],
        ["verifyNote", w.note_a, w.signer.vkey, {"origin": "another.example/log"}],
    ]
    calls += [
        ["verifyLineageEvent", e, w.jwks, {"previous": linked_chain[n - 1] if n else None}]
        for n, e in enumerate(linked_chain)
    ]
    calls += [["eventHash", e] for e in linked_chain]
    calls += [["eventLeafHash", e] for e in linked_chain]
    calls += [
        ["verifyLineageEvent", linked_chain[3], w.jwks, {"previous": linked_chain[1]}],
        ["verifyLineageEvent", {**linked_chain[3], "status": "deny"}, w.jwks],
    ]
    results = run(calls)
    genuine, from_bytes, no_intent, jwks, vkey, note, other_origin = results[:7]
    n = len(linked_chain)
    chain_steps, hashes, leaves = (
        results[7 : 7 + n],
        results[7 + n : 7 + 2 * n],
        results[7 + 2 * n : 7 + 3 * n],
    )
    wrong_previous, altered = results[7 + 3 * n :]

    assert [s["id"] for s in genuine] == APPROVAL_IDS
    assert all(s["ok"] for s in genuine), failed(genuine)
    assert "decoded from the intent bytes" in genuine[-1]["reason"]
    assert all(s["ok"] for s in from_bytes), failed(from_bytes)
    assert failed(no_intent).keys() == {"approval.intent", "approval.parameters"}
    assert all(s["skipped"] for s in no_intent if not s["ok"])

    assert list(jwks["keys"]) == [jwk_thumbprint(w.gate_key.public_key)] and not jwks["problems"]
    assert (
        vkey["ok"]
        and vkey["keyIdHex"] == w.signer.verifier.key_id_hex
        and vkey["vkey"] == w.signer.vkey
    )
    assert note["ok"], note
    assert (note["origin"], note["size"], _unb(note["rootHash"])) == (ORIGIN, 11, cp.root_hash)
    assert not other_origin["ok"] and 'expected "another.example/log"' in other_origin["reason"]

    for event, steps in zip(linked_chain, chain_steps, strict=True):
        assert all(s["ok"] for s in steps), failed(steps)
        expected_ids = ["event.signature", "event.hash"] + (
            ["event.link"] if event["prev_hash"] else []
        )
        assert [s["id"] for s in steps] == expected_ids
    for event, hashed, leaf in zip(linked_chain, hashes, leaves, strict=True):
        assert hashed == {"ok": True, "hash": compute_event_hash(event, event["prev_hash"])}
        assert _unb(leaf) == leaf_hash(leaf_bytes(event))
    assert failed(wrong_previous).keys() == {"event.link"}
    assert "dropped, inserted or reordered" in failed(wrong_previous)["event.link"]
    assert failed(altered).keys() == {"event.signature", "event.hash"}
    assert "has been altered" in failed(altered)["event.hash"]


# -- 5. evidence bundles, genuine and tampered ----------------------------------------------


def _payload_flipped(w: World) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    env = b["approvals"][0]["envelope"]
    payload = base64.b64decode(env["payload"])
    env["payload"] = base64.b64encode(
        flip(payload, payload.index(b"approval-proof-1") + 9)
    ).decode()
    return b


def _signature_flipped(w: World) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    sig = b["approvals"][0]["envelope"]["signatures"][0]
    sig["sig"] = base64.b64encode(flip(base64.b64decode(sig["sig"]), 10)).decode()
    return b


def _resigned_statement(w: World, change: Any) -> dict[str, Any]:
    """A statement altered and signed again with the gate's own key: the signature holds."""
    b = copy.deepcopy(w.bundle)
    statement = json.loads(base64.b64decode(w.envelope["payload"]))
    change(statement)
    b["approvals"][0]["envelope"] = sign_envelope(
        canonical_json(statement), PAYLOAD_TYPE, w.gate_key
    )
    return b


def _deny_verdict(statement: dict[str, Any]) -> None:
    statement["predicate"]["verdicts"][1]["status"] = "DENY"


def _other_parameters(statement: dict[str, Any]) -> None:
    statement["predicate"]["parametersDigest"] = parameters_digest({"amount": 99999})


def _intent_flipped(w: World) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    data = base64.b64decode(b["intent"]["record_b64"])
    b["intent"]["record_b64"] = base64.b64encode(flip(data, len(data) - 20)).decode()
    return b


def _other_intent(w: World) -> dict[str, Any]:
    """Another intent's bytes, with their own digest: the approval is not for it."""
    b = copy.deepcopy(w.bundle)
    other = default_codec().encode(
        "Intent",
        intent_record(
            intent_id="intent-proof-1",
            parameters={"amount": 99999, "currency": "EUR"},
            context={"ticket": "T-7"},
        ),
    )
    b["intent"]["record_b64"] = base64.b64encode(other).decode()
    b["intent"]["intent_digest"] = "sha256:" + hashlib.sha256(other).hexdigest()
    b["intent"]["parameters"] = {"amount": 99999, "currency": "EUR"}
    return b


def _shown_parameters(w: World) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    b["intent"]["parameters"]["amount"] = 1050
    return b


def _event_changed(w: World, position: int, **changes: Any) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    b["events"][position]["event"].update(changes)
    return b


def _event_changed_and_rehashed(w: World) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    event = b["events"][0]["event"]
    event["status"] = "denied"
    b["events"][0]["event"] = link(event, event["prev_hash"])
    return b


def _proof_flipped(w: World) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    path = b["events"][0]["proof"]["inclusion_path"]
    path[1] = base64.b64encode(flip(base64.b64decode(path[1]), 31, 7)).decode()
    return b


def _wrong_index(w: World) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    b["events"][0]["index"] = 4
    return b


def _another_leaf(w: World) -> dict[str, Any]:
    """A genuine, intact, signed event, but passed off as leaf 5: its log_index says 4."""
    b = copy.deepcopy(w.bundle)
    b["events"][0]["event"] = copy.deepcopy(w.events[4])
    b["events"][0]["event"]["log_index"] = 5
    return b


def _note_text_flipped(w: World) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    note = w.note_a.replace(f"{ORIGIN}\n11\n", f"{ORIGIN}\n13\n", 1)  # '1' ^ 0x02
    b["events"][0]["checkpoint"] = note
    return b


def _note_signature_flipped(w: World) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    text, _, line = w.note_a.rstrip("\n").rpartition("\n")
    dash, name, sig = line.split(" ")
    blob = base64.b64encode(flip(base64.b64decode(sig), 30)).decode()
    b["events"][0]["checkpoint"] = f"{text}\n{dash} {name} {blob}\n"
    return b


def _resigned_by_impostor(w: World, impostor: NoteSigner) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    checkpoint = Checkpoint.parse(open_note(w.note_a, w.signer.verifier)[0])
    forged = sign_checkpoint(checkpoint, impostor)
    for answer in b["events"]:
        answer["checkpoint"] = forged
    b["checkpoints"] = [forged]
    b["keys"]["notary_vkey"] = impostor.vkey
    return b


def _two_checkpoints(w: World) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    b["events"][1] = w.answer(w.execution, 17, w.note_b)
    b["checkpoints"] = [w.note_a, w.note_b]
    return b


def _without_decision(w: World) -> dict[str, Any]:
    b = copy.deepcopy(w.bundle)
    del b["events"][0]
    b["unproven_events"] = [f"{w.events[5]['event_id']}: not covered by a checkpoint yet"]
    return b


def _forked_remembered(w: World) -> dict[str, Any]:
    """A checkpoint of size 4 of another history (this log's first events, one changed)."""
    other = MerkleLog()
    for n, event in enumerate(w.events[:4]):
        other.append(leaf_bytes(event) if n != 2 else leaf_bytes(link(make_event(99), None)))
    return {"origin": ORIGIN, "size": 4, "rootHash": base64.b64encode(other.root(4)).decode()}


def _cases(w: World) -> dict[str, tuple[Any, dict[str, Any], dict[str, str]]]:
    """name → (bundle, options, {step id that must fail: pattern its reason must match})."""
    pinned = {"pinnedVkey": w.signer.vkey, "jwks": w.jwks, "nowMs": CHECK_AT}
    impostor = NoteSigner(ORIGIN, generate_signing_key())
    other_ring = SigningKeyring([KeyringEntry(generate_signing_key())])
    retired = Keyset([KeyEntry(e.kid, e.public_key, 0, NOW - 1) for e in w.keyset.values()])
    flipped_consistency = w.consistency(4, 11)
    path = flipped_consistency["proof"]["consistency_path"]
    path[0] = base64.b64encode(flip(base64.b64decode(path[0]), 0)).decode()
    b = w.bundle
    return {
        # genuine
        "genuine": (b, pinned, {}),
        "genuine, remembered a prefix, with its proof": (
            b,
            {**pinned, "remembered": w.remembered(4), "consistency": [w.consistency(4, 11)]},
            {},
        ),
        "genuine, remembered a later checkpoint, with its proof": (
            b,
            {**pinned, "remembered": w.remembered(17), "consistency": [w.consistency(11, 17)]},
            {},
        ),
        "genuine, the same checkpoint remembered": (
            b,
            {**pinned, "remembered": w.remembered(11)},
            {},
        ),
        "genuine, two checkpoints with the proof between them": (
            _two_checkpoints(w),
            {**pinned, "consistency": [w.consistency(11, 17)]},
            {},
        ),
        # approvals
        "approval payload bit flipped": (
            _payload_flipped(w),
            pinned,
            {"approval.0.signature": "does not verify"},
        ),
        "approval signature bit flipped": (
            _signature_flipped(w),
            pinned,
            {"approval.0.signature": "does not verify"},
        ),
        "approval payloadType changed": (
            _with(
                b, lambda x: x["approvals"][0]["envelope"].update(payloadType="application/json")
            ),
            pinned,
            {"approval.0.payloadType": 'expected "application/vnd.in-toto\\+json"'},
        ),
        "approval re-signed with a DENY verdict": (
            _resigned_statement(w, _deny_verdict),
            pinned,
            {"approval.0.statement": "freshness: DENY"},
        ),
        "approval re-signed for other parameters": (
            _resigned_statement(w, _other_parameters),
            pinned,
            {"approval.0.parameters": "not the approved parameters"},
        ),
        "approval expired": (
            b,
            {**pinned, "nowMs": NOW + TTL},
            {"approval.0.expiry": "expired at 2023-11-14T22:15:20.000Z"},
        ),
        "gate key not pinned": (
            b,
            {**pinned, "jwks": other_ring.jwks()},
            {"approval.0.signature": "not in the JWKS", "event.0.signature": "not in the JWKS"},
        ),
        "gate key retired": (
            b,
            {**pinned, "jwks": retired.to_jwks()},
            {"approval.0.signature": "was retired"},
        ),
        "no gate keys pinned": (
            b,
            {**pinned, "jwks": None},
            {"keys.gate": "no gate JWKS is pinned"},
        ),
        # the intent
        "intent bytes bit flipped": (
            _intent_flipped(w),
            pinned,
            {"intent.bytes": "the bundle names", "approval.0.intent": "not the approved intent"},
        ),
        "another intent's bytes": (
            _other_intent(w),
            pinned,
            {
                "approval.0.intent": "not the approved intent",
                "approval.0.parameters": "not the approved parameters",
            },
        ),
        "parameters shown altered": (
            _shown_parameters(w),
            pinned,
            {"intent.fields": "parameters is shown as"},
        ),
        # lineage events
        "event field altered": (
            _event_changed(w, 0, status="denied"),
            pinned,
            {
                "event.0.signature": "does not verify",
                "event.0.hash": "has been altered",
                "event.0.inclusion": "does not lead to the root",
            },
        ),
        "event altered and re-hashed": (
            _event_changed_and_rehashed(w),
            pinned,
            {
                "event.0.signature": "does not verify",
                "event.0.inclusion": "does not lead to the root",
                "event.1.link": "dropped, inserted or reordered",
                "approval.0.lineage": "did not verify",
            },
        ),
        "event unsigned": (
            _event_changed(w, 1, signature=None),
            pinned,
            {"event.1.signature": "is not signed", "event.1.hash": "has been altered"},
        ),
        "inclusion proof bit flipped": (
            _proof_flipped(w),
            pinned,
            {"event.0.inclusion": "does not lead to the root"},
        ),
        "wrong index": (_wrong_index(w), pinned, {"event.0.leaf": "the proof is for index 4"}),
        "another leaf passed off": (
            _another_leaf(w),
            pinned,
            {"event.0.hash": "has been altered", "event.0.inclusion": "does not lead to the root"},
        ),
        "checkpoint text bit flipped": (
            _note_text_flipped(w),
            pinned,
            {
                "event.0.checkpoint": "does not verify",
                "event.0.inclusion": "checkpoint is of size 13",
            },
        ),
        "checkpoint signature bit flipped": (
            _note_signature_flipped(w),
            pinned,
            {"event.0.checkpoint": "does not verify"},
        ),
        "verifier key changed (another key pinned)": (
            b,
            {**pinned, "pinnedVkey": impostor.vkey},
            {
                "keys.notary.changed": "^verifier key changed",
                "event.0.checkpoint": "no signature by the pinned key",
            },
        ),
        "verifier key changed (bundle re-signed by another key)": (
            _resigned_by_impostor(w, impostor),
            pinned,
            {
                "keys.notary.changed": "^verifier key changed",
                "event.1.checkpoint": "no signature by the pinned key",
            },
        ),
        "no verifier key pinned": (
            b,
            {**pinned, "pinnedVkey": None},
            {"keys.notary": "no notary verifier key"},
        ),
        "decision event missing": (
            _without_decision(w),
            pinned,
            {"approval.0.lineage": "does not prove", "events.unproven": "no proof for 1 event"},
        ),
        # consistency
        "remembered a prefix, no proof yet": (
            b,
            {**pinned, "remembered": w.remembered(4)},
            {"consistency.remembered": "GET /proof/consistency\\?old=4&new=11"},
        ),
        "remembered a forked checkpoint": (
            b,
            {**pinned, "remembered": _forked_remembered(w), "consistency": [w.consistency(4, 11)]},
            {"consistency.remembered": "does not extend|does not lead to the old root"},
        ),
        "consistency proof bit flipped": (
            b,
            {**pinned, "remembered": w.remembered(4), "consistency": [flipped_consistency]},
            {"consistency.remembered": "altered|rewritten"},
        ),
        "consistency proof of other sizes": (
            b,
            {
                **pinned,
                "remembered": w.remembered(4),
                "consistency": [{"proof": {**w.consistency(5, 11)["proof"], "old_size": 4}}],
            },
            {"consistency.remembered": "altered|rewritten|entries"},
        ),
        "remembered same size, other root": (
            b,
            {
                **pinned,
                "remembered": {**w.remembered(11), "rootHash": _forked_remembered(w)["rootHash"]},
            },
            {"consistency.remembered": "forked or rewritten"},
        ),
        "two checkpoints, no proof yet": (
            _two_checkpoints(w),
            pinned,
            {"consistency.11-17": "GET /proof/consistency\\?old=11&new=17"},
        ),
    }


def _with(bundle: dict[str, Any], change: Any) -> dict[str, Any]:
    changed = copy.deepcopy(bundle)
    change(changed)
    return changed


@pytest.fixture(scope="module")
def evidence_results(world: World) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    cases = _cases(world)
    results = run([["verifyEvidence", bundle, options] for bundle, options, _ in cases.values()])
    return {
        name: (result, case[2]) for (name, case), result in zip(cases.items(), results, strict=True)
    }


def test_genuine_evidence_passes_every_step(evidence_results: dict[str, Any], world: World) -> None:
    result, _ = evidence_results["genuine"]
    assert result["ok"], failed(result["steps"])
    ids = [s["id"] for s in result["steps"]]
    approval_ids = [i.replace("approval.", "approval.0.") for i in APPROVAL_IDS]
    event = ["signature", "hash", "leaf", "inclusion", "checkpoint"]
    assert (
        ids
        == [
            "bundle",
            "keys.gate",
            "keys.notary",
            "keys.notary.changed",
            "intent.bytes",
            "intent.fields",
            *approval_ids,
            "approval.0.listed",
            "events.unproven",
            *[f"event.0.{step}" for step in event],
            "event.1.signature",
            "event.1.hash",
            "event.1.link",  # log index 6 follows 5, also in the bundle
            *[f"event.1.{step}" for step in event[2:]],
            "approval.0.lineage",
            "consistency.remembered",
        ]
    )
    assert result["needs"] == []
    assert result["remember"] == {
        "origin": ORIGIN,
        "size": 11,
        "rootHash": base64.b64encode(world.notary.log.root(11)).decode(),
        "note": world.note_a,
    }
    (statement,) = result["statements"]
    assert statement == json.loads(base64.b64decode(world.envelope["payload"]))
    assert all(s["reason"] for s in result["steps"])


def test_remembered_checkpoints_and_consistency(
    evidence_results: dict[str, Any], world: World
) -> None:
    prefix, _ = evidence_results["genuine, remembered a prefix, with its proof"]
    assert prefix["ok"], failed(prefix["steps"])
    assert prefix["remember"]["size"] == 11
    later, _ = evidence_results["genuine, remembered a later checkpoint, with its proof"]
    assert later["ok"], failed(later["steps"])
    assert later["remember"] is None  # keep the larger one already remembered
    same, _ = evidence_results["genuine, the same checkpoint remembered"]
    assert same["ok"], failed(same["steps"])
    two, _ = evidence_results["genuine, two checkpoints with the proof between them"]
    assert two["ok"], failed(two["steps"])
    assert two["remember"]["size"] == 17 and two["remember"]["note"] == world.note_b
    assert "consistency.11-17" in [s["id"] for s in two["steps"]]

    pending, _ = evidence_results["remembered a prefix, no proof yet"]
    assert pending["needs"] == [{"old": 4, "new": 11, "path": "/proof/consistency?old=4&new=11"}]
    step = next(s for s in pending["steps"] if s["id"] == "consistency.remembered")
    assert step["pending"] and not step["ok"] and pending["remember"] is None
    assert set(failed(pending["steps"])) == {"consistency.remembered"}
    pending_two, _ = evidence_results["two checkpoints, no proof yet"]
    assert pending_two["needs"] == [
        {"old": 11, "new": 17, "path": "/proof/consistency?old=11&new=17"}
    ]


CASE_NAMES = [
    "approval payload bit flipped",
    "approval signature bit flipped",
    "approval payloadType changed",
    "approval re-signed with a DENY verdict",
    "approval re-signed for other parameters",
    "approval expired",
    "gate key not pinned",
    "gate key retired",
    "no gate keys pinned",
    "intent bytes bit flipped",
    "another intent's bytes",
    "parameters shown altered",
    "event field altered",
    "event altered and re-hashed",
    "event unsigned",
    "inclusion proof bit flipped",
    "wrong index",
    "another leaf passed off",
    "checkpoint text bit flipped",
    "checkpoint signature bit flipped",
    "verifier key changed (another key pinned)",
    "verifier key changed (bundle re-signed by another key)",
    "no verifier key pinned",
    "decision event missing",
    "remembered a prefix, no proof yet",
    "remembered a forked checkpoint",
    "consistency proof bit flipped",
    "consistency proof of other sizes",
    "remembered same size, other root",
    "two checkpoints, no proof yet",
]


def test_every_case_is_listed(world: World) -> None:
    genuine = {name for name in _cases(world) if name.startswith("genuine")}
    assert set(_cases(world)) == genuine | set(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_tampered_evidence_fails_at_the_step_named(
    name: str, evidence_results: dict[str, Any]
) -> None:
    result, expected = evidence_results[name]
    assert not result["ok"]
    failures = failed(result["steps"])
    for step_id, pattern in expected.items():
        assert step_id in failures, f"{step_id} did not fail; failed: {failures}"
        assert re.search(pattern, failures[step_id]), (step_id, failures[step_id])


def test_tampering_with_a_signed_field_fails_only_where_it_should(
    evidence_results: dict[str, Any],
) -> None:
    """A flipped proof bit breaks inclusion, not the signatures; an expired approval breaks
    freshness, not the log."""
    proof, _ = evidence_results["inclusion proof bit flipped"]
    assert set(failed(proof["steps"])) == {"event.0.inclusion", "approval.0.lineage"}
    expired, _ = evidence_results["approval expired"]
    assert set(failed(expired["steps"])) == {"approval.0.expiry"}
    shown, _ = evidence_results["parameters shown altered"]
    assert set(failed(shown["steps"])) == {"intent.fields"}


MALFORMED: list[Any] = [
    None,
    "not json",
    "[]",
    42,
    [],
    {},
    {"format": EVIDENCE_FORMAT},
    {"format": EVIDENCE_FORMAT, "events": "x", "approvals": {"a": 1}, "intent": [], "keys": 7},
    {
        "format": EVIDENCE_FORMAT,
        "events": [None, 1, {"event": []}, {"event": {"event_id": 5}}],
        "approvals": [None, "{", {"envelope": {"unreadable": "x"}}],
    },
    {
        "format": EVIDENCE_FORMAT,
        "intent": {"record_b64": "!!!", "parameters": "x"},
        "approvals": [
            {
                "envelope": {
                    "payload": "%%",
                    "payloadType": PAYLOAD_TYPE,
                    "signatures": [1, {"sig": 5}],
                }
            }
        ],
        "events": [
            {
                "event": {
                    "event_hash": "sha256:" + "0" * 64,
                    "prev_hash": 3,
                    "__proto__": {"x": 1},
                },
                "index": -1,
                "proof": {"tree_size": "x", "inclusion_path": [None]},
                "checkpoint": "\n\n— x y\n",
            }
        ],
        "unproven_events": [None],
    },
]


def test_malformed_bundles_give_failing_steps_never_an_exception(world: World) -> None:
    options = {"pinnedVkey": world.signer.vkey, "jwks": world.jwks, "remembered": {"size": "x"}}
    calls: list[list[Any]] = [["verifyEvidence", bundle, options] for bundle in MALFORMED]
    calls += [
        [
            "verifyEvidence",
            world.bundle,
            {"pinnedVkey": "nonsense", "jwks": {"keys": [{"kty": "RSA"}]}},
        ],
        ["verifyApproval", None, None, {}],
        ["verifyApproval", "x" * 300_000, world.jwks, {}],
        ["verifyLineageEvent", None, None],
        ["verifyInclusion", None, "x", -1, "nope", 5],
        ["verifyConsistency", {}, [], None, None, None],
        ["verifyNote", None, None],
        ["openNote", "text\n\n— bad\n", world.signer.vkey],
        ["parseVerifierKey", 7],
        ["decodeIntent", "text"],
        ["parseCheckpoint", None],
    ]
    results = run(calls)
    for bundle, result in zip(MALFORMED, results[: len(MALFORMED)], strict=True):
        assert not result["ok"] and result["steps"], bundle
        assert all(s["reason"] and s["title"] and s["id"] for s in result["steps"]), result
    (
        keys,
        no_envelope,
        too_big,
        no_event,
        inclusion,
        consistency,
        note,
        bad_line,
        vkey,
        intent,
        checkpoint,
    ) = results[len(MALFORMED) :]
    assert {"keys.gate", "keys.notary"} <= set(failed(keys["steps"]))
    assert failed(no_envelope)["approval.envelope"] == "the envelope is null, not a JSON object"
    assert "approvals are at most 262144" in failed(too_big)["approval.envelope"]
    assert failed(no_event)["event.signature"] == "the event is null, not an object"
    for result in (inclusion, consistency, note, bad_line, vkey, intent, checkpoint):
        assert not result["ok"] and result["reason"], result
