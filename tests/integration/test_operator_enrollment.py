"""Operator keys enrolled on ``control``, on a real broker and a running gate worker.

A browser's key enrolled by a root key (through a one-time invitation, as ``make run``
does it) signs commands the running worker applies at once, without a restart; a key
never enrolled, a retired key, and an enrolled key enrolling another are refused; a worker
started afterwards rebuilds the same state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.control import ChainLink, sign_command
from processors.crypto.keys import SigningKey, b64url, generate_signing_key, raw_public_key
from streams.codec import default_codec
from streams.config import PROJECT_ROOT, Settings
from streams.dev.estate import Estate, setup_estate
from streams.enrollment import InviteStore
from streams.operator import (
    OperatorClient,
    OperatorCommandRefused,
    PublishError,
    enroll_operator,
    retire_operator,
)
from tests.conftest import WorkerProcess, settings_env
from tests.integration.test_control_history import (
    control_as_deployed,
    control_events,
    control_view,
    digest_of,
    health,
    produce,
    refused,
)
from tests.integration.test_responses import decide, reasons

pytestmark = pytest.mark.broker

TRUSTPLANE = str(Path(sys.executable).parent / "trustplane")
SWITCH = {"scope": "agent", "target": "support-bot", "reason": "incident 12"}
SUBJECT = "killswitch/agent/support-bot"


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return control_as_deployed(settings_factory())


@pytest.fixture
def estate(settings: Settings) -> Estate:
    return setup_estate(settings)


@pytest.fixture
def invite_pids(settings: Settings) -> Iterator[Path]:
    """The pid file of a detached invite process; the process is stopped after the test
    if it still waits (only the one this test started)."""
    path = settings.state_dir / "invite.pid"
    yield path
    if path.exists():
        try:
            os.kill(int(path.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def x_of(key: SigningKey) -> str:
    return b64url(raw_public_key(key.public_key))


def trustplane(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRUSTPLANE, *args],
        env=settings_env(settings),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def test_a_key_enrolled_through_an_invitation_signs_at_once_on_a_running_worker(
    settings: Settings,
    estate: Estate,
    worker_factory: Callable[[Settings], WorkerProcess],
    invite_pids: Path,
) -> None:
    worker = worker_factory(settings).start()
    assert decide(settings, estate.intent("support-bot", "tickets.reply", "t:1")).topic == (
        "approved"
    )

    # `make run`: the invite process prints the link and waits in the background
    started = time.monotonic()
    invited = trustplane(settings, "operators", "invite", "--label", "newcomer", "--detach")
    assert invited.returncode == 0, invited.stderr + invited.stdout
    assert time.monotonic() - started < 60
    link = next(w for w in invited.stdout.split() if "/enroll#" in w)
    assert link.startswith(f"{settings.console_url}/enroll#")
    invite_id, secret = link.split("#", 1)[1].split(".", 1)
    pid = int(invite_pids.read_text())
    assert f"pid {pid}" in invited.stdout

    # the console's /enroll: the browser's new key redeems the link
    browser = generate_signing_key()
    store = InviteStore(settings.console_state_dir / "invites")
    store.redeem(invite_id, secret, x_of(browser), browser.kid, "Alice's Firefox")
    status = wait_for(
        lambda: (s := store.status(invite_id)).state in ("enrolled", "failed") and s,
        60,
        "no enrolment outcome",
    )
    log = (settings.state_dir / "invite.log").read_text()
    assert status.state == "enrolled", (status, log)
    assert status.kid == browser.kid and "enrolled operator key" in status.detail
    wait_for(lambda: not invite_pids.exists(), 30, "the invite process did not exit")

    # the running worker trusts the key at once: no restart
    with OperatorClient(settings, browser, issued_by="alice@console") as alice:
        record = alice.send("killswitch.engage", SWITCH, subject=SUBJECT)
    assert record["sequence"] == 0 and record["key_id"] == browser.kid
    stopped = decide(settings, estate.intent("support-bot", "tickets.reply", "t:2"))
    assert stopped.topic == "denied" and "kill switch (agent 'support-bot')" in reasons(stopped)
    view = control_view(worker)
    assert view[SUBJECT]["signer"] == f"operator key {browser.kid!r}"
    assert view[f"control/operators/{browser.kid}"]["kind"] == "operator.enroll"
    assert health(worker)["control"]["enrolled_operator_keys"] == 1

    listed = trustplane(settings, "operators", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["kid"]: row for row in json.loads(listed.stdout)}
    assert rows[browser.kid]["role"] == "enrolled"
    assert rows[browser.kid]["status"] == "active"
    assert rows[browser.kid]["label"] == "newcomer: Alice's Firefox"
    assert [r["role"] for r in rows.values()].count("root") == 1


def test_never_enrolled_retired_and_self_enrolling_keys_are_refused(
    settings: Settings, estate: Estate, worker_factory: Callable[[Settings], WorkerProcess]
) -> None:
    first = worker_factory(settings).start()
    browser, other, stranger = (generate_signing_key() for _ in range(3))
    result = enroll_operator(settings, kid=browser.kid, x=x_of(browser), label="alice")
    assert result.applied and "enrolled operator key" in result.reason

    # a key never enrolled: refused, takes no place in any history
    forged = sign_command(
        "killswitch.engage", SUBJECT, SWITCH, stranger, "mallory", link=ChainLink.first()
    )
    produce(settings, SUBJECT.encode(), default_codec().encode("ControlCommand", forged))
    with pytest.raises(PublishError, match="would refuse commands signed with key"):
        OperatorClient(settings, stranger).send("killswitch.engage", SWITCH, subject=SUBJECT)

    # an enrolled key cannot enrol another one
    with pytest.raises(OperatorCommandRefused, match="only a root key"):
        enroll_operator(settings, kid=other.kid, x=x_of(other), label="bob", key=browser)
    with OperatorClient(settings, browser, issued_by="alice@console") as alice:
        attempt = alice.send(
            "operator.enroll", {"kid": other.kid, "x": x_of(other), "label": "bob"}
        )
        verdict = alice.read_back(attempt)
        assert not verdict.applied
        assert "enrolled keys cannot enrol or retire operator keys" in verdict.reason
        engaged = alice.send("killswitch.engage", SWITCH, subject=SUBJECT)
    assert engaged["sequence"] == 1  # the refused enrolment kept its place
    stopped = decide(settings, estate.intent("support-bot", "tickets.reply", "t:1"))
    assert stopped.topic == "denied" and "kill switch" in reasons(stopped)

    # retired: its later commands are refused, its earlier ones stay in force
    retired = retire_operator(settings, kid=browser.kid, reason="laptop lost")
    assert retired.applied and "laptop lost" in retired.reason
    with pytest.raises(PublishError, match="was retired at"):
        OperatorClient(settings, browser).send("killswitch.release", SWITCH, subject=SUBJECT)
    late = sign_command(
        "killswitch.release",
        SUBJECT,
        {"scope": "agent", "target": "support-bot"},
        browser,
        "alice@console",
        link=ChainLink(2, digest_of(engaged)),
    )
    produce(settings, SUBJECT.encode(), default_codec().encode("ControlCommand", late))
    stopped = decide(settings, estate.intent("support-bot", "tickets.reply", "t:2"))
    assert stopped.topic == "denied" and "kill switch" in reasons(stopped)

    alerts = refused(control_events(settings, 3))
    assert any(f"key_id {stranger.kid!r} is not an operator key" in a for a in alerts), alerts
    assert any("enrolled keys cannot enrol or retire" in a for a in alerts), alerts
    assert any(
        f"key_id {browser.kid!r} is not an operator key valid at" in a
        and "was retired at" in a
        and "laptop lost" in a
        for a in alerts
    ), alerts
    assert len(alerts) == 3, alerts
    summary = health(first)["control"]
    assert (summary["enrolled_operator_keys"], summary["retired_operator_keys"]) == (0, 1)
    assert other.kid not in str(control_view(first))

    # a worker started now replays the same verdicts: the switch the retired key engaged
    # before its retirement is still in force, and no history is broken
    first.kill()
    restarted = worker_factory(settings).start()
    state = health(restarted)
    assert state["killswitch"]["agents"] == ["support-bot"]
    assert state["control"]["history"]["problems"] == []
    assert state["control"]["retired_operator_keys"] == 1
    stopped = decide(settings, estate.intent("support-bot", "tickets.reply", "t:3"))
    assert stopped.topic == "denied" and "kill switch" in reasons(stopped)
