"""`segue features materialize`: contracts on the feature tables, then each view's latest rows online.

A table that breaks its contract is not materialized: the online store keeps what it had and the
report says which rule failed, for how many rows, with examples.

Spark picks each entity's latest row and the rows reach the online store through Feast in batches.
Feast's own local engine pulls the whole window into one Arrow table and deduplicates it in pandas:
at 100k playlists one process held 20 GiB, at 1M it ran out of memory. Here the latest row of each
entity is found by a semi-join on (keys, latest time) with the small table of latest times
broadcast, so the wide snapshot rows (track lists) are never shuffled; Spark writes the latest rows
to a staging folder and this process reads them back a batch at a time.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
from feast import FeatureStore, FeatureView
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segue.batch import build_neighbours
from segue.batch.build_features import FEATURE_TABLE_IDS
from segue.batch.contracts import ContractChecker, ContractViolation
from segue.features.source_check import check_feature_sources, source_path

_LOGGER = logging.getLogger(__name__)


# Before any feature time; the first run of a view materializes its whole history from here.
HISTORY_START = datetime(1970, 1, 2, tzinfo=timezone.utc)
# Rows per online write: a batch of playlists with their track lists is a few MB as protos.
WRITE_BATCH_ROWS = 5_000


def latest_rows(spark: SparkSession, view: FeatureView, start: datetime, end: datetime) -> DataFrame:
    """Each entity's row with the latest event time in [start, end] (Feast's bounds): keys, features, time."""
    keys = [c.name for c in view.entity_columns]
    ts = view.batch_source.timestamp_field
    rows = (spark.read.parquet(source_path(view))
            .where((F.col(ts) >= F.lit(start)) & (F.col(ts) <= F.lit(end)))
            .select(*keys, *[f.name for f in view.features], ts))
    latest = rows.groupBy(*keys).agg(F.max(ts).alias(ts))
    # Contracts make (keys, time) unique in every feature table, so the semi-join keeps one row each.
    return rows.join(F.broadcast(latest), [*keys, ts], "left_semi")


def write_online(store: FeatureStore, view: FeatureView, rows: DataFrame, staging: Path,
                 batch_rows: int = WRITE_BATCH_ROWS) -> int:
    """Writes `rows` into the view's online table through Feast, `batch_rows` at a time; returns the count.

    Spark writes the rows to `staging` as Parquet and this process reads them back in batches:
    pulling them through the driver instead (`toLocalIterator`) ran the JVM out of heap at 685k
    of a million playlists, 6 GB driver.
    """
    written, started, last_log = 0, time.monotonic(), time.monotonic()
    for batch in staged_batches(rows, view.batch_source.timestamp_field, staging, batch_rows):
        # Arrow-backed columns keep an integer feature with nulls an integer (numpy would make it float).
        store.write_to_online_store(view.name, df=batch.to_pandas(types_mapper=pd.ArrowDtype))
        written += batch.num_rows
        if time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            _LOGGER.info("materializing", extra={"view": view.name, "rows": written,
                                                 "rows_per_s": round(written / (last_log - started))})
    return written


def staged_batches(rows: DataFrame, ts: str, staging: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """`rows` as Arrow batches of at most `batch_rows`, written by Spark to `staging` and read back.

    The timestamp travels as epoch microseconds (Spark would hand over naive local times) and
    comes back as UTC. `staging` is emptied first and removed after.
    """
    shutil.rmtree(staging, ignore_errors=True)
    rows.withColumn(ts, F.unix_micros(ts)).write.parquet(str(staging))
    try:
        for batch in ds.dataset(staging, format="parquet").to_batches(batch_size=batch_rows):
            if not batch.num_rows:
                continue
            i = batch.schema.get_field_index(ts)
            columns = list(batch.columns)
            columns[i] = columns[i].cast(pa.timestamp("us", tz="UTC"))
            yield pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def materialize(store: FeatureStore, spark: SparkSession, end: datetime | None = None,
                full: bool = False, staging_dir: Path | None = None) -> dict:
    """Checks sources and contracts of every view's table, then materializes up to `end` (now).

    Incremental by default: each view from where its last run stopped, as Feast records it. `full`
    rewrites the whole history; needed after a rebuild of the feature tables or a new feature in a
    view, since an incremental run would skip rows whose times it has already passed.
    `staging_dir`: where Spark leaves each view's latest rows for this process to write online, a
    folder both see (on a cluster, a shared path); default a temporary folder (local Spark).
    """
    views = check_feature_sources(store)
    table_ids = {**FEATURE_TABLE_IDS, build_neighbours.TABLE: build_neighbours.TABLE_IDS}
    checker = ContractChecker()
    reports = []
    for view in store.list_feature_views():
        table = Path(source_path(view)).name
        reports.append(checker.check(spark.read.parquet(source_path(view)), table, table_ids[table]))
    if any(not r.success for r in reports):
        raise ContractViolation(reports)
    if staging_dir is not None:
        Path(staging_dir).mkdir(parents=True, exist_ok=True)
    end = end or datetime.now(timezone.utc)
    # A naive time is UTC, as Feast reads it (Spark would read it in the machine's zone).
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    written = {}
    for view in store.list_feature_views():
        if not view.online:
            continue
        last_end = view.most_recent_end_time
        start = HISTORY_START if full or last_end is None else last_end.replace(tzinfo=last_end.tzinfo or timezone.utc)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="segue-materialize-", dir=staging_dir) as staging:
            written[view.name] = write_online(store, view, latest_rows(spark, view, start, end),
                                              Path(staging) / view.name)
        store.registry.apply_materialization(view, store.project, start, end)
        _LOGGER.info("view materialized", extra={"view": view.name, "rows": written[view.name],
                                                 "seconds": round(time.monotonic() - started, 1)})
    _LOGGER.info("materialized", extra={"views": views, "end": end.isoformat(), "full": full})
    return {"end": end.isoformat(), "full": full, "views": views, "rows": written,
            "contracts": [r.to_dict() for r in reports]}
