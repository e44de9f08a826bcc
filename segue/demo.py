"""`make demo`: every stage built so far, end to end, with progress and a closing summary."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from segue.indexing.profiles import PROFILES
from segue.settings import GenerateSettings, IndexSettings, PathSettings, SegueSettings, settings_document
from segue.vocabulary import NEIGHBOUR_SERVICE, PLAYLIST_KEY, PLAYLIST_SERVICE, TRACK_KEY, TRACK_SERVICE

DEMO_ALIAS = "demo_tracks"


@dataclass
class StepResult:
    name: str
    seconds: float
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Demo:
    steps: list[StepResult] = field(default_factory=list)

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        n = len(self.steps) + 1
        click.secho(f"\n[{n}] {name} ...", bold=True)
        t = time.perf_counter()
        facts = fn()
        self.steps.append(StepResult(name, time.perf_counter() - t, facts))
        click.echo(f"[{n}] {name}: done in {self.steps[-1].seconds:.1f}s")
        return facts

    def summary(self) -> str:
        width = max(len(s.name) for s in self.steps)
        lines = [f"{'step':<{width}}  {'seconds':>8}  facts", "-" * (width + 40)]
        for s in self.steps:
            facts = ", ".join(f"{k}={_fact(v)}" for k, v in s.facts.items())
            lines.append(f"{s.name:<{width}}  {s.seconds:8.1f}  {facts}")
        lines.append(f"{'total':<{width}}  {sum(s.seconds for s in self.steps):8.1f}")
        return "\n".join(lines)


def write_demo_config(settings: SegueSettings, out: Path) -> Path:
    """`<out>/segue.yaml`: the demo's settings, so commands run by hand find its data. Secrets are
    left out (they stay in the environment)."""
    document = settings_document(settings, secrets=False)
    document["paths"] = {k: str(Path(v).absolute()) for k, v in document["paths"].items() if v is not None}
    path = Path(out) / "segue.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by `segue demo`: run commands against this demo with `segue --config <this file> ...`\n"
                    + yaml.safe_dump(document, sort_keys=False))
    return path


def _own_feature_repo(out: Path) -> Path:
    """A copy of the Feast repo's definitions under the demo folder (its data/ is the demo's own)."""
    import shutil

    from segue.features.store import REPO_PATH

    repo = out / "feature_repo"
    for stale in repo.glob("*.py"):  # an older layout's modules: `feast apply` would import them
        if not (REPO_PATH / stale.name).is_file():
            stale.unlink()
    shutil.copytree(REPO_PATH, repo, ignore=shutil.ignore_patterns("data", "__pycache__"), dirs_exist_ok=True)
    return repo.absolute()


def run_demo(settings: SegueSettings, out: Path, mpd: Path | None, playlists: int | None) -> int:
    from segue.batch.build_examples import build_examples
    from segue.batch.build_features import build_features
    from segue.batch.build_neighbours import build_neighbours
    from segue.batch.contracts import ContractViolation
    from segue.batch.ingest_mpd import ingest
    from segue.features.materialize import materialize
    from segue.features.online import lookup
    from segue.features.source_check import FeatureSourceError, check_feature_sources
    from segue.features.store import apply_definitions, open_store
    from segue.batch.mpd import MpdFormatError, read_playlists
    from segue.batch.spark_session import build_spark
    from segue.batch.synth import generate
    from segue.training.callbacks import TrainingCollapsed

    demo = Demo()
    report = None
    # Every stage reads and writes under the demo folder, the Feast registry and online store too:
    # a demo never replaces another one's (or a deployment's) registry in the installed repo.
    settings = settings.model_copy(update={"paths": PathSettings(data_dir=out, mpd_dir=mpd)})
    if settings.features.repo_path is None:
        settings = settings.model_copy(update={"features": settings.features.model_copy(
            update={"repo_path": _own_feature_repo(Path(out))})})
    # The demo leaves its Milvus server up, and commands run by hand on data/ use the same server:
    # under its own alias, their rebuild neither swaps the demo's alias nor prunes its builds.
    if settings.index.alias == IndexSettings.model_fields["alias"].default:
        settings = settings.model_copy(update={"index": settings.index.model_copy(update={"alias": DEMO_ALIAS})})
    config = write_demo_config(settings, out)
    mpd_dir = Path(settings.paths.mpd_dir)
    warehouse = Path(settings.paths.warehouse_dir)
    try:
        if mpd is None:
            gen = settings.generate.model_copy(update={"playlists": playlists} if playlists else {})
            demo.run("generate MPD-shaped sample", lambda: _generated_facts(generate(
                mpd_dir, playlists=gen.playlists, seed=gen.seed, tastes=gen.tastes, start=gen.start,
                end=gen.end, challenge_playlists=gen.challenge_playlists, slice_size=gen.slice_size, profile=gen.profile)))

        def validate() -> dict[str, Any]:
            n = entries = 0
            for p in read_playlists(mpd_dir):
                n, entries = n + 1, entries + len(p["tracks"])
            return {"playlists": n, "track_entries": entries}

        demo.run("validate slices (strict reader)", validate)

        metadata = mpd_dir / "metadata"

        def run_ingest() -> dict[str, Any]:
            spark = build_spark("segue-demo-ingest", settings.spark)
            manifest = ingest(spark, mpd_dir, warehouse, metadata if metadata.is_dir() else None)
            return {**manifest["counts"], "metadata": "yes" if manifest["metadata"] else "none",
                    "contracts": f"{sum(r['rules_checked'] for r in manifest['contracts'])} rules held"}

        demo.run("Spark ingest + data contracts", run_ingest)

        def run_features() -> dict[str, Any]:
            spark = build_spark("segue-demo-features", settings.spark)
            manifest = build_features(spark, warehouse, Path(settings.paths.features_dir),
                                      settings.features,
                                      Path(settings.paths.stream_dir))
            return manifest["counts"]

        demo.run("Spark feature tables", run_features)

        def run_apply() -> dict[str, Any]:
            apply_definitions(settings)
            views = check_feature_sources(open_store(settings))
            return {"profile": settings.features.profile, "views": len(views),
                    "services": ", ".join((PLAYLIST_SERVICE, TRACK_SERVICE, NEIGHBOUR_SERVICE))}

        demo.run("feast apply + source check", run_apply)

        def run_examples() -> dict[str, Any]:
            spark = build_spark("segue-demo-examples", settings.spark)
            manifest = build_examples(spark, settings, open_store(settings), Path(settings.paths.examples_dir))
            return {**manifest["counts"], "heldout": manifest["heldout_playlists"],
                    "split_time": manifest["split_time"][:10]}

        examples = demo.run("training examples (point-in-time)", run_examples)

        def run_neighbours() -> dict[str, Any]:
            spark = build_spark("segue-demo-neighbours", settings.spark)
            manifest = build_neighbours(spark, Path(settings.paths.features_dir), Path(settings.paths.examples_dir),
                                        Path(settings.paths.neighbours_dir), settings.candidates)
            return {"tracks": manifest["tracks"], "pairs kept": manifest["pairs_kept"],
                    "window end": manifest["window_end"][:10]}

        demo.run("co-occurrence neighbours (Spark)", run_neighbours)

        def run_materialize() -> dict[str, Any]:
            spark = build_spark("segue-demo-materialize", settings.spark)
            store = open_store(settings)
            # Full: a re-run's tables hold times an earlier incremental run has already passed.
            result = materialize(store, spark, full=True)
            sample = lookup(store, PLAYLIST_SERVICE, PLAYLIST_KEY, [0, -1])
            return {"views": len(result["views"]), "pid 0 online": sample[0].found,
                    "unknown pid -1 found": sample[1].found}

        demo.run("materialize (contract-gated)", run_materialize)

        if examples["train"] < settings.training.batch_size:
            click.secho(f"\nskipping training: {examples['train']} training examples do not fill one batch of "
                        f"{settings.training.batch_size}. Use more playlists or lower training.batch_size "
                        "(SEGUE_TRAINING__BATCH_SIZE).", fg="yellow")
        else:
            report = _train_and_evaluate(demo, settings, gen if mpd is None else None)
    except Exception as e:  # the summary below still says how far it got
        if not isinstance(e, (MpdFormatError, ContractViolation, FeatureSourceError, FileNotFoundError,
                              TrainingCollapsed)):
            traceback.print_exc()
        click.secho(f"\ndemo stopped: {e}", fg="red", err=True)
        return 1
    finally:
        if demo.steps:
            click.secho("\nSummary", bold=True)
            click.echo(demo.summary())

    click.echo(f"\nArtifacts:\n  MPD slices      {mpd_dir}\n  Parquet tables  {warehouse}"
               f"  (manifest: {warehouse / '_manifest.json'})\n"
               f"  feature tables  {settings.paths.features_dir}\n"
               f"  examples        {settings.paths.examples_dir}\n"
               f"  Feast registry  {settings.features.repo_path}/data/ (try: segue --config {config} features get "
               "playlist_query_v1 0)")
    yardsticks = mpd_dir / "generator_report.md"
    if yardsticks.is_file():
        click.echo(f"  yardsticks      {yardsticks}")
    if report is not None:
        from segue.training.report import comparisons_table, metrics_table

        evaluation = Path(report["model_dir"]) / "evaluation"
        click.echo(f"  model           {report['model_dir']}  (towers: query/, candidate/; ScaNN: retrieval/)\n"
                   f"  evaluation      {evaluation}/metrics.md, recall_at_k.png\n"
                   f"  Milvus index    {settings.paths.index_dir}  (try: segue index status)")
        click.secho(f"\nHeld-out playlists ({report['heldout_playlists']}), full catalog "
                    f"({report['catalog_tracks']:,} tracks), seeds excluded", bold=True)
        click.echo(metrics_table(report))
        boot = report.get("bootstrap")
        if boot:
            click.echo(f"[brackets: {boot['level']:.0%} bootstrap intervals over the held-out playlists]")
        comparisons = comparisons_table(report)
        if comparisons:
            click.secho(f"\nCompared with {report['comparisons']['baseline']} (difference, paired bootstrap "
                        "interval; better/worse only when it excludes 0)", bold=True)
            click.echo(comparisons)
    click.echo(f"\nEvery command against this demo reads its settings: segue --config {config} <command>\n"
               f"Serve it yourself: segue --config {config} serve  (then http://127.0.0.1:8000/docs)")
    if report is not None and PROFILES[settings.index.profile].engine == "server":
        click.echo(f"The Milvus server at {settings.index.uri} stays up for the API, `segue stream run` and "
                   f"`segue index rebuild`; stop it with: segue --config {config} milvus stop")
    return 0


def _train_and_evaluate(demo: Demo, settings: SegueSettings, gen: GenerateSettings | None) -> dict[str, Any]:
    from segue.features.store import open_store
    from segue.training.evaluate import evaluate
    from segue.training.train import train

    trained: dict[str, Any] = {}

    def run_train() -> dict[str, Any]:
        result = train(settings, open_store(settings))
        trained["path"] = result.path
        m = result.manifest
        return {"version": m["version"], "examples": m["data"]["train_examples"], "epochs": m["speed"]["epochs"],
                "val recall@100": m["metrics"]["val_recall_at_100"], "examples/s": m["speed"]["examples_per_s"]}

    demo.run("train two-tower model (TFRS)", run_train)

    def run_evaluate() -> dict[str, Any]:
        report = evaluate(settings, open_store(settings), trained["path"])
        trained["report"] = report
        return {f"{name} recall@100": f"{r['overall']['recall@100']:.3f}" for name, r in report["models"].items()}

    demo.run("evaluate vs baselines (held-out)", run_evaluate)
    _build_index(demo, settings, trained["path"])
    if gen is not None:  # new tracks come from the generator's future
        from segue.batch.synth.new_tracks import future_tracks

        tracks = future_tracks(gen.seed, gen.tastes, gen.playlists, gen.start, gen.end, 200)
        _stream_events(demo, settings, tracks, "stream new tracks + a playlist edit (Kafka -> daemon -> Feast + Milvus)")
    else:  # a user's slices have no future: their own tracks come back as update events
        _stream_events(demo, settings, _catalogue_tracks(settings, 200),
                       "stream track updates + a playlist edit (Kafka -> daemon -> Feast + Milvus)")
    _serve_recommendations(demo, settings)
    return trained["report"]


def _build_index(demo: Demo, settings: SegueSettings, model: Path) -> None:
    from segue.features.online import lookup
    from segue.features.store import open_store
    from segue.indexing.milvus_connection import index_profile, open_client
    from segue.indexing.rebuild import rebuild_index
    from segue.indexing.track_index import TrackIndex

    if index_profile(settings).engine == "server":
        _start_local_milvus(demo, settings)

    def run_rebuild() -> dict[str, Any]:
        r = rebuild_index(settings, open_store(settings), model)
        checks = r.validation["checks"]
        return {"collection": r.collection, "rows": r.rows, "profile": r.profile,
                "ANN recall@100": checks["ann_recall"]["recall"], "alias": settings.index.alias}

    demo.run("Milvus index rebuild (Beam) + swap", run_rebuild)
    store = open_store(settings)
    client = open_client(settings)
    index = TrackIndex(client, settings.index.alias, index_profile(settings))
    # The most popular track makes a recognisable example.
    candidates = client.query(settings.index.alias, filter="popularity >= 0", output_fields=["track_uri", "popularity"],
                              limit=2000)
    if not candidates:
        return
    sample = max(candidates, key=lambda r: r["popularity"])["track_uri"]
    hits = index.nearest_tracks(sample, 5)
    names = {r.key: r.features for r in lookup(store, TRACK_SERVICE, TRACK_KEY,
                                                 [sample, *[h.track_uri for h in hits]])}

    def label(uri: str) -> str:
        f = names.get(uri) or {}
        return f"{f.get('track_name') or uri} - {f.get('artist_name') or '?'}"

    click.secho(f"\nNearest tracks to {label(sample)} ({sample})", bold=True)
    for rank, h in enumerate(hits, 1):
        click.echo(f"  {rank}. {h.score:.3f}  {label(h.track_uri)}")


def _start_local_milvus(demo: Demo, settings: SegueSettings) -> None:
    """The server profiles' index on this machine: `segue milvus start`'s server, left running so that
    the API, the stream daemon and the nightly rebuild can share it after the demo."""
    from segue.indexing.milvus_server import MilvusServerError, local_server

    try:
        server = local_server(settings.index.uri, Path(settings.paths.index_dir) / "milvus-server")
    except MilvusServerError:
        return  # a remote server: the rebuild step reaches it, or says it cannot

    def run_start() -> dict[str, Any]:
        started = server.ensure_started()
        return {"uri": server.uri, "started": started, "data": server.data_dir if started else "-"}

    demo.run("Milvus server (segue milvus start)", run_start)


def _catalogue_tracks(settings: SegueSettings, count: int) -> list[dict]:
    """`count` of the catalogue's tracks as the stream's events carry them (the same features)."""
    import pyarrow.parquet as pq

    from segue.streaming.events import TrackFeatures

    table = pq.read_table(Path(settings.paths.features_dir) / "track_features")
    names = [n for n in TrackFeatures.model_fields if n in table.column_names]
    return [{k: v for k, v in row.items() if v is not None} for row in table.select(names).slice(0, count).to_pylist()]


def _shown_playlists(settings: SegueSettings, n: int) -> list:
    """The known playlists the demo shows: the first with at least five recent tracks."""
    from segue.features.online import lookup
    from segue.features.store import open_store

    return [r for r in lookup(open_store(settings), PLAYLIST_SERVICE, PLAYLIST_KEY, list(range(50))) if r.found
            and len(r.features.get("recent_track_uris") or []) >= 5][:n]


def _stream_events(demo: Demo, settings: SegueSettings, tracks: list[dict], step: str) -> None:
    """Streams `tracks`, and one edit that adds the first of them to the first playlist the API
    step then shows, so its answer reflects the edit."""
    import threading

    import numpy as np

    from segue.features.online import lookup
    from segue.features.store import open_store
    from segue.indexing.milvus_connection import index_profile, open_client
    from segue.indexing.track_index import TrackIndex
    from segue.streaming.consumer_daemon import open_daemon
    from segue.streaming.events import new_event, new_playlist_edit
    from segue.streaming.kafka_broker import KafkaBroker
    from segue.local_ports import free_port
    from segue.streaming.kafka_clients import event_producer
    from segue.streaming.publish import publish_events

    broker = KafkaBroker(Path(settings.paths.data_dir) / "kafka", port=free_port())
    edited = _shown_playlists(settings, 1)
    edits = [new_playlist_edit(r.key, added=[tracks[0]["track_uri"]], name=f"{r.features['name']} (edited)")
             for r in edited]

    def run_stream() -> dict[str, Any]:
        broker.start()
        s = settings.model_copy(update={
            "kafka": settings.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers}),
            "stream": settings.stream.model_copy(update={"health_port": None})})
        stop = threading.Event()
        daemon = open_daemon(s, stop)
        runner = threading.Thread(target=daemon.run, name="stream-daemon")
        runner.start()
        deadline = time.monotonic() + 60
        while not daemon.consumer.assignment() and time.monotonic() < deadline:
            time.sleep(0.1)  # publish once the daemon holds its partitions, so freshness is the stream's own
        producer = event_producer(s)
        sent = publish_events(producer, s.stream.topic, (new_event(t) for t in tracks), rate_per_s=100)
        sent.sent += publish_events(producer, s.stream.playlist_topic, edits).sent
        producer.close()
        handled = ("indexed", "edited", "superseded", "dead_letter")
        while sum(daemon.metrics.total(o) for o in handled) < sent.sent and time.monotonic() < deadline + 60:
            time.sleep(0.1)
        stop.set()
        runner.join()
        rows = open_client(s).query(s.index.alias, filter=f"track_uri in {[t['track_uri'] for t in tracks]!r}",
                                    output_fields=["event_time_us", "indexed_at_us"], consistency_level="Strong")
        fresh = np.array([r["indexed_at_us"] - r["event_time_us"] for r in rows]) / 1e6
        return {"published": sent.sent, "indexed": daemon.metrics.total("indexed"),
                "playlist edits": daemon.metrics.total("edited"),
                "dead letters": daemon.metrics.total("dead_letter"),
                "freshness p50 s": f"{np.percentile(fresh, 50):.2f}" if len(fresh) else "-",
                "freshness p95 s": f"{np.percentile(fresh, 95):.2f}" if len(fresh) else "-"}

    try:
        demo.run(step, run_stream)
    finally:
        broker.stop()
    client = open_client(settings)
    index = TrackIndex(client, settings.index.alias, index_profile(settings))
    new = tracks[0]
    hits = index.nearest_tracks(new["track_uri"], 4)
    names = {r.key: r.features for r in lookup(open_store(settings), TRACK_SERVICE, TRACK_KEY,
                                                 [h.track_uri for h in hits])}
    click.secho(f"\nJust streamed: {new['track_name']} - {new['artist_name']} ({new.get('release_year') or '?'}); "
                "searchable now, its nearest tracks:", bold=True)
    for rank, h in enumerate(hits, 1):
        f = names.get(h.track_uri) or {}
        click.echo(f"  {rank}. {h.score:.3f}  {f.get('track_name') or h.track_uri} - {f.get('artist_name') or '?'}")
    for before in edited:
        after = lookup(open_store(settings), PLAYLIST_SERVICE, PLAYLIST_KEY, [before.key])[0].features
        click.secho(f"\nJust edited: playlist {before.key} \"{before.features['name']}\" is now \"{after['name']}\", "
                    f"{before.features['num_tracks']} -> {after['num_tracks']} tracks (the streamed track added); "
                    "the API below reads it from Feast", bold=True)


def _serve_recommendations(demo: Demo, settings: SegueSettings, playlists: int = 2) -> None:
    """Starts the API in this process (Milvus Lite, if chosen, opens its file from one process only),
    asks it for a few playlists over HTTP, prints the answers, and stops it."""
    import json
    import urllib.request

    from segue.serving.api_server import ApiServerThread

    known = _shown_playlists(settings, playlists)
    asks = [(f"playlist {r.key} \"{r.features['name']}\" (features from Feast)", {"playlist_id": r.key, "k": 5})
            for r in known]
    if known:
        seeds = list(known[0].features["recent_track_uris"])[-3:]
        asks.append(("a new playlist \"summer road trip\" with 3 seed tracks, no explicit tracks, one per artist",
                     {"name": "summer road trip", "track_uris": seeds, "k": 5,
                      "filters": {"exclude_explicit": True, "max_per_artist": 1}}))
    answers: list[tuple[str, dict]] = []

    def run_api() -> dict[str, Any]:
        s = settings.model_copy(update={"serve": settings.serve.model_copy(update={"port": 0})})
        took = []
        with ApiServerThread(s) as api:
            for title, body in asks:
                request = urllib.request.Request(f"{api.url}/v1/recommendations", json.dumps(body).encode(),
                                                 {"Content-Type": "application/json"})
                start = time.perf_counter()
                with urllib.request.urlopen(request, timeout=30) as response:
                    answers.append((title, json.loads(response.read())))
                took.append((time.perf_counter() - start) * 1000)
            ready = json.loads(urllib.request.urlopen(f"{api.url}/readyz", timeout=30).read())
        return {"requests": len(took), "slowest ms": f"{max(took):.1f}" if took else "-",
                "model": ready["model_version"], "ready": ready["status"]}

    demo.run("serve recommendations (FastAPI: Feast -> query tower -> Milvus)", run_api)
    for title, answer in answers:
        click.secho(f"\nRecommended for {title}:", bold=True)
        for t in answer["tracks"]:
            click.echo(f"  {t['rank']}. {t['score']:.3f}  {t['track_name'] or t['track_uri']} - "
                       f"{t['artist_name'] or '?'} ({t['release_year'] or '?'})")



def _fact(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _generated_facts(report: dict[str, Any]) -> dict[str, Any]:
    stats = report["statistics"]
    facts = {k: stats[k] for k in ("playlists", "track_entries", "unique_tracks", "challenge_playlists")}
    for name, result in report["yardsticks"].items():
        facts[f"{name} R-prec"] = f"{result['overall']['r_precision']:.3f}"
    return facts
