"""The notary process: restore the log, then link and log ``lineage`` in Kafka
transactions (see :mod:`streams.notary`)."""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, Message, TopicPartition

from processors.exceptions import ConfigError
from processors.log.checkpoint import NoteSigner
from processors.records import SourcePosition, rejection_record
from streams import kafka, names
from streams.brokerwait import wait_for_broker
from streams.codec import Codec, default_codec
from streams.config import Settings
from streams.gate.metrics import GroupLag
from streams.gatekeys import GateKeys, gate_jwks_path
from streams.kafka import Record, TransactionalLoop, UpToDeadline
from streams.notary.exceptions import NotaryServiceError, SnapshotError
from streams.notary.fetcher import EventFetcher
from streams.notary.http import NotaryHTTPServer, notary_bind, notary_port, notary_token
from streams.notary.keys import load_notary_signer, notary_origin
from streams.notary.log import NotaryLog, Refusal, require_log_index
from streams.notary.restore import LogRestorer
from streams.notary.snapshot import BackgroundSaver, SnapshotStore, snapshot_dir
from streams.notary.topics import CHECKPOINT_TOPIC, LOG_TOPIC, ensure_notary_topics
from streams.startup import StartupTimeline

__all__ = ["NotaryService"]

log = logging.getLogger(__name__)


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class NotaryService:
    """The notary process: ``run()`` until ``stop()``; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        signer: NoteSigner | None = None,
        origin: str | None = None,
        port: int | None = None,
        create_key: bool | None = None,
        checkpoint_every_events: int | None = None,
        checkpoint_every_ms: int | None = None,
        batch_max_records: int = 1000,
        batch_max_ms: int = 50,
        max_checkpoints: int = 100_000,
        gate_keys: GateKeys | None = None,
        snapshots: bool = True,
        snapshot_every_events: int = 5000,
        snapshot_every_ms: int = 1000,
    ) -> None:
        settings = settings.for_role("notary")  # its Kafka principal, unless configured
        self.settings = settings
        self.gate_keys = gate_keys or GateKeys(gate_jwks_path(settings))
        self.origin = origin or (signer.name if signer else notary_origin(settings))
        self.codec = codec or default_codec()
        require_log_index(self.codec)
        self.signer = signer or load_notary_signer(settings, self.origin, create=create_key)
        if self.signer.name != self.origin:
            raise ConfigError(
                f"the signer is named {self.signer.name!r} but the origin is {self.origin!r}",
                hint="a log's checkpoints are signed by a key named after its origin",
            )
        self.port = notary_port(settings) if port is None else port
        self.checkpoint_every_events = checkpoint_every_events or int(
            getattr(settings, "notary_checkpoint_events", None) or 1000
        )
        # 500 ms, not 1 s: an event's checkpoint lag is this interval plus one transaction,
        # and it should stay under a second (bench/bench_checkpoint_lag.py)
        self.checkpoint_every_ms = checkpoint_every_ms or int(
            getattr(settings, "notary_checkpoint_ms", None) or 500
        )
        self.batch_max_records = batch_max_records
        self.batch_max_ms = batch_max_ms
        self.max_checkpoints = max_checkpoints
        self.topics = {
            name: settings.topic(name)
            for name in ("lineage", LOG_TOPIC, CHECKPOINT_TOPIC, "rejected")
        }
        # at ~10,000 events/s of replay, a restart replays at most about half a second
        self.snapshot_every_events = snapshot_every_events
        self.snapshot_every_ms = snapshot_every_ms
        self.snapshots: SnapshotStore | None = None
        if snapshots:
            self.snapshots = SnapshotStore(
                snapshot_dir(settings, self.topics[LOG_TOPIC]),
                signer=self.signer,
                log_topic=self.topics[LOG_TOPIC],
                checkpoint_topic=self.topics[CHECKPOINT_TOPIC],
                max_checkpoints=max_checkpoints,
            )
        self.saver: BackgroundSaver | None = None
        self._saved_at = 0.0
        self.group_id = names.notary(settings)
        self.ready = threading.Event()
        self.startup = StartupTimeline("notary")
        """Replaced by each :meth:`run`'s own, from where its process started."""
        self._stopping = threading.Event()
        self.standing_by = False
        self.log: NotaryLog | None = None
        self.http: NotaryHTTPServer | None = None
        self.committed_transactions = 0
        self.consumer = kafka.loop_consumer(
            settings, self.group_id, self.group_id, names.notary(settings)
        )
        self.producer = kafka.loop_producer(settings, self.group_id, self.group_id)
        self.loop = TransactionalLoop(
            self.consumer,
            self.producer,
            name="notary",
            error=NotaryServiceError,
            fenced_hint="another notary with the same group id (and so the same log) took "
            "over; run one notary per log",
            batches=UpToDeadline(batch_max_records, batch_max_ms),
            on_batch=self._link,
            on_commit=self._committed,
            on_abort=self._rebuild,
        )
        self.fetcher = EventFetcher(settings, self.topics[LOG_TOPIC])

    @property
    def url(self) -> str | None:
        """The proof endpoint's base URL once it serves (port 0 picks a free port)."""
        return self.http.url if self.http else None

    def stop(self) -> None:
        self._stopping.set()
        self.loop.stop()

    def run(self) -> None:
        """Restore the log, then link and log lineage until :meth:`stop`; raise
        NotaryServiceError when the notary cannot go on."""
        startup = self.startup = StartupTimeline("notary")
        try:
            if not wait_for_broker(self.settings, "notary", stop=self._stopping):
                return  # stopped while the broker was down
            startup.mark("broker")
            ensure_notary_topics(self.settings)
            startup.mark("topics")
            if not self._lock_snapshots():
                return  # stopped while standing by
            self.loop.start()
            startup.mark("transactions")
            if self.port >= 0:
                self.http = NotaryHTTPServer(
                    lambda: self.log,
                    self.signer.vkey,
                    notary_bind(self.settings),
                    self.port,
                    token=notary_token(self.settings),
                    lag=GroupLag.of(self.settings, self.group_id, [self.topics["lineage"]]),
                ).start()
            self.log = self._restore()
            self.loop.subscribe(
                [self.topics["lineage"]], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            self.loop.run()
            self._final_snapshot()
        finally:
            self.close()

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        self.loop.close()
        try:
            self.fetcher.close()
        except RuntimeError:
            pass
        if self.saver is not None:
            self.saver.close()
        if self.snapshots is not None:
            self.snapshots.close()

    # -- restore ----------------------------------------------------------------

    def _new_log(self) -> NotaryLog:
        return NotaryLog(
            self.signer,
            self.codec,
            checkpoint_every_events=self.checkpoint_every_events,
            checkpoint_every_ms=self.checkpoint_every_ms,
            max_checkpoints=self.max_checkpoints,
            fetch=self.fetcher,
            gate_keys=self.gate_keys,
        )

    def _restore(self) -> NotaryLog:
        """The committed log: from the snapshot and the ``lineage-log`` records after it
        when the topics confirm the snapshot, else rebuilt from all of ``lineage-log``;
        checked against the last committed checkpoints either way."""
        if self.saver is not None:
            self.saver.wait()  # the store reloads: no save may be under way
        restored = LogRestorer(
            self.settings,
            new_log=self._new_log,
            log_topic=self.topics[LOG_TOPIC],
            checkpoint_topic=self.topics[CHECKPOINT_TOPIC],
            store=self.snapshots,
            # a checkpoint and a commit marker per transaction
            checkpoint_tail=3 * self.max_checkpoints,
        ).restore()
        notary_log = restored.log
        notary_log.restored = {
            "from": restored.source,
            "replayed": restored.replayed,
            "seconds": round(restored.seconds, 3),
        }
        log.info(
            "notary %s restored %d events (%s, %d replayed from %s) and %d checkpoints in %.2f s",
            self.origin,
            notary_log.size,
            restored.source,
            restored.replayed,
            self.topics[LOG_TOPIC],
            len(notary_log.kept_checkpoints()),
            restored.seconds,
        )
        if notary_log.repeated_ids:
            log.warning(
                "%s holds %d events whose event id an earlier event has (written before the "
                "notary logged one event per id); proofs by id give the first",
                self.topics[LOG_TOPIC],
                notary_log.repeated_ids,
            )
        # the timeline is complete before the log answers: /healthz never shows it unfinished
        self.startup.finish("serving")
        notary_log.startup = self.startup.summary
        self.log = notary_log
        if restored.replayed and self.saver is not None:
            self.saver.submit(notary_log)
        return notary_log

    # -- the snapshot ----------------------------------------------------------------

    def _lock_snapshots(self) -> bool:
        """Hold the snapshot folder's lock. While another notary of this log holds it
        (a second ``trustplane notary`` on this host: a warm standby), wait for it to end,
        a crash included, then take over; False when stopped meanwhile."""
        if self.snapshots is None:
            return True
        try:
            locked = self.snapshots.lock()
        except SnapshotError as exc:
            log.warning("%s", exc.diagnostics())
            log.warning(
                "the notary keeps no snapshot in %s (it cannot be written): it replays all "
                "of lineage-log at each start",
                self.snapshots.directory,
            )
            self.snapshots = None
            return True
        if not locked:
            self.standing_by = True
            log.warning(
                "another notary of this log runs on this host (it holds %s): this process "
                "stands by and takes over when that one ends",
                self.snapshots.directory / "lock",
            )
            if not self.snapshots.lock_file.wait(self._stopping.is_set, self._stopping.wait):
                return False
            self.standing_by = False
            self.startup.mark("standby")
            log.warning("notary %s: taking over", self.origin)
        self.saver = BackgroundSaver(self.snapshots)
        return True

    def _save_snapshot(self) -> None:
        """Have the committed state saved if a save is due (on the saver's thread)."""
        if self.saver is None or self.log is None or self.snapshots is None:
            return
        now = time.monotonic()
        if (
            self.log.size - self.snapshots.size >= self.snapshot_every_events
            or (now - self._saved_at) * 1000 >= self.snapshot_every_ms
        ):
            self._saved_at = now
            self.saver.submit(self.log)

    def _final_snapshot(self) -> None:
        """At a clean stop: everything committed, saved before the process ends."""
        if self.saver is None or self.log is None or self.snapshots is None:
            return
        self.saver.close()
        try:
            self.snapshots.save(self.log)
        except SnapshotError as exc:
            log.warning("%s", exc.diagnostics())

    # -- the loop's hooks --------------------------------------------------------

    def _link(self, messages: list[Message]) -> list[Record] | None:
        """The batch's events, linked and logged, and a checkpoint if one is due."""
        notary_log = self.log
        assert notary_log is not None  # noqa: S101 - set by run() before the loop
        log_topic = self.topics[LOG_TOPIC]
        records: list[Record] = []
        for message in messages:
            source = SourcePosition(
                str(message.topic()), message.partition() or 0, message.offset() or 0
            )
            kind, timestamp = message.timestamp()
            appended_at = timestamp if kind == TIMESTAMP_LOG_APPEND_TIME else None
            linked = notary_log.append(
                message.value(), source=str(source), appended_at_ms=appended_at
            )
            if isinstance(linked, Refusal):
                records.append(self._refused(message, source, linked))
            elif linked is not None:
                records.append(
                    Record(log_topic, linked.key, linked.value, 0, notary_log.on_delivery(linked))
                )
        due = notary_log.checkpoint_due(_monotonic_ms())
        if not messages and due is None:
            return None
        if due is not None:
            records.append(
                Record(
                    self.topics[CHECKPOINT_TOPIC],
                    self.origin.encode(),
                    due[1].encode(),
                    0,
                    notary_log.on_checkpoint_delivery(),
                )
            )
        return records

    def _refused(self, message: Message, source: SourcePosition, refusal: Refusal) -> Record:
        record = rejection_record(
            source,
            message.key(),
            message.value(),
            code=refusal.code,
            reason=refusal.reason,
            now_ms=time.time_ns() // 1_000_000,
            worker="notary",
        )
        value = self.codec.encode("Rejection", record)
        return Record(self.topics["rejected"], message.key(), value)

    def _committed(self, messages: list[Message]) -> None:
        assert self.log is not None  # noqa: S101 - set by run() before the loop
        self.log.commit()
        self.committed_transactions += 1
        self._save_snapshot()

    def _rebuild(self, cause: Exception) -> None:
        """After an abort: the uncommitted links are gone, rebuild from ``lineage-log``."""
        self.log = self._restore()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("notary assigned lineage partitions %s", [p.partition for p in partitions])
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("notary revoked lineage partitions %s", [p.partition for p in partitions])
