"""Opens Milvus for the configured profile: a server by URI, or a local Milvus Lite file."""

from __future__ import annotations

from pathlib import Path

from pymilvus import MilvusClient

from segue.indexing.profiles import IndexProfile, resolve_profile
from segue.settings import SegueSettings


def index_profile(settings: SegueSettings) -> IndexProfile:
    cfg = settings.index
    return resolve_profile(cfg.profile, cfg.build_params, cfg.search_params)


def milvus_uri(settings: SegueSettings) -> str:
    if index_profile(settings).engine == "server":
        return settings.index.uri
    path = Path(settings.paths.index_dir) / "milvus.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path.absolute())


def open_client(settings: SegueSettings) -> MilvusClient:
    return MilvusClient(uri=milvus_uri(settings), token=settings.index.token.get_secret_value())
