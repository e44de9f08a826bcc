"""Build the feature tables that the Feast sources read, from the ingested Parquet tables.

    spark-submit batch/build_features.py --warehouse data/warehouse/mpd --output data/features
    segue batch features ...                         (the same job, in-process)

The MPD gives only a playlist's final state. A playlist is rebuilt as a timeline: its tracks were
added over `num_edits` sessions spread back from `modified_at`, one second apart within a session
(the last track lands exactly on `modified_at`). Every position is a snapshot, so a point-in-time
join asked "as of just before track p was added" sees exactly tracks 0..p-1.

Tables (event_timestamp: UTC, microseconds):
  playlist_timeline   pid, pos, track_uri, added_at                (for training examples)
  playlist_snapshots  pid, event_timestamp, name, counts as of then, the whole track list so far
                      (`track_uris`, newest `features.playlist_tracks` kept), recent track/artist/album
                      uris (one row per position, and an empty one just before the first track);
                      applied_edit_us (null here; a streamed edit's time on the stream's rows)
  track_features      track_uri, event_timestamp = first_added_s (first added anywhere), names, ids,
                      metadata
  artist_features     artist_uri, event_timestamp, name, genres, popularity, followers

Tracks that only the stream has announced (`segue stream`, recorded under `paths.stream_dir`) join
`track_features` with their newest event, so batch runs and training keep them. For a track the
slices hold, the batch row wins: its metadata files are the source of truth. Playlist states that
streamed edits made join `playlist_snapshots` as rows at their edits' times, so the next
materialize serves them.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import sys
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from segue.batch.contracts import ContractChecker, ContractViolation
from segue.batch.publish import OutputPublisher
from segue.batch.spark_job import run_spark_job
from segue.settings import FeatureSettings, SegueSettings, load_settings

_LOGGER = logging.getLogger(__name__)
DAY = 86_400
MAX_SESSION_GAP_DAYS = 30
FEATURE_TABLES = ("playlist_timeline", "playlist_snapshots", "track_features", "artist_features")
FEATURE_TABLE_IDS = {"playlist_timeline": ["pid", "pos"], "playlist_snapshots": ["pid", "event_timestamp"],
                     "track_features": ["track_uri"], "artist_features": ["artist_uri"]}


def playlist_timeline(playlists: DataFrame, playlist_tracks: DataFrame) -> DataFrame:
    """(pid, pos, track_uri, artist_uri, album_uri, duration_ms, session, added_at) for every entry."""
    sessions = F.greatest(F.lit(1), F.least("num_edits", "num_tracks"))
    # A per-playlist gap between sessions, from a hash so reruns give the same timeline.
    gap = (F.abs(F.xxhash64("pid")) % MAX_SESSION_GAP_DAYS + 1) * DAY
    p = playlists.select("pid", "num_tracks", F.unix_timestamp("event_timestamp").alias("modified_s"),
                         sessions.alias("sessions"), gap.alias("gap_s"))
    t = playlist_tracks.join(p, "pid")
    session = F.floor(F.col("pos") * F.col("sessions") / F.col("num_tracks"))
    session_time = F.col("modified_s") - (F.col("sessions") - 1 - F.col("session")) * F.col("gap_s")
    added = session_time - (F.col("num_tracks") - 1 - F.col("pos"))
    return (t.withColumn("session", session.cast("int"))
            .withColumn("added_at", F.timestamp_seconds(added))
            .select("pid", "pos", "track_uri", "artist_uri", "album_uri", "duration_ms", "session", "added_at"))


def playlist_snapshots(playlists: DataFrame, timeline: DataFrame, sequences: FeatureSettings) -> DataFrame:
    """One row per position (the playlist right after that track was added), plus its creation."""
    ordered = Window.partitionBy("pid").orderBy("pos")
    last_n = ordered.rowsBetween(-(sequences.recent_tracks - 1), Window.currentRow)
    whole = ordered.rowsBetween(-(sequences.playlist_tracks - 1), Window.currentRow)
    so_far = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    final = playlists.select("pid", "name", "collaborative", F.col("num_tracks").alias("final_tracks"),
                             F.col("num_followers").alias("final_followers"))
    # Ranges of pids, not hashes: the window below keeps this partitioning (no second shuffle), and
    # each file then holds one range, so a point-in-time join for a range of playlists reads one
    # file's row groups instead of a row group in every file (at 1M playlists, 87 of 888 per chunk).
    snap = timeline.join(final, "pid").repartitionByRange("pid").select(
        "pid", F.col("added_at").alias("event_timestamp"), "name", "collaborative",
        (F.col("pos") + 1).alias("num_tracks"),
        F.sum("duration_ms").over(so_far).alias("duration_ms"),
        (F.col("session") + 1).cast("long").alias("num_edits"),
        # MPD gives only the final follower count; grow it with the playlist as an estimate.
        F.greatest(F.lit(1), F.round(F.col("final_followers") * (F.col("pos") + 1)
                                     / F.col("final_tracks")).cast("long")).alias("num_followers"),
        F.collect_list("track_uri").over(whole).alias("track_uris"),
        F.collect_list("track_uri").over(last_n).alias("recent_track_uris"),
        F.collect_list("artist_uri").over(last_n).alias("recent_artist_uris"),
        F.collect_list("album_uri").over(last_n).alias("recent_album_uris"),
        F.lit(None).cast("long").alias("applied_edit_us"))
    # The empty playlist, a second before its first track: a query "as of before position 0"
    # still finds the name (the challenge's title-only case) instead of nothing.
    empty = F.array().cast("array<string>")
    created = timeline.where(F.col("pos") == 0).join(final, "pid").repartitionByRange("pid").select(
        "pid", (F.col("added_at") - F.expr("INTERVAL 1 SECOND")).alias("event_timestamp"), "name",
        "collaborative", F.lit(0).cast("long").alias("num_tracks"), F.lit(0).cast("long").alias("duration_ms"),
        F.lit(0).cast("long").alias("num_edits"), F.lit(1).cast("long").alias("num_followers"),
        empty.alias("track_uris"), empty.alias("recent_track_uris"), empty.alias("recent_artist_uris"),
        empty.alias("recent_album_uris"), F.lit(None).cast("long").alias("applied_edit_us"))
    # Each file sorted by pid (the window's order already is; the small `created` part is sorted
    # alone), so a point-in-time join for a range of playlists reads only its row groups.
    return snap.sortWithinPartitions("pid").unionByName(created.sortWithinPartitions("pid"))


def track_features(tracks: DataFrame, artists: DataFrame, timeline: DataFrame) -> DataFrame:
    first_added = timeline.groupBy("track_uri").agg(F.min("added_at").alias("event_timestamp"))
    artist_cols = artists.select("artist_uri", F.col("genres").alias("artist_genres"),
                                 F.col("popularity").alias("artist_popularity"),
                                 F.col("followers").alias("artist_followers"))
    return (tracks.drop("event_timestamp", "num_entries")
            .join(first_added, "track_uri")
            # Epoch seconds: a plain Int64 reads the same offline, online and in the towers.
            .withColumn("first_added_s", F.unix_timestamp("event_timestamp"))
            .join(artist_cols, "artist_uri", "left")
            .withColumn("release_year", F.year("release_date").cast("long"))
            .drop("release_date"))


def with_streamed_tracks(batch: DataFrame, streamed: DataFrame) -> DataFrame:
    """`batch` plus the newest streamed row of each track that `batch` lacks."""
    newest = Window.partitionBy("track_uri").orderBy(F.col("event_timestamp").desc())
    only_streamed = (streamed.withColumn("_rank", F.row_number().over(newest)).where("_rank = 1").drop("_rank")
                     .join(batch.select("track_uri"), "track_uri", "left_anti"))
    aligned = only_streamed.select(*[F.col(f.name).cast(f.dataType) for f in batch.schema.fields])
    return batch.unionByName(aligned)


def with_streamed_snapshots(batch: DataFrame, streamed: DataFrame) -> DataFrame:
    """`batch` plus the playlist states streamed edits recorded (one row per edited playlist and
    micro-batch, at the time of its last edit)."""
    new = streamed.join(batch.select("pid", "event_timestamp"), ["pid", "event_timestamp"], "left_anti")
    return batch.unionByName(new.select(*[F.col(f.name).cast(f.dataType) for f in batch.schema.fields])
                             .sortWithinPartitions("pid"))


def artist_features(artists: DataFrame, timeline: DataFrame) -> DataFrame:
    first_added = timeline.groupBy("artist_uri").agg(F.min("added_at").alias("event_timestamp"))
    return (artists.select("artist_uri", "artist_name", "genres", "popularity", "followers")
            .join(first_added, "artist_uri"))


def build_features(spark: SparkSession, warehouse: Path, output: Path, sequences: FeatureSettings,
                   stream_dir: Path | None = None) -> dict:
    """`sequences`: the lengths of the playlist sequences; `stream_dir`: the stream's record
    (`paths.stream_dir`: `track_features` and `playlist_snapshots`), unioned in."""
    def stream_table(name: str) -> DataFrame | None:
        folder = None if stream_dir is None else Path(stream_dir) / name
        return spark.read.parquet(str(folder)) if folder and any(folder.glob("*.parquet")) else None

    def read(name: str) -> DataFrame:
        return spark.read.parquet(str(warehouse / name))

    checker = ContractChecker()
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def step_done(name: str) -> None:
        # At MPD scale this job runs for tens of minutes: each step says when it is done.
        nonlocal clock
        seconds[name], clock = round(time.perf_counter() - clock, 1), time.perf_counter()
        _LOGGER.info("step done", extra={"step": name, "seconds": seconds[name]})

    with OutputPublisher(output) as run_dir:
        playlists = read("playlists")
        timeline_path = str(run_dir / "playlist_timeline")
        playlist_timeline(playlists, read("playlist_tracks")).write.parquet(timeline_path)
        step_done("playlist_timeline")
        timeline = spark.read.parquet(timeline_path)
        snapshots = playlist_snapshots(playlists, timeline, sequences)
        edited = stream_table("playlist_snapshots")
        if edited is not None:
            snapshots = with_streamed_snapshots(snapshots, edited)
        # Row groups of 16 MB (Parquet's 128 MB default holds thousands of playlists), so a join
        # for a range of playlists (`segue batch examples` joins one range at a time) skips the rest.
        snapshots.write.option("parquet.block.size", 16 * 2**20).parquet(str(run_dir / "playlist_snapshots"))
        step_done("playlist_snapshots")
        tracks = track_features(read("tracks"), read("artists"), timeline)
        announced = stream_table("track_features")
        has_stream = announced is not None
        if has_stream:
            tracks = with_streamed_tracks(tracks, announced)
        tracks.write.parquet(str(run_dir / "track_features"))
        artist_features(read("artists"), timeline).write.parquet(str(run_dir / "artist_features"))
        step_done("track_and_artist_features")

        tables = {n: spark.read.parquet(str(run_dir / n)) for n in FEATURE_TABLES}
        reports = [checker.check(df, name, FEATURE_TABLE_IDS[name]) for name, df in tables.items()]
        if any(not r.success for r in reports):
            raise ContractViolation(reports)
        step_done("contracts")
        streamed = tables["track_features"].join(read("tracks").select("track_uri"), "track_uri",
                                                 "left_anti").count() if has_stream else 0
        manifest = {"warehouse": str(warehouse.absolute()), "recent_tracks": sequences.recent_tracks,
                    "playlist_tracks": sequences.playlist_tracks, "streamed_tracks": streamed,
                    "streamed_playlist_states": 0 if edited is None else edited.count(),
                    "counts": {n: df.count() for n, df in tables.items()}, "seconds": seconds,
                    "contracts": [r.to_dict() for r in reports]}
        (run_dir / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def parse_args(argv: list[str] | None, settings: SegueSettings) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="build_features", description=__doc__.split("\n\n")[0])
    p.add_argument("--warehouse", type=Path, default=settings.paths.warehouse_dir)
    p.add_argument("--output", type=Path, default=settings.paths.features_dir)
    p.add_argument("--recent", type=int, default=settings.features.recent_tracks,
                   help="tracks kept in the recent-sequence features")
    p.add_argument("--playlist-tracks", type=int, default=settings.features.playlist_tracks,
                   help="tracks kept (newest) in the whole-list feature `track_uris`")
    p.add_argument("--stream-dir", type=Path, default=Path(settings.paths.stream_dir),
                   help="the stream's record (announced tracks, edited playlists), unioned in")
    p.add_argument("--master", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None, settings: SegueSettings | None = None) -> int:
    settings = settings or load_settings()
    def run(spark: SparkSession, settings, args: argparse.Namespace) -> dict:
        sequences = settings.features.model_copy(update={"recent_tracks": args.recent,
                                                         "playlist_tracks": args.playlist_tracks})
        return build_features(spark, args.warehouse, args.output, sequences, args.stream_dir)

    return run_spark_job("build_features", settings, parse_args(argv, settings), run, ("counts",))

if __name__ == "__main__":
    sys.exit(main())
