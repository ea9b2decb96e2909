"""Builds the gate of this release from settings: every layer, its state and its keys.

Chain (in order; the first DENY or ERROR ends it): kill switch → freshness → identity
→ eligibility → runtime integrity → Cedar policy → behavioural anomaly → enforcement.
Control commands (agent registry, policy bundles, runtimes, kill switches, review
answers, quarantines) feed one :class:`ControlState` that every layer reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from processors.approval import ApprovalSigner, SigningKeyring
from processors.approval.executions import ApprovalLedgerCodec
from processors.control import ControlState
from processors.crypto.keys import KeyError_, Keyset
from processors.enforcement import Enforcement
from processors.exceptions import ConfigError, TrustplaneError
from processors.intent import Intent
from processors.layers.anomaly import AnomalyCheck, AnomalyConfig
from processors.layers.eligibility import EligibilityCheck
from processors.layers.freshness import Freshness
from processors.layers.identity import IdentityCheck
from processors.layers.integrity import (
    IntegrityCheck,
    IntegrityConfig,
    RuntimeRegistry,
    runtime_quarantine_subject,
)
from processors.layers.killswitch import KillSwitchCheck, KillSwitches
from processors.layers.policy import CONTROL_SUBJECT, PolicyCheck, PolicyStore
from processors.pipeline import Pipeline
from processors.review import ReviewAnswers, ReviewQueueCodec
from processors.verdict import Layer
from streams.codec import Codec, default_codec
from streams.config import Settings
from streams.gate.gate import Gate, Output
from streams.gate.metrics import GateMetrics
from streams.gate.state import AgentStates

__all__ = ["GateParts", "build_gate", "POLICY_SUBJECT"]

log = logging.getLogger(__name__)

POLICY_SUBJECT = CONTROL_SUBJECT


@dataclass
class GateParts:
    """The gate and the state its layers share (for the worker, /healthz and tests)."""

    gate: Gate
    control: ControlState
    policies: PolicyStore
    killswitches: KillSwitches
    runtimes: RuntimeRegistry
    reviews: ReviewAnswers
    signer: ApprovalSigner


def build_gate(
    settings: Settings,
    metrics: GateMetrics | None = None,
    *,
    states: AgentStates | None = None,
    keyring: SigningKeyring | None = None,
    operator_keys: Keyset | None = None,
    codec: Codec | None = None,
) -> GateParts:
    codec = codec or default_codec()
    keyring = keyring or _load_keyring(settings)
    signer = ApprovalSigner(keyring)
    if operator_keys is None:
        operator_keys = _load_operator_keys(settings)
    policies = PolicyStore(decision_cache=settings.policy_decision_cache)
    control = ControlState(
        operator_keys, policy_sink=policies.control_sink, gate_keys=keyring.public_keyset()
    )
    killswitches = KillSwitches()
    killswitches.install(control)
    reviews = ReviewAnswers()
    reviews.install(control)
    runtimes = RuntimeRegistry()
    runtimes.install(control)

    def roles_for(agent_id: str) -> tuple[str, ...]:
        record = control.agent(agent_id)
        return tuple(record.roles) if record is not None else ()

    integrity = IntegrityConfig.from_mapping(
        {
            "replay_retention_ms": settings.replay_retention_ms,
            "max_remembered": settings.max_remembered,
            "sequence_gap_tolerance": settings.sequence_gap_tolerance,
            "quarantine_scope": settings.quarantine_scope,
        },
        source="settings",
    )
    layers: list[Layer] = [
        KillSwitchCheck(killswitches),
        Freshness(settings.max_clock_skew_ms),
        IdentityCheck(control),
        EligibilityCheck(control),
        IntegrityCheck(runtimes, integrity),
        PolicyCheck(policies, roles_for),
        AnomalyCheck(AnomalyConfig.from_file(settings.anomaly_config_path)),
    ]
    pipeline = Pipeline(layers, layer_timeout_ms=settings.layer_timeout_ms)
    worker = settings.resolved_worker_id()
    gate = Gate(
        pipeline,
        codec,
        worker=worker,
        max_intent_bytes=settings.max_intent_bytes,
        signer=signer,
        approval_ttl_ms=settings.approval_ttl_ms,
        metrics=metrics,
        states=states
        or AgentStates([*pipeline.stateful, ReviewQueueCodec(), ApprovalLedgerCodec()]),
        responders=[QuarantineResponder(control, keyring, worker, codec)],
        review_answers=reviews,
        review_timeout_ms=settings.review_timeout_ms,
    )
    return GateParts(gate, control, policies, killswitches, runtimes, reviews, signer)


class QuarantineResponder:
    """Turns a verdict asking for quarantine into a signed ``*.quarantine`` command.

    The command is applied to this worker's state at once (so the agent's next intent,
    even in the same batch, is denied) and written to ``control`` in the same
    transaction as the decision (so every worker, and every restart, sees it). Only
    operators release.
    """

    def __init__(
        self, control: ControlState, keyring: SigningKeyring, worker: str, codec: Codec
    ) -> None:
        self.control = control
        self.keyring = keyring
        self.issued_by = f"gate:{worker}"
        self.codec = codec

    def __call__(self, intent: Intent, enforcement: Enforcement, now: int) -> list[Output]:
        outputs: list[Output] = []
        for verdict in enforcement.verdicts:
            if verdict.evidence.get("response") != "quarantine":
                continue
            reason = f"{verdict.layer}: {'; '.join(verdict.reasons)}"
            if verdict.evidence.get("quarantine_scope") == "runtime":
                runtime_id = verdict.evidence.get("quarantine_subject") or intent.runtime.runtime_id
                kind, subject = "runtime.quarantine", runtime_quarantine_subject(runtime_id)
                payload = {"runtime_id": runtime_id, "reason": reason}
            else:
                kind, subject = "agent.quarantine", None
                payload = {"agent_id": intent.agent_id, "reason": reason}
            try:
                record, result = self.control.issue(
                    kind, subject, payload, self.keyring.signing_key(now), self.issued_by, now
                )
            except TrustplaneError as exc:  # no usable gate key: the intent is denied anyway
                log.error("cannot sign a quarantine for %s: %s", intent.agent_id, exc.reason)
                continue
            if record is None:
                log.warning("quarantine of %s not applied: %s", intent.agent_id, result.reason)
                continue
            outputs.append(
                Output(
                    "control",
                    str(record["subject"]).encode(),
                    self.codec.encode("ControlCommand", record),
                )
            )
        return outputs


def _load_keyring(settings: Settings) -> SigningKeyring:
    try:
        return SigningKeyring.load(settings.resolved_signing_keys_dir)
    except KeyError_ as exc:
        raise ConfigError(
            f"no approval signing key: {exc.reason}",
            hint="run `trustplane keys init` (local), or set TRUSTPLANE_SIGNING_KEY / "
            "TRUSTPLANE_SIGNING_KEYS_DIR",
        ) from exc


def _load_operator_keys(settings: Settings) -> Keyset:
    path = settings.resolved_operator_keys_path
    if not path.exists():
        log.warning(
            "no operator keyset at %s: every control command will be refused, so no agent "
            "is registered and every intent is denied (run `trustplane keys init`)",
            path,
        )
        return Keyset()
    return Keyset.from_file(path)
