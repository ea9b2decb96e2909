"""What an agent or an executor imports stays small: no gate, no signer, no keyring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

GATE_ONLY = {"faust", "cedarpy", "chdb", "rocksdict", "aiokafka", "clickhouse_connect"}
SIGNING = {"processors.approval.signer", "processors.approval.keyring"}


def loaded_after(statement: str, cwd: Path) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    "statement",
    [
        "from streams.sdk.executor import ApprovalConsumer, ClientConfig, OutcomeReporter",
        "import processors.approval.verify, processors.approval.seen",
        "from processors.approval import verify_approval, SqliteSeenStore",
    ],
)
def test_the_executor_side_loads_neither_the_signer_nor_the_gate(
    statement: str, tmp_path: Path
) -> None:
    modules = loaded_after(statement, tmp_path)
    assert not modules & SIGNING, "an executor holds public keys only"
    assert not {m.split(".")[0] for m in modules} & GATE_ONLY


def test_the_agent_side_loads_no_gate_dependency(tmp_path: Path) -> None:
    modules = loaded_after(
        "from streams.sdk import ClientConfig, IntentPublisher, OutcomeReader, new_intent",
        tmp_path,
    )
    assert not {m.split(".")[0] for m in modules} & GATE_ONLY
    assert not modules & SIGNING


def test_the_front_door_loads_the_signer_when_asked_for_it(tmp_path: Path) -> None:
    modules = loaded_after("from processors.approval import ApprovalSigner", tmp_path)
    assert SIGNING <= modules


def test_the_front_door_names_every_public_name() -> None:
    import processors.approval as approval

    for name in approval.__all__:
        assert getattr(approval, name) is not None
    assert set(approval.__all__) <= set(dir(approval))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        approval.nothing  # noqa: B018 - the attribute access is the test
