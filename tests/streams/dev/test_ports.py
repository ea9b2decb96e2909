"""Free ports for local services come from below the kernel's ephemeral range."""

from __future__ import annotations

import socket

import pytest

from streams.dev import ports
from streams.dev.ports import LOWEST, ephemeral_range, free_ports


def test_ports_are_distinct_bindable_and_outside_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    assert 0 < low <= high
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(LOWEST <= port < low for port in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
            sock.listen()


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    taken, spare = free_ports(2)
    draws = iter([taken, taken, spare])

    class Draws:
        def randrange(self, start: int, stop: int) -> int:
            return next(draws)

    monkeypatch.setattr(ports.random, "SystemRandom", Draws)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", taken))
        busy.listen()
        assert free_ports(1) == [spare]
