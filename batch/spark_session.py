"""The SparkSession every batch job uses: UTC, microsecond Parquet timestamps, quiet startup."""

from __future__ import annotations

from pyspark import SparkConf
from pyspark.sql import SparkSession

from segue.settings import SparkSettings


def build_spark(app_name: str, settings: SparkSettings, master: str | None = None) -> SparkSession:
    """Gets or creates the session. Under `spark-submit` the submitted master wins unless one is given."""
    builder = SparkSession.builder.appName(app_name)
    if master or not SparkConf().contains("spark.master"):
        builder = builder.master(master or settings.master)
    conf = {
        "spark.driver.memory": settings.driver_memory,
        "spark.sql.session.timeZone": "UTC",
        # Feast's DuckDB store cannot read nanosecond or INT96 timestamps (stack notes).
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        **settings.conf,
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
