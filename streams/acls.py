"""Who may do what on Kafka: one SCRAM user per role, least-privilege ACLs.

The broker runs ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``, so
what is not granted here is refused. ``broker`` and ``admin`` are the only super users;
``admin`` creates the users, the topics and these ACLs (``trustplane kafka provision``)
and nobody else may create a topic (a Faust table of the gate would be the one exception:
``streams.names.GATE_TABLES``).

======== ==================================================================================
role     may
======== ==================================================================================
gate     read intents, outcomes, control, gate-state; write approved, denied, review,
         rejected, lineage, gate-state, control (quarantine); groups and transactional
         ids ``<root>.gate[.…]``
notary   read lineage, lineage-log, checkpoints; write lineage-log, checkpoints, rejected
         (lineage it refuses); group and transactional id ``<root>.notary[.…]``
sink     read what it stores (lineage-log, approved, denied, review, rejected, outcomes,
         checkpoints, intents); write rejected (its own poison records); see lineage (its
         topic check); group and transactional ids ``<root>.sink[.…]``
operator write control, in a transaction per key (``<root>.operator.<key id>``); read every
         topic (see gate-state); groups ``<root>.operator[.…]``, ``<root>.reader.…``
console  read every topic but gate-state; write control (relaying commands operators
         signed in their browsers), in a transaction (``<root>.console[.…]``); groups
         ``<root>.console[.…]``, ``<root>.reader.…``
executor read approved (its group: ``<root>.executor[.…]``); write outcomes
agent    write intents
guard    an agent that executes its own tool calls (``streams/sdk/guard``): write intents
         and outcomes; read approved, denied, review, rejected (assigned partitions; its
         group names ``<root>.guard[.…]``, which librdkafka looks up but never joins)
======== ==================================================================================

Topic ACLs are LITERAL on the estate's full topic names (``settings.topic(...)``), so
they follow the topic prefix; group and transactional-id ACLs are LITERAL ``<root>.<role>``
plus PREFIXED ``<root>.<role>.`` (see ``streams/names.py``): they govern joining a group,
committing its offsets and using a transactional id (so no role can fence another); a
Fetch is authorized by TOPIC READ alone, whatever group a reader names. READ and WRITE
imply DESCRIBE. Nobody needs IDEMPOTENT_WRITE: every principal that produces may write some
topic (which the broker takes as leave to produce idempotently).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from confluent_kafka.admin import (  # type: ignore[attr-defined]  # documented path, stub lacks __all__
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from streams import names

if TYPE_CHECKING:
    from streams.config import Settings

__all__ = [
    "ADMIN",
    "BROKER",
    "ROLES",
    "SUPER_USERS",
    "PROJECT_TOPICS",
    "Grant",
    "grants",
    "bindings",
    "role_filter",
]

BROKER = "broker"
ADMIN = "admin"
SUPER_USERS = (BROKER, ADMIN)
ROLES = ("gate", "notary", "sink", "operator", "console", "executor", "agent", "guard")

PROJECT_TOPICS = (
    "intents",
    "approved",
    "denied",
    "review",
    "rejected",
    "lineage",
    "outcomes",
    "control",
    "gate-state",
    "lineage-log",
    "checkpoints",
)
"""Every topic of an estate (``streams/topics.py`` and the notary's two)."""

_VIEWABLE = tuple(t for t in PROJECT_TOPICS if t != "gate-state")

# role: (read, write, describe-only) topics, by logical name
_TOPICS: dict[str, tuple[Sequence[str], Sequence[str], Sequence[str]]] = {
    "gate": (
        ("intents", "outcomes", "control", "gate-state"),
        ("approved", "denied", "review", "rejected", "lineage", "gate-state", "control"),
        (),
    ),
    # rejected: the lineage records it refuses (unsigned, or not a gate key's)
    "notary": (
        ("lineage", "lineage-log", "checkpoints"),
        ("lineage-log", "checkpoints", "rejected"),
        (),
    ),
    "sink": (
        (
            "lineage-log",
            "approved",
            "denied",
            "review",
            "rejected",
            "outcomes",
            "checkpoints",
            "intents",
        ),
        ("rejected",),
        ("lineage",),  # its start-up check of the notary's topics looks at lineage
    ),
    "operator": (_VIEWABLE, ("control",), ("gate-state",)),
    # control: operator commands signed in the browser; the gate checks their signatures
    "console": (_VIEWABLE, ("control",), ()),
    "executor": (("approved",), ("outcomes",), ()),
    "agent": ((), ("intents",), ()),
    "guard": (("approved", "denied", "review", "rejected"), ("intents", "outcomes"), ()),
}

# role: the name roots (streams/names.py) of its consumer groups
_GROUPS: dict[str, Sequence[str]] = {
    "gate": ("gate",),
    "notary": ("notary",),
    "sink": ("sink",),
    "operator": ("operator", "reader"),
    "console": ("console", "reader"),
    "executor": ("executor",),
    "agent": (),
    "guard": ("guard",),
}

_TRANSACTIONAL = ("gate", "notary", "sink", "operator", "console")

_B = TypeVar("_B", bound=AclBinding)


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: ``principal`` may ``operation`` the ``resource`` named ``name``
    (every name starting with it when ``prefixed``)."""

    principal: str
    resource: str
    """``TOPIC``, ``GROUP`` or ``TRANSACTIONAL_ID``."""
    name: str
    operation: str
    """``READ``, ``WRITE``, ``DESCRIBE`` or ``CREATE``."""
    prefixed: bool = False

    def binding(self) -> AclBinding:
        return self._build(AclBinding)

    def filter(self) -> AclBindingFilter:
        """Matches exactly this ACL (to delete it)."""
        return self._build(AclBindingFilter)

    def _build(self, kind: type[_B]) -> _B:
        return kind(
            ResourceType[self.resource],
            self.name,
            ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL,
            f"User:{self.principal}",
            "*",
            AclOperation[self.operation],
            AclPermissionType.ALLOW,
        )

    @classmethod
    def of(cls, binding: AclBinding) -> Grant:
        resource, operation = binding.restype, binding.operation
        return cls(
            principal=binding.principal.removeprefix("User:"),
            resource=resource.name if isinstance(resource, ResourceType) else str(resource),
            name=binding.name,
            operation=operation.name if isinstance(operation, AclOperation) else str(operation),
            prefixed=binding.resource_pattern_type == ResourcePatternType.PREFIXED,
        )

    def __str__(self) -> str:
        pattern = "names starting with " if self.prefixed else ""
        return f"User:{self.principal} {self.operation} {self.resource} {pattern}{self.name}"


def grants(settings: Settings, roles: Iterable[str] = ROLES) -> list[Grant]:
    """The ACLs of ``roles`` for this estate (its topic prefix and name root)."""
    out: list[Grant] = []
    for role in roles:
        read, write, describe = _TOPICS[role]
        for operation, topics in (("READ", read), ("WRITE", write), ("DESCRIBE", describe)):
            out += [Grant(role, "TOPIC", settings.topic(t), operation) for t in topics]
        for root in _GROUPS[role]:
            name = names.role_root(settings, root)
            if root != "reader":  # anonymous readers only: <root>.reader.<random>
                out.append(Grant(role, "GROUP", name, "READ"))
            out.append(Grant(role, "GROUP", f"{name}.", "READ", prefixed=True))
        if role in _TRANSACTIONAL:
            name = names.role_root(settings, role)
            out.append(Grant(role, "TRANSACTIONAL_ID", name, "WRITE"))
            out.append(Grant(role, "TRANSACTIONAL_ID", f"{name}.", "WRITE", prefixed=True))
        if role == "gate":  # Faust (re)creates its table's changelog on every start
            for topic in names.gate_changelog_topics(settings):
                out += [Grant(role, "TOPIC", topic, op) for op in ("READ", "WRITE", "CREATE")]
    return out


def bindings(settings: Settings, roles: Iterable[str] = ROLES) -> list[AclBinding]:
    return [grant.binding() for grant in grants(settings, roles)]


def role_filter(principal: str) -> AclBindingFilter:
    """Matches every ACL of ``principal`` (for describe_acls / delete_acls)."""
    return AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]  # None matches any name (the stub says str)
        ResourcePatternType.ANY,
        f"User:{principal}",
        None,  # type: ignore[arg-type]  # any host
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
