"""The recommendation API end to end: real Feast (SQLite, Redis), real Milvus (Lite, server), the
exported towers, and `segue serve` started as users start it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests
import yaml

from fault_proxy import FaultProxy
from segue.features.online import lookup
from segue.features.playlist_features import playlist_query_features
from segue.features.store import open_store
from segue.indexing.milvus_connection import open_client
from segue.indexing.rebuild import rebuild_index
from segue.indexing.track_collection import BUILDING, MODEL_VERSION, STATE, collection_info, set_properties
from segue.sample_world import private_feature_repo
from segue.serving.api_server import ApiServerThread
from segue.training.export import load_tower
from segue.settings import IndexSettings, ServeSettings, settings_document
from segue.local_ports import free_port

pytestmark = [pytest.mark.spark, pytest.mark.slow]
ADMIN_KEY = "test-admin-key-0123456789"
UNKNOWN_TRACK = "spotify:track:" + "Z" * 22


@pytest.fixture(scope="module")
def embedded(world, trained, spark, tmp_path_factory):
    """SQLite online store + Milvus Lite, the API in a thread of this process (Lite opens its file
    from one process only)."""
    settings, _ = world
    model, _ = trained
    s = private_feature_repo(settings, tmp_path_factory.mktemp("serve-embedded"), spark)
    rebuild_index(s, open_store(s), model.path)
    # Generous limits: these tests judge answers and input handling, not a loaded CI machine's latency.
    s = s.model_copy(update={"serve": ServeSettings(port=0, refresh_s=0.5, feature_timeout_s=15, search_timeout_s=30)})
    with ApiServerThread(s) as api:
        yield s, api.url


def recommend(url: str, **body) -> requests.Response:
    return requests.post(f"{url}/v1/recommendations", json=body, timeout=30)


def playlist_tracks(settings, pids: list[int]) -> dict[int, list[str]]:
    """Each playlist's tracks in playlist order, from the ingested warehouse."""
    table = pq.read_table(Path(settings.paths.warehouse_dir) / "playlist_tracks", columns=["pid", "pos", "track_uri"])
    table = table.filter(pc.is_in(table["pid"], value_set=pc.cast(pids, table.schema.field("pid").type)))
    out: dict[int, list[tuple[int, str]]] = {}
    for row in table.to_pylist():
        out.setdefault(row["pid"], []).append((row["pos"], row["track_uri"]))
    return {pid: [uri for _, uri in sorted(rows)] for pid, rows in out.items()}


def test_known_playlist_gets_k_tracks_without_its_own(embedded):
    settings, url = embedded
    pid = 7
    r = recommend(url, playlist_id=pid, k=25)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query_features"] == "feature_store" and body["returned"] == 25 and not body["partial"]
    uris = [t["track_uri"] for t in body["tracks"]]
    assert len(set(uris)) == 25 and not set(uris) & set(playlist_tracks(settings, [pid])[pid])
    assert [t["rank"] for t in body["tracks"]] == list(range(1, 26))
    # The model version has a ranking stage: its scores order the merged candidates.
    assert body["ordering"] == "ranker"
    scores = [t["ranker_score"] for t in body["tracks"]]
    assert scores == sorted(scores, reverse=True)
    assert all(t["track_name"] and t["artist_name"] and t["sources"] for t in body["tracks"])
    assert {s for t in body["tracks"] for s in t["sources"]} <= {"tower", "neighbours"}
    index = body["index"]
    assert collection_info(open_client(settings), index["collection"]).model_version == index["model_version"]
    assert set(body["timings_ms"]) >= {"playlist_features", "query_tower", "search", "neighbours", "ranker",
                                       "metadata"}
    # Every candidate comes from the rebuild, whose rows carry the ranker's popularity fact: no Feast read.
    assert "candidate_facts" not in body["timings_ms"]


