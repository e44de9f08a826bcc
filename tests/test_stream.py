"""The stream against a real Kafka broker, a real Milvus server and a real Feast repo: 10,000 events
with 2% malformed, kill -9 mid-batch, a Milvus outage, a broker restart, updates, and the Beam pipeline."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.structs import TopicPartition

from fault_proxy import FaultProxy
from segue.features.online import lookup
from segue.features.store import open_store
from segue.indexing.milvus_connection import open_client
from segue.indexing.rebuild import rebuild_index
from segue.sample_world import private_feature_repo
from segue.settings import IndexSettings, KafkaSettings, StreamSettings, settings_document
from segue.streaming.consumer_daemon import open_daemon
from segue.streaming.daemon_metrics import serve_health
from segue.streaming.events import new_event
from segue.streaming.kafka_broker import KafkaBroker
from segue.local_ports import free_port
from segue.streaming.kafka_clients import ensure_topics
from segue.training.export import load_tower

pytestmark = [pytest.mark.spark, pytest.mark.slow]
KEY = "track_uri"
TRACK_FIELDS = ["track_name", "artist_uri", "artist_name", "album_uri", "album_name", "duration_ms", "popularity",
                "explicit", "release_year", "danceability", "energy", "speechiness", "acousticness",
                "instrumentalness", "liveness", "valence", "loudness", "tempo", "key", "mode", "time_signature",
                "artist_genres", "artist_popularity", "artist_followers"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with KafkaBroker(tmp_path_factory.mktemp("kafka"), port=free_port()).start() as b:
        yield b


@pytest.fixture(scope="module")
def streamed(world, trained, milvus_server, broker, spark, tmp_path_factory):
    """A private copy of the world's features and Feast repo, an index on the Milvus server, the broker."""
    settings, _ = world
    model, _ = trained
    root = tmp_path_factory.mktemp("stream")
    s = private_feature_repo(settings, root, spark).model_copy(update={
        "index": IndexSettings(profile="cpu_hnsw", uri=milvus_server, alias="streamtest", validation_queries=50),
        "kafka": KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
        "stream": StreamSettings(health_port=None, retry_initial_s=0.2, retry_max_s=1.0)})
    rebuild_index(s, open_store(s), model.path)
    return s, open_store(s), model.path


def for_test(settings, name: str, **stream):
    """Settings with this test's own topics and consumer group."""
    update = {"topic": f"{name}.new", "dlq_topic": f"{name}.dlq", "group_id": f"{name}-group", **stream}
    return settings.model_copy(update={"stream": settings.stream.model_copy(update=update)})


def catalogue_rows(settings, n: int) -> list[dict]:
    table = pq.read_table(Path(settings.paths.features_dir) / "track_features").slice(0, n)
    return table.select([KEY, *TRACK_FIELDS]).to_pylist()


def new_tracks(settings, n: int, tag: str) -> list[dict]:
    """n tracks nobody has seen: catalogue rows under fresh URIs."""
    base = catalogue_rows(settings, 500)
    tracks = []
    for i in range(n):
        uri = "spotify:track:" + hashlib.sha256(f"{tag}-{i}".encode()).hexdigest()[:22]
        tracks.append({**base[i % len(base)], KEY: uri, "track_name": f"{tag} song {i}"})
    return tracks


MALFORMED = [
    (b"{not json", "not JSON"),
    (json.dumps({"schema_version": 2}).encode(), "schema_version 2 is not supported"),
    ("missing_name", "track.track_name: Field required"),
    ("popularity_101", "track.popularity: Input should be less than or equal to 100"),
    ("short_uri", "track.track_uri: String should match pattern"),
    (None, "tombstone"),
    (b"[1, 2, 3]", "not a JSON object"),
]


def malformed(track: dict, kind: int) -> bytes | None:
    value, _ = MALFORMED[kind]
    if not isinstance(value, str):
        return value
    event = new_event(dict(track))
    if value == "missing_name":
        del event["track"]["track_name"]
    elif value == "popularity_101":
        event["track"]["popularity"] = 101
    else:
        event["track"][KEY] = "spotify:track:short"
    return json.dumps(event).encode()


