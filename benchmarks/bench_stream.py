"""Stream benchmark: sustained events/s of the consumer daemon, and freshness from publish to
being returned by a query through the serving alias; the same for playlist edits (freshness: until
the playlist's online features show the edit).

    python benchmarks/bench_stream.py --data demo-data [--events 20000] [--rate 200] [--seconds 15]
        [--max-batch 2000] [--runs local:embedded,redis:embedded,redis:cpu_hnsw] [--daemons 1,2]
        [--heap frozen|default] [--out docs/benchmarks/stream.json]

Uses `make demo`'s model and feature tables in a private Feast repo (the demo's store is left
alone) and a real Kafka broker. Each run names a feature profile (local: SQLite; redis: a real
redis-server on a free port) and an index profile (embedded: Milvus Lite; cpu_hnsw: the PyPI
`milvus` standalone server). New tracks are catalogue rows under fresh URIs.

1. Throughput: `--events` events are published first, then one daemon drains them; events/s is
   events / (first poll to last commit), everything included (validate, Feast push, Parquet record,
   candidate tower, Milvus upsert, commit).
2. Freshness: with the daemon running, events are published at `--rate` per second for `--seconds`;
   a checker polls the alias (Strong consistency) for the pending tracks every 50 ms. Freshness is
   the time from each event's publish to the first query that returns its track.
3. Edits, the same two ways (`--edit-rate`): each edit adds a catalogue track to a known playlist
   and renames it (one playlist per edit); the checker reads the playlists' `playlist_query_v1`
   online until the new name shows.
4. The floors of one daemon: its Kafka side alone (the throughput phase's events polled and
   validated with the daemon's consumer settings, nothing written; with the `crc32c` package's CRC
   check and with kafka-python's pure-Python one, side by side); and, on a Milvus server, its
   write side alone: batches of `--max-batch` new tracks written by the daemon's own sink from this
   process with no Kafka at all (median of 5 batches, each stage's seconds).
5. On a Milvus server (not Milvus Lite, which one process owns), scale-out (`--daemons 1,2`): that
   many `segue stream run` processes in one consumer group share the topic's partitions
   (`stream.partitions`); they join first, then `--events` tracks are published and drained
   (events/s from the first send to the group's last commit), then freshness at `--rate` as in 2.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from segue.batch.spark_session import build_spark
from segue.features.store import open_store
from segue.indexing.milvus_connection import open_client
from segue.indexing.rebuild import rebuild_index
from segue.logs import configure_logging
from segue.process_heap import freeze_startup_heap
from segue.sample_world import private_feature_repo
from segue.settings import IndexSettings, KafkaSettings, SparkSettings, StreamSettings, load_settings, settings_document
from segue.streaming.consumer_daemon import open_daemon, parse_records
from segue.features.online import OnlineFeatureReader
from segue.streaming.events import FEATURE_NAMES, TrackEvent, new_event, new_playlist_edit
from segue.streaming.track_sink import open_track_sink
from segue.streaming.kafka_broker import KafkaBroker
from segue.local_ports import free_port
from segue.streaming.kafka_clients import ensure_topics, event_consumer, event_producer
from segue.streaming.publish import publish_events
from segue.vocabulary import PLAYLIST_KEY, PLAYLIST_SERVICE

from bench_features import start_redis  # benchmarks/ is on sys.path when a benchmark runs
from bench_record import demo_model, new_record, write_record

REPO = Path(__file__).resolve().parents[1]
KEY = "track_uri"


class GcPauses:
    """The garbage collector's pauses in this process while it is `recording` (a daemon runs):
    per generation, how many, their total and the longest."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self.recording = False
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.recording:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    @contextmanager
    def record(self):
        self.pauses, self.recording = [], True
        try:
            yield self
        finally:
            self.recording = False

    def summary(self) -> dict:
        return {f"generation_{g}": {"collections": len(p), "total_s": round(sum(p), 3), "longest_s": round(max(p), 3)}
                for g in (0, 1, 2) if (p := [s for gen, s in self.pauses if gen == g])}


