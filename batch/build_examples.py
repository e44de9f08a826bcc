"""Build training examples with point-in-time features read through the FeatureServices.

    spark-submit batch/build_examples.py [--features data/features] [--output data/examples]
    segue batch examples ...                         (the same job, in-process)

An example is (playlist state just before position p -> a track at p or later): continuation asks
for any of the hidden tracks, not only the next one. Query positions are sampled, a share
(`positions_share`) of each playlist's tracks and at most `positions_per_playlist`, so examples
grow with the entries while the longest playlists do not dominate, and each gets up to
`labels_per_position` labels drawn from the tracks at and after it. Features come from Feast's
`get_historical_features` with the FeatureServices `playlist_query_v1` (as of one second before
the track at p was added; read once per query position) and `track_candidate_v1` (the label track
as of its addition); the list of features is whatever those services hold in the registry, never a
list kept here.

Split by time: T is a quantile of the playlists' last edits. Examples before T train; playlists
edited after T are split into validation and test, and a share of them is held out whole, in the
ten challenge categories, for evaluation. The validation and test playlists also give the ranking
stage its cases: seeds before the first track added after T, targets from T on (`ranker_cases`).
Output: Parquet per split (one part per chunk of playlists, joined with Feast's features one chunk at
a time, so memory stays bounded: `batch/example_features.py`), the held-out set, each track's
sampling probability in the training examples (for logQ correction), and a manifest.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
from feast import FeatureStore
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from segue.batch.example_features import EXAMPLE_COLUMNS, write_joined
from segue.vocabulary import CATEGORIES, PLAYLIST_SERVICE, TRACK_SERVICE
from segue.batch.publish import OutputPublisher
from segue.batch.spark_job import run_spark_job
from segue.features.store import open_store
from segue.settings import ExampleSettings, SegueSettings, load_settings

_LOGGER = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


def _unit_hash(*cols: Column | str, seed: int) -> Column:
    """A deterministic pseudo-random number in [0, 1) per row."""
    return (F.abs(F.xxhash64(*cols, F.lit(seed))) % 1_000_000) / 1_000_000.0


def sample_positions(timeline: DataFrame, share: float, cap: int, seed: int) -> DataFrame:
    """A playlist's positions, uniformly: `share` of its tracks (at least one), at most `cap`.

    Examples grow with the entries, so a long playlist teaches more than a short one, while the
    cap keeps the longest from dominating.
    """
    by_pid = Window.partitionBy("pid")
    order = by_pid.orderBy(F.xxhash64("pid", "pos", F.lit(seed)))
    k = F.least(F.lit(cap), F.greatest(F.lit(1), F.ceil(F.count("*").over(by_pid) * F.lit(share))))
    return (timeline.withColumn("_r", F.row_number().over(order)).withColumn("_k", k)
            .where(F.col("_r") <= F.col("_k")).drop("_r", "_k"))


def continuation_labels(timeline: DataFrame, positions: DataFrame, labels: int, seed: int) -> DataFrame:
    """Up to `labels` tracks per query position, uniformly from the tracks at and after it.

    Out: pid, pos (the query position), query_at (when the track at pos was added), label_pos,
    track_uri and added_at (the label's).
    """
    queries = positions.select("pid", "pos", F.col("added_at").alias("query_at"))
    later = timeline.select("pid", F.col("pos").alias("label_pos"), "track_uri", "added_at")
    pairs = queries.join(later, "pid").where(F.col("label_pos") >= F.col("pos"))
    order = Window.partitionBy("pid", "pos").orderBy(F.xxhash64("pid", "pos", "label_pos", F.lit(seed)))
    return pairs.withColumn("_r", F.row_number().over(order)).where(F.col("_r") <= labels).drop("_r")


def playlist_chunks(spark: SparkSession, positions: DataFrame, per_chunk: int) -> tuple[DataFrame, int]:
    """pid -> chunk: runs of consecutive playlists (by pid) holding about `per_chunk` positions
    each; and the number of chunks.

    A chunk is a range of pids because the feature tables are sorted by pid within each file: the
    point-in-time join of one chunk then reads only the row groups of its playlists (DuckDB pushes
    the join's key range into the Parquet scan), where playlists drawn by a hash touched every row
    group, so each chunk cost a scan of the whole snapshot table.
    """
    counts = positions.groupBy("pid").count().toPandas().sort_values("pid")
    before = counts["count"].cumsum() - counts["count"]
    chunk = (before // per_chunk).to_numpy()
    table = pa.table({"pid": pa.array(counts.pid.to_numpy(), pa.int64()), "chunk": pa.array(chunk, pa.int64())})
    return spark.createDataFrame(table), int(chunk.max(initial=0)) + 1


def split_time(timeline: DataFrame, quantile: float) -> datetime:
    last_edit = timeline.groupBy("pid").agg(F.max("added_at").alias("t"))
    seconds = last_edit.select(F.unix_timestamp("t").cast("double").alias("s")).approxQuantile("s", [quantile], 0.0)[0]
    return datetime.fromtimestamp(seconds, timezone.utc)


def playlist_roles(timeline: DataFrame, t: datetime, heldout_share: float, seed: int) -> DataFrame:
    """pid -> role: `past` (last edit before T), or `validation` / `test` / `heldout` after T."""
    last = timeline.groupBy("pid").agg(F.max("added_at").alias("last_edit"), F.count("*").alias("n"))
    u = _unit_hash("pid", seed=seed)
    rest = (1 - heldout_share) / 2
    role = (F.when(F.col("last_edit") < F.lit(t), "past")
            .when(u < heldout_share, "heldout")
            .when(u < heldout_share + rest, "validation")
            .otherwise("test"))
    return last.withColumn("role", role).select("pid", "n", "role")


def assign_splits(examples: DataFrame, roles: DataFrame, t: datetime) -> DataFrame:
    """Before T: train (held-out playlists never). After T: the playlist's validation/test role."""
    with_role = examples.join(roles.select("pid", "role"), "pid")
    split = (F.when(F.col("role") == "heldout", F.lit(None))
             .when(F.col("added_at") < F.lit(t), "train")
             .otherwise(F.col("role")))
    return with_role.withColumn("split", split).where(F.col("split").isNotNull()).drop("role")


def _uris_in_order(cond: Column) -> Column:
    """The track_uris of the rows where `cond` holds, in playlist order (an aggregate)."""
    picked = F.sort_array(F.collect_list(F.when(cond, F.struct("pos", "track_uri"))))
    return F.transform(picked, lambda s: s["track_uri"])


def heldout_challenge(timeline: DataFrame, roles: DataFrame, playlists: DataFrame, seed: int) -> DataFrame:
    """Held-out playlists as challenge cases: a category each, seed tracks shown, the rest hidden."""
    cats = F.array(*[F.struct(F.lit(i).alias("i"), F.lit(c.min_tracks).alias("min"))
                     for i, c in enumerate(CATEGORIES)])
    eligible = F.filter(cats, lambda c: c["min"] < F.col("n"))
    chosen = F.element_at(eligible, (F.abs(F.xxhash64("pid", F.lit(seed))) % F.size(eligible) + 1).cast("int"))["i"]
    cases = (roles.where(F.col("role") == "heldout").withColumn("eligible", eligible)
             .where(F.size("eligible") > 0).withColumn("category_index", chosen).select("pid", "category_index"))
    meta = F.array(*[F.struct(F.lit(c.name).alias("name"), F.lit(c.seeds).alias("seeds"),
                              F.lit(c.titled).alias("titled"), F.lit(c.random_seeds).alias("random"))
                     for c in CATEGORIES])
    cat = F.element_at(meta, F.col("category_index") + 1)
    ranked = (timeline.join(cases, "pid").withColumn("cat", cat)
              .withColumn("_r", F.row_number().over(
                  Window.partitionBy("pid").orderBy(F.xxhash64("pid", "pos", F.lit(seed + 1))))))
    is_seed = F.when(F.col("cat.random"), F.col("_r") <= F.col("cat.seeds")).otherwise(F.col("pos") < F.col("cat.seeds"))
    entries = ranked.withColumn("is_seed", is_seed)

    grouped = entries.groupBy("pid", "cat").agg(
        _uris_in_order(F.col("is_seed")).alias("seed_track_uris"),
        _uris_in_order(~F.col("is_seed")).alias("holdout_track_uris"),
        F.max("added_at").alias("modified_at"),
        # For first-k seeds the query is the playlist as it was before position k.
        F.min(F.when(~F.col("is_seed"), F.col("added_at"))).alias("first_holdout_added_at"))
    return (grouped.join(playlists.select("pid", "name"), "pid")
            .select("pid", F.col("cat.name").alias("category"),
                    F.when(F.col("cat.titled"), F.col("name")).otherwise(F.lit("")).alias("name"),
                    "seed_track_uris", "holdout_track_uris", "modified_at",
                    F.when(~F.col("cat.random"), F.col("first_holdout_added_at") - F.expr("INTERVAL 1 SECOND"))
                    .alias("query_as_of")))


def ranker_cases(timeline: DataFrame, roles: DataFrame, t: datetime, seed: int) -> DataFrame:
    """Cases for the ranking stage, from the validation and test playlists: only tracks added at or
    after T are targets, so the ranker learns on a window the retrieval sources never saw.

    Seeds are the playlist before its first target: what it held at T, or, for a playlist begun
    after T, its first 1, 5, 10 or 25 tracks (fewer when short). Out: pid, seed_track_uris,
    target_track_uris, query_as_of (1 s before the first target was added).
    """
    played = timeline.join(roles.where(F.col("role").isin("validation", "test")).select("pid"), "pid")
    before = played.groupBy("pid").agg(F.sum(F.when(F.col("added_at") < F.lit(t), 1).otherwise(0)).alias("pre"),
                                       F.count("*").alias("n"))
    drawn = F.element_at(F.array(*[F.lit(k) for k in (1, 5, 10, 25)]),
                         (F.abs(F.xxhash64("pid", F.lit(seed + 2))) % 4 + 1).cast("int"))
    cut = before.withColumn("cut", F.when(F.col("pre") > 0, F.col("pre")).otherwise(F.least(drawn, F.col("n") - 1)))
    entries = played.join(cut.where((F.col("cut") > 0) & (F.col("cut") < F.col("n"))).select("pid", "cut"), "pid")

    is_seed = F.col("pos") < F.col("cut")
    return entries.groupBy("pid").agg(
        _uris_in_order(is_seed).alias("seed_track_uris"), _uris_in_order(~is_seed).alias("target_track_uris"),
        (F.min(F.when(~is_seed, F.col("added_at"))) - F.expr("INTERVAL 1 SECOND")).alias("query_as_of"),
        F.min(F.when(~is_seed, F.col("added_at"))).alias("first_target_at"))


def service_features(store: FeatureStore, service: str) -> list[str]:
    """The features a service holds, as `view__feature` (the registry is the only list)."""
    fs = store.get_feature_service(service)
    return [f"{p.name_to_use()}__{f.name}" for p in fs.feature_view_projections for f in p.features]


def build_examples(spark: SparkSession, settings: SegueSettings, store: FeatureStore, output: Path) -> dict:
    """Runs the job; the feature tables are the ones the Feast sources read (`paths.features_dir`)."""
    cfg: ExampleSettings = settings.examples
    features_dir = Path(settings.paths.features_dir)
    started = time.perf_counter()
    timeline = spark.read.parquet(str(features_dir / "playlist_timeline")).cache()
    t = split_time(timeline, cfg.split_quantile)
    roles = playlist_roles(timeline, t, cfg.heldout_share, cfg.seed).cache()
    positions = sample_positions(timeline, cfg.positions_share, cfg.positions_per_playlist, cfg.seed)
    labelled = continuation_labels(timeline, positions, cfg.labels_per_position, cfg.seed)
    sampled = assign_splits(labelled, roles, t)
    chunk_of, chunks = playlist_chunks(spark, positions, cfg.positions_per_chunk)
    playlists = spark.read.parquet(str(features_dir / "playlist_snapshots")).groupBy("pid").agg(F.first("name").alias("name"))
    heldout = heldout_challenge(timeline, roles, playlists, cfg.seed).toPandas()
    ranking = ranker_cases(timeline, roles, t, cfg.seed).toPandas()
    with OutputPublisher(output) as run_dir:
        # The sampled examples wait on disk, partitioned by chunk, so the feature join below holds
        # one chunk at a time.
        staging = run_dir / "_sampled"
        # One file per chunk: unshuffled, every task wrote a file into every chunk it held (at 1M
        # playlists 165,000 files after 18 minutes, unfinished). Sorted by example_id within the
        # chunk, as the tasks' files used to be read, so the same examples come out in the same order.
        (sampled.withColumn("example_id", F.monotonically_increasing_id())
         .join(F.broadcast(chunk_of), "pid")
         .select("chunk", *EXAMPLE_COLUMNS, "split")
         .repartition("chunk").sortWithinPartitions("chunk", "example_id")
         .write.partitionBy("chunk").parquet(str(staging)))
        counts = (spark.read.parquet(str(staging)).where(F.col("split") == "train")
                  .groupBy("track_uri").count().toPandas().sort_values("track_uri"))
        sampling = pd.DataFrame({"track_uri": counts.track_uri, "count": counts["count"],
                                 "probability": counts["count"] / counts["count"].sum()})
        _LOGGER.info("positions sampled", extra={"chunks": chunks, "split_time": t.isoformat()})
        counts_by_split, query_positions = write_joined(store, staging, run_dir, SPLITS,
                                                        sampling.set_index("track_uri").probability,
                                                        PLAYLIST_SERVICE, TRACK_SERVICE, cfg.seed)
        shutil.rmtree(staging)
        sampling.to_parquet(run_dir / "track_sampling.parquet", index=False)
        heldout.to_parquet(run_dir / "heldout_challenge.parquet", index=False)
        ranking.to_parquet(run_dir / "ranker_cases.parquet", index=False)
        seconds = time.perf_counter() - started
        manifest = {
            "split_time": t.isoformat(), "features": str(features_dir.absolute()),
            "feature_store": str(store.repo_path),
            "feature_services": {s: service_features(store, s) for s in (PLAYLIST_SERVICE, TRACK_SERVICE)},
            "positions_share": cfg.positions_share, "positions_per_playlist": cfg.positions_per_playlist,
            "labels_per_position": cfg.labels_per_position,
            "chunks": chunks, "query_positions": query_positions, "counts": counts_by_split,
            "heldout_playlists": len(heldout), "ranker_cases": len(ranking),
            "heldout_by_category": heldout.category.value_counts().to_dict(),
            "seconds": round(seconds, 1), "examples_per_s": round(sum(counts_by_split.values()) / seconds),
        }
        (run_dir / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def parse_args(argv: list[str] | None, settings: SegueSettings) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="build_examples", description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, default=settings.paths.features_dir,
                   help="feature tables (also what the Feast sources read)")
    p.add_argument("--output", type=Path, default=settings.paths.examples_dir)
    p.add_argument("--profile", default=None, help="feature store profile: local | redis | spark")
    p.add_argument("--master", default=None)
    return p.parse_args(argv)


def _run(spark: SparkSession, settings: SegueSettings, args: argparse.Namespace) -> dict:
    # --features is also what the Feast sources read, so it goes through the settings.
    settings = settings.model_copy(update={"paths": settings.paths.model_copy(update={"features_dir": args.features})})
    return build_examples(spark, settings, open_store(settings, args.profile), args.output)


def main(argv: list[str] | None = None, settings: SegueSettings | None = None) -> int:
    settings = settings or load_settings()
    return run_spark_job("build_examples", settings, parse_args(argv, settings), _run,
                         ("split_time", "counts", "heldout_playlists", "examples_per_s"))

if __name__ == "__main__":
    sys.exit(main())