def send(settings, items: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=5)
    futures = [producer.send(settings.stream.topic, key=k, value=v) for k, v in items]
    producer.flush()
    for f in futures:
        f.get(timeout=30)
    producer.close()


def good(event: dict) -> tuple[bytes, bytes]:
    return event["track"][KEY].encode(), json.dumps(event).encode()


def index_rows(settings, uris: list[str], fields=(KEY, "event_time_us", "popularity")) -> list[dict]:
    client = open_client(settings)
    rows = []
    for s in range(0, len(uris), 1000):
        chunk = uris[s:s + 1000]
        rows += client.query(settings.index.alias, filter=f"{KEY} in {json.dumps(chunk)}",
                             output_fields=list(fields), consistency_level="Strong")
    return rows


def assert_exactly_once(settings, uris: list[str]) -> None:
    counts = Counter(r[KEY] for r in index_rows(settings, uris))
    missing = [u for u in uris if u not in counts]
    doubled = [u for u, n in counts.items() if n > 1]
    assert not missing and not doubled, f"{len(missing)} missing, {len(doubled)} doubled"


def assert_recorded_once(settings, uris: list[str]) -> None:
    """The offline record (what the next batch run and training read) holds each track once."""
    wanted = set(uris)
    record = pq.read_table(Path(settings.paths.stream_dir) / "track_features", columns=[KEY]).column(KEY)
    counts = Counter(u for u in record.to_pylist() if u in wanted)
    assert counts == Counter(uris), (f"{len(wanted - set(counts))} missing, "
                                     f"{sum(n > 1 for n in counts.values())} doubled")


def committed_lag(settings) -> int:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    committed = admin.list_group_offsets(settings.stream.group_id).get(settings.stream.group_id, {})
    admin.close()
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    parts = [TopicPartition(settings.stream.topic, p) for p in consumer.partitions_for_topic(settings.stream.topic)]
    ends = consumer.end_offsets(parts)
    consumer.close()
    return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in parts)


def read_topic(settings, topic: str, expected: int, timeout_s: float = 30) -> list[dict]:
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap_servers, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=int(timeout_s * 1000))
    out = []
    for message in consumer:
        out.append(json.loads(message.value))
        if len(out) >= expected:
            break
    consumer.close()
    return out


def run_daemon(settings, until_idle_s: float = 4.0):
    stop = threading.Event()
    daemon = open_daemon(settings, stop)
    return daemon, daemon.run(until_idle_s)


def test_ten_thousand_events_with_two_percent_malformed(streamed):
    settings, store, _ = streamed
    s = for_test(settings, "bulk")
    ensure_topics(s)
    tracks = new_tracks(s, 9800, "bulk")
    items, bad = [], []
    for i, track in enumerate(tracks):
        items.append(good(new_event(track)))
        if i % 49 == 48:  # 200 malformed ones, spread through the stream
            kind = len(bad) % len(MALFORMED)
            bad.append(kind)
            items.append((track[KEY].encode(), malformed(track, kind)))
    assert len(items) == 10_000 and len(bad) == 200
    send(s, items)

    daemon = open_daemon(s, threading.Event())
    server = serve_health(daemon.metrics, daemon.health, 0)
    report = daemon.run(until_idle_s=4.0)

    assert report.events == 10_000
    assert report.sink.indexed + report.sink.superseded + report.dead_letters == 10_000
    assert report.dead_letters == 200 and report.sink.indexed == 9800
    assert_exactly_once(s, [t[KEY] for t in tracks])
    assert committed_lag(s) == 0

    dead = read_topic(s, s.stream.dlq_topic, 200)
    assert len(dead) == 200
    assert len({(d["partition"], d["offset"]) for d in dead}) == 200
    reasons = Counter(next(text for _, text in MALFORMED if text in d["reason"]) for d in dead)
    assert sorted(reasons.values()) == sorted(Counter(bad).values())
    assert all(d["topic"] == s.stream.topic for d in dead)

    # Feast serves the new tracks online, and the offline record holds each of them.
    rows = lookup(store, "track_candidate_v1", KEY, [t[KEY] for t in tracks[:50]])
    assert all(r.found and r.features["track_name"] == t["track_name"] for r, t in zip(rows, tracks))
    record = pq.read_table(Path(s.paths.stream_dir) / "track_features").column(KEY).to_pylist()
    assert Counter(record) == Counter(t[KEY] for t in tracks)

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics").read().decode()
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/healthz").read())
    server.shutdown()
    assert 'segue_stream_events_total{outcome="dead_letter"} 200.0' in metrics
    assert 'segue_stream_events_total{outcome="indexed"} 9800.0' in metrics
    assert "segue_stream_freshness_seconds_bucket" in metrics and health["status"] == "ok"


