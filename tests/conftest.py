"""Shared fixtures: the hand-written MPD fixture, slice writers, and one real local Spark session."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
# Test modules import TensorFlow before Segue (whose package sets it for the `segue` commands).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


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


INTERRUPTED_MARKER = "interrupted-evaluate"
SMALL_TRAINING = {"batch_size": 256, "epochs": 8, "early_stopping_patience": 2, "validation_queries": 1000,
                  "steps_per_execution": 4}


@pytest.fixture(scope="session")
def world(tmp_path_factory, spark):
    """2,000 generated playlists (8 tastes) through ingest, features, Feast and examples; shared by
    the training and index tests, which only read it."""
    from datetime import date

    from segue.sample_world import build_sample_world
    from segue.settings import load_settings

    root = tmp_path_factory.mktemp("training")
    # Milvus Lite: tests that need the server profile (the default) bring their own server.
    settings = load_settings(paths={"data_dir": root}, training=SMALL_TRAINING, index={"profile": "embedded"},
                             examples={"positions_per_playlist": 4, "labels_per_position": 1})
    store = build_sample_world(spark, settings, playlists=2000, seed=11, tastes=8, start=date(2014, 1, 1),
                               challenge_playlists=20)
    return settings, store


@pytest.fixture(scope="session")
def trained(world):
    """The two-tower model trained on `world`, and its held-out evaluation."""
    from segue.training.evaluate import evaluate
    from segue.training.train import train

    settings, store = world
    model = train(settings, store, verbose=0)
    # What an evaluate stopped while training its id-only baseline leaves: the folder, no manifest.
    # This evaluate must train it again (a test checks the leftover is gone).
    unfinished = model.path / "baselines" / "id_only" / "checkpoints"
    unfinished.mkdir(parents=True)
    (unfinished / INTERRUPTED_MARKER).write_text("left by an interrupted evaluate")
    return model, evaluate(settings, store, model.path)


@pytest.fixture(scope="session")
def spark():
    from segue.batch.spark_session import build_spark
    from segue.settings import SparkSettings

    session = build_spark("segue-tests", SparkSettings(master="local[2]", shuffle_partitions=2,
                                                       driver_memory="2g"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus standalone server (the PyPI `milvus` package: embedded etcd, local storage),
    started as `segue milvus start` starts it, on a free port; yields its URI."""
    from segue.indexing.milvus_server import LocalMilvusServer
    from segue.local_ports import free_port

    with LocalMilvusServer(tmp_path_factory.mktemp("milvus-server"), port=free_port()) as server:
        yield server.uri


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port, stopped afterwards."""
    from segue.local_ports import free_port

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:  # ready when it answers PING
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
        time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
