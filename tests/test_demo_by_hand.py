"""The README's "Running each part by hand": every command, in order, as written.

The commands are read from README.md, so an edit there is what this test runs. The test plays the
user on a fresh folder laid out like the checkout (`segue.yaml`, `batch/` for `spark-submit`) and
changes only what a machine shared with other tests needs, each change named below: a smaller
sample and shorter training, free ports instead of the defaults (by `SEGUE_*` variables and in the curl lines), its own
copy of the Feast repo, and concrete values where the README shows a placeholder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from segue.local_ports import free_port

pytestmark = [pytest.mark.spark, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAEMONS = ("segue serve", "segue stream run")  # they run until stopped: started in the background
SAMPLE = ("--playlists 10000", "--playlists 400")
SHORTER = ("--set epochs=5", "--set epochs=1")  # the README's second training only shows `--set`


def readme_commands(readme: str) -> list[str]:
    """The shell commands of the section's bash blocks, comments dropped, continuations joined; a
    line ending in `# or:` is followed by its alternative, which is not run a second time."""
    section = readme[readme.index("## Running each part by hand"):readme.index("## Configuration")]
    commands, alternative_next = [], False
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"(^|\s+)#.*$", "", line).strip()
            if not command:
                continue
            if not alternative_next:
                commands.append(command)
            alternative_next = line.rstrip().endswith("# or:")
    return commands


def _optional_groups_dropped(command: str) -> str:
    # `[--full]`, `[--profile redis]`, `[version]`: the README's optional parts, run without them
    return re.sub(r" \[(?:--[^\]]*|[a-z]+)\]", "", command)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except (urllib.error.URLError, ConnectionError) as error:
        return getattr(error, "code", 0), ""


def _wait_for(check, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; {log.name}:\n{log.read_text()[-3000:]}")


def _counted(outcome: str, metrics: str) -> float:
    found = re.search(r'segue_stream_events_total\{outcome="%s"\} ([0-9.e+]+)' % outcome, metrics)
    return float(found[1]) if found else 0.0


@pytest.mark.timeout(2400)  # some thirty commands, each a fresh process: about ten minutes on 2 cores
def test_the_readmes_hand_run_commands_run_in_order_as_written(tmp_path):
    commands = readme_commands((ROOT / "README.md").read_text())
    assert commands[0].startswith("segue data generate") and SAMPLE[0] in commands[0], commands[:2]
    assert any(SHORTER[0] in c for c in commands), "the README's `segue train --set` line changed"
    shutil.copy(ROOT / "segue.yaml", tmp_path / "segue.yaml")
    (tmp_path / "batch").symlink_to(ROOT / "batch")
    shutil.copytree(ROOT / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("data", "__pycache__"))
    api, health = free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           # the machine is shared: small Spark and training, free ports, this folder's Feast repo
           "SEGUE_SPARK__DRIVER_MEMORY": "1g", "SEGUE_SPARK__MASTER": "local[2]",
           "SEGUE_TRAINING__BATCH_SIZE": "256", "SEGUE_TRAINING__EPOCHS": "2",
           "SEGUE_INDEX__URI": f"http://127.0.0.1:{free_port()}",
           "SEGUE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
           "SEGUE_SERVE__PORT": str(api), "SEGUE_STREAM__HEALTH_PORT": str(health),
           "SEGUE_FEATURES__REPO_PATH": str(tmp_path / "feature_repo")}
    env.pop("SEGUE_CONFIG", None)
    logs = tmp_path / "logs"
    logs.mkdir()
    daemons: dict[str, subprocess.Popen] = {}
    daemon_logs: dict[str, Path] = {}
    ran: list[str] = []
    try:
        for step, written in enumerate(commands):
            command = _optional_groups_dropped(written).replace(*SAMPLE).replace(*SHORTER).replace("localhost:8000", f"localhost:{api}")
            if "<id>" in command or "spotify:track:..." in command:
                track = _a_track(tmp_path / "data" / "mpd")
                command = command.replace("spotify:track:<id>", track).replace("spotify:track:...", track)
            if "<v>" in command:
                command = command.replace("<v>", _newest_version(tmp_path / "data" / "models"))
            log = logs / f"{step:02d}.log"
            if command in DAEMONS:
                daemon_logs[command] = log
                daemons[command] = subprocess.Popen(shlex.split(command), cwd=tmp_path, env=env,
                                                    stdout=log.open("w"), stderr=subprocess.STDOUT)
                if command == "segue serve":
                    _wait_for(lambda: _get(f"http://127.0.0.1:{api}/readyz")[0] == 200, 240, "the API", log)
                else:
                    _wait_for(lambda: _get(f"http://127.0.0.1:{health}/healthz")[0] == 200, 240, "the daemon", log)
                ran.append(command)
                continue
            result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                    timeout=900)
            log.write_text(result.stdout + result.stderr)
            assert result.returncode == 0, f"`{written}` (run as `{command}`) failed after {ran}:\n" \
                                           f"{(result.stdout + result.stderr)[-3000:]}"
            ran.append(command)
            if command.startswith("segue stream publish --edits"):
                _wait_for(lambda: _counted("edited", _get(f"http://127.0.0.1:{health}/metrics")[1]) >= 1, 180,
                          "the daemon to apply the published edit", daemon_logs["segue stream run"])
            elif command.startswith("segue stream publish"):
                _wait_for(lambda: _counted("indexed", _get(f"http://127.0.0.1:{health}/metrics")[1]) >= 200, 180,
                          "the daemon to index the published tracks", daemon_logs["segue stream run"])
            if command.startswith("curl"):
                answer = json.loads(result.stdout)
                assert answer.get("tracks"), f"`{command}` answered {result.stdout[:500]}"
        assert {"segue serve", "segue stream run"} <= set(ran) and sum(c.startswith("curl") for c in ran) == 3
    finally:
        for process in daemons.values():
            process.terminate()
        for process in daemons.values():
            process.wait(timeout=60)
        for stop in ("segue kafka stop", "segue milvus stop"):
            subprocess.run(shlex.split(stop), cwd=tmp_path, env=env, capture_output=True, timeout=120)


def _a_track(mpd: Path) -> str:
    slice_file = sorted(mpd.glob("mpd.slice.*.json"))[0]
    return json.loads(slice_file.read_text())["playlists"][0]["tracks"][0]["track_uri"]


def _newest_version(models: Path) -> str:
    return sorted(p.name for p in models.iterdir() if p.is_dir() and not p.is_symlink())[-1]
