"""The stream against a real Kafka broker, a real Milvus server and a real Feast repo: 10,000 events
with 2% malformed, a daemon of a consumer group killed mid-batch, a Milvus outage, a broker restart, updates, and the Beam pipeline."""

from __future__ import annotations

import hashlib
import json
import os
import re
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
from segue.settings import IndexSettings, KafkaSettings, ServeSettings, StreamSettings, settings_document
from segue.streaming.consumer_daemon import open_daemon
from segue.streaming.daemon_metrics import serve_health
from segue.streaming.events import new_event, new_playlist_edit
from segue.streaming.kafka_broker import KafkaBroker
from segue.local_ports import free_port
from segue.streaming.kafka_clients import ensure_topics
from segue.serving.api_server import ApiServerThread
from segue.training.export import load_tower
from segue.vocabulary import PLAYLIST_SERVICE

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
    update = {"topic": f"{name}.new", "playlist_topic": f"{name}.edits", "dlq_topic": f"{name}.dlq",
              "group_id": f"{name}-group", **stream}
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


def send(settings, items: list[tuple[bytes | None, bytes | None]], topic: str | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=5)
    futures = [producer.send(topic or settings.stream.topic, key=k, value=v) for k, v in items]
    producer.flush()
    for f in futures:
        f.get(timeout=30)
    producer.close()


def good(event: dict) -> tuple[bytes, bytes]:
    return event["track"][KEY].encode(), json.dumps(event).encode()


def edit_message(edit: dict) -> tuple[bytes, bytes]:
    return str(edit["pid"]).encode(), json.dumps(edit).encode()


def playlist_states(store, pids: list[int]) -> dict[int, dict]:
    return {row.key: row.features for row in lookup(store, PLAYLIST_SERVICE, "pid", pids) if row.found}


def assert_states_recorded_once(settings, pids: list[int], store) -> None:
    """The offline record of edited playlists holds each state once, and its newest is the online one."""
    rows = pq.read_table(Path(settings.paths.stream_dir) / "playlist_snapshots").to_pylist()
    rows = [r for r in rows if r["pid"] in set(pids)]
    keys = Counter((r["pid"], r["event_timestamp"]) for r in rows)
    assert all(n == 1 for n in keys.values()), [k for k, n in keys.items() if n > 1][:3]
    online = playlist_states(store, pids)
    newest = {}
    for r in sorted(rows, key=lambda r: r["event_timestamp"]):
        newest[r["pid"]] = r
    for pid in pids:
        assert newest[pid]["track_uris"] == online[pid]["track_uris"], pid
        assert newest[pid]["num_edits"] == online[pid]["num_edits"], pid


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


def committed_lag(settings, topics: list[str] | None = None) -> int:
    """Messages of `topics` (the track topic) the daemon's group has not committed."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    committed = admin.list_group_offsets(settings.stream.group_id).get(settings.stream.group_id, {})
    admin.close()
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    parts = [TopicPartition(topic, p) for topic in topics or [settings.stream.topic]
             for p in consumer.partitions_for_topic(topic)]
    ends = consumer.end_offsets(parts)
    consumer.close()
    return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in parts)


def read_topic(settings, topic: str, expected: int, timeout_s: float = 30, grace_s: float = 2) -> list[dict]:
    """The topic's committed messages: waits for `expected` of them, then `grace_s` more for any
    extra (a doubled dead letter must show)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap_servers, group_id=None,
                             auto_offset_reset="earliest", isolation_level="read_committed")
    out, deadline, settled = [], time.monotonic() + timeout_s, None
    while time.monotonic() < (settled or deadline):
        for part in consumer.poll(timeout_ms=200).values():
            out += [json.loads(m.value) for m in part]
        if settled is None and len(out) >= expected:
            settled = time.monotonic() + grace_s
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


def _daemon_counted(port: int, outcome: str) -> float:
    try:
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    found = re.search(r'segue_stream_events_total\{outcome="%s"\} ([0-9.e+]+)' % outcome, metrics)
    return float(found[1]) if found else 0.0


