"""Compiling a bundle: :func:`compile_bundle` checks it once and parses it into a
:class:`~processors.layers.policy.engine.PolicyEngine`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Final

import cedarpy
from cedarpy import pst

from processors.layers.policy.bundle import PolicyBundle
from processors.layers.policy.engine import DECISION_CACHE, PolicyEngine, PolicyInfo
from processors.layers.policy.exceptions import PolicyBundleError
from processors.layers.policy.projection import Projection, Unanalysable
from processors.layers.policy.schema_shape import SchemaShapeError, context_shapes
from processors.layers.policy.slicing import Slicer, action_parents_of
from processors.timefmt import iso_seconds

__all__ = ["MAX_BUNDLE_BYTES", "MAX_POLICIES", "compile_bundle"]

MAX_POLICIES: Final = 20_000
"""A bundle with more policies is refused. Compiling costs ~0.25 s per 1,000 policies, and
Cedar evaluates (~1 us each) every policy whose scope can match a request."""
MAX_BUNDLE_BYTES: Final = 16 * 1024 * 1024
"""Policies plus schema text larger than this are refused before parsing."""

_ENTITY_PROBE: Final = json.dumps(
    [
        {
            "uid": {"type": "Agent", "id": "probe-agent"},
            "attrs": {},
            "parents": [{"type": "Role", "id": "probe-role"}],
        },
        {
            "uid": {"type": "Resource", "id": "kind:probe"},
            "attrs": {"kind": "kind", "name": "probe", "uri": "kind:probe"},
            "parents": [],
        },
    ]
)


def compile_bundle(
    bundle: PolicyBundle,
    now_ms: int,
    *,
    max_policies: int = MAX_POLICIES,
    max_bytes: int = MAX_BUNDLE_BYTES,
    decision_cache: int = DECISION_CACHE,
    slicing: bool = True,
) -> PolicyEngine:
    """Check a bundle and parse it once into a :class:`PolicyEngine`.

    ``decision_cache`` is how many decisions the engine remembers (0: none); the keys
    are derived from the bundle here (:mod:`.projection`).

    Raises :class:`PolicyBundleError` with the reason (Cedar's own words where Cedar
    refused) if the bundle is expired, too large, does not parse, has a policy without
    a unique ``@id`` or a template, does not validate against its schema, or its schema
    does not declare trustplane's entity model.
    """
    started = time.perf_counter()
    manifest = bundle.manifest
    if manifest.expires_at_ms <= now_ms:
        raise PolicyBundleError(
            f"policy bundle {manifest.version} expired at {iso_seconds(manifest.expires_at_ms)}",
            hint="publish a bundle with a later manifest.expires_at_ms",
        )
    schema_text = (
        bundle.schema if isinstance(bundle.schema, str) else json.dumps(dict(bundle.schema))
    )
    size = len(bundle.policies.encode()) + len(schema_text.encode())
    if size > max_bytes:
        raise PolicyBundleError(
            f"policy bundle {manifest.version} is {size} bytes of policies and schema; "
            f"the limit is {max_bytes}",
            hint="split the estate, or raise the limit deliberately",
        )
    schema = _parse_schema(bundle.schema, schema_text)
    try:
        base = cedarpy.Entities.from_json_str("[]", schema)
        cedarpy.Entities.from_json_str(_ENTITY_PROBE, schema)
    except ValueError as exc:
        raise PolicyBundleError(
            f"the schema does not declare trustplane's entity model (Cedar: {exc})",
            hint="declare, outside any namespace: entity Role; entity Agent in [Role]; "
            "entity Resource = { kind: String, name: String, uri: String };",
        ) from exc
    try:
        policy_set = cedarpy.PolicySet.from_str(bundle.policies, release_gil=True)
    except ValueError as exc:
        raise PolicyBundleError(
            f"the policies do not parse: {_locate_parse_error(bundle.policies, exc)}"
        ) from exc
    count = len(policy_set)
    if count > max_policies:
        raise PolicyBundleError(
            f"policy bundle {manifest.version} has {count} policies; the limit is "
            f"{max_policies} (compile time grows with it, and Cedar evaluates every policy "
            "whose scope can match a request)",
            hint="merge policies that differ only in an entity into one with a set "
            "(principal in [...]) or an attribute test",
        )
    policies, tree = _policy_infos(policy_set, bundle.policies)
    result = cedarpy.validate_policies(bundle.policies, schema, release_gil=True)
    if not result.validation_passed:
        names = result.id_annotations_by_policy_id
        per_policy: dict[str, list[str]] = {}
        for e in result.errors:
            name = names.get(e.policy_id, e.policy_id) or "policies"
            text = e.error.replace(f"for policy `{e.policy_id}`, ", "", 1)
            if text not in per_policy.setdefault(name, []):
                per_policy[name].append(text)
        problems = []
        for name, texts in per_policy.items():
            extra = f" (and {len(texts) - 2} similar)" if len(texts) > 2 else ""
            problems.append(f"[{name}] {'; '.join(texts[:2])}{extra}")
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more policies)" if len(problems) > 10 else ""
        raise PolicyBundleError(
            f"the policies do not validate against the schema: {shown}{more}",
            hint="fix the policy or declare what it uses in the schema",
        )
    action_parents = action_parents_of(base)
    slicer = Slicer(tree, action_parents) if tree is not None and slicing else None
    projection = (
        _projection(bundle, tree, action_parents, schema)
        if tree is not None and decision_cache > 0
        else None
    )
    took = (time.perf_counter() - started) * 1000
    return PolicyEngine(
        bundle,
        policy_set,
        schema,
        base,
        policies,
        slicer=slicer,
        projection=projection,
        compile_ms=took,
        decision_cache=decision_cache,
    )


def _projection(
    bundle: PolicyBundle,
    tree: pst.PolicySet,
    action_parents: Mapping[str, list[str]],
    schema: cedarpy.Schema,
) -> Projection | None:
    """The decision cache's keys for this bundle, or None (keys are then whole requests)
    if its policies or schema use something the projection does not model."""
    try:
        contexts = context_shapes(str(schema))
        return Projection(bundle.digest, tree, action_parents, contexts)
    except (Unanalysable, SchemaShapeError, ValueError, RecursionError):
        return None


def _parse_schema(schema: str | Mapping[str, Any], text: str) -> cedarpy.Schema:
    try:
        if isinstance(schema, Mapping) or text.lstrip().startswith("{"):
            return cedarpy.Schema.from_json_str(text, release_gil=True)
        return cedarpy.Schema.from_str(text, release_gil=True)
    except ValueError as exc:
        raise PolicyBundleError(f"the schema does not parse: {exc}") from exc


def _policy_infos(
    policy_set: cedarpy.PolicySet, text: str
) -> tuple[dict[str, PolicyInfo], pst.PolicySet | None]:
    templates, static, tree = _annotations(policy_set, text)
    if templates:
        raise PolicyBundleError(
            f"the bundle has {len(templates)} template(s) ({', '.join(templates[:5])}); "
            "templates (?principal/?resource) are not supported in bundles",
            hint="write concrete policies",
        )
    infos: dict[str, PolicyInfo] = {}
    seen: dict[str, str] = {}
    missing: list[str] = []
    duplicates: list[str] = []
    for cedar_id, (effect, notes) in static.items():
        policy_id = notes.get("id", "")
        if not policy_id.strip():
            missing.append(f"{cedar_id} (the {_ordinal(cedar_id)} policy, a {effect})")
            continue
        if policy_id in seen:
            duplicates.append(policy_id)
        seen[policy_id] = cedar_id
        response = notes.get("response", "allow")
        if response not in RESPONSES or (response == "review" and effect != "permit"):
            raise PolicyBundleError(
                f"policy {policy_id!r}: @response({response!r}) is not allowed",
                hint='a permit may say @response("review"): what it allows is held for a '
                'person (it can only make a decision stricter); "allow" is the default',
            )
        infos[cedar_id] = PolicyInfo(cedar_id, policy_id, effect, notes.get("reason", ""), response)
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise PolicyBundleError(
            f"{len(missing)} {'policy has' if len(missing) == 1 else 'policies have'} no @id "
            f"annotation: {', '.join(missing[:5])}{more}",
            hint='start every policy with @id("a.readable.name"): decisions report these ids',
        )
    if duplicates:
        raise PolicyBundleError(
            f"@id values must be unique; repeated: {', '.join(sorted(set(duplicates))[:10])}"
        )
    return infos, tree


RESPONSES = ("allow", "review")
"""What a permit's ``@response`` may say."""


