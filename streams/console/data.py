"""What the console reads from ClickHouse: fixed queries, every value a bound parameter.

No SQL is ever built from user input: each query below is a constant with ClickHouse
``{name:Type}`` placeholders, and the sink's endpoint runs it under its read-only guard.
The store is the sink's SQL endpoint (embedded chDB) or a ClickHouse server
(``clickhouse_url``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sinks.base import ParamValue, QueryResult
from sinks.clickhouse.queries import get_named_query
from streams.config import Settings
from streams.sink.sql_client import QueryTarget, SinkQueryClient
from streams.sink.sql_server import sql_token_file

__all__ = ["LineageStore", "SearchFilters", "open_store"]

OUTCOMES = ("approved", "denied", "review")
_EPOCH = "1970-01-01 00:00:00.000"
_FAR = "2200-01-01 00:00:00.000"

_DECISIONS = """
SELECT log_index, intent_id, agent_id, status, event_type,
       attributes['action'] AS action, attributes['resource'] AS resource,
       reasons, verdict_layers, verdict_statuses, occurred_at_ms
FROM lineage_events
WHERE stage IN ('enforcement', 'review')
  AND log_index > {after:UInt64}
  AND ({agent:String} = '' OR agent_id = {agent:String})
  AND ({intent:String} = '' OR intent_id = {intent:String})
  AND ({action:String} = '' OR like(attributes['action'], {action:String}))
  AND ({resource:String} = '' OR like(attributes['resource'], {resource:String}))
  AND ({outcome:String} = '' OR status = {outcome:String})
  AND occurred_at >= toDateTime64({since:String}, 3, 'UTC')
  AND occurred_at <= toDateTime64({until:String}, 3, 'UTC')
ORDER BY log_index DESC
LIMIT {limit:UInt32}
"""

_TIMELINE = """
SELECT log_index, event_id, stage, event_type, status, reasons, attributes,
       verdict_layers, verdict_statuses, verdict_reasons, verdict_evidence,
       signer, event_hash, prev_hash, occurred_at_ms, worker
FROM lineage_events
WHERE intent_id = {intent:String}
ORDER BY log_index
"""

_INTENT = """
SELECT * FROM intents WHERE intent_id = {intent:String} LIMIT 1
"""

_APPROVALS = """
SELECT approval_id, intent_digest, envelope, issued_at_ms, expires_at_ms, worker
FROM approvals WHERE intent_id = {intent:String} ORDER BY issued_at_ms
"""

_OUTCOMES = """
SELECT outcome_id, approval_id, executor_id, status, detail, reported_at_ms
FROM outcomes WHERE intent_id = {intent:String} ORDER BY reported_at_ms
"""

_COVERING = """
SELECT tree_size, root_hash, note, created_at_ms
FROM checkpoints WHERE tree_size > {index:UInt64}
ORDER BY tree_size LIMIT 1
"""

_LATEST_CHECKPOINT = """
SELECT tree_size, root_hash, created_at_ms FROM checkpoints ORDER BY tree_size DESC LIMIT 1
"""

_HELD = """
SELECT e.log_index AS log_index, e.intent_id AS intent_id, e.agent_id AS agent_id,
       e.action AS action, e.resource AS resource, e.verdict_layers AS verdict_layers,
       e.verdict_statuses AS verdict_statuses, e.verdict_reasons AS verdict_reasons,
       e.held_at_ms AS held_at_ms, i.parameters_json AS parameters_json,
       i.context_json AS context_json, i.runtime_id AS runtime_id,
       i.environment AS environment
FROM (
    SELECT log_index, intent_id, agent_id, attributes['action'] AS action,
           attributes['resource'] AS resource, verdict_layers, verdict_statuses,
           verdict_reasons, occurred_at_ms AS held_at_ms
    FROM lineage_events
    WHERE stage = 'enforcement' AND status = 'review'
      AND intent_id NOT IN (
          SELECT intent_id FROM lineage_events
          WHERE stage IN ('enforcement', 'review') AND status IN ('approved', 'denied'))
    ORDER BY log_index DESC
    LIMIT {limit:UInt32}
) AS e
LEFT JOIN intents AS i ON i.intent_id = e.intent_id
ORDER BY e.log_index DESC
"""

_QUARANTINES = """
SELECT log_index, status AS kind, attributes['subject'] AS subject,
       attributes['issued_by'] AS issued_by, reasons, occurred_at_ms
FROM lineage_events
WHERE stage = 'control' AND event_type = 'control.applied'
  AND status IN ('agent.quarantine', 'runtime.quarantine', 'agent.release', 'runtime.release')
ORDER BY log_index DESC
LIMIT {limit:UInt32}
"""

_QUARANTINE_CAUSES = """
SELECT log_index, intent_id, agent_id, attributes['action'] AS action,
       verdict_layers, verdict_reasons, occurred_at_ms
FROM lineage_events
WHERE stage = 'enforcement' AND arrayExists(e -> e['response'] = 'quarantine', verdict_evidence)
ORDER BY log_index DESC
LIMIT {limit:UInt32}
"""

_REPLAYABLE = """
SELECT i.intent_id AS intent_id, i.agent_id AS agent_id, i.action AS action,
       i.resource AS resource, i.parameters_json AS parameters_json,
       i.context_json AS context_json, i.environment AS environment,
       i.runtime_id AS runtime_id, i.issued_at_ms AS issued_at_ms,
       e.status AS status, e.verdict_layers AS verdict_layers,
       e.verdict_statuses AS verdict_statuses, e.verdict_evidence AS verdict_evidence
