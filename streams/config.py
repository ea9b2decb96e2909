"""Typed, frozen settings: defaults < config file (TOML) < ``TRUSTPLANE_*`` environment.

``Settings.load()`` is what the CLI and the worker use; ``Settings.local()`` is the
single-machine setup that ``make run`` and the tests start from.

Who a process is to Kafka (its principal, see ``streams/acls.py``): ``kafka_principal``
names the SCRAM user and ``kafka_password_file`` (default
``<kafka_credentials_dir>/<principal>``, and ``<state_dir>/kafka/credentials`` for the
directory) holds its password. A service declares its role with :meth:`Settings.for_role`
(``trustplane worker`` is ``gate``), which a configured principal overrides; with neither,
a process is ``operator`` when the local broker's credentials exist (the CLI is the
operator's tool), and unauthenticated otherwise. librdkafka settings given through
``TRUSTPLANE_KAFKA_<NAME>`` (``sasl.username``, ``security.protocol``...) always win.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.exceptions import ConfigError
from streams.sdk.config import (
    DEFAULT_SASL_MECHANISM,
    DEFAULT_SECURITY_PROTOCOL,
    ClientConfig,
    Secret,
    read_password_file,
)

__all__ = ["Settings", "PROJECT_ROOT", "ENV_PREFIX", "DEFAULT_PRINCIPAL"]

ENV_PREFIX = "TRUSTPLANE_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = PROJECT_ROOT / ".state"
DEFAULT_PRINCIPAL = "operator"
"""Who a process with no role and no configured principal is on the local broker."""
_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Settings:
    """Everything a trustplane process needs to know, validated at start."""

    bootstrap_servers: str = ""
    """Kafka bootstrap servers; empty means "the local broker started by `trustplane kafka up`"."""
    topic_prefix: str = ""
    """Prefix for every topic name (e.g. ``prod.`` gives ``prod.intents``)."""
    partitions: int = 4
    """Partitions of each topic the project creates; keys are agent ids."""
    topic_replication_factor: int = -1
    """Replicas of each topic the project creates; -1 takes the broker's
    ``default.replication.factor`` (3 on `trustplane kafka up --brokers 3`). On a cluster
    whose default is lower, state 3. Existing topics keep theirs."""
    topic_min_insync_replicas: int = -1
    """``min.insync.replicas`` of each topic the project creates (and aligns): how many
    replicas must have a record before an ``acks=all`` write is acknowledged. -1 takes the
    broker's default; 2 with 3 replicas loses nothing acknowledged when a broker dies."""
    group_id: str = "trustplane"
    """Root of every consumer group, transactional id and client id of the estate: each
    role's names are ``<group_id>.<role>[.…]`` (``trustplane.gate``, ``trustplane.notary``,
    see ``streams/names.py``), which the ACLs grant by prefix."""
    worker_id: str = ""
    """Stable name of this worker (default: host name); letters, digits, ``_`` and ``-``.
    Two live workers need two names: it is the Kafka transactional id and static group
    member id, so a restarted worker with the same name takes over its predecessor's
    partitions and fences it at once."""
    state_dir: Path = DEFAULT_STATE_DIR
    """Local folder for the broker's data, logs and pid files."""
    max_intent_bytes: int = 256 * 1024
    """Larger intent records are rejected unread."""
    max_clock_skew_ms: int = 30_000
    """Intents issued further in the future than this are denied (expired ones always are)."""
    approval_ttl_ms: int = 5 * 60 * 1000
    """How long an approval may be executed after it is issued (capped by the intent's expiry)."""
    review_timeout_ms: int = 15 * 60 * 1000
    """An intent held for review with no answer by then is denied."""
    anomaly_config_path: Path = PROJECT_ROOT / "policies" / "anomaly.toml"
    """Thresholds and responses of the behavioural anomaly layer."""
    replay_retention_ms: int = 24 * 60 * 60 * 1000
    """How long intent ids and nonces are remembered per agent (replay detection)."""
    max_remembered: int = 1_000
    """Ids/nonces remembered per agent at most (older replays are still caught as
    sequence regressions); bounds the state written per transaction."""
    sequence_gap_tolerance: int = 100
    """A jump in an agent's sequence numbers larger than this is a violation."""
    quarantine_scope: str = "agent"
    """What an integrity violation quarantines: the agent (default) or its runtime."""
    state_store: str = "memory"
    """Where decoded per-agent state lives: ``memory``, or ``rocksdb`` (at most
    ``max_cached_agents`` decoded, the rest in a local RocksDB) for estates whose state
    outgrows memory. Either way the changelog topic is the truth."""
    max_cached_agents: int = 10_000
    """With ``state_store = "rocksdb"``: agents kept decoded in memory."""
    policy_decision_cache: int = 10_000
    """Cedar decisions remembered per policy bundle, keyed by exactly the request fields
    the bundle's policies test (0 disables the cache). A new bundle starts an empty one."""
    layer_timeout_ms: int = 200
    """A layer that takes longer than this is an error verdict (and so a deny)."""
    transaction_max_records: int = 200
    """Intents per Kafka transaction at most."""
    transaction_max_ms: int = 100
    """A transaction is committed at least this often while intents arrive."""
    keys_dir: Path | None = None
    """Where `trustplane keys init` keeps local keys (default: <state_dir>/keys)."""
    operator_keys_path: Path | None = None
    """JWKS of the operator public keys that may sign control commands (the trust root;
    default: <keys_dir>/operators.jwks.json). No file: every control command is refused."""
    operator_key_path: Path | None = None
    """The operator private key the CLI signs control commands with
    (default: <keys_dir>/operator.pem)."""
    signing_keys_dir: Path | None = None
    """The gate's approval signing keyring (default: <keys_dir>/signing)."""
    gate_jwks_path: Path | None = None
    """The gate's published public keys, which the notary and the sink verify lineage and
    approvals against (default: <keys_dir>/approvals.jwks.json)."""
    clickhouse_url: str = ""
    """A ClickHouse server (``http://user:pass@host:8123/db``); empty: embedded chDB."""
    clickhouse_dir: Path | None = None
    """The embedded chDB data folder (default: <state_dir>/clickhouse)."""
    sink_http_port: int = 6068
    """The sink's read-only SQL endpoint and /metrics (0 disables it)."""
    sink_http_bind: str = "127.0.0.1"
    """Address the sink's endpoint listens on; beyond loopback it needs ``sink_sql_token``
    (a container that Prometheus scrapes from another container sets ``0.0.0.0``)."""
    sink_batch_rows: int = 20_000
    """The sink writes at least every this many records..."""
    sink_batch_ms: int = 1_000
    """... or this often."""
    sink_query_timeout_s: int = 60
    """Longest a read-only query may run."""
    sink_sql_token: str = field(default="", repr=False)
    """Bearer token of the SQL endpoint (32+ characters); required to listen beyond
    loopback. Empty: a token generated into <state_dir>/sink/sql.token (0600)."""
    notary_origin: str = "trustplane.local/lineage"
    """Origin of the lineage log; also the name of its checkpoint signing key."""
    notary_port: int = 6067
    """The notary's proof endpoint (0: any free port, -1: none)."""
    notary_bind: str = "127.0.0.1"
    """Address the proof endpoint listens on; beyond loopback it needs ``notary_token``."""
    notary_token: str = field(default="", repr=False)
    """Bearer token the proof endpoint then requires (32+ characters; clients send it)."""
    notary_checkpoint_events: int = 1000
    """A checkpoint at least every this many events ..."""
    notary_checkpoint_ms: int = 500
    """... and at least this often while the log grows."""
    web_port: int = 6066
    """Port of the worker's /metrics and /healthz endpoints (0 disables them)."""
    web_bind: str = "127.0.0.1"
    """Address the worker's web server listens on: loopback unless set (a container that
    Prometheus scrapes from another container sets ``0.0.0.0``, with ``web_token``)."""
    web_token: str = field(default="", repr=False)
    """Bearer token every worker page then requires (32+ characters); required to listen
    beyond loopback."""
    console_port: int = 6060
    """Port of the operators' console (`trustplane console`)."""
    console_bind: str = "127.0.0.1"
    """Address the console listens on; beyond loopback it needs ``console_token`` and TLS
    (browsers give WebCrypto, which signs operator commands, only to secure origins)."""
    console_token: str = field(default="", repr=False)
    """Access token of the console (32+ characters). Empty: one generated into
    <state_dir>/console/console.token (0600) and printed at start, like Jupyter's."""
    demo_runner_port: int = 6061
    """Port of `trustplane demo-runner`, the Runtime Governance Demo's scripted estate."""
    prometheus_port: int = 6069
    """Port of the Prometheus server `trustplane prometheus up` starts (127.0.0.1)."""
    prometheus_url: str = ""
    """Prometheus the console reads (default: http://127.0.0.1:<prometheus_port>)."""
    kafka_principal: str = ""
    """The Kafka (SCRAM) user this process is (``gate``, ``notary``, ``sink``, ``operator``,
    ...). Empty: the role the service declares (:meth:`for_role`), else ``operator`` on
    the local broker."""
    kafka_password_file: Path | None = None
    """The file holding the principal's password (default:
    ``<kafka_credentials_dir>/<principal>``). A file, not a variable: the environment of
    a process is easier to read than a 0600 file."""
    kafka_credentials_dir: Path | None = None
    """One password file per user (default: <state_dir>/kafka/credentials, written by
    `trustplane kafka up`)."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """librdkafka settings passed through (``TRUSTPLANE_KAFKA_<NAME>``, e.g. security.protocol)."""

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {self.partitions}")
        for name in ("topic_replication_factor", "topic_min_insync_replicas"):
            if getattr(self, name) != -1 and getattr(self, name) < 1:
                raise ConfigError(
                    f"{name} must be -1 (the broker's default) or >= 1, got {getattr(self, name)}"
                )
        if self.max_intent_bytes < 1024:
            raise ConfigError(f"max_intent_bytes must be >= 1024, got {self.max_intent_bytes}")
        if self.policy_decision_cache < 0:
            raise ConfigError(
                f"policy_decision_cache must be >= 0, got {self.policy_decision_cache}"
            )
        if self.layer_timeout_ms < 1:
            raise ConfigError(f"layer_timeout_ms must be >= 1, got {self.layer_timeout_ms}")
        if self.transaction_max_records < 1 or self.transaction_max_ms < 1:
            raise ConfigError("transaction_max_records and transaction_max_ms must be >= 1")
        if self.sink_batch_rows < 1 or self.sink_batch_ms < 1:
            raise ConfigError("sink_batch_rows and sink_batch_ms must be >= 1")
        for name in (
            "web_port",
            "sink_http_port",
            "console_port",
            "prometheus_port",
            "demo_runner_port",
        ):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name} must be a port number (0-65535)")
        if self.state_store not in ("memory", "rocksdb"):
            raise ConfigError(
                f"state_store must be 'memory' or 'rocksdb', got {self.state_store!r}"
            )
        if self.quarantine_scope not in ("agent", "runtime"):
            raise ConfigError(
                f"quarantine_scope must be 'agent' or 'runtime', got {self.quarantine_scope!r}"
            )
        if any(ch.isspace() for ch in self.topic_prefix):
            raise ConfigError(f"topic_prefix must not contain spaces: {self.topic_prefix!r}")
        for name in ("group_id", "worker_id", "kafka_principal"):
            value = getattr(self, name)
            if value and not _NAME.fullmatch(value):
                raise ConfigError(
                    f"{name} may only contain letters, digits, '_' and '-', got {value!r}",
                    hint="a dot separates a role's names from its workers' (streams/names.py)"
                    if name != "kafka_principal"
                    else "it also names the password file; for another user name, give "
                    "librdkafka's sasl.username and sasl.password (TRUSTPLANE_KAFKA_SASL_*)",
                )

    # -- named constructors -------------------------------------------------

    @classmethod
    def local(cls, **overrides: Any) -> Settings:
        """The single-machine setup: the project's own broker, default topics."""
        return cls(**overrides)

    @classmethod
    def load(
        cls, config_file: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Defaults, then the TOML file (``--config`` or ``TRUSTPLANE_CONFIG``), then env."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = config_file or (
            Path(env[f"{ENV_PREFIX}CONFIG"]) if f"{ENV_PREFIX}CONFIG" in env else None
        )
        if path is not None:
            values.update(_read_toml(path))
        kafka_table = values.pop("kafka", {}) or {}
        if not isinstance(kafka_table, dict):
            raise ConfigError("[trustplane.kafka] must be a table of librdkafka settings")
        if "extra" in values:
            raise ConfigError(
                "unknown setting 'extra'", hint="put librdkafka settings in [trustplane.kafka]"
            )
        extra: dict[str, str] = {str(k): str(v) for k, v in kafka_table.items()}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        for key, raw in env.items():
            if not key.startswith(ENV_PREFIX) or key == f"{ENV_PREFIX}CONFIG":
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name in names:  # TRUSTPLANE_KAFKA_PRINCIPAL is a setting, not librdkafka's
                values[name] = raw
            elif name.startswith("kafka_"):
                extra[name[len("kafka_") :].replace("_", ".")] = raw
        return cls._coerce(values, extra)

    @classmethod
    def _coerce(cls, values: Mapping[str, Any], extra: Mapping[str, str]) -> Settings:
        kwargs: dict[str, Any] = {"extra": dict(extra)}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for name, raw in values.items():
            if name not in types:
                raise ConfigError(
                    f"unknown setting {name!r}",
                    hint=f"known settings: {', '.join(sorted(types))}",
                )
            kind = types[name]
            try:
                if "Path" in kind:
                    kwargs[name] = Path(raw)
                elif kind == "int":
                    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                        raise ValueError(raw)
                    kwargs[name] = int(raw)
                else:
                    kwargs[name] = str(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"setting {name!r}: {raw!r} is not a valid {kind}") from exc
        return cls(**kwargs)

    # -- derived values -----------------------------------------------------

    def topic(self, name: str) -> str:
        """The full name of one of the project's topics (``intents`` -> ``<prefix>intents``)."""
        return f"{self.topic_prefix}{name}"

    @property
    def kafka_state_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def resolved_kafka_credentials_dir(self) -> Path:
        return self.kafka_credentials_dir or self.kafka_state_dir / "credentials"

    @property
    def resolved_keys_dir(self) -> Path:
        return self.keys_dir or self.state_dir / "keys"

    @property
    def resolved_operator_keys_path(self) -> Path:
        return self.operator_keys_path or self.resolved_keys_dir / "operators.jwks.json"

    @property
    def resolved_operator_key_path(self) -> Path:
        return self.operator_key_path or self.resolved_keys_dir / "operator.pem"

    @property
    def resolved_signing_keys_dir(self) -> Path:
        return self.signing_keys_dir or self.resolved_keys_dir / "signing"

    @property
    def console_state_dir(self) -> Path:
        """The console's token and the enrolment invitations (0700)."""
        return self.state_dir / "console"

    @property
    def console_url(self) -> str:
        """The one URL form the console is reached at (browsers keep operator keys per
        origin: ``127.0.0.1`` and ``localhost`` would be two key stores)."""
        if self.console_bind in ("127.0.0.1", "localhost", "::1"):
            return f"http://127.0.0.1:{self.console_port}"
        return f"https://{self.console_bind}:{self.console_port}"

    @property
    def resolved_prometheus_url(self) -> str:
        return self.prometheus_url or f"http://127.0.0.1:{self.prometheus_port}"

    def resolved_bootstrap(self) -> str:
        """The bootstrap servers to use, asking the local broker's state file when unset."""
        if self.bootstrap_servers:
            return self.bootstrap_servers
        info = self.kafka_state_dir / "broker.json"
        if info.exists():
            try:
                return str(json.loads(info.read_text())["bootstrap"])
            except (ValueError, KeyError, TypeError, OSError) as exc:
                raise ConfigError(f"{info} is unreadable: {exc}") from exc
        raise ConfigError(
            "no Kafka broker configured and no local broker is running",
            hint="run `trustplane kafka up` (or `make run`), or set TRUSTPLANE_BOOTSTRAP_SERVERS",
        )

    def resolved_worker_id(self) -> str:
        """``worker_id``, else the host name made a valid name (``a.example`` -> ``a-example``)."""
        return self.worker_id or re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())

    # -- who this process is to Kafka ---------------------------------------

    def for_role(self, role: str) -> Settings:
        """These settings for a service of ``role`` (``gate``, ``sink``, ...): it becomes
        the principal unless one is configured (or librdkafka credentials are given)."""
        if self.kafka_principal or "sasl.username" in self.extra:
            return self
        return dataclasses.replace(self, kafka_principal=role)

    def as_principal(self, principal: str) -> Settings:
        """These settings as ``principal``, whatever is configured (e.g. ``admin`` for
        provisioning), with its password from the credentials directory."""
        extra = {k: v for k, v in self.extra.items() if k not in ("sasl.username", "sasl.password")}
        return dataclasses.replace(
            self, kafka_principal=principal, kafka_password_file=None, extra=extra
        )

    def resolved_kafka_principal(self) -> str:
        """The SCRAM user this process authenticates as; empty for none."""
        if "sasl.username" in self.extra:
            return str(self.extra["sasl.username"])
        if self.kafka_principal:
            return self.kafka_principal
        if self.extra.get("security.protocol", "").upper() in ("PLAINTEXT", "SSL"):
            return ""
        if (self.resolved_kafka_credentials_dir / DEFAULT_PRINCIPAL).is_file():
            return DEFAULT_PRINCIPAL
        return ""

    def kafka_password(self) -> Secret:
        """The password of :meth:`resolved_kafka_principal`, read from its file now."""
        principal = self.resolved_kafka_principal()
        if "sasl.password" in self.extra:
            return Secret(str(self.extra["sasl.password"]))
        path = self.kafka_password_file or self.resolved_kafka_credentials_dir / principal
        return read_password_file(path, principal)

    def kafka_config(self) -> dict[str, str | int | float | bool]:
        """Base librdkafka configuration shared by producers, consumers and admin:
        where the broker is and who this process is."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.resolved_bootstrap()
        }
        principal = self.resolved_kafka_principal()
        if principal and "sasl.username" not in self.extra:
            config["security.protocol"] = DEFAULT_SECURITY_PROTOCOL
            config["sasl.mechanism"] = DEFAULT_SASL_MECHANISM
            config["sasl.username"] = principal
            config["sasl.password"] = self.kafka_password().get()
        config.update(self.extra)
        return config

    def client_config(self) -> ClientConfig:
        """The SDK's view of these settings: where Kafka is, who this is, the prefix."""
        principal = self.resolved_kafka_principal()
        own = principal and "sasl.username" not in self.extra
        return ClientConfig(
            bootstrap_servers=self.resolved_bootstrap(),
            topic_prefix=self.topic_prefix,
            username=principal if own else "",
            password=self.kafka_password() if own else Secret(""),
            group_id=self.group_id,
            extra=dict(self.extra),
        )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    section = data.get("trustplane", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [trustplane] must be a table")
    return dict(section)
