"""`segue stream beam`: the daemon's steps as a streaming Beam pipeline, for scale-out on Flink or Dataflow.

    ReadFromKafka | ParseStreamEvents | WriteStreamEvents   (valid tracks and edits -> StreamSink)
                                      | WriteDeadLetters    (the rest -> segue.tracks.dlq)

The steps are the daemon's own (`parse_event`, `DeadLetter`, `StreamSink`), so the two paths cannot
drift apart. A runner does not keep messages in order, so the sink applies a batch's edits of one
playlist in event-time order; an edit reaching it after a newer one of its playlist was applied
is counted as superseded, as in the daemon. Read positions live in the runner's checkpoints (KafkaIO's restriction state), so a
restored job replays from its last checkpoint: at-least-once, made exactly-once in the index by the
sink's idempotent writes. KafkaIO does not also commit them to the consumer group: in Beam 2.62's
Flink runner that step fails with "State backend must be locked" next to
--finish_bundle_before_checkpointing, which the local runner needs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.kafka import ReadFromKafka, ReadFromKafkaSchema, default_io_expansion_service
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.external import ExternalTransform, NamedTupleBasedPayloadBuilder

from segue.settings import SegueSettings, settings_document, source_file, worker_settings
from segue.streaming.events import DeadLetter, EventError, PlaylistEditEvent, TrackEvent, parse_event

_LOGGER = logging.getLogger(__name__)
DEAD = "dead"


class KafkaMessage(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _settings_json(settings: SegueSettings) -> str:
    """The settings that workers rebuild, without secrets: a job graph is shown and stored by the
    runner (Flink's UI, Dataflow's console), so workers take secrets from their own environment
    (SEGUE_INDEX__TOKEN, SEGUE_KAFKA__SASL_PASSWORD, ...) or from the job's settings file where
    they can read it (a local run)."""
    return json.dumps({"document": settings_document(settings, secrets=False), "file": source_file(settings)})


def _worker_settings(settings_json: str) -> SegueSettings:
    job = json.loads(settings_json)
    return worker_settings(job["document"], job["file"])


class _Parse(beam.DoFn):
    def __init__(self, max_ahead_s: float | None, edit_topic: str | None):
        self._max_ahead_s = max_ahead_s
        self._edit_topic = edit_topic

    def process(self, message: KafkaMessage) -> Iterable[Any]:
        kind = PlaylistEditEvent if message.topic == self._edit_topic else TrackEvent
        try:
            yield parse_event(message.value, self._max_ahead_s, kind=kind)
        except EventError as e:
            yield beam.pvalue.TaggedOutput(DEAD, DeadLetter(f"validate: {e}", message.topic, message.partition,
                                                            message.offset, message.key, message.value))


class ParseStreamEvents(beam.PTransform):
    """KafkaMessages -> TrackEvents and PlaylistEditEvents (those of `edit_topic`) as the main
    output, DeadLetters tagged `dead`."""

    def __init__(self, max_ahead_s: float | None = None, edit_topic: str | None = None):
        super().__init__()
        self._max_ahead_s = max_ahead_s
        self._edit_topic = edit_topic

    def expand(self, messages):
        return messages | beam.ParDo(_Parse(self._max_ahead_s, self._edit_topic)).with_outputs(DEAD, main="events")


class _WriteBatch(beam.DoFn):
    def __init__(self, settings_json: str):
        self._settings_json = settings_json

    def setup(self):
        from segue.streaming.stream_sink import open_stream_sink

        self._sink = open_stream_sink(_worker_settings(self._settings_json))

    def process(self, events: Sequence[Any]) -> Iterable[dict]:
        report = self._sink.write(events)  # raises on failure: the runner retries the bundle
        yield {"indexed": report.indexed, "edited": report.edited, "superseded": report.superseded}


class WriteStreamEvents(beam.PTransform):
    """Events -> StreamSink (tracks: Feast push, offline record, Milvus upsert; edits: the playlists'
    features), in batches; emits per-batch counts."""

    def __init__(self, settings: SegueSettings):
        super().__init__()
        self._settings_json = _settings_json(settings)
        self._max_batch = settings.stream.max_batch

    def expand(self, events):
        return (events
                | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._max_batch)
                | "Write" >> beam.ParDo(_WriteBatch(self._settings_json)))


class _SendDeadLetter(beam.DoFn):
    def __init__(self, settings_json: str):
        self._settings_json = settings_json

    def setup(self):
        from segue.streaming.kafka_clients import event_producer

        self._settings = _worker_settings(self._settings_json)
        self._producer = event_producer(self._settings)

    def process(self, dead: DeadLetter) -> Iterable[DeadLetter]:
        self._producer.send(self._settings.stream.dlq_topic, key=dead.key, value=dead.to_json()).get(timeout=30)
        yield dead

    def teardown(self):
        self._producer.close(timeout=10)


class WriteDeadLetters(beam.PTransform):
    """DeadLetters -> the dead-letter topic (acknowledged by the broker before the bundle ends)."""

    def __init__(self, settings: SegueSettings):
        super().__init__()
        self._settings_json = _settings_json(settings)

    def expand(self, dead):
        return dead | beam.ParDo(_SendDeadLetter(self._settings_json))


class ApplyStreamEvents(beam.PTransform):
    """KafkaMessages -> the index, the playlists' features and the dead-letter topic; returns
    (batch counts, dead letters)."""

    def __init__(self, settings: SegueSettings):
        super().__init__()
        self._settings = settings

    def expand(self, messages):
        stream = self._settings.stream
        parsed = messages | "Parse" >> ParseStreamEvents(stream.max_event_ahead_s, stream.playlist_topic)
        written = parsed.events | "WriteStreamEvents" >> WriteStreamEvents(self._settings)
        dead = parsed[DEAD] | "WriteDeadLetters" >> WriteDeadLetters(self._settings)
        return written, dead


def _as_message(row) -> KafkaMessage:
    return KafkaMessage(row.topic, int(row.partition), int(row.offset), row.key, row.value)


# The KafkaIO read configuration that Beam Java 2.62 (the local job server, streaming/flink/pom.xml)
# accepts: the Python SDK 2.77 adds three fields it has no setters for.
_KAFKA_READ_FIELDS = [(name, kind) for name, kind in ReadFromKafkaSchema.__annotations__.items()
                      if name not in ("dynamic_read_poll_interval_seconds", "consumer_factory_fn_class",
                                      "consumer_factory_fn_params")]
KafkaReadConfig = NamedTuple("KafkaReadConfig", _KAFKA_READ_FIELDS)


class ReadStreamMessages(beam.PTransform):
    """The track and playlist-edit topics via Beam's cross-language KafkaIO, with each record's
    topic, partition and offset."""

    def __init__(self, settings: SegueSettings, expansion_service: str | None = None):
        super().__init__()
        self._settings = settings
        self._expansion_service = expansion_service

    def consumer_config(self) -> dict[str, str]:
        """The Java consumer's properties. They travel in the job graph, so credentials stay on the
        workers: the JAAS line is a reference that Kafka's FileConfigProvider resolves there."""
        kafka = self._settings.kafka
        consumer = {"bootstrap.servers": kafka.bootstrap_servers, "security.protocol": kafka.security_protocol,
                    "group.id": self._settings.stream.group_id + "-beam", "auto.offset.reset": "earliest",
                    "enable.auto.commit": "false"}
        if kafka.sasl_mechanism:
            if kafka.sasl_jaas_file is None:
                raise ValueError(
                    f"kafka.sasl_mechanism is {kafka.sasl_mechanism}, but the Beam pipeline never puts "
                    "kafka.sasl_password into its job graph: write the line `sasl.jaas.config=<your JAAS "
                    "login line>` into a file the workers can read and set kafka.sasl_jaas_file to it "
                    "(the consumer daemon, `segue stream run`, uses kafka.sasl_password directly)")
            consumer.update({"sasl.mechanism": kafka.sasl_mechanism, "config.providers": "file",
                             "config.providers.file.class":
                                 "org.apache.kafka.common.config.provider.FileConfigProvider",
                             "sasl.jaas.config": f"${{file:{kafka.sasl_jaas_file}:sasl.jaas.config}}"})
        return consumer

    def expand(self, pbegin):
        bytes_in = ReadFromKafka.byte_array_deserializer
        config = KafkaReadConfig(
            consumer_config=self.consumer_config(), topics=self._settings.stream.topics,
            key_deserializer=bytes_in, value_deserializer=bytes_in, start_read_time=None, max_num_records=None,
            max_read_time=None, commit_offset_in_finalize=False, timestamp_policy=ReadFromKafka.processing_time_policy,
            consumer_polling_timeout=1, redistribute=False, redistribute_num_keys=np.int32(0),
            allow_duplicates=False)
        return (pbegin
                | ExternalTransform(ReadFromKafka.URN_WITH_METADATA, NamedTupleBasedPayloadBuilder(config),
                                    self._expansion_service or default_io_expansion_service())
                | "AsMessages" >> beam.Map(_as_message))


def stream_pipeline_options(settings: SegueSettings, extra: Sequence[str] = ()) -> PipelineOptions:
    options = PipelineOptions([f"--runner={settings.stream.beam_runner}", *settings.stream.beam_options, *extra])
    options.view_as(StandardOptions).streaming = True
    return options


def run_stream_pipeline(settings: SegueSettings, options: PipelineOptions, source: beam.PTransform | None = None,
                        wait: bool = True):
    """Runs ReadStreamMessages (or `source`) | ApplyStreamEvents on the configured runner."""
    pipeline = beam.Pipeline(options=options)
    messages = pipeline | "Read" >> (source or ReadStreamMessages(settings))
    _ = messages | "Index" >> ApplyStreamEvents(settings)
    result = pipeline.run()
    if wait:
        result.wait_until_finish()
    return result
