"""C2SP signed notes and checkpoints, with known answers from golang.org/x/mod/sumdb/note."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from processors.crypto.keys import SigningKey, generate_signing_key
from processors.log.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteError,
    NoteSigner,
    NoteVerifier,
    key_id,
    open_note,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
)

# Known answers: golang.org/x/mod sumdb/note/note_test.go (TestSign, TestOpen).
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdn"
    "gotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnW"
    "Lox33WWd1RvMc+QQ=\n"
)
GO_NOTE = TEXT + "\n" + PETER_SIG


def test_key_id_known_answer():
    verifier = NoteVerifier.from_vkey(PETER_VKEY)
    assert verifier.key_id_hex == "c74f20a3"
    raw = base64.b64decode(PETER_VKEY.split("+")[2])[1:]
    assert key_id("PeterNeumann", raw).hex() == "c74f20a3"
    expected = hashlib.sha256(b"PeterNeumann\n\x01" + raw).digest()[:4]
    assert key_id("PeterNeumann", raw) == expected
    assert verifier.vkey == PETER_VKEY


def test_go_example_note_verifies():
    text, names = open_note(GO_NOTE, NoteVerifier.from_vkey(PETER_VKEY))
    assert text == TEXT
    assert names == ("PeterNeumann",)
    # bytes in, same answer
    assert open_note(GO_NOTE.encode(), [NoteVerifier.from_vkey(PETER_VKEY)])[0] == TEXT


def test_signing_reproduces_go_signature():
    signer = NoteSigner.from_skey(PETER_SKEY)
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.vkey == PETER_VKEY
    assert signer.to_skey() == PETER_SKEY
    assert sign_note(TEXT, signer) == GO_NOTE


def test_unknown_signatures_are_ignored_known_ones_count():
    peter, enoch = NoteVerifier.from_vkey(PETER_VKEY), NoteVerifier.from_vkey(ENOCH_VKEY)
    note = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(note, [peter])[1] == ("PeterNeumann",)
    assert open_note(note, [enoch])[1] == ("EnochRoot",)
    assert open_note(note, [peter, enoch])[1] == ("PeterNeumann", "EnochRoot")
    # repeated signatures by one key count once
    assert open_note(TEXT + "\n" + PETER_SIG * 3, [peter])[1] == ("PeterNeumann",)
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(note, [])


def test_a_known_key_with_a_bad_signature_rejects_the_note():
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]  # Go's "invalid signature" case
    with pytest.raises(NoteError, match=r"PeterNeumann\+c74f20a3 is 67 bytes"):
        open_note(TEXT + "\n" + bad, NoteVerifier.from_vkey(PETER_VKEY))
    altered = GO_NOTE.replace("cryptography", "Cryptography")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(altered, NoteVerifier.from_vkey(PETER_VKEY))


def test_same_name_other_key_is_unknown():
    """C2SP: signatures sharing a name (but not a key ID) with a known key are ignored."""
    impostor = NoteSigner("PeterNeumann", generate_signing_key())
    note = sign_note(TEXT, impostor)
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(note, NoteVerifier.from_vkey(PETER_VKEY))


@pytest.mark.parametrize(
    "note",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXg"
        "KvqfqdngotpRZb6KE6RyyBwJnAM=",
        TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXg"
        "KvqfqdngotpRZb6KE6RyyBwJnAM=\n",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG.replace("—", "-"),
        TEXT + "\n" + "— PeterNeumann\n",
        TEXT + "\n" + "— PeterNeumann !!!notbase64\n",
        TEXT + "\n" + "— PeterNeumann AAAA\n",
        TEXT + "\n" + "— a+b " + PETER_SIG.split(" ")[2],
        TEXT + "\n" + PETER_SIG * 101,
        "\r" + GO_NOTE,
    ],
    ids=lambda n: repr(n[-40:]),
)
def test_malformed_notes_are_rejected(note):
    with pytest.raises(NoteError):
        open_note(note, NoteVerifier.from_vkey(PETER_VKEY))


def test_invalid_utf8_is_rejected():
    with pytest.raises(NoteError, match="UTF-8"):
        open_note(b"\xff" + GO_NOTE.encode(), NoteVerifier.from_vkey(PETER_VKEY))


def test_text_may_contain_blank_lines_split_is_at_the_last():
    signer = NoteSigner("example.com/log", generate_signing_key())
    text = "para one\n\npara two\n"
    assert open_note(sign_note(text, signer), signer.verifier) == (text, ("example.com/log",))


def test_sign_note_refuses_bad_input():
    signer = NoteSigner.from_skey(PETER_SKEY)
    with pytest.raises(NoteError, match="newline"):
        sign_note("abc", signer)
    with pytest.raises(NoteError, match="control character"):
        sign_note("a\tb\n", signer)
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note(TEXT, [])


@pytest.mark.parametrize("name", ["", "has space", "a+b", "tab\there", "nbsp\u00a0x"])
def test_key_names_with_spaces_or_plus_are_refused(name):
    with pytest.raises(NoteError):
        NoteSigner(name, generate_signing_key())


def test_mangled_verifier_keys_are_refused():
    # as Go's TestNewVerifier: every single-byte change and every truncation fails
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(NoteError):
            NoteVerifier.from_vkey(mangled)
    for j in range(len(PETER_VKEY)):
        with pytest.raises(NoteError):
            NoteVerifier.from_vkey(PETER_VKEY[:j])
    # wrong-length key and unknown algorithm, each with a matching key hash (from Go)
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(NoteError):
            NoteVerifier.from_vkey(bad)


def test_mangled_signer_keys_are_refused():
    for i in range(len(PETER_SKEY)):
        mangled = PETER_SKEY[:i] + chr(ord(PETER_SKEY[i]) + 1) + PETER_SKEY[i + 1 :]
        with pytest.raises(NoteError):
            NoteSigner.from_skey(mangled)
    with pytest.raises(NoteError, match="PRIVATE"):
        NoteSigner.from_skey(PETER_VKEY)


def test_generated_keys_round_trip():
    signer = NoteSigner("example.com/lineage", generate_signing_key())
    again = NoteSigner.from_skey(signer.to_skey())
    assert again.key_id == signer.key_id
    verifier = NoteVerifier.from_vkey(signer.vkey)
    assert open_note(sign_note(TEXT, again), verifier)[1] == ("example.com/lineage",)
    assert "PRIVATE" not in repr(signer) and "PRIVATE" not in repr(verifier)


# -- checkpoints ------------------------------------------------------------------------

ROOT = hashlib.sha256(b"root").digest()


def test_checkpoint_body_and_parse():
    cp = Checkpoint("example.com/lineage", 20852163, ROOT)
    body = cp.body()
    assert body == f"example.com/lineage\n20852163\n{base64.b64encode(ROOT).decode()}\n"
    assert Checkpoint.parse(body) == cp


def test_extension_lines_are_preserved_on_read():
    text = Checkpoint("o", 1, ROOT).body() + "ext one\nx=2\n"
    cp = Checkpoint.parse(text)
    assert cp.extensions == ("ext one", "x=2")
    assert cp.body() == text


def test_the_c2sp_example_body_parses():
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = Checkpoint.parse(text)
    assert (cp.origin, cp.size, len(cp.root_hash)) == ("example.com/behind-the-sofa", 20852163, 32)


B64ROOT = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (f"o\n1\n{B64ROOT}", "newline"),
        ("o\n1\n", "at least 3 lines"),
        (f"\n1\n{B64ROOT}\n", "origin"),
        (f"o\n01\n{B64ROOT}\n", "leading zeros"),
        (f"o\n-1\n{B64ROOT}\n", "decimal"),
        (f"o\n1 \n{B64ROOT}\n", "decimal"),
        (f"o\n{2**64}\n{B64ROOT}\n", "64-bit"),
        ("o\n1\nAAAA\n", "3 bytes"),
        (f"o\n1\n{B64ROOT[:-1]}\n", "base64"),
        (f"o\n1\n{B64ROOT}\n\n", "empty"),
        (f"o\n1\n{B64ROOT}\next\n\nmore\n", "line 5"),
    ],
)
def test_malformed_checkpoints_are_rejected(text, match):
    with pytest.raises(CheckpointError, match=match):
        Checkpoint.parse(text)


def test_sign_and_verify_checkpoint():
    signer = NoteSigner("example.com/lineage", generate_signing_key())
    cp = Checkpoint("example.com/lineage", 42, ROOT)
    note = sign_checkpoint(cp, signer)
    assert note.startswith(cp.body() + "\n— example.com/lineage ")
    assert verify_checkpoint(note, signer.verifier) == cp
    assert verify_checkpoint(note, signer.verifier, origin="example.com/lineage") == cp
    with pytest.raises(CheckpointError, match="expected"):
        verify_checkpoint(note, signer.verifier, origin="example.com/other")
    # a changed tree size breaks the signature
    with pytest.raises(NoteError, match="does not verify"):
        verify_checkpoint(note.replace("\n42\n", "\n43\n"), signer.verifier)
    # another key's checkpoint is not trusted
    other = NoteSigner("example.com/lineage", generate_signing_key())
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        verify_checkpoint(sign_checkpoint(cp, other), signer.verifier)


def test_trustplane_writes_no_extension_lines():
    signer = NoteSigner("o", generate_signing_key())
    with pytest.raises(CheckpointError, match="extension"):
        sign_checkpoint(Checkpoint("o", 1, ROOT, ("ext",)), signer)


def test_a_signed_note_that_is_not_a_checkpoint_is_rejected():
    signer = NoteSigner("o", generate_signing_key())
    with pytest.raises(CheckpointError):
        verify_checkpoint(sign_note("just text\n", signer), signer.verifier)


def test_checkpoint_fields_are_validated():
    with pytest.raises(CheckpointError):
        Checkpoint("", 1, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("o\nx", 1, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("o", -1, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, ROOT[:31])


def test_seed_from_cryptography_key_gives_go_signer():
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[-1])[1:]
    signer = NoteSigner("PeterNeumann", SigningKey(Ed25519PrivateKey.from_private_bytes(seed), "k"))
    assert signer.vkey == PETER_VKEY
