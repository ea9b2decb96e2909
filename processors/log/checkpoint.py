"""C2SP signed notes and transparency-log checkpoints.

Signed note (https://c2sp.org/signed-note, as golang.org/x/mod/sumdb/note writes it)::

    <text, one or more lines, ending in a newline>
    <blank line>
    — <key name> <base64(key ID (4 bytes, big-endian) || Ed25519 signature (64 bytes))>
    ...

The signature covers the UTF-8 bytes of the text, final newline included, blank line
excluded. The text is split from the signatures at the *last* blank line. Notes are
UTF-8 with no ASCII control character other than newline. Key names are non-empty and
contain neither Unicode spaces nor ``+``. For Ed25519 (signature type 0x01)::

    key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]

Keys travel as text, in Go's format: a verifier key is
``<name>+<8 hex digits of key ID>+<base64(0x01 || public key)>``, a signer key
``PRIVATE+KEY+<name>+<key ID hex>+<base64(0x01 || 32-byte seed)>``.

Checkpoint (https://c2sp.org/tlog-checkpoint): a signed note whose text is::

    <origin>
    <tree size, ASCII decimal, no leading zeros>
    <base64 of the RFC 6962/9162 root hash (32 bytes)>
    [extension lines, non-empty, opaque]

Standard base64 (RFC 4648 §4, with padding) everywhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from processors.crypto.keys import SigningKey, jwk_thumbprint, raw_public_key
from processors.exceptions import VerificationError
from processors.log.merkle import HASH_SIZE

__all__ = [
    "NoteError",
    "CheckpointError",
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "NoteSigner",
    "NoteVerifier",
    "Checkpoint",
    "key_id",
    "sign_note",
    "open_note",
    "sign_checkpoint",
    "verify_checkpoint",
]

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100  # as Go; C2SP requires accepting at least 16
_SIG_PREFIX = "\u2014 "  # EM DASH, SPACE
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class NoteError(VerificationError):
    """A signed note is malformed, or no trusted key's signature on it verifies."""


class CheckpointError(NoteError):
    """A checkpoint's text is not a valid C2SP tlog-checkpoint body."""


