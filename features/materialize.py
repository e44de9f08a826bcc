"""`segue features materialize`: contracts on the feature tables, then `materialize-incremental`.

A table that breaks its contract is not materialized: the online store keeps what it had and the
report says which rule failed, for how many rows, with examples.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from feast import FeatureStore
from pyspark.sql import SparkSession

from segue.batch import build_neighbours
from segue.batch.build_features import FEATURE_TABLE_IDS
from segue.batch.contracts import ContractChecker, ContractViolation
from segue.features.source_check import check_feature_sources, source_path

_LOGGER = logging.getLogger(__name__)


# Before any feature time; Feast needs a concrete start for a full materialization.
HISTORY_START = datetime(1970, 1, 2, tzinfo=timezone.utc)


def materialize(store: FeatureStore, spark: SparkSession, end: datetime | None = None,
                full: bool = False) -> dict:
    """Checks sources and contracts of every view's table, then materializes up to `end` (now).

    Incremental by default: from where the last run stopped. `full` rewrites the whole history;
    needed after a rebuild of the feature tables or a new feature in a view, since Feast's
    incremental run would skip rows whose times it has already passed.
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
    end = end or datetime.now(timezone.utc)
    if full:
        store.materialize(start_date=HISTORY_START, end_date=end)
    else:
        store.materialize_incremental(end_date=end)
    _LOGGER.info("materialized", extra={"views": views, "end": end.isoformat(), "full": full})
    return {"end": end.isoformat(), "full": full, "views": views, "contracts": [r.to_dict() for r in reports]}
