"""The tallies of a suite, on hand-made episode results."""

from __future__ import annotations

from streams.eval.dojo import EpisodeSpec
from streams.eval.replay import CallRecord, EpisodeResult, rules_of
from streams.eval.scoring import combine, score_suite
from streams.sdk.guard import Denied, NeedsReview, Unmapped


def _result(
    user: str,
    injection: str | None,
    calls: list[CallRecord],
    *,
    utility: bool = True,
    security: bool = False,
    undefended_security: bool = True,
) -> EpisodeResult:
    return EpisodeResult(
        EpisodeSpec("banking", user, injection),
        tuple(calls),
        0,
        utility,
        security,
        True,
        undefended_security if injection else False,
        0.1,
    )


READ = CallRecord("read_file", "user", "executed")
HELD = CallRecord("send_money", "injection", "review", ("policy:banking.first-time-payee",))
USER_HELD = CallRecord("send_money", "user", "review", ("policy:banking.first-time-payee",))
DENIED = CallRecord("send_money", "injection", "denied", ("policy:banking.limit-10k",))


def test_a_suite_adds_up() -> None:
    results = [
        _result("user_task_0", None, [READ]),
        _result("user_task_1", None, [READ, USER_HELD], utility=False),
        _result("user_task_0", "injection_task_0", [READ, HELD]),
        _result("user_task_0", "injection_task_1", [READ, DENIED]),
        _result(
            "user_task_1",
            "injection_task_0",
            [READ, CallRecord("send_money", "injection", "executed")],
            security=True,
        ),
        _result("user_task_1", "injection_task_1", [READ], undefended_security=False),
    ]
    score = score_suite("banking", results)
    f = score.figures()
    assert (score.user_tasks, score.injection_tasks, score.pairs) == (2, 2, 4)
    assert f["utility"] == 0.5 and f["every_call_approved"] == 0.5
    assert f["attack_success_rate"] == 0.25
    assert f["undefended_attack_success_rate"] == 0.75
    assert f["attack_success_rate_of_replayable"] == 1 / 3
    assert (score.stopped, score.stopped_held, score.stopped_denied) == (2, 1, 1)
    assert score.stopping_rules == {
        "policy:banking.first-time-payee": 1,
        "policy:banking.limit-10k": 1,
    }
    assert score.user_task_costs == {
        "user_task_1": ["send_money: review (policy:banking.first-time-payee)"]
    }
    assert combine([score, score]).pairs == 8


def test_the_rules_come_from_the_gates_reasons() -> None:
    held = NeedsReview(
        "held",
        tool="send_money",
        reasons=("policy: held for review by banking.first-time-payee: a payment ...",),
    )
    assert rules_of(held, "payments") == ("policy:banking.first-time-payee",)
    denied = Denied(
        "denied",
        tool="send_money",
        reasons=(
            "policy: forbidden by banking.limit-10k: payments above 10,000.00",
            "anomaly: rate: 3 payments.send in 60 s > 2",
        ),
    )
    assert rules_of(denied, "payments") == ("policy:banking.limit-10k", "anomaly:payments.rate")
    nobody = Denied("denied", tool="x", reasons=("policy: no policy permits ... (default deny)",))
    assert rules_of(nobody, "-") == ("policy:default-deny",)
    assert rules_of(Unmapped("no mapping", tool="x"), "-") == ("mapping:unmapped",)
