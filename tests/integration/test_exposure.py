"""What a worker exposes on the network: its web server listens on loopback unless told."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from streams.config import Settings
from tests.conftest import WorkerProcess


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket in LISTEN state on ``port`` (IPv4 and IPv6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(_address(address))
    return found


def _address(hex_address: str) -> str:
    if len(hex_address) == 8:  # IPv4, little-endian
        return ".".join(str(int(hex_address[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return "::" if set(hex_address) == {"0"} else hex_address


@pytest.mark.broker
def test_worker_web_server_listens_on_loopback_only(
    settings: Settings, worker_factory: Callable[[Settings], WorkerProcess]
) -> None:
    worker = worker_factory(settings).start()
    assert worker.health() is not None  # it is serving
    assert listening_addresses(settings.web_port) == {"127.0.0.1"}
