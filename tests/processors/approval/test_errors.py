"""Every failed check is a VerificationError, whatever was checked."""

from __future__ import annotations

import pytest

from processors.approval.exceptions import (
    ApprovalExpiredError,
    ApprovalReusedError,
    ApprovalVerificationError,
    MalformedEnvelopeError,
    SeenStoreError,
)
from processors.approval.verify import verify_approval
from processors.crypto.keys import KeyError_, Keyset, SignatureError
from processors.exceptions import TrustplaneError, VerificationError
from processors.log.chain import ChainError
from processors.log.checkpoint import CheckpointError, NoteError
from processors.log.merkle import MerkleError, ProofError
from streams.sdk.executor import ApprovalRecordError


@pytest.mark.parametrize(
    "error",
    [
        ApprovalVerificationError,
        MalformedEnvelopeError,
        ApprovalExpiredError,
        ApprovalReusedError,
        SeenStoreError,
        ApprovalRecordError,
        ProofError,
        NoteError,
        CheckpointError,
        ChainError,
        SignatureError,
    ],
)
def test_each_failed_check_is_a_verification_error(error: type[Exception]) -> None:
    assert issubclass(error, VerificationError)
    assert issubclass(error, TrustplaneError)


def test_a_signature_error_is_still_a_key_error_for_its_callers() -> None:
    assert issubclass(SignatureError, KeyError_)


def test_asking_a_log_for_what_it_does_not_have_is_not_a_failed_check() -> None:
    assert not issubclass(MerkleError, VerificationError)


def test_one_except_clause_refuses_any_bad_approval() -> None:
    with pytest.raises(VerificationError, match="not JSON"):
        verify_approval(b"{", Keyset(), 0)
