"""Schema migrations: numbered ``schemas/sql/NNN_name.sql`` files, each applied once.

``000_*`` (the ``schema_migrations`` ledger) is re-applied on every setup; every later
file is applied once, in order, and recorded with the SHA-256 of its bytes, so an
applied file that was edited afterwards stops the sink instead of drifting silently.
Statements must be idempotent (``IF NOT EXISTS``): a migration that fails half-way is
run again from its first statement.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sinks.base import MigrationError, QueryError
from sinks.clickhouse.backends import Backend
from sinks.clickhouse.results import parse_json_compact
from sinks.sql_guard import split_statements

__all__ = ["SQL_DIR", "Migration", "load_migrations", "apply_migrations"]

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = PROJECT_ROOT / "schemas" / "sql"
"""Numbered migrations: ``NNN_name.sql``; ``000_*`` is re-applied on every setup."""


_MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    """File name, e.g. ``001_lineage.sql``."""
    sql: str
    checksum: str
    """``sha256:<hex>`` of the file's bytes."""

    @property
    def statements(self) -> list[str]:
        return split_statements(self.sql)


def load_migrations(directory: Path = SQL_DIR) -> list[Migration]:
    """The migrations in ``directory``, by version. ``000_*`` must exist (the ledger)."""
    migrations: dict[int, Migration] = {}
    if not directory.is_dir():
        raise MigrationError(f"no migrations folder {directory}")
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_RE.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name} in {directory} is not named NNN_name.sql",
                hint="migrations are numbered: 001_lineage.sql, 002_decisions.sql, ...",
            )
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(
                f"two migrations numbered {version:03d}: "
                f"{migrations[version].name} and {path.name}",
                hint="give each migration its own number",
            )
        data = path.read_bytes()
        migrations[version] = Migration(
            version, path.name, data.decode(), "sha256:" + hashlib.sha256(data).hexdigest()
        )
    if 0 not in migrations:
        raise MigrationError(f"{directory} has no 000_*.sql (the schema_migrations ledger)")
    return [migrations[v] for v in sorted(migrations)]


def apply_migrations(backend: Backend, migrations: Sequence[Migration]) -> list[str]:
    """Apply what is not applied yet; return the names applied now."""
    ledger, *rest = migrations
    _run_migration(backend, ledger)
    rows = parse_json_compact(
        backend.select(
            "SELECT version, argMax(checksum, applied_at) FROM schema_migrations GROUP BY version",
            {},
            readonly=False,
        )
    ).rows
    applied = {int(version): str(checksum) for version, checksum in rows}
    known = {m.version for m in migrations}
    newer = sorted(v for v in applied if v not in known)
    if newer:
        log.warning(
            "the store has migrations this code does not know (%s): it was set up by a newer "
            "trustplane; writing with the columns this version knows",
            ", ".join(f"{v:03d}" for v in newer),
        )
    done: list[str] = []
    for migration in rest:
        recorded = applied.get(migration.version)
        if recorded is not None:
            if recorded != migration.checksum:
                raise MigrationError(
                    f"migration {migration.name} was changed after it was applied "
                    f"(applied {recorded[:19]}…, file {migration.checksum[:19]}…)",
                    hint="never edit an applied migration: restore the file and put the change "
                    "in a new numbered migration",
                )
            continue
        _run_migration(backend, migration)
        backend.execute(
            "INSERT INTO schema_migrations (version, name, checksum) "  # noqa: S608 - checked names
            f"VALUES ({migration.version}, '{migration.name}', '{migration.checksum}')"
        )
        done.append(migration.name)
        log.info("applied migration %s", migration.name)
    return done


def _run_migration(backend: Backend, migration: Migration) -> None:
    for number, statement in enumerate(migration.statements, start=1):
        try:
            backend.execute(statement)
        except QueryError as exc:
            raise MigrationError(
                f"migration {migration.name}, statement {number} failed: {exc.reason}",
                hint="fix the migration (statements must be idempotent: IF NOT EXISTS) and "
                "run the sink again",
            ) from exc
