"""The sink's settings, the topics it reads, and the store they name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinks.clickhouse import ClickHouseSink
from streams.config import Settings
from streams.sink.exceptions import SinkRunError

__all__ = ["SINK_TOPICS", "GATE_REJECTS", "SinkConfig", "build_sink"]

SINK_TOPICS = (
    "lineage-log",
    "approved",
    "denied",
    "review",
    "rejected",
    "outcomes",
    "checkpoints",
    "intents",
)
"""Logical topics the sink reads. ``checkpoints`` carries the notary's signed notes (text,
not Avro); ``intents`` what agents sent (the gate, not the sink, rejects what is bad there:
:data:`GATE_REJECTS`)."""

GATE_REJECTS = frozenset({"intents"})
"""Topics whose bad records the gate sends to ``rejected``: the sink counts and skips them
(a Rejection of its own would have the gate's rejection id, and replace the gate's)."""


@dataclass(frozen=True)
class SinkConfig:
    """The sink's settings. Read from :class:`Settings` where it has them (see
    :meth:`from_settings`), else these defaults."""

    data_dir: Path
    """The embedded chDB folder (``<state_dir>/clickhouse``)."""
    clickhouse_url: str = ""
    """A ClickHouse server (``http://user:pass@host:8123/db``); empty: embedded chDB."""
    http_host: str = "127.0.0.1"
    http_port: int = 6068
    """Port of the sink's SQL/health endpoint; 0 disables it."""
    batch_rows: int = 20_000
    """Records per ClickHouse write (and Kafka commit) at most. ClickHouse likes few, big
    inserts (each insert is a part to merge): 20,000 rows keeps ~65k rows/s on chDB."""
    batch_ms: int = 1000
    """A batch is written at least this often while records arrive."""
    query_timeout_s: int = 60
    max_result_rows: int = 100_000

    def __post_init__(self) -> None:
        if self.batch_rows < 1 or self.batch_ms < 1:
            raise SinkRunError("sink_batch_rows and sink_batch_ms must be >= 1")
        if not 0 <= self.http_port <= 65535:
            raise SinkRunError(f"sink_http_port must be 0..65535, got {self.http_port}")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> SinkConfig:
        """Settings fields ``clickhouse_url``, ``clickhouse_dir``, ``sink_http_port``,
        ``sink_batch_rows``, ``sink_batch_ms``, ``sink_query_timeout_s`` when present;
        ``overrides`` (e.g. from CLI options, None = not given) win."""
        data_dir = getattr(settings, "clickhouse_dir", None) or settings.state_dir / "clickhouse"
        values: dict[str, Any] = {
            "data_dir": Path(data_dir),
            "clickhouse_url": str(getattr(settings, "clickhouse_url", "") or ""),
            "http_port": int(getattr(settings, "sink_http_port", cls.http_port)),
            "http_host": str(getattr(settings, "sink_http_bind", cls.http_host)),
            "batch_rows": int(getattr(settings, "sink_batch_rows", cls.batch_rows)),
            "batch_ms": int(getattr(settings, "sink_batch_ms", cls.batch_ms)),
            "query_timeout_s": int(getattr(settings, "sink_query_timeout_s", cls.query_timeout_s)),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["data_dir"] = Path(values["data_dir"])
        return cls(**values)

    @property
    def endpoint(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"


def build_sink(config: SinkConfig) -> ClickHouseSink:
    """The ClickHouse sink the config names (not set up yet)."""
    common: dict[str, Any] = {
        "query_timeout_s": config.query_timeout_s,
        "max_result_rows": config.max_result_rows,
    }
    if config.clickhouse_url:
        return ClickHouseSink(url=config.clickhouse_url, **common)
    return ClickHouseSink(path=config.data_dir, **common)
