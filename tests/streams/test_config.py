"""Settings (streams/config.py): defaults < TOML file < TRUSTPLANE_* environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from processors.exceptions import ConfigError
from streams.config import PROJECT_ROOT, Settings
from streams.sdk.config import ClientConfig


def write_config(tmp_path: Path, text: str, name: str = "trustplane.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def write_broker_state(state_dir: Path, info: object) -> Path:
    path = state_dir / "kafka" / "broker.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(info))
    return path


# --- layering ---------------------------------------------------------------------


def test_defaults() -> None:
    s = Settings.load(environ={})
    assert s == Settings()
    assert s.bootstrap_servers == ""
    assert s.topic_prefix == ""
    assert s.partitions == 4
    assert s.group_id == "trustplane"
    assert s.worker_id == ""
    assert s.state_dir == PROJECT_ROOT / ".state"
    assert s.anomaly_config_path == PROJECT_ROOT / "policies" / "anomaly.toml"
    assert s.anomaly_config_path.is_file()
    assert s.max_intent_bytes == 256 * 1024
    assert s.layer_timeout_ms == 200
    assert s.transaction_max_records == 200
    assert s.transaction_max_ms == 100
    assert s.web_port == 6066
    assert s.extra == {}
    assert Settings.local() == s


def test_file_values_override_defaults(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
[trustplane]
bootstrap_servers = "kafka-1:9092,kafka-2:9092"
topic_prefix = "prod."
partitions = 12
worker_id = "gate-a"
state_dir = "/var/lib/trustplane"
max_intent_bytes = 65536

[trustplane.kafka]
"security.protocol" = "SASL_SSL"
""",
    )
    s = Settings.load(path, environ={})
    assert s.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert s.topic_prefix == "prod."
    assert s.partitions == 12
    assert s.worker_id == "gate-a"
    assert s.state_dir == Path("/var/lib/trustplane")
    assert s.max_intent_bytes == 65536
    assert s.extra == {"security.protocol": "SASL_SSL"}
    # Settings not in the file keep their defaults.
    assert s.group_id == "trustplane"
    assert s.web_port == 6066


def test_file_without_a_trustplane_table_is_read_from_the_top_level(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'partitions = 2\ngroup_id = "g2"\n')
    s = Settings.load(path, environ={})
    assert (s.partitions, s.group_id) == (2, "g2")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[trustplane]\npartitions = 6\ntopic_prefix = "file."\n')
    s = Settings.load(
        path,
        environ={
            "TRUSTPLANE_PARTITIONS": "8",
            "TRUSTPLANE_WEB_PORT": "0",
            "TRUSTPLANE_ANOMALY_CONFIG_PATH": "/etc/trustplane/anomaly.toml",
            "PARTITIONS": "99",  # not ours: no prefix
            "HOME": "/root",
        },
    )
    assert s.partitions == 8
    assert s.web_port == 0
    assert s.anomaly_config_path == Path("/etc/trustplane/anomaly.toml")
    assert s.topic_prefix == "file."


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[trustplane]\npartitions = 9\n")
    s = Settings.load(environ={"TRUSTPLANE_CONFIG": str(path)})
    assert s.partitions == 9


def test_explicit_config_file_wins_over_trustplane_config(tmp_path: Path) -> None:
    chosen = write_config(tmp_path, "[trustplane]\npartitions = 3\n", "chosen.toml")
    other = write_config(tmp_path, "[trustplane]\npartitions = 5\n", "other.toml")
    s = Settings.load(chosen, environ={"TRUSTPLANE_CONFIG": str(other)})
    assert s.partitions == 3


def test_kafka_environment_variables_become_librdkafka_settings() -> None:
    s = Settings.load(
        environ={
            "TRUSTPLANE_BOOTSTRAP_SERVERS": "broker:9093",
            "TRUSTPLANE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "TRUSTPLANE_KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
        }
    )
    assert s.kafka_config() == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "SSL",
        "ssl.ca.location": "/etc/ca.pem",
    }


def test_kafka_environment_overrides_the_file_kafka_table(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[trustplane]\nbootstrap_servers = "b:1"\n'
        '[trustplane.kafka]\n"security.protocol" = "PLAINTEXT"\n"client.rack" = "r1"\n',
    )
    s = Settings.load(path, environ={"TRUSTPLANE_KAFKA_SECURITY_PROTOCOL": "SSL"})
    assert s.kafka_config()["security.protocol"] == "SSL"
    assert s.kafka_config()["client.rack"] == "r1"


# --- errors -----------------------------------------------------------------------


def test_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[trustplane]\npartitons = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'partitons'") as excinfo:
        Settings.load(path, environ={})
    assert excinfo.value.hint is not None
    assert "partitions" in excinfo.value.hint


@pytest.mark.parametrize("raw", ["many", "", "4.5", "0x10"])
def test_bad_int_in_the_environment(raw: str) -> None:
    with pytest.raises(ConfigError, match="'partitions'"):
        Settings.load(environ={"TRUSTPLANE_PARTITIONS": raw})


