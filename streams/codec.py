"""Avro records on the wire: Avro single-object encoding, checked on the way in and out.

Wire format (language-neutral; the same text is in ``schemas/README.md``)
=========================================================================

Every record value trustplane reads or writes on Kafka is one Avro datum in the
*single object encoding* of the Avro specification (1.11, "Single object encoding")::

    offset  size  content
    0       2     marker 0xC3 0x01
    2       8     CRC-64-AVRO (Rabin) fingerprint of the writer schema's Parsing
                  Canonical Form, as an unsigned 64-bit integer in little-endian order
    10      n     the record in Avro binary encoding, written with that writer schema

Nothing may follow the body; records have no other framing (not the Confluent
``0x00`` + schema-id format, not an object container file).

The fingerprint is the 64-bit Rabin fingerprint of the UTF-8 bytes of the schema's
Parsing Canonical Form (the spec's reference algorithm, ``EMPTY = 0xc15d213aa4d7a795``)
-- what Java's ``SchemaNormalization.parsingFingerprint64`` returns. It does not
depend on ``doc`` attributes, defaults or white space. Java's
``org.apache.avro.message.BinaryMessageEncoder`` (and the ``toByteBuffer()`` of
generated classes) writes exactly this format; Go's ``github.com/linkedin/goavro/v2``
writes it with ``Codec.SingleFromNative``.

Schemas live in ``schemas/*.avsc`` (the current version of each record, one
top-level record per file, namespace ``dev.trustplane``) and ``schemas/history/*.avsc``
(older versions still accepted from writers). A reader looks up the writer schema by
fingerprint and resolves it to the current schema of the same full name (Avro schema
resolution), so records written with an older version read as the current version,
with defaults for the fields added since. Evolution rule: only add fields, each with a
default; move the replaced file to ``schemas/history/`` under a new name.

Decoding never raises anything but :class:`DecodeError` for bad input; its ``code`` says
what was wrong: ``empty``, ``too_large``, ``not_avro`` (no marker), ``unknown_schema``
(fingerprint not in the table), ``wrong_record_type`` or ``truncated`` (the body ends
early, is invalid, or is followed by trailing bytes).
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import json
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import (
    SchemaParseException,
    fingerprint,
    to_parsing_canonical_form,
)
from fastavro.validation import validate

from processors.exceptions import ConfigError, TrustplaneError

__all__ = [
    "MAGIC",
    "HEADER_SIZE",
    "SCHEMA_DIR",
    "DECODE_ERROR_CODES",
    "DecodeError",
    "EncodeError",
    "SchemaRegistry",
    "Codec",
    "default_codec",
]

MAGIC = b"\xc3\x01"
"""The two marker bytes that start every single-object encoded record."""
HEADER_SIZE = len(MAGIC) + 8
"""Marker plus fingerprint: the body starts at this offset."""


def _schema_dir() -> Path:
    """The folder of the ``schemas`` package: package data of the installed wheel (or the
    checkout, for an editable install)."""
    try:
        return Path(str(importlib.resources.files("schemas")))
    except ModuleNotFoundError:  # a checkout on sys.path, not installed
        return Path(__file__).resolve().parent.parent / "schemas"


SCHEMA_DIR = _schema_dir()
"""Where the current schemas are; older versions are in its ``history`` folder."""
DECODE_ERROR_CODES = frozenset(
    {"empty", "not_avro", "unknown_schema", "wrong_record_type", "truncated", "too_large"}
)
"""Every value :attr:`DecodeError.code` takes."""

_README_HINT = "the wire format is described in schemas/README.md"
# What the binary reader raises on a body that ends early or is not valid Avro.
_BODY_ERRORS = (EOFError, ValueError, IndexError, KeyError, OverflowError, MemoryError)
_WRITE_ERRORS = (ValueError, TypeError, OverflowError, AttributeError, KeyError)


class DecodeError(TrustplaneError):
    """A record value is not a valid single-object encoded trustplane record.

    ``code`` is one of :data:`DECODE_ERROR_CODES`; ``reason`` says what was found.
    """

    def __init__(self, code: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(reason, hint=hint)
        self.code = code


class EncodeError(TrustplaneError):
    """A value does not match the schema of the record it is encoded as.

    ``record`` is the record's full name, ``field`` the path of the first bad field
    (e.g. ``runtime.host`` or ``parameters['amount']``; empty for the record itself).
    """

    def __init__(self, reason: str, *, record: str, field: str) -> None:
        super().__init__(reason)
        self.record = record
        self.field = field


@dataclass(frozen=True, slots=True)
class _Entry:
    """One schema of the table: a current version or an older one."""

    name: str
    """Full name of the record, e.g. ``dev.trustplane.Intent``."""
    fingerprint: bytes
    writer: dict[str, Any]
    """The parsed schema this version was written with."""
    reader: dict[str, Any] | None
    """The current schema to resolve to; None if this is the current version."""
    path: Path


class SchemaRegistry:
    """The local schema table: current schemas by name, every known version by fingerprint."""

    def __init__(self, current: Sequence[_Entry], history: Sequence[_Entry] = ()) -> None:
        self._current: dict[str, _Entry] = {}
        self._short: dict[str, str] = {}
        self._by_fingerprint: dict[bytes, _Entry] = {}
        for entry in current:
            if entry.name in self._current:
                raise ConfigError(
                    f"two current schemas for {entry.name}: "
                    f"{self._current[entry.name].path} and {entry.path}",
                    hint="keep one file per record in schemas/; older versions go to "
                    "schemas/history/",
                )
            self._current[entry.name] = entry
            self._add(entry)
        shorts: dict[str, list[str]] = {}
        for name in self._current:
            shorts.setdefault(name.rpartition(".")[2], []).append(name)
        self._short = {short: names[0] for short, names in shorts.items() if len(names) == 1}
        for entry in history:
            now = self._current.get(entry.name)
            if now is None:
                raise ConfigError(
                    f"older schema {entry.path} is for {entry.name}, which has no current schema",
                    hint="a schema in schemas/history/ must be an older version of one in schemas/",
                )
            if entry.fingerprint not in self._by_fingerprint:
                self._add(
                    _Entry(entry.name, entry.fingerprint, entry.writer, now.writer, entry.path)
                )

    def _add(self, entry: _Entry) -> None:
        other = self._by_fingerprint.get(entry.fingerprint)
        if other is not None and other.name != entry.name:
            raise ConfigError(
                f"schemas {other.path} and {entry.path} have the same fingerprint "
                f"{entry.fingerprint.hex()}"
            )
        self._by_fingerprint.setdefault(entry.fingerprint, entry)

    @classmethod
    def from_directory(cls, path: Path = SCHEMA_DIR) -> SchemaRegistry:
        """Load ``path/*.avsc`` as the current schemas and ``path/history/*.avsc`` as older ones.

        Raises :class:`ConfigError` naming the file when a schema cannot be loaded.
        """
        current = [_load(file) for file in sorted(path.glob("*.avsc"))]
        if not current:
            raise ConfigError(
                f"no Avro schemas (*.avsc) in {path}",
                hint="reinstall trustplane; if a folder or package named 'schemas' comes "
                "earlier on sys.path, it shadows trustplane's: rename it",
            )
        history = [_load(file) for file in sorted((path / "history").glob("*.avsc"))]
        return cls(current, history)

    @property
    def names(self) -> tuple[str, ...]:
        """Full names of the records with a current schema, sorted."""
        return tuple(sorted(self._current))

    def full_name(self, name: str) -> str:
        """The full name of a record given by short (``Intent``) or full name.

        Raises :class:`KeyError` if there is no current schema of that name.
        """
        if name in self._current:
            return name
        full = self._short.get(name)
        if full is None:
            raise KeyError(f"no schema named {name!r}; known: {', '.join(self.names)}")
        return full

    def schema(self, name: str) -> dict[str, Any]:
        """The current parsed schema of a record, by short or full name."""
        return self._current[self.full_name(name)].writer

    def fingerprint(self, name: str) -> bytes:
        """The 8-byte wire fingerprint (little-endian CRC-64-AVRO) of a record's current schema."""
        return self._current[self.full_name(name)].fingerprint

    def _entry(self, name: str) -> _Entry:
        return self._current[self.full_name(name)]


def _load(path: Path) -> _Entry:
    """Parse one schema file on its own (its named types are defined inline)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read Avro schema {path}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise ConfigError(f"Avro schema {path} is not a record; each file holds one record")
    try:
        parsed = fastavro.parse_schema(raw)
        canonical = to_parsing_canonical_form(raw)
    except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"invalid Avro schema {path}: {exc}") from exc
    if not isinstance(parsed, dict):  # pragma: no cover - a record parses to a dict
        raise ConfigError(f"Avro schema {path} is not a record")
    # fastavro gives the little-endian bytes of the 64-bit fingerprint, as hex.
    wire = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return _Entry(str(parsed["name"]), wire, parsed, None, path)


class Codec:
    """Encodes and decodes trustplane records in Avro single-object encoding.

    Thread-safe and cheap to call: schemas are parsed once, by the registry.
    """

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry if registry is not None else SchemaRegistry.from_directory()
        self._by_fingerprint = self.registry._by_fingerprint

    def encode(self, name: str, record: Mapping[str, Any], *, check: bool = True) -> bytes:
        """The single-object encoding of ``record`` with the current schema of ``name``.

        Missing fields that have a default get it. Raises :class:`EncodeError` naming the
        first bad field when a required field is missing, has the wrong type or is not in
        the schema; :class:`KeyError` when there is no schema ``name``. ``check=False``
        skips the up-front validation (for records the gate builds itself, on the hot
        path): a bad field then still fails, in the writer, with a less precise reason.
        """
        entry = self.registry._entry(name)
        if check and not validate(record, entry.writer, raise_errors=False, strict=True):
            raise _encode_error(entry, record, None)
        out = io.BytesIO()
        out.write(MAGIC)
        out.write(entry.fingerprint)
        try:
            fastavro.schemaless_writer(out, entry.writer, record, strict_allow_default=True)
        except _WRITE_ERRORS as exc:
            raise _encode_error(entry, record, exc) from exc
        return out.getvalue()

    def decode(
        self, data: bytes, expected: str | None = None, *, max_bytes: int | None = None
    ) -> dict[str, Any]:
        """The record in ``data``, read as the current version of its schema.

        ``expected`` (short or full name) is the record type the caller accepts;
        ``max_bytes`` is the largest ``data`` to read at all. Raises :class:`DecodeError`
        for any bad input, and nothing else.
        """
        size = len(data)
        if size == 0:
            raise DecodeError("empty", "the record value is empty", hint=_README_HINT)
        if max_bytes is not None and size > max_bytes:
            raise DecodeError(
                "too_large", f"the record value is {size} bytes, more than the {max_bytes} allowed"
            )
        if data[:2] != MAGIC:
            raise DecodeError(
                "not_avro",
                f"the record value does not start with the Avro single-object marker c3 01 "
                f"(it starts with {bytes(data[:2]).hex(' ')})",
                hint=_README_HINT,
            )
        if size < HEADER_SIZE:
            raise DecodeError(
                "truncated",
                f"the record value is {size} bytes, shorter than the 10-byte single-object header",
            )
        fp = bytes(data[2:HEADER_SIZE])
        entry = self._by_fingerprint.get(fp)
        if entry is None:
            raise DecodeError(
                "unknown_schema",
                f"the writer schema fingerprint {fp.hex()} is not one of the known schemas",
                hint="the writer used a schema this reader does not have; current schemas are "
                "in schemas/, older versions in schemas/history/",
            )
        if expected is not None:
            want = self.registry.full_name(expected)
            if entry.name != want:
                raise DecodeError(
                    "wrong_record_type",
                    f"expected a {want} record but found a {entry.name} record",
                )
        stream = io.BytesIO(data)
        stream.seek(HEADER_SIZE)
        try:
            if entry.reader is None:
                record = fastavro.schemaless_reader(stream, entry.writer)
            else:
                record = fastavro.schemaless_reader(stream, entry.writer, entry.reader)
        except _BODY_ERRORS as exc:
            raise DecodeError(
                "truncated",
                f"the {entry.name} body ends early or is not valid Avro ({_brief(exc)})",
            ) from exc
        except SchemaResolutionError as exc:
            raise DecodeError(
                "unknown_schema",
                f"the {entry.name} record written with schema {entry.path.name} cannot be read "
                f"as the current version ({_brief(exc)})",
            ) from exc
        end = stream.tell()
        if end != size:
            raise DecodeError(
                "truncated",
                f"{size - end} unexpected bytes follow the {entry.name} body",
            )
        if not isinstance(record, dict):  # pragma: no cover - every schema is a record
            raise DecodeError("truncated", f"the {entry.name} body is not a record")
        return record

    def record_name(self, data: bytes) -> str | None:
        """Full name of the record in ``data`` by its header, or None if the header is bad."""
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            return None
        entry = self._by_fingerprint.get(bytes(data[2:HEADER_SIZE]))
        return None if entry is None else entry.name


@functools.lru_cache(maxsize=1)
def default_codec() -> Codec:
    """The codec of the project's ``schemas/`` folder, loaded once per process."""
    return Codec()


def _brief(exc: BaseException) -> str:
    text = str(exc)[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- Explaining an invalid record (only on the error path) ----------------------------

_PRIMITIVE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31,
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63,
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes | bytearray),
}


def _encode_error(entry: _Entry, record: object, exc: Exception | None) -> EncodeError:
    named: dict[str, Any] = entry.writer.get("__named_schemas", {})
    found = _problem(record, entry.writer, "", named)
    short = entry.name.rpartition(".")[2]
    if found is None:
        detail = str(exc) if exc is not None else "the value does not match the schema"
        return EncodeError(f"cannot encode {short}: {detail}", record=entry.name, field="")
    path, problem = found
    where = f"{short}.{path}" if path and not path.startswith("[") else f"{short}{path}"
    return EncodeError(f"cannot encode {where}: {problem}", record=entry.name, field=path)


def _describe(value: object) -> str:
    return f"{type(value).__name__} {reprlib.repr(value)}"


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return " | ".join(_type_name(branch) for branch in schema)
    return str(schema.get("name", schema.get("type")))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _problem(value: Any, schema: Any, path: str, named: dict[str, Any]) -> tuple[str, str] | None:
    """The path and description of the first part of ``value`` that ``schema`` refuses."""
    if isinstance(schema, list):
        for branch in schema:
            if _problem(value, branch, path, named) is None:
                return None
        return path, f"expected {_type_name(schema)}, got {_describe(value)}"
    if isinstance(schema, str):
        check = _PRIMITIVE_CHECKS.get(schema)
        if check is None:
            return _problem(value, named[schema], path, named) if schema in named else None
        return None if check(value) else (path, f"expected {schema}, got {_describe(value)}")
    kind = schema["type"]
    if kind == "record":
        if not isinstance(value, Mapping):
            return path, f"expected a {schema['name']} record (a mapping), got {_describe(value)}"
        fields = {field["name"]: field for field in schema["fields"]}
        for key in value:
            if key not in fields:
                return _join(path, str(key)), f"not a field of {schema['name']}"
        for name, field in fields.items():
            if name not in value:
                if "default" in field:
                    continue
                return _join(path, name), "required field is missing"
            found = _problem(value[name], field["type"], _join(path, name), named)
            if found is not None:
                return found
        return None
    if kind == "enum":
        if value in schema["symbols"]:
            return None
        return path, f"expected one of {', '.join(schema['symbols'])}, got {_describe(value)}"
    if kind == "array":
        if not isinstance(value, Sequence) or isinstance(value, str | bytes | bytearray):
            return path, f"expected an array (a list), got {_describe(value)}"
        for index, item in enumerate(value):
            found = _problem(item, schema["items"], f"{path}[{index}]", named)
            if found is not None:
                return found
        return None
    if kind == "map":
        if not isinstance(value, Mapping):
            return path, f"expected a map (a mapping), got {_describe(value)}"
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"map keys must be strings, got {_describe(key)}"
            found = _problem(item, schema["values"], f"{path}[{key!r}]", named)
            if found is not None:
                return found
        return None
    if kind == "fixed":
        if isinstance(value, bytes) and len(value) == schema["size"]:
            return None
        return path, f"expected {schema['size']} bytes, got {_describe(value)}"
    return _problem(value, kind, path, named)
