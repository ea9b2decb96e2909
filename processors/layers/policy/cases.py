"""Policy test tables (``*.cases.json``): requests and the decisions they must get,
run against a compiled bundle by ``trustplane policy test``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from processors.layers.policy.engine import PolicyEngine
from processors.layers.policy.exceptions import PolicyCaseError, PolicyEvaluationError
from processors.layers.policy.request import PolicyDecision, PolicyRequest

__all__ = ["PolicyCase", "CaseResult", "load_cases", "cases_from_document", "run_cases"]

_CASE_FIELDS: Final = frozenset(
    {
        "name",
        "agent",
        "roles",
        "action",
        "resource",
        "environment",
        "runtime_id",
        "at",
        "issued_at_ms",
        "parameters",
        "risk",
        "expect",
        "determining",
        "error",
    }
)


@dataclass(frozen=True, slots=True)
class PolicyCase:
    """One row of a test table: a request and the decision it must get.

    ``determining`` (if given) must equal the decision's ``@id`` list exactly (order
    does not matter; empty means a default deny or a request error); ``error`` (if
    given) must appear in one of the decision's errors.
    """

    name: str
    request: PolicyRequest
    expect_allow: bool
    determining: tuple[str, ...] | None = None
    error: str | None = None

    @classmethod
    def from_mapping(
        cls, data: object, defaults: Mapping[str, Any], where: str = "case"
    ) -> PolicyCase:
        if not isinstance(data, Mapping):
            raise PolicyCaseError(f"{where} must be a JSON object")
        unknown = sorted(map(str, set(data) - _CASE_FIELDS))
        if unknown:
            raise PolicyCaseError(
                f"{where} has unknown fields: {', '.join(unknown)}",
                hint=f"case fields: {', '.join(sorted(_CASE_FIELDS))}",
            )
        row = {**defaults, **data}
        name = row.get("name") or where
        where = f"{where} ({name})"
        for required in ("agent", "action", "resource", "expect"):
            if not isinstance(row.get(required), str) or not row[required]:
                raise PolicyCaseError(f"{where}: {required!r} must be a non-empty string")
        if row["expect"] not in ("allow", "deny"):
            raise PolicyCaseError(f"{where}: expect must be 'allow' or 'deny'")
        roles = row.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise PolicyCaseError(f"{where}: roles must be a list of strings")
        parameters = row.get("parameters", {})
        if not isinstance(parameters, Mapping):
            raise PolicyCaseError(f"{where}: parameters must be an object")
        determining = row.get("determining")
        if determining is not None and (
            not isinstance(determining, list) or not all(isinstance(d, str) for d in determining)
        ):
            raise PolicyCaseError(f"{where}: determining must be a list of policy @ids")
        error = row.get("error")
        if error is not None and not isinstance(error, str):
            raise PolicyCaseError(f"{where}: error must be a string")
        request = PolicyRequest.build(
            agent_id=row["agent"],
            roles=roles,
            action=row["action"],
            resource=row["resource"],
            environment=str(row.get("environment", "prod")),
            runtime_id=str(row.get("runtime_id", "rt-1")),
            issued_at_ms=_case_time(data, defaults, where),
            parameters=parameters,
            risk=row.get("risk"),
        )
        return cls(
            str(name),
            request,
            row["expect"] == "allow",
            tuple(sorted(determining)) if determining is not None else None,
            error,
        )


def _case_time(data: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> int:
    """The case's own 'at' / 'issued_at_ms' win over the defaults'."""
    for source in (data, defaults):
        if "issued_at_ms" in source:
            ms = source["issued_at_ms"]
            if isinstance(ms, bool) or not isinstance(ms, int):
                raise PolicyCaseError(f"{where}: issued_at_ms must be epoch milliseconds")
            return ms
        if "at" in source:
            return _iso_time(source["at"], where)
    raise PolicyCaseError(f"{where}: give 'at' (ISO 8601 UTC time) or 'issued_at_ms'")


def _iso_time(value: object, where: str) -> int:
    if not isinstance(value, str):
        raise PolicyCaseError(f"{where}: 'at' must be an ISO 8601 time like 2026-11-10T12:00:00Z")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise PolicyCaseError(f"{where}: 'at' is not an ISO 8601 time: {value!r}") from exc
    if moment.tzinfo is None:
        raise PolicyCaseError(f"{where}: 'at' needs a time zone (end it with Z for UTC)")
    return int(moment.timestamp() * 1000)


def cases_from_document(doc: object, *, source: str = "cases") -> list[PolicyCase]:
    """``{"defaults": {...}, "cases": [{...}, ...]}`` (or just the list of cases)."""
    if isinstance(doc, list):
        doc = {"cases": doc}
    if not isinstance(doc, Mapping) or not isinstance(doc.get("cases"), list):
        raise PolicyCaseError(
            f'{source}: expected {{"defaults": {{...}}, "cases": [...]}}',
            hint="see policies/bundle.cases.json",
        )
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise PolicyCaseError(f"{source}: defaults must be an object")
    return [
        PolicyCase.from_mapping(row, defaults, f"{source} case #{n}")
        for n, row in enumerate(doc["cases"], start=1)
    ]


def load_cases(path: Path | str) -> list[PolicyCase]:
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyCaseError(f"cannot read {target}: {exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise PolicyCaseError(f"{target} is not valid JSON: {exc}") from exc
    return cases_from_document(doc, source=target.name)


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: PolicyCase
    decision: PolicyDecision
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


def run_cases(engine: PolicyEngine, cases: Sequence[PolicyCase]) -> list[CaseResult]:
    """Decide every case; a case fails with the differences from what it expected."""
    results: list[CaseResult] = []
    for case in cases:
        try:
            decision = engine.authorize(case.request)
        except PolicyEvaluationError as exc:
            decision = PolicyDecision(False, (), (exc.reason,))
        problems: list[str] = []
        if decision.allowed != case.expect_allow:
            got = "allow" if decision.allowed else "deny"
            problems.append(f"expected {'allow' if case.expect_allow else 'deny'}, got {got}")
        if case.determining is not None:
            got_ids = tuple(sorted(decision.determining_policies))
            if got_ids != case.determining:
                problems.append(
                    f"expected determining [{', '.join(case.determining)}], "
                    f"got [{', '.join(got_ids)}]"
                )
        if case.error is not None and not any(case.error in e for e in decision.errors):
            problems.append(f"expected an error containing {case.error!r}")
        if not case.expect_allow and decision.errors and case.error is None:
            problems.append(f"unexpected error: {decision.errors[0]}")
        results.append(CaseResult(case, decision, tuple(problems)))
    return results
