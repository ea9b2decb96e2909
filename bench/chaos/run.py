"""A chaos run, start to finish (``python -m bench.chaos``; see :mod:`bench.chaos`).

1. Kafka (the run's own broker(s), or one given), the run's topics, users and ACLs, keys;
2. the workload, built and signed; its agents registered, the example bundle published;
3. the workers, the sink and the notary as real processes, each as its own principal;
4. publishing at the offered rate while the fault plan signals processes, a collector
   stamps every outcome's arrival, and held intents are answered as planned;
5. after the plan: every process up again, then wait until every intent has an outcome
   and every answered review its answer; stop the workers; wait until the notary has
   logged and checkpointed all of ``lineage``, stop it; read every topic; wait until
   the sink holds what Kafka holds, count its rows, stop it;
6. the checker, the recovery times, the report.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chaos.check import check, kafka_counts
from bench.chaos.cluster import ChaosError, Cluster, ExternalCluster, LocalCluster
from bench.chaos.collect import (
    read_lineage_ids,
    read_observed,
    read_state_writes,
    try_sink_counts,
)
from bench.chaos.config import ChaosConfig
from bench.chaos.faults import FaultRunner
from bench.chaos.live import Arrivals, Reviewer
from bench.chaos.load import ChaosWorkload, PublishLoop, build_workload
from bench.chaos.model import Anchors, Class, Observed, Planned
from bench.chaos.plan import PlanSpec, make_plan, write_plan
from bench.chaos.recovery import (
    Timing,
    decision_times,
    phases_after,
    phases_before,
    phases_p50,
    summary,
    worker_recovery,
)
from bench.chaos.report import figures_line, goals, write_report
from bench.chaos.services import Service, Services
from bench.e2e.procs import Collector, free_port
from processors.layers.anomaly import AnomalyConfig
from streams import provision
from streams.config import Settings
from streams.gatekeys import gate_jwks_path
from streams.notary import notary_vkey_path
from streams.operator import ensure_local_keys

__all__ = ["run_chaos", "ChaosRun"]

Log = Callable[[str], None]


@dataclass
class ChaosRun:
    """What a run returns: the report document (also written to ``report_path``)."""

    report: dict[str, Any]
    report_path: Path
    line: str
    ok: bool


STEADY_S = 15.0
"""A drain is over when its figure has not moved for this long (even if short of the mark)."""


class _Steady:
    """How long a polled value has stayed the same."""

    def __init__(self) -> None:
        self.value: Any = None
        self.since = time.monotonic()

    def for_s(self, value: Any) -> float:
        if value != self.value:
            self.value, self.since = value, time.monotonic()
        return time.monotonic() - self.since


def _settings(config: ChaosConfig, cluster: Cluster, run_dir: Path, tag: str) -> Settings:
    return Settings(
        bootstrap_servers=cluster.bootstrap,
        topic_prefix=f"chaos-{tag}.",
        group_id=f"chaos-{tag}",
        partitions=config.partitions,
        state_dir=run_dir / "state",
        kafka_principal="admin",
        kafka_credentials_dir=cluster.credentials_dir,
    )


def _tuned(settings: Settings, config: ChaosConfig) -> Settings:
    """The run's settings for its services: free ports, thresholds, review timeout."""
    values: dict[str, Any] = {
        "web_port": 0,
        "sink_http_port": free_port(),
        "notary_port": free_port(),
        "review_timeout_ms": config.review_timeout_ms,
    }
    if config.anomaly_config is not None:
        values["anomaly_config_path"] = config.anomaly_config
    return dataclasses.replace(settings, **values)


def _wait(
    what: str, done: Callable[[], tuple[bool, str]], timeout: float, log: Log, every: float = 5.0
) -> bool:
    """Poll ``done`` until it says so or ``timeout``; a progress line every ``every`` s."""
    deadline = time.monotonic() + timeout
    said = 0.0
    while True:
        finished, status = done()
        if finished:
            log(f"{what}: done ({status})")
            return True
        if time.monotonic() > deadline:
            log(f"{what}: gave up after {timeout:.0f} s ({status})")
            return False
        if time.monotonic() - said > every:
            log(f"{what}: {status}")
            said = time.monotonic()
        time.sleep(0.5)