def test_bad_int_in_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[trustplane]\nweb_port = "http"\n')
    with pytest.raises(ConfigError, match="'web_port'.*not a valid int"):
        Settings.load(path, environ={})


def test_bad_toml(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[trustplane\npartitions = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(path, environ={})


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(path, environ={})
    with pytest.raises(ConfigError, match="nope.toml"):
        Settings.load(environ={"TRUSTPLANE_CONFIG": str(path)})


def test_trustplane_that_is_not_a_table(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'trustplane = "yes"\n')
    with pytest.raises(ConfigError, match=r"\[trustplane\] must be a table"):
        Settings.load(path, environ={})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("partitions", "0", "partitions must be >= 1"),
        ("partitions", "-3", "partitions must be >= 1"),
        ("max_intent_bytes", "1023", "max_intent_bytes must be >= 1024"),
        ("layer_timeout_ms", "0", "layer_timeout_ms must be >= 1"),
        ("transaction_max_records", "0", "transaction_max_records"),
        ("transaction_max_ms", "0", "transaction_max_ms"),
        ("topic_prefix", "my prefix.", "must not contain spaces"),
    ],
)
def test_out_of_range_values_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(environ={f"TRUSTPLANE_{name.upper()}": value})


def test_partitions_zero_is_refused_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="partitions must be >= 1, got 0"):
        Settings(partitions=0)
    with pytest.raises(ConfigError, match="partitions must be >= 1"):
        Settings.load(write_config(tmp_path, "[trustplane]\npartitions = 0\n"), environ={})


# --- derived values ---------------------------------------------------------------


def test_topic_applies_the_prefix() -> None:
    assert Settings().topic("intents") == "intents"
    assert Settings(topic_prefix="prod.").topic("intents") == "prod.intents"
    s = Settings.load(environ={"TRUSTPLANE_TOPIC_PREFIX": "team-a."})
    assert s.topic("approved") == "team-a.approved"


def test_resolved_bootstrap_reads_the_local_broker_state(tmp_path: Path) -> None:
    write_broker_state(tmp_path, {"bootstrap": "127.0.0.1:39092", "pid": 123})
    s = Settings(state_dir=tmp_path)
    assert s.kafka_state_dir == tmp_path / "kafka"
    assert s.resolved_bootstrap() == "127.0.0.1:39092"
    assert s.kafka_config() == {"bootstrap.servers": "127.0.0.1:39092"}


def test_configured_bootstrap_wins_over_the_local_broker(tmp_path: Path) -> None:
    write_broker_state(tmp_path, {"bootstrap": "127.0.0.1:39092"})
    s = Settings.load(
        environ={
            "TRUSTPLANE_STATE_DIR": str(tmp_path),
            "TRUSTPLANE_BOOTSTRAP_SERVERS": "remote:9092",
        }
    )
    assert s.resolved_bootstrap() == "remote:9092"


def test_no_broker_at_all_says_how_to_start_one(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    with pytest.raises(ConfigError, match="no Kafka broker configured") as excinfo:
        s.resolved_bootstrap()
    assert excinfo.value.hint is not None
    assert "trustplane kafka up" in excinfo.value.hint
    assert "trustplane kafka up" in excinfo.value.diagnostics()
    with pytest.raises(ConfigError):
        s.kafka_config()


@pytest.mark.parametrize("content", ["{not json", json.dumps({"port": 9092})])
def test_unreadable_broker_state_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "kafka" / "broker.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(ConfigError, match="broker.json is unreadable"):
        Settings(state_dir=tmp_path).resolved_bootstrap()


def test_resolved_worker_id() -> None:
    assert Settings(worker_id="gate-7").resolved_worker_id() == "gate-7"
    assert Settings().resolved_worker_id()  # the host name


def test_a_host_name_with_dots_becomes_a_valid_worker_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "gate-1.eu.example")
    assert Settings().resolved_worker_id() == "gate-1-eu-example"


@pytest.mark.parametrize("name", ["worker_id", "group_id", "kafka_principal"])
@pytest.mark.parametrize("value", ["a.b", "a b", "a/b", "é"])
def test_names_that_would_cross_an_acl_prefix_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} may only contain letters, digits"):
        Settings(**{name: value})


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.partitions = 5  # type: ignore[misc]