def _check_name(name: str, what: str = "key name") -> None:
    if not isinstance(name, str) or not name:
        raise NoteError(f"a {what} must be a non-empty string")
    if any(ch.isspace() for ch in name) or "+" in name:
        raise NoteError(
            f"{what} {name!r} contains a space or a '+'",
            hint="use a schema-less URL such as example.com/lineage",
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError(f"{what} {name!r} is not valid UTF-8") from exc


def key_id(name: str, public_key: bytes, alg: int = ALG_ED25519) -> bytes:
    """C2SP signed-note key ID: SHA-256(name || 0x0A || alg || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise NoteError(f"{what} is not valid standard base64") from exc


@dataclass(frozen=True, repr=False)
class NoteVerifier:
    """An Ed25519 note-verifier key: a name and a public key."""

    name: str
    public_key: Ed25519PublicKey = field(repr=False, compare=False)
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        object.__setattr__(self, "key_id", key_id(self.name, raw_public_key(self.public_key)))

    def __repr__(self) -> str:
        return f"NoteVerifier({self.name}+{self.key_id_hex})"

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()

    @property
    def vkey(self) -> str:
        """The verifier key as text: ``<name>+<key ID hex>+<base64(0x01 || public key)>``."""
        data = bytes([ALG_ED25519]) + raw_public_key(self.public_key)
        return f"{self.name}+{self.key_id_hex}+{base64.b64encode(data).decode()}"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key string (Go's ``note.NewVerifier`` format)."""
        parts = vkey.split("+", 2) if isinstance(vkey, str) else []
        if len(parts) != 3:
            raise NoteError(
                "a verifier key has the form <name>+<8 hex digits>+<base64 key>",
                hint="e.g. example.com/lineage+1a2b3c4d+AXyz...",
            )
        name, hex_id, key64 = parts
        _check_name(name)
        if not _HEX8.fullmatch(hex_id):
            raise NoteError(f"verifier key id {hex_id!r} is not 8 hex digits")
        data = _b64decode(key64, "the verifier key data")
        if not data or data[0] != ALG_ED25519:
            alg = data[0] if data else None
            raise NoteError(f"verifier key algorithm {alg} is not Ed25519 (1)")
        if len(data) != 1 + 32:
            raise NoteError(f"an Ed25519 verifier key is 32 bytes, this one is {len(data) - 1}")
        if key_id(name, data[1:]) != bytes.fromhex(hex_id):
            raise NoteError(
                f"verifier key id {hex_id} does not match the name and key "
                f"(expected {key_id(name, data[1:]).hex()}): the key text is corrupt"
            )
        return cls(name, Ed25519PublicKey.from_public_bytes(data[1:]))

    def verify(self, message: bytes, signature: bytes) -> None:
        """Verify an Ed25519 signature over ``message`` or raise NoteError."""
        if len(signature) != 64:
            raise NoteError(
                f"signature by {self.name}+{self.key_id_hex} is {len(signature)} bytes, "
                "an Ed25519 signature is 64"
            )
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature as exc:
            raise NoteError(
                f"the signature by {self.name}+{self.key_id_hex} does not verify: "
                "the note text has been altered or was signed by another key"
            ) from exc


@dataclass(frozen=True)
class NoteSigner:
    """A named Ed25519 key that signs notes."""

    name: str
    key: SigningKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.key.public_key)

    @property
    def key_id(self) -> bytes:
        return self.verifier.key_id

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def to_skey(self) -> str:
        """The secret signer key as text (``PRIVATE+KEY+<name>+<id>+<base64(0x01||seed)>``)."""
        seed = self.key.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        data = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{data}"

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse a signer key string (Go's ``note.NewSigner`` format)."""
        parts = skey.split("+", 4) if isinstance(skey, str) else []
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError(
                "a signer key has the form PRIVATE+KEY+<name>+<8 hex digits>+<base64 seed>"
            )
        _, _, name, hex_id, key64 = parts
        _check_name(name)
        if not _HEX8.fullmatch(hex_id):
            raise NoteError(f"signer key id {hex_id!r} is not 8 hex digits")
        data = _b64decode(key64, "the signer key data")
        if not data or data[0] != ALG_ED25519:
            raise NoteError("the signer key algorithm is not Ed25519 (1)")
        if len(data) != 1 + 32:
            raise NoteError(f"an Ed25519 seed is 32 bytes, this one is {len(data) - 1}")
        private = Ed25519PrivateKey.from_private_bytes(data[1:])
        signer = cls(name, SigningKey(private, jwk_thumbprint(private.public_key())))
        if signer.key_id != bytes.fromhex(hex_id):
            raise NoteError(
                f"signer key id {hex_id} does not match the name and key: the key text is corrupt"
            )
        return signer


def _check_note_chars(text: str, what: str) -> bytes:
    """C2SP: valid UTF-8 with no ASCII control characters other than newline."""
    for n, ch in enumerate(text):
        if ch < " " and ch != "\n":
            raise NoteError(f"{what} has control character {ch!r} at offset {n}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError(f"{what} is not valid UTF-8: {exc.reason}") from exc


def sign_note(text: str, signers: NoteSigner | Sequence[NoteSigner]) -> str:
    """Sign ``text`` (which must end in a newline) with each signer; return the note."""
    if isinstance(signers, NoteSigner):
        signers = [signers]
    if not signers:
        raise NoteError("a note needs at least one signer")
    if not isinstance(text, str) or not text.endswith("\n"):
        raise NoteError("note text must end in a newline")
    message = _check_note_chars(text, "the note text")
    lines = []
    for signer in signers:
        blob = signer.key_id + signer.sign(message)
        lines.append(f"{_SIG_PREFIX}{signer.name} {base64.b64encode(blob).decode()}\n")
    return text + "\n" + "".join(lines)


def open_note(
    note: str | bytes, verifiers: NoteVerifier | Iterable[NoteVerifier]
) -> tuple[str, tuple[str, ...]]:
    """Return (text, names of the known keys whose signatures verified) or raise NoteError.

    C2SP signed-note: (1) the note is UTF-8 with no control character but newline;
    (2) it splits at its last blank line into text (ending in a newline) and signature
    lines (ending in a newline); (3) every signature line is ``— <name> <base64>``
    with a valid key name and at least 4+1 bytes; (4) signatures by unknown keys (name
    and key ID not both known) are ignored, repeated ones by one known key counted once;
    (5) every signature by a known key must verify; (6) at least one must.
    """
    if isinstance(verifiers, NoteVerifier):
        verifiers = [verifiers]
    known: dict[tuple[str, bytes], list[NoteVerifier]] = {}
    for verifier in verifiers:
        known.setdefault((verifier.name, verifier.key_id), []).append(verifier)
    # (1) UTF-8, no control characters but newline.
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError(f"the note is not valid UTF-8: {exc.reason}") from exc
    if not isinstance(note, str):
        raise NoteError(f"a note is text, not {type(note).__name__}")
    _check_note_chars(note, "the note")
    # (2) Split at the last blank line.
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError(
            "the note has no blank line before its signatures",
            hint="a signed note is text ending in a newline, a blank line, then signature lines",
        )
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("the note's signature block is empty or does not end in a newline")
    message = text.encode("utf-8")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    verified: list[str] = []
    seen: set[tuple[str, bytes]] = set()
    unknown: list[str] = []
    for n, line in enumerate(lines, 1):
        # (3) Signature line syntax.
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(
                f"signature line {n} does not start with an em dash (U+2014) and a space: "
                f"{line[:40]!r}"
            )
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep or not b64:
            raise NoteError(f"signature line {n} has no base64 signature after the key name")
        _check_name(name)
        blob = _b64decode(b64, f"the signature on line {n}")
        if len(blob) < 5:
            raise NoteError(f"the signature on line {n} is shorter than a key ID and 1 byte")
        kid, signature = blob[:4], blob[4:]
        # (4) Ignore unknown keys and repeated signatures of one known key.
        candidates = known.get((name, kid))
        if not candidates:
            unknown.append(f"{name}+{kid.hex()}")
            continue
        if len(candidates) > 1:
            raise NoteError(f"two trusted verifier keys are both {name}+{kid.hex()}")
        if (name, kid) in seen:
            continue
        seen.add((name, kid))
        # (5) A known key's signature must verify.
        candidates[0].verify(message, signature)
        verified.append(name)
    # (6) At least one known signature.
    if not verified:
        trusted = ", ".join(f"{n}+{k.hex()}" for n, k in known) or "none"
        raise NoteError(
            f"the note has no signature by a trusted key (signed by: "
            f"{', '.join(unknown) or 'nobody'}; trusted: {trusted})",
            hint="check that the verifier key is the log's, and the note its checkpoint",
        )
    return text, tuple(verified)


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin or "\n" in self.origin:
            raise CheckpointError("the checkpoint origin must be one non-empty line")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointError("the checkpoint tree size must be an integer")
        if not 0 <= self.size < 1 << 64:
            raise CheckpointError(f"tree size {self.size} is not an unsigned 64-bit integer")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"the root hash must be {HASH_SIZE} bytes")
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for line in self.extensions:
            if not isinstance(line, str) or not line or "\n" in line:
                raise CheckpointError("checkpoint extension lines must be non-empty single lines")

    def body(self) -> str:
        """The note text: ``origin\\nsize\\nbase64(root)\\n`` plus any extension lines."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "".join(line + "\n" for line in [*lines, *self.extensions])

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the text of an opened note)."""
        if not isinstance(text, str) or not text.endswith("\n"):
            raise CheckpointError("a checkpoint body must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(
                f"a checkpoint has at least 3 lines (origin, size, root hash), this has "
                f"{len(lines)}"
            )
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise CheckpointError("the checkpoint origin line is empty")
        if not _DECIMAL.fullmatch(size_text) or len(size_text) > 20:
            raise CheckpointError(
                f"tree size {size_text[:30]!r} is not a decimal number without leading zeros"
            )
        try:
            root = base64.b64decode(root_text.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise CheckpointError(f"root hash {root_text[:60]!r} is not base64") from exc
        if len(root) != HASH_SIZE:
            raise CheckpointError(f"the root hash is {len(root)} bytes, not {HASH_SIZE}")
        if base64.b64encode(root).decode() != root_text:
            raise CheckpointError("the root hash is not in canonical base64")
        for n, line in enumerate(extensions, 4):
            if not line:
                raise CheckpointError(f"checkpoint line {n} (an extension line) is empty")
        return cls(origin, int(size_text), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The checkpoint as a signed note. trustplane writes no extension lines (C2SP: NOT
    RECOMMENDED, not auditable by monitors)."""
    if checkpoint.extensions:
        raise CheckpointError("trustplane does not sign checkpoints with extension lines")
    return sign_note(checkpoint.body(), signer)


def verify_checkpoint(
    note: str | bytes, verifier: NoteVerifier, *, origin: str | None = None
) -> Checkpoint:
    """Open the note with ``verifier``, parse its text as a checkpoint and return it.

    (1) the note's signature by ``verifier`` verifies (see ``open_note``); (2) its text is
    a checkpoint body; (3) when ``origin`` is given, the checkpoint is that log's.
    """
    text, _ = open_note(note, [verifier])
    checkpoint = Checkpoint.parse(text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(
            f"the checkpoint is for log {checkpoint.origin!r}, expected {origin!r}"
        )
    return checkpoint
