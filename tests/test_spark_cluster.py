"""The batch jobs on a real Spark standalone cluster: a master and a worker started by Spark's own
launcher (`spark-class`, from the pinned pyspark) as local processes, the jobs sent by
`spark-submit --master spark://...` as a user sends them; their outputs equal local mode's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml

from segue.batch.build_examples import build_examples
from segue.batch.build_features import build_features
from segue.batch.ingest_mpd import ingest
from segue.batch.synth import generate
from segue.features.store import REPO_PATH, apply_definitions, open_store
from segue.local_ports import free_port
from segue.settings import load_settings

pytestmark = [pytest.mark.spark, pytest.mark.slow]
BIN = Path(sys.executable).parent
JOBS = Path(__file__).resolve().parents[1] / "batch"
EXAMPLES = {"positions_per_playlist": 4, "positions_per_chunk": 500}


@contextmanager
def standalone_cluster(root: Path):
    """A Spark master and one worker (2 cores), as `start-master.sh` / `start-worker.sh` run them."""
    root.mkdir(parents=True)
    port, ui = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(root)}
    launch = [str(BIN / "spark-class"), "org.apache.spark.deploy."]
    procs = [subprocess.Popen([launch[0], launch[1] + "master.Master", "--host", "127.0.0.1", "--port", str(port),
                               "--webui-port", str(ui)], env=env, stdout=open(root / "master.log", "w"),
                              stderr=subprocess.STDOUT)]
    try:
        procs.append(subprocess.Popen([launch[0], launch[1] + "worker.Worker", url, "--cores", "2", "--memory", "2g",
                                       "--webui-port", str(free_port()), "--work-dir", str(root / "work")],
                                      env=env, stdout=open(root / "worker.log", "w"), stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while True:  # ready when the master lists the worker as alive
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as r:
                    if json.load(r).get("aliveworkers", 0) >= 1:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (root / "master.log").read_text()[-2000:]
            assert all(p.poll() is None for p in procs), (root / "worker.log").read_text()[-2000:]
            time.sleep(1)
        yield url, ui
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def _tables(folder: Path, drop: tuple[str, ...] = ()) -> dict[str, pd.DataFrame]:
    """Every Parquet table under `folder`, lists as tuples, rows in a canonical order (the
    partitioning, and so the order on disk, differs between the runs)."""
    out = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("_") or not (path.is_dir() or path.suffix == ".parquet"):
            continue
        frame = pd.read_parquet(path)
        frame = frame.drop(columns=[c for c in drop if c in frame.columns])
        scalar = []
        for c in frame.columns:
            if frame[c].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
                frame[c] = frame[c].map(lambda v: None if v is None else tuple(v))
            else:
                scalar.append(c)
        out[path.name] = frame.sort_values(scalar).reset_index(drop=True)
    return out


def _assert_same(cluster: dict[str, pd.DataFrame], local: dict[str, pd.DataFrame]) -> None:
    assert cluster.keys() == local.keys() and cluster
    for name, frame in local.items():
        assert len(frame) > 0, name
        pd.testing.assert_frame_equal(cluster[name], frame, check_like=True, obj=name)


def test_ingest_features_and_examples_on_a_standalone_cluster_equal_local_mode(tmp_path, spark):
    mpd = tmp_path / "mpd"
    generate(mpd, playlists=120, seed=19, tastes=8, start=date(2014, 1, 1), end=date(2017, 11, 1),
             challenge_playlists=20, progress=False)

    # Local mode, in-process (the `spark` fixture: local[2]).
    local = load_settings(paths={"data_dir": tmp_path / "local"}, examples=EXAMPLES,
                          features={"repo_path": tmp_path / "local-repo"})
    shutil.copytree(REPO_PATH, local.features.repo_path, ignore=shutil.ignore_patterns("data", "__pycache__"))
    ingest(spark, mpd, local.paths.warehouse_dir, mpd / "metadata")
    build_features(spark, local.paths.warehouse_dir, local.paths.features_dir, local.features)
    apply_definitions(local)
    build_examples(spark, local, open_store(local), local.paths.examples_dir)

    # The cluster: the same jobs through spark-submit, reading their settings file as users' jobs do.
    work = tmp_path / "cluster"
    work.mkdir()
    (work / "segue.yaml").write_text(yaml.safe_dump({
        "paths": {"data_dir": str(work / "data")}, "examples": EXAMPLES,
        "features": {"repo_path": str(work / "repo")},
        "spark": {"driver_memory": "1g", "shuffle_partitions": 2}}))
    shutil.copytree(REPO_PATH, work / "repo", ignore=shutil.ignore_patterns("data", "__pycache__"))
    cluster = load_settings(work / "segue.yaml")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SEGUE_")},
           "SEGUE_CONFIG": str(work / "segue.yaml"), "PYSPARK_PYTHON": sys.executable}
    with standalone_cluster(tmp_path / "spark") as (url, ui):
        def submit(job: str, *args: str) -> None:
            done = subprocess.run([str(BIN / "spark-submit"), "--master", url, "--executor-memory", "1g",
                                   str(JOBS / job), *args], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, f"{job}:\n{done.stderr[-4000:]}"

        submit("ingest_mpd.py", "--input", str(mpd))
        submit("build_features.py")
        apply_definitions(cluster)
        submit("build_examples.py")
        deadline = time.monotonic() + 60
        while True:  # the master hears of a finished application asynchronously
            with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as r:
                apps = json.load(r)["completedapps"]
            if len(apps) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(1)
    # Each job ran as an application of this master, its tasks on the worker's executors.
    assert sorted(a["name"] for a in apps) == ["segue-build_examples", "segue-build_features", "segue-ingest"]

    for folder in ("warehouse_dir", "features_dir"):
        _assert_same(_tables(Path(getattr(cluster.paths, folder))), _tables(Path(getattr(local.paths, folder))))
    # An example's id is Spark's monotonically increasing id, which depends on partitioning.
    _assert_same(_tables(Path(cluster.paths.examples_dir), drop=("example_id",)),
                 _tables(Path(local.paths.examples_dir), drop=("example_id",)))
