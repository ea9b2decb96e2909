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
    """Does 20 ms of work."""

    name = "slow"

    def evaluate(self, intent, state):
        started = time.thread_time()
        while time.thread_time() - started < 0.02:
            pass
        return Verdict.allow("slow")


class Preempted:
    """Takes 50 ms of wall clock but almost no CPU: what a busy machine, or a process
    stopped and continued, looks like from inside the layer."""

    name = "preempted"

    def evaluate(self, intent, state):
        time.sleep(0.05)
        return Verdict.allow("preempted")


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


def test_wall_clock_time_without_work_does_not_deny():
    result = Pipeline([Preempted()], layer_timeout_ms=1).decide(make_intent(), STATE)
    assert result.outcome is Outcome.APPROVED
    assert result.verdicts[0].duration_us >= 50_000  # the wall clock is still recorded


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


class Learning:
    """A stateful layer that counts what it learned from."""

    name = "learning"
    state_key = "learning"

    def evaluate(self, intent, state):
        return Verdict.allow("learning")

    def new_state(self):
        return {"observed": 0}

    def load_state(self, data):
        return dict(data)

    def dump_state(self, layer_state):
        return dict(layer_state)

    def observe(self, intent, state, outcome):
        state.agent[self.state_key]["observed"] += 1


def test_stateful_layers_do_not_learn_from_an_exact_replay_of_a_decided_intent():
    from processors.verdict import ALREADY_DECIDED

    replay = Verdict.deny("integrity", "replay: already decided", **{ALREADY_DECIDED: "true"})
    other = Verdict.deny("integrity", "replay: nonce reused by another intent")
    counting = Learning()
    state = GateState(now_ms=1_700_000_000_100, agent={})
    for _ in range(50):  # a flood of replays is not activity
        Pipeline([counting, Fixed("integrity", replay)]).decide(make_intent(), state)
    assert state.agent["learning"]["observed"] == 0
    Pipeline([counting, Fixed("integrity", other)]).decide(make_intent(), state)
    assert state.agent["learning"]["observed"] == 1, "a different violation is still activity"
