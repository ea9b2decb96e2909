"""The ACL table, the names it grants, and the password files, without a broker.

What the broker does with them is tested in ``tests/integration/test_acls.py``; here:
each role's names fall under its own prefix and under nobody else's, topic ACLs follow
the topic prefix, nobody creates topics, and passwords stay their owner's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from processors.exceptions import ConfigError
from streams import names
from streams.acls import PROJECT_TOPICS, ROLES, Grant, grants
from streams.config import Settings
from streams.credentials import CredentialStore
from streams.sink.config import SINK_TOPICS
from streams.topics import TOPICS

ESTATE = Settings(topic_prefix="prod.", group_id="tp", worker_id="w1", state_dir=Path("/nowhere"))

# every group / transactional id a role uses, by the role that uses it
USED: dict[str, list[tuple[str, Callable[[Settings], str]]]] = {
    "gate": [
        ("GROUP", names.gate_group),
        ("TRANSACTIONAL_ID", names.gate_worker),
        ("GROUP", lambda s: names.control_follower(s.as_principal("gate"))),
        ("GROUP", lambda s: names.control_offsets(s.as_principal("gate"))),
        ("GROUP", names.gate_state_restore),
        ("GROUP", names.gate_app),
    ],
    "notary": [
        ("GROUP", names.notary),
        ("TRANSACTIONAL_ID", names.notary),
        ("GROUP", names.notary_restore),
        ("GROUP", names.notary_fetch),
    ],
    "sink": [
        ("GROUP", names.sink_group),
        ("TRANSACTIONAL_ID", names.sink_worker),
    ],
    "executor": [("GROUP", names.executor_group)],
    "operator": [
        ("GROUP", names.reader_group),
        ("GROUP", lambda s: names.control_follower(s.as_principal("operator"))),
        ("GROUP", lambda s: names.control_offsets(s.as_principal("operator"))),
        ("TRANSACTIONAL_ID", lambda s: names.operator_transaction(s, "kMzg3-_x")),
    ],
    "console": [("GROUP", names.reader_group), ("GROUP", lambda s: names.console_group(s, "x"))],
}


def allowed(grant: Grant, resource: str, name: str) -> bool:
    if grant.resource != resource:
        return False
    return name.startswith(grant.name) if grant.prefixed else name == grant.name


def who_may(resource: str, name: str, settings: Settings = ESTATE) -> set[str]:
    return {g.principal for g in grants(settings) if allowed(g, resource, name)}


@pytest.mark.parametrize("role", sorted(USED))
def test_each_role_may_use_its_own_names(role: str) -> None:
    for resource, name_of in USED[role]:
        name = name_of(ESTATE)
        assert role in who_may(resource, name), (resource, name)


@pytest.mark.parametrize("worker", ["w1", "notary", "sink", "control", "x-1_2"])
def test_no_worker_id_gives_a_role_another_roles_transactional_id(worker: str) -> None:
    """A gate worker named ``notary`` gets ``tp.gate.notary``, under the gate's prefix:
    it can fence no notary and no sink (the old names allowed both)."""
    for role, name_of in (("gate", names.gate_worker), ("sink", names.sink_worker)):
        assert who_may("TRANSACTIONAL_ID", name_of(ESTATE, worker)) == {role}
    assert who_may("TRANSACTIONAL_ID", names.notary(ESTATE)) == {"notary"}
    assert who_may("GROUP", names.gate_group(ESTATE)) == {"gate"}
    assert who_may("GROUP", names.sink_member(ESTATE, worker, "abc123")) == {"sink"}


@pytest.mark.parametrize("worker", ["a.b", "a/b", "", "x y"])
def test_worker_ids_cannot_leave_their_roles_prefix(worker: str) -> None:
    with pytest.raises(ConfigError, match="may only contain letters, digits"):
        names.gate_worker(ESTATE, worker)


def test_a_control_follower_is_named_after_whoever_follows() -> None:
    assert names.control_follower(ESTATE.as_principal("gate")) == "tp.gate.control.w1"
    assert names.control_follower(ESTATE.as_principal("operator")) == "tp.operator.control.w1"
    assert names.control_offsets(ESTATE) == "tp.gate.control-offsets.w1"  # unauthenticated
    assert who_may("GROUP", names.control_follower(ESTATE.as_principal("operator"))) == {"operator"}


def test_the_default_root() -> None:
    assert names.gate_worker(Settings(), "w1") == "trustplane.gate.w1"
    assert names.executor_group(None) == "trustplane.executor"
    assert names.executor_group(ESTATE) == "tp.executor"
    assert names.executor_group(ESTATE, names.DEFAULT_EXECUTOR_GROUP) == "tp.executor"
    assert names.executor_group(ESTATE, "mine") == "mine"


def test_topic_acls_follow_the_topic_prefix() -> None:
    topics = {g.name for g in grants(ESTATE) if g.resource == "TOPIC"}
    changelogs = set(names.gate_changelog_topics(ESTATE))
    assert topics - changelogs == {f"prod.{t}" for t in PROJECT_TOPICS}
    assert all(not g.prefixed for g in grants(ESTATE) if g.resource == "TOPIC")


def test_who_writes_each_topic() -> None:
    writers = {
        topic: {
            g.principal
            for g in grants(ESTATE)
            if g.operation == "WRITE" and g.name == f"prod.{topic}"
        }
        for topic in PROJECT_TOPICS
    }
    assert writers == {
        "intents": {"agent", "guard"},
        "approved": {"gate"},
        "denied": {"gate"},
        "review": {"gate"},
        "rejected": {"gate", "notary", "sink"},
        "lineage": {"gate"},
        "outcomes": {"executor", "guard"},
        "control": {"gate", "operator", "console"},
        "gate-state": {"gate"},
        "lineage-log": {"notary"},
        "checkpoints": {"notary"},
    }


def test_nobody_creates_topics() -> None:
    creates = [g for g in grants(ESTATE) if g.operation == "CREATE"]
    assert {(g.principal, g.name) for g in creates} == {
        ("gate", topic)
        for topic in names.gate_changelog_topics(ESTATE)  # no Faust table now
    }
    assert names.gate_changelog_topics(ESTATE) == []


def test_a_faust_table_of_the_gate_gets_its_changelog_created_and_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(names, "GATE_TABLES", ("latest",))
    changelog = "tp.gate.host-latest-changelog"
    assert names.gate_changelog_topics(ESTATE) == [changelog]
    assert who_may("TOPIC", changelog) == {"gate"}
    assert {g.operation for g in grants(ESTATE, ["gate"]) if g.name == changelog} == {
        "READ",
        "WRITE",
        "CREATE",
    }


def test_the_console_writes_only_control_and_transacts_under_its_own_name() -> None:
    writes = {
        (g.resource, g.name.removeprefix("prod."))
        for g in grants(ESTATE, ["console"])
        if g.operation in ("WRITE", "CREATE")
    }
    root = names.console_transactional_id(ESTATE)
    assert writes == {
        ("TOPIC", "control"),
        ("TRANSACTIONAL_ID", root),
        ("TRANSACTIONAL_ID", root + "."),
    }
    transactional = {g.principal for g in grants(ESTATE) if g.resource == "TRANSACTIONAL_ID"}
    assert transactional == {"gate", "notary", "sink", "operator", "console"}


def test_the_sink_reads_what_it_stores_and_the_gate_what_it_decides_on() -> None:
    reads = {
        role: {
            g.name.removeprefix("prod.")
            for g in grants(ESTATE, [role])
            if g.operation == "READ" and g.resource == "TOPIC"
        }
        for role in ROLES
    }
    assert reads["sink"] == set(SINK_TOPICS)
    assert reads["gate"] - {
        n.removeprefix("prod.") for n in names.gate_changelog_topics(ESTATE)
    } == {
        "intents",
        "outcomes",
        "control",
        "gate-state",
    }
    assert reads["agent"] == set()
    assert reads["executor"] == {"approved"}
    assert reads["guard"] == {"approved", "denied", "review", "rejected"}
    assert {t.name for t in TOPICS} <= set(PROJECT_TOPICS)


# -- password files ------------------------------------------------------------------


def test_passwords_are_created_once_and_kept_private(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials")
    first = store.ensure("gate")
    assert store.ensure("gate") == first
    password = first.get()
    assert len(password) == 64 and set(password) <= set("0123456789abcdef")
    assert store.directory.stat().st_mode & 0o777 == 0o700
    assert store.path("gate").stat().st_mode & 0o777 == 0o600
    assert password not in repr(first)
    assert [p.name for p in store.directory.iterdir()] == ["gate"]  # no partial file left


def test_a_user_name_must_be_a_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        CredentialStore(tmp_path).path("../admin")
