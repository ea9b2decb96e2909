"""The guard: put one tool call behind the gate, and run it only on a verified approval.

::

    guard = Guard(ClientConfig.load(), AgentIdentity("billing-agent", key, runtime),
                  load_mapping("policies/tools/billing.toml"), Path("approvals.jwks.json"))
    result = guard.run("read_invoice", {"invoice_id": "INV-7"}, lambda: read_invoice("INV-7"))

For each call the guard

1. maps the tool call to an intent (:mod:`streams.sdk.guard.mapping`; no mapping: denied);
2. signs it with the agent's key (its next durable sequence number) and publishes it;
3. waits, up to ``deadline_s``, for the gate's first answer about those exact bytes;
4. on ``approved``: verifies the record as an executor does (DSSE signature against the
   gate's JWKS, statement, expiry, the record's fields and key), then that it approves
   *this* intent (its digest, id and parameters), then claims it in the durable
   single-use store; only then runs the tool, and reports an Outcome (EXECUTED with the
   result's digest, or FAILED with the error);
5. on ``denied`` / ``rejected``: raises :class:`Denied` with the gate's reasons;
   on ``review``: waits up to ``review_wait_s`` for the reviewer, else raises
   :class:`NeedsReview` (the adapters turn it into their framework's "needs approval";
   :meth:`Guard.await_review` picks the answer up later);
6. on no answer in time, a broker it cannot reach, or anything that does not verify:
   raises :class:`Unavailable` or :class:`Unverified`.

The tool runs on no other path. The guard is the executor of its own calls: run no
general executor group for the same actions, or the approval would be carried out twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from processors.approval.exceptions import ApprovalVerificationError
from processors.approval.seen import SqliteSeenStore
from processors.approval.verify import VerifiedApproval, claim_once
from processors.crypto.jcs import CanonicalizationError, canonical_json
from processors.crypto.keys import Keyset, SigningKey
from processors.exceptions import ConfigError
from streams.codec import Codec, default_codec
from streams.sdk.client import IntentPublisher, new_intent
from streams.sdk.config import Endpoint
from streams.sdk.executor import OutcomeReporter, verify_approval_record
from streams.sdk.guard.errors import Blocked, Denied, NeedsReview, Unavailable, Unverified
from streams.sdk.guard.mapping import MappedCall, ToolMapping, ToolRule
from streams.sdk.guard.sequence import SequenceStore
from streams.sdk.guard.waiter import Answer, OutcomeWaiter, WaiterError
from streams.sdk.publish import PublishError

__all__ = ["AgentIdentity", "Authorization", "Guard"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class AgentIdentity:
    """Who calls the tools: a registered agent, its Ed25519 key and its runtime."""

    agent_id: str
    key: SigningKey
    runtime: Mapping[str, str] | None = None
    """The runtime attestation registered for the agent (``runtime_id``, ``code_digest``,
    ``config_digest``, ``environment``, ``host``)."""


@dataclass(frozen=True)
class Authorization:
    """A verified, claimed approval of one tool call: run the call once, then report."""

    tool: str
    intent_id: str
    call: MappedCall
    approval: VerifiedApproval


@dataclass
class _Held:
    tool: str
    intent: dict[str, Any]
    value: bytes
    digest: str
    call: MappedCall
    seen_answers: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Guard:
    def __init__(
        self,
        config: Endpoint,
        agent: AgentIdentity,
        mapping: ToolMapping,
        gate_keys: Keyset | Path,
        *,
        state_dir: Path | str,
        deadline_s: float = 10.0,
        review_wait_s: float = 0.0,
        intent_ttl_s: float = 120.0,
        executor_id: str | None = None,
        codec: Codec | None = None,
    ) -> None:
        if deadline_s <= 0 or review_wait_s < 0:
            raise ConfigError("deadline_s must be > 0 and review_wait_s >= 0")
        self.agent = agent
        self.mapping = mapping
        self.deadline_s = deadline_s
        self.review_wait_s = review_wait_s
        self.intent_ttl_s = intent_ttl_s
        self.executor_id = executor_id or f"guard:{agent.agent_id}@{socket.gethostname()}"
        self.codec = codec or default_codec()
        self._keys_path = gate_keys if isinstance(gate_keys, Path) else None
        self._keys_mtime = 0.0
        self._keys = gate_keys if isinstance(gate_keys, Keyset) else self._load_keys()
        state = Path(state_dir)
        self.seen = SqliteSeenStore(state / "seen.db")
        self.sequences = SequenceStore(state / "sequence.db")
        self.waiter = OutcomeWaiter(config, agent.agent_id, codec=self.codec)
        # a call fails within its deadline when the broker is unreachable
        self.publisher = IntentPublisher(
            config,
            self.codec,
            producer_settings={
                "linger.ms": 0,
                "message.timeout.ms": max(1000, int(deadline_s * 1000)),
            },
        )
        self.reporter = OutcomeReporter(config, codec=self.codec)
        self._held: dict[str, _Held] = {}
        self._ordered = threading.Lock()

    # -- the call ----------------------------------------------------------------------

    def run(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        call: Callable[[], T],
        *,
        rule: ToolRule | None = None,
    ) -> T:
        """Authorize the call, run ``call`` once on a verified approval, report, return."""
        return self.execute(self.authorize(tool, arguments, rule=rule), call)

    async def arun(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        call: Callable[[], Awaitable[T]],
        *,
        rule: ToolRule | None = None,
    ) -> T:
        """:meth:`run` for a coroutine: the waiting happens off the event loop."""
        return await self.aexecute(await self.aauthorize(tool, arguments, rule=rule), call)

    async def aexecute(self, auth: Authorization, call: Callable[[], Awaitable[T]]) -> T:
        """:meth:`execute` for a coroutine."""
        try:
            result = await call()
        except BaseException as exc:
            await asyncio.to_thread(self.report_failure, auth, exc)
            raise
        await asyncio.to_thread(self.report_success, auth, result)
        return result

    def execute(self, auth: Authorization, call: Callable[[], T]) -> T:
        """Run ``call`` for an authorization (once) and report its outcome."""
        try:
            result = call()
        except BaseException as exc:
            self.report_failure(auth, exc)
            raise
        self.report_success(auth, result)
        return result

    async def aauthorize(
        self, tool: str, arguments: Mapping[str, Any], *, rule: ToolRule | None = None
    ) -> Authorization:
        """:meth:`authorize` off the event loop."""
        return await asyncio.to_thread(self.authorize, tool, arguments, rule=rule)

    def authorize(
        self, tool: str, arguments: Mapping[str, Any], *, rule: ToolRule | None = None
    ) -> Authorization:
        """Publish the call's intent and return its verified, claimed approval, or raise
        a :class:`Blocked` subclass: then the tool must not run. ``rule`` maps this call
        instead of the toolset's mapping (the decorator's ``action``/``resource``)."""
        call = self.mapping.map(tool, arguments, rule)
        # concurrent calls (parallel tool calls) are numbered and queued in one order: the
        # gate reads a lower sequence after a higher one as a replay
        with self._ordered:
            intent = new_intent(
                self.agent.agent_id,
                call.action,
                call.resource,
                sequence=self.sequences.next(self.agent.agent_id),
                parameters=call.parameters,
                context=call.context,
                runtime=self.agent.runtime,
                ttl_s=self.intent_ttl_s,
                key_id=self.agent.key.kid,
                sign_with=self.agent.key,
            )
            value = self.codec.encode("Intent", intent)
            digest = "sha256:" + hashlib.sha256(value).hexdigest()
            self.waiter.expect(digest)
            queued = self._queue(value)
        held = _Held(tool, intent, value, digest, call, 0)
        keep = False
        try:
            try:
                if queued is not None:
                    raise queued
                self.publisher.flush(self.deadline_s)
            except PublishError as exc:
                raise Unavailable(
                    f"the intent could not be published: {exc.reason}",
                    tool=tool,
                    intent_id=str(intent["intent_id"]),
                    hint="is the broker reachable, and may this principal write intents?",
                ) from exc
            try:
                return self._answer(held, self.deadline_s, self.review_wait_s)
            except NeedsReview:
                keep = True
                self._held[str(intent["intent_id"])] = held
                raise
        finally:
            if not keep:
                self.waiter.forget(digest)

    def _queue(self, value: bytes) -> PublishError | None:
        try:
            self.publisher.publish_raw(self.agent.agent_id.encode(), value)
        except PublishError as exc:
            return exc
        return None

    def await_review(self, intent_id: str, timeout_s: float) -> Authorization:
        """After :class:`NeedsReview`: wait for the reviewer's answer to that intent."""
        held = self._held.get(intent_id)
        if held is None:
            raise Unverified(
                f"intent {intent_id} is not held for review by this guard",
                tool="?",
                intent_id=intent_id,
            )
        try:
            auth = self._answer(held, timeout_s, timeout_s, reviewing=True)
        except NeedsReview:
            raise
        except Blocked:
            self._forget_held(intent_id)
            raise
        self._forget_held(intent_id)
        return auth

    def forget_review(self, intent_id: str) -> None:
        """Stop waiting for the review of a held intent (an abandoned interrupt): a later
        approval of it is then ignored, and the call never runs."""
        self._forget_held(intent_id)

    def _forget_held(self, intent_id: str) -> None:
        held = self._held.pop(intent_id, None)
        if held is not None:
            self.waiter.forget(held.digest)

    # -- answers -----------------------------------------------------------------------

    def _answer(
        self, held: _Held, deadline_s: float, review_wait_s: float, *, reviewing: bool = False
    ) -> Authorization:
        intent_id = str(held.intent["intent_id"])
        wait_s = deadline_s
        while True:
            try:
                answer = self.waiter.wait(held.digest, wait_s, after=held.seen_answers)
            except WaiterError as exc:
                raise Unavailable(exc.reason, tool=held.tool, intent_id=intent_id) from exc
            if answer is None:
                if reviewing:
                    raise NeedsReview(
                        f"no reviewer answered within {wait_s:g} s",
                        tool=held.tool,
                        intent_id=intent_id,
                        hint=f"trustplane review approve {intent_id}",
                    )
                raise Unavailable(
                    f"no decision within {wait_s:g} s",
                    tool=held.tool,
                    intent_id=intent_id,
                    hint="is a gate worker running (`trustplane worker`)?",
                )
            held.seen_answers += 1
            if answer.record is None:
                raise self._unverified(held, f"an undecodable answer on {answer.topic}")
            if answer.topic == "approved":
                return self._verified(held, answer)
            if answer.topic == "review" and not reviewing and review_wait_s <= 0:
                raise NeedsReview(
                    "held for review: " + "; ".join(_reasons(answer.record)),
                    tool=held.tool,
                    reasons=_reasons(answer.record),
                    intent_id=intent_id,
                    hint=f"an operator answers with `trustplane review approve {intent_id}`",
                )
            if answer.topic == "review":
                reviewing, wait_s = True, review_wait_s or deadline_s
                continue
            reasons = _reasons(answer.record)
            raise Denied(
                f"{answer.topic}: " + "; ".join(reasons),
                tool=held.tool,
                reasons=reasons,
                intent_id=intent_id,
            )

    def _verified(self, held: _Held, answer: Answer) -> Authorization:
        intent_id = str(held.intent["intent_id"])
        try:
            approval = verify_approval_record(
                answer.key, answer.value, self._current_keys(), _now_ms(), codec=self.codec
            )
            if approval.intent_digest != held.digest or approval.intent_id != intent_id:
                raise Unverified(
                    f"the approval {approval.approval_id} is for intent {approval.intent_id} "
                    f"({approval.intent_digest}), not for this call's intent {intent_id}",
                    tool=held.tool,
                    intent_id=intent_id,
                )
            approval.check_parameters(held.intent["parameters"])
            claim_once(self.seen, approval)
        except ApprovalVerificationError as exc:
            raise self._unverified(held, exc.reason) from exc
        return Authorization(held.tool, intent_id, held.call, approval)

    def _unverified(self, held: _Held, why: str) -> Unverified:
        intent_id = str(held.intent["intent_id"])
        log.error("guard: refusing an answer for %s (%s): %s", held.tool, intent_id, why)
        return Unverified(
            f"an answer that does not verify: {why}",
            tool=held.tool,
            intent_id=intent_id,
            hint="only the gate may write the decision topics; check the broker's ACLs",
        )

    def verify(
        self, tool: str, intent: Mapping[str, Any], value: bytes, answer: Answer
    ) -> Authorization:
        """Verify an ``approved`` record against an intent (its record and its bytes), as
        :meth:`authorize` does when the answer arrives, including the single-use claim:
        an approval delivered again is refused (:class:`Unverified`)."""
        digest = "sha256:" + hashlib.sha256(value).hexdigest()
        call = MappedCall(
            tool,
            str(intent["action"]),
            str(intent["resource"]),
            dict(intent["parameters"]),
            dict(intent["context"]),
        )
        return self._verified(_Held(tool, dict(intent), value, digest, call, 0), answer)

    # -- keys --------------------------------------------------------------------------

    def _load_keys(self) -> Keyset:
        if self._keys_path is None:
            return self._keys
        try:
            self._keys_mtime = self._keys_path.stat().st_mtime
            return Keyset.from_file(self._keys_path)
        except OSError as exc:
            raise ConfigError(
                f"cannot read the gate's public keys {self._keys_path}: {exc}",
                hint="`trustplane keys jwks` writes them (approvals.jwks.json)",
            ) from exc

    def _current_keys(self) -> Keyset:
        """The JWKS, read again when its file changed (a gate key rotation)."""
        if self._keys_path is not None:
            try:
                changed = self._keys_path.stat().st_mtime != self._keys_mtime
            except OSError:
                changed = False
            if changed:
                self._keys = self._load_keys()
        return self._keys

    # -- outcomes ----------------------------------------------------------------------

    def report_success(self, auth: Authorization, result: Any) -> None:
        self._report(auth, "EXECUTED", f"result {_result_digest(result)}")

    def report_failure(self, auth: Authorization, exc: BaseException) -> None:
        self._report(auth, "FAILED", f"{type(exc).__name__}: {str(exc)[:300]}")

    def _report(self, auth: Authorization, status: Any, detail: str) -> None:
        """Queue the Outcome (delivered in the background; :meth:`close` waits for it):
        the tool's result is not held back by the report."""
        try:
            self.reporter.report(auth.approval, status, detail, self.executor_id)
        except PublishError as exc:
            # the tool ran (or failed) already: say so loudly, do not pretend it did not
            log.error(
                "guard: the outcome of approval %s (%s) was not queued: %s",
                auth.approval.approval_id,
                status,
                exc.reason,
            )

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        try:
            self.reporter.flush(self.deadline_s)
        except PublishError as exc:
            log.error("guard: outcomes not delivered at close: %s", exc.reason)
        self.waiter.close()
        self.sequences.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reasons(record: Mapping[str, Any]) -> tuple[str, ...]:
    reasons = record.get("reasons")
    if isinstance(reasons, list) and reasons:
        return tuple(str(r) for r in reasons)
    reason = record.get("reason")
    code = record.get("reason_code")
    if isinstance(reason, str):
        return (f"{code}: {reason}" if code else reason,)
    return ("no reason given",)


def _result_digest(result: Any) -> str:
    try:
        data = canonical_json(result)
    except (CanonicalizationError, TypeError, ValueError):
        data = repr(result).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()
