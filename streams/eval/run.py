"""The whole evaluation: a broker, then for each suite a fresh topic prefix, its estate
registered, a gate worker with the suite's anomaly settings, every episode replayed
through guards, the worker stopped; then the scores.

:func:`evaluate_suite` is the part that needs a broker and a way to start a worker (the
integration test gives its own); :func:`run_agentdojo` brings both (the project's local
broker in its own folder, real ``trustplane worker`` processes).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException

from streams import kafka, provision
from streams.acls import ADMIN
from streams.config import PROJECT_ROOT, Settings
from streams.eval.dojo import BENCHMARK_VERSION, SUITES, DojoSuite, EpisodeSpec, load_suite
from streams.eval.errors import EvalError
from streams.eval.estate import SuiteEstate
from streams.eval.replay import EpisodeResult, replay_episodes
from streams.eval.worker import GateWorker
from streams.operator import ensure_local_keys

__all__ = [
    "EVAL_KAFKA_DIR",
    "EvalOptions",
    "SuiteRun",
    "evaluate_suite",
    "run_agentdojo",
    "select_episodes",
]

EVAL_KAFKA_DIR = PROJECT_ROOT / ".state" / "eval-kafka"
GATE_PRINCIPAL = "gate"

Log = Callable[[str], None]
StartWorker = Callable[[Settings], Callable[[], None]]
"""Start a gate worker for these settings; return what stops it."""


@dataclass(frozen=True)
class EvalOptions:
    suites: tuple[str, ...] = SUITES
    version: str = BENCHMARK_VERSION
    user_tasks: int | None = None
    """Only the first N user tasks of each suite (None: all)."""
    injection_tasks: int | None = None
    """Only the first N injection tasks of each suite (None: all)."""
    concurrency: int = 16
    """Episodes replayed at once (each its own agent and guard)."""
    deadline_s: float = 30.0


@dataclass
class SuiteRun:
    suite: str
    results: list[EpisodeResult]
    seconds: float
    tools: int
    no_ground_truth: list[str]
    """Injection tasks that ship no ground-truth calls (a replay cannot attempt them)."""


def select_episodes(dojo: DojoSuite, options: EvalOptions) -> list[EpisodeSpec]:
    users = set(list(dojo.user_tasks)[: options.user_tasks])
    injections = set(list(dojo.injection_tasks)[: options.injection_tasks])
    return [
        spec
        for spec in dojo.episodes()
        if spec.user_task in users
        and (spec.injection_task is None or spec.injection_task in injections)
    ]


def evaluate_suite(
    settings: Settings,
    dojo: DojoSuite,
    estate: SuiteEstate,
    options: EvalOptions,
    start_worker: StartWorker,
    log: Log = lambda message: None,
) -> SuiteRun:
    """Register the suite's estate under ``settings`` (a provisioned topic prefix, whose
    ``anomaly_config_path`` is the suite's), start a worker, replay, stop it."""
    started = time.monotonic()
    specs = select_episodes(dojo, options)
    identities = estate.identities(len(specs))
    log(f"{dojo.name}: registering {len(identities)} agents (one per episode) and the bundle")
    ensure_local_keys(settings)
    estate.register(settings, identities)
    stop = start_worker(settings)
    step = max(1, len(specs) // 10)

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            log(f"{dojo.name}: {done}/{total} episodes ({time.monotonic() - started:.0f} s)")

    try:
        results = replay_episodes(
            settings,
            dojo,
            estate,
            list(zip(specs, identities, strict=True)),
            concurrency=options.concurrency,
            deadline_s=options.deadline_s,
            progress=progress,
        )
    finally:
        stop()
    lost = sum(c.outcome in ("unavailable", "unverified") for r in results for c in r.calls)
    if lost:
        raise EvalError(
            f"{dojo.name}: {lost} calls got no verified decision: the figures would be wrong",
            hint="is the machine overloaded? try --concurrency 4 or a longer --deadline",
        )
    return SuiteRun(
        dojo.name,
        results,
        time.monotonic() - started,
        len(dojo.tool_names),
        dojo.without_ground_truth(),
    )


def run_agentdojo(
    options: EvalOptions,
    *,
    kafka_dir: Path = EVAL_KAFKA_DIR,
    keep_broker: bool = False,
    log: Log = lambda message: None,
) -> list[SuiteRun]:
    """Every chosen suite through a local broker (started in ``kafka_dir`` if it is not
    running, and stopped afterwards unless ``keep_broker``) and real gate workers."""
    from streams.dev.localkafka import LocalKafka

    broker = LocalKafka(kafka_dir, progress=lambda message: log(f"[kafka] {message}"))
    running = broker.status()
    info = running or broker.up(timeout=180)
    runs: list[SuiteRun] = []
    try:
        with tempfile.TemporaryDirectory(prefix="trustplane-eval-") as tmp:
            base = Settings(
                bootstrap_servers=info.bootstrap,
                kafka_principal=ADMIN,
                kafka_credentials_dir=broker.credentials.directory,
                state_dir=Path(tmp) / "state",
            )
            provision.provision(base, topics=False, grant=False)  # the role users
            for name in options.suites:
                log(f"{name}: loading AgentDojo {options.version}")
                dojo = load_suite(name, options.version)
                estate = SuiteEstate.of(name)
                tag = uuid.uuid4().hex[:8]
                settings = dataclasses.replace(
                    base,
                    topic_prefix=f"dojo{tag}.",
                    group_id=f"dojo-{tag}",
                    anomaly_config_path=estate.anomaly_path,
                )
                provision.provision(settings, users=False)
                try:
                    runs.append(
                        evaluate_suite(
                            settings, dojo, estate, options, _worker_starter(Path(tmp)), log
                        )
                    )
                finally:
                    provision.revoke(settings)
                    _delete_topics(settings, log)
    finally:
        if running is None and not keep_broker:
            broker.down()
    return runs


def _delete_topics(settings: Settings, log: Log) -> None:
    """The suite's topics (the estate's and the worker's own), so that a broker kept
    between runs does not fill up: best effort, a failure is only logged."""
    admin = kafka.admin(settings)
    try:
        names = [
            name
            for name in admin.list_topics(timeout=10).topics
            if name.startswith(settings.topic_prefix)
        ]
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()
    except KafkaException as exc:
        log(f"the topics of prefix {settings.topic_prefix!r} were not all deleted: {exc}")


def _worker_starter(log_dir: Path) -> StartWorker:
    def start(settings: Settings) -> Callable[[], None]:
        worker = GateWorker(
            settings.as_principal(GATE_PRINCIPAL), log_dir / f"worker-{settings.group_id}.log"
        )
        worker.start()
        return worker.stop

    return start
