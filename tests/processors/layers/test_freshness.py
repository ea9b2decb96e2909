import pytest

from processors.layers.freshness import Freshness
from processors.verdict import GateState, Status
from tests.processors.factories import make_intent

ISSUED, EXPIRES = 1_700_000_000_000, 1_700_000_300_000


@pytest.mark.parametrize(
    ("now", "status", "reason"),
    [
        (ISSUED, Status.ALLOW, "fresh"),
        (EXPIRES - 1, Status.ALLOW, "expires in 1 ms"),
        (EXPIRES, Status.DENY, "expired 0 ms ago"),
        (EXPIRES + 5_000, Status.DENY, "expired 5000 ms ago"),
        (ISSUED - 30_000, Status.ALLOW, "fresh"),
        (ISSUED - 30_001, Status.DENY, "in the future"),
    ],
)
def test_freshness(now, status, reason):
    verdict = Freshness(30_000).evaluate(make_intent(), GateState(now_ms=now))
    assert verdict.status is status
    assert reason in verdict.reasons[0]


def test_negative_skew_is_refused():
    with pytest.raises(ValueError, match="max_clock_skew_ms"):
        Freshness(-1)