def test_a_daemon_killed_mid_batch_in_a_consumer_group_hands_over_losing_and_doubling_nothing(streamed, tmp_path):
    """Two `segue stream run` daemons in one consumer group share 4-partition topics; one is killed
    with SIGKILL while both are writing. Once its session times out the group rebalances, the survivor
    replays the dead member's uncommitted batch from the committed offsets and finishes: each track
    indexed and recorded once, each edit applied once, each dead letter committed once."""
    settings, _, _ = streamed
    # Each daemon gets its own transactional id; the dead member is noticed after 10 s, not 45.
    s = for_test(settings, "group", max_batch=100, partitions=4, session_timeout_s=10)
    ensure_topics(s)
    tracks = new_tracks(s, 4000, "group")
    # 1 in 20 malformed: each must reach the dead letters exactly once through the crash.
    bad = {i: i % len(MALFORMED) for i in range(0, 4000, 20)}
    send(s, [(b"bad", malformed(t, bad[i])) if i in bad else good(new_event(t)) for i, t in enumerate(tracks)])
    # Edits ride along: two per playlist, each adding one track; each must apply exactly once.
    store = open_store(s)
    before = playlist_states(store, list(range(300)))
    edited = sorted(before)[:150]
    now = datetime.now(timezone.utc)
    added = {pid: (tracks[2 * i][KEY], tracks[2 * i + 1][KEY]) for i, pid in enumerate(edited)}
    send(s, [edit_message(new_playlist_edit(pid, added=[uri], event_time=now + timedelta(milliseconds=k)))
             for k in range(2) for pid, uris in added.items() for uri in [uris[k]]], topic=s.stream.playlist_topic)
    config = tmp_path / "segue.yaml"
    config.write_text(yaml.safe_dump(settings_document(s)))
    command = [str(Path(sys.executable).parent / "segue"), "stream", "run"]  # as users start it
    ports = [free_port(), free_port()]
    daemons = [subprocess.Popen(command, env={**os.environ, "SEGUE_CONFIG": str(config),
                                              "SEGUE_STREAM__HEALTH_PORT": str(port)},
                                stdout=subprocess.DEVNULL, stderr=(tmp_path / f"daemon-{i}.log").open("w"))
               for i, port in enumerate(ports)]
    victim, survivor = daemons
    try:
        uris = [t[KEY] for i, t in enumerate(tracks) if i not in bad]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not all(_daemon_counted(p, "indexed") >= 100 for p in ports):
            assert all(d.poll() is None for d in daemons), (tmp_path / "daemon-0.log").read_text()[-3000:]
            time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert all(_daemon_counted(p, "indexed") >= 100 for p in ports[1:]), "the survivor never shared the work"
        seen = len(index_rows(s, uris, fields=(KEY,)))
        assert 0 < seen < len(uris), "the kill must land while the stream is half-way"
        assert committed_lag(s) > 0

        # The survivor takes the dead member's partitions over (after its session times out).
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and committed_lag(s, s.stream.topics) > 0:
            assert survivor.poll() is None, (tmp_path / "daemon-1.log").read_text()[-3000:]
            time.sleep(1)
        assert committed_lag(s, s.stream.topics) == 0, "the survivor did not finish the dead member's partitions"
    finally:
        for d in daemons:
            d.terminate()
        for d in daemons:
            d.wait(timeout=60)
    assert survivor.returncode == 0, (tmp_path / "daemon-1.log").read_text()[-3000:]
    # `segue stream run` freezes its start-up heap (stream.freeze_heap), so full collections stay short.
    assert "startup heap frozen out of garbage collection" in (tmp_path / "daemon-1.log").read_text()
    assert_exactly_once(s, uris)
    assert_recorded_once(s, uris)
    after = playlist_states(store, edited)
    for pid in edited:
        assert after[pid]["track_uris"][-3:] == [*before[pid]["track_uris"][-1:], *added[pid]], pid
        assert after[pid]["num_edits"] == before[pid]["num_edits"] + 2
        assert after[pid]["num_tracks"] == before[pid]["num_tracks"] + 2
    assert_states_recorded_once(s, edited, store)
    dead = read_topic(s, s.stream.dlq_topic, len(bad))
    assert len(dead) == len(bad) and len({(d["partition"], d["offset"]) for d in dead}) == len(bad)


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
        send(s, [good(new_event(t)) for t in tracks[500:]] + [(b"bad", malformed(t, 0)) for t in tracks[:5]])
        wait_for(lambda: daemon.metrics.failures.value("write") >= 2, 60)
        assert daemon.health.report()[0] == 503
        assert committed_lag(s) == 505  # nothing committed while Milvus is away
        proxy.restore()
        wait_for(lambda: committed_lag(s) == 0, 120)
        assert daemon.health.report()[0] == 200
    finally:
        stop.set()
        runner.join(60)
        proxy.close()
    assert_exactly_once(settings, [t[KEY] for t in tracks])
    assert_recorded_once(settings, [t[KEY] for t in tracks])  # the record was written before each failed upsert
    assert len(read_topic(s, s.stream.dlq_topic, 5)) == 5  # the failed attempts sent none of their dead letters


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


