"""ClientConfig: what an agent or executor needs to reach the estate, and nothing more."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.exceptions import ConfigError
from streams.config import Settings
from streams.sdk.config import ClientConfig, Endpoint, Secret


def test_it_loads_from_the_environment_and_builds_the_kafka_settings() -> None:
    config = ClientConfig.load(
        environ={
            "TRUSTPLANE_BOOTSTRAP_SERVERS": "broker:9093",
            "TRUSTPLANE_TOPIC_PREFIX": "prod.",
            "TRUSTPLANE_SECURITY_PROTOCOL": "SASL_SSL",
            "TRUSTPLANE_SASL_MECHANISM": "SCRAM-SHA-512",
            "TRUSTPLANE_USERNAME": "agent-billing",
            "TRUSTPLANE_PASSWORD": "s3cret",
            "TRUSTPLANE_KAFKA_CLIENT_ID": "billing",
        }
    )
    assert config.topic("intents") == "prod.intents"
    assert config.kafka_config() == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "agent-billing",
        "sasl.password": "s3cret",
        "client.id": "billing",
    }
    assert "s3cret" not in repr(config)


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "client.toml"
    path.write_text('[trustplane]\nbootstrap_servers = "file:9092"\ntopic_prefix = "f."\n')
    config = ClientConfig.load(path, environ={"TRUSTPLANE_BOOTSTRAP_SERVERS": "env:9092"})
    assert (config.bootstrap_servers, config.topic_prefix) == ("env:9092", "f.")


def test_a_missing_broker_or_password_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no Kafka bootstrap servers"):
        ClientConfig.load(environ={})
    with pytest.raises(ConfigError, match="no password"):
        ClientConfig("b:9092", username="agent")
    assert ClientConfig("b:9092", username="a", password=Secret("p")).kafka_config()


def test_both_configurations_are_endpoints_of_the_sdk() -> None:
    def topic_of(endpoint: Endpoint) -> str:
        return endpoint.topic("approved")

    assert topic_of(ClientConfig("b:9092", topic_prefix="x.")) == "x.approved"
    assert topic_of(Settings(bootstrap_servers="b:9092", topic_prefix="x.")) == "x.approved"
