"""One-time enrolment links: how a browser's new key becomes an operator key.

The console never holds an operator key, so it cannot enrol one. A process that holds a
root key (``trustplane operators invite``) and the console meet in a folder both own
(``<console_state_dir>/invites``, 0700; every file 0600):

1. the invite process :meth:`InviteStore.create` s an invitation: ``<id>.json`` =
   ``{secret_sha256, label, expires_at_ms, created_at_ms}``, and prints the link
   ``<console_url>/enroll#<id>.<secret>`` (a URL fragment: browsers never send it to the
   server, so it is in no log);
2. the enrol page generates a non-extractable Ed25519 key and posts ``{id, secret, x,
   kid, label}``; the console calls :meth:`InviteStore.redeem`: the secret (compared as
   SHA-256 in constant time), the expiry, single use (``<id>.request.json`` is created
   exclusively) and the key (``x`` 32 bytes, ``kid`` its thumbprint) are checked, and
   the request is written;
3. the invite process (:func:`await_enrolment`) finds the request, checks the key again,
   enrols it (``operator.enroll`` signed with the root key) and writes ``<id>.done.json``
   = ``{kid, result, detail, at_ms}``; :meth:`InviteStore.status` tells the page.

Refusals are :class:`InviteError` s with a ``code`` the console turns into an answer:
``unknown`` (no such invitation, or the wrong secret: 404), ``expired`` (410), ``used``
(409), ``bad_key`` (400), ``bad_request`` (a request file that cannot be read).

The folder is a trust boundary: whoever may write in it could put a request there. The
store creates it 0700 and refuses a folder or request file another user owns or may
write.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from processors.control.operators import (
    MAX_LABEL_LENGTH,
    OperatorKeyError,
    check_label,
    parse_operator_key,
)
from processors.exceptions import TrustplaneError
from processors.timefmt import iso_ms

__all__ = [
    "Invite",
    "InviteError",
    "InviteExpired",
    "InviteStatus",
    "InviteStore",
    "InviteUsed",
    "BadEnrollmentKey",
    "BadInviteRequest",
    "Redemption",
    "UnknownInvite",
    "await_enrolment",
    "MAX_TTL_S",
]

MAX_TTL_S = 7 * 24 * 3600
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")

InviteState = Literal["pending", "requested", "enrolled", "failed", "expired"]


class InviteError(TrustplaneError):
    """An invitation cannot be redeemed or read; ``code`` says why, for the console."""

    code: ClassVar[str] = "invite"


class UnknownInvite(InviteError):
    """No invitation with that id, or not with that secret."""

    code = "unknown"


class InviteExpired(InviteError):
    """The invitation expired before it was redeemed."""

    code = "expired"


class InviteUsed(InviteError):
    """The invitation was redeemed already (each link enrols one key)."""

    code = "used"


class BadEnrollmentKey(InviteError):
    """The key (``x``, ``kid``) or label sent cannot be enrolled."""

    code = "bad_key"


class BadInviteRequest(InviteError):
    """A request file in the invitations folder cannot be trusted or read."""

    code = "bad_request"


@dataclass(frozen=True)
class Invite:
    """A new invitation: the secret exists only here and in the link."""

    id: str
    secret: str
    label: str
    expires_at_ms: int

    def link(self, console_url: str) -> str:
        """``<console_url>/enroll#<id>.<secret>`` (``Settings.console_url``)."""
        return f"{console_url.rstrip('/')}/enroll#{self.id}.{self.secret}"


@dataclass(frozen=True)
class Redemption:
    """A browser's request to enrol its key, written by :meth:`InviteStore.redeem`."""

    invite_id: str
    kid: str
    x: str
    label: str
    """The label the browser sent (may be empty)."""
    at_ms: int
    invite_label: str
    """The label the root operator gave the invitation."""

    @property
    def enrolled_label(self) -> str:
        """What the key is enrolled as: the invitation's label (the root operator vouches
        for it), then the browser's own label if it adds one."""
        if not self.label or self.label == self.invite_label:
            return self.invite_label
        text = f"{self.invite_label}: {self.label}"
        return text if len(text) <= MAX_LABEL_LENGTH else text[: MAX_LABEL_LENGTH - 3] + "..."