def test_poison_events_go_to_the_dead_letters_and_the_good_ones_are_indexed(streamed):
    """The reproduced stall: a follower count no store can hold (and a far-future time, which would
    win every later update) among good events. Before: the daemon retried the batch for ever."""
    settings, _, _ = streamed
    s = for_test(settings, "poison")
    ensure_topics(s)
    tracks = new_tracks(s, 7, "poison")
    huge = new_event({**tracks[2], "artist_followers": 10**30})
    ahead = new_event(tracks[5], event_time=datetime.now(timezone.utc) + timedelta(days=400))
    send(s, [good(e) for e in [new_event(tracks[0]), new_event(tracks[1]), huge, new_event(tracks[3]),
                               new_event(tracks[4]), ahead, new_event(tracks[6])]])
    _, report = run_daemon(s)

    assert (report.sink.indexed, report.dead_letters) == (5, 2)
    good_uris = [t[KEY] for i, t in enumerate(tracks) if i not in (2, 5)]
    assert_exactly_once(s, good_uris)
    assert not index_rows(s, [tracks[2][KEY], tracks[5][KEY]])
    assert committed_lag(s) == 0
    dead = read_topic(s, s.stream.dlq_topic, 2)
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 2 and all(r.startswith("validate: ") for r in reasons)
    assert "track.artist_followers" in reasons[0] + reasons[1] and "stream.max_event_ahead_s" in reasons[0] + reasons[1]


