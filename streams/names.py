"""Every consumer group, transactional id and client id the project uses, in one place.

Kafka ACLs on groups and transactional ids match a name exactly (LITERAL) or by its start
(PREFIXED). So each role owns one root under the estate's root (``Settings.group_id``,
default ``trustplane``), and every name a role uses is that root or starts with it and a
dot. Worker ids may not contain a dot (:func:`check_id`), so no name of one role can fall
under another role's prefix, and no worker can take (and fence) another role's
transactional id::

    <root>.gate                      gate workers' consumer group
    <root>.gate.<worker>             a gate worker's transactional id, static member, client id
    <root>.<role>.control.<worker>   a control follower (assign-only, needs a group id), under
    <root>.<role>.control-offsets.<worker>   the root of the role that follows: a gate
                                     worker (gate), an operator's CLI reading its history
    <root>.gate.state-restore        per-agent state restore (assign-only)
    <root>.gate.host                 the Faust app hosting the worker (its consumer group)
    <root>.notary                    the notary's group, transactional id, static member
    <root>.notary.restore, <root>.notary.fetch
    <root>.sink                      the sinks' consumer group
    <root>.sink.<worker>             a sink's transactional id and client id
    <root>.sink.<worker>.<tag>       its static member id (tag: its subscription)
    <root>.operator.<key id>         an operator key's transactional id (its control history)
    <root>.executor                  executors' group (ApprovalConsumer)
    <root>.reader.<random>           OutcomeReader's anonymous groups (operator, console)
    <root>.console.<purpose>         the console's groups
    <root>.console[.<suffix>]        the console's transactional id (control commands it relays)

:mod:`streams.acls` grants each role LITERAL ``<root>.<role>`` and PREFIXED
``<root>.<role>.`` on GROUP (and TRANSACTIONAL_ID where it writes transactionally).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from processors.exceptions import ConfigError

__all__ = [
    "DEFAULT_ROOT",
    "DEFAULT_EXECUTOR_GROUP",
    "check_id",
    "root",
    "role_root",
    "gate_group",
    "gate_worker",
    "control_follower",
    "control_offsets",
    "gate_state_restore",
    "gate_app",
    "gate_changelog_topics",
    "notary",
    "notary_restore",
    "notary_fetch",
    "sink_group",
    "sink_worker",
    "sink_member",
    "operator_transaction",
    "executor_group",
    "reader_group",
    "console_group",
    "console_transactional_id",
    "guard_group",
]

DEFAULT_ROOT = "trustplane"
"""The estate's root when ``group_id`` is not set."""
DEFAULT_EXECUTOR_GROUP = f"{DEFAULT_ROOT}.executor"

_ID = re.compile(r"[A-Za-z0-9_-]+")

GATE_TABLES: tuple[str, ...] = ()
"""Faust tables of the gate's host app (``streams/gate/app.py``; it has none now). A table
has a changelog topic ``<app id>-<table>-changelog`` that Faust creates on every start,
so one added there must be named here: provisioning pre-creates its changelog and grants
the gate CREATE on that one name (the broker then answers TOPIC_ALREADY_EXISTS, which
Faust accepts)."""


def check_id(value: str, what: str) -> str:
    """``value`` if it is a valid name segment (letters, digits, ``_`` and ``-``)."""
    if not _ID.fullmatch(value):
        raise ConfigError(
            f"{what} {value!r} may only contain letters, digits, '_' and '-'",
            hint="the dot separates a role's names from its workers' (and ACL prefixes "
            "rely on it); pick another name",
        )
    return value


def root(config: Any) -> str:
    """The estate's root: ``group_id`` of the settings (or of a ClientConfig)."""
    return check_id(str(getattr(config, "group_id", "") or DEFAULT_ROOT), "group_id")


def role_root(config: Any, role: str) -> str:
    """``<root>.<role>``: the one name, and the prefix (with a dot), a role owns."""
    return f"{root(config)}.{role}"


def _worker(config: Any, worker: str | None) -> str:
    if worker is None:
        worker = config.resolved_worker_id()
    return check_id(str(worker), "worker id")


# -- gate -----------------------------------------------------------------------------


