"""The SparkSession every batch job uses: UTC, microsecond Parquet timestamps, quiet startup."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from segue.settings import SparkSettings


LOG4J2_CONFIG = Path(__file__).with_name("log4j2.properties")


def build_spark(app_name: str, settings: SparkSettings, master: str | None = None) -> SparkSession:
    """Gets or creates the session. Under `spark-submit` its master is used (`--master`, default
    local[*]) unless the job is given one; in-process, `master` or `settings.master`."""
    builder = SparkSession.builder.appName(app_name)
    if master or not _submitted_master():
        builder = builder.master(master or settings.master)
    conf = {
        "spark.driver.memory": settings.driver_memory,
        "spark.sql.session.timeZone": "UTC",
        # Feast's DuckDB store cannot read nanosecond or INT96 timestamps (stack notes).
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        # Spark's own progress bar on a terminal (what Spark users know); never in logs or CI.
        "spark.ui.showConsoleProgress": "true" if sys.stderr.isatty() else "false",
        "spark.sql.debug.maxToStringFields": "200",
        # Takes effect when this process starts the JVM; under spark-submit pass
        # --driver-java-options with the same flag.
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J2_CONFIG.as_uri()}",
        **settings.conf,
    }

    # Python workers (mapInPandas) otherwise start whichever `python3` is first on PATH, which
    # outside an activated virtualenv lacks Segue and its packages. PySpark reads only the
    # environment variable when it starts the context in-process; a cluster sets its own.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _submitted_master() -> str | None:
    """`spark-submit --master`'s URL when this process runs under spark-submit, else None.

    A SparkConf made before the JVM gateway is up holds no defaults, so it never sees the
    submitted master: under spark-submit the gateway is already running (its port is in the
    environment), and connecting to it first lets the conf read the submitted properties. Outside
    spark-submit nothing is started here: the builder starts the JVM with the driver settings.
    """
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    SparkContext._ensure_initialized()
    conf = SparkConf()
    return conf.get("spark.master") if conf.contains("spark.master") else None

