"""Single use across an executor group, on the real broker.

The executors of one deployment share one consumer group; each commits a record's offset
synchronously before it acts on it ("Single use" in ``streams/sdk/executor.py``). Each
executor here has its own single-use store, so only the group can keep them from
executing an approval twice.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from processors.approval import ApprovalSigner, SigningKeyring, SqliteSeenStore, VerifiedApproval
from processors.crypto.keys import Keyset
from processors.enforcement import combine
from processors.records import approval_record
from processors.verdict import Verdict
from streams import kafka
from streams.codec import default_codec
from streams.config import Settings
from streams.sdk.executor import ApprovalConsumer, ExecutorSummary, run_example_executor
from tests.conftest import ServiceFactory, settings_env
from tests.processors.factories import intent_record, make_intent

pytestmark = pytest.mark.broker

CODEC = default_codec()
AGENTS = [f"agent-{n}" for n in range(8)]  # keys spread the approvals over the partitions


class Gate:
    """Writes approvals to ``approved`` as a gate worker does: Approval records signed
    with the estate's approval key (the one ``approvals.jwks.json`` publishes)."""

    def __init__(self, settings: Settings) -> None:
        keyring = SigningKeyring.from_directory(settings.resolved_signing_keys_dir)
        self.signer = ApprovalSigner(keyring)
        self.keyset: Keyset = Keyset.from_file(settings.resolved_keys_dir / "approvals.jwks.json")
        self.topic = settings.topic("approved")
        self.producer = kafka.producer(settings)
        self.published: list[str] = []

    def approve(self, agent: str) -> str:
        """Publish one approval for ``agent``; return its intent id."""
        now = time.time_ns() // 1_000_000
        intent_id = f"intent-{uuid.uuid4().hex[:12]}"
        fields = {
            "intent_id": intent_id,
            "agent_id": agent,
            "issued_at_ms": now,
            "expires_at_ms": now + 600_000,
        }
        raw = CODEC.encode("Intent", intent_record(**fields))
        record = approval_record(
            make_intent(**fields),
            combine([Verdict.allow("identity"), Verdict.allow("policy")], ["identity"]),
            intent_digest="sha256:" + hashlib.sha256(raw).hexdigest(),
            intent_bytes=raw,
            now_ms=now,
            worker="test-gate",
            signer=self.signer,
            ttl_ms=300_000,
        )
        self.producer.produce(
            self.topic, key=agent.encode(), value=CODEC.encode("Approval", record)
        )
        self.producer.poll(0)
        self.published.append(intent_id)
        return intent_id

    def flush(self) -> None:
        assert self.producer.flush(10) == 0


@dataclasses.dataclass
class Executor:
    """One executor process of a deployment: its own consumer and its own durable
    single-use store, running ``run_example_executor`` in a thread."""

    name: str
    settings: Settings
    keyset: Keyset
    group_id: str
    state_dir: Path
    action_s: float = 0.0
    on_execute: Callable[[Executor, VerifiedApproval], None] = lambda executor, approval: None
    kafka_overrides: dict[str, str] = dataclasses.field(default_factory=dict)
    executed: list[str] = dataclasses.field(default_factory=list)
    summary: ExecutorSummary | None = None
    error: Exception | None = None

    def start(self) -> Executor:
        endpoint = dataclasses.replace(
            self.settings, extra={**self.settings.extra, **self.kafka_overrides}
        )
        self.seen = SqliteSeenStore(self.state_dir / f"{self.name}.db")
        self.consumer = ApprovalConsumer(endpoint, self.keyset, self.seen, group_id=self.group_id)
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()
        return self

    def _execute(self, approval: VerifiedApproval) -> str:
        self.executed.append(approval.intent_id)
        self.on_execute(self, approval)
        time.sleep(self.action_s)
        return f"{self.name} ran {approval.action}"

    def _run(self) -> None:
        try:
            self.summary = run_example_executor(
                self.settings,
                self.keyset,
                executor_id=self.name,
                seen=self.seen,
                execute=self._execute,
                consumer=self.consumer,
            )
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            self.error = exc
        finally:
            try:
                self.consumer.close()  # leaves the group: a rebalance
            except KafkaException:
                pass  # a fenced consumer
            self.seen.close()

    def stop(self, timeout: float = 30.0) -> None:
        self.consumer.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.name} did not stop"


