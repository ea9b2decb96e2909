"""``trustplane proof``, ``trustplane checkpoint`` and ``trustplane notary``.

The proof commands ask the notary's endpoint (``streams/notary/``) for an event, a
proof and a signed checkpoint, then verify everything **here**, with a verifier key the
user trusts (``<keys_dir>/notary.vkey`` or ``--vkey``), never one the server sends:

1. the checkpoint is a C2SP signed note by that key, for that log (origin);
2. the event is the one asked for, and intact: its ``event_hash`` matches its content;
3. the event's ``log_index`` is the leaf index the proof is about, and the proof is
   for the checkpoint's tree size;
4. RFC 9162 inclusion: the proof leads from the event's leaf hash to the signed root
   (or, for ``--consistency``, the proof leads from one signed root to the other).

The last checkpoint verified from each log is kept in
``<state_dir>/notary-client/<key id>.checkpoint``. Every later checkpoint must be
consistent with it (RFC 9162 consistency proof, either way round), so a notary that
rewrites or forks its log is caught the next time anyone looks. ``--no-remember``
skips that.

Exit status: 0 verified; 1 verification failed (the answer is not what the log
signed, or the log was rewritten); 2 the notary could not be asked (``trustplane``,
``streams/cli/main.py``, prints the TrustplaneError).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from processors.exceptions import TrustplaneError
from processors.log.attest import LineageSignatureError
from processors.log.chain import ChainError
from processors.log.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteError,
    NoteVerifier,
    verify_checkpoint,
)
from processors.log.merkle import ProofError
from processors.log.notary import (
    ConsistencyProof,
    InclusionProof,
    verify_checkpoint_consistency,
    verify_event_against_checkpoint,
)
from streams.cli import context
from streams.config import Settings
from streams.gatekeys import GateKeys, gate_jwks_path
from streams.httpauth import bearer_header

__all__ = [
    "proof_app",
    "notary_command",
    "ProofClientError",
    "VerificationFailed",
    "NotaryClient",
    "VerifiedEvent",
    "CheckpointMemory",
    "load_verifier",
    "verify_inclusion_answer",
    "verify_consistency_answer",
]

VERIFICATION_ERRORS = (ChainError, ProofError, NoteError, CheckpointError, LineageSignatureError)
"""What a wrong answer raises; anything else is the notary not answering."""

out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)

proof_app = typer.Typer(help="Prove lineage events against the notary's signed checkpoints.")


class ProofClientError(TrustplaneError):
    """The notary could not be asked, or there is no verifier key to check its answer."""


class VerificationFailed(ProofError):
    """The notary's answer is not about what was asked (another event, index or size)."""


# -- settings and keys ----------------------------------------------------------


def load_verifier(vkey: str | None, settings: Settings) -> NoteVerifier:
    """The notary's verifier key: ``vkey`` (key text, or a file holding it), else
    ``<keys_dir>/notary.vkey``. Never fetched from the notary being checked."""
    from streams.notary import notary_vkey_path

    if vkey and "+" in vkey and not Path(vkey).exists():
        text, source = vkey, "--vkey"
    else:
        path = Path(vkey) if vkey else notary_vkey_path(settings)
        try:
            text, source = path.read_text().strip(), str(path)
        except FileNotFoundError as exc:
            raise ProofClientError(
                f"no notary verifier key at {path}",
                hint="copy notary.vkey from the notary host (it writes <keys_dir>/notary.vkey), "
                "or pass --vkey '<name>+<id>+<key>'; do not fetch it from the notary you are "
                "checking",
            ) from exc
        except OSError as exc:
            raise ProofClientError(f"cannot read the verifier key {path}: {exc}") from exc
    try:
        return NoteVerifier.from_vkey(text)
    except NoteError as exc:
        raise ProofClientError(f"{source} is not a verifier key: {exc.reason}") from exc


# -- talking to the notary ------------------------------------------------------


