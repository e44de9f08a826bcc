"""Shared fixtures: the hand-written MPD fixture, slice writers, and one real local Spark session."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


@pytest.fixture(scope="module", autouse=True)
def isolated_environment():
    """Each test module starts from the same environment: opening a Feast store exports the
    settings Feast's YAML reads (SEGUE_*), which would otherwise leak into later modules."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def fixture_mpd() -> Path:
    """Three hand-written playlists (one slice) plus metadata for all tracks but one."""
    return FIXTURES / "mpd"


@pytest.fixture
def fixture_doc(fixture_mpd: Path) -> dict:
    """A fresh, mutable copy of the fixture slice document."""
    return copy.deepcopy(json.loads((fixture_mpd / "mpd.slice.0-2.json").read_text()))


def write_slice(folder: Path, doc: dict | str, name: str = "mpd.slice.0-2.json") -> Path:
    """Writes a slice document (or raw text, for broken JSON) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.fixture(scope="session")
def spark():
    from segue.batch.spark_session import build_spark
    from segue.settings import SparkSettings

    session = build_spark("segue-tests", SparkSettings(master="local[2]", shuffle_partitions=2,
                                                       driver_memory="2g"))
    yield session
    session.stop()
