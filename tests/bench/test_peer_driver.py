"""The peer benchmark driver (:mod:`bench.e2e.peer`) on a small run of the real peer."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest

from bench.e2e import peer

with warnings.catch_warnings():
    # The peer's import packages warn about their old distribution names.
    warnings.simplefilter("ignore", DeprecationWarning)
    pytest.importorskip("agentmesh", reason=f"{peer.PEER_PACKAGE} is not installed")

COUNT = 50


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return peer.peer_paths(count=COUNT, rounds=1)


def test_figures_are_positive_and_finite(result: dict[str, Any]) -> None:
    assert result["package"] == peer.PEER_PACKAGE
    assert result["version"] == peer.peer_version()
    for name in ("full_stack_us", "signed_us"):
        value = result[name]
        assert isinstance(value, float)
        assert math.isfinite(value) and value > 0
        assert result["rounds"][name] == [value]
    # The signed path does strictly more than the full stack (an Ed25519 verify and an
    # HMAC-signed entry per action), and that is not lost in the noise.
    assert result["signed_us"] > result["full_stack_us"]


def test_signed_path_verified_every_signature(result: dict[str, Any]) -> None:
    signatures = result["signatures"]
    assert signatures["verified_per_round"] == [COUNT]
    assert signatures["rejected_per_round"] == [0]
    assert signatures["genuine_accepted"] is True
    assert signatures["tampered_signature_rejected"] is True
    assert signatures["tampered_request_rejected"] is True
    assert signatures["wrong_key_rejected"] is True


def test_audit_chains_hold_one_entry_per_action(result: dict[str, Any]) -> None:
    full, signed = result["audit"]["full_stack"], result["audit"]["signed"]
    assert full["entries_per_round"] == [COUNT]
    assert full["chain_verified"] is True and full["chain_errors"] == []
    assert signed["entries_per_round"] == [COUNT]
    assert signed["chain_verified"] is True
    assert signed["hmac_entries_per_round"] == [COUNT]
    assert signed["hmac_chain_verified"] is True and signed["hmac_errors"] == []


def test_workload_mixes_allowed_and_denied(result: dict[str, Any]) -> None:
    for path in ("full_stack", "signed"):
        outcomes = result["outcomes"][path]
        assert sum(outcomes.values()) == COUNT
        assert outcomes.get("allowed", 0) > 0
        assert COUNT - outcomes.get("allowed", 0) > 0
    # Both paths decided the same actions the same way (all signatures are genuine).
    assert result["outcomes"]["full_stack"] == result["outcomes"]["signed"]


def test_missing_peer_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer, "peer_version", lambda: None)
    with pytest.raises(peer.PeerUnavailable, match=r"pip install -e '\.\[bench\]'"):
        peer.peer_paths(count=1, rounds=1)
