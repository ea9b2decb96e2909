"""What an agent or an executor needs to reach the trust plane, and nothing more.

The gate's :class:`~streams.config.Settings` knows about policies, state stores and
ClickHouse; an agent only needs to know where Kafka is, which topic prefix the estate
uses and how to authenticate. :class:`ClientConfig` is that, read from keyword
arguments, a TOML file (``[trustplane]`` table) or ``TRUSTPLANE_*`` environment
variables, in that order of precedence (environment last, so it wins).

Authentication is SASL/SCRAM-SHA-512 with one Kafka user per role (``agent`` publishes
intents, ``executor`` reads approvals and reports outcomes; see ``streams/acls.py``). The
password comes from a file (``password_file``, e.g. ``<state_dir>/kafka/credentials/agent``
of the local broker) or, less safely, from ``password``/``TRUSTPLANE_PASSWORD``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from processors.exceptions import ConfigError

__all__ = ["ClientConfig", "Endpoint", "Secret", "KafkaSettings", "read_password_file"]

ENV_PREFIX = "TRUSTPLANE_"
DEFAULT_SECURITY_PROTOCOL = "SASL_PLAINTEXT"
DEFAULT_SASL_MECHANISM = "SCRAM-SHA-512"

KafkaSettings = dict[str, str | int | float | bool]
"""A librdkafka configuration dictionary."""


class Endpoint(Protocol):
    """What the SDK needs of a configuration: :class:`ClientConfig`, or the server
    :class:`~streams.config.Settings` (which the gate and the CLI pass)."""

    def kafka_config(self) -> KafkaSettings:
        """Base librdkafka settings (bootstrap servers, credentials)."""
        ...

    def topic(self, name: str) -> str:
        """The full name of one of the estate's topics."""
        ...


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"


def read_password_file(path: Path, user: str = "") -> Secret:
    """The password kept in ``path`` (the whole file, without its trailing newline)."""
    who = f" of Kafka user {user!r}" if user else ""
    try:
        text = path.read_text().rstrip("\r\n")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"the password file{who} {path} does not exist",
            hint="`trustplane kafka up` (or `trustplane kafka provision`) creates the local "
            "broker's users and their files; for another cluster, point "
            "TRUSTPLANE_KAFKA_PASSWORD_FILE at the file that holds the password",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the password file{who} {path} cannot be read: {exc}") from exc
    if not text:
        raise ConfigError(f"the password file{who} {path} is empty")
    return Secret(text)


