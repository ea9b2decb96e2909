"""``trustplane sink``: set up the store, serve SQL, run the Kafka loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sinks.clickhouse import ClickHouseSink
from streams.brokerwait import wait_for_broker
from streams.config import Settings
from streams.notary.topics import ensure_notary_topics
from streams.sink.config import SINK_TOPICS, SinkConfig, build_sink
from streams.sink.metrics import SinkMetrics
from streams.sink.runner import SinkRunner
from streams.sink.sql_server import QueryServer, sql_token_file
from streams.topics import ensure_topics

__all__ = ["RunningSink", "run_sink"]


@dataclass
class RunningSink:
    """What :func:`run_sink` started, for callers that want to look inside."""

    runner: SinkRunner
    sink: ClickHouseSink
    server: QueryServer | None = None
    notes: list[str] = field(default_factory=list)


def run_sink(
    settings: Settings,
    config: SinkConfig,
    *,
    on_start: Callable[[RunningSink], None] | None = None,
    fault_exit_after_flushes: int | None = None,
) -> None:
    """Set up the store (migrations), serve SQL, and run the Kafka loop until stopped.

    ``on_start`` gets the :class:`RunningSink` once everything is up (call
    ``running.runner.stop()`` from a signal handler to stop).
    """
    settings = settings.for_role("sink")  # its Kafka principal, unless configured
    wait_for_broker(settings, "sink")
    ensure_topics(settings, SINK_TOPICS)
    ensure_notary_topics(settings)  # checkpoints: one partition, kept forever
    sink = build_sink(config)
    sink.setup()
    server: QueryServer | None = None
    try:
        metrics = SinkMetrics()
        runner = SinkRunner(
            settings,
            sink,
            config,
            metrics=metrics,
            fault_exit_after_flushes=fault_exit_after_flushes,
        )
        running = RunningSink(runner, sink)
        if sink.applied:
            running.notes.append(f"applied migrations {', '.join(sink.applied)}")
        if config.http_port:
            server = QueryServer(
                sink,
                config.http_host,
                config.http_port,
                health=lambda: {**runner.health(), "store": sink.description},
                registry=metrics.registry,
                token=getattr(settings, "sink_sql_token", "") or None,
                token_file=sql_token_file(settings.state_dir),
            ).start()
            running.server = server
        if on_start is not None:
            on_start(running)
        runner.run()
    finally:
        if server is not None:
            server.stop()
        sink.close()