# --- regressions: bugs found and fixed ----------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "not utf-8"])
def test_unreadable_config_file_is_a_config_error(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        path = tmp_path
    else:
        path = tmp_path / "latin1.toml"
        path.write_bytes(b'[trustplane]\ngroup_id = "caf\xe9"\n')
    with pytest.raises(ConfigError):
        Settings.load(path, environ={})


def test_broker_state_that_is_not_an_object_is_a_config_error(tmp_path: Path) -> None:
    write_broker_state(tmp_path, ["127.0.0.1:39092"])
    with pytest.raises(ConfigError):
        Settings(state_dir=tmp_path).resolved_bootstrap()


@pytest.mark.parametrize("raw", ["3.7", "true"])
def test_non_integer_toml_value_for_an_int_setting_is_refused(tmp_path: Path, raw: str) -> None:
    path = write_config(tmp_path, f"[trustplane]\npartitions = {raw}\n")
    with pytest.raises(ConfigError, match="partitions"):
        Settings.load(path, environ={})


def test_extra_key_in_the_file_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[trustplane]\nbootstrap_servers = "b:1"\nextra = "x"\n')
    with pytest.raises(ConfigError, match="extra"):
        Settings.load(path, environ={})


# --- who the process is to Kafka ----------------------------------------------------


def write_password(directory: Path, user: str, password: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / user
    path.write_text(password + "\n")
    return path


def test_a_principal_and_its_password_file_make_the_sasl_settings(tmp_path: Path) -> None:
    write_password(tmp_path / "creds", "gate", "gate-secret")
    s = Settings.load(
        environ={
            "TRUSTPLANE_BOOTSTRAP_SERVERS": "b:9092",
            "TRUSTPLANE_KAFKA_PRINCIPAL": "gate",
            "TRUSTPLANE_KAFKA_CREDENTIALS_DIR": str(tmp_path / "creds"),
        }
    )
    assert (s.kafka_principal, s.extra) == ("gate", {})  # settings, not librdkafka's
    assert s.kafka_config() == {
        "bootstrap.servers": "b:9092",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "gate",
        "sasl.password": "gate-secret",
    }
    assert "gate-secret" not in repr(s)


def test_a_password_file_names_the_file_directly(tmp_path: Path) -> None:
    path = write_password(tmp_path, "elsewhere", "pw")
    s = Settings.load(
        environ={
            "TRUSTPLANE_BOOTSTRAP_SERVERS": "b:9092",
            "TRUSTPLANE_KAFKA_PRINCIPAL": "sink",
            "TRUSTPLANE_KAFKA_PASSWORD_FILE": str(path),
        }
    )
    assert s.kafka_config()["sasl.password"] == "pw"
    client = s.client_config()
    assert (client.username, client.password.get(), client.group_id) == ("sink", "pw", "trustplane")


def test_a_missing_password_file_says_how_to_create_it(tmp_path: Path) -> None:
    s = Settings(bootstrap_servers="b:9092", kafka_principal="gate", state_dir=tmp_path)
    with pytest.raises(
        ConfigError, match=r"password file of Kafka user 'gate' .* does not"
    ) as caught:
        s.kafka_config()
    assert "trustplane kafka up" in caught.value.diagnostics()


def test_a_service_declares_its_role_unless_a_principal_is_configured(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    assert s.for_role("gate").kafka_principal == "gate"
    assert Settings(kafka_principal="admin").for_role("gate").kafka_principal == "admin"
    given = Settings(extra={"sasl.username": "svc-gate", "sasl.password": "p"})
    assert given.for_role("gate") is given
    assert given.resolved_kafka_principal() == "svc-gate"
    admin = given.as_principal("admin")  # whatever is configured
    assert admin.resolved_kafka_principal() == "admin"
    assert "sasl.username" not in admin.extra


def test_without_a_principal_the_cli_is_operator_on_the_local_broker(tmp_path: Path) -> None:
    s = Settings(bootstrap_servers="b:9092", state_dir=tmp_path)
    assert s.resolved_kafka_principal() == ""  # no local credentials: no SASL
    assert s.kafka_config() == {"bootstrap.servers": "b:9092"}
    write_password(tmp_path / "kafka" / "credentials", "operator", "op")
    assert s.resolved_kafka_principal() == "operator"
    assert s.kafka_config()["sasl.username"] == "operator"
    plain = Settings(
        bootstrap_servers="b:9092", state_dir=tmp_path, extra={"security.protocol": "PLAINTEXT"}
    )
    assert "sasl.username" not in plain.kafka_config()


def test_librdkafka_credentials_win_over_the_principal(tmp_path: Path) -> None:
    write_password(tmp_path / "kafka" / "credentials", "operator", "op")
    s = Settings(
        bootstrap_servers="b:9092",
        state_dir=tmp_path,
        extra={"security.protocol": "SASL_SSL", "sasl.username": "u", "sasl.password": "p"},
    )
    config = s.kafka_config()
    assert (config["sasl.username"], config["sasl.password"]) == ("u", "p")
    assert config["security.protocol"] == "SASL_SSL"


def test_the_sdk_config_reads_the_same_variables(tmp_path: Path) -> None:
    write_password(tmp_path, "agent", "agent-pw")
    config = ClientConfig.load(
        environ={
            "TRUSTPLANE_BOOTSTRAP_SERVERS": "b:9092",
            "TRUSTPLANE_KAFKA_PRINCIPAL": "agent",
            "TRUSTPLANE_KAFKA_CREDENTIALS_DIR": str(tmp_path),
            "TRUSTPLANE_GROUP_ID": "estate",
        }
    )
    assert config.extra == {}
    assert config.group_id == "estate"
    assert config.kafka_config() == {
        "bootstrap.servers": "b:9092",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "agent",
        "sasl.password": "agent-pw",
    }
    local = ClientConfig.local("agent", bootstrap_servers="b:9092", state_dir=tmp_path / "st")
    assert local.password_file == tmp_path / "st" / "kafka" / "credentials" / "agent"
