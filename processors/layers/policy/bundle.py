"""A policy bundle: Cedar policies, a Cedar schema and a manifest, read from a directory
or from one JSON document; its digest names exactly its content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from processors.crypto.jcs import canonical_json
from processors.exceptions import TrustplaneError
from processors.layers.policy.exceptions import PolicyBundleError

__all__ = [
    "BundleManifest",
    "PolicyBundle",
    "POLICIES_FILE",
    "SCHEMA_FILE",
    "SCHEMA_JSON_FILE",
    "MANIFEST_FILE",
]

POLICIES_FILE: Final = "policies.cedar"
SCHEMA_FILE: Final = "schema.cedarschema"
SCHEMA_JSON_FILE: Final = "schema.cedarschema.json"
MANIFEST_FILE: Final = "manifest.json"

_MAX_SAFE_INT: Final = 2**53 - 1


@dataclass(frozen=True, slots=True)
class BundleManifest:
    version: str
    created_at_ms: int
    expires_at_ms: int
    description: str

    @classmethod
    def from_mapping(cls, data: object) -> BundleManifest:
        if not isinstance(data, Mapping):
            raise PolicyBundleError(
                f"the manifest must be a JSON object, got {type(data).__name__}",
                hint='{"version": "2026.11.1", "created_at_ms": ..., "expires_at_ms": ..., '
                '"description": "..."}',
            )
        fields = {"version", "created_at_ms", "expires_at_ms", "description"}
        missing = sorted(fields - set(data))
        unknown = sorted(set(data) - fields)
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown {', '.join(map(str, unknown))}")
            raise PolicyBundleError(
                f"the manifest has {'; '.join(parts)}",
                hint="a manifest has exactly version, created_at_ms, expires_at_ms, description",
            )
        version, description = data["version"], data["description"]
        if not isinstance(version, str) or not version.strip():
            raise PolicyBundleError("manifest.version must be a non-empty string")
        if not isinstance(description, str):
            raise PolicyBundleError("manifest.description must be a string")
        created = _manifest_time(data, "created_at_ms")
        expires = _manifest_time(data, "expires_at_ms")
        if expires <= created:
            raise PolicyBundleError(
                f"manifest.expires_at_ms ({expires}) must be after created_at_ms ({created})"
            )
        return cls(version, created, expires, description)

    def to_mapping(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created_at_ms": self.created_at_ms,
            "expires_at_ms": self.expires_at_ms,
            "description": self.description,
        }


def _manifest_time(data: Mapping[str, Any], name: str) -> int:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyBundleError(
            f"manifest.{name} must be an integer (Unix epoch milliseconds), got {value!r}"
        )
    if not 0 <= value <= _MAX_SAFE_INT:
        raise PolicyBundleError(f"manifest.{name} ({value}) is out of range (0 .. 2^53-1)")
    return value


@dataclass(frozen=True, slots=True)
class PolicyBundle:
    """Cedar policies, their schema and a manifest; ``digest`` names exactly this content.

    ``schema`` is Cedar schema text, or the Cedar JSON schema as a mapping.
    """

    manifest: BundleManifest
    policies: str
    schema: str | Mapping[str, Any]
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        try:
            body = canonical_json(self.to_document())
        except TrustplaneError as exc:
            raise PolicyBundleError(f"the bundle has no canonical JSON form: {exc.reason}") from exc
        object.__setattr__(self, "digest", "sha256:" + hashlib.sha256(body).hexdigest())

    @property
    def version(self) -> str:
        return self.manifest.version

    def to_document(self) -> dict[str, Any]:
        schema = self.schema if isinstance(self.schema, str) else dict(self.schema)
        return {"manifest": self.manifest.to_mapping(), "policies": self.policies, "schema": schema}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> PolicyBundle:
        """The single-document form: ``{"manifest", "policies", "schema"}``."""
        if not isinstance(doc, Mapping):
            raise PolicyBundleError(
                f"a policy bundle document must be a JSON object, got {type(doc).__name__}"
            )
        expected = {"manifest", "policies", "schema"}
        missing = sorted(expected - set(doc))
        unknown = sorted(map(str, set(doc) - expected))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown keys {', '.join(unknown)}")
            raise PolicyBundleError(
                f"the bundle document has {'; '.join(parts)}",
                hint='a bundle document is {"manifest": {...}, "policies": "<cedar>", '
                '"schema": "<cedar schema>" or {json schema}}',
            )
        policies, schema = doc["policies"], doc["schema"]
        if not isinstance(policies, str):
            raise PolicyBundleError("the bundle's 'policies' must be Cedar policy text (a string)")
        if not isinstance(schema, (str, Mapping)):
            raise PolicyBundleError(
                "the bundle's 'schema' must be Cedar schema text or a JSON schema object"
            )
        return cls(BundleManifest.from_mapping(doc["manifest"]), policies, schema)

    @classmethod
    def from_directory(cls, path: Path | str) -> PolicyBundle:
        """Read ``policies.cedar``, ``schema.cedarschema`` (or ``schema.cedarschema.json``)
        and ``manifest.json``."""
        root = Path(path)
        if not root.is_dir():
            raise PolicyBundleError(f"{root} is not a directory")
        policies = _read_text(root / POLICIES_FILE)
        text_schema, json_schema = root / SCHEMA_FILE, root / SCHEMA_JSON_FILE
        if text_schema.exists() and json_schema.exists():
            raise PolicyBundleError(
                f"{root} has both {SCHEMA_FILE} and {SCHEMA_JSON_FILE}; keep exactly one"
            )
        schema: str | Mapping[str, Any]
        if json_schema.exists():
            schema = _read_json(json_schema)
            if not isinstance(schema, Mapping):
                raise PolicyBundleError(f"{json_schema} must hold a JSON object")
        elif text_schema.exists():
            schema = _read_text(text_schema)
        else:
            raise PolicyBundleError(
                f"{root} has no schema", hint=f"add {SCHEMA_FILE} (Cedar schema syntax)"
            )
        manifest = BundleManifest.from_mapping(_read_json(root / MANIFEST_FILE))
        return cls(manifest, policies, schema)

    @classmethod
    def load(cls, path: Path | str) -> PolicyBundle:
        """A bundle directory, or a file holding the single JSON document."""
        target = Path(path)
        if target.is_dir():
            return cls.from_directory(target)
        doc = _read_json(target)
        if not isinstance(doc, Mapping):
            raise PolicyBundleError(f"{target} does not hold a JSON object")
        return cls.from_document(doc)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PolicyBundleError(f"{path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyBundleError(f"cannot read {path}: {exc}") from exc


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise PolicyBundleError(f"{path} is not valid JSON: {exc}") from exc