GC_PAUSES = GcPauses()
gc.callbacks.append(GC_PAUSES)


def open_bench_daemon(s, stop: threading.Event):
    """The daemon as `segue stream run` opens it: its start-up heap frozen if `stream.freeze_heap`."""
    daemon = open_daemon(s, stop)
    if s.stream.freeze_heap:
        freeze_startup_heap()
    return daemon


def new_tracks(features_dir: Path, n: int, tag: str) -> list[dict]:
    columns = [KEY, *[f for f in FEATURE_NAMES if f != "first_added_s"]]
    base = pq.read_table(features_dir / "track_features").select(columns).slice(0, 2000).to_pylist()
    return [{**base[i % len(base)], KEY: "spotify:track:" + hashlib.sha256(f"{tag}-{i}".encode()).hexdigest()[:22]}
            for i in range(n)]


def known_playlists(settings, n: int) -> list[int]:
    pids = pq.read_table(Path(settings.paths.features_dir) / "playlist_snapshots", columns=["pid"]).column("pid")
    return sorted(set(pids.to_pylist()))[:n]


def edits_for(pids: list[int], tracks: list[dict], tag: str) -> list[dict]:
    return [new_playlist_edit(pid, added=[tracks[i % len(tracks)][KEY]], name=f"{tag}-{i}")
            for i, pid in enumerate(pids)]


def with_topics(settings, kind: str, name: str):
    return settings.model_copy(update={"stream": settings.stream.model_copy(update={
        "topic": f"bench.{kind}.{name}", "playlist_topic": f"bench.{kind}.{name}.edits",
        "dlq_topic": f"bench.{kind}.{name}.dlq", "group_id": f"bench-{kind}-{name}"})})


def throughput(settings, tracks: list[dict], name: str, edits: list[dict] | None = None) -> dict:
    """Tracks (or, given `edits`, playlist edits) published first, then drained by one daemon."""
    s = with_topics(settings, "throughput" if edits is None else "edit-throughput", name)
    ensure_topics(s)
    producer = event_producer(s)
    started = time.perf_counter()
    if edits is None:
        publish_events(producer, s.stream.topic, [new_event(t) for t in tracks])
    else:
        publish_events(producer, s.stream.playlist_topic, edits)
    producer.close()
    publish_s = time.perf_counter() - started
    daemon = open_bench_daemon(s, threading.Event())
    first_poll, last_commit = [], []
    poll, commit = daemon.consumer.poll, daemon.producer.commit_transaction

    def timed_poll(*a, **k):
        got = poll(*a, **k)
        if got and not first_poll:
            first_poll.append(time.perf_counter())
        return got

    def timed_commit(*a, **k):
        commit(*a, **k)
        last_commit[:] = [time.perf_counter()]

    daemon.consumer.poll, daemon.producer.commit_transaction = timed_poll, timed_commit
    with GC_PAUSES.record():
        report = daemon.run(until_idle_s=3.0)
    seconds = last_commit[0] - first_poll[0]
    stages = {stage: round(daemon.metrics.stage_seconds.sum(stage), 2)
              for stage in ("read_stored", "feast_push", "offline_record", "embed_and_upsert", "playlist_read_stored",
                            "playlist_feast_push", "playlist_offline_record")
              if daemon.metrics.stage_seconds.sum(stage)}
    stages["whole_batches"] = round(daemon.metrics.batch_seconds.sum(), 2)
    return {"events": report.events, "indexed": report.sink.indexed, "edited": report.sink.edited,
            "batches": report.batches, "seconds": round(seconds, 2), "events_per_s": round(report.events / seconds),
            "stage_seconds": stages, "publish_s": round(publish_s, 2), "gc_pauses": GC_PAUSES.summary()}


@contextmanager
def daemon_in_process(s):
    """One daemon on a thread of this process, running once it holds its partitions."""
    stop = threading.Event()
    daemon = open_bench_daemon(s, stop)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    while not daemon.consumer.assignment():
        time.sleep(0.05)
    try:
        yield
    finally:
        stop.set()
        runner.join(60)


