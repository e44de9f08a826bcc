"""Each track's top co-occurring tracks over the retrieval window: the co-occurrence candidate source.

    spark-submit batch/build_neighbours.py [--examples data/examples] [--output data/neighbours]
    segue batch neighbours ...                         (the same job, in-process)

The window is the one the towers train on: playlist entries added before the examples' split time
T, held-out playlists excluded, so neither evaluation nor a ranker trained after T sees the future.
Two tracks co-occur once per playlist holding both. Each track keeps its `neighbours_per_track`
strongest neighbours (count, then the neighbour's playlist count); the table is stamped T and read
through Feast (`track_neighbours`), online for a request's seed tracks.

The counts are one sparse product, playlists x tracks, transposed onto itself. Spark splits it by
blocks of tracks (`mapInPandas`), each task multiplying its block against the broadcast incidence
matrix, so the work spreads over a cluster's executors while the matrix fits one executor's memory
(the MPD's 66M entries take about 0.5 GB as int32 indices).

Table `track_neighbours`: track_uri, playlists (the track's own playlist count), neighbour_uris,
neighbour_counts (the same order, strongest first), event_timestamp (T).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy import sparse

from segue.batch.contracts import ContractChecker, ContractViolation
from segue.batch.publish import OutputPublisher
from segue.batch.spark_job import run_spark_job
from segue.settings import CandidateSettings, SegueSettings, load_settings

_LOGGER = logging.getLogger(__name__)
TABLE = "track_neighbours"
TABLE_IDS = ["track_uri"]
_SCHEMA = T.StructType([
    T.StructField("track_uri", T.StringType(), False),
    T.StructField("playlists", T.LongType(), False),
    T.StructField("neighbour_uris", T.ArrayType(T.StringType(), False), False),
    T.StructField("neighbour_counts", T.ArrayType(T.LongType(), False), False),
])


def publish_empty_table(output: Path) -> bool:
    """Publishes an empty `track_neighbours` under `output` unless a table is already there, so Feast
    can register and check the view before the first run (Feast's Spark source refuses a missing
    path at `feast apply`). No rows: no neighbours until `segue batch neighbours`. True if written."""
    if (Path(output) / TABLE).exists():
        return False
    schema = pa.schema([("track_uri", pa.string()), ("playlists", pa.int64()),
                        ("neighbour_uris", pa.list_(pa.string())), ("neighbour_counts", pa.list_(pa.int64())),
                        ("event_timestamp", pa.timestamp("us", tz="UTC"))])
    with OutputPublisher(output) as run_dir:
        (run_dir / TABLE).mkdir()
        pq.write_table(schema.empty_table(), run_dir / TABLE / "part-00000.parquet")
        (run_dir / "_manifest.json").write_text(json.dumps({"tracks": 0, "empty": "run `segue batch neighbours`"}))
    return True


def window_entries(timeline: DataFrame, until: datetime, excluded_pids: DataFrame) -> DataFrame:
    """Distinct (pid, track_uri) added before `until`, playlists in `excluded_pids` left out."""
    return (timeline.where(F.col("added_at") < F.lit(until))
            .join(excluded_pids.select("pid"), "pid", "left_anti")
            .select("pid", "track_uri").distinct())


def _top_neighbours(by_track: sparse.csr_matrix, incidence: sparse.csr_matrix, popularity: np.ndarray,
                    tracks: np.ndarray, top: int, tids: np.ndarray) -> pd.DataFrame:
    """Top `top` co-occurring tracks of each track in `tids`; sparse throughout, so a block's cost
    is its co-occurring pairs, not blocks x catalog. `incidence` is playlists x tracks, `by_track`
    its transpose, both CSR: with a CSC operand SciPy converted the whole matrix inside every
    block's product (88% of the time at 1M playlists, so the job grew with blocks x entries)."""
    counts = by_track[tids] @ incidence
    # The neighbour's popularity, as a fraction below 1, only orders equal counts.
    tie_break = popularity / (popularity.max(initial=0) + 1.0)
    uris, kept = [], []
    for r, tid in enumerate(tids):
        row = slice(counts.indptr[r], counts.indptr[r + 1])
        cols, n = counts.indices[row], counts.data[row]
        mine = cols != tid  # a track is not its own neighbour
        cols, n = cols[mine], n[mine]
        score = n + tie_break[cols]
        if len(cols) > top:
            best = np.argpartition(-score, top - 1)[:top]
            cols, n, score = cols[best], n[best], score[best]
        order = np.argsort(-score, kind="stable")
        uris.append(tracks[cols[order]].tolist())
        kept.append(n[order].astype(np.int64))
    return pd.DataFrame({"track_uri": tracks[tids], "playlists": popularity[tids].astype(np.int64),
                         "neighbour_uris": uris, "neighbour_counts": kept})


