"""The daemon's batch loop against stand-ins for Kafka and the stores (no services needed): an event
that fails every write on its own is isolated to the dead letters while the stores answer, and a
store that is away is waited for, never blamed on the data. And the offline record, which is files:
a batch written again replaces its files. test_stream.py runs the real engines."""

from __future__ import annotations

import json
import threading
from collections import Counter, namedtuple

import pandas as pd
import pyarrow.parquet as pq

from segue.settings import StreamSettings
from segue.streaming.consumer_daemon import StreamDaemon
from segue.streaming.daemon_metrics import DaemonHealth, StreamMetrics
from segue.streaming.events import Origin, new_event
from segue.streaming.track_sink import OfflineRecord, SinkReport, SinkWriteError

Record = namedtuple("Record", "topic partition offset key value")
TRACK = {"track_name": "Song", "artist_uri": "spotify:artist:" + "b" * 22, "artist_name": "Artist",
         "album_uri": "spotify:album:" + "c" * 22, "album_name": "Album", "duration_ms": 200_000}


def uri(i: int) -> str:
    return f"spotify:track:{i:022d}"


class OneBatchConsumer:
    """Hands out one batch of records, then nothing."""

    def __init__(self, records):
        self.records, self.committed = records, {}

    def poll(self, timeout_ms, max_records):
        records, self.records = self.records, []
        return {"tp": records} if records else {}

    def assignment(self):
        return {"tp"}

    def highwater(self, tp):
        return None

    def group_metadata(self):
        return "group"

    def close(self, autocommit=False):
        pass


class Producer:
    """A transactional producer: dead letters and offsets become visible only on commit."""

    def __init__(self, consumer):
        self.consumer, self.sent, self._pending = consumer, [], None

    def begin_transaction(self):
        assert self._pending is None, "a transaction is already open"
        self._pending = ([], {})

    def send(self, topic, key, value):
        self._pending[0].append(json.loads(value))

    def send_offsets_to_transaction(self, offsets, group_metadata):
        self._pending[1].update({tp.partition: o.offset for tp, o in offsets.items()})

    def commit_transaction(self):
        letters, offsets = self._pending
        self.sent += letters
        self.consumer.committed.update(offsets)
        self._pending = None

    def abort_transaction(self):
        self._pending = None

    def flush(self, timeout):
        pass

    def close(self, timeout):
        pass


class Sink:
    """Fails any write holding a poisoned URI (as a store refusing a value would), or every write
    while `away`; records what was written."""

    def __init__(self, poisoned=(), away=False):
        self.poisoned, self.away, self.written, self.calls = set(poisoned), away, [], 0

    def stores_answer(self):
        return not self.away

    def write(self, events, origins=None):
        self.calls += 1
        uris = [e.track.track_uri for e in events]
        if self.away or self.poisoned & set(uris):
            raise SinkWriteError("feast_push", ValueError("Value out of range"))
        self.written += uris
        return SinkReport(indexed=len(uris))


def daemon_for(n, sink, stop=None):
    records = [Record("t", 0, i, uri(i).encode(), json.dumps(new_event({**TRACK, "track_uri": uri(i)})).encode())
               for i in range(n)]
    consumer = OneBatchConsumer(records)
    producer = Producer(consumer)
    stream = StreamSettings(retry_initial_s=0.01, retry_max_s=0.01, isolate_after_failures=2, health_port=None)
    daemon = StreamDaemon(stream, consumer, producer, sink, StreamMetrics(), DaemonHealth(),
                               stop or threading.Event())
    return daemon, consumer, producer


def test_an_event_that_fails_alone_is_isolated_and_the_rest_is_written_and_committed():
    sink = Sink(poisoned={uri(3), uri(9)})
    stop = threading.Event()
    daemon, consumer, producer = daemon_for(12, sink, stop)
    threading.Timer(10, stop.set).start()  # a daemon stuck retrying fails the test instead of hanging it
    report = daemon.run(until_idle_s=0.2)
    assert not report.interrupted
    assert sorted(sink.written) == sorted(uri(i) for i in range(12) if i not in (3, 9))
    assert [(d["offset"], d["reason"].split(":")[0]) for d in sorted(producer.sent, key=lambda d: d["offset"])] == [
        (3, "write stage feast_push"), (9, "write stage feast_push")]
    assert "Value out of range" in producer.sent[0]["reason"]
    assert consumer.committed == {0: 12} and report.dead_letters == 2 and report.sink.indexed == 10


def test_a_store_that_is_away_is_waited_for_and_nothing_goes_to_the_dead_letters():
    sink = Sink(away=True)
    stop = threading.Event()
    daemon, consumer, producer = daemon_for(5, sink, stop)
    threading.Timer(0.5, stop.set).start()
    report = daemon.run()
    assert report.interrupted and sink.calls > 5  # retried for as long as it ran
    assert producer.sent == [] and consumer.committed == {} and sink.written == []


def test_the_offline_record_holds_each_event_once_through_retries_and_replays(tmp_path):
    record = OfflineRecord(tmp_path / "features", tmp_path / "stream")

    def write(offsets, partition=0):
        frame = pd.DataFrame({"track_uri": [uri(o) for o in offsets], "popularity": offsets})
        origins = [Origin("t", partition, o) for o in offsets]
        record.append(frame, origins, {("t", partition): (min(offsets), max(offsets))})

    write(list(range(100, 600)))  # written, then the batch failed at a later stage
    write(list(range(100, 350)))  # isolated in halves on the retry
    write(list(range(350, 600)))
    write(list(range(100, 800)))  # replayed after a crash, with more of the backlog
    write(list(range(800, 900)))  # the next batch
    write(list(range(0, 50)), partition=1)
    for folder in record.folders:
        counts = Counter(pq.read_table(folder).column("track_uri").to_pylist())
        assert counts == Counter([uri(o) for o in range(100, 900)] + [uri(o) for o in range(50)])
