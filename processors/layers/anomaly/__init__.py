"""Behavioural anomaly layer: does this intent look like what this agent normally does?

Per agent, with bounded, JSON-safe state (kept in the gate's changelog), the layer
watches eight features:

``rate`` / ``burst``
    how many intents of the same action in a sliding window (60 s / 1 s by default);
``novel_action`` / ``novel_resource_kind`` / ``novel_destination``
    an action, resource kind (``acct`` in ``acct:42``) or destination never approved for
    the agent; judged only once its baseline period is over (``baseline.period_ms`` of
    history *and* ``baseline.min_intents`` approved intents);
``deviation``
    a numeric parameter (``amount``) far from the agent's rolling robust baseline: the
    robust z-score ``(x - median) / scale`` (scale: 1.4826 * MAD, or the inter-decile
    range when many values are equal) over a bounded, decaying reservoir of the agent's
    approved values (per action, optionally on a log scale), judged after
    ``min_samples`` values and reported in the evidence;
``fanout``
    distinct resources touched by one action class in a window;
``exfiltration``
    an export (configured action patterns) to a destination never approved for the agent
    after at least ``min_reads`` reads (configured patterns) in a window;

plus ``quarantine``: after ``quarantine.after`` anomaly violations of the same agent
within ``quarantine.window_ms``, the response escalates to quarantine.

Thresholds and responses (``review``, ``deny``, ``quarantine``) are set per action
class, matched with ``fnmatch`` patterns on the action (first match wins, then the
``default`` class), in a validated config (``policies/anomaly.toml``).

What learns from what (the poisoning rule): activity features (rate, burst, fan-out, the
read counter) count every intent the gate decided, denied ones included, so a denied loop
keeps looking like a loop. Baselines (known actions, kinds, destinations and numeric
reservoirs) learn only from *approved* intents, so an attacker cannot train the baseline
with intents the gate refused; and an approved value far from the median (beyond the
rule's ``learn_max_z``, default half of ``max_z``) is not learned either, so a slow
escalation cannot drag the baseline up. An intent held for review and later approved by
an operator is learned only if the gate calls :meth:`AnomalyCheck.learn` for it.

Every REVIEW or DENY of this layer is an anomaly violation of the agent (counted for the
quarantine escalation); a verdict whose response is ``quarantine`` carries
``quarantine_scope="agent"`` and the gate turns it into a quarantine event.

The package, one responsibility a module:

- :mod:`.check` -- :class:`AnomalyCheck`, the layer (evaluate, observe, learn);
- :mod:`.config` -- :class:`AnomalyConfig`, loading and validating the config file;
- :mod:`.rules` -- the per-class rules (:class:`ActionClass`, :class:`Limit`, ...);
- :mod:`.table` -- reading one table of the parsed config, with exact error messages;
- :mod:`.state` -- :class:`AnomalyState`, :class:`NumericBaseline` and their JSON codec;
- :mod:`.stats` -- robust statistics (median, robust scale);
- :mod:`.windows` -- sliding-window bookkeeping (rate, burst, fan-out, reads);
- :mod:`.features` -- what is read from an intent (resource kind, numbers);
- :mod:`.findings` -- a triggered feature's reason, response and evidence.
"""

from __future__ import annotations

from processors.layers.anomaly.check import AnomalyCheck
from processors.layers.anomaly.config import DEFAULT_CONFIG_PATH, AnomalyConfig
from processors.layers.anomaly.features import resource_kind
from processors.layers.anomaly.rules import (
    FEATURES,
    RESPONSES,
    ActionClass,
    DeviationRule,
    ExfiltrationRule,
    Flag,
    Limit,
)
from processors.layers.anomaly.state import AnomalyState, AnomalyStateError, NumericBaseline

__all__ = [
    "AnomalyCheck",
    "AnomalyConfig",
    "AnomalyState",
    "AnomalyStateError",
    "ActionClass",
    "Limit",
    "Flag",
    "DeviationRule",
    "ExfiltrationRule",
    "NumericBaseline",
    "DEFAULT_CONFIG_PATH",
    "FEATURES",
    "RESPONSES",
    "resource_kind",
]
