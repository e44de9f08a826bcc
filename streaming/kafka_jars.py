"""The Kafka broker's jars: Apache's own, pinned by `kafka/pom.xml`, fetched by Maven once."""

from __future__ import annotations

from pathlib import Path

from segue.streaming.maven_jars import JarSetupError, ensure_jars, pom_property, require_tool

KAFKA_POM = Path(__file__).parent / "kafka" / "pom.xml"


class KafkaSetupError(JarSetupError):
    """Java or Maven is missing, or Maven could not fetch the broker's jars."""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "segue" / "kafka"


def kafka_version() -> str:
    """The Kafka version the pom pins (its `kafka.version` property)."""
    return pom_property(KAFKA_POM, "kafka.version")


def require_java() -> str:
    return require_tool("java", "the local Kafka broker",
                        "Install a Java 17+ runtime (Debian/Ubuntu: apt-get install openjdk-17-jre-headless).",
                        KafkaSetupError)


def ensure_kafka_jars(cache_dir: Path | None = None) -> Path:
    """The folder of the broker's runtime jars, `<cache_dir>/<kafka version>/libs`."""
    libs = Path(cache_dir or default_cache_dir()) / kafka_version() / "libs"
    return ensure_jars(KAFKA_POM, libs, f"the Kafka {kafka_version()} broker", KafkaSetupError)
