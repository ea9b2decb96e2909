"""Live updates for open pages: decisions as the sink records them, control commands as
the replica applies them, fanned out to each page's server-sent-event stream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from typing import Any

from streams.console.data import LineageStore, SearchFilters
from streams.console.replica import AppliedCommand, ControlReplica

__all__ = ["DecisionFeed"]

log = logging.getLogger(__name__)
QUEUE_LIMIT = 500


class DecisionFeed:
    """One poller for every subscriber (browsers open one stream per page)."""

    def __init__(
        self, store: LineageStore, replica: ControlReplica, interval_s: float = 0.7
    ) -> None:
        self.store = store
        self.replica = replica
        self.interval_s = interval_s
        self.last_index: int | None = None
        self.error = ""
        self._subscribers: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.replica.listeners.append(self._on_command)
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_LIMIT)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        self._subscribers.discard(queue)

    def _publish(self, event: str, data: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            if queue.full():  # a stalled page loses its oldest updates, not the server
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait((event, data))

    def _on_command(self, command: AppliedCommand) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._publish, "control", dataclasses.asdict(command))

    async def _poll(self) -> None:
        while True:
            try:
                if self._subscribers or self.last_index is None:
                    await self._once()
                self.error = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the sink may be restarting: retry
                self.error = str(getattr(exc, "reason", exc))
                log.debug("decision feed: %s", self.error)
            await asyncio.sleep(self.interval_s)

    async def _once(self) -> None:
        after = self.last_index or 0
        limit = 1 if self.last_index is None else 200
        rows = await asyncio.to_thread(
            self.store.decisions, SearchFilters(), after=after, limit=limit
        )
        if self.last_index is None:
            # start from now: a page loads the recent history itself
            self.last_index = max((int(r["log_index"]) for r in rows), default=0)
            return
        for row in sorted(rows, key=lambda r: int(r["log_index"])):
            self.last_index = max(self.last_index, int(row["log_index"]))
            self._publish("decision", json.loads(json.dumps(row, default=str)))
