"""While the run goes: outcome arrivals as the collector stamps them, and the held intents
the suite answers (signed operator commands, retried while the broker is away)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence

from bench.chaos.model import Class, Planned
from streams.config import Settings
from streams.operator import OperatorClient

__all__ = ["Reviewer", "Arrivals", "CODES"]

Log = Callable[[str], None]
CODES = ("approved", "denied", "review", "rejected")


class Reviewer(threading.Thread):
    """Answers held intents as planned (``review.approve`` / ``review.deny``, signed by
    the local operator key), retrying while the broker is away."""

    def __init__(self, settings: Settings, log: Log) -> None:
        super().__init__(name="chaos-reviewer", daemon=True)
        self.settings = settings
        self.log = log
        self.queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self.answered: dict[str, str] = {}
        self.failures = 0

    def answer(self, intent_id: str, answer: str) -> None:
        self.queue.put((intent_id, answer))

    def close(self) -> None:
        self.queue.put(None)
        self.join(60)

    def run(self) -> None:
        operator = OperatorClient(self.settings)
        while (item := self.queue.get()) is not None:
            intent_id, answer = item
            try:
                operator.send(
                    f"review.{answer}",
                    {"intent_id": intent_id, "reason": f"chaos suite: {answer}"},
                    subject=f"review/{intent_id}",
                )
                self.answered[intent_id] = answer
            except Exception as exc:  # noqa: BLE001 - retried: the broker may be down
                self.failures += 1
                self.log(f"  review {answer} {intent_id} not sent ({exc}); retrying")
                time.sleep(1.0)
                self.queue.put(item)
                operator = OperatorClient(self.settings)


class Arrivals:
    """The collector's receipts: first arrival per intent, later ones (answers), counts."""

    def __init__(self, planned: Sequence[Planned]) -> None:
        self.first_ns: dict[str, int] = {}
        self.first_code: dict[str, int] = {}
        self.later: dict[str, int] = {}
        self.counts = [0, 0, 0, 0]
        self.rejections = 0
        self.answers = {p.subject: p.answer for p in planned if p.cls is Class.REVIEW}

    def absorb(self, receipts: Sequence[tuple[str, int, int]], reviewer: Reviewer) -> None:
        for intent_id, arrived, code in receipts:
            if code < 0:
                continue
            self.counts[code] += 1
            if not intent_id:
                self.rejections += 1
            elif intent_id not in self.first_ns:
                self.first_ns[intent_id] = arrived
                self.first_code[intent_id] = code
                answer = self.answers.get(intent_id)
                if code == 2 and answer is not None:
                    reviewer.answer(intent_id, answer)
            else:
                self.later[intent_id] = self.later.get(intent_id, 0) + 1

    def pending(self, planned: Sequence[Planned]) -> tuple[int, int]:
        """(subjects without an outcome, answered reviews without their answer's outcome)."""
        garbage = sum(1 for p in planned if p.cls is Class.GARBAGE)
        undecided = sum(
            1 for p in planned if p.cls is not Class.GARBAGE and p.subject not in self.first_ns
        )
        unanswered = sum(
            1
            for intent_id, answer in self.answers.items()
            if answer is not None
            and self.first_code.get(intent_id) == 2
            and not self.later.get(intent_id)
        )
        return undecided + max(0, garbage - self.rejections), unanswered

    def line(self) -> str:
        return " ".join(f"{name} {n}" for name, n in zip(CODES, self.counts, strict=True))
