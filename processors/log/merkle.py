"""RFC 9162 Merkle tree: an append-only log with inclusion and consistency proofs.

Hashing (RFC 9162 §2.1.1, identical to RFC 6962 §2.1), with HASH = SHA-256:

- the hash of an empty tree is ``MTH({}) = SHA-256("")``;
- a leaf hash is ``SHA-256(0x00 || leaf)``;
- an interior node is ``SHA-256(0x01 || left || right)``, where the left subtree holds
  the largest power of two of leaves strictly smaller than the tree size.

`MerkleLog` keeps every *complete* perfect subtree (level ``h`` holds the hashes of the
aligned subtrees of ``2**h`` leaves) in one contiguous ``bytearray`` per level: about
``2 * n * 32`` bytes for ``n`` leaves, ~64 MB for a million. An append hashes the leaf
and completes, on average, one parent. The root of any past size and every proof node
is then a fold of at most ``log2(n)`` stored subtrees, so roots are ``O(log n)`` and
proofs ``O(log² n)`` hashes, whatever the size.

The verifiers follow the algorithms of RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
(consistency); their comments number the steps as the RFC does. Two checks come from
the Go reference implementation (transparency-dev/merkle), and are marked "policy":
hashes that are not 32 bytes are refused, and a consistency proof from the empty tree
(``old_size == 0``) is refused, since it proves nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from processors.exceptions import TrustplaneError, VerificationError

__all__ = [
    "HASH_SIZE",
    "EMPTY_ROOT",
    "MerkleError",
    "ProofError",
    "MerkleLog",
    "leaf_hash",
    "node_hash",
    "verify_inclusion",
    "verify_consistency",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256


class MerkleError(TrustplaneError):
    """A Merkle log was asked for something it cannot give (a size or index out of range)."""


class ProofError(VerificationError):
    """An inclusion or consistency proof does not verify, or is malformed."""


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``SHA-256(0x00 || leaf)``."""
    return _sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``SHA-256(0x01 || left || right)``."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleLog:
    """An append-only RFC 9162 Merkle tree over leaf byte strings.

    Leaves are numbered from 0 in append order. ``root(size)``, ``inclusion_proof`` and
    ``consistency_proof`` work for any size the log has had, not just the current one.
    Not thread-safe: one writer, or an external lock.
    """

    def __init__(self) -> None:
        # _levels[h][32*i : 32*(i+1)] = hash of the perfect subtree over leaves
        # [i * 2**h, (i+1) * 2**h). Only complete subtrees are stored.
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0

    @classmethod
    def from_levels(cls, levels: Sequence[bytes | bytearray], size: int) -> MerkleLog:
        """The log of ``size`` leaves whose complete subtrees are ``levels`` (as
        :meth:`subtrees` gives them, from ``old_size`` 0): level ``h`` holds exactly the
        ``size >> h`` hashes of the perfect subtrees of ``2**h`` leaves. Nothing is
        rehashed: the caller vouches for the hashes (e.g. a checksummed snapshot)."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise MerkleError(f"a tree size must be a non-negative integer, not {size!r}")
        height = max(1, size.bit_length())
        if len(levels) != height:
            raise MerkleError(f"a tree of {size} leaves has {height} levels, not {len(levels)}")
        tree = cls()
        tree._levels = []
        for level, hashes in enumerate(levels):
            expected = (size >> level) * HASH_SIZE
            if len(hashes) != expected:
                raise MerkleError(
                    f"level {level} of a tree of {size} leaves holds {expected} bytes of "
                    f"hashes, not {len(hashes)}"
                )
            tree._levels.append(bytearray(hashes))
        tree._size = size
        return tree

    # -- writing ---------------------------------------------------------------------

    def append(self, leaf: bytes) -> int:
        """Append one leaf (its bytes, not its hash); return its index."""
        return self.append_leaf_hash(_sha256(_LEAF_PREFIX + leaf).digest())

    def append_leaf_hash(self, hash_: bytes) -> int:
        """Append a leaf given as its leaf hash (e.g. when rebuilding from a store)."""
        if len(hash_) != HASH_SIZE:
            raise MerkleError(f"a leaf hash is {HASH_SIZE} bytes, this one is {len(hash_)}")
        levels = self._levels
        index = self._size
        levels[0] += hash_
        self._size = index + 1
        node, level, position = bytes(hash_), 0, index
        # Each time the new node is a right child, its parent subtree is now complete.
        while position & 1:
            start = (position - 1) * HASH_SIZE
            node = _sha256(_NODE_PREFIX + levels[level][start : start + HASH_SIZE] + node).digest()
            level += 1
            position >>= 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += node
        return index

    # -- reading ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    def leaf_hash(self, index: int) -> bytes:
        self._check_index(index, self._size)
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def subtrees(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The complete subtrees the tree gained growing from ``old_size`` to ``new_size``
        leaves, per level (level ``h``: hashes ``old_size >> h`` to ``new_size >> h``);
        appended level by level to those of ``old_size``, they are the levels of
        ``new_size`` (see :meth:`from_levels`)."""
        new_size = self._size if new_size is None else new_size
        self._check_size(new_size)
        self._check_size(old_size)
        if old_size > new_size:
            raise MerkleError(f"old size {old_size} is larger than new size {new_size}")
        return [
            bytes(hashes[(old_size >> level) * HASH_SIZE : (new_size >> level) * HASH_SIZE])
            for level, hashes in enumerate(self._levels[: max(1, new_size.bit_length())])
        ]

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all of them)."""
        size = self._size if size is None else size
        self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        return self._range_hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(index, D[0:size]): sibling hashes, leaf level first."""
        size = self._size if size is None else size
        self._check_size(size)
        self._check_index(index, size)
        path: list[bytes] = []
        start, end = 0, size
        # Walk from the root down to the leaf; PATH lists the nodes bottom-up.
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                path.append(self._range_hash(start + k, end))
                end = start + k
            else:
                path.append(self._range_hash(start, start + k))
                start += k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]) = SUBPROOF(m, D[n], true)."""
        new_size = self._size if new_size is None else new_size
        self._check_size(new_size)
        if isinstance(old_size, bool) or not isinstance(old_size, int):
            raise MerkleError(f"old_size must be an integer, not {type(old_size).__name__}")
        if not 0 < old_size <= new_size:
            raise MerkleError(
                f"a consistency proof needs 0 < old_size <= new_size, got {old_size} and "
                f"{new_size}",
                hint="from the empty tree nothing needs proving; verifiers refuse old_size 0",
            )
        proof: list[bytes] = []
        m, start, end, complete = old_size, 0, new_size, True
        while True:
            n = end - start
            if m == n:
                # SUBPROOF(m, D[m], b): [] if b (the verifier has this root), else [MTH].
                if not complete:
                    proof.append(self._range_hash(start, end))
                break
            k = _split(n)
            if m <= k:
                proof.append(self._range_hash(start + k, end))
                end = start + k
            else:
                proof.append(self._range_hash(start, start + k))
                start += k
                m -= k
                complete = False
        proof.reverse()
        return proof

    # -- internals -------------------------------------------------------------------

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end): a node of the tree, so ``start`` is aligned to a power
        of two >= end - start and the range splits, left to right, into stored perfect
        subtrees of decreasing size; the node is their fold from the right."""
        levels = self._levels
        pieces: list[bytes] = []
        position = start
        while position < end:
            height = (end - position).bit_length() - 1
            offset = (position >> height) * HASH_SIZE
            pieces.append(bytes(levels[height][offset : offset + HASH_SIZE]))
            position += 1 << height
        node = pieces[-1]
        for piece in reversed(pieces[:-1]):
            node = _sha256(_NODE_PREFIX + piece + node).digest()
        return node

    def _check_size(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise MerkleError(f"a tree size must be an integer, not {type(size).__name__}")
        if not 0 <= size <= self._size:
            raise MerkleError(f"tree size {size} is out of range: the log has {self._size} leaves")

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int):
            raise MerkleError(f"a leaf index must be an integer, not {type(index).__name__}")
        if not 0 <= index < size:
            raise MerkleError(f"leaf index {index} is out of range for tree size {size}")


