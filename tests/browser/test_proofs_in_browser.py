"""The Proof Viewer's verifiers (static/proofs.js) in Chromium itself, on the known
answers: every RFC 9162 vector (tests/data/rfc9162-vectors) and Go's signed-note
example. The same checks run in Node in tests/streams/console/test_proofs.py; here the
browser's own WebCrypto does the SHA-256 and the Ed25519."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from streams.config import PROJECT_ROOT
from tests.streams.console.test_proofs import check_go_note, check_rfc9162_vectors

STATIC = PROJECT_ROOT / "streams" / "console" / "static"

# The Node driver's protocol, in the page: {"$b64"} arguments become bytes, {"$big"}
# BigInt, and the results come back the same way.
DRIVER = """
async (calls) => {
  const P = await import("/static/proofs.js");
  const toBytes = (t) => Uint8Array.from(atob(t), (c) => c.charCodeAt(0));
  const toB64 = (b) => btoa(Array.from(b, (x) => String.fromCharCode(x)).join(""));
  const revive = (v) =>
    Array.isArray(v) ? v.map(revive)
    : v && typeof v === "object"
      ? "$b64" in v ? toBytes(v.$b64)
      : "$big" in v ? BigInt(v.$big)
      : Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]))
    : v;
  const plain = (v) =>
    v instanceof Uint8Array ? { $b64: toB64(v) }
    : typeof v === "bigint" ? { $big: String(v) }
    : v instanceof Map ? plain(Object.fromEntries(v))
    : Array.isArray(v) ? v.map(plain)
    : v && typeof v === "object"
      ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]))
    : v;
  const out = [];
  for (const [fn, ...args] of calls) {
    try {
      out.push({ value: plain(await P[fn](...args.map(revive))) });
    } catch (error) {
      out.push({ threw: String((error && error.stack) || error) });
    }
  }
  return out;
}
"""


class _Static(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return None


@pytest.fixture(scope="module")
def page(browser: Any) -> Iterator[Any]:
    """A page on a loopback origin (a secure context: WebCrypto) serving the console's
    static files, and nothing else: no server takes part in the checks."""
    handler = functools.partial(_Static, directory=str(STATIC.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    context = browser.new_context()
    opened = context.new_page()
    opened.goto(f"http://127.0.0.1:{server.server_address[1]}/static/proofs.js")
    yield opened
    context.close()
    server.shutdown()
    server.server_close()


def _runner(page: Any) -> Any:
    def run(calls: list[list[Any]]) -> list[Any]:
        results = page.evaluate(DRIVER, calls)
        assert len(results) == len(calls)
        thrown = [r["threw"] for r in results if "threw" in r]
        assert not thrown, f"proofs.js threw in Chromium: {thrown[:3]}"
        return [r["value"] for r in results]

    return run


def test_every_rfc9162_vector_in_chromium(page: Any) -> None:
    check_rfc9162_vectors(_runner(page))


def test_go_signed_note_known_answer_in_chromium(page: Any) -> None:
    check_go_note(_runner(page))
