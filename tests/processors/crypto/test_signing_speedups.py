"""The hot path's faster primitives give the very bytes of the slower ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.approval.statement import rfc3339_ms
from processors.crypto.keys import generate_signing_key, verify_signature

_KEY = generate_signing_key()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_libsodium_signatures_are_the_openssl_signatures(message: bytes) -> None:
    # Ed25519 is deterministic: libsodium (the gate's signer) and OpenSSL must agree
    signature = _KEY.sign(message)
    assert signature == _KEY.private_key.sign(message)
    _KEY.public_key.verify(signature, message)  # OpenSSL accepts it
    verify_signature(_KEY.public_key, signature, message)  # and so does the gate


def _rfc3339_by_datetime(ms: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=-62_135_596_800_000 + 1000, max_value=253_402_300_799_999))
def test_rfc3339_ms_matches_datetime_formatting(ms: int) -> None:
    assert rfc3339_ms(ms) == _rfc3339_by_datetime(ms)


def test_rfc3339_ms_examples() -> None:
    assert rfc3339_ms(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert rfc3339_ms(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
