"""Typed configuration: defaults < `segue.yaml` < `SEGUE_*` environment variables < CLI flags.

The YAML file is `$SEGUE_CONFIG` if set, else `./segue.yaml` if present. Nested keys map to
environment variables with a double underscore: `SEGUE_SPARK__MASTER=spark://host:7077`.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


class PathSettings(BaseModel):
    """Where each stage reads and writes. Relative paths are relative to the working directory."""

    data_dir: Path = Path("data")
    mpd_dir: Path | None = Field(None, description="MPD slice folder; default <data_dir>/mpd")
    metadata_dir: Path | None = Field(
        None, description="Track/artist metadata folder; default <data_dir>/mpd/metadata"
    )
    warehouse_dir: Path | None = Field(
        None, description="Ingested Parquet tables; default <data_dir>/warehouse/mpd"
    )
    features_dir: Path | None = Field(
        None, description="Feature tables the Feast sources read; default <data_dir>/features"
    )
    examples_dir: Path | None = Field(
        None, description="Training examples; default <data_dir>/examples"
    )

    @model_validator(mode="after")
    def _derive(self) -> "PathSettings":
        self.mpd_dir = self.mpd_dir or self.data_dir / "mpd"
        self.metadata_dir = self.metadata_dir or self.mpd_dir / "metadata"
        self.warehouse_dir = self.warehouse_dir or self.data_dir / "warehouse" / "mpd"
        self.features_dir = self.features_dir or self.data_dir / "features"
        self.examples_dir = self.examples_dir or self.data_dir / "examples"
        return self


class SparkSettings(BaseModel):
    """The Spark session the batch jobs build. `master` is any Spark master URL."""

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = Field(8, ge=1)
    conf: dict[str, str] = Field(default_factory=dict)


class GenerateSettings(BaseModel):
    """Defaults for `segue data generate` (a demo-sized sample)."""

    playlists: int = Field(10_000, ge=100)
    seed: int = 7
    tastes: int = Field(32, ge=4)
    start: date = date(2011, 1, 1)
    end: date = date(2017, 11, 1)
    challenge_playlists: int = Field(1_000, ge=10)
    slice_size: int = Field(1_000, ge=1)

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: date, info: Any) -> date:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError(f"`end` must be after `start`. Got start={start}, end={end}")
        return end


class FeatureSettings(BaseModel):
    """Feast: which profile (feature_store*.yaml) to open, and the feature jobs' parameters."""

    profile: str = Field("local", pattern="^(local|redis|spark)$",
                         description="local: SQLite online + DuckDB offline; redis: Redis online; "
                                     "spark: Spark offline store")
    redis_connection_string: str = "localhost:6379"
    recent_tracks: int = Field(10, ge=1, le=100,
                               description="Tracks in a playlist's recent-sequence features")


class ExampleSettings(BaseModel):
    """`segue batch examples`: how training examples are sampled and split."""

    positions_per_playlist: int = Field(4, ge=1, description="Query positions sampled per playlist")
    split_quantile: float = Field(0.8, gt=0, lt=1,
                                  description="T = this quantile of playlists' modified_at; train before T")
    heldout_share: float = Field(0.3, ge=0, lt=1,
                                 description="Share of post-T playlists held out whole in challenge categories")
    shards: int = Field(4, ge=1)
    seed: int = 13


class LogSettings(BaseModel):
    format: str = Field("text", pattern="^(text|json)$")
    level: str = "INFO"


class SegueSettings(BaseSettings):
    """All of Segue's configuration in one typed place."""

    model_config = SettingsConfigDict(
        env_prefix="SEGUE_", env_nested_delimiter="__", extra="forbid"
    )

    paths: PathSettings = Field(default_factory=PathSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    generate: GenerateSettings = Field(default_factory=GenerateSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    examples: ExampleSettings = Field(default_factory=ExampleSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = config_path()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def config_path() -> Path | None:
    explicit = os.environ.get("SEGUE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"SEGUE_CONFIG points to {path}, which is not a file")
        return path
    default = Path("segue.yaml")
    return default if default.is_file() else None


def load_settings(**overrides: Any) -> SegueSettings:
    """Reads the settings; keyword arguments win over the file and the environment."""
    return SegueSettings(**overrides)
