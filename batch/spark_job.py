"""The `main` every spark-submit job shares: settings, logging, a session, and a clean failure."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from segue.batch.contracts import ContractViolation
from segue.batch.mpd.reader import MpdFormatError
from segue.batch.spark_session import build_spark
from segue.logs import configure_logging
from segue.settings import SegueSettings

# Problems with the input or the configuration: a message for a person, not a traceback.
JOB_ERRORS = (MpdFormatError, ContractViolation, FileNotFoundError, FileExistsError, ValueError)


def run_spark_job(name: str, settings: SegueSettings, args: argparse.Namespace,
                  job: Callable[[SparkSession, SegueSettings, argparse.Namespace], dict[str, Any]],
                  summary_keys: tuple[str, ...]) -> int:
    """Runs `job`; prints the manifest's `summary_keys` as JSON, or the error and exits 1."""
    configure_logging(settings.log.format, settings.log.level)
    spark = build_spark(f"segue-{name}", settings.spark, getattr(args, "master", None))
    try:
        manifest = job(spark, settings, args)
    except JOB_ERRORS as e:
        print(f"{name} failed: {e}\nThe previous output (if any) is untouched.", file=sys.stderr)
        return 1
    print(json.dumps({k: manifest[k] for k in summary_keys}, indent=2, default=str))
    return 0
