"""How long a kill switch takes to take effect, on a running pipeline.

    make run   # (leaves Kafka and a worker running)
    .venv/bin/python bench/bench_killswitch.py [--rounds 10]

Each round: engage an agent kill switch (the command is signed and acknowledged by
Kafka), at once publish an intent from that agent, and time until its denial is read;
then release the switch. "Takes effect" is the time from the engage command's
acknowledgement to the denial of the next intent; every intent published after the
acknowledgement must be denied (the worker reads all of `control` before each batch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.config import Settings  # noqa: E402
from streams.dev.estate import Estate  # noqa: E402
from streams.operator import OperatorClient  # noqa: E402
from streams.sdk.client import IntentPublisher, OutcomeReader  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    settings = Settings.load()
    estate = Estate(settings)
    target = {"scope": "agent", "target": "support-bot"}
    subject = "killswitch/agent/support-bot"
    took: list[float] = []
    with OperatorClient(settings) as operator, IntentPublisher(settings) as publisher:
        for n in range(args.rounds):
            with OutcomeReader(settings, from_beginning=False) as reader:
                operator.send("killswitch.engage", {**target, "reason": "drill"}, subject=subject)
                operator.flush()
                acked = time.perf_counter()
                intent = estate.intent("support-bot", "tickets.reply", f"ticket:drill-{n}")
                publisher.publish(intent)
                publisher.flush()
                outcome = None
                while outcome is None:
                    for received in reader.read(timeout=0.2):
                        if (
                            received.record
                            and received.record.get("intent_id") == intent["intent_id"]
                        ):
                            outcome = received
                            break
                took.append((time.perf_counter() - acked) * 1000)
                if outcome.topic != "denied":
                    raise SystemExit(f"round {n}: the intent was {outcome.topic}, not denied")
            operator.send("killswitch.release", target, subject=subject)
            operator.flush()
    print(
        f"kill switch: {args.rounds}/{args.rounds} next intents denied; engage-ack to denial "
        f"p50 {statistics.median(took):.1f} ms, max {max(took):.1f} ms"
    )


if __name__ == "__main__":
    main()