# -- verification ---------------------------------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    """Policy (transparency-dev/merkle): every hash is exactly 32 bytes."""
    if not isinstance(value, (bytes, bytearray)):
        raise ProofError(f"{what} must be bytes, not {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes; a SHA-256 hash is {HASH_SIZE}")


def _check_uint(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{what} must be an integer, not {type(value).__name__}")
    if not 0 <= value < 1 << 64:
        raise ProofError(f"{what} {value} is not an unsigned 64-bit integer")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Return nothing if ``proof`` proves that ``leaf_hash`` is leaf ``index`` of the tree
    of ``size`` leaves whose root is ``root``; raise ProofError otherwise.

    RFC 9162 §2.1.3.2 (hash = leaf_hash, leaf_index = index, tree_size = size,
    inclusion_path = proof, root_hash = root).
    """
    _check_uint(index, "leaf index")
    _check_uint(size, "tree size")
    # Policy: the leaf hash, the root and every path entry are 32-byte hashes.
    _check_hash(leaf_hash, "the leaf hash")
    _check_hash(root, "the root hash")
    for n, p in enumerate(proof):
        _check_hash(p, f"inclusion path entry {n}")

    # (1) If leaf_index >= tree_size, fail.
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    # (2) Set fn to leaf_index and sn to tree_size - 1.
    fn, sn = index, size - 1
    # (3) Set r to hash.
    r = bytes(leaf_hash)
    # (4) For each value p in the inclusion_path array:
    for p in proof:
        # (4a) If sn is 0, stop the iteration and fail.
        if sn == 0:
            raise ProofError(
                f"the inclusion path has {len(proof)} entries, more than a leaf of a tree of "
                f"size {size} needs"
            )
        # (4b) If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # (4b.i) Set r to HASH(0x01 || p || r).
            r = node_hash(p, r)
            # (4b.ii) If LSB(fn) is not set, right-shift fn and sn equally until either
            # LSB(fn) is set or fn is 0.
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            # (4b, otherwise) Set r to HASH(0x01 || r || p).
            r = node_hash(r, p)
        # (4c) Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # (5) sn must be 0 and r must equal root_hash.
    if sn != 0:
        raise ProofError(
            f"the inclusion path has {len(proof)} entries, too few for leaf {index} of a tree "
            f"of size {size}"
        )
    if r != root:
        raise ProofError(
            f"the inclusion proof for leaf {index} does not lead to the root of the tree of "
            f"size {size}: the leaf, the path or the root has been altered"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Return nothing if ``proof`` proves that the tree of ``new_size`` leaves (root
    ``new_root``) extends the tree of ``old_size`` leaves (root ``old_root``), i.e. the
    log only appended; raise ProofError otherwise.

    RFC 9162 §2.1.4.2 (first = old_size, second = new_size, first_hash = old_root,
    second_hash = new_root, consistency_path = proof), for 0 < first < second; the
    cases outside that range are handled first, as Go's transparency-dev/merkle does.
    """
    _check_uint(old_size, "old size")
    _check_uint(new_size, "new size")
    # Policy: every path entry is a 32-byte hash.
    for n, c in enumerate(proof):
        _check_hash(c, f"consistency path entry {n}")

    # (0a) The log only grows.
    if new_size < old_size:
        raise ProofError(f"new size {new_size} is smaller than old size {old_size}")
    # (0b) Policy: a proof from the empty tree proves nothing (every tree extends it).
    if old_size == 0:
        raise ProofError(
            "old size is 0: a consistency proof from the empty tree proves nothing",
            hint="skip the consistency check when the previous checkpoint is empty",
        )
    # (0c) Same size: nothing to prove; the proof must be empty and the roots identical
    # (compared as opaque bytes, as Go does).
    if old_size == new_size:
        if proof:
            raise ProofError(f"sizes are equal ({old_size}) but the proof is not empty")
        if old_root != new_root:
            raise ProofError(
                f"two different roots for the same tree size {old_size}: the log has "
                "forked or a root has been altered"
            )
        return
    _check_hash(old_root, "the old root hash")
    _check_hash(new_root, "the new root hash")

    # (1) If consistency_path is an empty array, fail.
    if not proof:
        raise ProofError(f"the consistency proof from {old_size} to {new_size} is empty")
    path = [bytes(c) for c in proof]
    # (2) If first is an exact power of 2, prepend first_hash to consistency_path.
    if old_size & (old_size - 1) == 0:
        path.insert(0, bytes(old_root))
    # (3) Set fn to first - 1 and sn to second - 1.
    fn, sn = old_size - 1, new_size - 1
    # (4) If LSB(fn) is set, right-shift both fn and sn equally until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # (5) Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # (6) For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # (6a) If sn is 0, stop the iteration and fail.
        if sn == 0:
            raise ProofError(
                f"the consistency proof from {old_size} to {new_size} has more entries than "
                "those trees need"
            )
        # (6b) If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # (6b.i) Set fr to HASH(0x01 || c || fr); (6b.ii) set sr to HASH(0x01 || c || sr).
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            # (6b.iii) If LSB(fn) is not set, right-shift fn and sn equally until either
            # LSB(fn) is set or fn is 0.
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            # (6b, otherwise) Set sr to HASH(0x01 || sr || c).
            sr = node_hash(sr, c)
        # (6c) Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # (7) fr must equal first_hash, sr must equal second_hash, and sn must be 0.
    if sn != 0:
        raise ProofError(f"the consistency proof from {old_size} to {new_size} has too few entries")
    if fr != old_root:
        raise ProofError(
            f"the consistency proof does not lead to the old root of size {old_size}: the "
            "proof or the old root has been altered"
        )
    if sr != new_root:
        raise ProofError(
            f"the tree of size {new_size} does not extend the tree of size {old_size}: the "
            "log has been rewritten, or the proof or the new root has been altered"
        )
