import json

import pytest

from processors.authorization import AllowList, AllowListAuthorization
from processors.exceptions import ConfigError
from processors.verdict import GateState, Status
from streams.config import PROJECT_ROOT
from tests.processors.factories import make_intent

STATE = GateState(now_ms=0)
LAYER = AllowListAuthorization(
    AllowList.from_mapping({"agents": {"billing-agent": ["payments.transfer", "invoices.*"]}})
)


@pytest.mark.parametrize(
    ("agent", "action", "status", "reason"),
    [
        ("billing-agent", "payments.transfer", Status.ALLOW, "allowed by 'payments.transfer'"),
        ("billing-agent", "invoices.read", Status.ALLOW, "allowed by 'invoices.*'"),
        ("billing-agent", "payments.refund", Status.DENY, "may not take action"),
        ("billing-agent", "invoices", Status.DENY, "may not take action"),
        ("shadow-agent", "payments.transfer", Status.DENY, "is not registered"),
    ],
)
def test_allow_list_decisions(agent, action, status, reason):
    verdict = LAYER.evaluate(make_intent(agent_id=agent, action=action), STATE)
    assert verdict.status is status
    assert reason in verdict.reasons[0]


def test_empty_allow_list_denies_everyone():
    layer = AllowListAuthorization(AllowList.from_mapping({"agents": {}}))
    assert layer.evaluate(make_intent(), STATE).status is Status.DENY


@pytest.mark.parametrize(
    "data",
    [[], {"agents": []}, {"agents": {"a": "x"}}, {"agents": {"a": [""]}}, {"agent": {}}],
)
def test_malformed_allow_lists_are_refused(data):
    with pytest.raises(ConfigError):
        AllowList.from_mapping(data)


def test_missing_and_broken_files_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as info:
        AllowList.from_file(tmp_path / "nope.json")
    assert "TRUSTPLANE_ALLOWLIST_PATH" in info.value.diagnostics()
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        AllowList.from_file(broken)


def test_the_shipped_allow_list_loads():
    path = PROJECT_ROOT / "policies" / "allowlist.json"
    allowlist = AllowList.from_file(path)
    assert set(allowlist.agents) == set(json.loads(path.read_text())["agents"])
