"""Java runtimes that Segue starts itself (the Kafka broker, the local Flink job server): jars pinned
by a pom, fetched by Maven from Maven Central once into a cache that every later start reuses."""

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

# Written into the libs folder last, holding the pom's digest: a folder without it (or with another
# pom's digest) is not a complete copy of the jars this pom pins.
JARS_COMPLETE_MARKER = ".complete"


class JarSetupError(RuntimeError):
    """Java or Maven is missing, or Maven could not fetch the jars."""


def pom_property(pom: Path, name: str) -> str:
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    value = ElementTree.parse(pom).getroot().findtext(f"m:properties/m:{name}", namespaces=namespace)
    if not value:
        raise JarSetupError(f"{pom} has no <{name}> property")
    return value.strip()


def require_tool(name: str, purpose: str, install_hint: str, error: type[JarSetupError] = JarSetupError) -> str:
    path = shutil.which(name)
    if path is None:
        raise error(f"`{name}` is not on PATH; {purpose} needs it. {install_hint}")
    return path


def ensure_jars(pom: Path, libs: Path, purpose: str, error: type[JarSetupError] = JarSetupError) -> Path:
    """The folder `libs` of the pom's runtime jars; Maven copies them there from Maven Central
    (through ~/.m2) the first time. Returns at once when they are complete."""
    pom_digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if _jars_complete(libs, pom_digest):
        return libs

    require_tool("java", purpose, "Install a Java 17+ runtime (Debian/Ubuntu: apt-get install openjdk-17-jre-headless).",
                 error)
    mvn = require_tool("mvn", purpose, "Install Apache Maven 3.6+ (Debian/Ubuntu: apt-get install maven); "
                                       "it fetches the jars from Maven Central once.", error)
    libs.parent.mkdir(parents=True, exist_ok=True)
    # Maven writes into a private folder that is renamed into place only once complete, so nothing
    # starts from a half-copied folder, even when two processes fetch at the same time.
    staging = Path(tempfile.mkdtemp(prefix=".libs-", dir=libs.parent))
    started = time.monotonic()
    log.info("fetching jars with maven", extra={"for": purpose, "libs": str(libs)})
    try:
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-4000:]
            raise error(f"Maven could not fetch the jars of {purpose} (exit {result.returncode}):\n{output}")
        (staging / JARS_COMPLETE_MARKER).write_text(pom_digest)
        _swap_into_place(staging, libs, pom_digest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    jars = sorted(libs.glob("*.jar"))
    log.info("jars ready", extra={"for": purpose, "jars": len(jars),
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