def test_the_index_carries_the_rankers_popularity_fact(embedded, trained):
    """The rebuild copies each track's playlists in the co-occurrence window from Feast into its
    rows (0 for a track the window never saw), the value the ranker was fitted with."""
    from segue.ranking.offline_sources import read_neighbour_table
    from segue.training.model_versions import ModelVersions

    settings, _ = embedded
    model, _ = trained
    version = ModelVersions(model.path.parent).resolve(model.path.name)
    _, playlists = read_neighbour_table(Path(version.manifest["ranker"]["neighbour_table"]))
    rows = open_client(settings).query(settings.index.alias, filter='track_uri != ""', limit=16_000,
                                       output_fields=["track_uri", "window_playlists"])
    assert len(rows) > 100
    assert {r["track_uri"]: r["window_playlists"] for r in rows} == {
        r["track_uri"]: playlists.get(r["track_uri"], 0) for r in rows}
    assert sum(r["window_playlists"] > 0 for r in rows) > len(rows) // 2


@pytest.mark.parametrize("ranked", [True, False])
def test_served_rankings_are_the_offline_pipelines(embedded, trained, ranked):
    """The API and the evaluation harness give the same list for the same playlist: same merge,
    same features, same ranker (retrieval only: the same fusion order), exact search both sides."""
    from segue.ranking.offline_sources import ordered
    from segue.ranking.ranker_features import ranker_features
    from segue.ranking.train_ranker import offline_sources
    from segue.features.track_catalog import load_catalog
    from segue.training.model_versions import ModelVersions

    settings, url = embedded
    model, _ = trained
    store = open_store(settings)
    versions = ModelVersions(model.path.parent)
    version = versions.resolve(model.path.name)
    sources = offline_sources(settings, versions, version, load_catalog(store),
                              Path(version.manifest["ranker"]["neighbour_table"]))
    query_tower, ranker = versions.query_tower(version), versions.ranker(version)
    k = 20
    for pid in (7, 11, 23, 42, 99):
        row = lookup(store, "playlist_query_v1", "pid", [pid])[0]
        vector = query_tower.embed({n: [v] for n, v in row.features.items()})[0]
        c = sources.candidate_set(vector, list(row.features["track_uris"]), max(settings.candidates.tower, k))
        order = np.argsort(-ranker.score(ranker_features(c)), kind="stable") if ranked else c.fused_order()
        body = recommend(url, playlist_id=pid, k=k, ranked=ranked).json()
        assert body["ordering"] == ("ranker" if ranked else "fusion")
        assert [t["track_uri"] for t in body["tracks"]] == ordered(c, order, k), pid