def _annotations(
    policy_set: cedarpy.PolicySet, text: str
) -> tuple[list[str], dict[str, tuple[str, dict[str, str]]], pst.PolicySet | None]:
    """(template ids, {cedar id: (effect, annotations)}, the typed tree if cedarpy has
    one for this syntax), from Cedar's own parse."""
    try:
        tree = policy_set.to_pst()
    except ValueError:
        # syntax newer than cedarpy's typed nodes: read the JSON (EST) form instead
        est = json.loads(cedarpy.policies_to_json_str(text))
        static = {
            pid: (
                str(p.get("effect", "")),
                {k: str(v) for k, v in p.get("annotations", {}).items()},
            )
            for pid, p in est.get("staticPolicies", {}).items()
        }
        return list(est.get("templates", {})), static, None
    static = {pid: (str(p.effect), dict(p.annotations)) for pid, p in tree.static_policies.items()}
    return list(tree.templates), static, tree


def _ordinal(cedar_id: str) -> str:
    digits = cedar_id.removeprefix("policy")
    if not digits.isdigit():
        return cedar_id
    n = int(digits) + 1
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _locate_parse_error(text: str, exc: Exception) -> str:
    """Cedar's parse error, with the line of the first policy that does not parse."""
    message = str(exc)
    for line, statement in _statements(text):
        try:
            cedarpy.PolicySet.from_str(statement)
        except ValueError as inner:
            return f"{inner} (in the policy starting at line {line})"
    return message


def _statements(text: str) -> list[tuple[int, str]]:
    """Split Cedar text at top-level ';' (outside strings and comments), with the line
    each statement's first token is on."""
    out: list[tuple[int, str]] = []
    start, line, first_line = 0, 1, 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
            if not first_line:
                first_line = line
        elif ch == ";":
            out.append((first_line or line, text[start : i + 1]))
            start, first_line = i + 1, 0
        elif not ch.isspace() and not first_line:
            first_line = line
        i += 1
    if first_line:
        out.append((first_line, text[start:]))
    return out
