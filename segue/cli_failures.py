"""The command line's error boundary: known failures end in one line and their own exit code.

Each line says what failed, where, and the command or setting that fixes it; `segue --debug ...`
shows the traceback instead. Anything not known here is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CONFIGURATION, NOT_PREPARED, UNREACHABLE, NO_JAVA = 3, 4, 5, 6


@dataclass(frozen=True)
class KnownFailure:
    exit_code: int
    message: str


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def known_failure(error: BaseException, settings: Any | None) -> KnownFailure | None:
    """The known failure behind `error` (or anything that caused it), or None."""
    for e in _chain(error):
        found = _classify(e, settings)
        if found is not None:
            return found
    return None


def _classify(e: BaseException, settings: Any | None) -> KnownFailure | None:
    from pydantic import ValidationError

    from segue.features.source_check import RegistryNotApplied
    from segue.training.model_versions import ModelNotFound

    name = type(e).__name__
    text = str(e)
    if isinstance(e, ValidationError):
        return KnownFailure(CONFIGURATION, f"invalid configuration: {text}")
    if isinstance(e, ModelNotFound | RegistryNotApplied):
        return KnownFailure(NOT_PREPARED, text)
    if name in ("FeatureServiceNotFoundException", "FeatureViewNotFoundException", "EntityNotFoundException"):
        return KnownFailure(NOT_PREPARED, f"the Feast registry lacks what this command reads ({text}); "
                                          "run `segue features apply` first")
    if name == "NoIndex":
        return KnownFailure(NOT_PREPARED, f"{text}")
    if name == "MilvusException" and ("Fail connecting" in text or "server unavailable" in text):
        uri = getattr(getattr(settings, "index", None), "uri", None)
        return KnownFailure(UNREACHABLE, f"Milvus at {uri} does not answer; start it (`segue milvus start` on "
                                         "this machine, or docker compose up milvus) or set index.uri "
                                         "(SEGUE_INDEX__URI)")
    if name in ("NoBrokersAvailable", "KafkaConnectionError"):
        servers = getattr(getattr(settings, "kafka", None), "bootstrap_servers", None)
        return KnownFailure(UNREACHABLE, f"Kafka at {servers} does not answer; start it (`segue kafka start`) "
                                         "or set kafka.bootstrap_servers")
    if type(e).__module__.startswith("redis") and name in ("ConnectionError", "TimeoutError"):
        redis = getattr(getattr(settings, "features", None), "redis_connection_string", None)
        return KnownFailure(UNREACHABLE, f"Redis at {redis} does not answer; start redis-server or set "
                                         "features.redis_connection_string")
    if name == "TopicSetupError":
        return KnownFailure(CONFIGURATION, text)
    if "JAVA_GATEWAY_EXITED" in text or (isinstance(e, FileNotFoundError) and "'java'" in text):
        return KnownFailure(NO_JAVA, "Spark could not start Java; install Java 17 (e.g. apt-get install "
                                     "openjdk-17-jre-headless) and put it on PATH or set JAVA_HOME")
    return None
