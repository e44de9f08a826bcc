"""Ingest MPD slices (and optional track/artist metadata) into Parquet tables.

    spark-submit batch/ingest_mpd.py --input data/mpd --output data/warehouse/mpd [--metadata DIR]
    segue batch ingest ...                          (the same job, in-process)

Tables: playlists, playlist_tracks, tracks, artists, albums, each with `event_timestamp` (UTC,
microseconds): a playlist's `modified_at`, or the first time a track/artist/album appears.
The raw slices and every table are checked by the data contracts before the output is published;
a failure discards the run, leaves the previous output as it was and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segue.batch.contracts import ContractChecker, ContractReport, ContractViolation
from segue.batch.mpd.reader import MpdFormatError, read_slice, slice_files
from segue.batch.mpd.records import ArtistMetadata, Playlist, SliceInfo, TrackMetadata
from segue.batch.mpd.spark_schema import spark_schema
from segue.batch.publish import OutputPublisher
from segue.batch.spark_job import run_spark_job
from segue.settings import SegueSettings, load_settings

_LOGGER = logging.getLogger(__name__)
_CORRUPT = "_corrupt_record"

SLICE_SCHEMA = T.StructType([
    T.StructField("info", spark_schema(SliceInfo)),
    T.StructField("playlists", T.ArrayType(spark_schema(Playlist))),
    T.StructField(_CORRUPT, T.StringType()),
])
TRACK_METADATA_SCHEMA = spark_schema(TrackMetadata).add(_CORRUPT, T.StringType())
ARTIST_METADATA_SCHEMA = spark_schema(ArtistMetadata).add(_CORRUPT, T.StringType())
TABLES = ("playlists", "playlist_tracks", "tracks", "artists", "albums")


@dataclass(frozen=True)
class RawMpd:
    playlists: DataFrame  # one row per playlist, as in the slices, plus `source_file`
    entries: DataFrame    # one row per track entry: pid, pos, track fields, event_timestamp, source_file


def read_slices(spark: SparkSession, files: list[Path]) -> DataFrame:
    """Slice files as read by Spark; a file that does not parse against the format is diagnosed."""
    df = (spark.read.schema(SLICE_SCHEMA)
          .option("multiLine", True).option("mode", "PERMISSIVE")
          .option("columnNameOfCorruptRecord", _CORRUPT)
          .json([str(f) for f in files])
          .withColumn("source_file", F.element_at(F.split(F.input_file_name(), "/"), -1)))
    broken = [r.source_file for r in
              df.where(F.col(_CORRUPT).isNotNull() | F.col("playlists").isNull())
              .select("source_file").collect()]
    if broken:
        by_name = {f.name: f for f in files}
        raise _diagnose(by_name[broken[0]], len(broken))
    return df.drop(_CORRUPT)


def _diagnose(path: Path, n_broken: int) -> MpdFormatError:
    """Spark only says that a file is broken; the strict reader says where and why."""
    try:
        for _ in read_slice(path):
            pass
    except MpdFormatError as e:
        if n_broken > 1:
            e.args = (f"{e.args[0]} ({n_broken - 1} more file(s) are broken too)",)
        return e
    return MpdFormatError(path, "Spark could not parse this file against the MPD schema")


def explode_slices(slices: DataFrame) -> RawMpd:
    playlists = slices.select(F.explode("playlists").alias("p"), "source_file").select("p.*", "source_file")
    # Each entry carries its playlist's time, so no table needs a join back to playlists.
    entries = playlists.select("pid", "modified_at", "source_file", F.explode("tracks").alias("t")).select(
        "pid", "t.*", F.timestamp_seconds("modified_at").alias("event_timestamp"), "source_file")
    return RawMpd(playlists.drop("tracks"), entries)


def raw_playlist_checks(raw: RawMpd) -> DataFrame:
    """Playlists with the counts their track entries imply, for the `raw_playlists` contract."""
    implied = raw.entries.groupBy("pid").agg(
        F.count("*").alias("track_count"),
        F.countDistinct("pos").alias("distinct_pos"),
        F.min("pos").alias("min_pos"), F.max("pos").alias("max_pos"),
        F.countDistinct("artist_uri").alias("distinct_artists"),
        F.countDistinct("album_uri").alias("distinct_albums"),
        F.sum("duration_ms").alias("tracks_duration_ms"))
    contiguous = ((F.col("min_pos") == 0) & (F.col("max_pos") == F.col("track_count") - 1)
                  & (F.col("distinct_pos") == F.col("track_count")))
    return (raw.playlists.join(implied, "pid", "left")
            .fillna(0, subset=["track_count", "distinct_artists", "distinct_albums", "tracks_duration_ms"])
            .withColumn("pos_contiguous", F.coalesce(contiguous, F.lit(False))))


def read_metadata(spark: SparkSession, folder: Path | None) -> tuple[DataFrame | None, DataFrame | None]:
    """`tracks.jsonl` and `artists.jsonl` from a metadata folder; each is optional."""
    if folder is None:
        return None, None
    frames = []
    for name, schema in (("tracks.jsonl", TRACK_METADATA_SCHEMA), ("artists.jsonl", ARTIST_METADATA_SCHEMA)):
        path = folder / name
        if not path.is_file():
            frames.append(None)
            continue
        df = spark.read.schema(schema).option("mode", "PERMISSIVE").json(str(path)).cache()
        bad = df.where(F.col(_CORRUPT).isNotNull()).select(_CORRUPT).limit(3).collect()
        if bad:
            n = df.where(F.col(_CORRUPT).isNotNull()).count()
            raise MpdFormatError(path, f"{n} line(s) are not valid metadata records, e.g. "
                                 f"{bad[0][_CORRUPT][:120]!r}; each line must be one JSON object "
                                 "with the fields of segue.batch.mpd.records")
        frames.append(df.drop(_CORRUPT))
    return frames[0], frames[1]


def _with_nulls(df: DataFrame, schema: T.StructType, key: str) -> DataFrame:
    for f in schema.fields:
        if f.name not in (key, _CORRUPT):
            df = df.withColumn(f.name, F.lit(None).cast(f.dataType))
    return df


def build_tables(raw: RawMpd, track_meta: DataFrame | None,
                 artist_meta: DataFrame | None) -> dict[str, DataFrame]:
    """The five tables from raw playlists and entries; metadata columns are null when unknown."""
    playlists = raw.playlists.select(
        "pid", "name", "description", (F.col("collaborative") == "true").alias("collaborative"),
        "num_tracks", "num_artists", "num_albums", "num_followers", "num_edits", "duration_ms",
        F.timestamp_seconds("modified_at").alias("event_timestamp"), "source_file")
    entries = raw.entries
    playlist_tracks = entries.select("pid", "pos", "track_uri", "artist_uri", "album_uri",
                                     "duration_ms", "event_timestamp")

    # One pass over the entries; artists and albums are rolled up from the (much smaller) tracks.
    per_track = entries.groupBy("track_uri").agg(
        F.min("track_name").alias("track_name"), F.min("artist_uri").alias("artist_uri"),
        F.min("artist_name").alias("artist_name"), F.min("album_uri").alias("album_uri"),
        F.min("album_name").alias("album_name"), F.min("duration_ms").alias("duration_ms"),
        F.count("*").alias("num_entries"), F.min("event_timestamp").alias("event_timestamp"))
    track_meta = track_meta if track_meta is not None else _with_nulls(
        entries.select("track_uri").limit(0), TRACK_METADATA_SCHEMA, "track_uri")
    tracks = per_track.join(
        track_meta.withColumn("release_date", F.to_date("release_date")).dropDuplicates(["track_uri"]),
        "track_uri", "left").cache()

    artists = tracks.groupBy("artist_uri").agg(
        F.min("artist_name").alias("artist_name"), F.count("*").alias("num_tracks"),
        F.sum("num_entries").alias("num_entries"), F.min("event_timestamp").alias("event_timestamp"))
    artist_meta = artist_meta if artist_meta is not None else _with_nulls(
        entries.select("artist_uri").limit(0), ARTIST_METADATA_SCHEMA, "artist_uri")
    artists = artists.join(artist_meta.dropDuplicates(["artist_uri"]), "artist_uri", "left")

    albums = tracks.groupBy("album_uri").agg(
        F.min("album_name").alias("album_name"), F.min("artist_uri").alias("artist_uri"),
        F.count("*").alias("num_tracks"), F.min("event_timestamp").alias("event_timestamp"),
        F.min("release_date").alias("release_date"))
    return {"playlists": playlists, "playlist_tracks": playlist_tracks, "tracks": tracks,
            "artists": artists, "albums": albums}


_TABLE_IDS = {"playlists": ["pid"], "playlist_tracks": ["pid", "pos"], "tracks": ["track_uri"],
              "artists": ["artist_uri"], "albums": ["album_uri"]}


def ingest(spark: SparkSession, input_dir: Path, output: Path, metadata_dir: Path | None,
           keep_previous: int = 1) -> dict:
    """Runs the whole job; returns the manifest written beside the tables."""
    timings: dict[str, float] = {}
    started = datetime.now(timezone.utc)

    def step(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 2)
        _LOGGER.info("step done", extra={"step": name, "seconds": timings[name]})
        return time.perf_counter()

    t = time.perf_counter()
    files = slice_files(input_dir)
    checker = ContractChecker()
    reports: list[ContractReport] = []
    with OutputPublisher(output, keep_previous=keep_previous) as run_dir:
        staged = explode_slices(read_slices(spark, files))
        staging = run_dir / "_staging"
        staged.playlists.write.parquet(str(staging / "playlists"))
        staged.entries.write.parquet(str(staging / "entries"))
        raw = RawMpd(spark.read.parquet(str(staging / "playlists")),
                     spark.read.parquet(str(staging / "entries")))
        t = step("read_slices", t)

        reports.append(checker.check(raw_playlist_checks(raw), "raw_playlists", ["pid", "source_file"]))
        reports.append(checker.check(raw.entries, "raw_tracks", ["pid", "pos", "source_file"]))
        _raise_on_failure(reports)
        t = step("check_raw_contracts", t)

        track_meta, artist_meta = read_metadata(spark, metadata_dir)
        for name, df in build_tables(raw, track_meta, artist_meta).items():
            df.write.parquet(str(run_dir / name))
        t = step("write_tables", t)

        tables = {name: spark.read.parquet(str(run_dir / name)) for name in TABLES}
        for name, df in tables.items():
            reports.append(checker.check(df, name, _TABLE_IDS[name]))
        _raise_on_failure(reports)
        t = step("check_table_contracts", t)

        counts = {name: df.count() for name, df in tables.items()}
        tracks = tables["tracks"]
        manifest = {
            "run": run_dir.name, "started_at": started.isoformat(),
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "input": str(input_dir.absolute()), "slice_files": len(files),
            "metadata": str(metadata_dir.absolute()) if metadata_dir else None,
            "tracks_without_metadata": tracks.where(F.col("popularity").isNull()).count(),
            "artists_without_metadata": tables["artists"].where(F.col("popularity").isNull()).count(),
            "counts": counts, "seconds": timings,
            "contracts": [r.to_dict() for r in reports],
        }
        shutil.rmtree(staging, ignore_errors=True)
        (run_dir / "_manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def _raise_on_failure(reports: list[ContractReport]) -> None:
    if any(not r.success for r in reports):
        raise ContractViolation(reports)


def parse_args(argv: list[str] | None, settings: SegueSettings) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ingest_mpd", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", type=Path, default=settings.paths.mpd_dir, help="folder of MPD slice files")
    p.add_argument("--metadata", type=Path, default=None,
                   help="folder with tracks.jsonl / artists.jsonl (default: <input>/metadata if present)")
    p.add_argument("--no-metadata", action="store_true", help="ingest slices only")
    p.add_argument("--output", type=Path, default=settings.paths.warehouse_dir)
    p.add_argument("--master", default=None, help="Spark master URL (default: settings, or spark-submit's)")
    p.add_argument("--keep-previous", type=int, default=1, help="earlier runs kept for inspection")
    return p.parse_args(argv)


def resolve_metadata(args: argparse.Namespace) -> Path | None:
    if args.no_metadata:
        return None
    if args.metadata is not None:
        if not args.metadata.is_dir():
            raise FileNotFoundError(f"--metadata {args.metadata} is not a folder")
        return args.metadata
    default = args.input / "metadata"
    return default if default.is_dir() else None


def main(argv: list[str] | None = None, settings: SegueSettings | None = None) -> int:
    settings = settings or load_settings()
    return run_spark_job("ingest", settings, parse_args(argv, settings), lambda spark, _, args: ingest(
        spark, args.input, args.output, resolve_metadata(args), args.keep_previous), ("counts", "seconds"))

if __name__ == "__main__":
    sys.exit(main())
