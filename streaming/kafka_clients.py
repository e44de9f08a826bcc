"""kafka-python clients built from `kafka.*` settings: the local broker or any secured cluster."""

from __future__ import annotations

import os
import re
import socket
import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

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


class TopicSetupError(RuntimeError):
    """The cluster refused to create the stream's topics as configured."""


def ensure_topics(settings: SegueSettings, timeout_s: float = 30) -> None:
    """Creates the track, playlist-edit and dead-letter topics if they do not exist, with the
    configured partitions, replication and min in-sync replicas, and returns once clients see their
    partitions. Existing topics are left as they are."""
    stream = settings.stream
    names = (*stream.topics, stream.dlq_topic)
    configs = {} if stream.min_insync_replicas is None else {"min.insync.replicas": str(stream.min_insync_replicas)}
    admin = KafkaAdminClient(client_id="segue-admin", **connection_config(settings.kafka))
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(name, stream.partitions, stream.replication_factor, topic_configs=configs)
                  for name in names if name not in existing]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:  # another process won the race
                pass
            except KafkaError as error:
                # kafka-python's text carries the whole request and response; the broker's reason is enough
                reason = re.search(r"error_message='([^']*)'", str(error))
                raise TopicSetupError(
                    f"Kafka at {settings.kafka.bootstrap_servers} refused to create {[t.name for t in wanted]} "
                    f"with {stream.partitions} partitions, replication factor {stream.replication_factor}"
                    f"{f' and min.insync.replicas {stream.min_insync_replicas}' if configs else ''}: "
                    f"{type(error).__name__}: {reason[1] if reason else error} Set stream.replication_factor to "
                    "at most the number of brokers (1 for the local broker), or create the topics yourself") from error
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


def dead_letter_producer(settings: SegueSettings) -> KafkaProducer:
    """The daemon's transactional producer: dead letters and offsets commit together."""
    stream = settings.stream
    transactional_id = stream.transactional_id or f"{stream.group_id}-{socket.gethostname()}-{os.getpid()}"
    producer = event_producer(settings, transactional_id=transactional_id,
                              transaction_timeout_ms=int(stream.transaction_timeout_s * 1000))
    producer.init_transactions()  # aborts what an earlier process with this id left open
    return producer


def event_consumer(settings: SegueSettings, **overrides: Any) -> KafkaConsumer:
    """A member of the daemon's consumer group; offsets are committed by hand, after the write."""
    stream = settings.stream
    consumer = KafkaConsumer(
        client_id="segue-stream", group_id=stream.group_id, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=stream.max_batch,
        # A write retried while Milvus is down holds the batch: allow long pauses before a rebalance.
        max_poll_interval_ms=600_000, session_timeout_ms=int(stream.session_timeout_s * 1000),
        isolation_level="read_committed",
        **{**connection_config(settings.kafka), **overrides})
    consumer.subscribe(stream.topics)
    return consumer
