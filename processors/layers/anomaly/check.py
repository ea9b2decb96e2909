"""The behavioural anomaly layer: :class:`AnomalyCheck` (what it watches, and what learns
from what, is described in :mod:`processors.layers.anomaly`)."""

from __future__ import annotations

import hashlib
import secrets
from bisect import bisect_right, insort
from collections.abc import Mapping
from typing import Any, Final

from processors.intent import Intent
from processors.layers.anomaly.config import AnomalyConfig, Lookup
from processors.layers.anomaly.features import MAX_TEXT, as_number, resource_kind, short
from processors.layers.anomaly.findings import (
    Finding,
    count_text,
    flag_finding,
    hours,
    secs,
    threshold_finding,
)
from processors.layers.anomaly.rules import SEVERITY, DeviationRule
from processors.layers.anomaly.state import (
    AnomalyState,
    AnomalyStateError,
    NumericBaseline,
    add_bounded,
    numeric_key,
    reservoir_draw,
)
from processors.layers.anomaly.stats import transformed, untransformed
from processors.layers.anomaly.windows import (
    READ_BUCKETS,
    count_after,
    distinct_after,
    drop_before,
    prune_reads,
    reads_after,
)
from processors.verdict import GateState, Status, Verdict

__all__ = ["AnomalyCheck", "LAYER", "STATE_KEY"]

LAYER: Final = "anomaly"
STATE_KEY: Final = "anomaly"
_SWEEP_EVERY: Final = 32


