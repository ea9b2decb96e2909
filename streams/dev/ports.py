"""Free TCP ports on 127.0.0.1 for local services, chosen outside the ephemeral range.

A port found by binding to port 0 comes from the kernel's ephemeral range, the range it
also takes the source port of every outgoing connection from. Between choosing such a
port and the service binding it, a client connection (to Kafka, say) can take it, and the
service fails with "address already in use". Ports below that range are never handed out
that way.
"""

from __future__ import annotations

import contextlib
import random
import socket

__all__ = ["free_port", "free_ports", "ephemeral_range"]

HOST = "127.0.0.1"
LOWEST = 10_000
_ATTEMPTS = 2_000


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' source ports (Linux's default where
    it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(part) for part in f.read().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nobody listens on now, below the ephemeral range."""
    low, _ = ephemeral_range()
    if low - LOWEST < 100 * count:  # a range set unusually low: fall back on the kernel
        return _kernel_ports(count)
    chosen = random.SystemRandom()
    with contextlib.ExitStack() as held:  # held until all are found: they stay distinct
        ports: list[int] = []
        for _ in range(_ATTEMPTS):
            if len(ports) == count:
                break
            port = chosen.randrange(LOWEST, low)
            sock = socket.socket()
            try:
                sock.bind((HOST, port))
            except OSError:
                sock.close()
                continue
            held.enter_context(sock)
            ports.append(port)
        if len(ports) < count:
            raise OSError(f"no {count} free ports between {LOWEST} and {low} on {HOST}")
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def _kernel_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