@contextmanager
def daemon_processes(s, n: int, root: Path):
    """`n` `segue stream run` processes in the settings' consumer group, started as users start
    them; yields their /metrics ports once the group is stable with all of them."""
    config = root / f"{s.stream.group_id}.yaml"
    config.write_text(yaml.safe_dump(settings_document(s)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGUE_")} | {"SEGUE_CONFIG": str(config)}
    ports = [free_port() for _ in range(n)]
    logs = [root / f"{s.stream.group_id}-{i}.log" for i in range(n)]
    procs = [subprocess.Popen([str(Path(sys.executable).parent / "segue"), "stream", "run"],
                              env=env | {"SEGUE_STREAM__HEALTH_PORT": str(port)},
                              stdout=subprocess.DEVNULL, stderr=log.open("w"))
             for port, log in zip(ports, logs)]

    def alive() -> None:
        for proc, log in zip(procs, logs):
            if proc.poll() is not None:
                raise RuntimeError(f"segue stream run exited {proc.returncode}: {log.read_text()[-3000:]}")

    try:
        admin = KafkaAdminClient(bootstrap_servers=s.kafka.bootstrap_servers)
        deadline = time.monotonic() + 300
        while True:
            alive()
            group = admin.describe_groups([s.stream.group_id])[s.stream.group_id]
            state, members = group.get("group_state"), group.get("members") or []
            if state == "Stable" and len(members) == n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} daemons did not form a stable group: {state}, {len(members)} members")
            time.sleep(0.2)
        admin.close()
        yield ports, alive
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


def committed_lag(s) -> int:
    """Track events the group has not committed."""
    admin = KafkaAdminClient(bootstrap_servers=s.kafka.bootstrap_servers)
    committed = admin.list_group_offsets(s.stream.group_id).get(s.stream.group_id, {})
    admin.close()
    consumer = KafkaConsumer(bootstrap_servers=s.kafka.bootstrap_servers)
    parts = [TopicPartition(s.stream.topic, p) for p in consumer.partitions_for_topic(s.stream.topic)]
    ends = consumer.end_offsets(parts)
    consumer.close()
    return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in parts)


def stage_sums(ports: list[int]) -> dict:
    """Seconds per write stage, summed over the daemons' /metrics."""
    sums: dict[str, float] = {}
    for port in ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        for stage, value in re.findall(r'segue_stream_stage_seconds_sum\{stage="([a-z_]+)"\} ([0-9.e+-]+)', text):
            sums[stage] = round(sums.get(stage, 0.0) + float(value), 2)
    return sums


def group_throughput(settings, tracks: list[dict], name: str, n: int, root: Path) -> dict:
    """Tracks drained by `n` daemon processes sharing the topic's partitions: the daemons join
    first, then the events are published; events/s runs from the first send to the group's last
    commit (publishing included: it is faster than the drain)."""
    s = with_topics(settings, f"group{n}", name)
    ensure_topics(s)
    with daemon_processes(s, n, root) as (ports, alive):
        producer = event_producer(s)
        start = time.perf_counter()
        publish_events(producer, s.stream.topic, [new_event(t) for t in tracks])
        producer.close()
        published = time.perf_counter() - start
        while committed_lag(s) > 0:
            alive()
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        stages = stage_sums(ports)
    return {"daemons": n, "events": len(tracks), "publish_s": round(published, 2), "seconds": round(seconds, 2),
            "events_per_s": round(len(tracks) / seconds), "stage_seconds": stages}


