"""Serving benchmark: `segue serve` under a load generator at fixed concurrency, at 100k and 1M
tracks, with the cost of each stage measured inside the same requests.

    python benchmarks/bench_serving.py --data demo-data [--runs local:embedded:100000,redis:cpu_hnsw:100000,...]
        [--concurrency 1,2,8] [--seconds 20] [--orderings ranker,tower] [--out docs/benchmarks/serving.json]

Uses `make demo`'s model and feature tables in a private Feast repo per feature profile (local:
SQLite; redis: a real redis-server on a free port). The index holds the demo's catalogue under its
own URIs (so Feast and the co-occurrence lists know it), then copies of it under new URIs with
jittered popularity and duration up to each size (as the rebuild benchmark does), built by
`rebuild_index` into Milvus Lite (embedded) or the PyPI `milvus` standalone server (cpu_hnsw).
Copies keep their artists and nearly their embeddings, so at 1M the nearest hundreds of tracks hold
few artists: requests limiting tracks per artist search far deeper than on a real catalogue (see
the latency by kind of request). Copies have no Feast metadata.

`segue serve` runs as its own process (one worker), as users run it. For each concurrency the load
generator keeps that many HTTP/1.1 keep-alive connections busy from this process for `--seconds`:
70% known playlists, 20% cold ones (a name and 5 seed tracks), 10% known ones with filters and
diversity, k=10 (`--k`). Concurrency 1 is unloaded latency. Every response carries the server's
own timing of each stage (feature lookups, query tower, search, the ranking stage's neighbours,
candidate facts and ranker, metadata), so the API's overhead is
the client's latency minus the stages, per request, in the same run.

Two more measurements per run, in the same process and minutes as the load:
- **Open-loop phases** (`--rates`): requests are sent at a fixed arrival rate whether or not
  earlier ones have returned, and each latency runs from the request's scheduled send time. A
  closed loop waits for an answer before it sends again, so a slow answer delays the requests
  behind it and they never count as slow (coordinated omission); here they do.
- **Floors**: what each dependency costs alone, called directly from this process: numpy exact
  top-k over as many vectors as the index holds, a bare Milvus search of the alias (the profile's
  search parameters), the query tower alone, a bare Feast read of one playlist, the read of k
  results' names, and a Redis round trip (PING; Redis runs only); for the ranking stage, on the
  known playlist of median length: the towers' candidate search with its tracks filtered out,
  the read of its newest seeds' neighbour lists, the search restricted to the neighbour
  candidates the first one missed, and the ranker over the merged candidates. Each path's p50 is
  reported as a ratio to the sum of its own floors.

Each ordering (`--orderings`) is measured with its own `segue serve` on the same index: `ranker`
(the ranking stage on) and `tower` (the towers' search alone, `candidates.neighbours: 0`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_features import start_redis  # noqa: E402
from bench_index_rebuild import replicate  # noqa: E402
from bench_record import demo_model, new_record, write_record  # noqa: E402
from latency import latency_ms  # noqa: E402
from segue.settings import settings_document  # noqa: E402

BUILD_INDEX = "--build-index-child"
# Every stage a response times; the ranking stage's three are 0 for a version without a ranker.
STAGES = ("playlist_features", "seed_tracks", "query_tower", "search", "neighbours", "candidate_facts", "ranker",
          "metadata")


def build_index(settings_json: str, snapshot: str) -> None:
    """Runs in a child process (see main)."""
    from segue.features.store import open_store
    from segue.indexing.rebuild import rebuild_index
    from segue.logs import configure_logging
    from segue.settings import SegueSettings

    configure_logging("text", "WARNING")
    settings = SegueSettings.model_validate(json.loads(settings_json))
    rebuild_index(settings, open_store(settings), Path(settings.paths.models_dir) / "latest", snapshot=Path(snapshot))


def request_bodies(snapshots: Path, catalog: list[str], n: int, k: int = 10, seed: int = 3) -> list[bytes]:
    pids = np.unique(pq.read_table(snapshots, columns=["pid"]).column("pid").to_numpy())
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n):
        draw = rng.random()
        if draw < 0.7:
            body = {"playlist_id": int(rng.choice(pids)), "k": k}
        elif draw < 0.9:
            body = {"name": "bench mix", "track_uris": [str(u) for u in rng.choice(catalog, 5)], "k": k}
        else:
            body = {"playlist_id": int(rng.choice(pids)), "k": k,
                    "filters": {"exclude_explicit": True, "max_per_artist": 1}}
        raw = json.dumps(body).encode()
        bodies.append(b"POST /v1/recommendations HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw)
    return bodies


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return status, await reader.readexactly(length)


async def _one_connection(port: int, bodies: list[bytes], deadline: float, out: list, errors: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        status, body = await _exchange(reader, writer, bodies[i % len(bodies)])
        i += 1
        took = (time.perf_counter() - start) * 1000
        if status != 200:
            errors.append(status)
            continue
        out.append((took, json.loads(body)["timings_ms"], request_kind(bodies[(i - 1) % len(bodies)])))
    writer.close()


async def _open_loop(port: int, bodies: list[bytes], rate: float, seconds: float, connections: int = 64):
    """Requests at a fixed arrival rate; each latency counts from its scheduled send time, including
    any wait for a free connection (a request is never held back by a slow one before it)."""
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    out, errors = [], []

    async def send(i: int, scheduled: float) -> None:
        connection = await pool.get()
        try:
            try:
                status, body = await _exchange(*connection, bodies[i % len(bodies)])
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closes keep-alive connections idle past its timeout: reconnect, as a
                # client would (the time counts), and send again (a recommendation changes nothing).
                connection[1].close()
                connection = await asyncio.open_connection("127.0.0.1", port)
                status, body = await _exchange(*connection, bodies[i % len(bodies)])
        finally:
            pool.put_nowait(connection)
        took = (time.perf_counter() - scheduled) * 1000
        if status != 200:
            errors.append(status)
        else:
            out.append((took, json.loads(body)["timings_ms"], request_kind(bodies[i % len(bodies)])))

    start = time.perf_counter() + 0.05
    sent = []
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        if (delay := scheduled - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        sent.append(asyncio.create_task(send(i, scheduled)))
    await asyncio.gather(*sent)
    wall = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    return out, errors, wall


async def _load(port: int, bodies: list[bytes], concurrency: int, seconds: float):
    out, errors = [], []
    deadline = time.perf_counter() + seconds
    shares = [bodies[i::concurrency] for i in range(concurrency)]
    start = time.perf_counter()
    await asyncio.gather(*(_one_connection(port, shares[i], deadline, out, errors) for i in range(concurrency)))
    return out, errors, time.perf_counter() - start


def measure(port: int, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    asyncio.run(_load(port, bodies[:50], min(concurrency, 4), 2))  # warm-up
    return _summary({"concurrency": concurrency}, *asyncio.run(_load(port, bodies, concurrency, seconds)))


def measure_open_loop(port: int, bodies: list[bytes], rate: float, seconds: float) -> dict:
    asyncio.run(_load(port, bodies[:50], 1, 2))  # warm-up
    return _summary({"arrival_rate": rate}, *asyncio.run(_open_loop(port, bodies, rate, seconds)))


def request_kind(request: bytes) -> str:
    """The mix's three kinds: known playlist, cold (name + seeds), known with filters + diversity."""
    return "filtered" if b'"filters"' in request else "cold" if b'"track_uris"' in request else "known"