def gate_group(config: Any) -> str:
    return role_root(config, "gate")


def gate_worker(config: Any, worker: str | None = None) -> str:
    """A gate worker's transactional id, static member id and client id."""
    return f"{gate_group(config)}.{_worker(config, worker)}"


def control_follower(config: Any, worker: str | None = None) -> str:
    """The group of a control follower: the gate's workers and an operator's CLI both
    follow ``control``, each under its own role's root."""
    return f"{_own_root(config)}.control.{_worker(config, worker)}"


def control_offsets(config: Any, worker: str | None = None) -> str:
    """The group of a control follower's watermark client."""
    return f"{_own_root(config)}.control-offsets.{_worker(config, worker)}"


def _own_root(config: Any) -> str:
    """``<root>.<principal>`` of whoever ``config`` authenticates as (``gate`` when nobody:
    an unauthenticated cluster has no ACLs to match)."""
    principal = getattr(config, "resolved_kafka_principal", None)
    who = principal() if callable(principal) else str(getattr(config, "username", "") or "")
    return role_root(config, check_id(who, "Kafka principal") if who else "gate")


def gate_state_restore(config: Any) -> str:
    return f"{gate_group(config)}.state-restore"


def gate_app(config: Any) -> str:
    """The Faust app id of the gate's host (its consumer group and changelog prefix)."""
    return f"{gate_group(config)}.host"


def gate_changelog_topics(config: Any) -> list[str]:
    """The changelog topics Faust creates for the gate app's tables."""
    return [f"{gate_app(config)}-{table}-changelog" for table in GATE_TABLES]


# -- notary ---------------------------------------------------------------------------


def notary(config: Any) -> str:
    """The notary's group, transactional id, static member id and client id: one notary
    per log, so a newer one fences the older."""
    return role_root(config, "notary")


def notary_restore(config: Any) -> str:
    return f"{notary(config)}.restore"


def notary_fetch(config: Any) -> str:
    return f"{notary(config)}.fetch"


# -- sink -----------------------------------------------------------------------------


def sink_group(config: Any) -> str:
    return role_root(config, "sink")


def sink_worker(config: Any, worker: str | None = None) -> str:
    """A sink's transactional id and client id."""
    return f"{sink_group(config)}.{_worker(config, worker)}"


def sink_member(config: Any, worker: str | None, tag: str) -> str:
    """A sink's static member id; ``tag`` names its subscription."""
    return f"{sink_worker(config, worker)}.{check_id(tag, 'subscription tag')}"


# -- clients --------------------------------------------------------------------------


def operator_transaction(config: Any, key_id: str) -> str:
    """The transactional id (and client id) of the operator CLI signing with ``key_id``:
    one writer per key's control history, so a newer client fences an older one."""
    return f"{role_root(config, 'operator')}.{check_id(key_id, 'operator key id')}"


def executor_group(config: Any, given: str | None = None) -> str:
    """The executors' shared group: ``given``, or the estate's ``<root>.executor`` (also
    for the SDK's default, :data:`DEFAULT_EXECUTOR_GROUP`, which stands for it)."""
    if given is not None and given != DEFAULT_EXECUTOR_GROUP:
        return given
    return role_root(config, "executor")


def reader_group(config: Any) -> str:
    """A fresh anonymous group for one OutcomeReader (it commits nothing)."""
    return f"{role_root(config, 'reader')}.{uuid.uuid4().hex[:8]}"


def guard_group(config: Any) -> str:
    """The group id a guard's decision reader names (it is assigned its partitions and
    commits nothing, but librdkafka still looks its coordinator up)."""
    return f"{role_root(config, 'guard')}.{uuid.uuid4().hex[:8]}"


def console_group(config: Any, purpose: str) -> str:
    return f"{role_root(config, 'console')}.{check_id(purpose, 'console group')}"


def console_transactional_id(config: Any, suffix: str | None = None) -> str:
    """The transactional id of a console relaying operator commands to ``control``:
    ``<root>.console``, or ``<root>.console.<suffix>`` for one of several consoles (each
    needs its own, or the newer fences the older)."""
    name = role_root(config, "console")
    return name if suffix is None else f"{name}.{check_id(suffix, 'console transactional id')}"
