"""`segue demo`, the command behind `make demo`, as a user runs it (reduced size)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]
SEGUE = Path(sys.executable).parent / "segue"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEGUE_SPARK__DRIVER_MEMORY": "1g", "SEGUE_SPARK__MASTER": "local[2]",
           "SEGUE_TRAINING__BATCH_SIZE": "256", "SEGUE_TRAINING__EPOCHS": "2"}
    return subprocess.run([str(SEGUE), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def test_demo_on_a_generated_sample(tmp_path):
    result = _run(["demo", "--out", "demo", "--playlists", "500"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for step in ("generate MPD-shaped sample", "validate slices (strict reader)", "Spark ingest + data contracts",
                 "Spark feature tables", "feast apply + source check", "materialize (contract-gated)",
                 "training examples (point-in-time)", "co-occurrence neighbours (Spark)",
                 "train two-tower model (TFRS)",
                 "evaluate vs baselines (held-out)", "Milvus index rebuild (Beam) + swap",
                 "stream new tracks (Kafka -> daemon -> Feast + Milvus)",
                 "serve recommendations (FastAPI: Feast -> query tower -> Milvus)"):
        assert f"{step}: done" in out, f"{step} missing from:\n{out}"
    assert "playlists=500" in out and "rules held" in out and "total" in out
    assert "Nearest tracks to " in out and "\n  5. " in out  # the index answers with five neighbours
    assert "pid 0 online=yes" in out and "unknown pid -1 found=no" in out
    streamed = re.search(r"published=(\d+), indexed=(\d+), dead letters=0", out)
    assert streamed and int(streamed[1]) == int(streamed[2]) > 0, out
    assert "Just streamed: " in out and "\n  4. " in out
    assert "requests=3" in out and "ready=ready" in out
    assert out.count("Recommended for ") == 3 and "features from Feast" in out and "summer road trip" in out
    # Commands run by hand afterwards find the demo's data through the settings it wrote.
    assert "segue --config demo/segue.yaml serve" in out
    for artifact in ("segue.yaml", "warehouse/mpd/_manifest.json", "features/_manifest.json", "examples/_manifest.json",
                     "models/latest/manifest.json", "models/latest/evaluation/metrics.md",
                     "models/latest/query/saved_model.pb", "models/latest/candidate/saved_model.pb"):
        assert (tmp_path / "demo" / artifact).is_file(), artifact
    table = out[out.index("| model |"):]
    for model in ("two_tower", "full_pipeline", "merged_sources", "neighbours", "id_only_mf", "cooccurrence",
                  "popularity"):
        assert f"| {model} |" in table


def test_demo_on_a_users_slices_without_metadata(tmp_path, fixture_mpd):
    own = tmp_path / "my-mpd"
    own.mkdir()
    shutil.copy(fixture_mpd / "mpd.slice.0-2.json", own)
    result = _run(["demo", "--out", "demo", "--mpd", str(own)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generate" not in result.stdout
    assert "playlist_tracks=9" in result.stdout and "metadata=none" in result.stdout
    assert "training examples (point-in-time): done" in result.stdout
    assert "skipping training" in result.stdout  # three playlists do not fill a batch


def test_demo_runs_every_stage_on_a_users_slices_without_metadata(tmp_path):
    generated = _run(["data", "generate", "--out", "generated", "--playlists", "500", "--quiet"], tmp_path)
    assert generated.returncode == 0, generated.stderr[-3000:]
    own = tmp_path / "own"
    own.mkdir()
    for slice_file in (tmp_path / "generated").glob("mpd.slice.*.json"):  # slices only, as a user has
        shutil.copy(slice_file, own)
    result = _run(["demo", "--out", "demo", "--mpd", str(own)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "metadata=none" in out and "generate MPD-shaped sample" not in out
    for step in ("train two-tower model (TFRS)", "evaluate vs baselines (held-out)",
                 "Milvus index rebuild (Beam) + swap", "stream track updates (Kafka -> daemon -> Feast + Milvus)",
                 "serve recommendations (FastAPI: Feast -> query tower -> Milvus)"):
        assert f"{step}: done" in out, f"{step} missing from:\n{out}"
    streamed = re.search(r"published=(\d+), indexed=(\d+)", out)
    assert streamed and int(streamed[1]) == int(streamed[2]) > 0 and "Just streamed: " in out, out
    assert "| two_tower |" in out[out.index("| model |"):]
    assert out.count("Recommended for ") == 3
