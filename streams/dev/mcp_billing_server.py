"""A tiny billing MCP tool server (stdio), to put behind ``trustplane mcp-proxy``.

Tools: ``read_invoice(invoice_id)``, ``pay_invoice(account, amount, currency,
invoice_id)`` and ``delete_all_invoices()`` -- the last one has no table in
``policies/tools/billing.toml``, so the proxy denies it. Nothing real happens: each call
that actually runs is appended as one JSON line to the file ``BILLING_SERVER_LOG`` names
(if set), so a test can tell what ran and how often::

    python -m streams.dev.mcp_billing_server
    trustplane mcp-proxy --mapping policies/tools/billing.toml --agent billing-agent \\
        -- python -m streams.dev.mcp_billing_server
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from mcp.server import MCPServer

__all__ = ["LOG_ENV", "build_server", "main"]

LOG_ENV = "BILLING_SERVER_LOG"

_INVOICES = {
    "INV-7": {"account": "ACME-42", "amount": "1250.00", "currency": "EUR"},
    "INV-8": {"account": "GLOBEX-7", "amount": "75000.00", "currency": "EUR"},
}


def _record(log: Path | None, tool: str, arguments: dict[str, Any]) -> None:
    if log is None:
        return
    line = json.dumps({"tool": tool, "arguments": arguments, "pid": os.getpid(), "at": time.time()})
    with log.open("a", encoding="utf-8") as out:
        out.write(line + "\n")


def build_server(log: Path | str | None = None) -> MCPServer:
    """The billing server; ``log`` (default: ``$BILLING_SERVER_LOG``) records executions."""
    where = log if log is not None else os.environ.get(LOG_ENV)
    path = Path(where) if where else None
    server = MCPServer("billing", instructions="Read and pay invoices (a demo, nothing is real).")

    @server.tool()
    def read_invoice(invoice_id: str) -> dict[str, str]:
        """Read one invoice: its account, amount, currency and status."""
        _record(path, "read_invoice", {"invoice_id": invoice_id})
        found = _INVOICES.get(invoice_id, _INVOICES["INV-7"])
        return {"invoice_id": invoice_id, **found, "status": "open"}

    @server.tool()
    def pay_invoice(account: str, amount: float, currency: str, invoice_id: str) -> str:
        """Pay an invoice: transfer ``amount`` ``currency`` to ``account``."""
        _record(
            path,
            "pay_invoice",
            {"account": account, "amount": amount, "currency": currency, "invoice_id": invoice_id},
        )
        confirmation = f"PAY-{uuid.uuid4().hex[:10].upper()}"
        return f"paid {amount:.2f} {currency} to {account} for {invoice_id} ({confirmation})"

    @server.tool()
    def refund_invoice(account: str, amount: float, currency: str, invoice_id: str) -> str:
        """Refund an invoice: transfer ``amount`` ``currency`` back to ``account``."""
        _record(
            path,
            "refund_invoice",
            {"account": account, "amount": amount, "currency": currency, "invoice_id": invoice_id},
        )
        return f"refunded {amount:.2f} {currency} to {account} for {invoice_id}"

    @server.tool()
    def delete_all_invoices() -> str:
        """Delete every invoice (irreversible)."""
        _record(path, "delete_all_invoices", {})
        return f"deleted {len(_INVOICES)} invoices"

    return server


def main() -> None:
    build_server().run("stdio")


if __name__ == "__main__":
    main()
