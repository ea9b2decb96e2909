"""HTTP endpoints listen on loopback unless configured otherwise, and then need a token."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from processors.exceptions import ConfigError
from streams.config import Settings
from streams.gate.app import _guard, _web_token
from streams.httpauth import BearerToken
from streams.notary.http import NotaryHTTPServer

TOKEN = "t" * 40


def test_the_worker_refuses_a_public_web_bind_without_a_token():
    with pytest.raises(ConfigError, match="other machines can reach") as refused:
        _web_token(Settings(web_bind="0.0.0.0"))  # noqa: S104 - the point of the test
    assert "TRUSTPLANE_WEB_TOKEN" in (refused.value.hint or "")
    assert _web_token(Settings()) is None  # loopback, the default: no token needed


class _Web:
    def json(self, body: Any, status: int = 200) -> tuple[int, Any]:
        return status, body


class _Request:
    def __init__(self, authorization: str | None) -> None:
        self.headers = {"Authorization": authorization} if authorization else {}


def test_every_worker_page_needs_the_configured_token():
    async def page(web: Any, request: Any) -> tuple[int, str]:
        return 200, "metrics"

    guarded = _guard(BearerToken.configured(TOKEN), page)
    assert asyncio.run(guarded(_Web(), _Request(None)))[0] == 401
    assert asyncio.run(guarded(_Web(), _Request("Bearer wrong-" + TOKEN)))[0] == 401
    assert asyncio.run(guarded(_Web(), _Request(f"Bearer {TOKEN}"))) == (200, "metrics")


def test_the_notary_refuses_a_public_bind_without_a_token():
    with pytest.raises(ConfigError, match="other machines can reach") as refused:
        NotaryHTTPServer(lambda: None, "vkey", "0.0.0.0", 0)  # noqa: S104 - the point
    assert "TRUSTPLANE_NOTARY_TOKEN" in (refused.value.hint or "")


def _get(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5):  # noqa: S310
            return 200
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            assert "bearer" in json.loads(exc.read())["error"].lower()
        return exc.code


def test_a_notary_with_a_token_answers_only_requests_that_carry_it():
    server = NotaryHTTPServer(
        lambda: None, "vkey", "127.0.0.1", 0, token=BearerToken.configured(TOKEN)
    ).start()
    try:
        assert _get(f"{server.url}/vkey") == 401
        assert _get(f"{server.url}/vkey", "x" * 40) == 401
        assert _get(f"{server.url}/vkey", TOKEN) == 200
        assert _get(f"{server.url}/healthz") != 401, "health checks need no token"
    finally:
        server.close()
