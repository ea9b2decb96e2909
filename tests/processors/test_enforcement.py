import pytest

from processors.enforcement import Outcome, combine
from processors.verdict import Status, Verdict

LAYERS = ("authorization", "integrity")


def test_every_layer_allowing_approves():
    result = combine([Verdict.allow("authorization"), Verdict.allow("integrity")], LAYERS)
    assert result.outcome is Outcome.APPROVED
    assert result.reasons == ()


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (Verdict.deny("integrity", "replayed nonce"), "integrity: replayed nonce"),
        (Verdict.error("integrity", "boom"), "integrity: error: boom"),
        (Verdict("integrity", "MAYBE"), "unknown verdict status"),  # type: ignore[arg-type]
        (Verdict.deny("integrity"), "integrity: no reason given"),
    ],
)
def test_any_non_allow_denies(second, reason):
    result = combine([Verdict.allow("authorization"), second], LAYERS)
    assert result.outcome is Outcome.DENIED
    assert any(reason in r for r in result.reasons)


def test_missing_verdict_denies():
    result = combine([Verdict.allow("authorization")], LAYERS)
    assert result.outcome is Outcome.DENIED
    assert result.reasons == ("integrity: no verdict (fail closed)",)


def test_no_verdicts_at_all_denies():
    result = combine([], ())
    assert result.outcome is Outcome.DENIED
    assert "no layer gave a verdict" in result.reasons[0]


def test_review_holds_when_nothing_denies():
    result = combine([Verdict.allow("authorization"), Verdict.review("integrity", "odd")], LAYERS)
    assert result.outcome is Outcome.REVIEW
    assert result.reasons == ("integrity: odd",)


def test_deny_beats_review():
    result = combine(
        [Verdict.review("authorization", "odd"), Verdict.deny("integrity", "no")], LAYERS
    )
    assert result.outcome is Outcome.DENIED
    assert result.reasons == ("integrity: no",)


def test_all_verdicts_are_kept_as_evidence():
    verdicts = [Verdict.allow("authorization"), Verdict.deny("integrity", "x")]
    assert combine(verdicts, LAYERS).verdicts == tuple(verdicts)
    assert {v.status for v in verdicts} == {Status.ALLOW, Status.DENY}
