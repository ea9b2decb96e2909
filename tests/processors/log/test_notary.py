"""The notary: linking, logging, checkpoint schedule, proofs, and tampering end to end."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.crypto.keys import generate_signing_key
from processors.exceptions import ConfigError
from processors.log.chain import ChainError, leaf_bytes, link, verify_chain
from processors.log.checkpoint import (
    CheckpointError,
    NoteError,
    NoteSigner,
    verify_checkpoint,
)
from processors.log.merkle import MerkleError, MerkleLog, ProofError, leaf_hash
from processors.log.notary import (
    ConsistencyProof,
    InclusionProof,
    Notary,
    verify_checkpoint_consistency,
    verify_event_against_checkpoint,
)
from tests.processors.log.test_chain import make_event

ORIGIN = "lineage.trustplane.example/test"


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, generate_signing_key())


def fill(notary: Notary, count: int, start: int = 0) -> list[dict]:
    events = []
    for n in range(start, start + count):
        size = notary.size
        index, linked = notary.append(make_event(n))
        assert index == size
        events.append(linked)
    return events


def test_append_links_and_logs(signer):
    notary = Notary(ORIGIN, signer)
    events = fill(notary, 25)
    assert notary.size == 25
    assert notary.head == events[-1]["event_hash"]
    assert events[0]["prev_hash"] is None
    verify_chain(events)


def test_checkpoint_schedule(signer):
    notary = Notary(ORIGIN, signer, checkpoint_every_events=10, checkpoint_every_ms=1000)
    assert notary.maybe_checkpoint(0) is None  # nothing logged yet
    fill(notary, 3)
    first = notary.maybe_checkpoint(0)  # no checkpoint yet: the first comes at once
    assert first is not None and verify_checkpoint(first, signer.verifier).size == 3
    assert notary.maybe_checkpoint(10) is None  # the tree did not grow
    fill(notary, 5, start=3)
    assert notary.maybe_checkpoint(999) is None  # 5 events, 999 ms: not yet
    cp = notary.maybe_checkpoint(1000)  # T ms passed
    assert cp is not None and verify_checkpoint(cp, signer.verifier).size == 8
    fill(notary, 10, start=8)
    cp = notary.maybe_checkpoint(1001)  # N events passed
    assert cp is not None and verify_checkpoint(cp, signer.verifier).size == 18
    assert notary.latest_checkpoint == cp
    assert notary.maybe_checkpoint(50_000) is None  # no growth, however long
    forced = notary.checkpoint(50_001)
    assert verify_checkpoint(forced, signer.verifier).size == 18


def test_bad_configuration_is_refused(signer):
    with pytest.raises(ConfigError, match="checkpoint_every_events"):
        Notary(ORIGIN, signer, checkpoint_every_events=0)
    with pytest.raises(ConfigError, match="checkpoint_every_ms"):
        Notary(ORIGIN, signer, checkpoint_every_ms=-5)
    with pytest.raises(ConfigError, match="origin"):
        Notary("two\nlines", signer)


@pytest.fixture
def logged(signer):
    notary = Notary(ORIGIN, signer)
    events = fill(notary, 37)
    note = notary.checkpoint(now_ms=0)
    return notary, events, note


def test_every_event_verifies_against_the_checkpoint(logged, signer):
    notary, events, note = logged
    for index, event in enumerate(events):
        proof = notary.prove_inclusion(index, 37)
        cp = verify_event_against_checkpoint(
            event, index, proof, note, signer.verifier, origin=ORIGIN
        )
        assert cp.size == 37


def test_an_altered_event_fails(logged, signer):
    notary, events, note = logged
    proof = notary.prove_inclusion(12)
    altered = {**events[12], "status": "deny"}
    with pytest.raises(ChainError, match="altered"):
        verify_event_against_checkpoint(altered, 12, proof, note, signer.verifier)


def test_an_altered_byte_in_a_rehashed_event_fails_inclusion(logged, signer):
    """Even with a recomputed event_hash, the leaf is no longer the one logged."""
    notary, events, note = logged
    event = events[12]
    worker = event["worker"]
    forged = link({**event, "worker": worker[:-1] + chr(ord(worker[-1]) ^ 1)}, event["prev_hash"])
    with pytest.raises(ProofError, match="altered"):
        verify_event_against_checkpoint(
            forged, 12, notary.prove_inclusion(12), note, signer.verifier
        )


def test_a_reordered_event_fails(logged, signer):
    notary, events, note = logged
    # event 12 presented at position 13, with the proof for 13
    with pytest.raises(ProofError):
        verify_event_against_checkpoint(
            events[12], 13, notary.prove_inclusion(13), note, signer.verifier
        )
    # event 12 with its own proof but a claimed index of 13
    with pytest.raises(ProofError, match="not for index 13"):
        verify_event_against_checkpoint(
            events[12], 13, notary.prove_inclusion(12), note, signer.verifier
        )


def test_a_dropped_event_fails_chain_and_proofs(logged, signer):
    notary, events, note = logged
    stored = events[:20] + events[21:]  # the store lost event 20
    with pytest.raises(ChainError) as info:
        verify_chain(stored)
    assert info.value.position == 20
    # what is now 20th in the store is not leaf 20 of the signed log
    with pytest.raises(ProofError):
        verify_event_against_checkpoint(
            stored[20], 20, notary.prove_inclusion(20), note, signer.verifier
        )


def test_an_inserted_event_cannot_be_proven(logged, signer):
    notary, events, note = logged
    forged = link(make_event(500), events[20]["event_hash"])
    with pytest.raises(ProofError):
        verify_event_against_checkpoint(
            forged, 21, notary.prove_inclusion(21), note, signer.verifier
        )


def test_proof_must_match_the_checkpoint(logged, signer):
    notary, events, note = logged
    with pytest.raises(ProofError, match="tree size 30"):
        verify_event_against_checkpoint(
            events[3], 3, notary.prove_inclusion(3, 30), note, signer.verifier
        )


def test_the_checkpoint_must_be_signed_by_the_log(logged, signer):
    notary, events, note = logged
    proof = notary.prove_inclusion(3)
    other = NoteSigner(ORIGIN, generate_signing_key())
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        verify_event_against_checkpoint(events[3], 3, proof, note, other.verifier)
    forged_note = note.replace("\n37\n", "\n36\n")
    with pytest.raises(NoteError, match="does not verify"):
        verify_event_against_checkpoint(events[3], 3, proof, forged_note, signer.verifier)
    with pytest.raises(CheckpointError, match="expected"):
        verify_event_against_checkpoint(
            events[3], 3, proof, note, signer.verifier, origin="another/log"
        )


def test_consistency_between_checkpoints(signer):
    notary = Notary(ORIGIN, signer)
    fill(notary, 5)
    old = notary.checkpoint(0)
    fill(notary, 7, start=5)
    new = notary.checkpoint(1)
    proof = notary.prove_consistency(5, 12)
    a, b = verify_checkpoint_consistency(old, new, proof, signer.verifier, origin=ORIGIN)
    assert (a.size, b.size) == (5, 12)
    # same checkpoint twice: consistent with an empty proof
    verify_checkpoint_consistency(new, new, notary.prove_consistency(12, 12), signer.verifier)
    # the proof must be about these two sizes
    with pytest.raises(ProofError, match="from size 4"):
        verify_checkpoint_consistency(old, new, notary.prove_consistency(4, 12), signer.verifier)


def test_a_rewritten_log_is_not_consistent(signer):
    """A notary that signs a second history (a fork) is caught by consistency proofs."""
    honest = Notary(ORIGIN, signer)
    fill(honest, 8)
    old = honest.checkpoint(0)
    fork = Notary(ORIGIN, signer)  # same first 4 events, then another history
    fill(fork, 4)
    fill(fork, 10, start=100)
    new = fork.checkpoint(1)
    with pytest.raises(ProofError):
        verify_checkpoint_consistency(old, new, fork.prove_consistency(8, 14), signer.verifier)


def test_proofs_round_trip_through_json(logged):
    notary, _, _ = logged
    proof = notary.prove_inclusion(9)
    data = json.loads(proof.to_json())
    assert set(data) == {"leaf_index", "tree_size", "inclusion_path"}
    assert InclusionProof.from_json(proof.to_json()) == proof
    assert InclusionProof.from_json(data) == proof
    cproof = notary.prove_consistency(10)
    assert set(cproof.to_dict()) == {"old_size", "new_size", "consistency_path"}
    assert ConsistencyProof.from_json(cproof.to_json().encode()) == cproof


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"tree_size": 3, "inclusion_path": []}',
        '{"leaf_index": -1, "tree_size": 3, "inclusion_path": []}',
        '{"leaf_index": true, "tree_size": 3, "inclusion_path": []}',
        '{"leaf_index": 1, "tree_size": 3, "inclusion_path": "AAAA"}',
        '{"leaf_index": 1, "tree_size": 3, "inclusion_path": ["!!"]}',
        '{"leaf_index": 1, "tree_size": 3, "inclusion_path": ["AAAA"]}',
    ],
)
def test_malformed_proof_json_is_refused(text):
    with pytest.raises(ProofError):
        InclusionProof.from_json(text)


def test_proof_verify_methods(logged):
    notary, events, _ = logged
    root = notary.log.root()
    proof = notary.prove_inclusion(5)
    proof.verify(notary.log.leaf_hash(5), root)
    with pytest.raises(ProofError):
        proof.verify(notary.log.leaf_hash(6), root)
    cproof = notary.prove_consistency(20)
    cproof.verify(notary.log.root(20), root)
    with pytest.raises(ProofError):
        cproof.verify(notary.log.root(19), root)
    with pytest.raises(MerkleError):
        notary.prove_inclusion(37)


def test_restore_rebuilds_the_same_log(logged, signer):
    notary, events, _ = logged
    again = Notary(ORIGIN, signer)
    assert again.restore(events) == 37
    assert again.log.root() == notary.log.root()
    assert again.head == notary.head
    index, linked = again.append(make_event(37))
    assert index == 37 and linked["prev_hash"] == events[-1]["event_hash"]
    with pytest.raises(ChainError, match="does not follow"):
        Notary(ORIGIN, signer).restore(events[1:])
    with pytest.raises(ChainError, match="altered"):
        Notary(ORIGIN, signer).restore([{**events[0], "status": "x"}])


_NOTARY = Notary(ORIGIN, NoteSigner(ORIGIN, generate_signing_key()))
_EVENTS = fill(_NOTARY, 300)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_bit_flip_in_an_inclusion_proof_fails(data):
    size = data.draw(st.integers(2, _NOTARY.size))
    index = data.draw(st.integers(0, size - 1))
    proof = _NOTARY.prove_inclusion(index, size)
    root = _NOTARY.log.root(size)
    leaf = leaf_hash(leaf_bytes(_EVENTS[index]))
    assert leaf == _NOTARY.log.leaf_hash(index)
    proof.verify(leaf, root)
    which = data.draw(st.integers(0, len(proof.hashes) - 1))
    bit = data.draw(st.integers(0, 255))
    hashes = list(proof.hashes)
    flipped = bytearray(hashes[which])
    flipped[bit // 8] ^= 1 << (bit % 8)
    hashes[which] = bytes(flipped)
    tampered = InclusionProof(proof.leaf_index, proof.tree_size, tuple(hashes))
    with pytest.raises(ProofError):
        tampered.verify(leaf, root)
    # round-tripping the tampered proof through JSON does not repair it
    with pytest.raises(ProofError):
        InclusionProof.from_json(tampered.to_json()).verify(leaf, root)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_consistency_between_any_two_sizes(data):
    new = data.draw(st.integers(1, _NOTARY.size))
    old = data.draw(st.integers(1, new))
    proof = _NOTARY.prove_consistency(old, new)
    proof.verify(_NOTARY.log.root(old), _NOTARY.log.root(new))
    if proof.hashes:
        which = data.draw(st.integers(0, len(proof.hashes) - 1))
        bit = data.draw(st.integers(0, 255))
        hashes = list(proof.hashes)
        flipped = bytearray(hashes[which])
        flipped[bit // 8] ^= 1 << (bit % 8)
        hashes[which] = bytes(flipped)
        with pytest.raises(ProofError):
            ConsistencyProof(old, new, tuple(hashes)).verify(
                _NOTARY.log.root(old), _NOTARY.log.root(new)
            )


def test_a_notary_resumes_from_its_tree_and_head_without_the_events(signer):
    original = Notary(ORIGIN, signer)
    fill(original, 12)
    resumed = Notary(ORIGIN, signer)
    resumed.resume(MerkleLog.from_levels(original.log.subtrees(0), 12), original.head)
    assert (resumed.size, resumed.head) == (12, original.head)
    (extra,) = fill(resumed, 1, start=12)
    assert extra["prev_hash"] == original.head
    (same,) = fill(original, 1, start=12)
    assert same == extra and resumed.log.root() == original.log.root()

    with pytest.raises(ChainError, match="already holds 13 events"):
        resumed.resume(MerkleLog(), None)
    with pytest.raises(ChainError, match="cannot have the head None"):
        Notary(ORIGIN, signer).resume(MerkleLog.from_levels(original.log.subtrees(0), 13), None)
    with pytest.raises(ChainError, match="the head"):
        Notary(ORIGIN, signer).resume(MerkleLog.from_levels(original.log.subtrees(0), 13), "x")