def test_cold_playlist_from_tracks_or_name(embedded):
    settings, url = embedded
    seeds = playlist_tracks(settings, [3])[3][:6]
    r = recommend(url, name="late night drive", track_uris=[*seeds, UNKNOWN_TRACK], k=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query_features"] == "request" and body["returned"] == 30
    assert body["unknown_track_uris"] == [UNKNOWN_TRACK] and body["excluded_seeds"] == 7
    assert not {t["track_uri"] for t in body["tracks"]} & set(seeds)
    assert body["ordering"] == "ranker"
    by_name = recommend(url, name="late night drive", k=5)
    assert by_name.status_code == 200 and by_name.json()["returned"] == 5
    # No seeds for the ranker to read: the towers' order stands, and the answer says so.
    assert by_name.json()["ordering"] == "fusion" and all(t["ranker_score"] is None for t in by_name.json()["tracks"])
    # A pid Feast does not know, with context, is served cold rather than refused.
    assert recommend(url, playlist_id=10**9, name="late night drive", k=5).json()["query_features"] == "request"


def test_no_track_of_a_known_playlist_is_ever_returned(embedded):
    """Not only the recent window: every track the playlist holds stays out, for long playlists too."""
    settings, url = embedded
    tracks = playlist_tracks(settings, list(range(60)))
    long_ones = sorted((p for p, uris in tracks.items() if len(uris) > 3 * settings.features.recent_tracks),
                       key=lambda p: -len(tracks[p]))[:5]
    assert long_ones, "the sample world has no long playlists to check"
    for pid in long_ones:
        body = recommend(url, playlist_id=pid, k=200).json()
        assert body["excluded_seeds"] == len(set(tracks[pid])), pid
        assert not {t["track_uri"] for t in body["tracks"]} & set(tracks[pid]), pid


def test_a_cold_playlist_gets_the_features_batch_computed_for_it(embedded):
    """Train/serve skew check: the request-built features of a whole playlist equal the batch job's
    final snapshot online (edit sessions and followers excepted: a request has no history)."""
    settings, _ = embedded
    store = open_store(settings)
    pids = [1, 2, 3, 4, 5]
    tracks = playlist_tracks(settings, pids)
    online = {r.key: r.features for r in lookup(store, "playlist_query_v1", "pid", pids)}
    all_uris = sorted({u for uris in tracks.values() for u in uris})
    track_rows = {r.key: r.features for r in lookup(store, "track_candidate_v1", "track_uri", all_uris)}
    for pid in pids:
        built = playlist_query_features(online[pid]["name"], tracks[pid], track_rows, settings.features,
                                        collaborative=online[pid]["collaborative"])
        for name in ("name", "collaborative", "num_tracks", "duration_ms", "track_uris", "recent_track_uris",
                     "recent_artist_uris", "recent_album_uris"):
            assert built[name][0] == online[pid][name], (pid, name)


def test_filters_and_diversity_are_honoured(embedded):
    _, url = embedded
    base = recommend(url, playlist_id=11, k=40).json()["tracks"]
    top_artists = sorted({t["artist_uri"] for t in base[:5]})
    year = sorted(t["release_year"] for t in base)[len(base) // 2]
    filters = {"exclude_explicit": True, "exclude_artists": top_artists, "released_after": year, "max_per_artist": 1}
    r = recommend(url, playlist_id=11, k=20, filters=filters)
    assert r.status_code == 200, r.text
    tracks = r.json()["tracks"]
    assert len(tracks) == 20
    assert not any(t["explicit"] for t in tracks)
    assert not {t["artist_uri"] for t in tracks} & set(top_artists)
    assert all(t["release_year"] > year for t in tracks)
    assert max(Counter(t["artist_uri"] for t in tracks).values()) == 1
    # Nothing released after 2999: an empty, flagged answer rather than an error.
    none = recommend(url, playlist_id=11, k=10, filters={"released_after": 2999}).json()
    assert none["returned"] == 0 and none["partial"] is True


def test_similar_tracks(embedded):
    settings, url = embedded
    uri = playlist_tracks(settings, [2])[2][0]
    r = requests.get(f"{url}/v1/tracks/{uri}/similar", params={"k": 8}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["returned"] == 8 and uri not in {t["track_uri"] for t in r.json()["tracks"]}
    assert requests.get(f"{url}/v1/tracks/{UNKNOWN_TRACK}/similar", timeout=30).status_code == 404
    assert requests.get(f"{url}/v1/tracks/not-a-uri/similar", timeout=30).status_code == 422


def test_bad_input_gets_4xx_with_details(embedded):
    _, url = embedded
    unknown = recommend(url, playlist_id=10**9)
    assert unknown.status_code == 404 and "no features online" in unknown.json()["detail"]
    cases = [({"k": 3}, "give a playlist_id"), ({"playlist_id": 1, "k": 0}, "greater than or equal"),
             ({"playlist_id": 1, "k": 501}, "limit of 500"),
             ({"track_uris": ["spotify:track:x\" or true"]}, "String should match pattern"),
             ({"playlist_id": 1, "filters": {"exclude_artists": ['spotify:artist:" || 1==1']}}, "should match"),
             ({"playlist_id": 1, "surprise": 1}, "Extra inputs are not permitted"),
             ({"track_uris": [UNKNOWN_TRACK] * 501}, "at most 500")]
    for body, message in cases:
        r = recommend(url, **body)
        assert r.status_code == 422 and message in r.text, (body, r.status_code, r.text)
    huge = requests.post(f"{url}/v1/recommendations", data="x" * 100_000,
                         headers={"Content-Type": "application/json"}, timeout=30)
    assert huge.status_code == 413
    broken = requests.post(f"{url}/v1/recommendations", data="{not json",
                           headers={"Content-Type": "application/json"}, timeout=30)
    assert broken.status_code == 422


def test_health_readiness_metrics_and_admin_off(embedded):
    _, url = embedded
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "alive"}
    ready = requests.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    for stage in ("playlist_features", "query_tower", "search", "metadata"):
        assert f'segue_api_stage_seconds_count{{stage="{stage}"}}' in metrics
    assert 'segue_api_requests_total{endpoint="/v1/recommendations",status="200"}' in metrics
    assert requests.post(f"{url}/admin/reload", timeout=10).status_code == 403  # no key configured


def test_schemathesis_finds_no_server_errors(embedded):
    _, url = embedded
    st = Path(sys.executable).parent / "st"
    done = subprocess.run([str(st), "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
                           "--max-examples", "25", "--generation-deterministic", "--request-timeout", "30"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


# --- The Redis + Milvus server profile, `segue serve` in its own process ---------------------------


def perturb_tower(source: Path, target: Path, seed: int) -> None:
    """The exported tower at `source` with every trained weight moved by noise of its own spread:
    another model, with the same inputs, saved at `target`."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    loaded = tf.saved_model.load(str(source))
    for v in loaded.pipeline.variables:
        if v is not None and v.trainable and v.dtype.is_floating:
            x = v.numpy()
            v.assign(x + rng.normal(0, x.std() + 1e-3, x.shape).astype(x.dtype.name))
    shutil.rmtree(target, ignore_errors=True)
    tf.saved_model.save(loaded, str(target), signatures={"serving_default": loaded.signatures["serving_default"]})


@pytest.fixture(scope="module")
def served(world, trained, spark, milvus_server, redis_url, tmp_path_factory):
    """`segue serve` against Redis and a Milvus server, each reached through a proxy tests can cut;
    a second model version (the towers' weights moved by noise) for the swap."""
    settings, _ = world
    model, _ = trained
    root = tmp_path_factory.mktemp("serve-server")
    models = root / "models"
    models.mkdir()
    first = model.manifest["version"]
    towers = shutil.ignore_patterns("checkpoints", "logs", "retrieval", "evaluation")
    shutil.copytree(model.path, models / first, ignore=towers)
    second = f"{first}_b"
    shutil.copytree(model.path, models / second, ignore=towers)
    for tower in ("query", "candidate"):
        perturb_tower(model.path / tower, models / second / tower, seed=len(tower))
    manifest = json.loads((models / second / "manifest.json").read_text())
    (models / second / "manifest.json").write_text(json.dumps({**manifest, "version": second}))

    redis_host, redis_port = redis_url.rsplit(":", 1)
    milvus_port = int(milvus_server.rsplit(":", 1)[1])
    redis_proxy, milvus_proxy = FaultProxy(redis_host, int(redis_port)), FaultProxy("127.0.0.1", milvus_port)
    s = settings.model_copy(update={
        "features": settings.features.model_copy(update={"redis_connection_string": f"{redis_url},db=3"}),
        "index": IndexSettings(profile="cpu_hnsw", uri=milvus_server, alias="servetest", validation_queries=50)})
    s = private_feature_repo(s, root, spark, profile="redis")
    s = s.model_copy(update={"paths": s.paths.model_copy(update={"models_dir": models})})
    rebuild_index(s, open_store(s), models / first)

    # The server's own view: the same settings, its dependencies through the proxies.
    port = free_port()
    served_settings = s.model_copy(update={
        "features": s.features.model_copy(update={
            "redis_connection_string": f"127.0.0.1:{redis_proxy.port},db=3,socket_timeout=1,socket_connect_timeout=1"}),
        "index": s.index.model_copy(update={"uri": f"http://127.0.0.1:{milvus_proxy.port}"}),
        "serve": ServeSettings(port=port, refresh_s=0.5, feature_timeout_s=1.5, search_timeout_s=2.0)})
    config = root / "segue.yaml"
    config.write_text(yaml.safe_dump(settings_document(served_settings.model_copy(update={
        "serve": served_settings.serve.model_copy(update={"admin_api_key": None})}))))
    # SEGUE_* variables of the test's environment would win over the file in the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGUE_")}
    env |= {"SEGUE_CONFIG": str(config), "SEGUE_SERVE__ADMIN_API_KEY": ADMIN_KEY}
    log = open(root / "serve.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "segue"), "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (root / "serve.log").read_text()[-4000:]
        time.sleep(0.5)
    try:
        yield {"settings": s, "url": url, "models": models, "second": second, "redis": redis_proxy,
               "milvus": milvus_proxy, "log": root / "serve.log"}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        redis_proxy.close()
        milvus_proxy.close()


def test_server_profile_answers_known_and_cold_playlists_with_filters(served):
    url = served["url"]
    known = recommend(url, playlist_id=9, k=10, filters={"max_per_artist": 1, "exclude_explicit": True})
    assert known.status_code == 200, known.text
    assert known.json()["query_features"] == "feature_store" and known.json()["returned"] == 10
    assert max(Counter(t["artist_uri"] for t in known.json()["tracks"]).values()) == 1
    seeds = playlist_tracks(served["settings"], [9])[9][:5]
    cold = recommend(url, track_uris=seeds, k=10)
    assert cold.status_code == 200 and not {t["track_uri"] for t in cold.json()["tracks"]} & set(seeds)


def test_versions_stay_locked_across_a_swap_under_load(served):
    """Requests keep coming while the nightly rebuild swaps in a build of another model version (other
    weights): none fails, and each answer's tracks carry the cosines of its own version's towers
    (its query tower on the playlist, the collection's candidate vectors), not the other's."""
    s, url = served["settings"], served["url"]
    client = open_client(s)
    answers, failures, errors, stop = [], [], [], threading.Event()
    pids = sorted({worker * 7 % 50 for worker in range(4)})

    def load(worker: int) -> None:
        session = requests.Session()
        pid = pids[worker % len(pids)]
        try:
            while not stop.is_set():
                r = session.post(f"{url}/v1/recommendations", json={"playlist_id": pid, "k": 10}, timeout=30)
                (answers if r.status_code == 200 else failures).append((pid, r.json()) if r.status_code == 200
                                                                       else r.text)
        except Exception as e:  # noqa: BLE001 (a load thread's error fails the test below)
            errors.append(repr(e))

    workers = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    try:
        report = rebuild_index(s, open_store(s), served["models"] / served["second"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(a["index"]["collection"] == report.collection
                                                      for _, a in answers[-20:]):
            time.sleep(0.2)
        time.sleep(1)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not errors and not failures, (errors[:3], failures[:3])
    served_versions = Counter(a["index"]["model_version"] for _, a in answers)
    assert served["second"] in served_versions and len(served_versions) == 2, served_versions

    features = {r.key: {k: [v] for k, v in r.features.items()} for r in lookup(open_store(s), "playlist_query_v1",
                                                                               "pid", pids)}
    queries = {}
    for version in served_versions:
        tower = load_tower(served["models"] / version / "query")
        for pid in pids:
            q = tower.embed(features[pid])[0]
            queries[version, pid] = q / np.linalg.norm(q)
    first = next(v for v in served_versions if v != served["second"])
    assert all(queries[first, p] @ queries[served["second"], p] < 0.99 for p in pids), "the versions must differ"
    vectors: dict[tuple[str, str], np.ndarray] = {}
    for pid, a in answers:
        name, version = a["index"]["collection"], a["index"]["model_version"]
        assert version == collection_info(client, name).model_version
        missing = [t["track_uri"] for t in a["tracks"] if (name, t["track_uri"]) not in vectors]
        for row in client.query(name, filter=f"track_uri in {json.dumps(missing)}",
                                output_fields=["track_uri", "embedding"]) if missing else []:
            vectors[name, row["track_uri"]] = np.asarray(row["embedding"], np.float32)
        cosines = [float(vectors[name, t["track_uri"]] @ queries[version, pid]) for t in a["tracks"]]
        assert np.allclose([t["score"] for t in a["tracks"]], cosines, atol=1e-3), (version, pid)


def test_admin_pins_a_build_and_needs_the_key(served):
    s, url = served["settings"], served["url"]
    client = open_client(s)
    live = client.describe_alias(s.index.alias)["collection_name"]
    previous = collection_info(client, live).previous
    assert previous
    assert requests.put(f"{url}/admin/target", json={"collection": previous}, timeout=30).status_code == 401
    headers = {"X-API-Key": ADMIN_KEY}
    pinned = requests.put(f"{url}/admin/target", json={"collection": previous}, headers=headers, timeout=30)
    assert pinned.status_code == 200 and pinned.json()["collection"] == previous, pinned.text
    assert recommend(url, playlist_id=9, k=5).json()["index"]["collection"] == previous
    assert collection_info(client, previous).pinned  # so that no rebuild prunes it
    missing = requests.put(f"{url}/admin/target", json={"collection": "no_such_build"}, headers=headers, timeout=30)
    assert missing.status_code == 404
    # Only validated builds of this alias may serve: one still building is refused.
    building = f"{s.index.alias}_unfinished_build"
    client.create_collection(building, dimension=8)
    set_properties(client, building, **{MODEL_VERSION: served["second"], STATE: BUILDING})
    try:
        refused = requests.put(f"{url}/admin/target", json={"collection": building}, headers=headers, timeout=30)
        assert refused.status_code == 409 and "building" in refused.json()["detail"], refused.text
    finally:
        client.drop_collection(building)
    back = requests.put(f"{url}/admin/target", json={"collection": None}, headers=headers, timeout=30)
    assert back.status_code == 200 and back.json()["collection"] == live
    assert not collection_info(client, previous).pinned
    assert ADMIN_KEY not in served["log"].read_text()


def test_a_hung_store_gives_503s_while_the_alias_is_still_followed(served):
    """Redis stops answering while clients keep every request thread busy: each request gets a 503
    within the time limits, and a swap of the alias is still followed (on the alias's own thread)."""
    s, url = served["settings"], served["url"]
    client = open_client(s)
    live = client.describe_alias(s.index.alias)["collection_name"]
    other = collection_info(client, live).previous
    assert other and other != live
    codes: list[int] = []
    slow: list[float] = []
    stop = threading.Event()

    def load() -> None:
        session = requests.Session()
        while not stop.is_set():
            start = time.monotonic()
            try:
                codes.append(session.post(f"{url}/v1/recommendations", json={"playlist_id": 9, "k": 5},
                                          timeout=30).status_code)
            except requests.RequestException as e:  # counted, so that it fails the test
                codes.append(type(e).__name__)
            if time.monotonic() - start > 10:
                slow.append(time.monotonic() - start)

    served["redis"].hang()
    workers = [threading.Thread(target=load) for _ in range(24)]
    for w in workers:
        w.start()
    try:
        time.sleep(3)
        client.alter_alias(collection_name=other, alias=s.index.alias)
        deadline = time.monotonic() + 15
        while requests.get(f"{url}/readyz", timeout=10).json().get("collection") != other:
            assert time.monotonic() < deadline, "the alias swap was not followed while Redis hung"
            time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join()
        served["redis"].restore()
        client.alter_alias(collection_name=live, alias=s.index.alias)
    assert codes and set(codes) <= {503}, Counter(codes)
    assert not slow, f"requests waited past the time limits: {slow[:5]}"
    deadline = time.monotonic() + 60
    while requests.get(f"{url}/readyz", timeout=10).json().get("collection") != live:
        assert time.monotonic() < deadline, "the API did not follow the alias back"
        time.sleep(0.3)


@pytest.mark.parametrize("dependency", ["redis", "milvus"])
def test_an_unavailable_dependency_gives_503_with_retry_after_and_recovers(served, dependency):
    url, proxy = served["url"], served[dependency]
    assert recommend(url, playlist_id=9, k=5).status_code == 200
    proxy.cut()
    try:
        start = time.monotonic()
        r = recommend(url, playlist_id=9, k=5)
        took = time.monotonic() - start
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) > 0 and "unavailable" in r.json()["error"]
        assert took < 10, f"a 503 should come within the time limits, took {took:.1f} s"
        if dependency == "milvus":
            assert requests.get(f"{url}/readyz", timeout=30).status_code == 503
    finally:
        proxy.restore()
    deadline = time.monotonic() + 60
    while recommend(url, playlist_id=9, k=5).status_code != 200:
        assert time.monotonic() < deadline, f"the API did not recover after {dependency} came back"
        time.sleep(0.5)


def test_several_workers_need_a_milvus_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGUE_")} | {"SEGUE_INDEX__PROFILE": "embedded"}
    done = subprocess.run([str(Path(sys.executable).parent / "segue"), "serve", "--workers", "2"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "opens its file from one process only" in done.stderr