def _summary(phase: dict, out: list, errors: list, wall: float) -> dict:
    latency = np.array([t for t, _, _ in out])
    stages = {s: np.array([timings.get(s, 0.0) for _, timings, _ in out]) for s in STAGES}
    inside = sum(stages.values())
    overhead = latency - inside
    kinds = np.array([kind for _, _, kind in out])
    return {**phase, "requests": len(out), "errors": len(errors),
            "requests_per_s": round(len(out) / wall, 1),
            "latency_ms": {f"p{q}": round(float(np.percentile(latency, q)), 2) for q in (50, 95, 99)},
            "by_kind": {kind: {"requests": int((kinds == kind).sum()),
                               **{f"p{q}": round(float(np.percentile(latency[kinds == kind], q)), 2)
                                  for q in (50, 95, 99)},
                               "search_ms_mean": round(float(stages["search"][kinds == kind].mean()), 2)}
                        for kind in sorted(set(kinds.tolist()))},
            "stage_ms_mean": {s: round(float(v.mean()), 2) for s, v in stages.items()},
            "overhead_ms_mean": round(float(overhead.mean()), 2),
            "overhead_share": round(float(overhead.sum() / latency.sum()), 3)}


def floors(settings, model: Path, snapshots: Path, tracks: int, k: int, redis: str | None, repeats: int = 300) -> dict:
    """Each dependency of a request alone, called directly: the least a request can cost."""
    from segue.features.store import open_store
    from segue.indexing.milvus_connection import index_profile, open_client
    from segue.indexing.track_index import TrackIndex
    from segue.training.model_versions import ModelVersions
    from segue.vocabulary import PLAYLIST_SERVICE

    store = open_store(settings)
    service = store.get_feature_service(PLAYLIST_SERVICE)
    pids = np.unique(pq.read_table(snapshots, columns=["pid"]).column("pid").to_numpy()).tolist()
    rng = np.random.default_rng(5)

    def feast_read() -> dict:
        return store.get_online_features(features=service, entity_rows=[{"pid": int(rng.choice(pids))}]).to_dict()

    features = feast_read()
    tower = ModelVersions(model.parent).query_tower(model.name)
    vector = tower.embed(features)
    index = TrackIndex(open_client(settings), settings.index.alias, index_profile(settings))
    catalog = rng.standard_normal((tracks, vector.shape[1]), dtype=np.float32)
    catalog /= np.linalg.norm(catalog, axis=1, keepdims=True)

    def exact_top_k() -> np.ndarray:
        scores = catalog @ vector[0]
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])]

    out = {"numpy_exact": latency_ms(exact_top_k, repeats),
           "milvus_search": latency_ms(lambda: index.search(vector, k), repeats),
           "query_tower": latency_ms(lambda: tower.embed(features), repeats),
           "feast_read": latency_ms(feast_read, repeats),
           **ranking_floors(settings, store, index, ModelVersions(model.parent).ranker(model.name), tower,
                            _typical_playlist(store, service, pids, rng), k, repeats)}
    if redis:
        import redis as redis_client

        host, port = redis.rsplit(":", 1)
        connection = redis_client.Redis(host=host, port=int(port))
        out["redis_round_trip"] = latency_ms(connection.ping, repeats)
    return out