def run_chaos(
    config: ChaosConfig,
    log: Log = print,
    *,
    settings: Settings | None = None,
    cluster: Cluster | None = None,
) -> ChaosRun:
    """Run the suite. ``settings`` (already provisioned, with keys) and ``cluster`` are for
    callers that bring their own broker (the tests); otherwise the run starts its own
    cluster in ``config.kafka_dir`` (or uses ``config.bootstrap``) and provisions it."""
    tag = time.strftime("%m%d%H%M%S") + uuid.uuid4().hex[:4]
    run_dir = (config.out / tag).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    own: LocalCluster | None = None
    services: Services | None = None
    collector: Collector | None = None
    reviewer: Reviewer | None = None
    faults: FaultRunner | None = None
    publisher: PublishLoop | None = None
    try:
        if cluster is None:
            if config.bootstrap:
                if config.credentials_dir is None:
                    raise ChaosError(
                        "--bootstrap needs the Kafka users' passwords",
                        hint="pass --credentials-dir or set TRUSTPLANE_KAFKA_CREDENTIALS_DIR",
                    )
                cluster = ExternalCluster(config.bootstrap, config.credentials_dir)
            else:
                own = LocalCluster(
                    config.kafka_dir, config.brokers, keep=config.keep_broker, log=log
                ).up()
                cluster = own
        if settings is None:
            settings = _settings(config, cluster, run_dir, tag)
            provision.provision(settings, users=own is not None)
            ensure_local_keys(settings)
        settings = _tuned(settings, config)
        log(f"run {tag}: topics {settings.topic_prefix}*, files in {run_dir}")

        anomaly = AnomalyConfig.from_file(settings.anomaly_config_path)
        workload = build_workload(
            config.intents,
            agents=config.agents,
            rate=config.rate,
            seed=config.seed,
            ttl_s=config.intent_ttl_s,
            mix=config.mix,
            anomaly=anomaly,
        )
        planned = workload.planned
        _describe_workload(workload, config, log)
        commands = workload.register(settings)
        log(f"registered {len(workload.registered)} agents ({commands} control commands)")

        services = Services(settings, config.workers, run_dir, standby=config.standby)
        services.start_all(log)
        anchors = Anchors(
            json.loads(gate_jwks_path(settings).read_text()),
            notary_vkey_path(settings).read_text().strip(),
        )

        spec = PlanSpec(
            seed=config.seed,
            duration_s=config.duration_s,
            workers=config.workers,
            broker_nodes=tuple(cluster.nodes) or (1,),
            worker_kills=config.worker_kills,
            worker_stops=config.worker_stops,
            sink_kills=config.sink_kills,
            sink_stops=config.sink_stops,
            notary_kills=config.notary_kills,
            notary_stops=config.notary_stops,
            broker_kills=config.broker_kills if cluster.nodes else 0,
        )
        plan = make_plan(spec)
        write_plan(run_dir / "faults.json", spec, plan)
        log(f"fault plan: {len(plan)} faults (seed {config.seed}), {run_dir / 'faults.json'}")

        collector = Collector(settings, Collector.GATE_TOPICS)
        reviewer = Reviewer(settings, log)
        reviewer.start()
        arrivals = Arrivals(planned)
        publisher = PublishLoop(settings, planned, config.rate)
        faults = FaultRunner(plan, services, cluster, log)
        publisher.start()
        faults.started_ns = time.monotonic_ns()
        realtime_offset_ns = time.time_ns() - faults.started_ns  # wall clock -> monotonic
        faults.start()
        published_at = time.monotonic()
        said = 0.0

        def supervise() -> None:
            for crash in services.supervise() if services else []:
                at = (crash.at_ns - faults.started_ns) / 1e9 if faults else 0.0
                log(
                    f"  CRASH t={at:7.2f}s {crash.name} exited by itself (status {crash.code}), "
                    f"started again: {crash.last_line}"
                )

        while publisher.is_alive() or faults.is_alive():
            supervise()
            arrivals.absorb(collector.drain(), reviewer)
            if time.monotonic() - said > 5:
                said = time.monotonic()
                up = " ".join(n for n, s in services.by_name.items() if s.running and not s.paused)
                log(
                    f"t={said - published_at:6.1f}s published {publisher.published}/"
                    f"{len(planned)} outcomes: {arrivals.line()} | up: {up}"
                )
            time.sleep(0.25)
        if publisher.error is not None:
            log(f"the publisher failed: {publisher.error}")

        healed = services.heal()
        down = [n for n in cluster.nodes if n not in cluster.running()]
        for node in down:
            cluster.start(node)
        if healed or down:
            log(f"after the plan: {', '.join(healed + [f'start broker-{n}' for n in down])}")

        def decided() -> tuple[bool, str]:
            assert collector is not None and reviewer is not None  # noqa: S101 - set above
            supervise()
            arrivals.absorb(collector.drain(), reviewer)
            undecided, unanswered = arrivals.pending(planned)
            return (
                undecided == 0 and unanswered == 0,
                f"{undecided} without an outcome, {unanswered} answers pending; {arrivals.line()}",
            )

        _wait("outcomes", decided, config.drain_s, log)
        services.stop([s.name for s in services.workers])
        lineage_ids = read_lineage_ids(settings)
        distinct = len(set(lineage_ids))
        notary = services.members("notary")[0]  # /healthz answers for whichever one serves
        notary_size = _Steady()

        def logged() -> tuple[bool, str]:
            status = notary.health() or {}
            size, cp = status.get("size", -1), status.get("checkpoint_size", -2)
            steady = notary_size.for_s(size) > STEADY_S
            return (
                size == cp and (size >= distinct or steady),
                f"notary logged {size}, checkpointed {cp} of {distinct} distinct lineage events",
            )

        _wait("notary", logged, config.drain_s, log)
        services.stop([s.name for s in services.members("notary")])
        observed = read_observed(settings, lineage_ids, log)
        observed.state_writes = read_state_writes(settings)
        log(f"read {len(observed.state_writes)} agent state records")
        expected = kafka_counts(observed)
        sink_rows = _Steady()

        def stored() -> tuple[bool, str]:
            counts = try_sink_counts(settings)
            steady = counts is not None and sink_rows.for_s(counts) > STEADY_S
            return counts == expected or steady, f"sink {counts}, kafka {expected}"

        _wait("sink", stored, config.drain_s, log, every=10.0)
        observed.sink_counts = sink_rows.value
        services.stop(["sink"])

        result = check(planned, observed, anchors)
        recovery = _recovery(
            planned, observed, arrivals, publisher, faults, services, realtime_offset_ns
        )
        for name in ("worker", "notary"):
            phases = recovery[name]["restart_phases_p50"]
            if phases:
                spent = ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in phases.items())
                log(f"{name} restarts, median seconds per start-up phase: {spent}")
            if recovery[name]["takeovers"]:
                taken = recovery[name]["takeover_phases_p50"]
                spent = ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in taken.items())
                log(
                    f"{name} takeovers by a standby: {recovery[name]['takeovers']}, "
                    f"median seconds per phase after taking the lock: {spent}"
                )
        again = recovery["worker"]["decided_again"]
        if again["p50"] is not None:
            log(
                f"worker kills, seconds until every partition decided again by the records' "
                f"own decision times (not their arrival): p50 {again['p50']:.2f} "
                f"max {again['max']:.2f}"
            )
        crashes = [
            {
                "service": e.name,
                "status": e.code,
                "at_s": round((e.at_ns - faults.started_ns) / 1e9, 2),
                "last_line": e.last_line,
            }
            for e in services.exits
        ]
        line = f"{figures_line(result, recovery)} unplanned_exits={len(crashes)}"
        document = {
            "run": tag,
            "config": {
                **{k: v for k, v in dataclasses.asdict(config).items() if k != "mix"},
                "mix": dataclasses.asdict(config.mix),
            },
            "settings": {"topic_prefix": settings.topic_prefix, "group_id": settings.group_id},
            "broker_nodes": cluster.nodes,
            "workload": {
                "planned": len(planned),
                "classes": workload.counts(),
                "must_deny_share": sum(p.cls is Class.MUST_DENY for p in planned) / len(planned),
                "anomaly_safe_rate": workload.anomaly_safe_rate,
                "anomaly_binding": workload.binding,
            },
            "publisher": {
                "published": publisher.published,
                "error": str(publisher.error) if publisher.error else None,
                "delivery_errors": publisher.publisher.errors[:10],
            },
            "reviews": {"answered": len(reviewer.answered), "send_failures": reviewer.failures},
            "faults": faults.executed,
            "unplanned_exits": crashes,
            "recovery": recovery,
            "goals": goals(result, recovery),
            "result": result.to_dict(),
            "line": line,
            "elapsed_s": round(time.monotonic() - began, 1),
        }
        report_path = run_dir / "report.json"
        write_report(report_path, document)
        write_plan(run_dir / "faults.json", spec, plan, executed=faults.executed)
        return ChaosRun(document, report_path, line, result.ok)
    finally:
        if publisher is not None:
            publisher.stopping.set()
        if faults is not None:
            faults.stopping.set()
        if reviewer is not None and reviewer.is_alive():
            reviewer.close()
        if collector is not None:
            collector.close()
        if services is not None:
            services.stop()
        if own is not None:
            own.close()