def test_kill_minus_9_mid_batch_loses_and_doubles_nothing(streamed, tmp_path):
    settings, _, _ = streamed
    s = for_test(settings, "crash", max_batch=100)
    ensure_topics(s)
    tracks = new_tracks(s, 4000, "crash")
    send(s, [good(new_event(t)) for t in tracks])
    config = tmp_path / "segue.yaml"
    config.write_text(yaml.safe_dump(settings_document(s)))
    env = {**os.environ, "SEGUE_CONFIG": str(config)}
    command = [str(Path(sys.executable).parent / "segue"), "stream", "run"]  # as users start it

    daemon = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    uris = [t[KEY] for t in tracks]
    deadline = time.monotonic() + 180
    seen = 0
    while time.monotonic() < deadline and seen < 400:
        time.sleep(0.2)
        seen = len(index_rows(s, uris, fields=(KEY,)))
    assert daemon.poll() is None, daemon.stderr.read().decode()[-3000:]
    daemon.send_signal(signal.SIGKILL)
    daemon.wait()
    assert 0 < seen < len(uris), "the kill must land while the stream is half-way"
    assert committed_lag(s) > 0

    again = subprocess.run([*command, "--until-idle", "5"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["dead_letters"] == 0
    assert_exactly_once(s, uris)
    assert committed_lag(s) == 0
    assert_recorded_once(s, uris)


@pytest.mark.parametrize("fault", ["cut", "hang"])
def test_milvus_outage_waits_then_catches_up(streamed, fault):
    """Milvus down (connections refused) or hung (connections open, no answer): the daemon retries
    without committing, each hung call given up after `stream.write_timeout_s`, then catches up."""
    settings, _, _ = streamed
    host, port = settings.index.uri.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port))
    s = for_test(settings, f"outage-{fault}", write_timeout_s=2.0)
    s = s.model_copy(update={"index": s.index.model_copy(update={"uri": f"http://127.0.0.1:{proxy.port}"})})
    ensure_topics(s)
    tracks = new_tracks(s, 1000, f"outage-{fault}")
    stop = threading.Event()
    daemon = open_daemon(s, stop)
    runner = threading.Thread(target=daemon.run, kwargs={"until_idle_s": None})
    runner.start()
    try:
        send(s, [good(new_event(t)) for t in tracks[:500]])
        wait_for(lambda: len(index_rows(settings, [t[KEY] for t in tracks[:500]], (KEY,))) == 500, 60)
        if fault == "cut":
            proxy.cut()
        else:
            proxy.hang()
        send(s, [good(new_event(t)) for t in tracks[500:]])
        wait_for(lambda: daemon.metrics.failures.value("write") >= 2, 60)
        assert daemon.health.report()[0] == 503
        assert committed_lag(s) == 500  # nothing committed while Milvus is away
        proxy.restore()
        wait_for(lambda: committed_lag(s) == 0, 120)
        assert daemon.health.report()[0] == 200
    finally:
        stop.set()
        runner.join(60)
        proxy.close()
    assert_exactly_once(settings, [t[KEY] for t in tracks])
    assert_recorded_once(settings, [t[KEY] for t in tracks])  # the record was written before each failed upsert


def test_broker_restart_resumes(streamed, broker):
    settings, _, _ = streamed
    s = for_test(settings, "restart")
    ensure_topics(s)
    tracks = new_tracks(s, 600, "restart")
    stop = threading.Event()
    daemon = open_daemon(s, stop)
    runner = threading.Thread(target=daemon.run, kwargs={"until_idle_s": None})
    runner.start()
    try:
        send(s, [good(new_event(t)) for t in tracks[:300]])
        wait_for(lambda: daemon.metrics.total("indexed") == 300, 60, lambda: daemon.metrics.total("indexed"))
        wait_for(lambda: committed_lag(s) == 0, 30, lambda: committed_lag(s))
        broker.stop()
        time.sleep(3)
        broker.start()
        send(s, [good(new_event(t)) for t in tracks[300:]])
        wait_for(lambda: daemon.metrics.total("indexed") == 600, 120, lambda: daemon.metrics.total("indexed"))
        wait_for(lambda: committed_lag(s) == 0, 60, lambda: committed_lag(s))
    finally:
        stop.set()
        runner.join(60)
    assert_exactly_once(s, [t[KEY] for t in tracks])


def test_update_event_replaces_vector_and_features_and_a_late_event_does_not(streamed):
    settings, store, model_path = streamed
    s = for_test(settings, "update")
    ensure_topics(s)
    track = catalogue_rows(s, 1)[0]
    uri = track[KEY]
    before = index_rows(s, [uri], (KEY, "popularity", "embedding"))[0]
    changed = {**track, "popularity": (track["popularity"] + 37) % 100, "track_name": "Renamed",
               "artist_genres": ["brand new genre"]}
    late = {**track, "popularity": 1}
    now = datetime.now(timezone.utc)
    send(s, [good(new_event(changed, now)), good(new_event(late, now - timedelta(hours=1)))])
    _, report = run_daemon(s)
    assert report.sink.indexed == 1 and report.sink.superseded == 1

    after = index_rows(s, [uri], (KEY, "popularity", "embedding", "genres", "source"))
    assert len(after) == 1 and after[0]["popularity"] == changed["popularity"] and after[0]["source"] == "stream"
    online = lookup(store, "track_candidate_v1", KEY, [uri])[0].features
    assert online["popularity"] == changed["popularity"] and online["track_name"] == "Renamed"
    expected = load_tower(model_path / "candidate").embed({**{k: [v] for k, v in online.items()}, KEY: [uri]})[0]
    expected /= np.linalg.norm(expected)
    assert np.allclose(after[0]["embedding"], expected, atol=1e-4)
    assert not np.allclose(after[0]["embedding"], before["embedding"], atol=1e-4)


