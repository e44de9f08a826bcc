"""A real single-node Kafka broker (KRaft) from Apache's jars: topics, keyed JSON round trips through a
consumer group, and restarts on the same data folder. The first run fetches the jars with Maven into
~/.cache/segue/kafka; later runs start the broker from there."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.serializer import DefaultSerializer, JsonSerializer

from segue.streaming.kafka_broker import KafkaBroker

pytestmark = pytest.mark.slow

MESSAGES = 1000
USERS = 37


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
    try:
        yield broker
    finally:
        broker.stop()


def produce_events(broker: KafkaBroker, topic: str, count: int, first: int = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=5,
                             key_serializer=DefaultSerializer(), value_serializer=JsonSerializer())
    try:
        for i in range(first, first + count):
            producer.send(topic, key=f"user-{i % USERS}", value={"seq": i, "user": f"user-{i % USERS}"})
        producer.flush(timeout=30)
    finally:
        producer.close()


def group_consumer(broker: KafkaBroker, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(topic, bootstrap_servers=broker.bootstrap_servers, group_id=group,
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         key_deserializer=DefaultSerializer(), value_deserializer=JsonSerializer())


def consume(consumer: KafkaConsumer, expected: int, timeout_s: float = 30) -> list:
    """Polls until `expected` records arrived, then keeps polling briefly to catch any extra ones."""
    records = []
    deadline = time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    for batch in consumer.poll(timeout_ms=500).values():
        records.extend(batch)
    return records


def consume_nothing_new(consumer: KafkaConsumer, partitions: int, timeout_s: float = 30) -> list:
    """Whatever arrives once the consumer holds all its partitions (it should be nothing)."""
    records = []
    deadline = time.monotonic() + timeout_s
    while len(consumer.assignment()) < partitions and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=250).values():
            records.extend(batch)
    assert len(consumer.assignment()) == partitions, "the consumer never got its partitions"
    for _ in range(4):
        for batch in consumer.poll(timeout_ms=250).values():
            records.extend(batch)
    return records


def test_create_topic_with_four_partitions(broker):
    broker.create_topics(["playlist-events"])
    broker.create_topics(["playlist-events"])  # already there: not an error

    with KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers) as admin:
        (topic,) = admin.describe_topics(["playlist-events"])
    assert topic["error_code"] == 0
    assert sorted(p["partition_index"] for p in topic["partitions"]) == [0, 1, 2, 3]
    assert all(p["leader_id"] == 1 for p in topic["partitions"])


def test_keyed_json_round_trip_through_a_consumer_group(broker):
    broker.create_topics(["round-trip"])
    produce_events(broker, "round-trip", MESSAGES)

    consumer = group_consumer(broker, "round-trip", "round-trip-readers")
    try:
        records = consume(consumer, MESSAGES)
        consumer.commit()
    finally:
        consumer.close(autocommit=False)

    assert len(records) == MESSAGES
    assert sorted(r.value["seq"] for r in records) == list(range(MESSAGES))
    assert all(r.key == r.value["user"] == f"user-{r.value['seq'] % USERS}" for r in records)
    # Keys decide partitions: every user's events sit in one partition, in the order they were sent.
    partitions_by_user: dict[str, set[int]] = {}
    for record in records:
        partitions_by_user.setdefault(record.key, set()).add(record.partition)
    assert len(partitions_by_user) == USERS
    assert all(len(partitions) == 1 for partitions in partitions_by_user.values())
    assert len({r.partition for r in records}) > 1
    for user in partitions_by_user:
        seqs = [r.value["seq"] for r in records if r.key == user]
        assert seqs == sorted(seqs)

    second = group_consumer(broker, "round-trip", "round-trip-readers")
    try:
        assert consume_nothing_new(second, partitions=4) == []
        committed = sum(second.committed(TopicPartition("round-trip", p)) for p in range(4))
    finally:
        second.close(autocommit=False)
    assert committed == MESSAGES


@pytest.mark.parametrize("shutdown", ["stop", "kill"])
def test_restart_keeps_messages_and_committed_offsets(broker, shutdown):
    topic, group = f"durable-{shutdown}", f"durable-{shutdown}-readers"
    broker.create_topics([topic])
    produce_events(broker, topic, 100)
    consumer = group_consumer(broker, topic, group)
    try:
        assert len(consume(consumer, 100)) == 100
        consumer.commit()
    finally:
        consumer.close(autocommit=False)

    # A clean stop, or a crash that leaves the logs for the next start to recover.
    getattr(broker, shutdown)()
    assert broker.pid is None
    broker.start()

    produce_events(broker, topic, 10, first=100)
    consumer = group_consumer(broker, topic, group)
    try:
        after_restart = consume(consumer, 10)
    finally:
        consumer.close(autocommit=False)
    assert sorted(r.value["seq"] for r in after_restart) == list(range(100, 110))

    fresh_group = group_consumer(broker, topic, f"{group}-fresh")
    try:
        everything = consume(fresh_group, 110)
    finally:
        fresh_group.close(autocommit=False)
    assert sorted(r.value["seq"] for r in everything) == list(range(110))


def test_stream_topics_take_partitions_replication_and_min_insync_replicas_from_settings(broker):
    from kafka.admin import ConfigResource, ConfigResourceType

    from segue.settings import KafkaSettings, SegueSettings, StreamSettings
    from segue.streaming.kafka_clients import TopicSetupError, ensure_topics

    def settings(name: str, **stream) -> SegueSettings:
        return SegueSettings(kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
                             stream=StreamSettings(topic=f"{name}.events", dlq_topic=f"{name}.dlq", **stream))

    ensure_topics(settings("replicated", partitions=3, replication_factor=1, min_insync_replicas=1))
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        described = {t["name"]: t for t in admin.describe_topics(["replicated.events", "replicated.dlq"])}
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "replicated.events")])
    finally:
        admin.close()
    assert {name: len(t["partitions"]) for name, t in described.items()} == {"replicated.events": 3, "replicated.dlq": 3}
    assert all(p["replica_nodes"] == [1] for t in described.values() for p in t["partitions"])
    # set on the topic itself, not left to the broker's default
    assert configs["topic"]["replicated.events"]["min.insync.replicas"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    # A cluster of one broker cannot hold two copies: refused, with the setting that fixes it.
    with pytest.raises(TopicSetupError, match="only 1 broker.* Set stream.replication_factor"):
        ensure_topics(settings("overreplicated", replication_factor=2))


def test_min_insync_replicas_above_the_replication_factor_is_a_configuration_error():
    from pydantic import ValidationError

    from segue.settings import StreamSettings

    with pytest.raises(ValidationError, match="no write could ever succeed"):
        StreamSettings(replication_factor=2, min_insync_replicas=3)
