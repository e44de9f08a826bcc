"""Structured logging: one JSON object per line (`log.format: json`) or readable text."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from datetime import datetime, timezone

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}  # uvicorn's ANSI copy


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _KnownFalseWarnings(logging.Filter):
    """- Beam 2.77's RunInference warns on every batch that it cannot read memory use: its optional
      ModelManager import fails and takes the `resource` module down with it. Nothing is wrong.
    - Beam calls the Flink runner's options "unparseable" while it forwards them to Java as meant."""

    _FORWARDED = ("--default_environment_type", "--checkpointing_interval", "--finish_bundle_before_checkpointing")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Unparseable argument: "):
            return not message.removeprefix("Unparseable argument: ").startswith(self._FORWARDED)
        return not message.startswith("Resource module is not available")


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_KnownFalseWarnings())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Spark's py4j, GE, TensorFlow (and its absl), Feast's registry refreshes, Beam's batch-size
    # statistics, Milvus Lite's segment chatter and kafka-python's connection lines drown the
    # job's own lines.
    for noisy in ("py4j", "great_expectations", "urllib3", "absl", "tensorflow",
                  "feast.infra.registry.registry", "apache_beam", "milvus_lite", "faiss", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pymilvus logs every failed call it then raises (the caller reports it) and warns that Milvus
    # Lite has no server timestamps for iterators (client time is used; fine for one process).
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    # Milvus Lite's in-process gRPC server logs a traceback for each call it does not implement
    # (AllocTimestamp, which pymilvus's iterators try first and then do without).
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    # While a broker is away kafka-python logs each reconnect attempt as an ERROR, several a second;
    # the stream daemon reports the outage itself (its retry warnings and /healthz).
    for chatter in ("kafka.net", "kafka.cluster", "kafka.coordinator"):
        logging.getLogger(chatter).setLevel(logging.CRITICAL)
    # kafka-python 3.0 calls deprecated importlib.resources functions on each protocol import.
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"(open|read)_text is deprecated")
    # Feast's ibis-based DuckDB reads call a DuckDB method deprecated in 1.4, once per chunk of
    # examples: dozens of lines that are Feast's to fix, not the user's.
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"fetch_arrow_table\(\) is deprecated")
