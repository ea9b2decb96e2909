"""The Proof Viewer in Chromium: genuine material passes, every tampered variant fails.

The page verifies with WebCrypto in the browser (static/proofs.js); the console only
serves material. Tampered material reaches the page through the console's test route
(``/api/test/material/<name>``, served only when TRUSTPLANE_CONSOLE_TEST_MATERIAL is
set), as an attacker's server or a forged file would deliver it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from processors.crypto.keys import generate_signing_key
from processors.log.chain import leaf_bytes
from processors.log.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from processors.log.merkle import MerkleLog, leaf_hash
from processors.log.notary import InclusionProof
from streams.cli.proof import NotaryClient
from streams.console.data import LineageStore, open_store
from streams.console.evidence import build_evidence
from streams.notary import notary_port
from streams.notary.keys import load_notary_signer
from streams.sdk.client import IntentPublisher, OutcomeReader
from tests.browser.conftest import Stack, screenshot

pytestmark = pytest.mark.broker


def _flip(text: str, at: int = 10) -> str:
    """One bit flipped in base64 text, still valid base64."""
    raw = bytearray(base64.b64decode(text))
    raw[at % len(raw)] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _approved_intent(stack: Stack) -> str:
    assert stack.estate is not None
    intent = stack.estate.intent("support-bot", "tickets.reply", "ticket:proof-viewer")
    reader = OutcomeReader(stack.settings)
    try:
        with IntentPublisher(stack.settings.for_role("agent")) as publisher:
            publisher.publish(intent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for got in reader.read(timeout=0.5):
                if (got.record or {}).get("intent_id") == intent["intent_id"]:
                    assert got.topic == "approved"
                    return str(intent["intent_id"])
    finally:
        reader.close()
    raise AssertionError("no decision")


def _bundle(stack: Stack, intent_id: str) -> dict[str, Any]:
    """The genuine evidence bundle, once the sink and the notary both have it."""
    store = LineageStore(open_store(stack.settings))
    notary = NotaryClient(f"http://127.0.0.1:{notary_port(stack.settings)}", wait=10)
    deadline = time.monotonic() + 60
    while True:
        try:
            bundle = build_evidence(stack.settings, store, notary, intent_id)
            if bundle["approvals"] and bundle["events"] and not bundle["unproven_events"]:
                return bundle
        except Exception:  # noqa: BLE001 - not recorded yet: retry
            if time.monotonic() > deadline:
                raise
        assert time.monotonic() < deadline, "the bundle did not come together"
        time.sleep(0.5)


def _fork(stack: Stack, bundle: dict[str, Any], size: int) -> dict[str, Any]:
    """The bundle's decision event in another history of ``size`` events, with a
    checkpoint the real notary key signs: a log showing this reader a different tree."""
    answer = bundle["events"][-1]
    index = answer["index"]
    fake = MerkleLog()
    for n in range(size):
        real = leaf_hash(leaf_bytes(answer["event"]))
        fake.append_leaf_hash(real if n == index else hashlib.sha256(b"other %d" % n).digest())
    proof = InclusionProof(index, size, tuple(fake.inclusion_proof(index, size)))
    signer = load_notary_signer(stack.settings)
    note = sign_checkpoint(Checkpoint(signer.name, size, fake.root(size)), signer)
    forked = copy.deepcopy(bundle)
    forked["approvals"] = []
    forked["events"] = [{**answer, "proof": proof.to_dict(), "checkpoint": note}]
    forked["checkpoints"] = [note]
    return forked


def _other_notary(bundle: dict[str, Any]) -> dict[str, Any]:
    """The same checkpoint signed by a key that is not the pinned notary key."""
    note = bundle["events"][-1]["checkpoint"]
    body = note.split("\n\n")[0] + "\n"
    checkpoint = Checkpoint.parse(body)
    impostor = NoteSigner(checkpoint.origin, generate_signing_key())
    signed = sign_checkpoint(checkpoint, impostor)
    forged = copy.deepcopy(bundle)
    for answer in forged["events"]:
        answer["checkpoint"] = signed
    forged["checkpoints"] = [signed]
    forged["keys"]["notary_vkey"] = impostor.vkey
    return forged


def _tampered(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    variants: dict[str, dict[str, Any]] = {}

    envelope = copy.deepcopy(bundle)
    env = envelope["approvals"][0]["envelope"]
    env["payload"] = _flip(env["payload"], 40)
    variants["envelope-bit"] = envelope

    proof = copy.deepcopy(bundle)
    answer = proof["events"][-1]
    path = answer["proof"]["inclusion_path"]
    if path:
        path[0] = _flip(path[0], 3)
    else:  # a one-leaf tree has no path: claim a bigger one instead
        answer["proof"]["tree_size"] += 1
    variants["proof-bit"] = proof

    note = copy.deepcopy(bundle)
    for answer in note["events"]:
        text = answer["checkpoint"]
        body, signatures = text.split("\n\n", 1)
        lines = body.split("\n")
        lines[2] = _flip(lines[2], 5)  # the root hash line
        answer["checkpoint"] = "\n".join(lines) + "\n\n" + signatures
    variants["checkpoint-bit"] = note

    leaf = copy.deepcopy(bundle)
    leaf["events"][-1]["event"]["status"] = "denied"
    variants["leaf-field"] = leaf

    index = copy.deepcopy(bundle)
    answer = index["events"][-1]
    answer["index"] += 1
    answer["proof"]["leaf_index"] += 1
    variants["wrong-index"] = index
    return variants


@pytest.fixture(scope="module")
def material(stack: Stack) -> Iterator[dict[str, Any]]:
    intent_id = _approved_intent(stack)
    genuine = _bundle(stack, intent_id)
    assert stack.material is not None
    (stack.material / "genuine.json").write_text(json.dumps(genuine))
    for name, variant in _tampered(genuine).items():
        (stack.material / f"{name}.json").write_text(json.dumps(variant))
    (stack.material / "other-notary-key.json").write_text(json.dumps(_other_notary(genuine)))
    yield {"intent_id": intent_id, "bundle": genuine}


def _verdict(page: Any, load: str) -> tuple[str, str]:
    page.goto(f"/proof?load=/api/test/material/{load}")
    page.locator("#verdict.pass, #verdict.fail").wait_for(timeout=30_000)
    return page.locator("#verdict").inner_text(), page.locator("#steps").inner_text()


@pytest.fixture
def viewer(stack: Stack, browser: Any) -> Iterator[Any]:
    """A logged-in page in a fresh profile (nothing pinned, nothing remembered)."""
    context = browser.new_context(base_url=stack.url)
    context.set_default_timeout(30_000)
    page = stack.login(context)
    yield page
    context.close()


def test_genuine_material_passes_every_step(stack: Stack, viewer: Any, material: Any) -> None:
    verdict, steps = _verdict(viewer, "genuine.json")
    assert verdict == "PASS", steps
    assert "FAIL" not in steps
    for step in ("approval", "signature", "inclusion", "checkpoint"):
        assert step in viewer.locator("#steps").inner_html()
    assert viewer.locator("#pinned-vkey").inner_text().startswith(stack.settings.notary_origin)
    assert "size" in viewer.locator("#remembered").inner_text()
    # a lookup by id fetches the same material and verifies it here too
    viewer.goto(f"/proof?q={material['intent_id']}")
    viewer.locator("#verdict.pass, #verdict.fail").wait_for()
    assert viewer.locator("#verdict").inner_text() == "PASS", viewer.locator("#steps").inner_text()
    screenshot(viewer, "proof-viewer")


@pytest.mark.parametrize(
    ("name", "failing"),
    [
        ("envelope-bit", "approval"),
        ("proof-bit", "inclusion"),
        ("checkpoint-bit", "checkpoint"),
        ("leaf-field", "event"),
        ("wrong-index", "event"),
    ],
)
def test_tampered_material_fails(viewer: Any, material: Any, name: str, failing: str) -> None:
    verdict, _ = _verdict(viewer, "genuine.json")
    assert verdict == "PASS"
    verdict, steps = _verdict(viewer, f"{name}.json")
    assert verdict == "FAIL", steps
    failed = [li.get_attribute("data-step") or "" for li in viewer.locator("#steps li.fail").all()]
    assert any(failing in step for step in failed), (failed, steps)


def test_a_changed_notary_key_is_an_alarm(viewer: Any, material: Any) -> None:
    assert _verdict(viewer, "genuine.json")[0] == "PASS"  # pins the notary's key
    verdict, steps = _verdict(viewer, "other-notary-key.json")
    assert verdict == "FAIL"
    assert "verifier key changed" in steps


def test_a_checkpoint_that_does_not_extend_the_remembered_one_fails(
    stack: Stack, viewer: Any, material: Any
) -> None:
    assert _verdict(viewer, "genuine.json")[0] == "PASS"  # remembers its checkpoint
    remembered = int(viewer.locator("#remembered").inner_text().split("size ")[1].split()[0])
    for _ in range(3):  # the real log grows past the remembered checkpoint
        _approved_intent(stack)
    notary = NotaryClient(f"http://127.0.0.1:{notary_port(stack.settings)}")
    deadline = time.monotonic() + 30
    while int(notary.checkpoint().split("\n")[1]) < remembered + 2:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    forked = _fork(stack, material["bundle"], remembered + 2)
    assert stack.material is not None
    (stack.material / "fork.json").write_text(json.dumps(forked))
    verdict, steps = _verdict(viewer, "fork.json")
    assert verdict == "FAIL", steps
    failed = [li.get_attribute("data-step") for li in viewer.locator("#steps li.fail").all()]
    assert failed == ["consistency.remembered"], (failed, steps)
    assert "does not extend" in steps
