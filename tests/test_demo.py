"""`segue demo`, the command behind `make demo`, as a user runs it (reduced size)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from segue.streaming.kafka_broker import KafkaBroker
from segue.local_ports import free_port

pytestmark = [pytest.mark.spark, pytest.mark.slow]
SEGUE = Path(sys.executable).parent / "segue"


def _env(**more: str) -> dict[str, str]:
    return {**os.environ, "SEGUE_SPARK__DRIVER_MEMORY": "1g", "SEGUE_SPARK__MASTER": "local[2]",
            "SEGUE_TRAINING__BATCH_SIZE": "256", "SEGUE_TRAINING__EPOCHS": "2", **more}


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SEGUE), *args], cwd=cwd, env=_env(**env), capture_output=True, text=True,
                          timeout=900)


@contextmanager
def _left_running_server(cwd: Path):
    """The demo's index on the default profile: a local Milvus server on a free port, which the demo
    leaves running; stopped afterwards as a user would."""
    uri = f"http://127.0.0.1:{free_port()}"
    try:
        yield {"SEGUE_INDEX__URI": uri}
    finally:
        if (cwd / "demo" / "segue.yaml").is_file():
            _run(["--config", "demo/segue.yaml", "milvus", "stop"], cwd)


@pytest.fixture(scope="module")
def generated_demo(tmp_path_factory):
    """`segue demo` on 500 generated playlists, and the platform it leaves running."""
    cwd = tmp_path_factory.mktemp("generated-demo")
    with _left_running_server(cwd) as env:
        yield cwd, env, _run(["demo", "--out", "demo", "--playlists", "500"], cwd, **env)


def test_demo_on_a_generated_sample(generated_demo):
    tmp_path, _, result = generated_demo
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for step in ("generate MPD-shaped sample", "validate slices (strict reader)", "Spark ingest + data contracts",
                 "Spark feature tables", "feast apply + source check", "materialize (contract-gated)",
                 "training examples (point-in-time)", "co-occurrence neighbours (Spark)",
                 "train two-tower model (TFRS)", "evaluate vs baselines (held-out)",
                 "Milvus server (segue milvus start)", "Milvus index rebuild (Beam) + swap",
                 "stream new tracks + a playlist edit (Kafka -> daemon -> Feast + Milvus)",
                 "serve recommendations (FastAPI: Feast -> query tower -> Milvus)"):
        assert f"{step}: done" in out, f"{step} missing from:\n{out}"
    assert "playlists=500" in out and "rules held" in out and "total" in out
    assert "Nearest tracks to " in out and "\n  5. " in out  # the index answers with five neighbours
    assert "pid 0 online=yes" in out and "unknown pid -1 found=no" in out
    streamed = re.search(r"published=(\d+), indexed=(\d+), playlist edits=(\d+), dead letters=0", out)
    assert streamed and int(streamed[1]) == int(streamed[2]) + 1 and int(streamed[2]) > 0 and streamed[3] == "1", out
    assert "Just streamed: " in out and "\n  4. " in out
    assert re.search(r'Just edited: playlist \d+ ".*" is now ".* \(edited\)", (\d+) -> (\d+) tracks', out), out
    assert "requests=3" in out and "ready=ready" in out
    assert out.count("Recommended for ") == 3 and "features from Feast" in out and "summer road trip" in out
    # Commands run by hand afterwards find the demo's data through the settings it wrote.
    assert "segue --config demo/segue.yaml serve" in out and "segue --config demo/segue.yaml milvus stop" in out
    for artifact in ("segue.yaml", "warehouse/mpd/_manifest.json", "features/_manifest.json", "examples/_manifest.json",
                     "models/latest/manifest.json", "models/latest/evaluation/metrics.md",
                     "models/latest/query/saved_model.pb", "models/latest/candidate/saved_model.pb"):
        assert (tmp_path / "demo" / artifact).is_file(), artifact
    table = out[out.index("| model |"):]
    for model in ("two_tower", "full_pipeline", "merged_sources", "neighbours", "id_only_mf", "cooccurrence",
                  "popularity"):
        assert f"| {model} |" in table


def test_the_demo_leaves_a_platform_whose_api_stream_and_rebuild_run_together(generated_demo):
    """After `make demo`, on the default profile: `segue serve` (two worker processes), `segue stream
    run` and `segue index rebuild` as separate processes on one index, each given the demo's settings
    file by `--config`. A streamed track is recommended by the API while a
    rebuild swaps the index underneath, and still is after the swap."""
    cwd, milvus_env, demo = generated_demo
    assert demo.returncode == 0, demo.stderr[-3000:]
    api_port = free_port()
    with KafkaBroker(cwd / "kafka", port=free_port()) as broker:
        env = {"SEGUE_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers, "SEGUE_SERVE__PORT": str(api_port),
               "SEGUE_STREAM__HEALTH_PORT": str(free_port()), "SEGUE_SERVE__REFRESH_S": "1"}
        config = ["--config", "demo/segue.yaml"]
        logs = {name: (cwd / f"{name}.log").open("w") for name in ("serve", "stream", "rebuild")}
        started = {name: subprocess.Popen([str(SEGUE), *config, *args], cwd=cwd, env=_env(**env),
                                          stdout=logs[name], stderr=subprocess.STDOUT)
                   for name, args in (("serve", ["serve", "--workers", "2"]), ("stream", ["stream", "run"]))}
        try:
            api = f"http://127.0.0.1:{api_port}"
            _wait_for(lambda: _get(f"{api}/readyz") == 200, 180, "the API to be ready", cwd / "serve.log")
            before = _serving_collection(api)
            started["rebuild"] = subprocess.Popen([str(SEGUE), *config, "index", "rebuild"], cwd=cwd,
                                                  env=_env(**env), stdout=logs["rebuild"], stderr=subprocess.STDOUT)
            # A track released later than any other: the only one a `released_after` filter lets through.
            track = {"track_uri": "spotify:track:00000000000000streamed", "track_name": "Streamed While Swapping",
                     "artist_uri": "spotify:artist:00000000000000streamed", "artist_name": "Night Shift",
                     "album_uri": "spotify:album:00000000000000streamed", "album_name": "Live",
                     "duration_ms": 200_000, "popularity": 50, "release_year": 2999}
            (cwd / "new.jsonl").write_text(json.dumps(track) + "\n")
            published = _run([*config, "stream", "publish", "--file", "new.jsonl"], cwd, **env)
            assert published.returncode == 0, published.stderr[-3000:]
            request = {"playlist_id": 0, "k": 10, "filters": {"released_after": 2998}}

            def recommended() -> bool:
                return [t["track_uri"] for t in _post(f"{api}/v1/recommendations", request)["tracks"]] == \
                    [track["track_uri"]]

            _wait_for(recommended, 120, "the API to recommend the streamed track", cwd / "stream.log")
            assert started["rebuild"].wait(timeout=600) == 0, (cwd / "rebuild.log").read_text()[-3000:]
            swapped = MilvusClient(milvus_env["SEGUE_INDEX__URI"]).describe_alias("demo_tracks")["collection_name"]
            assert swapped != before, "the rebuild did not swap the alias"
            _wait_for(lambda: _serving_collection(api) == swapped, 60, "the API to follow the swap", cwd / "serve.log")
            assert recommended(), "the streamed track was lost in the swap"
            assert all(p.poll() is None for n, p in started.items() if n != "rebuild"), "a process died"
        finally:
            for p in started.values():
                p.terminate()
            for p in started.values():
                p.wait(timeout=60)
            for log in logs.values():
                log.close()


def _serving_collection(api: str) -> str | None:
    with urllib.request.urlopen(f"{api}/readyz", timeout=5) as answer:
        return json.loads(answer.read()).get("collection")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status
    except (urllib.error.URLError, ConnectionError):
        return 0


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _wait_for(check, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (urllib.error.URLError, ConnectionError, KeyError):
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; {log.name}:\n{log.read_text()[-3000:]}")


def test_demo_runs_every_stage_on_a_users_slices_without_metadata(tmp_path, generated_demo):
    generated = _run(["data", "generate", "--out", "generated", "--playlists", "500", "--quiet"], tmp_path)
    assert generated.returncode == 0, generated.stderr[-3000:]
    own = tmp_path / "own"
    own.mkdir()
    for slice_file in (tmp_path / "generated").glob("mpd.slice.*.json"):  # slices only, as a user has
        shutil.copy(slice_file, own)
    # One such Milvus server runs per machine (its etcd port is fixed): use the one this module's
    # generated demo left up, as a user's second demo would.
    _, milvus_env, _ = generated_demo
    result = _run(["demo", "--out", "demo", "--mpd", str(own)], tmp_path, **milvus_env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "metadata=none" in out and "generate MPD-shaped sample" not in out
    for step in ("train two-tower model (TFRS)", "evaluate vs baselines (held-out)",
                 "Milvus index rebuild (Beam) + swap", "stream track updates + a playlist edit (Kafka -> daemon -> Feast + Milvus)",
                 "serve recommendations (FastAPI: Feast -> query tower -> Milvus)"):
        assert f"{step}: done" in out, f"{step} missing from:\n{out}"
    streamed = re.search(r"published=(\d+), indexed=(\d+), playlist edits=(\d+)", out)
    assert streamed and int(streamed[1]) == int(streamed[2]) + int(streamed[3]) and int(streamed[2]) > 0, out
    assert "Just streamed: " in out, out
    assert "| two_tower |" in out[out.index("| model |"):]
    assert out.count("Recommended for ") == 3