class Deployment:
    """A gate writing approvals, and the executors of one deployment: one group."""

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.gate = Gate(settings)
        self.group_id = f"executors-{uuid.uuid4().hex[:8]}"
        self.executors: list[Executor] = []

    def executor(self, name: str, **fields: Any) -> Executor:
        """An executor of this deployment (not started yet)."""
        fields.setdefault("group_id", self.group_id)
        executor = Executor(
            name, self.settings, self.gate.keyset, state_dir=self.state_dir, **fields
        )
        self.executors.append(executor)
        return executor

    def stop(self) -> None:
        for executor in self.executors:
            if hasattr(executor, "thread") and executor.thread.is_alive():
                executor.stop()


@pytest.fixture
def deployment(settings_factory: Callable[..., Settings], tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(settings_factory(), tmp_path)
    yield deployment
    deployment.stop()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def stream_until(gate: Gate, condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Publish an approval every 20 ms, for agents in turn, until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        gate.approve(AGENTS[len(gate.published) % len(AGENTS)])
        gate.flush()
        time.sleep(0.02)


def stream(gate: Gate, count: int) -> None:
    for _ in range(count):
        gate.approve(AGENTS[len(gate.published) % len(AGENTS)])
        time.sleep(0.02)
    gate.flush()


def executions(*executors: Executor) -> collections.Counter[str]:
    return collections.Counter(i for executor in executors for i in executor.executed)


def test_an_executor_group_executes_each_approval_once_across_rebalances(deployment):
    """A stream of approvals; a second executor joins mid-stream, the first one leaves
    later: two rebalances while approvals are in flight. Every approval is executed by
    exactly one executor, exactly once."""
    gate = deployment.gate
    first = deployment.executor("executor-a", action_s=0.01).start()
    second = deployment.executor("executor-b", action_s=0.01)
    stream(gate, 50)
    stream_until(gate, lambda: first.executed != [], 30, "executor-a to execute")
    second.start()  # joins the group: the partitions are shared out again
    stream(gate, 50)
    stream_until(gate, lambda: second.executed != [], 30, "executor-b to execute")
    stream(gate, 20)
    first.stop()  # leaves the group, mid-stream: executor-b takes every partition
    stream(gate, 50)
    total = len(gate.published)
    wait_until(lambda: len(executions(first, second)) >= total, 60, "every approval")
    time.sleep(2)  # a second execution would show now
    second.stop()

    assert first.error is None and second.error is None
    counts = executions(first, second)
    assert [i for i, n in counts.items() if n > 1] == [], "an approval executed twice"
    assert set(counts) == set(gate.published), "every approval executed"
    assert first.executed and second.executed
    assert first.summary is not None and second.summary is not None
    assert first.summary.executed + second.summary.executed == total  # reported outcomes


# An executor process as an operator runs it (TRUSTPLANE_* environment), killable: each
# execution is written to a file (line-buffered: on disk before the next one starts).
EXECUTOR_PROCESS = """
import dataclasses, sys
from processors.approval import SqliteSeenStore
from processors.crypto.keys import Keyset
from streams.config import Settings
from streams.sdk.executor import ApprovalConsumer, run_example_executor

name, group_id, out = sys.argv[1:4]
settings = Settings.load()
keyset = Keyset.from_file(settings.resolved_keys_dir / "approvals.jwks.json")
seen = SqliteSeenStore(out + ".db")
# removed from the group 6 s after it stops heartbeating (a crash)
endpoint = dataclasses.replace(settings, extra={**settings.extra, "session.timeout.ms": "6000"})
log = open(out, "a", buffering=1)

def execute(approval):
    log.write(approval.intent_id + "\\n")
    return "done"

run_example_executor(settings, keyset, executor_id=name, seen=seen, execute=execute,
                     consumer=ApprovalConsumer(endpoint, keyset, seen, group_id=group_id))
"""


def test_an_executor_killed_mid_stream_loses_at_most_its_action_in_flight(
    deployment, service_factory: ServiceFactory, tmp_path: Path
):
    """kill -9 of one executor while approvals stream in: the other one takes its
    partitions at the committed offsets. Nothing the killed one executed is executed
    again; at most the one record it had committed and not yet executed is lost."""
    gate = deployment.gate
    out = tmp_path / "executor-a.executed"
    out.touch()
    first = service_factory(
        "executor-a",
        [sys.executable, "-c", EXECUTOR_PROCESS, "executor-a", deployment.group_id, str(out)],
        settings_env(deployment.settings),
    ).start()
    second = deployment.executor("executor-b")

    def executed_by_first() -> list[str]:
        return out.read_text().split()

    stream(gate, 30)
    stream_until(gate, lambda: executed_by_first() != [], 60, f"executor-a:\n{first.log()}")
    second.start()
    stream(gate, 30)
    stream_until(gate, lambda: second.executed != [], 30, "executor-b to execute")
    stream(gate, 20)
    first.kill()  # SIGKILL mid-stream: no commit, no leaving the group
    stream(gate, 50)
    total = len(gate.published)
    wait_until(
        lambda: len(set(executed_by_first()) | set(second.executed)) >= total - 1,
        60,
        "every approval but the one in flight",
    )
    time.sleep(2)  # a second execution would show now
    second.stop()

    counts = collections.Counter(executed_by_first() + second.executed)
    assert [i for i, n in counts.items() if n > 1] == [], "an approval executed twice"
    assert len(set(gate.published) - set(counts)) <= 1
    assert executed_by_first() and second.executed


def test_an_executor_removed_from_the_group_mid_batch_does_not_execute_the_rest(deployment):
    """Its action outlasts max.poll.interval.ms: librdkafka leaves the group, the other
    executor takes the partition at the committed offset. The first one comes back with
    the rest of its polled batch and must not execute any of it."""
    gate = deployment.gate
    for _ in range(4):
        gate.approve("agent-0")  # one key: one partition, polled in one batch
    gate.flush()
    slow = {"session.timeout.ms": "6000", "max.poll.interval.ms": "6000"}
    second = deployment.executor("executor-b", kafka_overrides=slow)

    def stall(executor: Executor, approval: VerifiedApproval) -> None:
        if len(executor.executed) == 1:
            second.start()  # joins; the rebalance waits for executor-a, then drops it
            time.sleep(9)  # > max.poll.interval.ms

    first = deployment.executor("executor-a", on_execute=stall, kafka_overrides=slow).start()
    wait_until(lambda: len(executions(first, second)) >= 4, 60, "every approval")
    time.sleep(3)  # executor-a is back from its action and reads on
    first.stop()
    second.stop()

    assert first.executed == gate.published[:1]
    assert second.executed == gate.published[1:]
    assert first.summary is not None and first.summary.refused >= 1
    assert "GroupClaimError" in first.summary.refusals[0]
    assert "is not a member of group" in first.summary.refusals[0]


def test_a_commit_the_group_refuses_is_not_executed(deployment):
    """A rebalance between poll and commit: while executor-a runs its first action, a
    second executor with the same static group.instance.id replaces it in the group
    (a pod restarted while its old process still runs) and executes the rest, from the
    committed offset. The coordinator refuses executor-a's next commit
    (FENCED_INSTANCE_ID): executor-a does not execute the record, and stops (a fenced
    instance is a fatal error)."""
    gate = deployment.gate
    for _ in range(3):
        gate.approve("agent-0")
    gate.flush()
    static = {"group.instance.id": f"executor-{uuid.uuid4().hex[:6]}"}
    replacement = deployment.executor("executor-a2", kafka_overrides=static)

    def replaced(executor: Executor, approval: VerifiedApproval) -> None:
        if len(executor.executed) == 1:
            replacement.start()
            wait_until(lambda: len(replacement.executed) == 2, 30, "the replacement")

    first = deployment.executor("executor-a", on_execute=replaced, kafka_overrides=static).start()
    first.thread.join(60)
    assert not first.thread.is_alive()
    replacement.stop()

    assert first.executed == gate.published[:1]
    assert replacement.executed == gate.published[1:]
    # fenced (or, once a heartbeat learnt it first, librdkafka's fatal error): it stops
    assert isinstance(first.error, KafkaException)
    assert first.error.args[0].code() in (KafkaError.FENCED_INSTANCE_ID, KafkaError._FATAL)


def test_executors_in_different_groups_each_execute_every_approval(deployment):
    """The boundary of the guarantee: a group is its own single-use domain. Two
    deployments under two group ids each execute every approval (on a secured cluster
    the broker's ACLs refuse the executor principal a second group)."""
    gate = deployment.gate
    for n in range(5):
        gate.approve(AGENTS[n])
    gate.flush()
    one = deployment.executor("deployment-1", group_id=f"g1-{uuid.uuid4().hex[:6]}").start()
    two = deployment.executor("deployment-2", group_id=f"g2-{uuid.uuid4().hex[:6]}").start()
    wait_until(lambda: len(one.executed) == 5 and len(two.executed) == 5, 30, "both")
    one.stop()
    two.stop()
    assert sorted(one.executed) == sorted(two.executed) == sorted(gate.published)
