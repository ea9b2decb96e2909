"""RFC 9162 Merkle log: vectors from transparency-dev/merkle, a reference model, pymerkle."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path

import pymerkle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.log.merkle import (
    EMPTY_ROOT,
    MerkleError,
    MerkleLog,
    ProofError,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

TESTS = Path(__file__).resolve().parents[2]
VECTORS = TESTS / "data" / "rfc9162-vectors"  # origin and licence: tests/data/README.md
EXPECTED_VECTOR_FILES = {"inclusion": 98, "consistency": 98}


def _vector_files(kind: str) -> list[Path]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    # A missing directory must fail the run, not skip it: give the test one bogus case.
    return files or [VECTORS / kind / "MISSING"]


def _load_vector(path: Path) -> dict:
    if not path.is_file():
        pytest.fail(f"RFC 9162 test vectors are missing: expected them under {VECTORS}")
    return json.loads(path.read_text())


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS)) if path.is_relative_to(VECTORS) else str(path)


def test_vectors_are_all_there():
    assert VECTORS.is_dir(), f"RFC 9162 test vectors are missing: {VECTORS}"
    for kind, count in EXPECTED_VECTOR_FILES.items():
        assert len(list((VECTORS / kind).rglob("*.json"))) == count, kind


@pytest.mark.parametrize("path", _vector_files("inclusion"), ids=_id)
def test_inclusion_vector(path):
    v = _load_vector(path)
    args = (
        _b64(v["leafHash"]),
        v["leafIdx"],
        v["treeSize"],
        [_b64(p) for p in v["proof"] or []],
        _b64(v["root"]),
    )
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _vector_files("consistency"), ids=_id)
def test_consistency_vector(path):
    v = _load_vector(path)
    args = (
        v["size1"],
        v["size2"],
        _b64(v["root1"]),
        _b64(v["root2"]),
        [_b64(p) for p in v["proof"] or []],
    )
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_go_policies():
    # Hashes that are not 32 bytes are refused, even when they would "match".
    with pytest.raises(ProofError, match="0 bytes"):
        verify_inclusion(b"", 0, 1, [], b"")
    # A consistency proof from the empty tree proves nothing.
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 5, EMPTY_ROOT, EMPTY_ROOT, [])


# -- a reference model: the RFC 9162 §2.1 recursive definitions, written naively ------


def ref_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return ref_path(m, leaves[:k]) + [ref_mth(leaves[k:])]
    return ref_path(m - k, leaves[k:]) + [ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [ref_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return ref_subproof(m, leaves[:k], b) + [ref_mth(leaves[k:])]
    return ref_subproof(m - k, leaves[k:], False) + [ref_mth(leaves[:k])]


def _log(leaves: list[bytes]) -> MerkleLog:
    log = MerkleLog()
    for n, leaf in enumerate(leaves):
        assert log.append(leaf) == n
    return log


LEAVES = [f"leaf {n}".encode() for n in range(40)]


def test_hashing_is_rfc9162():
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"l", b"r") == hashlib.sha256(b"\x01lr").digest()
    assert MerkleLog().root() == EMPTY_ROOT


def test_matches_reference_model_exhaustively():
    log = _log(LEAVES)
    for size in range(len(LEAVES) + 1):
        prefix = LEAVES[:size]
        root = log.root(size)
        assert root == ref_mth(prefix)
        for index in range(size):
            proof = log.inclusion_proof(index, size)
            assert proof == ref_path(index, prefix)
            verify_inclusion(log.leaf_hash(index), index, size, proof, root)
        for old in range(1, size + 1):
            proof = log.consistency_proof(old, size)
            assert proof == ref_subproof(old, prefix, True)
            verify_consistency(old, size, log.root(old), root, proof)


def test_appending_a_leaf_hash_is_appending_the_leaf():
    a, b = MerkleLog(), MerkleLog()
    for leaf in LEAVES:
        a.append(leaf)
        b.append_leaf_hash(leaf_hash(leaf))
    assert a.root() == b.root()
    with pytest.raises(MerkleError, match="32 bytes"):
        b.append_leaf_hash(b"short")


@pytest.mark.parametrize("seed", range(5))
def test_roots_match_pymerkle(seed):
    """pymerkle's default settings (sha256, security prefixes on) are RFC 9162 hashing."""
    rng = random.Random(seed)
    size = rng.randint(1, 300)
    leaves = [rng.randbytes(rng.randint(0, 64)) for _ in range(size)]
    ours = _log(leaves)
    theirs = pymerkle.InmemoryTree(algorithm="sha256", disable_security=False)
    for leaf in leaves:
        theirs.append_entry(leaf)
    for n in range(size + 1):
        assert ours.root(n) == theirs.get_root(n), n


def test_out_of_range_requests_are_refused():
    log = _log(LEAVES[:5])
    with pytest.raises(MerkleError, match="out of range"):
        log.root(6)
    with pytest.raises(MerkleError, match="out of range"):
        log.inclusion_proof(5, 5)
    with pytest.raises(MerkleError, match="out of range"):
        log.inclusion_proof(0, 0)
    with pytest.raises(MerkleError, match="0 < old_size"):
        log.consistency_proof(0, 5)
    with pytest.raises(MerkleError, match="0 < old_size"):
        log.consistency_proof(4, 3)
    with pytest.raises(MerkleError, match="integer"):
        log.root(True)
    assert log.consistency_proof(3, 3) == []


