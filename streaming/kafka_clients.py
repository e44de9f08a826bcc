"""kafka-python clients built from `kafka.*` settings: the local broker or any secured cluster."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from segue.settings import KafkaSettings, SegueSettings


def connection_config(kafka: KafkaSettings) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap_servers.split(","),
                              "security_protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        config["sasl_mechanism"] = kafka.sasl_mechanism
        config["sasl_plain_username"] = kafka.sasl_username
        config["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    if kafka.ssl_cafile:
        config["ssl_cafile"] = str(kafka.ssl_cafile)
    return config


def ensure_topics(settings: SegueSettings, timeout_s: float = 30) -> None:
    """Creates the event and dead-letter topics if they do not exist (keyed by track URI), and
    returns once clients see their partitions."""
    names = (settings.stream.topic, settings.stream.dlq_topic)
    admin = KafkaAdminClient(client_id="segue-admin", **connection_config(settings.kafka))
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(name, settings.stream.partitions, 1) for name in names if name not in existing]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:  # another process won the race
                pass
    finally:
        admin.close()
    # A consumer that joins its group before a new topic's partitions are visible must rejoin at
    # once; kafka-python 3.0.12 was seen to lose its assignment in that rejoin and wait forever.
    probe = KafkaConsumer(client_id="segue-admin", **connection_config(settings.kafka))
    try:
        deadline = time.monotonic() + timeout_s
        while not all(probe.partitions_for_topic(name) for name in names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {names} not visible after {timeout_s} s")
            time.sleep(0.1)
            probe.topics()  # forces a metadata refresh
    finally:
        probe.close()


def event_producer(settings: SegueSettings, **overrides: Any) -> KafkaProducer:
    """acks=all with idempotence: a send that returns was stored by the broker, once."""
    return KafkaProducer(client_id="segue-producer", acks="all", linger_ms=5, enable_idempotence=True,
                         **{**connection_config(settings.kafka), **overrides})


def event_consumer(settings: SegueSettings, **overrides: Any) -> KafkaConsumer:
    """A member of the daemon's consumer group; offsets are committed by hand, after the write."""
    stream = settings.stream
    consumer = KafkaConsumer(
        client_id="segue-stream", group_id=stream.group_id, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=stream.max_batch,
        # A write retried while Milvus is down holds the batch: allow long pauses before a rebalance.
        max_poll_interval_ms=600_000, isolation_level="read_committed",
        **{**connection_config(settings.kafka), **overrides})
    consumer.subscribe([stream.topic])
    return consumer