@dataclass(frozen=True)
class InviteStatus:
    state: InviteState
    detail: str
    label: str
    expires_at_ms: int
    kid: str | None = None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class InviteStore:
    """The invitations folder shared by the invite process and the console.

    ``clock`` returns milliseconds since the epoch (tests pass their own)."""

    def __init__(self, directory: Path, *, clock: Callable[[], int] = _now_ms) -> None:
        self.directory = directory
        self.clock = clock
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        info = directory.stat()
        if info.st_uid != os.getuid():
            raise InviteError(
                f"the invitations folder {directory} belongs to another user (uid {info.st_uid})",
                hint="run the console and `trustplane operators invite` as the same user",
            )
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(directory, 0o700)

    # -- files -------------------------------------------------------------------------

    def _path(self, invite_id: str, suffix: str = "") -> Path:
        return self.directory / f"{invite_id}{suffix}.json"

    def _write_new(self, path: Path, document: dict[str, Any]) -> None:
        """Create ``path`` (0600) with ``document``, whole or not at all; raises
        FileExistsError when it exists (the exclusive claim of a single use)."""
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary, path)  # atomic, and fails if path exists
        finally:
            temporary.unlink(missing_ok=True)

    def _read(self, path: Path) -> dict[str, Any] | None:
        """A file of the folder written by this user and nobody else; None if absent."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BadInviteRequest(f"{path} cannot be read: {exc}") from None
        with os.fdopen(fd) as handle:
            info = os.fstat(handle.fileno())
            if info.st_uid != os.getuid() or info.st_mode & 0o022:
                raise BadInviteRequest(
                    f"{path} belongs to another user or others may write it "
                    f"(mode {stat.S_IMODE(info.st_mode):o}): not trusted",
                    hint=f"only the console's user may write in {self.directory}",
                )
            try:
                document = json.load(handle)
            except ValueError as exc:
                raise BadInviteRequest(f"{path} is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise BadInviteRequest(f"{path} is not a JSON object")
        return document

    def _invite(self, invite_id: object) -> tuple[str, dict[str, Any]]:
        if not isinstance(invite_id, str) or not ID_PATTERN.fullmatch(invite_id):
            raise UnknownInvite("no such invitation (malformed id)")
        document = self._read(self._path(invite_id))
        if document is None:
            raise UnknownInvite(
                f"no invitation {invite_id!r}",
                hint="ask an operator for a new link (`trustplane operators invite`)",
            )
        return invite_id, document

    # -- the three steps -------------------------------------------------------------

    def create(self, label: str, ttl_s: int) -> Invite:
        """A new invitation valid for ``ttl_s`` seconds for a key labelled ``label``.
        Raises :class:`~processors.control.OperatorKeyError` for a bad label."""
        label = check_label(label)
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise InviteError(f"the invitation's lifetime must be 1 s to {MAX_TTL_S} s (7 days)")
        now = self.clock()
        invite = Invite(
            secrets.token_urlsafe(12), secrets.token_urlsafe(32), label, now + ttl_s * 1000
        )
        self._write_new(
            self._path(invite.id),
            {
                "secret_sha256": _sha256(invite.secret),
                "label": label,
                "expires_at_ms": invite.expires_at_ms,
                "created_at_ms": now,
            },
        )
        return invite

    def redeem(self, invite_id: str, secret: str, x: str, kid: str, label: str) -> Redemption:
        """Redeem invitation ``invite_id`` with its ``secret`` for public key ``x``
        (JWK member) with id ``kid`` (its RFC 7638 thumbprint): writes the request the
        invite process enrols. Each invitation is redeemed once.

        Raises :class:`UnknownInvite`, :class:`InviteUsed`, :class:`InviteExpired` or
        :class:`BadEnrollmentKey` (a bad key does not use the invitation up)."""
        invite_id, document = self._invite(invite_id)
        expected = document.get("secret_sha256")
        given = _sha256(secret) if isinstance(secret, str) and secret else ""
        if not isinstance(expected, str) or not hmac.compare_digest(given, expected):
            raise UnknownInvite(
                f"no invitation {invite_id!r} with this secret",
                hint="open the whole link you were given; ask for a new one if it is damaged",
            )
        if self._path(invite_id, ".request").exists():
            raise InviteUsed(
                f"invitation {invite_id!r} was used already: each link enrols one key",
                hint="ask an operator for a new link (`trustplane operators invite`)",
            )
        expires = int(document.get("expires_at_ms", 0))
        now = self.clock()
        if now >= expires:
            raise InviteExpired(
                f"invitation {invite_id!r} expired at {iso_ms(expires)}",
                hint="ask an operator for a new link (`trustplane operators invite`)",
            )
        invite_label = str(document.get("label", ""))
        try:
            parse_operator_key(x, kid)
            label = check_label(label) if isinstance(label, str) and label.strip() else ""
        except OperatorKeyError as exc:
            raise BadEnrollmentKey(exc.reason, hint=exc.hint) from None
        redemption = Redemption(invite_id, kid, x, label, now, invite_label)
        try:
            self._write_new(
                self._path(invite_id, ".request"),
                {"x": x, "kid": kid, "label": label, "at_ms": now},
            )
        except FileExistsError:
            raise InviteUsed(
                f"invitation {invite_id!r} was used already: each link enrols one key"
            ) from None
        return redemption

    def request(self, invite_id: str) -> Redemption | None:
        """The redemption of ``invite_id`` waiting to be enrolled, or None. Raises
        :class:`BadInviteRequest` for a request file that cannot be trusted or read."""
        invite_id, document = self._invite(invite_id)
        found = self._read(self._path(invite_id, ".request"))
        if found is None:
            return None
        kid, x, label, at_ms = (found.get(n) for n in ("kid", "x", "label", "at_ms"))
        if not all(isinstance(v, str) for v in (kid, x, label)) or not isinstance(at_ms, int):
            raise BadInviteRequest(f"the request of invitation {invite_id!r} is malformed")
        return Redemption(
            invite_id, str(kid), str(x), str(label), at_ms, str(document.get("label", ""))
        )

    def complete(
        self, invite_id: str, kid: str, result: Literal["enrolled", "failed"], detail: str
    ) -> None:
        """Record the invite process's outcome (``<id>.done.json``), once."""
        invite_id, _ = self._invite(invite_id)
        document = {"kid": kid, "result": result, "detail": detail, "at_ms": self.clock()}
        try:
            self._write_new(self._path(invite_id, ".done"), document)
        except FileExistsError:
            raise InviteUsed(f"invitation {invite_id!r} has an outcome already") from None

    def status(self, invite_id: str) -> InviteStatus:
        """Where invitation ``invite_id`` stands: ``pending`` (not redeemed),
        ``requested`` (redeemed, the key not enrolled yet), ``enrolled``, ``failed``
        (the enrolment was refused: ``detail`` says why) or ``expired``. Raises
        :class:`UnknownInvite`."""
        invite_id, document = self._invite(invite_id)
        label = str(document.get("label", ""))
        expires = int(document.get("expires_at_ms", 0))
        done = self._read(self._path(invite_id, ".done"))
        if done is not None:
            result: InviteState = "enrolled" if done.get("result") == "enrolled" else "failed"
            kid = str(done.get("kid", "")) or None
            return InviteStatus(result, str(done.get("detail", "")), label, expires, kid)
        request = self._read(self._path(invite_id, ".request"))
        kid = (str(request.get("kid", "")) or None) if request is not None else None
        if self.clock() >= expires:
            detail = f"the invitation expired at {iso_ms(expires)}"
            if request is not None:
                detail += (
                    " before its key was enrolled (was `trustplane operators invite` still "
                    "running?)"
                )
            return InviteStatus("expired", detail, label, expires, kid)
        if request is not None:
            return InviteStatus(
                "requested", "waiting for an operator to enrol the key", label, expires, kid
            )
        return InviteStatus(
            "pending", f"waiting to be redeemed until {iso_ms(expires)}", label, expires
        )