class AnomalyCheck:
    """The behavioural anomaly layer (a :class:`~processors.verdict.StatefulLayer`).

    ``evaluate`` only reads the agent's state and returns ALLOW, REVIEW (response
    ``review``) or DENY (``deny``, ``quarantine``). ``observe`` updates the state after
    the decision. Neither raises on odd parameter values: a feature it cannot judge is
    skipped with a note in the evidence.
    """

    name = LAYER
    state_key = STATE_KEY

    def __init__(self, config: AnomalyConfig | None = None, *, seed: int | None = None) -> None:
        """``seed`` makes the per-agent salts deterministic (offline evaluation, tests);
        without it every new agent state gets a random salt."""
        self.config = config or AnomalyConfig()
        self._memo: tuple[str, int, int, bool] | None = None
        self._seed = seed
        self._states_made = 0

    # -- StatefulLayer state handling -------------------------------------------

    def new_state(self) -> AnomalyState:
        if self._seed is None:
            return AnomalyState(salt=secrets.token_hex(16))
        self._states_made += 1
        text = f"{self._seed}:{self._states_made}".encode()
        return AnomalyState(salt=hashlib.sha256(text).hexdigest()[:32])

    def load_state(self, data: Mapping[str, Any]) -> AnomalyState:
        loaded = AnomalyState.from_dict(data, config=self.config)
        if not loaded.salt:
            loaded.salt = self.new_state().salt
        return loaded

    def dump_state(self, layer_state: Any) -> dict[str, Any]:
        if not isinstance(layer_state, AnomalyState):
            raise AnomalyStateError(
                f"anomaly state: expected an AnomalyState, got {type(layer_state).__name__}"
            )
        return layer_state.to_dict()

    def _state(self, state: GateState, *, attach: bool) -> AnomalyState:
        current = state.agent.get(self.state_key)
        if isinstance(current, AnomalyState):
            return current
        if isinstance(current, Mapping):
            loaded = self.load_state(current)
        else:
            loaded = self.new_state() if attach else AnomalyState()
        if attach:
            state.agent[self.state_key] = loaded
        return loaded

    # -- evaluate ---------------------------------------------------------------

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        agent_state = self._state(state, attach=False)
        now = state.now_ms
        look = self.config.lookup(intent.action)
        findings, evidence, notes = self._assess(intent, agent_state, look, now)
        if findings:
            findings.extend(self._escalation(intent, agent_state, now))
        self._memo = (intent.intent_id, now, id(agent_state), bool(findings))
        evidence["class"] = look.cls.name
        learning = agent_state.learning(now, self.config)
        evidence["baseline"] = "learning" if learning else "active"
        if notes:
            evidence["notes"] = "; ".join(notes)
        if not findings:
            reason = "no anomaly"
            if learning:
                reason += (
                    f"; learning the baseline ({agent_state.approved}/"
                    f"{self.config.baseline_min_intents} approved intents, "
                    f"{hours(self._elapsed(agent_state, now))}/"
                    f"{hours(self.config.baseline_ms)} h)"
                )
            return Verdict(LAYER, Status.ALLOW, (reason, *notes), evidence)
        response = max((f.response for f in findings), key=SEVERITY.__getitem__)
        for finding in findings:
            evidence.update(finding.evidence)
            evidence[f"{finding.feature}.response"] = finding.response
        evidence["anomaly"] = ",".join(dict.fromkeys(f.feature for f in findings))
        evidence["response"] = response
        if response == "quarantine":
            evidence["quarantine_scope"] = "agent"
        status = Status.REVIEW if response == "review" else Status.DENY
        return Verdict(LAYER, status, tuple(f.reason for f in findings), evidence)

    def _elapsed(self, agent_state: AnomalyState, now: int) -> int:
        return 0 if agent_state.first_ms is None else max(0, now - agent_state.first_ms)

    def _assess(
        self, intent: Intent, st: AnomalyState, look: Lookup, now: int
    ) -> tuple[list[Finding], dict[str, str], list[str]]:
        cfg = self.config
        cls = look.cls
        action = intent.action
        findings: list[Finding] = []
        evidence: dict[str, str] = {}
        notes: list[str] = []

        times = st.events.get(action)
        if cls.rate is not None:
            n = count_after(times, now - cfg.rate_window_ms) + 1
            if n > cls.rate.max:
                findings.append(
                    threshold_finding(
                        "rate",
                        f"rate: {count_text(n, cfg)} {action} in {secs(cfg.rate_window_ms)} s "
                        f"> {cls.rate.max}",
                        n,
                        cls.rate,
                    )
                )
        if cls.burst is not None:
            n = count_after(times, now - cfg.burst_window_ms) + 1
            if n > cls.burst.max:
                findings.append(
                    threshold_finding(
                        "burst",
                        f"burst: {count_text(n, cfg)} {action} in {secs(cfg.burst_window_ms)} s "
                        f"> {cls.burst.max}",
                        n,
                        cls.burst,
                    )
                )
        if cls.fanout is not None:
            n = distinct_after(st.fanout.get(cls.name), intent.resource, now - cfg.fanout_window_ms)
            if n > cls.fanout.max:
                findings.append(
                    threshold_finding(
                        "fanout",
                        f"fanout: {n} distinct resources for {cls.name} actions in "
                        f"{secs(cfg.fanout_window_ms)} s > {cls.fanout.max}",
                        n,
                        cls.fanout,
                    )
                )

        for param, rule in cls.deviation.items():
            finding = self._deviation(intent, st, param, rule, evidence, notes)
            if finding is not None:
                findings.append(finding)

        if st.learning(now, cfg):
            return findings, evidence, notes

        agent = intent.agent_id
        if cls.novel_action is not None and action not in st.known_actions:
            findings.append(
                flag_finding(
                    "novel_action",
                    f"novel action: {agent!r} never had {action!r} approved "
                    f"({len(st.known_actions)} known actions)",
                    action,
                    cls.novel_action,
                )
            )
        if cls.novel_resource_kind is not None:
            kind = resource_kind(intent.resource)
            if kind not in st.known_kinds:
                findings.append(
                    flag_finding(
                        "novel_resource_kind",
                        f"novel resource kind: {agent!r} never had a {kind!r} resource "
                        f"approved ({short(intent.resource)!r})",
                        kind,
                        cls.novel_resource_kind,
                    )
                )
        destination = self.destination(intent, look)
        new_destination = destination is not None and destination not in st.known_destinations
        if cls.novel_destination is not None and destination is not None and new_destination:
            findings.append(
                flag_finding(
                    "novel_destination",
                    f"novel destination: {agent!r} never had {short(destination)!r} approved",
                    destination,
                    cls.novel_destination,
                )
            )
        if cls.exfiltration is not None and look.is_export and new_destination:
            reads = reads_after(st.reads, now, cfg.exfil_window_ms)
            if reads >= cls.exfiltration.min_reads:
                findings.append(
                    Finding(
                        "exfiltration",
                        f"exfiltration: {reads} reads in the last "
                        f"{secs(cfg.exfil_window_ms)} s, then {action} to new destination "
                        f"{short(destination or '')!r} (>= {cls.exfiltration.min_reads} reads)",
                        cls.exfiltration.response,
                        {
                            "exfiltration.value": str(reads),
                            "exfiltration.threshold": str(cls.exfiltration.min_reads),
                            "exfiltration.destination": short(destination or ""),
                        },
                    )
                )
        return findings, evidence, notes

    def _deviation(
        self,
        intent: Intent,
        st: AnomalyState,
        param: str,
        rule: DeviationRule,
        evidence: dict[str, str],
        notes: list[str],
    ) -> Finding | None:
        if param not in intent.parameters:
            return None
        value, why = as_number(intent.parameters[param])
        if value is None:
            notes.append(f"deviation.{param} skipped: {why}")
            return None
        baseline = st.numeric.get(numeric_key(intent.action, param))
        samples = 0 if baseline is None else len(baseline.values)
        if baseline is None or samples < rule.min_samples:
            evidence[f"deviation.{param}.samples"] = str(samples)
            return None
        z, median = _robust_z(baseline, value, rule)
        evidence[f"deviation.{param}.z"] = f"{z:.2f}"
        over = (rule.direction in ("above", "both") and z > rule.max_z) or (
            rule.direction in ("below", "both") and z < -rule.max_z
        )
        if not over:
            return None
        typical = untransformed(median, rule.transform)
        side = "above" if z > 0 else "below"
        return Finding(
            "deviation",
            f"deviation: {param} {value:g} is {abs(z):.1f} robust z {side} the baseline median "
            f"{typical:.6g} (n={samples}, {rule.transform} scale) > {rule.max_z:g}",
            rule.response,
            {
                "deviation.param": param,
                "deviation.observed": f"{value:g}",
                "deviation.value": f"{z:.2f}",
                "deviation.threshold": f"{rule.max_z:g}",
                "deviation.median": f"{typical:.6g}",
                "deviation.samples": str(samples),
            },
        )

    def _escalation(self, intent: Intent, st: AnomalyState, now: int) -> list[Finding]:
        after = self.config.quarantine_after
        if after <= 0:
            return []
        window = self.config.quarantine_window_ms
        count = count_after(st.violations, now - window) + 1
        if count < after:
            return []
        return [
            Finding(
                "quarantine",
                f"quarantine: {count} anomaly violations by {intent.agent_id!r} within "
                f"{secs(window)} s (quarantine after {after})",
                "quarantine",
                {"quarantine.value": str(count), "quarantine.threshold": str(after)},
            )
        ]

    def destination(self, intent: Intent, look: Lookup | None = None) -> str | None:
        """Where the intent sends data: the first configured destination parameter that is a
        non-empty string, else (for export actions) the resource."""
        for param in self.config.destination_params:
            value = intent.parameters.get(param)
            if isinstance(value, str) and value:
                return value[:MAX_TEXT]
        look = look or self.config.lookup(intent.action)
        return intent.resource[:MAX_TEXT] if look.is_export else None

    # -- observe ------------------------------------------------------------------

    def observe(self, intent: Intent, state: GateState, outcome: str) -> None:
        """Update the agent's features after the decision (see the module doc for what
        learns from which outcomes)."""
        cfg = self.config
        st = self._state(state, attach=True)
        now = state.now_ms
        look = cfg.lookup(intent.action)
        if st.first_ms is None:
            st.first_ms = now
        st.observed += 1

        # activity: every decided intent, denied ones included
        self._record_event(st, intent.action, now)
        if look.cls.fanout is not None:
            touched = st.fanout.setdefault(look.cls.name, {})
            touched.pop(intent.resource, None)
            touched[intent.resource] = now
            drop_before(touched, now - cfg.fanout_window_ms, 2 * look.cls.fanout.max + 1)
        if look.is_read:
            bucket_ms = cfg.exfil_window_ms // READ_BUCKETS
            bucket = now // bucket_ms
            st.reads[bucket] = st.reads.get(bucket, 0) + 1
            if len(st.reads) > READ_BUCKETS + 1:
                prune_reads(st.reads, now, cfg.exfil_window_ms)

        memo = self._memo
        if memo is not None and memo[:3] == (intent.intent_id, now, id(st)) and memo[3]:
            st.violations.append(now)
            keep = max(cfg.quarantine_after, 1)
            if len(st.violations) > keep:
                del st.violations[:-keep]
        self._memo = None

        if outcome == "approved":
            self.learn(st, intent, look)
        if st.observed % _SWEEP_EVERY == 0:
            self._sweep(st, now)

    def learn(
        self,
        st: AnomalyState,
        intent: Intent,
        look: Lookup | None = None,
        *,
        force: bool = False,
    ) -> None:
        """Add an approved intent to the agent's baselines (``observe`` does it for
        approvals; the gate should call it for an intent an operator approved after
        review). Bounded: full known-sets stop growing. A numeric value beyond its rule's
        ``learn_limit`` is not learned unless ``force`` (an operator declaring it normal)."""
        cfg = self.config
        look = look or cfg.lookup(intent.action)
        st.approved += 1
        add_bounded(st.known_actions, intent.action, cfg.max_known)
        add_bounded(st.known_kinds, resource_kind(intent.resource), cfg.max_known)
        destination = self.destination(intent, look)
        if destination is not None:
            add_bounded(st.known_destinations, destination, cfg.max_known)
        for param, rule in look.cls.deviation.items():
            value, _ = as_number(intent.parameters.get(param))
            if value is None:
                continue
            key = numeric_key(intent.action, param)
            baseline = st.numeric.get(key)
            if baseline is None:
                if len(st.numeric) >= cfg.max_tracked_actions:
                    continue
                baseline = st.numeric[key] = NumericBaseline(transform=rule.transform)
            elif (
                not force
                and len(baseline.values) >= rule.min_samples
                and abs(_robust_z(baseline, value, rule)[0]) > rule.learn_limit
            ):
                continue
            baseline.add(
                value,
                rule.transform,
                size=cfg.reservoir_size,
                memory=cfg.reservoir_memory,
                draw=reservoir_draw(st.salt, intent.intent_id, param),
            )

    def _record_event(self, st: AnomalyState, action: str, now: int) -> None:
        cfg = self.config
        horizon = now - max(cfg.rate_window_ms, cfg.burst_window_ms)
        times = st.events.get(action)
        if times is None:
            if len(st.events) >= cfg.max_tracked_actions:
                self._sweep(st, now)
                if len(st.events) >= cfg.max_tracked_actions:
                    oldest = min(st.events, key=lambda a: st.events[a][-1])
                    del st.events[oldest]
            times = st.events[action] = []
        cut = bisect_right(times, horizon)
        if cut:
            del times[:cut]
        if not times or now >= times[-1]:
            times.append(now)
        else:
            insort(times, now)
        if len(times) > cfg.max_window_events:
            del times[: len(times) - cfg.max_window_events]

    def _sweep(self, st: AnomalyState, now: int) -> None:
        """Drop expired activity of every action and class (bounded, amortized)."""
        cfg = self.config
        horizon = now - max(cfg.rate_window_ms, cfg.burst_window_ms)
        for action in list(st.events):
            times = st.events[action]
            cut = bisect_right(times, horizon)
            if cut:
                del times[:cut]
            if not times:
                del st.events[action]
        classes = {c.name: c for c in cfg.all_classes() if c.fanout is not None}
        for name in list(st.fanout):
            cls = classes.get(name)
            if cls is None or cls.fanout is None:
                del st.fanout[name]
                continue
            drop_before(st.fanout[name], now - cfg.fanout_window_ms, 2 * cls.fanout.max + 1)
            if not st.fanout[name]:
                del st.fanout[name]
        prune_reads(st.reads, now, cfg.exfil_window_ms)
        cut = bisect_right(st.violations, now - cfg.quarantine_window_ms)
        if cut:
            del st.violations[:cut]


def _robust_z(baseline: NumericBaseline, value: float, rule: DeviationRule) -> tuple[float, float]:
    """(robust z-score of ``value``, baseline median), in the rule's transformed units."""
    median, scale = baseline.stats(rule.transform)
    return (transformed(value, rule.transform) - median) / max(scale, rule.min_scale), median