@dataclass(frozen=True)
class NotaryClient:
    """GETs from a notary endpoint. Answers are data to verify, never verdicts."""

    url: str
    timeout: float = 10.0
    wait: float = 0.0
    """Seconds to keep retrying while the notary answers 503 (not checkpointed yet)."""
    token: str | None = field(default=None, repr=False)
    """Bearer token, for a notary that requires one (``notary_token``)."""

    def get(self, path: str, params: Mapping[str, object] | None = None) -> bytes:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        target = f"{self.url.rstrip('/')}{path}{query}"
        if not target.startswith(("http://", "https://")):
            raise ProofClientError(f"notary URL {self.url!r} is not http(s)")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                request = urllib.request.Request(target, headers=bearer_header(self.token))  # noqa: S310 - http(s) checked above
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) checked above
                    return bytes(response.read())
            except urllib.error.HTTPError as exc:
                body = exc.read()
                if exc.code == 503 and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                reason, hint = _error_text(body, exc.code)
                raise ProofClientError(
                    f"the notary answered {exc.code}: {reason}", hint=hint
                ) from exc
            except (urllib.error.URLError, OSError) as exc:
                raise ProofClientError(
                    f"cannot reach the notary at {self.url}: {getattr(exc, 'reason', exc)}",
                    hint="is it running? `trustplane notary`; or pass --url",
                ) from exc

    def get_json(self, path: str, params: Mapping[str, object] | None = None) -> dict[str, Any]:
        body = self.get(path, params)
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise ProofError(f"the notary's answer to {path} is not JSON") from exc
        if not isinstance(value, dict):
            raise ProofError(f"the notary's answer to {path} is not a JSON object")
        return value

    def checkpoint(self) -> str:
        try:
            return self.get("/checkpoint").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("the notary's checkpoint is not UTF-8") from exc

    def inclusion(self, *, event_id: str | None = None, index: int | None = None) -> dict[str, Any]:
        params = {"event_id": event_id} if event_id is not None else {"index": index}
        return self.get_json("/proof/inclusion", params)

    def consistency(self, old: int, new: int) -> dict[str, Any]:
        return self.get_json("/proof/consistency", {"old": old, "new": new})


def _error_text(body: bytes, status: int) -> tuple[str, str | None]:
    try:
        data = json.loads(body)
        return str(data.get("error") or f"HTTP {status}"), data.get("hint")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace") or f"HTTP {status}", None


# -- verification (independent of the server's claims) ----------------------------


@dataclass(frozen=True)
class VerifiedEvent:
    event: dict[str, Any]
    index: int
    checkpoint: Checkpoint
    note: str


def _field(answer: Mapping[str, Any], name: str, kind: type) -> Any:
    value = answer.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProofError(f"the notary's answer has no valid {name!r}")
    return value


def verify_inclusion_answer(
    answer: Mapping[str, Any],
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    event_id: str | None = None,
    index: int | None = None,
) -> VerifiedEvent:
    """Return the event if the answer proves it is in the log that ``verifier`` signs;
    raise a TrustplaneError (ChainError, ProofError, NoteError, CheckpointError) if not.

    (0) the answer is about what was asked (``event_id`` / ``index``); (1) the
    checkpoint is signed by ``verifier`` for ``origin`` (default: the key's name); (2)
    the event is intact; (3) its ``log_index`` is the proven leaf index, the proof is
    for the checkpoint's size; (4) RFC 9162 §2.1.3.2 inclusion in the signed root.
    """
    event = _field(answer, "event", dict)
    claimed = _field(answer, "index", int)
    note = _field(answer, "checkpoint", str)
    proof = InclusionProof.from_json(_field(answer, "proof", dict))
    # (0) The answer is about the event asked for.
    if event_id is not None and event.get("event_id") != event_id:
        raise VerificationFailed(
            f"asked for event {event_id} but the notary returned event {event.get('event_id')!r}"
        )
    if index is not None and claimed != index:
        raise VerificationFailed(f"asked for log index {index} but got index {claimed}")
    # (3, first half) The event's own index is the proven one.
    if event.get("log_index") != claimed:
        raise VerificationFailed(
            f"the event's log_index is {event.get('log_index')!r} but the proof is for "
            f"index {claimed}"
        )
    # (1), (2), (3), (4): processors.log.notary.verify_event_against_checkpoint.
    checkpoint = verify_event_against_checkpoint(
        event, claimed, proof, note, verifier, origin=origin or verifier.name
    )
    return VerifiedEvent(event, claimed, checkpoint, note)


