"""Waiting for the broker at start-up instead of exiting.

A worker, sink, notary or console started while Kafka is down (a host reboot, a rolling
restart, ``make run`` racing the broker) waits for it with capped exponential backoff and
says so on each attempt. Only an answer that cannot get better by waiting -- the broker
refusing this principal's credentials -- ends the wait, as a :class:`BrokerUnreachable`
with the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from processors.exceptions import TrustplaneError
from streams import kafka
from streams.config import Settings

__all__ = ["BrokerUnreachable", "wait_for_broker", "Backoff"]

log = logging.getLogger(__name__)

_FATAL = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}


class BrokerUnreachable(TrustplaneError):
    """The broker answered, but waiting will not make it accept this process."""


class Backoff:
    """Delays of 0.25 s doubling up to ``cap`` seconds."""

    def __init__(self, first: float = 0.25, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * float(2**self.attempt))
        self.attempt += 1
        return delay


def wait_for_broker(
    settings: Settings,
    service: str,
    *,
    stop: threading.Event | None = None,
    probe_timeout: float = 3.0,
    give_up_after: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Block until the broker answers a metadata request as this process's principal.

    Returns True once it answers, False if ``stop`` was set first. Raises
    :class:`BrokerUnreachable` if the broker refuses the credentials, or if
    ``give_up_after`` seconds (default: never) pass without an answer.
    """
    bootstrap = settings.resolved_bootstrap()
    backoff = Backoff()
    started = time.monotonic()
    refusals: list[KafkaError] = []  # a refused login shows only in the error callback
    on_error: Any = lambda e: refusals.append(e) if e.code() in _FATAL else None  # noqa: E731
    # each refused connection would be a librdkafka line too: the wait's own line says it
    admin = kafka.admin(settings, {"error_cb": on_error, "log_level": 0})
    while stop is None or not stop.is_set():
        try:
            admin.list_topics(timeout=probe_timeout)
        except KafkaException as exc:
            admin.poll(0)  # serves the error callback
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is not None and error.code() not in _FATAL and refusals:
                error = refusals[-1]
            if error is not None and error.code() in _FATAL:
                raise BrokerUnreachable(
                    f"the broker at {bootstrap} refused {service}'s principal "
                    f"{settings.resolved_kafka_principal()!r}: {error.str()}",
                    hint="check the principal and its password "
                    "(TRUSTPLANE_KAFKA_PRINCIPAL, TRUSTPLANE_KAFKA_CREDENTIALS_DIR); "
                    "`trustplane kafka provision` creates the role users",
                ) from exc
            waited = time.monotonic() - started
            if give_up_after is not None and waited >= give_up_after:
                raise BrokerUnreachable(
                    f"no answer from the broker at {bootstrap} for {waited:.0f} s: {exc}",
                    hint="is Kafka up? `trustplane kafka status`",
                ) from exc
            delay = backoff.next()
            log.warning(
                "%s: waiting for the Kafka broker at %s (attempt %d, %.0f s so far; "
                "next try in %.2f s): %s",
                service,
                bootstrap,
                backoff.attempt,
                waited,
                delay,
                exc,
            )
            if stop is not None:
                if stop.wait(delay):
                    return False
            else:
                sleep(delay)
            continue
        if backoff.attempt:  # as loud as the waiting lines before it
            log.warning(
                "%s: the Kafka broker at %s answers (after %.1f s)",
                service,
                bootstrap,
                time.monotonic() - started,
            )
        return True
    return False