def test_playlist_edits_reach_the_next_recommendation_and_a_replay_changes_nothing(streamed):
    settings, store, _ = streamed
    s = for_test(settings, "edits").model_copy(update={
        "serve": ServeSettings(port=0, refresh_s=0.5, feature_timeout_s=15, search_timeout_s=30)})
    ensure_topics(s)
    pid = min(playlist_states(store, list(range(20, 60))))
    before = playlist_states(store, [pid])[pid]
    with ApiServerThread(s) as api:
        def recommend() -> dict:
            r = urllib.request.Request(f"{api.url}/v1/recommendations", method="POST", data=json.dumps(
                {"playlist_id": pid, "k": 20}).encode(), headers={"Content-Type": "application/json"})
            return json.loads(urllib.request.urlopen(r, timeout=60).read())

        first = recommend()
        picked = [t["track_uri"] for t in first["tracks"][:3]]
        dropped = before["track_uris"][0]
        now = datetime.now(timezone.utc)
        edits = [new_playlist_edit(pid, added=picked, removed=[dropped], event_time=now - timedelta(seconds=2)),
                 new_playlist_edit(pid, name="edited by the stream", event_time=now - timedelta(seconds=1))]
        bad = {**edits[0], "event_id": "bad", "added_track_uris": ["spotify:track:short"]}
        send(s, [*map(edit_message, edits), edit_message(bad)], topic=s.stream.playlist_topic)
        _, report = run_daemon(s)
        assert (report.sink.edited, report.dead_letters) == (2, 1)
        [dead] = read_topic(s, s.stream.dlq_topic, 1)
        assert dead["topic"] == s.stream.playlist_topic and "added_track_uris.0" in dead["reason"]

        expected = [u for u in before["track_uris"] if u != dropped] + picked
        after = playlist_states(store, [pid])[pid]
        window = expected[-s.features.recent_tracks:]
        assert after["track_uris"] == expected and after["recent_track_uris"] == window
        # A track Feast does not know (an earlier test's malformed one) leaves no gap, as in the batch job.
        facts = {r.key: r.features for r in lookup(store, "track_candidate_v1", KEY, window) if r.found}
        assert after["recent_artist_uris"] == [facts[u]["artist_uri"] for u in window if u in facts]
        assert after["recent_album_uris"] == [facts[u]["album_uri"] for u in window if u in facts]
        assert after["name"] == "edited by the stream"
        assert after["num_edits"] == before["num_edits"] + 2
        assert after["num_tracks"] == before["num_tracks"] - before["track_uris"].count(dropped) + 3
        second = recommend()
        assert second["excluded_seeds"] == len(set(expected)) != first["excluded_seeds"]
        assert not set(picked) & {t["track_uri"] for t in second["tracks"]}

    # Another consumer group reads both topics from the start, as a crash before the commit would.
    replay = s.model_copy(update={"stream": s.stream.model_copy(update={
        "group_id": "edits-replay", "dlq_topic": "edits-replay.dlq"})})
    _, again = run_daemon(replay)
    assert (again.sink.edited, again.sink.superseded) == (0, 2)
    assert playlist_states(store, [pid])[pid] == after
    assert_states_recorded_once(s, [pid], store)


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
    pid = min(playlist_states(store, list(range(100, 140))))
    edit = new_playlist_edit(pid, added=[tracks[0][KEY]], name="edited through Beam")
    messages.append(KafkaMessage(s.stream.playlist_topic, 0, 0, *edit_message(edit)))
    run_stream_pipeline(s, PipelineOptions(["--runner=DirectRunner"]), beam.Create(messages))
    assert_exactly_once(s, [t[KEY] for t in tracks])
    edited = playlist_states(store, [pid])[pid]
    assert edited["name"] == "edited through Beam" and edited["track_uris"][-1] == tracks[0][KEY]
    dead = read_topic(s, s.stream.dlq_topic, len(MALFORMED))
    assert sorted(d["offset"] for d in dead) == list(range(len(MALFORMED)))


