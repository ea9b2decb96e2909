"""Bearer tokens and the loopback rule for trustplane's small HTTP servers.

A server that answers more than health checks (the sink's SQL endpoint; later the
notary's and the worker's) holds a :class:`BearerToken` and calls
:meth:`BearerToken.verify` with each request's ``Authorization`` header. The token is
either configured (a secret given in the settings) or kept in a file that the server
creates at its first start: 32 random bytes, URL-safe base64, mode 0600 in a 0700
folder, so the local operator's tools read the same file and nobody else can.

:func:`require_safe_bind` is the loopback rule: a server listens on 127.0.0.1 (or ::1)
unless it was given a token explicitly by configuration, never because a generated file
happens to exist.

Clients send ``Authorization: Bearer <token>`` (:func:`bearer_header`), reading the
token with :func:`read_token_file`.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import secrets
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from processors.exceptions import ConfigError, TrustplaneError

__all__ = [
    "AuthenticationError",
    "BearerToken",
    "TOKEN_MIN_CHARS",
    "bearer_header",
    "is_loopback",
    "read_token_file",
    "require_safe_bind",
]

TOKEN_MIN_CHARS = 32
"""A configured token must be at least this long (a generated one has 43 characters)."""

_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]+$")


class AuthenticationError(TrustplaneError):
    """A request came without the server's bearer token, or with a wrong one."""


_GENERATE_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _valid(value: str, where: str, hint: str = _GENERATE_HINT) -> str:
    token = value.strip()
    if len(token) < TOKEN_MIN_CHARS or not _TOKEN_RE.match(token):
        raise ConfigError(
            f"the bearer token in {where} is not usable: it needs at least "
            f"{TOKEN_MIN_CHARS} characters of [A-Za-z0-9._~+/=-]",
            hint=hint,
        )
    return token


@dataclass(frozen=True)
class BearerToken:
    """The secret a server requires in ``Authorization: Bearer <token>``."""

    value: str = field(repr=False)
    source: str
    """``configured`` (given in the settings), ``file`` (read from an existing file) or
    ``generated`` (created in a new file at this start)."""
    path: Path | None = None
    """The token file, when the token is kept in one."""

    @classmethod
    def configured(cls, value: str, *, setting: str = "the settings") -> BearerToken:
        """A token given by configuration (an explicit secret)."""
        return cls(_valid(value, setting), "configured")

    @classmethod
    def from_file(cls, path: Path) -> BearerToken:
        """The token in ``path``; a new random one written there (0600) if there is none.

        An existing file must be a regular file of this user that no one else can read.
        """
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        value = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            _check_private(path)
            hint = "remove it: the server writes a new one at its next start"
            return cls(_valid(path.read_text(), str(path), hint), "file", path)
        with os.fdopen(fd, "w") as out:
            out.write(value + "\n")
        return cls(value, "generated", path)

    @property
    def explicit(self) -> bool:
        """Given by configuration (not merely found or generated on disk)."""
        return self.source == "configured"

    def verify(self, authorization: str | None) -> None:
        """Return if ``authorization`` carries this token; raise :class:`AuthenticationError`."""
        scheme, _, given = (authorization or "").strip().partition(" ")
        where = f"the token file {self.path}" if self.path is not None else "the configured token"
        if not authorization or scheme.lower() != "bearer" or not given.strip():
            raise AuthenticationError(
                "this endpoint needs an 'Authorization: Bearer <token>' header",
                hint=f"send the token from {where}",
            )
        if not hmac.compare_digest(given.strip().encode(), self.value.encode()):
            raise AuthenticationError(
                "the bearer token is wrong", hint=f"send the token from {where}"
            )


def _check_private(path: Path) -> None:
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"the token file {path} is not a regular file")
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"the token file {path} belongs to another user (uid {info.st_uid})",
            hint="remove it; the server writes a new one at its next start",
        )
    if info.st_mode & 0o077:
        raise ConfigError(
            f"the token file {path} can be read by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o})",
            hint=f"chmod 600 {path}, or remove it: the server writes a new one at its next start",
        )


def read_token_file(path: Path) -> str | None:
    """The token a client sends, from ``path``; None when there is no such file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuthenticationError(
            f"cannot read the token file {path}: {exc.strerror or exc}",
            hint="run as the user that runs the server, or give the token explicitly",
        ) from exc
    return text.strip() or None


def bearer_header(token: str | None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``, or nothing without a token."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) means this machine only."""
    name = host.strip().strip("[]")
    if not name:
        return False  # "" binds every interface
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    addresses = {str(info[4][0]).split("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def require_safe_bind(host: str, token: BearerToken, *, what: str, setting: str) -> None:
    """Raise :class:`ConfigError` unless ``host`` is loopback or ``token`` is explicit.

    ``what`` names the server, ``setting`` the setting that gives it a token.
    """
    if is_loopback(host) or token.explicit:
        return
    raise ConfigError(
        f"{what} would listen on {host!r}, which other machines can reach, with no token "
        "given by configuration",
        hint=f"listen on 127.0.0.1 (the default), or set {setting} to a secret of at least "
        f"{TOKEN_MIN_CHARS} characters that every client is given",
    )