@dataclass(frozen=True)
class ClientConfig:
    """Where the broker is and who this client is: enough to publish and consume."""

    bootstrap_servers: str
    """Kafka bootstrap servers, e.g. ``127.0.0.1:9092``."""
    topic_prefix: str = ""
    """Prefix of every topic name the estate uses (``prod.`` gives ``prod.intents``)."""
    security_protocol: str = ""
    """librdkafka ``security.protocol`` (e.g. ``SASL_PLAINTEXT``, ``SASL_SSL``); empty:
    ``SASL_PLAINTEXT`` when a username is set, else the library's default (no auth)."""
    sasl_mechanism: str = ""
    """Empty: ``SCRAM-SHA-512`` when a username is set."""
    username: str = ""
    """The Kafka user (``TRUSTPLANE_USERNAME`` or ``TRUSTPLANE_KAFKA_PRINCIPAL``)."""
    password: Secret = field(default_factory=lambda: Secret(""))
    password_file: Path | None = None
    """A file holding the password (read when a client is built); preferred over
    ``password``, which lives in the process's environment or config file."""
    group_id: str = "trustplane"
    """Root of the consumer group names this client uses (``<group_id>.executor``,
    ``<group_id>.reader.<random>``; see ``streams/names.py``)."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """Further librdkafka settings passed through unchanged."""

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ConfigError(
                "no Kafka bootstrap servers given",
                hint="set TRUSTPLANE_BOOTSTRAP_SERVERS (e.g. 127.0.0.1:9092)",
            )
        if any(ch.isspace() for ch in self.topic_prefix):
            raise ConfigError(f"topic_prefix must not contain spaces: {self.topic_prefix!r}")
        if self.username and not self.password and self.password_file is None:
            raise ConfigError(
                f"a username ({self.username!r}) is set but no password",
                hint="set TRUSTPLANE_PASSWORD_FILE (a file holding the password), or "
                "TRUSTPLANE_PASSWORD",
            )

    def topic(self, name: str) -> str:
        """The full name of one of the estate's topics."""
        return f"{self.topic_prefix}{name}"

    def kafka_config(self) -> KafkaSettings:
        """Base librdkafka configuration shared by producers, consumers and admin."""
        config: KafkaSettings = {"bootstrap.servers": self.bootstrap_servers}
        if self.username:
            password = self.password or read_password_file(
                self.password_file or Path(), self.username
            )
            config["security.protocol"] = self.security_protocol or DEFAULT_SECURITY_PROTOCOL
            config["sasl.mechanism"] = self.sasl_mechanism or DEFAULT_SASL_MECHANISM
            config["sasl.username"] = self.username
            config["sasl.password"] = password.get()
        else:
            if self.security_protocol:
                config["security.protocol"] = self.security_protocol
            if self.sasl_mechanism:
                config["sasl.mechanism"] = self.sasl_mechanism
        config.update(self.extra)
        return config

    @classmethod
    def local(cls, principal: str, state_dir: Path | None = None, **overrides: Any) -> ClientConfig:
        """The local broker of ``trustplane kafka up`` (in ``state_dir``, default
        ``.state``), as ``principal`` (``agent``, ``executor``, ...), whose password is in
        ``<state_dir>/kafka/credentials/<principal>``."""
        state = Path(state_dir) if state_dir is not None else _default_state_dir()
        if "bootstrap_servers" not in overrides:
            overrides["bootstrap_servers"] = local_bootstrap(state)
        return cls(
            username=principal,
            password_file=state / "kafka" / "credentials" / principal,
            **overrides,
        )

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ClientConfig:
        """Keyword arguments, then the TOML file (or ``TRUSTPLANE_CONFIG``), then the
        environment (``TRUSTPLANE_BOOTSTRAP_SERVERS``, ``TRUSTPLANE_TOPIC_PREFIX``,
        ``TRUSTPLANE_SECURITY_PROTOCOL``, ``TRUSTPLANE_SASL_MECHANISM``,
        ``TRUSTPLANE_USERNAME``, ``TRUSTPLANE_PASSWORD_FILE``, ``TRUSTPLANE_PASSWORD``,
        ``TRUSTPLANE_GROUP_ID``, ``TRUSTPLANE_KAFKA_<NAME>``).

        The server's variables name the same things and are understood too:
        ``TRUSTPLANE_KAFKA_PRINCIPAL`` (the username), ``TRUSTPLANE_KAFKA_PASSWORD_FILE``,
        and ``TRUSTPLANE_KAFKA_CREDENTIALS_DIR`` (the password file is
        ``<dir>/<username>``)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = dict(overrides)
        extra: dict[str, str] = {str(k): str(v) for k, v in dict(values.pop("extra", {})).items()}
        path = config_file or (
            Path(env[ENV_PREFIX + "CONFIG"]) if ENV_PREFIX + "CONFIG" in env else None
        )
        if path is not None:
            section = _read_toml(path)
            extra.update({str(k): str(v) for k, v in dict(section.pop("kafka", {})).items()})
            values.update({k: v for k, v in section.items() if k in _FIELDS})
        for name in _FIELDS:
            if ENV_PREFIX + name.upper() in env:
                values[name] = env[ENV_PREFIX + name.upper()]
        credentials_dir = values.pop("kafka_credentials_dir", None)
        for key, raw in env.items():
            if key in _SERVER_ALIASES:
                if key == ENV_PREFIX + "KAFKA_CREDENTIALS_DIR":
                    credentials_dir = raw
                else:
                    values.setdefault(_SERVER_ALIASES[key], raw)
            elif key.startswith(ENV_PREFIX + "KAFKA_"):
                extra[key[len(ENV_PREFIX + "KAFKA_") :].lower().replace("_", ".")] = raw
        if "password" in values and not isinstance(values["password"], Secret):
            values["password"] = Secret(str(values["password"]))
        if values.get("password_file"):
            values["password_file"] = Path(values["password_file"])
        elif credentials_dir and values.get("username") and "password" not in values:
            values["password_file"] = Path(credentials_dir) / str(values["username"])
        if "bootstrap_servers" not in values and "state_dir" in values:
            values["bootstrap_servers"] = local_bootstrap(Path(values["state_dir"]))
        values.pop("state_dir", None)
        values.setdefault("bootstrap_servers", "")  # refused in __post_init__, with a hint
        return cls(**{k: v for k, v in values.items() if k in _FIELDS}, extra=extra)


_FIELDS = (
    "bootstrap_servers",
    "topic_prefix",
    "security_protocol",
    "sasl_mechanism",
    "username",
    "password",
    "password_file",
    "group_id",
)

_SERVER_ALIASES = {
    ENV_PREFIX + "KAFKA_PRINCIPAL": "username",
    ENV_PREFIX + "KAFKA_PASSWORD_FILE": "password_file",
    ENV_PREFIX + "KAFKA_CREDENTIALS_DIR": "",
}
"""The server's (:class:`~streams.config.Settings`) names for the same things; they are
not librdkafka settings, so they never reach ``extra``."""


def _default_state_dir() -> Path:
    env = os.environ.get(ENV_PREFIX + "STATE_DIR")
    return Path(env) if env else Path(".state")


def local_bootstrap(state_dir: Path) -> str:
    """The bootstrap address of the broker ``trustplane kafka up`` started in ``state_dir``."""
    info = state_dir / "kafka" / "broker.json"
    try:
        return str(json.loads(info.read_text())["bootstrap"])
    except FileNotFoundError as exc:
        raise ConfigError(
            "no Kafka broker configured and no local broker is running",
            hint="run `trustplane kafka up` (or `make run`), or set TRUSTPLANE_BOOTSTRAP_SERVERS",
        ) from exc
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ConfigError(f"{info} is unreadable: {exc}") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    section = data.get("trustplane", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [trustplane] must be a table")
    return dict(section)
