"""Provisioning an estate on Kafka, as ``admin``: users, topics, ACLs.

``trustplane kafka up`` runs it for the local broker; ``trustplane kafka provision`` runs
it against any cluster where ``admin`` (or whoever ``--principal`` names) may create
users, topics and ACLs. Every step is idempotent:

1. users: one SCRAM-SHA-512 user per role (``streams/acls.py``), its password taken
   from (or created in) ``<credentials_dir>/<role>``; an upsert, so a re-run after a
   broker reset creates them again with the same passwords;
2. topics: :data:`streams.topics.TOPICS`, the notary's ``lineage-log`` and
   ``checkpoints``, and the gate's Faust changelog, replicated as the settings say
   (``topic_replication_factor``, ``topic_min_insync_replicas``; a minimum above the
   replication factor is refused first); configs of existing topics are aligned
   (``control`` kept forever, LogAppendTime);
3. ACLs: :func:`streams.acls.bindings` for the estate's topic prefix and name root.

:func:`check` compares the ACLs on the broker with those that should be there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # documented path, stub lacks __all__
    AclBinding,
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from processors.exceptions import ConfigError, TrustplaneError
from streams import acls, kafka, names
from streams.credentials import CredentialStore
from streams.topics import (
    align_topic_configs,
    check_replication,
    ensure_topics,
    new_topic,
    wait_for_leaders,
)

if TYPE_CHECKING:
    from streams.config import Settings

__all__ = ["ProvisionError", "ProvisionReport", "AclCheck", "provision", "check", "revoke"]

SCRAM_ITERATIONS = 8192
"""SCRAM-SHA-512 iterations (the broker refuses fewer than 4096)."""


class ProvisionError(TrustplaneError):
    """Users, topics or ACLs could not be created."""


@dataclass
class ProvisionReport:
    users: list[str] = field(default_factory=list)
    topics_created: list[str] = field(default_factory=list)
    configs_changed: list[str] = field(default_factory=list)
    acls: int = 0


@dataclass
class AclCheck:
    missing: list[acls.Grant]
    unexpected: list[acls.Grant]

    @property
    def ok(self) -> bool:
        return not self.missing


def provision(
    settings: Settings,
    *,
    users: bool = True,
    topics: bool = True,
    grant: bool = True,
    principal: str = acls.ADMIN,
    timeout: float = 30.0,
    progress: Callable[[str], None] = lambda message: None,
) -> ProvisionReport:
    """Create the role users, the estate's topics and its ACLs (see the module doc)."""
    admin_settings = settings.as_principal(principal)
    client = kafka.admin(admin_settings)
    report = ProvisionReport()
    if users:
        store = CredentialStore(settings.resolved_kafka_credentials_dir)
        report.users = create_users(client, store, acls.ROLES, timeout=timeout)
        progress(f"users: {', '.join(report.users)} (passwords in {store.directory})")
    if topics:
        report.topics_created, report.configs_changed = create_topics(
            admin_settings, client, timeout=timeout
        )
        progress(
            f"topics: {len(report.topics_created)} created"
            + (f", {len(report.configs_changed)} configs aligned" if report.configs_changed else "")
        )
    if grant:
        report.acls = create_acls(client, acls.bindings(settings), timeout=timeout)
        progress(f"ACLs: {report.acls} for prefix {settings.topic('')!r}, root "
                 f"{names.root(settings)!r}")  # fmt: skip
    return report


def create_users(
    client: AdminClient, store: CredentialStore, users: Iterable[str], *, timeout: float = 30.0
) -> list[str]:
    """Upsert a SCRAM-SHA-512 credential per user, from its password file."""
    passwords = store.ensure_all(users)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            user,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            password.get().encode(),
        )
        for user, password in passwords.items()
    ]
    for user, future in client.alter_user_scram_credentials(upserts).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            raise ProvisionError(
                f"cannot create the SCRAM user {user}: {exc}", hint=_ADMIN_HINT
            ) from exc
    return list(passwords)


def create_topics(
    settings: Settings, client: AdminClient, *, timeout: float = 30.0
) -> tuple[list[str], list[str]]:
    """The estate's topics (created if missing, configs aligned), as ``settings``' user."""
    from streams.notary.topics import ensure_notary_topics  # the notary's own topic rules

    try:
        check_replication(settings, client, timeout=timeout)
        created = ensure_topics(settings, timeout=timeout)
        created += ensure_notary_topics(settings, timeout=timeout)
        changelogs = [
            new_topic(settings, topic, 1, {"cleanup.policy": "compact"})
            for topic in names.gate_changelog_topics(settings)
        ]
        futures = client.create_topics(changelogs, operation_timeout=timeout) if changelogs else {}
        for topic, future in futures.items():
            try:
                future.result(timeout)
                created.append(topic)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise ProvisionError(f"cannot create topic {topic}: {exc}") from exc
        changed = align_topic_configs(settings, client, timeout=timeout)
        if created:
            wait_for_leaders(client, created, timeout=timeout)
    except TrustplaneError as exc:
        if isinstance(exc, ProvisionError | ConfigError):
            raise
        raise ProvisionError(exc.reason, hint=exc.hint or _ADMIN_HINT) from exc
    return created, changed


def create_acls(client: AdminClient, wanted: list[AclBinding], *, timeout: float = 30.0) -> int:
    """Create ``wanted`` (existing ones are left as they are); return how many."""
    if not wanted:
        return 0
    for binding, future in client.create_acls(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            raise ProvisionError(
                f"cannot create the ACL {acls.Grant.of(binding)}: {exc}", hint=_ADMIN_HINT
            ) from exc
    return len(wanted)


def check(settings: Settings, *, principal: str = acls.ADMIN, timeout: float = 30.0) -> AclCheck:
    """The ACLs of the roles on the broker against :func:`streams.acls.grants`:
    ``missing`` are needed and absent; ``unexpected`` are granted to a role on this
    estate's topics or names and not in the table."""
    client = kafka.admin(settings.as_principal(principal))
    wanted = set(acls.grants(settings))
    found: set[acls.Grant] = set()
    for role in acls.ROLES:
        try:
            bindings = client.describe_acls(acls.role_filter(role), request_timeout=timeout)
            found.update(acls.Grant.of(b) for b in bindings.result(timeout))
        except KafkaException as exc:
            raise ProvisionError(
                f"cannot list the ACLs of {role}: {exc}", hint=_ADMIN_HINT
            ) from exc
    ours = (settings.topic(""), f"{names.root(settings)}.")
    mine = {g for g in found if g.name.startswith(ours) or ours[0] == ""}
    return AclCheck(missing=sorted(wanted - found), unexpected=sorted(mine - wanted))


def revoke(settings: Settings, *, principal: str = acls.ADMIN, timeout: float = 30.0) -> int:
    """Delete the ACLs :func:`provision` granted for this estate; return how many."""
    client = kafka.admin(settings.as_principal(principal))
    filters = [grant.filter() for grant in acls.grants(settings)]
    deleted = 0
    for _, future in client.delete_acls(filters, request_timeout=timeout).items():
        try:
            deleted += len(future.result(timeout))
        except KafkaException as exc:
            raise ProvisionError(f"cannot delete ACLs: {exc}", hint=_ADMIN_HINT) from exc
    return deleted


_ADMIN_HINT = (
    "provisioning needs a super user (admin) or ALTER on the cluster; is the broker up "
    "(`trustplane kafka status`) and is the admin password file in place?"
)
