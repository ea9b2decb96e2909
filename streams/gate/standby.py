"""One deciding process per worker id on a host; any other one stands by, warm.

A second ``trustplane worker`` with the same ``TRUSTPLANE_WORKER_ID`` and state folder (and
its own web port) starts as far as it can without touching the gate's consumer group or
transactions: it loads the policies and keys, connects, follows the ``control`` topic and
the agents' committed state on ``gate-state`` (every partition: which ones it will take
over is not known yet), and waits on the worker id's lock file. When the deciding
process ends, a crash included (the kernel releases a dead process's lock), the standby
takes the lock within :data:`POLL_S` and takes over: its transactional producer, under the same
``transactional.id``, fences the dead one and aborts its open transaction; its static
group membership, under the same ``group.instance.id``, takes back the same partitions
without waiting for a session timeout or a rebalance; and restoring their agents' state
reads only the records committed since it last followed (the dead process's last
batches), not the partitions' whole changelog.

The lock is for liveness only, never for safety: two processes with one worker id that
do not share the lock (other hosts, other state folders) are still kept apart by Kafka's
fencing; the older one is fenced and stops.
"""

from __future__ import annotations

from pathlib import Path

from processors.exceptions import TrustplaneError
from streams.filelock import POLL_S, FileLock

__all__ = ["POLL_S", "StandbyError", "WorkerLock"]


class StandbyError(TrustplaneError):
    """The worker id's lock file cannot be opened."""


class WorkerLock(FileLock):
    """The lock file ``<state dir>/gate-worker/<worker id>.lock``, holding the pid of the
    process that decides for the worker id."""

    def __init__(self, state_dir: Path, worker_id: str) -> None:
        path = state_dir / "gate-worker" / f"{worker_id}.lock"

        def error(exc: OSError) -> StandbyError:
            return StandbyError(
                f"cannot open the worker lock {path}: {exc.strerror}",
                hint="the worker's state folder (TRUSTPLANE_STATE_DIR) must be writable",
            )

        super().__init__(path, error)