def wait_for(condition, timeout_s: float, observe=None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout_s} s" + (f"; last seen: {observe()}" if observe else ""))


def test_a_batch_features_run_keeps_the_streamed_tracks_and_edits(streamed, world, spark, tmp_path):
    from segue.batch.build_features import build_features

    settings, _, _ = streamed
    s = for_test(settings, "batchrun")
    ensure_topics(s)
    tracks = new_tracks(s, 50, "batchrun")
    send(s, [good(new_event(t)) for t in tracks])
    pid = min(playlist_states(streamed[1], list(range(60, 100))))
    edit = new_playlist_edit(pid, added=[tracks[0][KEY]], name="kept by the batch run")
    send(s, [edit_message(edit)], topic=s.stream.playlist_topic)
    run_daemon(s)
    edited = playlist_states(streamed[1], [pid])[pid]
    source, _ = world
    manifest = build_features(spark, source.paths.warehouse_dir, tmp_path / "features", source.features,
                              Path(s.paths.stream_dir))
    snapshots = pq.read_table(tmp_path / "features" / "playlist_snapshots").to_pylist()
    newest = max((r for r in snapshots if r["pid"] == pid), key=lambda r: r["event_timestamp"])
    assert newest["name"] == "kept by the batch run" and newest["track_uris"] == edited["track_uris"]
    assert manifest["streamed_playlist_states"] >= 1
    table = pq.read_table(tmp_path / "features" / "track_features").to_pylist()
    by_uri = {r[KEY]: r for r in table}
    assert len(by_uri) == len(table), "one row per track, batch or streamed"
    assert all(by_uri[t[KEY]]["track_name"] == t["track_name"] for t in tracks)
    assert all(by_uri[t[KEY]]["first_added_s"] > 1_700_000_000 for t in tracks)  # first seen by the stream
    assert manifest["streamed_tracks"] >= len(tracks)
    # An update of a track Feast's table already holds adds a version: the table still passes the
    # contract that gates materialize.
    send(s, [good(new_event({**tracks[1], "popularity": 77}))])
    run_daemon(s)
    from segue.batch.contracts import ContractChecker

    offline = spark.read.parquet(str(Path(s.paths.features_dir) / "track_features"))
    assert offline.where(offline[KEY] == tracks[1][KEY]).count() == 2
    assert ContractChecker().check(offline, "track_features", [KEY]).success


def test_beam_pipeline_streams_from_the_real_broker_on_a_local_flink(streamed, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    from segue.streaming.beam_pipeline import ReadStreamMessages, run_stream_pipeline
    from segue.streaming.flink_job_server import FlinkJobServer

    settings, _, _ = streamed
    s = for_test(settings, "flink")
    ensure_topics(s)
    tracks = new_tracks(s, 200, "flink")
    uris = [t[KEY] for t in tracks]
    send(s, [good(new_event(t)) for t in tracks[:100]])
    with FlinkJobServer(tmp_path / "flink") as server:
        options = PipelineOptions(server.pipeline_options() + ["--streaming"])
        run_stream_pipeline(s, options, ReadStreamMessages(s, server.expansion_service), wait=False)
        wait_for(lambda: len(index_rows(s, uris[:100], (KEY,))) == 100, 240,
                 lambda: len(index_rows(s, uris[:100], (KEY,))))
        # Events published while the pipeline runs, bad ones among them.
        send(s, [good(new_event(t)) for t in tracks[100:]] + [(b"bad", malformed(tracks[0], 3))])
        wait_for(lambda: len(index_rows(s, uris, (KEY,))) == 200, 120, lambda: len(index_rows(s, uris, (KEY,))))
        dead = read_topic(s, s.stream.dlq_topic, 1)
    assert_exactly_once(s, uris)
    assert len(dead) == 1 and "track.popularity" in dead[0]["reason"]
