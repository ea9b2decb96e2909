"""The benchmark run: reference points, raw baselines, the gate with 1..n workers, a profile.

Everything runs on this machine, on one broker, in one invocation, so the numbers can
be read side by side (and as ratios on a noisy machine):

1. **crypto floor** and the **gate in process** (no Kafka) on the same signed intents;
2. the **raw baseline**: a Python consume → produce loop that does no work, plain and
   transactional (the gate worker's batching), at a fixed rate and at maximum rate;
3. the **gate**: real ``trustplane worker`` processes (1, then 2, in one group) deciding
   a stream of signed intents from many agents at fixed offered rates and at maximum
   rate; end-to-end latency (publish → outcome at a ``read_committed`` consumer) in an
   HDR histogram, sustained throughput, CPU µs per intent of the worker processes;
4. optionally a **py-spy profile** of one worker at maximum rate.

Progress goes to ``log`` (one line at a time); the result is a plain dict
(:mod:`bench.e2e.report` writes it as JSON, markdown and PNG).
"""

from __future__ import annotations

import os
import platform
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.e2e.inproc import crypto_floor, gate_in_process, side_by_side
from bench.e2e.procs import (
    Baseline,
    BenchError,
    Collector,
    Publisher,
    Receipt,
    WorkerProcesses,
    cpu_seconds,
)
from bench.e2e.profile import PySpy
from bench.e2e.stats import Latency
from bench.e2e.workload import BenchEstate, SignedIntents, Workload
from processors.layers.anomaly import AnomalyConfig
from streams.config import PROJECT_ROOT, Settings
from streams.topics import ensure_topics

__all__ = ["BenchConfig", "run_bench"]

Log = Callable[[str], None]

