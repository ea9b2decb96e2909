import time

import pytest

from processors.enforcement import Outcome
from processors.pipeline import Pipeline
from processors.verdict import GateState, Status, Verdict
from tests.processors.factories import make_intent

STATE = GateState(now_ms=1_700_000_000_100)


class Fixed:
    def __init__(self, name, verdict):
        self.name = name
        self._verdict = verdict

    def evaluate(self, intent, state):
        return self._verdict


class Raising:
    name = "flaky"

    def evaluate(self, intent, state):
        raise KeyError("registry")


class Slow:
    name = "slow"

    def evaluate(self, intent, state):
        time.sleep(0.02)
        return Verdict.allow("slow")


def test_all_allow_approves_and_records_durations():
    pipeline = Pipeline([Fixed("a", Verdict.allow("a")), Fixed("b", Verdict.allow("b"))])
    result = pipeline.decide(make_intent(), STATE)
    assert result.outcome is Outcome.APPROVED
    assert [v.layer for v in result.verdicts] == ["a", "b"]
    assert all(v.duration_us >= 0 for v in result.verdicts)


def test_a_layer_that_raises_denies_with_the_exception():
    result = Pipeline([Fixed("a", Verdict.allow("a")), Raising()]).decide(make_intent(), STATE)
    assert result.outcome is Outcome.DENIED
    assert result.verdicts[1].status is Status.ERROR
    assert "KeyError" in result.reasons[0]


def test_a_layer_over_its_budget_denies():
    result = Pipeline([Slow()], layer_timeout_ms=1).decide(make_intent(), STATE)
    assert result.outcome is Outcome.DENIED
    assert "timed out" in result.reasons[0]


@pytest.mark.parametrize("bad", [None, True, "ALLOW", Verdict.allow("someone-else")])
def test_a_layer_returning_something_else_denies(bad):
    result = Pipeline([Fixed("a", bad)]).decide(make_intent(), STATE)
    assert result.outcome is Outcome.DENIED
    assert "not its own Verdict" in result.reasons[0]


def test_an_empty_pipeline_is_refused():
    with pytest.raises(ValueError, match="at least one layer"):
        Pipeline([])


class Counting:
    def __init__(self, name):
        self.name = name
        self.calls = 0

    def evaluate(self, intent, state):
        self.calls += 1
        return Verdict.allow(self.name)


def test_the_first_deny_ends_the_chain():
    later = Counting("policy")
    pipeline = Pipeline([Fixed("identity", Verdict.deny("identity", "bad signature")), later])
    result = pipeline.decide(make_intent(), STATE)
    assert result.outcome is Outcome.DENIED
    assert later.calls == 0, "policy is never asked about an intent that failed identity"
    assert result.skipped == ("policy",)
    assert result.reasons == ("identity: bad signature",)


def test_an_error_also_ends_the_chain():
    later = Counting("policy")
    result = Pipeline([Raising(), later]).decide(make_intent(), STATE)
    assert result.outcome is Outcome.DENIED
    assert later.calls == 0
    assert result.skipped == ("policy",)


def test_skipped_layers_alone_deny():
    from processors.enforcement import combine

    result = combine([Verdict.allow("identity")], ["identity"], skipped=["policy"])
    assert result.outcome is Outcome.DENIED
    assert "layers not run: policy" in result.reasons[0]