def wait_until_quiet(pid: int | None, cpu_percent: float, longest_s: float, window_s: float = 10.0) -> dict:
    """Waits until the process and its children use less than `cpu_percent` of a core over `window_s`."""
    import psutil

    def cpu_seconds(process: psutil.Process) -> float:
        total = 0.0
        for p in [process, *process.children(recursive=True)]:
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    start = time.monotonic()
    used = float("nan")
    if pid is not None:
        process = psutil.Process(pid)
        while time.monotonic() - start < longest_s:
            before = cpu_seconds(process)
            time.sleep(window_s)
            used = 100 * (cpu_seconds(process) - before) / window_s
            if used < cpu_percent:
                break
    return {"waited_s": round(time.monotonic() - start), "cpu_percent": round(used, 1)}


def _typical_playlist(store, service, pids: list[int], rng, draws: int = 51) -> dict:
    """The online features of the playlist of median length among `draws` known ones."""
    rows = [store.get_online_features(features=service, entity_rows=[{"pid": int(p)}]).to_dict()
            for p in rng.choice(pids, min(draws, len(pids)), replace=False)]
    return sorted(rows, key=lambda r: len(r["track_uris"][0] or []))[len(rows) // 2]


def ranking_floors(settings, store, index, ranker, tower, features: dict, k: int, repeats: int) -> dict:
    """The rest of a ranked request's dependencies alone, for one known playlist, as serving calls
    them: the towers' candidate search (the playlist's tracks filtered out in Milvus), the read of
    its newest seeds' neighbour lists, the search restricted to the neighbour candidates that the
    first search missed, the ranker over the merged candidates, and the read of k results' names."""
    from segue.features.online import OnlineFeatureReader
    from segue.indexing.track_collection import WINDOW_PLAYLISTS
    from segue.ranking.candidates import NeighbourList, neighbour_candidates, seeds_to_read
    from segue.ranking.ranker_features import FEATURES
    from segue.serving.api_models import Filters
    from segue.serving.recommender import HIT_FIELDS, NEIGHBOUR_FIELDS, RESULT_FIELDS
    from segue.serving.search_filters import search_expression
    from segue.vocabulary import NEIGHBOUR_SERVICE, TRACK_SERVICE

    c = settings.candidates
    seeds = list(dict.fromkeys(features["track_uris"][0] or []))
    vector = tower.embed(features)
    fields = [*HIT_FIELDS, WINDOW_PLAYLISTS]
    expression = search_expression(Filters(), seeds)
    neighbours = OnlineFeatureReader(store, NEIGHBOUR_SERVICE, "track_uri", only=NEIGHBOUR_FIELDS)
    names = OnlineFeatureReader(store, TRACK_SERVICE, "track_uri", only=[f"track_features:{f}" for f in RESULT_FIELDS])
    read = seeds_to_read(seeds, c.seed_tracks)

    def candidate_search() -> list:
        return index.search(vector, c.tower, filter=expression, output_fields=fields)[0]

    lists = {r.key: NeighbourList(r.features["neighbour_uris"], r.features["neighbour_counts"])
             for r in neighbours.read(read) if r.found and r.features.get("neighbour_uris")}
    neighbour_uris = neighbour_candidates(lists, set(seeds), c.neighbours)[0]
    hits = candidate_search()
    found = {h.track_uri for h in hits}
    missed = [u for u in neighbour_uris if u not in found]
    results = [h.track_uri for h in hits[:k]]
    merged = np.random.default_rng(7).random((len(found) + len(missed), len(FEATURES)), dtype=np.float32)
    out = {"candidate_search": latency_ms(candidate_search, repeats),
           "neighbour_read": latency_ms(lambda: neighbours.read(read), repeats),
           "metadata_read": latency_ms(lambda: names.read(results), repeats)}
    if missed:
        out["restricted_search"] = latency_ms(lambda: index.score(vector, missed, "", fields), repeats)
    if ranker is not None:
        out["ranker"] = latency_ms(lambda: ranker.score(merged), repeats)
    out["ranking_case"] = {"playlist_tracks": len(seeds), "seeds_read": len(read), "tower_candidates": len(found),
                           "neighbour_candidates": len(neighbour_uris), "neighbour_only": len(missed)}
    return out


def start_api(settings, root: Path, port: int) -> subprocess.Popen:
    config = root / f"serve-{port}.yaml"
    config.write_text(yaml.safe_dump(settings_document(settings)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGUE_")} | {"SEGUE_CONFIG": str(config)}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "segue"), "serve"], env=env,
                            stdout=open(root / f"serve-{port}.log", "w"), stderr=subprocess.STDOUT)
    import urllib.request

    deadline = time.monotonic() + 300
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"segue serve did not get ready: {(root / f'serve-{port}.log').read_text()[-3000:]}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "demo-data", help="`make demo`'s folder")
    p.add_argument("--runs", default="local:embedded:100000,redis:cpu_hnsw:100000,redis:cpu_hnsw:1000000",
                   help="feature profile:index profile:tracks, comma-separated")
    p.add_argument("--concurrency", default="1,2,8", help="connections kept busy, one phase each")
    p.add_argument("--rates", default="10,20", help="open-loop phases: requests sent per second, fixed")
    p.add_argument("--seconds", type=float, default=20, help="length of each phase")
    p.add_argument("--k", type=int, default=10, help="tracks asked for per request")
    p.add_argument("--quiet-cpu", type=float, default=15.0,
                   help="after a build, wait until the Milvus server uses less than this %% of a core over 10 s "
                        "(its compaction and index builds run after the build returns)")
    p.add_argument("--quiet-wait-s", type=float, default=600, help="longest wait for a quiet server")
    p.add_argument("--orderings", default="ranker,tower",
                   help="serving paths measured on each index, one `segue serve` each: ranker (the ranking "
                        "stage on), tower (the towers' search alone: candidates.neighbours=0)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "serving.json")
    args = p.parse_args(argv)

    from segue.batch.spark_session import build_spark
    from segue.logs import configure_logging
    from segue.sample_world import private_feature_repo
    from segue.settings import IndexSettings, ServeSettings, SparkSettings, load_settings
    from segue.local_ports import free_port

    configure_logging("text", "WARNING")
    model = demo_model(args.data).resolve()
    base_settings = load_settings(paths={"data_dir": args.data.resolve()})
    runs = [r.split(":") for r in args.runs.split(",")]
    result = {**new_record("serving"),
              "model": model.name, "duration_s": args.seconds, "workers": 1,
              "mix": f"70% known, 20% cold (name + 5 seeds), 10% known with filters + diversity; k={args.k}",
              "runs": []}
    with tempfile.TemporaryDirectory(prefix="segue-bench-serving-") as tmp, ExitStack() as stack:
        tmp = Path(tmp)
        spark = build_spark("segue-bench-serving", SparkSettings(master="local[2]", driver_memory="2g"))
        repos, server_uri, redis = {}, None, None
        snapshot = tmp / "catalog.parquet"
        for feature_profile, index_profile, size in runs:
            size = int(size)
            if feature_profile not in repos:
                s = base_settings
                if feature_profile == "redis":
                    (tmp / "redis").mkdir()
                    redis_proc, redis = start_redis(tmp / "redis")
                    stack.callback(redis_proc.terminate)
                    s = s.model_copy(update={"features": s.features.model_copy(
                        update={"redis_connection_string": redis})})
                repos[feature_profile] = private_feature_repo(s, tmp / f"repo-{feature_profile}", spark,
                                                              profile=feature_profile)
                print(f"private Feast repo ({feature_profile}) ready", flush=True)
            s = repos[feature_profile]
            if not snapshot.exists():
                from segue.features.store import open_store
                from segue.indexing.rebuild import write_snapshot

                write_snapshot(open_store(s), snapshot, datetime.now(timezone.utc))
            if index_profile != "embedded" and server_uri is None:
                from segue.indexing.milvus_server import LocalMilvusServer

                server = stack.enter_context(LocalMilvusServer(tmp / "milvus-server", free_port()))
                server_uri = server.uri
            base = pq.read_table(snapshot)
            sized = tmp / f"catalog-{size}.parquet"
            if not sized.exists():
                pq.write_table(replicate(base, size), sized)
            name = f"{feature_profile}_{index_profile}_{size}"
            port = free_port()
            s = s.model_copy(update={
                "index": IndexSettings(profile=index_profile, alias=f"bench_{name}",
                                       **({} if index_profile == "embedded" else {"uri": server_uri})),
                "paths": s.paths.model_copy(update={"index_dir": tmp / f"index-{name}", "models_dir": model.parent}),
                "serve": ServeSettings(port=port), "log": s.log.model_copy(update={"level": "WARNING"})})
            print(f"[{name}] building the index ({size:,} tracks) ...", flush=True)
            t = time.perf_counter()
            # A process of its own, which exits normally: Milvus Lite writes its file out at exit,
            # and opens it from one process only (the server's, next).
            # (As a script, not `python -c`: pyspark's connect check exits a `-c` process as a doctest run.)
            done = subprocess.run([sys.executable, __file__, BUILD_INDEX, json.dumps(settings_document(s)),
                                   str(sized)])
            if done.returncode != 0:
                raise SystemExit(f"[{name}] index build failed (exit {done.returncode})")
            print(f"[{name}] index built in {time.perf_counter() - t:.0f} s", flush=True)
            if index_profile != "embedded":
                quiet = wait_until_quiet(server.running_pid(), args.quiet_cpu, args.quiet_wait_s)
                print(f"[{name}] Milvus server quiet after {quiet['waited_s']} s "
                      f"({quiet['cpu_percent']}% of a core)", flush=True)
            catalog = base.column("track_uri").to_pylist()
            snapshots = Path(s.paths.features_dir) / "playlist_snapshots"
            bodies = request_bodies(snapshots, catalog, 5000, k=args.k)
            measured_floors = floors(s, model, snapshots, size, args.k, redis if feature_profile == "redis" else None)
            for ordering in args.orderings.split(","):
                served = s if ordering == "ranker" else s.model_copy(update={
                    "candidates": s.candidates.model_copy(update={"neighbours": 0})})
                print(f"[{name}] segue serve, ordering {ordering}", flush=True)
                api = start_api(served, tmp, port)
                try:
                    run = {"features": feature_profile, "index": index_profile, "tracks": size, "ordering": ordering,
                           **({"milvus_quiet": quiet} if index_profile != "embedded" else {}),
                           "floors": measured_floors,
                           "phases": [measure(port, bodies, int(c), args.seconds)
                                      for c in args.concurrency.split(",")],
                           "open_loop": [measure_open_loop(port, bodies, float(r), args.seconds)
                                         for r in args.rates.split(",") if r]}
                finally:
                    api.terminate()
                    api.wait(30)
                result["runs"].append(run)
                print(json.dumps(run), flush=True)
        spark.stop()
    write_record(result, args.out, echo=False)
    print(markdown_table(result))
    print(f"\nwritten: {args.out}")
    return 0


RETRIEVAL_FLOORS = ("feast_read", "query_tower", "milvus_search", "metadata_read")
RANKED_FLOORS = ("feast_read", "query_tower", "candidate_search", "neighbour_read", "restricted_search", "ranker",
                 "metadata_read")


def floor_sum(floors: dict, names: tuple[str, ...]) -> float:
    """The least a request of one path costs: its dependencies' p50s, one after the other."""
    return sum(floors[n]["p50_ms"] for n in names if n in floors)


def markdown_table(result: dict) -> str:
    lines = ["| features | index | tracks | ordering | load | req/s | p50 ms | p95 ms | p99 ms | failed | "
             "features ms | tower ms | search ms | ranking ms | metadata ms | overhead |", "|" + "---|" * 16]
    for r in result["runs"]:
        for m in [*r["phases"], *r.get("open_loop", [])]:
            st = m["stage_ms_mean"]
            load = f"{m['concurrency']} busy" if "concurrency" in m else f"{m['arrival_rate']:g}/s open"
            lines.append(
                f"| {r['features']} | {r['index']} | {r['tracks']:,} | {r.get('ordering', 'ranker')} | {load} | "
                f"{m['requests_per_s']} | {m['latency_ms']['p50']} | {m['latency_ms']['p95']} | "
                f"{m['latency_ms']['p99']} | {m['errors']} | "
                f"{st['playlist_features'] + st['seed_tracks']:.2f} | {st['query_tower']} | {st['search']} | "
                f"{st['neighbours'] + st['candidate_facts'] + st['ranker']:.2f} | {st['metadata']} | "
                f"{m['overhead_share']:.0%} |")
    names = ("numpy_exact", "milvus_search", "query_tower", "feast_read", "metadata_read", "candidate_search",
             "neighbour_read", "restricted_search", "ranker", "redis_round_trip")
    lines += ["", "| features | index | tracks | ordering | API p50 ms (1 busy) | " + " | ".join(names) +
              " | sum of the path's floors | API p50 / floors |", "|" + "---|" * (len(names) + 7)]
    for r in result["runs"]:
        f = r["floors"]
        ordering = r.get("ordering", "ranker")
        unloaded = r["phases"][0]["latency_ms"]["p50"]
        total = floor_sum(f, RANKED_FLOORS if ordering == "ranker" else RETRIEVAL_FLOORS)
        lines.append(f"| {r['features']} | {r['index']} | {r['tracks']:,} | {ordering} | {unloaded} | " +
                     " | ".join(str(f[n]["p50_ms"]) if n in f else "-" for n in names) +
                     f" | {total:.2f} | {unloaded / total:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == [BUILD_INDEX]:
        raise SystemExit(build_index(*sys.argv[2:4]))
    raise SystemExit(main())