def sink_floor(settings, features_dir: Path, name: str, batch: int, repeats: int = 5) -> dict:
    """One daemon's ceiling: batches of `batch` new tracks written by the daemon's own sink from
    this process, with no Kafka (no poll, parse, dead letters or transaction); the median batch."""
    sink = open_track_sink(settings, open_store(settings))
    sink.warm_up()
    walls, stages = [], []
    for i in range(repeats):
        events = [TrackEvent.model_validate(new_event(t)) for t in new_tracks(features_dir, batch, f"{name}-s{i}")]
        start = time.perf_counter()
        report = sink.write(events)
        walls.append(time.perf_counter() - start)
        stages.append(report.stage_seconds)
    middle = int(np.argsort(walls)[len(walls) // 2])
    return {"batch": batch, "repeats": repeats, "batch_s": round(walls[middle], 3),
            "events_per_s": round(batch / walls[middle]),
            "stage_s": {k: round(v, 3) for k, v in stages[middle].items()}}


def read_floor(settings, name: str, events: int, python_crc: bool = False) -> dict:
    """The daemon's Kafka side alone: the throughput phase's events polled and validated as the
    daemon does (its consumer settings, in a group of its own, from the start), nothing written or
    committed. `python_crc`: with kafka-python's pure-Python CRC-32C check of each record batch, as
    when the `crc32c` package is missing."""
    from kafka.record import default_records
    from kafka.record._crc32c import crc as python_crc32c

    s = with_topics(settings, "throughput", name)
    group = f"bench-read-{name}-{int(python_crc)}"
    s = s.model_copy(update={"stream": s.stream.model_copy(update={"group_id": group})})
    consumer = event_consumer(s)
    checked = default_records.calc_crc32c
    if python_crc:
        default_records.calc_crc32c = python_crc32c
    try:
        read, started, polls, parse_s = 0, None, 0, 0.0
        deadline = time.monotonic() + 120
        while read < events and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=500, max_records=s.stream.max_batch)
            records = [r for part in polled.values() for r in part]
            if records and started is None:
                started = time.perf_counter()  # the group's join is not part of the floor
            t = time.perf_counter()
            parse_records(records, s.stream.max_event_ahead_s, s.stream.playlist_topic)
            parse_s += time.perf_counter() - t
            read, polls = read + len(records), polls + bool(records)
        seconds = time.perf_counter() - started
    finally:
        default_records.calc_crc32c = checked
        consumer.close(autocommit=False)
    return {"events": read, "crc32c": "python" if python_crc else "crc32c package", "seconds": round(seconds, 2),
            "events_per_s": round(read / seconds), "parse_s": round(parse_s, 2), "batches": polls}


def _freshness(s, messages: list[tuple[str, bytes, dict]], rate: float, visible, running) -> dict:
    """Publishes (topic, key, event) at `rate` to running daemons (`running(settings)`), each event
    timed at its send; a checker asks `visible(pending keys)` every 50 ms which of them serving
    sees now."""
    ensure_topics(s)
    with running(s):
        return _publish_and_watch(messages, rate, visible, event_producer(s))


def _publish_and_watch(messages: list[tuple[str, bytes, dict]], rate: float, visible, producer) -> dict:
    published: dict = {}
    seen: dict = {}
    done = threading.Event()

    def check():
        while not (done.is_set() and len(seen) == len(published)):
            pending = [k for k in list(published) if k not in seen][:1000]
            if pending:
                found = visible(pending)
                now = time.time()
                for k in found:
                    seen.setdefault(k, now)
            time.sleep(0.05)

    checker = threading.Thread(target=check)
    checker.start()
    start = time.monotonic()
    for i, (topic, key, event) in enumerate(messages):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        event = {**event, "event_time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}
        published[key] = datetime.fromisoformat(event["event_time"]).timestamp()
        producer.send(topic, key=str(key).encode(), value=json.dumps(event).encode())
    producer.flush()
    done.set()
    checker.join(120)
    return _lags(published, seen, rate)


def freshness(settings, tracks: list[dict], rate: float, name: str, daemons: int = 0, root: Path | None = None
              ) -> dict:
    """Track events; each is fresh when a query of the serving alias returns its track. `daemons`:
    that many daemon processes in one group, else one daemon in this process."""
    s = with_topics(settings, f"freshness-group{daemons}" if daemons else "freshness", name)
    running = (lambda s: daemon_processes(s, daemons, root)) if daemons else daemon_in_process
    client = open_client(s)

    def visible(uris: list[str]) -> list[str]:
        rows = client.query(s.index.alias, filter=f"{KEY} in {json.dumps(uris)}", output_fields=[KEY],
                            consistency_level="Strong")
        return [r[KEY] for r in rows]

    with GC_PAUSES.record():
        lags = _freshness(s, [(s.stream.topic, t[KEY], new_event(t)) for t in tracks], rate, visible, running)
    return lags if daemons else {**lags, "gc_pauses": GC_PAUSES.summary()}


def edit_freshness(settings, edits: list[dict], rate: float, name: str) -> dict:
    """Playlist edits; each is fresh when its playlist's online features show its name."""
    s = with_topics(settings, "edit-freshness", name)
    wanted = {e["pid"]: e["name"] for e in edits}
    readers = []  # made in the checker's thread (SQLite connections stay in theirs)

    def visible(pids: list[int]) -> list[int]:
        if not readers:
            readers.append(OnlineFeatureReader(open_store(s), PLAYLIST_SERVICE, PLAYLIST_KEY,
                                               only=["playlist_snapshots:name"]))
        return [r.key for r in readers[0].read(pids) if r.found and r.features.get("name") == wanted[r.key]]

    return _freshness(s, [(s.stream.playlist_topic, e["pid"], e) for e in edits], rate, visible,
                      daemon_in_process)


def _lags(published: dict, seen: dict, rate: float) -> dict:
    lag = np.array([seen[k] - published[k] for k in published if k in seen])
    return {"events": len(published), "rate_per_s": rate, "returned": len(lag),
            "p50_s": round(float(np.percentile(lag, 50)), 3), "p95_s": round(float(np.percentile(lag, 95)), 3),
            "max_s": round(float(lag.max()), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "demo-data", help="`make demo`'s folder")
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--edits", type=int, default=5000, help="playlist edits drained for throughput")
    p.add_argument("--edit-rate", type=float, default=500, help="playlist edits per second for freshness")
    p.add_argument("--edit-seconds", type=float, default=8)
    p.add_argument("--max-batch", type=int, default=StreamSettings().max_batch, help="the daemon's stream.max_batch")
    p.add_argument("--runs", default="local:embedded,redis:embedded,redis:cpu_hnsw",
                   help="feature profile:index profile pairs")
    p.add_argument("--daemons", default="",
                   help="also drain the tracks with this many `segue stream run` processes in one consumer "
                        "group (comma-separated counts, e.g. 1,2), side by side; server index profiles only")
    p.add_argument("--heap", choices=("frozen", "default"), default="frozen",
                   help="frozen: the daemons' start-up heap frozen out of garbage collection "
                        "(stream.freeze_heap, as `segue stream run` does by default); default: not (to measure "
                        "what that changes)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "stream.json")
    args = p.parse_args(argv)
    configure_logging("text", "WARNING")
    model = demo_model(args.data)
    runs = [tuple(r.split(":")) for r in args.runs.split(",")]
    result = {**new_record("stream"),
              "max_batch": args.max_batch, "heap": args.heap, "runs": []}
    with tempfile.TemporaryDirectory(prefix="segue-bench-stream-") as tmp, ExitStack() as services:
        tmp = Path(tmp)
        redis, redis_url = start_redis(tmp)
        services.callback(redis.terminate)
        base = load_settings(paths={"data_dir": args.data.resolve()}, features={"redis_connection_string": redis_url})
        spark = build_spark("bench-stream", SparkSettings(master="local[2]", shuffle_partitions=2))
        worlds = {profile: private_feature_repo(base, tmp / f"world-{profile}", spark, profile)
                  for profile in {feature for feature, _ in runs}}
        spark.stop()
        broker = KafkaBroker(tmp / "kafka", port=free_port()).start()
        services.callback(broker.stop)
        for feature_profile, index_profile in runs:
            with ExitStack() as milvus:
                uri = IndexSettings().uri  # unused by the embedded profile
                if index_profile != "embedded":
                    from segue.indexing.milvus_server import LocalMilvusServer

                    uri = milvus.enter_context(LocalMilvusServer(tmp / f"milvus-{feature_profile}", free_port())).uri
                name = f"{feature_profile}_{index_profile}"
                settings = worlds[feature_profile]
                s = settings.model_copy(update={
                    "index": IndexSettings(profile=index_profile, uri=uri, alias=f"bench_{name}"),
                    "paths": settings.paths.model_copy(update={"index_dir": tmp / f"index-{name}"}),
                    "kafka": KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
                    "stream": StreamSettings(health_port=None, max_batch=args.max_batch,
                                             freeze_heap=args.heap == "frozen")})
                rebuild_index(s, open_store(s), model)
                features_dir = Path(s.paths.features_dir)
                catalogue = new_tracks(features_dir, 2000, f"{name}-e")
                n_fresh = int(args.edit_rate * args.edit_seconds)
                pids = known_playlists(s, args.edits + n_fresh)
                run = {"features": feature_profile, "index": index_profile,
                       "throughput": throughput(s, new_tracks(features_dir, args.events, f"{name}-t"), name),
                       "freshness": freshness(s, new_tracks(features_dir, int(args.rate * args.seconds), f"{name}-f"),
                                              args.rate, name),
                       "edit_throughput": throughput(s, [], name,
                                                     edits_for(pids[:args.edits], catalogue, f"{name}-et")),
                       "edit_freshness": edit_freshness(s, edits_for(pids[args.edits:], catalogue, f"{name}-ef"),
                                                        args.edit_rate, name)}
                run["read_floors"] = [read_floor(s, name, args.events), read_floor(s, name, args.events, True)]
                if index_profile != "embedded":  # Milvus Lite opens its file from one process only
                    run["sink_floor"] = sink_floor(s, features_dir, name, args.max_batch)
                    run["groups"] = [
                        {**group_throughput(s, new_tracks(features_dir, args.events, f"{name}-g{n}"), name, n, tmp),
                         "freshness": freshness(s, new_tracks(features_dir, int(args.rate * args.seconds),
                                                              f"{name}-gf{n}"), args.rate, name, n, tmp)}
                        for n in (int(d) for d in args.daemons.split(",") if d)]
                result["runs"].append(run)
                print(json.dumps(run), flush=True)
    write_record(result, args.out, echo=False)
    print("\n| features | index | events | kind | events/s | freshness at (events/s) | p50 s | p95 s | max s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["runs"]:
        for kind, t, f in (("tracks", r["throughput"], r["freshness"]),
                           ("playlist edits", r["edit_throughput"], r["edit_freshness"])):
            print(f"| {r['features']} | {r['index']} | {t['events']:,} | {kind} | {t['events_per_s']:,} | "
                  f"{f['rate_per_s']:g} | {f['p50_s']} | {f['p95_s']} | {f['max_s']} |")
        for f in r["read_floors"]:
            print(f"| {r['features']} | {r['index']} | {f['events']:,} | tracks, the Kafka side alone (poll and "
                  f"validate, {f['crc32c']} CRC) | {f['events_per_s']:,} | - | - | - | - |")
        f = r.get("sink_floor")
        if f:
            print(f"| {r['features']} | {r['index']} | {f['batch'] * f['repeats']:,} | tracks, the sink alone (floor: "
                  f"no Kafka), batches of {f['batch']:,} | {f['events_per_s']:,} | - | - | - | - |")
            both = 1 / (1 / f["events_per_s"] + 1 / r["read_floors"][0]["events_per_s"])
            print(f"| {r['features']} | {r['index']} | - | tracks, the two floors one after the other (as the daemon "
                  f"runs them) | {both:,.0f} (daemon: {r['throughput']['events_per_s'] / both:.2f}x) | - | - | - | - |")
        for g in r.get("groups", []):
            f = g["freshness"]
            print(f"| {r['features']} | {r['index']} | {g['events']:,} | tracks, {g['daemons']} daemon processes | "
                  f"{g['events_per_s']:,} | {f['rate_per_s']:g} | {f['p50_s']} | {f['p95_s']} | {f['max_s']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