OUTCOMES = ("approved", "denied", "review", "rejected")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class BenchConfig:
    """What to run. :meth:`quick` is the CI smoke (seconds); :meth:`full` the real run."""

    mode: str = "full"
    agents: int = 1000
    partitions: int = 4
    rates: tuple[float, ...] = (20.0, 200.0, 500.0, 1000.0, 2000.0)
    """Offered loads (intents/s) of the fixed-rate phases; the lowest is the idle latency
    (each intent alone in the pipeline)."""
    phase_s: float = 8.0
    """Duration of each fixed-rate phase (the publishing part)."""
    overload_phase_s: float = 4.0
    """Shorter publishing time of a fixed-rate phase whose offered load is more than 1.25 x
    what an earlier phase could not sustain (it only shows the queue growing)."""
    max_intents: int = 8_000
    """Intents of the maximum-rate phase (all published at once; it runs last, when the
    workers' caches are as warm as the fixed-rate phases left them)."""
    warmup: int = 1000
    workers: tuple[int, ...] = (1, 2)
    baseline_modes: tuple[str, ...] = ("plain", "txn")
    baseline_rate: float = 1000.0
    baseline_phase_s: float = 10.0
    baseline_max: int = 20_000
    floor_intents: int = 2000
    inproc_intents: int = 3000
    side_rounds: int = 3
    """Interleaved rounds of floor, gate in process and the peer (their ratios)."""
    peer_actions: int = 2000
    """Actions per round of the peer's paths."""
    profile: bool = True
    profile_intents: int = 6_000
    profile_rate: float = 100.0
    """py-spy samples per second."""
    stall_s: float = 60.0
    """A phase fails when no outcome arrived for this long while some are missing."""
    ttl_s: float = 3600.0
    """Intent TTL: every pre-signed intent must stay fresh for the whole run."""
    output_dir: Path = PROJECT_ROOT / "bench" / "results"
    state_dir: Path = PROJECT_ROOT / ".state" / "bench"
    kafka_dir: Path = PROJECT_ROOT / ".state" / "bench-kafka"
    bootstrap: str = ""
    """Use this broker instead of starting the bench broker in ``kafka_dir``."""
    worker_env: tuple[tuple[str, str], ...] = ()
    """Extra ``TRUSTPLANE_*`` variables for the workers (e.g. transaction_max_ms)."""
    keep_broker: bool = False
    """Leave the bench broker running if this run started it."""
    seed: int = 7

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        values: dict[str, Any] = {
            "mode": "quick",
            "agents": 60,
            "rates": (20.0, 200.0),
            "phase_s": 1.0,
            "max_intents": 200,
            "warmup": 60,
            "workers": (1,),
            "baseline_rate": 200.0,
            "baseline_phase_s": 1.0,
            "baseline_max": 200,
            "floor_intents": 200,
            "inproc_intents": 200,
            "side_rounds": 1,
            "peer_actions": 200,
            "profile": False,
            "profile_intents": 300,
            "stall_s": 30.0,
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def full(cls, **overrides: Any) -> BenchConfig:
        return cls(**overrides)

    def plan(self) -> list[tuple[str, float | None, int]]:
        """The gate phases in order: (name, offered rate or None for max, intents at most)."""
        phases: list[tuple[str, float | None, int]] = [("warmup", None, self.warmup)]
        for rate in sorted(self.rates):
            phases.append((f"{rate:g}/s", rate, max(1, round(rate * self.phase_s))))
        phases.append(("max", None, self.max_intents))
        return phases

    def intents_needed(self) -> int:
        gate = sum(n for _, _, n in self.plan())
        baseline = (
            min(self.warmup, 1000)
            + max(1, round(self.baseline_rate * self.baseline_phase_s))
            + self.baseline_max
        )
        profile = self.warmup + self.profile_intents if self.profile else 0
        return max(gate, baseline, profile, self.floor_intents, self.inproc_intents)


@dataclass
class PhaseResult:
    name: str
    offered_rate: float | None
    intents: int
    decided: int
    outcomes: dict[str, int]
    duplicates: int
    unknown: int
    publish_s: float
    elapsed_s: float
    throughput: float
    """Decided intents per second, first publish to last outcome."""
    sustained: bool
    """For a fixed rate: the outcomes kept up with the offered load."""
    generator_lag_ms: float
    """How late the generator published its last intent (it should be ~0)."""
    latency: dict[str, float]
    histogram: str
    cpu_us_per_intent: dict[str, float] = field(default_factory=dict)
    """Process (group) -> CPU µs per decided intent during the phase."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    machine_busy_cpus: float = 0.0
    """Average busy CPUs of the whole machine during the phase."""
    other_busy_cpus: float = 0.0
    """... of which not the workers, broker, collector or harness (other load: noise)."""
    timeline: list[dict[str, float]] = field(default_factory=list)
    """Per second of publishing: how many were published, their p50/p99/max latency."""


class _Clock:
    """CPU seconds of named process groups, read at phase boundaries."""

    def __init__(self, groups: dict[str, Callable[[], Sequence[int]]]) -> None:
        self.groups = groups

    def read(self) -> dict[str, float]:
        values = {name: sum(cpu_seconds(p) for p in pids()) for name, pids in self.groups.items()}
        values["harness"] = time.process_time()
        values["machine"] = _machine_busy_seconds()
        return values


def _machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat), every process included."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0.0
    # user nice system idle iowait irq softirq steal ...
    ticks = [int(x) for x in first[1:9]]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return busy / _TICKS


def _run_phase(
    name: str,
    intents: SignedIntents,
    rate: float | None,
    publisher: Publisher,
    collector: Collector,
    clock: _Clock,
    log: Log,
    *,
    stall_s: float,
    alive: Callable[[], None] = lambda: None,
) -> PhaseResult:
    count = len(intents)
    index = {intent_id: i for i, intent_id in enumerate(intents.ids)}
    send_ns = [0] * count
    recv_ns = [0] * count
    outcome = [-1] * count
    state = {"decided": 0, "duplicates": 0, "unknown": 0}

    def absorb(receipts: list[Receipt]) -> None:
        for intent_id, arrived, code in receipts:
            i = index.get(intent_id, -1)
            if i < 0:
                state["unknown"] += 1
            elif recv_ns[i]:
                state["duplicates"] += 1
            else:
                recv_ns[i] = arrived
                outcome[i] = code
                state["decided"] += 1

    cpu_before = clock.read()
    interval_ns = int(1e9 / rate) if rate else 0
    started = time.monotonic_ns()
    next_report = started + 1_000_000_000
    sent = 0
    while sent < count:
        now = time.monotonic_ns()
        due = count if not rate else min(count, (now - started) // interval_ns + 1)
        while sent < due:
            send_ns[sent] = time.monotonic_ns()
            publisher.produce(intents.keys[sent], intents.values[sent])
            sent += 1
            if not rate and sent % 500 == 0:
                publisher.poll()
                break  # let the progress report and the collector drain run
        publisher.poll()
        now = time.monotonic_ns()
        if now >= next_report:
            absorb(collector.drain())
            alive()
            elapsed = (now - started) / 1e9
            log(
                f"  {name:>9}: published {sent:>6}/{count}  decided {state['decided']:>6} "
                f"({state['decided'] / elapsed:,.0f}/s)"
            )
            next_report = now + 1_000_000_000
        if rate and sent < count:
            wait = started + sent * interval_ns - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
    published = time.monotonic_ns()
    publisher.flush()
    last_progress = time.monotonic()
    while state["decided"] < count:
        before = state["decided"]
        absorb(collector.drain())
        now_s = time.monotonic()
        if state["decided"] > before:
            last_progress = now_s
        elif now_s - last_progress > stall_s:
            raise BenchError(
                f"phase {name}: {count - state['decided']} of {count} intents got no outcome "
                f"within {stall_s:.0f} s",
                hint="see the worker logs in the run folder",
            )
        if time.monotonic_ns() >= next_report:
            alive()
            elapsed = (time.monotonic_ns() - started) / 1e9
            log(
                f"  {name:>9}: published {sent:>6}/{count}  decided {state['decided']:>6} "
                f"({state['decided'] / elapsed:,.0f}/s), draining"
            )
            next_report = time.monotonic_ns() + 1_000_000_000
        time.sleep(0.05)
    absorb(collector.drain())  # anything that came with the last ones (duplicates)
    cpu_after = clock.read()
    first_send, last_recv = send_ns[0], max(recv_ns)
    latency = Latency()
    seconds: dict[int, list[int]] = {}
    for i in range(count):
        latency.record_ns(recv_ns[i] - send_ns[i])
        seconds.setdefault((send_ns[i] - started) // 1_000_000_000, []).append(
            recv_ns[i] - send_ns[i]
        )
    timeline = [_second(second, values) for second, values in sorted(seconds.items())]
    sustained = True
    if rate and count > 1:
        # kept up: outcomes arrived at the offered rate and the queue did not grow (the
        # last second's intents waited about as long as the first second's)
        span_s = (last_recv - min(recv_ns)) / 1e9
        decided_rate = (count - 1) / span_s if span_s > 0 else float("inf")
        first_p50, last_p50 = timeline[0]["p50_ms"], timeline[-1]["p50_ms"]
        sustained = decided_rate >= 0.95 * rate and last_p50 <= 2 * first_p50 + 100
    elapsed_s = (last_recv - first_send) / 1e9
    throughput = count / elapsed_s if elapsed_s > 0 else 0.0
    lag_ms = 0.0
    if rate:
        lag_ms = max(0.0, (send_ns[-1] - (started + (count - 1) * interval_ns)) / 1e6)
    outcomes = {name_: 0 for name_ in OUTCOMES}
    for code in outcome:
        outcomes[OUTCOMES[code] if 0 <= code < len(OUTCOMES) else "undecodable"] = (
            outcomes.get(OUTCOMES[code] if 0 <= code < len(OUTCOMES) else "undecodable", 0) + 1
        )
    cpu = {
        group: (cpu_after[group] - cpu_before[group]) * 1e6 / count
        for group in cpu_before
        if group in cpu_after
    }

    window_s = (time.monotonic_ns() - started) / 1e9
    ours = sum(v for k, v in cpu.items() if k != "machine")
    other_load = max(0.0, (cpu.get("machine", 0.0) - ours) * count / 1e6) / window_s
    machine_load = cpu.get("machine", 0.0) * count / 1e6 / window_s
    summary = latency.summary()
    log(
        f"  {name:>9}: {count} decided in {elapsed_s:.2f} s = {throughput:,.0f}/s; "
        f"p50 {summary['p50_ms']:.1f} ms  p99 {summary['p99_ms']:.1f} ms  "
        f"p99.9 {summary['p99.9_ms']:.1f} ms; "
        + ", ".join(f"{k} {v}" for k, v in outcomes.items() if v)
        + (f"; {state['duplicates']} DUPLICATES" if state["duplicates"] else "")
        + ("" if sustained else "; NOT sustained (the gate fell behind)")
        + (f"; other load {other_load:.2f} CPUs" if other_load >= 0.1 else "")
    )
    return PhaseResult(
        name=name,
        offered_rate=rate,
        intents=count,
        decided=state["decided"],
        outcomes=outcomes,
        duplicates=state["duplicates"],
        unknown=state["unknown"],
        publish_s=(published - started) / 1e9,
        elapsed_s=elapsed_s,
        throughput=throughput,
        sustained=sustained,
        generator_lag_ms=lag_ms,
        latency=summary,
        histogram=latency.encode(),
        cpu_us_per_intent=cpu,
        timeline=timeline,
        machine_busy_cpus=machine_load,
        other_busy_cpus=other_load,
    )


def _second(second: int, latencies_ns: list[int]) -> dict[str, float]:
    """Latency of the intents published in one second of a phase (warm-up, stalls)."""
    ordered = sorted(latencies_ns)
    n = len(ordered)
    return {
        "second": second,
        "published": n,
        "p50_ms": ordered[n // 2] / 1e6,
        "p99_ms": ordered[min(n - 1, (n * 99) // 100)] / 1e6,
        "max_ms": ordered[-1] / 1e6,
    }


# -- the run --------------------------------------------------------------------------


@dataclass
class _Broker:
    bootstrap: str
    pid: int | None
    started: bool
    stop: Callable[[], None]


def _broker(config: BenchConfig, log: Log) -> _Broker:
    if config.bootstrap:
        return _Broker(config.bootstrap, None, False, lambda: None)
    from streams.dev.localkafka import LocalKafka

    broker = LocalKafka(config.kafka_dir, progress=lambda m: log(f"[kafka] {m}"))
    running = broker.status()
    info = running or broker.up(timeout=180)
    started = running is None
    log(
        f"broker {info.bootstrap} (pid {info.pid}, {config.kafka_dir}"
        f"{', started for this run' if started else ', already running'})"
    )

    def stop() -> None:
        if started and not config.keep_broker:
            broker.down()
            log("broker stopped (it was started for this run; --keep-broker keeps it)")

    return _Broker(info.bootstrap, info.pid, started, stop)


def _settings(config: BenchConfig, bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    """The bench's clients and workers: the bench broker's ``admin`` (a super user: the
    bench measures the gate, the ACLs are tested elsewhere), or, on another broker, what
    ``TRUSTPLANE_KAFKA_*`` says."""
    credentials = config.kafka_dir / "credentials"
    auth: dict[str, Any] = {}
    if not config.bootstrap and (credentials / "admin").is_file():
        auth = {"kafka_principal": "admin", "kafka_credentials_dir": credentials}
    elif os.environ.get("TRUSTPLANE_KAFKA_PRINCIPAL"):
        auth = {"kafka_principal": os.environ["TRUSTPLANE_KAFKA_PRINCIPAL"]}
        for name in ("kafka_credentials_dir", "kafka_password_file"):
            if os.environ.get(f"TRUSTPLANE_{name.upper()}"):
                auth[name] = Path(os.environ[f"TRUSTPLANE_{name.upper()}"])
    return Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        group_id=prefix.rstrip(".").replace(".", "-"),
        partitions=config.partitions,
        state_dir=config.state_dir,
        web_port=0,
        **{**auth, **overrides},
    )


def _create_topics(settings: Settings, names: Sequence[str]) -> None:
    admin = AdminClient(dict(settings.kafka_config()))
    futures = admin.create_topics(
        [
            NewTopic(settings.topic(n), num_partitions=settings.partitions, replication_factor=-1)
            for n in names
        ],
        operation_timeout=30,
    )
    for topic, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BenchError(f"cannot create topic {topic}: {exc}") from exc


def _gate_scenario(
    config: BenchConfig,
    bootstrap: str,
    broker_pid: int | None,
    run_id: str,
    estate: BenchEstate,
    intents: SignedIntents,
    workers: int,
    log: Log,
    *,
    phases: list[tuple[str, float | None, int]] | None = None,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    tag = "prof" if profile_to else f"w{workers}"
    prefix = f"bench-{run_id}-{tag}."
    settings = _settings(config, bootstrap, prefix)
    ensure_topics(settings)
    started = time.monotonic()
    commands = estate.register(settings)
    log(
        f"registered {len(estate)} agents and their runtimes, published the bundle "
        f"({commands} signed control commands, {time.monotonic() - started:.1f} s)"
    )
    run_dir = config.state_dir / f"run-{run_id}"
    procs = WorkerProcesses(settings, workers, run_dir, dict(config.worker_env))
    collector = Collector(settings, Collector.GATE_TOPICS)
    publisher = Publisher(settings, settings.topic("intents"))
    results: list[PhaseResult] = []
    profile: dict[str, Any] | None = None
    try:
        started = time.monotonic()
        procs.start()
        log(
            f"{workers} worker process(es) ready in {time.monotonic() - started:.1f} s "
            f"(pids {', '.join(map(str, procs.pids))}; logs in {run_dir})"
        )
        clock = _Clock(
            {
                "workers": lambda: procs.pids,
                "broker": lambda: [broker_pid] if broker_pid else [],
                "collector": lambda: [collector.pid],
            }
        )
        offset = 0
        capacity = 0.0
        for name, rate, count in phases or config.plan():
            if rate and capacity and rate > 1.25 * capacity:
                count = min(count, max(1, round(rate * config.overload_phase_s)))
                log(
                    f"  {name:>9}: over the {capacity:,.0f}/s an earlier phase could not "
                    f"sustain: publishing for {config.overload_phase_s:g} s only"
                )
            chunk = intents.slice(offset, offset + count)
            offset += count
            spies: list[PySpy] = []
            if profile_to is not None and name == "max":
                # two samplers at once: on-CPU stacks (where CPU goes) and all stacks,
                # idle included (where the loop's wall time goes, e.g. waiting on Kafka)
                for idle in (False, True):
                    stem = f"{profile_to.stem}{'-wall' if idle else '-cpu'}{profile_to.suffix}"
                    spy = PySpy(
                        procs.pids[0],
                        profile_to.with_name(stem),
                        rate=config.profile_rate,
                        idle=idle,
                    )
                    spy.start()
                    spies.append(spy)
            result = _run_phase(
                name,
                chunk,
                rate,
                publisher,
                collector,
                clock,
                log,
                stall_s=config.stall_s,
                alive=procs.check_alive,
            )
            if spies:
                profile = {"cpu": spies[0].stop(), "wall": spies[1].stop()}
            result.samples = collector.samples() if result.outcomes["approved"] < count else []
            results.append(result)
            if rate and not result.sustained:
                capacity = result.throughput if not capacity else min(capacity, result.throughput)
    finally:
        procs.stop()
        collector.close()
    return {
        "workers": workers,
        "worker_env": dict(config.worker_env),
        "prefix": prefix,
        "phases": [asdict(r) for r in results],
        "profile": profile,
    }


def _baseline_scenario(
    config: BenchConfig,
    bootstrap: str,
    broker_pid: int | None,
    run_id: str,
    intents: SignedIntents,
    mode: str,
    log: Log,
) -> dict[str, Any]:
    prefix = f"bench-{run_id}-base-{mode}."
    settings = _settings(config, bootstrap, prefix)
    _create_topics(settings, ["baseline-in", "baseline-out"])
    collector = Collector(settings, {"baseline-out": (0, 0)})
    loop = Baseline(settings, mode, "baseline-in", "baseline-out")
    publisher = Publisher(settings, settings.topic("baseline-in"))
    clock = _Clock(
        {
            "workers": lambda: [loop.pid],
            "broker": lambda: [broker_pid] if broker_pid else [],
            "collector": lambda: [collector.pid],
        }
    )
    fixed = max(1, round(config.baseline_rate * config.baseline_phase_s))
    results = []
    try:
        offset = 0
        for name, rate, count in (
            ("warmup", None, min(config.warmup, 1000)),
            (f"{config.baseline_rate:g}/s", config.baseline_rate, fixed),
            ("max", None, config.baseline_max),
        ):
            chunk = intents.slice(offset, offset + count)
            offset += count
            results.append(
                _run_phase(
                    name, chunk, rate, publisher, collector, clock, log, stall_s=config.stall_s
                )
            )
    finally:
        loop.close()
        collector.close()
    return {"mode": mode, "prefix": prefix, "phases": [asdict(r) for r in results]}


def _machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "confluent_kafka": version("confluent-kafka"),
        "load_average_at_start": list(os.getloadavg()),
    }


def run_bench(config: BenchConfig, log: Log = print) -> dict[str, Any]:
    """Run everything ``config`` asks for; return the result (see ``report.py``)."""
    run_id = uuid.uuid4().hex[:6]
    began = time.monotonic()
    result: dict[str, Any] = {
        "run_id": run_id,
        "mode": config.mode,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "machine": _machine(),
    }
    config.state_dir.mkdir(parents=True, exist_ok=True)

    # -- the workload ---------------------------------------------------------------
    estate = BenchEstate(config.agents, seed=config.seed)
    workload = Workload(estate, seed=config.seed + 1, ttl_s=config.ttl_s)
    safe_rate, binding = workload.anomaly_safe_rate(
        AnomalyConfig.from_file(Settings().anomaly_config_path)
    )
    needed = config.intents_needed()
    log(
        f"signing {needed:,} intents of {len(estate)} agents "
        f"(anomaly thresholds hold up to {safe_rate:,.0f} decided intents/s; first to bind: "
        f"{binding})"
    )
    started = time.process_time()
    intents = workload.build(
        needed, progress=lambda d, t: log(f"  signed {d:,}/{t:,}") if d % 20_000 == 0 else None
    )
    sign_us = (time.process_time() - started) * 1e6 / needed
    log(f"signed and encoded in {sign_us:.0f} µs CPU per intent")
    result["workload"] = {
        "agents": len(estate),
        "roles": {
            r: sum(1 for a in estate.agents if a.role == r)
            for r in sorted({a.role for a in estate.agents})
        },
        "intents_signed": needed,
        "sign_encode_us_per_intent": sign_us,
        "mean_intent_bytes": sum(map(len, intents.values)) / len(intents),
        "anomaly_safe_rate": safe_rate,
        "anomaly_binding": binding,
        "ttl_s": config.ttl_s,
    }

    # -- references without Kafka -------------------------------------------------------
    floor = crypto_floor(estate, intents, config.floor_intents)
    log(
        f"crypto floor: verify {floor['verify_us']:.0f} µs + sign {floor['sign_us']:.0f} µs "
        f"= {floor['cpu_us_per_intent']:.0f} µs CPU per intent"
    )
    result["crypto_floor"] = floor
    inproc = gate_in_process(estate, intents.slice(0, config.inproc_intents), profile=True)
    log(
        f"gate in process (no Kafka): {inproc.cpu_us_per_intent:.0f} µs CPU per intent "
        f"+ {inproc.state_write_us_per_intent:.0f} µs state write; outcomes {inproc.outcomes}"
    )
    result["gate_in_process"] = asdict(inproc)
    log(f"side by side: gate in process, crypto floor, peer ({config.side_rounds} rounds)")
    side = side_by_side(
        estate,
        intents.slice(0, config.inproc_intents),
        rounds=config.side_rounds,
        peer_actions=config.peer_actions,
        log=log,
    )
    result["side_by_side"] = side
    if "peer" in side:
        log(
            f"gate {side['gate_us']:.0f} µs = x{side['peer_ratio']:.2f} the peer's signed path "
            f"({side['peer']['signed_us']:.0f} µs), x{side['floor_ratio']:.1f} the floor"
        )
    else:
        log(f"peer not measured: {side['peer_error']}")

    broker = _broker(config, log)
    try:
        # -- raw baselines ----------------------------------------------------------------
        result["baselines"] = []
        for mode in config.baseline_modes:
            log(f"raw baseline ({mode}): consume → produce, no work")
            result["baselines"].append(
                _baseline_scenario(config, broker.bootstrap, broker.pid, run_id, intents, mode, log)
            )
        # -- the gate ---------------------------------------------------------------------
        result["gate"] = []
        for workers in config.workers:
            log(f"gate, {workers} worker process(es), {config.partitions} partitions")
            try:
                scenario = _gate_scenario(
                    config,
                    broker.bootstrap,
                    broker.pid,
                    run_id,
                    estate,
                    intents,
                    workers,
                    log,
                )
            except BenchError as exc:  # keep the other scenarios' results
                log(f"  FAILED: {exc.reason}")
                scenario = {"workers": workers, "phases": [], "error": exc.reason}
            result["gate"].append(scenario)
        if config.profile:
            log("profile: 1 worker at maximum rate under py-spy")
            phases: list[tuple[str, float | None, int]] = [
                ("warmup", None, config.warmup),
                ("max", None, config.profile_intents),
            ]
            profile_dir = config.output_dir
            scenario = _gate_scenario(
                config,
                broker.bootstrap,
                broker.pid,
                run_id,
                estate,
                intents,
                1,
                log,
                phases=phases,
                profile_to=profile_dir / f"profile-{config.mode}.txt",
            )
            result["profile"] = {
                "phase": scenario["phases"][-1],
                **(scenario["profile"] or {"cpu": {"error": "no profile"}}),
            }
    finally:
        broker.stop()
    result["elapsed_s"] = time.monotonic() - began
    return result