def verify_consistency_answer(
    answer: Mapping[str, Any],
    verifier: NoteVerifier,
    *,
    old_note: str | None = None,
    new_note: str | None = None,
    origin: str | None = None,
) -> tuple[Checkpoint, Checkpoint]:
    """Return (old, new) checkpoints if the answer's proof shows the log of the new one
    extends the old one. ``old_note`` / ``new_note`` are checkpoints the caller already
    holds (used instead of the server's copies)."""
    old_note = old_note or answer.get("old_checkpoint")
    new_note = new_note or answer.get("new_checkpoint")
    if not isinstance(old_note, str) or not isinstance(new_note, str):
        raise ProofClientError(
            "the notary does not hold a checkpoint of one of these sizes",
            hint="ask for sizes of checkpoints it signed (`trustplane checkpoint` shows the "
            "latest)",
        )
    proof = ConsistencyProof.from_json(_field(answer, "proof", dict))
    return verify_checkpoint_consistency(
        old_note, new_note, proof, verifier, origin=origin or verifier.name
    )


class CheckpointMemory:
    """The largest checkpoint verified so far from one log (one verifier key)."""

    def __init__(self, directory: Path, verifier: NoteVerifier) -> None:
        self.verifier = verifier
        self.path = directory / f"{verifier.key_id_hex}.checkpoint"

    def load(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ProofClientError(f"cannot read {self.path}: {exc}") from exc

    def save(self, note: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(note, encoding="utf-8")
        os.replace(tmp, self.path)

    def check(self, client: NotaryClient, note: str, checkpoint: Checkpoint, *, origin: str) -> str:
        """Verify ``note`` (already verified on its own) is consistent with the remembered
        checkpoint, remember the larger one; return a line saying what was checked."""
        remembered = self.load()
        if remembered is None:
            self.save(note)
            return f"first checkpoint seen from this log; remembered in {self.path}"
        try:
            old = verify_checkpoint(remembered, self.verifier, origin=origin)
        except (NoteError, CheckpointError) as exc:
            raise CheckpointError(
                f"the remembered checkpoint {self.path} does not verify: {exc.reason}",
                hint=f"delete {self.path} if the log's key or origin changed on purpose",
            ) from exc
        if old.size == checkpoint.size:
            if old.root_hash != checkpoint.root_hash:
                raise ProofError(
                    f"two signed checkpoints of size {old.size} with different roots: the log "
                    "was forked or rewritten"
                )
            return f"same as the checkpoint remembered (size {old.size})"
        if checkpoint.size > old.size:
            answer = client.consistency(old.size, checkpoint.size)
            verify_consistency_answer(answer, self.verifier, old_note=remembered, new_note=note)
            self.save(note)
            return f"consistent with the checkpoint remembered (size {old.size})"
        # An older checkpoint than one seen before: fine if it is a prefix of it (another
        # command saw a newer one meanwhile); the notary must still prove it.
        try:
            answer = client.consistency(checkpoint.size, old.size)
        except ProofClientError as exc:
            raise VerificationFailed(
                f"the notary serves a checkpoint of size {checkpoint.size} but signed one of "
                f"size {old.size} before, and cannot prove the two consistent ({exc.reason}): "
                "the log was rolled back or rewritten",
                hint=f"if this log was reset on purpose, delete {self.path}",
            ) from exc
        verify_consistency_answer(answer, self.verifier, old_note=note, new_note=remembered)
        return f"a prefix of the checkpoint remembered (size {old.size})"


# -- commands -------------------------------------------------------------------


def _client(url: str | None, settings: Settings, wait: float) -> NotaryClient:
    from streams.notary import notary_port

    token = str(getattr(settings, "notary_token", None) or "") or None
    return NotaryClient(url or f"http://127.0.0.1:{notary_port(settings)}", wait=wait, token=token)


def _memory(settings: Settings, verifier: NoteVerifier) -> CheckpointMemory:
    return CheckpointMemory(settings.state_dir / "notary-client", verifier)


def _show_checkpoint(checkpoint: Checkpoint) -> None:
    import base64

    out.print(
        f"checkpoint  {checkpoint.origin}  size {checkpoint.size}  root "
        f"{base64.b64encode(checkpoint.root_hash).decode()}",
        highlight=False,
    )


def _failed(exc: TrustplaneError) -> typer.Exit:
    out.print(f"[bold red]verification FAILED[/] {exc.diagnostics()}", highlight=False)
    return typer.Exit(1)


UrlOption = Annotated[
    str | None,
    typer.Option(help="Notary endpoint (default http://127.0.0.1:<notary_port, 6067>)."),
]
VkeyOption = Annotated[
    str | None,
    typer.Option(help="Verifier key text, or a file with it (default <keys_dir>/notary.vkey)."),
]
OriginOption = Annotated[
    str | None, typer.Option(help="Log origin to insist on (default: the verifier key's name).")
]
RememberOption = Annotated[
    bool,
    typer.Option(help="Check against (and keep) the last checkpoint verified from this log."),
]
WaitOption = Annotated[
    float, typer.Option(help="Seconds to wait for an event not yet checkpointed.")
]


@proof_app.command("proof")
def proof_command(
    ctx: typer.Context,
    event_id: Annotated[str | None, typer.Argument(help="The lineage event to prove.")] = None,
    index: Annotated[int | None, typer.Option(help="Prove the event at this log index.")] = None,
    consistency: Annotated[
        tuple[int, int] | None,
        typer.Option(
            "--consistency", metavar="OLD NEW", help="Prove checkpoint NEW extends checkpoint OLD."
        ),
    ] = None,
    url: UrlOption = None,
    vkey: VkeyOption = None,
    origin: OriginOption = None,
    remember: RememberOption = True,
    wait: WaitOption = 3.0,
    gate_jwks: Annotated[
        Path | None,
        typer.Option(
            help="The gate's published JWKS, to check who signed the event "
            "(default: <keys_dir>/approvals.jwks.json)."
        ),
    ] = None,
) -> None:
    """Fetch a lineage event's inclusion proof from the notary and verify it locally.

    Checks the event is intact and signed by a gate key, is leaf LOG_INDEX of the Merkle
    log, and that the log's root is the one in a checkpoint signed by the notary's key.
    Exits 1 if anything does not verify.
    """
    settings = context.settings(ctx)
    verifier = load_verifier(vkey, settings)
    client = _client(url, settings, wait)
    origin = origin or verifier.name
    if consistency is not None:
        if event_id is not None or index is not None:
            raise ProofClientError("give an EVENT_ID, --index or --consistency, not several")
        _prove_consistency(client, verifier, origin, *consistency)
        return
    if (event_id is None) == (index is None):
        raise ProofClientError(
            "give an EVENT_ID or --index N (or --consistency OLD NEW)",
            hint="event ids are in `trustplane tail lineage-log`",
        )
    answer = client.inclusion(event_id=event_id, index=index)
    try:
        verified = verify_inclusion_answer(
            answer, verifier, origin=origin, event_id=event_id, index=index
        )
    except VERIFICATION_ERRORS as exc:
        out.print_json(json.dumps(answer.get("event")))
        raise _failed(exc) from exc
    try:
        signer = GateKeys(gate_jwks or gate_jwks_path(settings)).verify_event(verified.event)
    except LineageSignatureError as exc:
        out.print_json(json.dumps(verified.event))
        raise _failed(exc) from exc
    out.print_json(json.dumps(verified.event))
    out.print(f"log index   {verified.index}", highlight=False)
    out.print(f"signed by   gate key {signer}", highlight=False)
    _show_checkpoint(verified.checkpoint)
    if remember:
        try:
            line = _memory(settings, verifier).check(
                client, verified.note, verified.checkpoint, origin=origin
            )
        except VERIFICATION_ERRORS as exc:
            raise _failed(exc) from exc
        out.print(line, highlight=False)
    out.print("[bold green]verified ✓[/] the event is in the log signed by " + verifier.vkey)


def _prove_consistency(
    client: NotaryClient, verifier: NoteVerifier, origin: str, old: int, new: int
) -> None:
    answer = client.consistency(old, new)
    try:
        older, newer = verify_consistency_answer(answer, verifier, origin=origin)
        if (older.size, newer.size) != (old, new):
            raise VerificationFailed(
                f"asked for sizes {old} and {new}, got checkpoints of {older.size} and {newer.size}"
            )
    except VERIFICATION_ERRORS as exc:
        raise _failed(exc) from exc
    _show_checkpoint(older)
    _show_checkpoint(newer)
    out.print(f"[bold green]verified ✓[/] the log of size {new} extends the log of size {old}")


@proof_app.command("checkpoint")
def checkpoint_command(
    ctx: typer.Context,
    url: UrlOption = None,
    vkey: VkeyOption = None,
    origin: OriginOption = None,
    remember: RememberOption = True,
) -> None:
    """Print the notary's latest signed checkpoint and verify it (and, unless
    --no-remember, that it extends the last one verified from this log)."""
    settings = context.settings(ctx)
    verifier = load_verifier(vkey, settings)
    client = _client(url, settings, 3.0)
    origin = origin or verifier.name
    note = client.checkpoint()
    out.print(note, end="", highlight=False, markup=False)
    try:
        checkpoint = verify_checkpoint(note, verifier, origin=origin)
        _show_checkpoint(checkpoint)
        if remember:
            out.print(
                _memory(settings, verifier).check(client, note, checkpoint, origin=origin),
                highlight=False,
            )
    except VERIFICATION_ERRORS as exc:
        raise _failed(exc) from exc
    out.print("[bold green]verified ✓[/] signed by " + verifier.vkey)


def notary_command(
    ctx: typer.Context,
    origin: Annotated[
        str | None, typer.Option(help="Log origin (default: setting notary_origin).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Proof endpoint port on 127.0.0.1 (default: notary_port, 6068)."),
    ] = None,
    create_key: Annotated[
        bool | None,
        typer.Option(
            "--create-key/--no-create-key",
            help="Generate <keys_dir>/notary.pem if missing (default: only for the local broker).",
        ),
    ] = None,
) -> None:
    """Run the notary: link lineage into one log, sign checkpoints, serve proofs.

    Reads every partition of `lineage`, writes the linked events to `lineage-log` and
    signed checkpoints to `checkpoints` (exactly once), and answers proof requests on
    http://127.0.0.1:6068. Run one per log. Stop with Ctrl-C.

    Warm standby: a second notary of the same log on the same host (same state folder)
    waits, serving nothing, and takes over within about a second when the first ends.
    """
    from streams.notary import NotaryService, notary_vkey_path

    settings = context.settings(ctx)
    service = NotaryService(settings, origin=origin, port=port, create_key=create_key)
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    err.print(
        f"notary {service.origin} on {settings.resolved_bootstrap()}: "
        f"{service.topics['lineage']} -> {service.topics['lineage-log']}, "
        f"{service.topics['checkpoints']}; proofs on http://127.0.0.1:{service.port}; "
        f"verifier key {notary_vkey_path(settings)}",
        highlight=False,
    )
    try:
        service.run()
    except KeyboardInterrupt:
        service.stop()
