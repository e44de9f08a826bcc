"""Opens the Feast store for a profile, with Segue's settings passed to Feast's YAML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from string import Template

import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig

import segue.feature_repo
from segue.batch.build_neighbours import publish_empty_table
from segue.settings import SegueSettings

# The Feast repo is its own package, so that an installed Segue (not only a checkout) carries it.
REPO_PATH = Path(segue.feature_repo.__file__).resolve().parent
PROFILE_FILES = {"local": "feature_store.yaml", "redis": "feature_store.redis.yaml",
                 "spark": "feature_store.spark.yaml"}


def profile_environment(settings: SegueSettings, profile: str) -> dict[str, str]:
    """The variables Feast's YAML and definitions.py read; `feast` CLI users set the same ones."""
    return {"SEGUE_FEATURES__PROFILE": profile,
            "SEGUE_FEATURES__REDIS_CONNECTION_STRING": settings.features.redis_connection_string,
            "SEGUE_PATHS__FEATURES_DIR": str(Path(settings.paths.features_dir).absolute()),
            "SEGUE_PATHS__NEIGHBOURS_DIR": str(Path(settings.paths.neighbours_dir).absolute())}


def with_socket_timeouts(connection_string: str, seconds: float) -> str:
    """A Redis connection string that gives up after `seconds` on a dead or silent server, unless
    it already says how long to wait (redis-py's default is forever)."""
    present = {part.split("=", 1)[0].strip() for part in connection_string.split(",") if "=" in part}
    extra = [f"{key}={seconds:g}" for key in ("socket_timeout", "socket_connect_timeout") if key not in present]
    return ",".join([connection_string, *extra])


def open_store(settings: SegueSettings, profile: str | None = None, repo_path: Path | None = None,
               offline_store: dict | None = None) -> FeatureStore:
    """The store of a profile; `repo_path` (or `features.repo_path`) may name another copy of this
    folder (tests and benchmarks do), and `offline_store` replaces the profile's offline store
    (they compare with Feast's own: `{"type": "duckdb"}`)."""
    profile = profile or settings.features.profile
    repo_path = Path(repo_path or settings.features.repo_path or REPO_PATH)
    if profile not in PROFILE_FILES:
        raise ValueError(f"unknown feature profile {profile!r}; choose one of {sorted(PROFILE_FILES)}")
    (repo_path / "data").mkdir(exist_ok=True)
    return FeatureStore(repo_path=str(repo_path), config=repo_config(settings, profile, repo_path, offline_store))


def repo_config(settings: SegueSettings, profile: str, repo_path: Path,
                offline_store: dict | None = None) -> RepoConfig:
    """The profile's `feature_store*.yaml` with its ${VAR}s filled from `settings`, as Feast's own
    loader fills them from the environment for `feast` CLI users; nothing is exported, so stores
    with different settings can live in one process."""
    text = (repo_path / PROFILE_FILES[profile]).read_text()
    raw = yaml.safe_load(Template(text).safe_substitute(profile_environment(settings, profile)))
    config = RepoConfig(**{**raw, **({"offline_store": offline_store} if offline_store else {})})
    config.repo_path = repo_path
    return config


def apply_definitions(settings: SegueSettings, profile: str | None = None,
                      repo_path: Path | None = None) -> str:
    """`feast apply` for a profile, run as users run it (the CLI, in the repo folder); returns its output."""
    profile = profile or settings.features.profile
    repo_path = Path(repo_path or settings.features.repo_path or REPO_PATH)
    (repo_path / "data").mkdir(exist_ok=True)
    publish_empty_table(settings.paths.neighbours_dir)
    env = {**os.environ, **profile_environment(settings, profile)}
    feast = Path(sys.executable).parent / "feast"
    done = subprocess.run([str(feast), "-f", PROFILE_FILES[profile], "apply"], cwd=repo_path, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"feast apply ({profile}) failed:\n{done.stderr[-4000:]}")
    return done.stdout
