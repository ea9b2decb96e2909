"""The notary's identity: the log origin and the key that signs its checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

from processors.crypto.keys import (
    KeyFileError,
    generate_signing_key,
    load_private_key,
    save_private_key,
)
from processors.exceptions import ConfigError
from processors.log.checkpoint import NoteError, NoteSigner
from streams.config import Settings

__all__ = [
    "DEFAULT_ORIGIN",
    "notary_origin",
    "notary_key_path",
    "notary_vkey_path",
    "load_notary_signer",
]

log = logging.getLogger(__name__)

DEFAULT_ORIGIN = "trustplane.local/lineage"


def notary_origin(settings: Settings) -> str:
    """The log origin: setting ``notary_origin``, default ``trustplane.local/lineage``."""
    return str(getattr(settings, "notary_origin", None) or DEFAULT_ORIGIN)


def notary_key_path(settings: Settings) -> Path:
    return settings.resolved_keys_dir / "notary.pem"


def notary_vkey_path(settings: Settings) -> Path:
    return settings.resolved_keys_dir / "notary.vkey"


def load_notary_signer(
    settings: Settings, origin: str | None = None, *, create: bool | None = None
) -> NoteSigner:
    """The notary's note signer: key ``<keys_dir>/notary.pem``, name = the origin.

    A missing key is generated when ``create`` is true, or, when ``create`` is None, in
    local setups (no ``bootstrap_servers`` configured). The verifier key text is
    (re)written to ``<keys_dir>/notary.vkey`` for clients to copy.
    """
    origin = origin or notary_origin(settings)
    path = notary_key_path(settings)
    if not path.exists():
        if create is None:
            create = not settings.bootstrap_servers
        if not create:
            raise KeyFileError(
                f"the notary signing key {path} does not exist",
                hint="run `trustplane notary --create-key` once to generate it, or point "
                "TRUSTPLANE_KEYS_DIR at the folder that holds notary.pem",
            )
        save_private_key(path, generate_signing_key())
        log.warning("generated the notary signing key %s", path)
    try:
        signer = NoteSigner(origin, load_private_key(path))
    except NoteError as exc:
        raise ConfigError(
            f"notary origin {origin!r}: {exc.reason}",
            hint="use a schema-less URL such as example.com/lineage",
        ) from exc
    vkey_path = notary_vkey_path(settings)
    text = signer.vkey + "\n"
    try:
        if not vkey_path.exists() or vkey_path.read_text() != text:
            vkey_path.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write the notary verifier key {vkey_path}: {exc}") from exc
    return signer
