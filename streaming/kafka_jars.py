"""The Kafka broker's jars: Apache's own, pinned by `kafka/pom.xml`, fetched by Maven from Maven
Central once into a cache that every later start reuses."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path

log = logging.getLogger(__name__)

KAFKA_POM = Path(__file__).parent / "kafka" / "pom.xml"
# Written into the libs folder last, holding the pom's digest: a folder without it (or with another
# pom's digest) is not a complete copy of the jars this pom pins.
JARS_COMPLETE_MARKER = ".complete"


class KafkaSetupError(RuntimeError):
    """Java or Maven is missing, or Maven could not fetch the broker's jars."""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "segue" / "kafka"


def kafka_version() -> str:
    """The Kafka version the pom pins (its `kafka.version` property)."""
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ElementTree.parse(KAFKA_POM).getroot().findtext("m:properties/m:kafka.version", namespaces=namespace)
    if not version:
        raise KafkaSetupError(f"{KAFKA_POM} has no <kafka.version> property")
    return version.strip()


def _require_tool(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise KafkaSetupError(f"`{name}` is not on PATH; the local Kafka broker needs it. {install_hint}")
    return path


def require_java() -> str:
    return _require_tool("java", "Install a Java 17+ runtime (Debian/Ubuntu: apt-get install openjdk-17-jre-headless).")


def ensure_kafka_jars(cache_dir: Path | None = None) -> Path:
    """The folder of the broker's runtime jars, `<cache_dir>/<kafka version>/libs`; Maven copies them
    there from Maven Central (through ~/.m2) the first time. Returns at once when they are complete."""
    version = kafka_version()
    version_dir = Path(cache_dir or default_cache_dir()) / version
    libs = version_dir / "libs"
    pom_digest = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    if _jars_complete(libs, pom_digest):
        return libs

    require_java()
    mvn = _require_tool("mvn", "Install Apache Maven 3.6+ (Debian/Ubuntu: apt-get install maven); "
                               "it fetches the Kafka jars from Maven Central once.")
    version_dir.mkdir(parents=True, exist_ok=True)
    # Maven writes into a private folder that is renamed into place only once complete, so a broker
    # never starts from a half-copied folder, even when two processes fetch at the same time.
    staging = Path(tempfile.mkdtemp(prefix=".libs-", dir=version_dir))
    started = time.monotonic()
    log.info("fetching kafka jars with maven", extra={"kafka_version": version, "libs": str(libs)})
    try:
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-4000:]
            raise KafkaSetupError(
                f"Maven could not fetch the Kafka {version} jars (exit {result.returncode}):\n{output}")
        (staging / JARS_COMPLETE_MARKER).write_text(pom_digest)
        _swap_into_place(staging, libs, pom_digest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    jars = sorted(libs.glob("*.jar"))
    log.info("kafka jars ready", extra={"kafka_version": version, "jars": len(jars),
                                        "megabytes": round(sum(j.stat().st_size for j in jars) / 2**20, 1),
                                        "seconds": round(time.monotonic() - started, 1)})
    return libs


def _jars_complete(libs: Path, pom_digest: str) -> bool:
    marker = libs / JARS_COMPLETE_MARKER
    return marker.is_file() and marker.read_text().strip() == pom_digest


def _swap_into_place(staging: Path, libs: Path, pom_digest: str) -> None:
    if _jars_complete(libs, pom_digest):
        return  # another process finished its copy first; a broker may already run from it
    if libs.exists():
        # A copy for an older pom (or an interrupted one): move it aside first, since a rename
        # cannot replace a non-empty folder.
        stale = libs.with_name(f".stale-{uuid.uuid4().hex}")
        try:
            libs.rename(stale)
        except FileNotFoundError:
            pass  # another process moved it first
        else:
            shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.rename(libs)
    except OSError:
        # Another process renamed its own complete copy in between; keep that one.
        if not _jars_complete(libs, pom_digest):
            raise