def await_enrolment(
    store: InviteStore,
    invite: Invite,
    enroll: Callable[[Redemption], str],
    *,
    poll_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    say: Callable[[str], None] = print,
) -> InviteStatus:
    """Wait for invitation ``invite`` to be redeemed, then enrol its key with ``enroll``
    (which returns what it did, or raises a :class:`TrustplaneError` with the reason),
    and record the outcome. Returns the final status (``enrolled`` or ``failed``).

    Raises :class:`InviteExpired` when nobody redeemed the invitation in time."""
    while True:
        expired = store.clock() >= invite.expires_at_ms
        try:
            redemption = store.request(invite.id)
        except BadInviteRequest as exc:
            store.complete(invite.id, "", "failed", exc.reason)
            say(f"invitation {invite.id}: {exc.diagnostics()}")
            return store.status(invite.id)
        if redemption is not None:
            return _enrol(store, redemption, enroll, say)
        if expired:
            raise InviteExpired(
                f"invitation {invite.id} ({invite.label}) expired at "
                f"{iso_ms(invite.expires_at_ms)} without being redeemed",
                hint="run `trustplane operators invite` again for a new link",
            )
        sleep(poll_s)


def _enrol(
    store: InviteStore,
    redemption: Redemption,
    enroll: Callable[[Redemption], str],
    say: Callable[[str], None],
) -> InviteStatus:
    say(
        f"invitation {redemption.invite_id}: key {redemption.kid} ({redemption.label}) "
        f"requested at {iso_ms(redemption.at_ms)}"
    )
    try:
        parse_operator_key(redemption.x, redemption.kid)  # again: this process enrols it
        detail = enroll(redemption)
    except TrustplaneError as exc:
        store.complete(redemption.invite_id, redemption.kid, "failed", exc.reason)
        say(f"invitation {redemption.invite_id}: not enrolled: {exc.diagnostics()}")
        return store.status(redemption.invite_id)
    store.complete(redemption.invite_id, redemption.kid, "enrolled", detail)
    say(f"invitation {redemption.invite_id}: {detail}")
    return store.status(redemption.invite_id)
