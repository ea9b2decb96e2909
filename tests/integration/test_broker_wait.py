"""A service started while the broker is unreachable waits for it, says so, and starts
when it appears; it never exits for it.

The broker "appears" when a forwarder starts listening on the bootstrap address the
service was given and relays to the session's broker (the broker's metadata then sends
the client to the broker's own address, as a load balancer in front of a cluster does).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from streams.brokerwait import BrokerUnreachable, wait_for_broker
from tests.conftest import free_port

pytestmark = pytest.mark.broker


class Forwarder:
    """Relays every connection to ``127.0.0.1:<listen>`` to ``target`` (host:port)."""

    def __init__(self, listen: int, target: str) -> None:
        host, port = target.split(",")[0].rsplit(":", 1)
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", listen))
        self.server.settimeout(0.2)
        self.stopped = threading.Event()
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target)
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(2)
        self.server.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def unreachable(settings) -> Iterator[tuple[int, list[Forwarder]]]:
    port = free_port()
    forwarders: list[Forwarder] = []
    yield port, forwarders
    for forwarder in forwarders:
        forwarder.close()


def test_the_wait_ends_when_the_broker_answers(settings, unreachable):
    port, forwarders = unreachable
    away = dataclasses.replace(settings, bootstrap_servers=f"127.0.0.1:{port}")
    threading.Timer(
        2.0, lambda: forwarders.append(Forwarder(port, settings.bootstrap_servers))
    ).start()
    started = time.monotonic()
    assert wait_for_broker(away, "test", probe_timeout=0.5)
    assert time.monotonic() - started >= 1.5


def test_the_wait_stops_on_request_and_can_give_up(settings, unreachable):
    port, _ = unreachable
    away = dataclasses.replace(settings, bootstrap_servers=f"127.0.0.1:{port}")
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    assert wait_for_broker(away, "test", stop=stop, probe_timeout=0.3) is False
    with pytest.raises(BrokerUnreachable, match="no answer from the broker"):
        wait_for_broker(away, "test", probe_timeout=0.3, give_up_after=1.0)


def test_wrong_credentials_end_the_wait_with_the_reason(settings, tmp_path):
    (tmp_path / "gate").write_text("not-the-password\n")
    wrong = dataclasses.replace(settings, kafka_principal="gate", kafka_credentials_dir=tmp_path)
    with pytest.raises(BrokerUnreachable, match="refused worker's principal 'gate'"):
        wait_for_broker(wrong, "worker", probe_timeout=2.0, give_up_after=30)


def test_a_worker_started_before_the_broker_waits_then_decides(
    settings, unreachable, worker_factory
):
    port, forwarders = unreachable
    away = dataclasses.replace(settings, bootstrap_servers=f"127.0.0.1:{port}")
    worker = worker_factory(away).start(wait_ready=False)
    deadline = time.monotonic() + 60
    while "attempt 3," not in worker.log(200_000) and time.monotonic() < deadline:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
        time.sleep(0.5)
    assert "worker: waiting for the Kafka broker" in worker.log(200_000)
    forwarders.append(Forwarder(port, settings.bootstrap_servers))
    worker.wait_ready(timeout=90)
    assert "worker: the Kafka broker at" in worker.log(200_000)