def test_beam_pipeline_shares_the_daemons_steps(streamed):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from segue.streaming.beam_pipeline import KafkaMessage, run_stream_pipeline

    settings, store, _ = streamed
    s = for_test(settings, "beam")
    ensure_topics(s)
    tracks = new_tracks(s, 300, "beam")
    messages = [KafkaMessage(s.stream.topic, 0, i, *good(new_event(t))) for i, t in enumerate(tracks)]
    messages += [KafkaMessage(s.stream.topic, 1, k, b"x", malformed(tracks[k], k)) for k in range(len(MALFORMED))]
    run_stream_pipeline(s, PipelineOptions(["--runner=DirectRunner"]), beam.Create(messages))
    assert_exactly_once(s, [t[KEY] for t in tracks])
    dead = read_topic(s, s.stream.dlq_topic, len(MALFORMED))
    assert sorted(d["offset"] for d in dead) == list(range(len(MALFORMED)))


def wait_for(condition, timeout_s: float, observe=None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout_s} s" + (f"; last seen: {observe()}" if observe else ""))


def test_a_batch_features_run_keeps_the_streamed_tracks(streamed, world, spark, tmp_path):
    from segue.batch.build_features import build_features

    settings, _, _ = streamed
    s = for_test(settings, "batchrun")
    ensure_topics(s)
    tracks = new_tracks(s, 50, "batchrun")
    send(s, [good(new_event(t)) for t in tracks])
    run_daemon(s)
    source, _ = world
    manifest = build_features(spark, source.paths.warehouse_dir, tmp_path / "features", source.features,
                              Path(s.paths.stream_dir) / "track_features")
    table = pq.read_table(tmp_path / "features" / "track_features").to_pylist()
    by_uri = {r[KEY]: r for r in table}
    assert len(by_uri) == len(table), "one row per track, batch or streamed"
    assert all(by_uri[t[KEY]]["track_name"] == t["track_name"] for t in tracks)
    assert all(by_uri[t[KEY]]["first_added_s"] > 1_700_000_000 for t in tracks)  # first seen by the stream
    assert manifest["streamed_tracks"] >= len(tracks)


def test_beam_pipeline_streams_from_the_real_broker_on_a_local_flink(streamed, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    from segue.streaming.beam_pipeline import ReadTrackMessages, run_stream_pipeline
    from segue.streaming.flink_job_server import FlinkJobServer

    settings, _, _ = streamed
    s = for_test(settings, "flink")
    ensure_topics(s)
    tracks = new_tracks(s, 200, "flink")
    uris = [t[KEY] for t in tracks]
    send(s, [good(new_event(t)) for t in tracks[:100]])
    with FlinkJobServer(tmp_path / "flink") as server:
        options = PipelineOptions(server.pipeline_options() + ["--streaming"])
        run_stream_pipeline(s, options, ReadTrackMessages(s, server.expansion_service), wait=False)
        wait_for(lambda: len(index_rows(s, uris[:100], (KEY,))) == 100, 240,
                 lambda: len(index_rows(s, uris[:100], (KEY,))))
        # Events published while the pipeline runs, bad ones among them.
        send(s, [good(new_event(t)) for t in tracks[100:]] + [(b"bad", malformed(tracks[0], 3))])
        wait_for(lambda: len(index_rows(s, uris, (KEY,))) == 200, 120, lambda: len(index_rows(s, uris, (KEY,))))
        dead = read_topic(s, s.stream.dlq_topic, 1)
    assert_exactly_once(s, uris)
    assert len(dead) == 1 and "track.popularity" in dead[0]["reason"]