def track_neighbours(spark: SparkSession, entries: DataFrame, top: int, block: int = 512) -> DataFrame:
    """track_uri, playlists, neighbour_uris, neighbour_counts for every track in `entries`."""
    # Only integers reach the driver: the MPD's entries as (pid, track number) take about 0.8 GB,
    # where as pandas strings they took several GB and a sort of Python objects.
    uris = entries.select("track_uri").distinct().toArrow().column(0).combine_chunks()
    uris = uris.take(pc.sort_indices(uris))
    numbers = spark.createDataFrame(pa.table({"track_uri": uris, "tid": pa.array(np.arange(len(uris)), pa.int32())}))
    pairs = entries.join(numbers, "track_uri").select("pid", "tid").toArrow()
    pids, rows = np.unique(pairs.column("pid").to_numpy(), return_inverse=True)
    tracks, cols = uris.to_numpy(zero_copy_only=False).astype(object), pairs.column("tid").to_numpy()
    ones = np.ones(len(cols), np.int32)
    incidence = sparse.csr_matrix((ones, (rows, cols)), shape=(len(pids), len(tracks)))
    by_track = sparse.csr_matrix((ones, (cols, rows)), shape=(len(tracks), len(pids)))
    popularity = np.diff(by_track.indptr)
    shared = spark.sparkContext.broadcast((by_track, incidence, popularity, tracks))

    def blocks(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        rows_by_track, matrix, pop, uris = shared.value
        for batch in batches:
            for start in batch.id:
                yield _top_neighbours(rows_by_track, matrix, pop, uris, top,
                                      np.arange(start, min(start + block, len(uris))))

    tasks = max(1, min(len(tracks) // block + 1, spark.sparkContext.defaultParallelism * 4))
    return spark.range(0, len(tracks), block, numPartitions=tasks).mapInPandas(blocks, _SCHEMA)


def build_neighbours(spark: SparkSession, features_dir: Path, examples_dir: Path, output: Path,
                     candidates: CandidateSettings) -> dict:
    """Reads the timeline and the examples' split; writes the `track_neighbours` table under `output`."""
    started = time.perf_counter()
    examples_manifest = json.loads((Path(examples_dir) / "_manifest.json").read_text())
    until = datetime.fromisoformat(examples_manifest["split_time"])
    timeline = spark.read.parquet(str(Path(features_dir) / "playlist_timeline"))
    # Written by pandas (nanosecond times Spark cannot read): only its pids are needed.
    heldout_pids = pq.read_table(Path(examples_dir) / "heldout_challenge.parquet", columns=["pid"]).to_pandas()
    heldout = spark.createDataFrame(heldout_pids if len(heldout_pids) else pd.DataFrame({"pid": [-1]}))
    entries = window_entries(timeline, until, heldout).cache()
    table = track_neighbours(spark, entries, candidates.neighbours_per_track)
    with OutputPublisher(output) as run_dir:
        path = str(run_dir / TABLE)
        table.withColumn("event_timestamp", F.lit(until).cast("timestamp")).write.parquet(path)
        written = spark.read.parquet(path)
        report = ContractChecker().check(written, TABLE, TABLE_IDS)
        if not report.success:
            raise ContractViolation([report])
        stats = written.select(F.count("*").alias("tracks"), F.sum(F.size("neighbour_uris")).alias("pairs"),
                               F.sum(F.when(F.size("neighbour_uris") == 0, 1).otherwise(0)).alias("without")).first()
        seconds = time.perf_counter() - started
        manifest = {"window_end": until.isoformat(), "examples": str(Path(examples_dir).resolve()),
                    "neighbours_per_track": candidates.neighbours_per_track,
                    "entries": entries.count(), "tracks": stats.tracks, "pairs_kept": int(stats.pairs or 0),
                    "tracks_without_neighbours": int(stats.without or 0), "seconds": round(seconds, 1),
                    "contracts": [report.to_dict()]}
        (run_dir / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    entries.unpersist()
    _LOGGER.info("neighbours written", extra={k: manifest[k] for k in ("tracks", "pairs_kept", "seconds")})
    return manifest


def parse_args(argv: list[str] | None, settings: SegueSettings) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="build_neighbours", description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, default=settings.paths.features_dir,
                   help="feature tables (the playlist timeline)")
    p.add_argument("--examples", type=Path, default=settings.paths.examples_dir,
                   help="the examples run whose split time and held-out playlists bound the window")
    p.add_argument("--output", type=Path, default=settings.paths.neighbours_dir)
    p.add_argument("--per-track", type=int, default=settings.candidates.neighbours_per_track,
                   help="neighbours kept per track")
    p.add_argument("--master", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None, settings: SegueSettings | None = None) -> int:
    settings = settings or load_settings()
    def run(spark: SparkSession, settings, args: argparse.Namespace) -> dict:
        candidates = settings.candidates.model_copy(update={"neighbours_per_track": args.per_track})
        return build_neighbours(spark, args.features, args.examples, args.output, candidates)

    return run_spark_job("build_neighbours", settings, parse_args(argv, settings), run,
                         ("window_end", "tracks", "pairs_kept", "tracks_without_neighbours", "seconds"))


if __name__ == "__main__":
    sys.exit(main())
