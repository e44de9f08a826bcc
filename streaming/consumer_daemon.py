"""`segue stream run`: the consumer daemon that indexes new tracks and applies playlist edits
within seconds.

Each micro-batch, from both topics: poll (bounded) -> validate (bad events to the dead-letter
topic, counted) -> StreamSink (tracks: Feast push, offline record, Milvus upsert; edits: the
playlists' features updated, pushed and recorded) -> one Kafka transaction: the batch's dead
letters and its offsets. Offsets move only after every write of the batch succeeded, so a crash
replays the batch (at-least-once), and the writes are idempotent (tracks by URI, newest event
winning; an edit applies only after its playlist's stored state): each track ends up in the index
once, and each edit changes its playlist once. Dead letters are committed with the offsets, so a
replayed batch's dead letters replace an aborted transaction's, never add to committed ones.

A write that fails is retried with back-off while a store is away. When it keeps failing although
the stores answer, the batch is split in halves until the events that fail on their own are found:
they go to the dead-letter topic with the stage and the error, the rest is written and committed,
so one poison event never stalls its partition.

Scale-out is Kafka's: start more daemons with the same `stream.group_id`, up to one per partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata, TopicPartition

from segue.settings import SegueSettings, StreamSettings
from segue.streaming.daemon_metrics import DaemonHealth, StreamMetrics
from segue.streaming.events import DeadLetter, EventError, Origin, PlaylistEditEvent, TrackEvent, parse_event
from segue.streaming.stream_sink import StreamSink
from segue.streaming.track_sink import SinkReport

_LOGGER = logging.getLogger(__name__)


class Interrupted(Exception):
    """Stop was requested while a batch was still failing: leave it uncommitted for a replay."""


@dataclass
class ParsedBatch:
    events: list[TrackEvent | PlaylistEditEvent] = field(default_factory=list)
    records: list[ConsumerRecord] = field(default_factory=list)  # the message of each event
    dead: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)


def _origin(r: ConsumerRecord) -> Origin:
    return Origin(r.topic, r.partition, r.offset)


def _dead_letter(reason: str, r: ConsumerRecord) -> DeadLetter:
    return DeadLetter(reason, r.topic, r.partition, r.offset, r.key, r.value)


def parse_records(records: Sequence[ConsumerRecord], max_ahead_s: float | None = None,
                  edit_topic: str | None = None) -> ParsedBatch:
    """Track events, and playlist edits from `edit_topic`."""
    batch = ParsedBatch()
    for r in records:
        try:
            kind = PlaylistEditEvent if r.topic == edit_topic else TrackEvent
            batch.events.append(parse_event(r.value, max_ahead_s, kind=kind))
            batch.records.append(r)
        except EventError as e:
            batch.dead.append(_dead_letter(f"validate: {e}", r))
        tp = TopicPartition(r.topic, r.partition)
        batch.next_offsets[tp] = max(batch.next_offsets.get(tp, 0), r.offset + 1)
    return batch


@dataclass
class RunReport:
    batches: int = 0
    events: int = 0
    dead_letters: int = 0
    sink: SinkReport = field(default_factory=SinkReport)
    interrupted: bool = False


class StreamDaemon:
    """The poll -> validate -> write -> commit loop; `stop` (SIGTERM) ends it after the batch in hand."""

    def __init__(self, stream: StreamSettings, consumer: KafkaConsumer, producer: KafkaProducer,
                 sink: StreamSink, metrics: StreamMetrics, health: DaemonHealth, stop: threading.Event):
        self.stream = stream
        self.consumer = consumer
        self.producer = producer
        self.sink = sink
        self.metrics = metrics
        self.health = health
        self.stop = stop

    def run(self, until_idle_s: float | None = None) -> RunReport:
        """Runs until `stop` is set, or until no event came for `until_idle_s` (demo, benchmarks)."""
        report = RunReport()
        idle_since = time.monotonic()
        self._unassigned_since: float | None = None
        try:
            while not self.stop.is_set():
                self.health.beat()
                polled = self.consumer.poll(timeout_ms=self.stream.poll_timeout_ms,
                                            max_records=self.stream.max_batch)
                records = [r for part in polled.values() for r in part]
                self._measure_lag()
                self._rejoin_if_stranded()
                if not records:
                    if not self.consumer.assignment():
                        # Joining the group (after a crash, until the dead member's session expires)
                        # is not idleness: the partitions may still hold a backlog.
                        idle_since = time.monotonic()
                    elif until_idle_s is not None and time.monotonic() - idle_since > until_idle_s:
                        break
                    continue
                if not self._process(records, report):
                    report.interrupted = True
                    break
                idle_since = time.monotonic()
        finally:
            self._close()
        _LOGGER.info("stream daemon stopped", extra={"batches": report.batches, "events": report.events,
                                                     "indexed": report.sink.indexed, "edited": report.sink.edited,
                                                     "dead_letters": report.dead_letters})
        return report

    def _process(self, records: Sequence[ConsumerRecord], report: RunReport) -> bool:
        started = time.monotonic()
        batch = parse_records(records, self.stream.max_event_ahead_s, self.stream.playlist_topic)
        failures = 0

        def write() -> SinkReport:
            nonlocal failures
            try:
                return self._write(batch)
            except Exception:
                failures += 1
                if failures < self.stream.isolate_after_failures or not self.sink.stores_answer():
                    raise
                return self._write_isolating(batch)

        try:
            written = self._retrying("write", write)
            self._retrying("commit", lambda: self._commit(batch))
        except Interrupted:
            return False
        now = time.time()
        for e in batch.events:
            self.metrics.freshness.observe(max(0.0, now - e.event_time.timestamp()))
        self.metrics.events.inc("indexed", written.indexed)
        self.metrics.events.inc("edited", written.edited)
        self.metrics.events.inc("superseded", written.superseded)
        self.metrics.events.inc("dead_letter", len(batch.dead))
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        for stage, seconds in written.stage_seconds.items():
            self.metrics.stage_seconds.observe(seconds, stage)
        self.metrics.committed(len(records), now)
        report.batches += 1
        report.events += len(records)
        report.dead_letters += len(batch.dead)
        report.sink.add(written)
        if batch.dead:
            _LOGGER.warning("events rejected to the dead-letter topic",
                            extra={"topic": self.stream.dlq_topic, "count": len(batch.dead),
                                   "first": {"partition": batch.dead[0].partition, "offset": batch.dead[0].offset,
                                             "reason": batch.dead[0].reason[:300]}})
        return True

    def _write(self, batch: ParsedBatch) -> SinkReport:
        return self.sink.write(batch.events, [_origin(r) for r in batch.records])

    def _write_isolating(self, batch: ParsedBatch) -> SinkReport:
        """Writes the batch in halves, down to single events; an event that fails alone while the
        stores answer becomes a dead letter. Raises (back to retrying) when nothing could be written
        at all, since that looks like a store failing rather than the data."""
        report, poison = SinkReport(), []
        self._bisect(list(zip(batch.events, batch.records)), report, poison)
        if poison and (len(poison) == len(batch.events) > 1 or not self.sink.stores_answer()):
            raise RuntimeError(f"every part of the batch failed ({poison[0][2]}); retrying it whole")
        # Out of the batch for good: a retry of what follows never writes or dead-letters them twice.
        isolated = {id(r) for _, r, _ in poison}
        kept = [(e, r) for e, r in zip(batch.events, batch.records) if id(r) not in isolated]
        batch.events, batch.records = [e for e, _ in kept], [r for _, r in kept]
        batch.dead += [_dead_letter(f"write stage {getattr(e, 'stage', 'write')}: {e}", r) for _, r, e in poison]
        if poison:
            _LOGGER.warning("events that fail on their own isolated to the dead-letter topic",
                            extra={"count": len(poison), "written": report.indexed,
                                   "first": {"partition": poison[0][1].partition, "offset": poison[0][1].offset,
                                             "error": str(poison[0][2])[:300]}})
        return report

    def _bisect(self, pairs: list[tuple[TrackEvent | PlaylistEditEvent, ConsumerRecord]], report: SinkReport,
                poison: list[tuple[TrackEvent | PlaylistEditEvent, ConsumerRecord, Exception]]) -> None:
        try:
            report.add(self.sink.write([e for e, _ in pairs], [_origin(r) for _, r in pairs]))
            return
        except Exception as e:  # noqa: BLE001 (narrowed down below)
            if len(pairs) == 1:
                poison.append((*pairs[0], e))
                return
        middle = len(pairs) // 2
        self._bisect(pairs[:middle], report, poison)
        self._bisect(pairs[middle:], report, poison)

    def _commit(self, batch: ParsedBatch) -> None:
        """The batch's dead letters and its offsets in one transaction: both or neither."""
        self.producer.begin_transaction()
        try:
            for d in batch.dead:
                self.producer.send(self.stream.dlq_topic, key=d.key, value=d.to_json())
            self.producer.send_offsets_to_transaction(
                {tp: OffsetAndMetadata(o, "", -1) for tp, o in batch.next_offsets.items()},
                self.consumer.group_metadata())
            self.producer.commit_transaction()
        except CommitFailedError as e:
            self._abort()
            # The group rebalanced while the batch was written: its new owner replays it, and the
            # writes are idempotent, so nothing is lost or doubled.
            _LOGGER.warning("offsets not committed after a rebalance; the batch will be replayed",
                            extra={"error": str(e)[:300]})
        except Exception:
            self._abort()
            raise

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction()
        except Exception as e:  # noqa: BLE001 (a fatal producer error is reported by the next attempt)
            _LOGGER.warning("aborting the transaction failed", extra={"error": str(e)[:300]})

    def _retrying(self, stage: str, attempt: Callable[[], Any]) -> Any:
        delay = self.stream.retry_initial_s
        while True:
            try:
                result = attempt()
                if self.health.failing_since:
                    _LOGGER.info("recovered", extra={"stage": stage})
                self.health.recovered()
                return result
            except Exception as e:  # noqa: BLE001 (any dependency failure: retry, never skip the batch)
                self.metrics.failures.inc(stage)
                self.health.failing(f"{stage}: {type(e).__name__}: {e}")
                _LOGGER.warning("write failed; retrying", extra={"stage": stage, "retry_in_s": delay,
                                                                 "error": f"{type(e).__name__}: {str(e)[:300]}"})
                if self.stop.wait(delay):
                    raise Interrupted() from e
                self.health.beat()
                delay = min(delay * 2, self.stream.retry_max_s)

    def _rejoin_if_stranded(self) -> None:
        """kafka-python 3.0.12 was seen to stop heartbeating after a leader's quick second join and
        to sit in the group with no partitions for good; leaving and rejoining recovers it."""
        if self.consumer.assignment() or not self.stream.rejoin_after_s:
            self._unassigned_since = None
            return
        now = time.monotonic()
        self._unassigned_since = self._unassigned_since or now
        if now - self._unassigned_since > self.stream.rejoin_after_s:
            _LOGGER.warning("no partitions assigned; leaving and rejoining the consumer group",
                            extra={"group": self.stream.group_id, "seconds": round(now - self._unassigned_since)})
            self.consumer.unsubscribe()
            self.consumer.subscribe(self.stream.topics)
            self._unassigned_since = now

    def _measure_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=100)
            except Exception:  # noqa: BLE001 (broker away: the next poll measures again)
                continue
            if position is not None:
                self.metrics.lag.set(f"{tp.topic}/{tp.partition}", max(0, high - position))

    def _close(self) -> None:
        for close in (lambda: self.producer.flush(timeout=10), lambda: self.producer.close(timeout=10),
                      lambda: self.consumer.close(autocommit=False)):
            try:
                close()
            except Exception as e:  # noqa: BLE001 (shutting down: report, keep closing the rest)
                _LOGGER.warning("closing a Kafka client failed", extra={"error": str(e)[:300]})


def open_daemon(settings: SegueSettings, stop: threading.Event) -> StreamDaemon:
    """A daemon on the configured cluster, feature store and index (topics created if missing)."""
    from segue.streaming.kafka_clients import dead_letter_producer, ensure_topics, event_consumer
    from segue.streaming.stream_sink import open_stream_sink

    ensure_topics(settings)
    sink = open_stream_sink(settings)
    sink.warm_up()
    return StreamDaemon(settings.stream, event_consumer(settings), dead_letter_producer(settings),
                             sink, StreamMetrics(), DaemonHealth(), stop)