def test_proof_errors_say_what_is_wrong():
    log = _log(LEAVES[:7])
    root, proof = log.root(), log.inclusion_proof(2)
    with pytest.raises(ProofError, match="not below tree size"):
        verify_inclusion(log.leaf_hash(2), 7, 7, proof, root)
    with pytest.raises(ProofError, match="too few"):
        verify_inclusion(log.leaf_hash(2), 2, 7, proof[:-1], root)
    with pytest.raises(ProofError, match="more than"):
        verify_inclusion(log.leaf_hash(2), 2, 7, [*proof, proof[0]], root)
    with pytest.raises(ProofError, match="altered"):
        verify_inclusion(log.leaf_hash(3), 2, 7, proof, root)
    cproof = log.consistency_proof(3)
    with pytest.raises(ProofError, match="smaller"):
        verify_consistency(7, 3, root, log.root(3), cproof)
    with pytest.raises(ProofError, match="does not extend"):
        verify_consistency(3, 7, log.root(3), log.root(6), cproof)
    with pytest.raises(ProofError, match="forked"):
        verify_consistency(3, 3, log.root(3), root, [])


# -- properties ------------------------------------------------------------------------

_BIG_LOG = _log([n.to_bytes(4, "big") for n in range(3000)])


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_inclusion_proof_verifies_and_any_bit_flip_fails(data):
    size = data.draw(st.integers(1, _BIG_LOG.size), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    root = _BIG_LOG.root(size)
    proof = _BIG_LOG.inclusion_proof(index, size)
    leaf = _BIG_LOG.leaf_hash(index)
    verify_inclusion(leaf, index, size, proof, root)
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1), label="entry")
        bit = data.draw(st.integers(0, 255), label="bit")
        tampered = [*proof]
        tampered[which] = _flip(proof[which], bit)
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, tampered, root)
    with pytest.raises(ProofError):
        verify_inclusion(_flip(leaf, data.draw(st.integers(0, 255))), index, size, proof, root)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_consistency_proof_verifies_and_any_bit_flip_fails(data):
    new = data.draw(st.integers(1, _BIG_LOG.size), label="new")
    old = data.draw(st.integers(1, new), label="old")
    old_root, new_root = _BIG_LOG.root(old), _BIG_LOG.root(new)
    proof = _BIG_LOG.consistency_proof(old, new)
    verify_consistency(old, new, old_root, new_root, proof)
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1), label="entry")
        bit = data.draw(st.integers(0, 255), label="bit")
        tampered = [*proof]
        tampered[which] = _flip(proof[which], bit)
        with pytest.raises(ProofError):
            verify_consistency(old, new, old_root, new_root, tampered)
    if old < new:
        with pytest.raises(ProofError):
            verify_consistency(old, new, old_root, _flip(new_root, 7), proof)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=80))
def test_root_of_any_tree_matches_the_reference(leaves):
    log = _log(leaves)
    assert log.root() == ref_mth(leaves)


# -- saving and resuming the tree ----------------------------------------------------------


def _tree(size: int) -> MerkleLog:
    tree = MerkleLog()
    for n in range(size):
        tree.append(b"leaf %d" % n)
    return tree


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 8, 9, 100, 257])
def test_a_tree_resumed_from_its_subtrees_is_the_same_tree(size):
    whole = _tree(size + 20)
    levels = whole.subtrees(0, size)
    assert [len(level) // 32 for level in levels] == [size >> h for h in range(len(levels))]
    resumed = MerkleLog.from_levels(levels, size)
    assert resumed.size == size and resumed.root() == whole.root(size)
    for n in range(size, size + 20):  # and it grows like the original
        resumed.append(b"leaf %d" % n)
    assert resumed.root() == whole.root()
    for old in range(1, size + 21, 7):
        assert resumed.consistency_proof(old) == whole.consistency_proof(old)
        assert resumed.inclusion_proof(old - 1) == whole.inclusion_proof(old - 1)


def test_subtrees_appended_level_by_level_are_the_levels_of_the_larger_tree():
    tree = _tree(300)
    levels = [bytearray(level) for level in tree.subtrees(0, 5)]
    for old, new in [(5, 6), (6, 64), (64, 65), (65, 300)]:
        for level, hashes in enumerate(tree.subtrees(old, new)):
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += hashes
    assert MerkleLog.from_levels(levels, 300).root() == tree.root()


def test_levels_that_do_not_fit_the_size_are_refused():
    levels = _tree(10).subtrees(0, 10)
    with pytest.raises(MerkleError, match="has 4 levels, not 3"):
        MerkleLog.from_levels(levels[:3], 10)
    with pytest.raises(MerkleError, match="level 1 of a tree of 10 leaves holds 160 bytes"):
        MerkleLog.from_levels([levels[0], levels[1][:-32], *levels[2:]], 10)
    with pytest.raises(MerkleError, match="non-negative integer"):
        MerkleLog.from_levels(levels, -1)
    with pytest.raises(MerkleError, match="old size 5 is larger"):
        _tree(10).subtrees(5, 4)