def _describe_workload(workload: ChaosWorkload, config: ChaosConfig, log: Log) -> None:
    planned = workload.planned
    deny = sum(p.cls is Class.MUST_DENY for p in planned)
    log(
        f"workload: {len(planned)} records at {config.rate:g}/s ({config.duration_s:.0f} s), "
        f"must-deny {deny} ({deny / len(planned):.1%}); {workload.counts()}"
    )
    good_rate = config.rate * sum(p.cls is Class.GOOD for p in planned) / len(planned)
    if good_rate > workload.anomaly_safe_rate:
        log(
            f"warning: good intents arrive at {good_rate:.0f}/s, above the anomaly-safe "
            f"{workload.anomaly_safe_rate:.0f}/s ({workload.binding}): use more --agents"
        )


def _recovery(
    planned: Sequence[Planned],
    observed: Observed,
    arrivals: Arrivals,
    publisher: PublishLoop,
    faults: FaultRunner,
    services: Services,
    realtime_offset_ns: int,
) -> dict[str, Any]:
    where = {r.intent_id: (r.partition, r.offset) for r in observed.intents if r.intent_id}
    published = [
        (p.subject, publisher.stamps[i]) for i, p in enumerate(planned) if p.subject in where
    ]
    timings = [Timing(*where[s], at, arrivals.first_ns.get(s)) for s, at in published]
    # the same with each first outcome's own time of decision (the worker's clock, in the
    # record) instead of its arrival at the collector: the gate's part of a recovery,
    # without the collector's lag on a loaded machine
    decided = decision_times(observed.outcomes, realtime_offset_ns)
    at_gate = [Timing(*where[s], at, decided.get(s)) for s, at in published]
    kills: list[dict[str, Any]] = []
    measured: list[float | None] = []
    measured_at_gate: list[float | None] = []
    alone: list[float | None] = []
    for target, at_ns, owned in faults.worker_kills:
        seconds = worker_recovery(at_ns, timings, owned) if owned != [] else None
        gate_s = worker_recovery(at_ns, at_gate, owned) if owned != [] else None
        at_s = (at_ns - faults.started_ns) / 1e9
        until = at_s + (seconds if seconds is not None else float("inf"))
        # other faults inside this kill's recovery window lengthen it: say which
        disturbed = [
            f"{e['action']} {e['target']} at {e['actual_s']:.1f}s"
            for e in faults.executed
            if e["action"] in ("kill", "stop") and at_s < e["actual_s"] < until
        ]
        kills.append(
            {
                "target": target,
                "at_s": round(at_s, 2),
                "owned_partitions": owned,
                "recovery_s": seconds,
                "decided_again_s": gate_s,
                "disturbed_by": disturbed,
            }
        )
        if owned != []:  # a worker that owned nothing had nothing to recover
            measured.append(seconds)
            measured_at_gate.append(gate_s)
            if not disturbed:
                alone.append(seconds)

    def restarts(member: Service) -> list[float | None]:
        return [start.ready_s for start in member.starts[1:]]

    outages = [(start, end) for start, end in faults.notary_outages if start is not None]

    def restart_phases(members: Sequence[Service]) -> dict[str, float]:
        timelines = [start.startup for m in members for start in m.starts[1:]]
        return phases_p50([phases_before(t, "standby") for t in timelines])

    def takeovers(members: Sequence[Service]) -> dict[str, Any]:
        taken = [(m, start) for m in members for start in m.starts if start.took_over_ns]
        after = [phases_after(start.startup, "standby") for _, start in taken]
        return {
            "takeovers": len(taken),
            "takeover_phases_p50": phases_p50(after),
            # each one, to find a slow takeover's phase (seconds since the run began)
            "each_takeover": [
                {
                    "service": m.name,
                    "seen_deciding_at_s": round(
                        ((start.took_over_ns or 0) - faults.started_ns) / 1e9, 2
                    ),
                    "phases": (phases or {}).get("phases"),
                }
                for (m, start), phases in zip(taken, after, strict=True)
            ],
        }

    return {
        "worker": {
            **summary(measured),
            "undisturbed": summary(alone),
            "decided_again": summary(measured_at_gate),
            "kills": kills,
            "restart_phases_p50": restart_phases(services.workers),
            **takeovers(services.workers),
        },
        "notary": {
            **summary([None if end is None else (end - start) / 1e9 for start, end in outages]),
            "restarts_ready_s": [s for m in services.members("notary") for s in restarts(m)],
            "restart_phases_p50": restart_phases(services.members("notary")),
            **takeovers(services.members("notary")),
        },
        "sink": {
            **summary(restarts(services["sink"])),
            "restarts_ready_s": restarts(services["sink"]),
        },
    }