FROM intents AS i
INNER JOIN (
    SELECT intent_id, argMax(status, log_index) AS status,
           argMax(verdict_layers, log_index) AS verdict_layers,
           argMax(verdict_statuses, log_index) AS verdict_statuses,
           argMax(verdict_evidence, log_index) AS verdict_evidence
    FROM lineage_events WHERE stage = 'enforcement' GROUP BY intent_id
) AS e ON e.intent_id = i.intent_id
ORDER BY i.issued_at_ms DESC
LIMIT {limit:UInt32}
"""

_COUNTS = """
SELECT status, count() AS n FROM lineage_events
WHERE stage = 'enforcement' AND occurred_at >= now64(3) - INTERVAL 1 HOUR
GROUP BY status
"""


def _like(pattern: str) -> str:
    """An operator's ``payments.*`` as a LIKE pattern (``%`` and ``_`` taken literally)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _when(text: str, default: str) -> str:
    """``2026-11-30T10:00`` (a browser's datetime-local) as ClickHouse DateTime64 text."""
    text = text.strip()
    if not text:
        return default
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date and time (YYYY-MM-DDTHH:MM)") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


@dataclass(frozen=True)
class SearchFilters:
    agent: str = ""
    intent: str = ""
    action: str = ""
    resource: str = ""
    outcome: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def from_query(cls, query: Any) -> SearchFilters:
        values = {name: str(query.get(name, "")).strip()[:200] for name in cls.__annotations__}
        if values["outcome"] and values["outcome"] not in OUTCOMES:
            raise ValueError(f"outcome is one of {', '.join(OUTCOMES)}")
        return cls(**values)

    def params(self) -> dict[str, ParamValue]:
        return {
            "agent": self.agent,
            "intent": self.intent,
            "action": _like(self.action) if self.action else "",
            "resource": _like(self.resource) if self.resource else "",
            "outcome": self.outcome,
            "since": _when(self.since, _EPOCH),
            "until": _when(self.until, _FAR),
        }

    def any(self) -> bool:
        return any(getattr(self, name) for name in self.__annotations__)


def open_store(settings: Settings) -> QueryTarget:
    """The ClickHouse server when configured, else the running sink's SQL endpoint."""
    if settings.clickhouse_url:
        from streams.sink.config import SinkConfig, build_sink

        sink = build_sink(SinkConfig.from_settings(settings))
        sink.setup(migrate=False)
        return sink
    return SinkQueryClient(
        f"http://127.0.0.1:{settings.sink_http_port}",
        timeout_s=settings.sink_query_timeout_s + 5,
        token=settings.sink_sql_token or None,
        token_file=sql_token_file(settings.state_dir),
    )


def _json(text: object) -> Any:
    try:
        return json.loads(str(text)) if text else {}
    except ValueError:
        return {"unreadable": str(text)[:200]}


class LineageStore:
    """The console's queries. Blocking: call from a thread."""

    def __init__(self, target: QueryTarget) -> None:
        self.target = target

    def _rows(self, sql: str, params: dict[str, ParamValue] | None = None) -> list[dict[str, Any]]:
        result: QueryResult = self.target.query(sql, params or {})
        return result.dicts()

    def decisions(
        self, filters: SearchFilters, *, after: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        return self._rows(_DECISIONS, {**filters.params(), "after": after, "limit": limit})

    def timeline(self, intent_id: str) -> dict[str, Any]:
        params: dict[str, ParamValue] = {"intent": intent_id}
        events = self._rows(_TIMELINE, params)
        intents = self._rows(_INTENT, params)
        approvals = self._rows(_APPROVALS, params)
        outcomes = self._rows(_OUTCOMES, params)
        covering = None
        if events:
            last = max(int(e["log_index"]) for e in events)
            found = self._rows(_COVERING, {"index": last})
            covering = found[0] if found else None
        intent = intents[0] if intents else None
        if intent is not None:
            intent["parameters"] = _json(intent.get("parameters_json"))
            intent["context"] = _json(intent.get("context_json"))
        for approval in approvals:
            approval["envelope_json"] = _json(approval.get("envelope"))
        return {
            "intent_id": intent_id,
            "intent": intent,
            "events": events,
            "approvals": approvals,
            "outcomes": outcomes,
            "checkpoint": covering,
        }

    def latest_checkpoint(self) -> dict[str, Any] | None:
        rows = self._rows(_LATEST_CHECKPOINT)
        return rows[0] if rows else None

    def held_for_review(self, limit: int = 50) -> list[dict[str, Any]]:
        held = self._rows(_HELD, {"limit": limit})
        for row in held:
            # the intent's own row may reach the store a moment after its decision
            recorded = bool(row.get("parameters_json"))
            row["parameters"] = _json(row.get("parameters_json")) if recorded else None
            row["context"] = _json(row.get("context_json")) if recorded else None
        return held

    def gaps(self, limit: int = 200) -> dict[str, list[dict[str, Any]]]:
        def named(name: str) -> list[dict[str, Any]]:
            sql = get_named_query(name).sql
            # a query shipped with the package, never user input
            wrapped = f"SELECT * FROM ({sql}) LIMIT {{limit:UInt32}}"  # noqa: S608
            return self._rows(wrapped, {"limit": limit})

        return {
            "approvals_without_outcome": named("approvals_without_outcome"),
            "outcomes_without_approval": named("outcomes_without_approval"),
            "quarantines": self._rows(_QUARANTINES, {"limit": limit}),
            "quarantine_causes": self._rows(_QUARANTINE_CAUSES, {"limit": limit}),
        }

    def replayable(self, limit: int) -> list[dict[str, Any]]:
        rows = self._rows(_REPLAYABLE, {"limit": limit})
        for row in rows:
            row["parameters"] = _json(row.get("parameters_json"))
            row["context"] = _json(row.get("context_json"))
        return rows

    def outcome_counts(self) -> dict[str, int]:
        return {str(row["status"]): int(row["n"]) for row in self._rows(_COUNTS)}
