"""Cedar policy for the authorization layer: bundles, the compiled engine, the layer.

A **policy bundle** is Cedar policies + a Cedar schema + a manifest (version,
created_at_ms, expires_at_ms, description). It comes as a directory
(``policies.cedar``, ``schema.cedarschema`` or ``schema.cedarschema.json``,
``manifest.json``) or as one JSON document (the form published on the control topic)::

    {"manifest": {...}, "policies": "<cedar text>", "schema": "<cedar schema>" | {json schema}}

Its digest is ``sha256:`` + the SHA-256 of the document's RFC 8785 canonical JSON.

:func:`compile_bundle` checks a bundle once (policies parse, every policy has a unique
``@id``, the policies validate against the schema, the schema declares trustplane's
entity model, the manifest is typed and not expired) and returns a
:class:`PolicyEngine` holding Cedar's parsed handles, reused for every request.

**Entity model** (what policies are written against):

- principal ``Agent::"<agent_id>"``, a member of ``Role::"<role>"`` for each role the
  agent registry gives it (``principal in Role::"treasury"``);
- action ``Action::"<intent action>"`` (``Action::"payments.transfer"``); the schema
  may put actions in groups (``action "tickets.reply" in ["tickets"]``);
- resource ``Resource::"<intent resource>"`` with ``kind`` (text before the first
  ``:``, "" if none), ``name`` (the rest, without a leading ``//``) and ``uri`` (the
  whole string): ``acct:ACME-42`` is kind ``acct``, name ``ACME-42``;
  ``s3://acme-exports/q3.csv`` is kind ``s3``, name ``acme-exports/q3.csv``;
- context ``{environment, runtime_id, hour_utc, weekday, risk?, parameters}``:
  the runtime's claimed environment and id, the UTC hour (0-23) and ISO weekday
  (1 = Monday ... 7 = Sunday) of ``issued_at_ms``, ``risk`` (a Long, only if the
  intent's context carries ``risk``; no other key of the intent's context is used),
  and the intent's parameters as a record: strings stay strings, booleans booleans,
  **every number (integer or not) becomes a Cedar ``decimal``** (at most 4 decimal
  places, |x| <= 922337203685477.5807; anything else is denied with the reason),
  and null parameters are left out (test them with ``has``). A string sent where the
  schema declares a decimal is read as one by Cedar (``"1250.00"``), so exact amounts
  may also travel as strings.

Requests are validated against the schema: an undeclared action, a parameter the
action's context does not declare, or a value of the wrong type is a deny with
Cedar's reason, never an exception. Cedar's semantics hold: default deny, any
matching ``forbid`` overrides every ``permit``. One stricter rule: when any policy
fails to evaluate, an allow is not trusted (Cedar skips erroring policies, so a
failing ``forbid`` would otherwise let the request through) and the decision is deny.

Speed: an engine decides each request on the subset of policies whose scope (principal,
action) can match it - the same decision, since a policy with a false scope neither
applies nor errors - remembers the Cedar entities per (agent, roles, resource), and
caches up to ``DECISION_CACHE`` decisions keyed by what the bundle's policies can read
of a request (its action, the agents and roles they name, the resource attributes and
context values they read, and the shape of the rest; see :mod:`.projection`), so the
many requests that differ only in values no policy reads share one Cedar evaluation.
``decision_cache=0`` (on :class:`PolicyStore` or :func:`compile_bundle`) turns it off.
``bench/bench_policy.py`` and ``bench/bench_policy_cache.py`` measure it.

The package, one responsibility a module:

- :mod:`.bundle` -- :class:`PolicyBundle` and its :class:`BundleManifest` (reading, digest);
- :mod:`.compiler` -- :func:`compile_bundle` (every check a bundle must pass);
- :mod:`.engine` -- :class:`PolicyEngine`, deciding requests with Cedar;
- :mod:`.request` -- :class:`PolicyRequest` and :class:`PolicyDecision`;
- :mod:`.encoding` -- entities and context values in Cedar's JSON form;
- :mod:`.slicing` -- the subset of policies whose scope can match a request;
- :mod:`.projection` -- decision-cache keys: what a bundle can observe of a request;
- :mod:`.schema_shape` -- each action's declared context type, read from the schema;
- :mod:`.cache` -- :class:`~.cache.DecisionCache`, a bounded LRU of decisions;
- :mod:`.store` -- :class:`PolicyStore`, the active bundle, swapped by control commands;
- :mod:`.check` -- :class:`PolicyCheck`, the layer;
- :mod:`.cases` -- policy test tables (``*.cases.json``);
- :mod:`.whatif` -- :func:`replay`: recorded intents against a draft bundle, before publishing;
- :mod:`.exceptions` -- :class:`PolicyError` and its subclasses.
"""

from __future__ import annotations

from processors.layers.policy.bundle import BundleManifest, PolicyBundle
from processors.layers.policy.cases import (
    CaseResult,
    PolicyCase,
    cases_from_document,
    load_cases,
    run_cases,
)
from processors.layers.policy.check import LAYER, PolicyCheck
from processors.layers.policy.compiler import MAX_BUNDLE_BYTES, MAX_POLICIES, compile_bundle
from processors.layers.policy.engine import DECISION_CACHE, PolicyEngine, PolicyInfo
from processors.layers.policy.exceptions import (
    PolicyBundleError,
    PolicyCaseError,
    PolicyError,
    PolicyEvaluationError,
)
from processors.layers.policy.request import PolicyDecision, PolicyRequest, resource_attributes
from processors.layers.policy.store import CONTROL_SUBJECT, PolicyStore
from processors.layers.policy.whatif import (
    MAX_REPLAY,
    Effect,
    PolicyClass,
    PolicyJudgement,
    RecordedIntent,
    WhatIfError,
    WhatIfReport,
    WhatIfRow,
    compile_draft,
    recorded_policy_ids,
    replay,
)

# ``iso_ms`` here has always meant whole seconds (the policy CLI prints it); the name is
# kept for its callers. New code: processors.timefmt.iso_seconds.
from processors.timefmt import iso_seconds as iso_ms

__all__ = [
    "LAYER",
    "CONTROL_SUBJECT",
    "MAX_POLICIES",
    "MAX_BUNDLE_BYTES",
    "DECISION_CACHE",
    "PolicyError",
    "PolicyBundleError",
    "PolicyEvaluationError",
    "BundleManifest",
    "PolicyBundle",
    "PolicyInfo",
    "PolicyRequest",
    "PolicyDecision",
    "PolicyEngine",
    "PolicyStore",
    "PolicyCheck",
    "compile_bundle",
    "resource_attributes",
    "iso_ms",
    "PolicyCaseError",
    "PolicyCase",
    "CaseResult",
    "load_cases",
    "cases_from_document",
    "run_cases",
    "MAX_REPLAY",
    "WhatIfError",
    "Effect",
    "PolicyClass",
    "PolicyJudgement",
    "RecordedIntent",
    "WhatIfRow",
    "WhatIfReport",
    "compile_draft",
    "recorded_policy_ids",
    "replay",
]
