"""Kafka SCRAM passwords on disk: one file per user, holding the password alone.

::

    <state_dir>/kafka/credentials/        0700
        broker                           the broker's own user (inter-broker, controller)
        admin                            the provisioning super user (never in server.properties)
        gate notary sink operator        one user per role (streams/acls.py)
        console executor agent

Each file is 0600 and created once, exclusively, from :func:`secrets.token_hex` (hex
only: the broker's format tool refuses a SCRAM password with a comma or ``=``). A process
reads only its own file (``Settings.kafka_password_file``); the passwords never appear
in a command line or in the environment of a service.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from processors.exceptions import ConfigError
from streams import names
from streams.sdk.config import Secret, read_password_file

__all__ = ["CredentialStore", "write_private"]


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner only (0600) at every moment."""
    partial = path.with_name(f".{path.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)


class CredentialStore:
    """The password files of one broker's users, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, user: str) -> Path:
        return self.directory / names.check_id(user, "Kafka user")

    def exists(self, user: str) -> bool:
        return self.path(user).is_file()

    def read(self, user: str) -> Secret:
        return read_password_file(self.path(user), user)

    def ensure(self, user: str) -> Secret:
        """The user's password, created (64 hex characters) if it has no file yet."""
        path = self.path(user)
        if not path.exists():
            self._create_dir()
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
            try:
                os.link(partial, path)  # exclusive: a concurrent ensure keeps the first
            except FileExistsError:
                pass
            finally:
                partial.unlink()
        return self.read(user)

    def ensure_all(self, users: Iterable[str]) -> dict[str, Secret]:
        return {user: self.ensure(user) for user in users}

    def _create_dir(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {self.directory}: {exc}") from exc
