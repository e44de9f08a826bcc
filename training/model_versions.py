"""Model versions: what one training run produced, found by name and loaded once.

A version is a folder under `paths.models_dir`: the exported towers (`query/`, `candidate/`), the
ranking stage (`ranker/`; absent when trained without it), and `manifest.json`, which also names the
co-occurrence table the ranker was fitted with. `latest` links to the newest version. Training
writes versions; evaluation, the ranker fit, the index rebuild, the stream and serving read them
only through `ModelVersions`, so the folder layout has one owner.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # loading parts needs TensorFlow; listing and promoting versions does not
    from segue.ranking.ranker import ExportedRanker
    from segue.training.export import ExportedTower

LATEST = "latest"
QUERY_DIR, CANDIDATE_DIR, RANKER_DIR, MANIFEST = "query", "candidate", "ranker", "manifest.json"


class ModelNotFound(FileNotFoundError):
    """A version, or a part of one, is not in the models folder."""


@dataclass(frozen=True)
class ModelVersion:
    """One trained version's folder (resolved: never the `latest` link itself)."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    @property
    def query_path(self) -> Path:
        return self.path / QUERY_DIR

    @property
    def candidate_path(self) -> Path:
        return self.path / CANDIDATE_DIR

    @property
    def ranker_path(self) -> Path:
        return self.path / RANKER_DIR

    @property
    def has_ranker(self) -> bool:
        return self.ranker_path.is_dir()


Version = ModelVersion | str | Path


class ModelVersions:
    """The versions in one models folder, each part loaded once and kept for the `cache_size` most
    recently used versions (a long-running server sees every nightly version go by)."""

    def __init__(self, models_dir: Path | str, cache_size: int = 2):
        if cache_size < 1:
            raise ValueError(f"`cache_size` must be at least 1. Got {cache_size}")
        self.models_dir = Path(models_dir)
        self.cache_size = cache_size
        self._loaded: OrderedDict[str, dict[str, Any]] = OrderedDict()  # by version folder
        self._lock = threading.Lock()

    def resolve(self, version: str | Path = LATEST) -> ModelVersion:
        """A version by name (`latest` too), or a version folder given as a path."""
        candidate = Path(version)
        path = candidate if candidate.is_dir() and (candidate / MANIFEST).is_file() else self.models_dir / str(version)
        if not (path / MANIFEST).is_file():
            hint = ("run `segue train` first" if str(version) == LATEST
                    else f"copy that version into {self.models_dir} or pick one of: {', '.join(self.names()) or 'none'}")
            raise ModelNotFound(f"no trained model {str(version)!r} in {self.models_dir}; {hint}")
        return ModelVersion(path.resolve())

    def names(self) -> list[str]:
        """Every version in the folder, oldest first."""
        if not self.models_dir.is_dir():
            return []
        return sorted(p.name for p in self.models_dir.iterdir()
                      if p.is_dir() and not p.is_symlink() and (p / MANIFEST).is_file())

    def publish_latest(self, version: str) -> None:
        """Points `latest` at `version` with one rename (readers see the old or the new link)."""
        self.resolve(version)
        link, tmp = self.models_dir / LATEST, self.models_dir / f".{LATEST}-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(version)
        os.replace(tmp, link)

    def query_tower(self, version: Version) -> ExportedTower:
        return self._part(version, QUERY_DIR, self._warm_tower)

    def candidate_tower(self, version: Version) -> ExportedTower:
        from segue.training.export import load_tower

        return self._part(version, CANDIDATE_DIR, load_tower)

    def ranker(self, version: Version) -> ExportedRanker | None:
        """The version's ranker, or None for a version trained without the ranking stage."""
        resolved = self._version(version)
        return self._part(resolved, RANKER_DIR, self._warm_ranker) if resolved.has_ranker else None

    def _version(self, version: Version) -> ModelVersion:
        # A ModelVersion is taken as it is: training reads the parts of the version it is writing.
        return version if isinstance(version, ModelVersion) else self.resolve(version)

    @staticmethod
    def _warm_tower(path: Path) -> ExportedTower:
        from segue.training.export import load_tower

        tower = load_tower(path)
        # The first call traces the signature (~100 ms): pay it at load, not in a request.
        tower.embed({i.name: [[] if i.is_list else None] for i in tower.inputs})
        return tower

    @staticmethod
    def _warm_ranker(path: Path) -> ExportedRanker:
        from segue.ranking.ranker import ExportedRanker

        ranker = ExportedRanker(path)
        ranker.warm_up()
        return ranker

    def _part(self, version: Version, part: str, load) -> Any:
        resolved = self._version(version)
        path = resolved.path / part
        if not path.is_dir():
            raise ModelNotFound(f"model {resolved.name!r} has no {part} at {path}; retrain it: segue train")
        with self._lock:
            key = str(resolved.path)
            parts = self._loaded.setdefault(key, {})
            self._loaded.move_to_end(key)
            while len(self._loaded) > self.cache_size:
                self._loaded.popitem(last=False)
            if part not in parts:
                parts[part] = load(path)
            return parts[part]
