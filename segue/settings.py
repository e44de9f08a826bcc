"""Typed configuration: defaults < `segue.yaml` < `SEGUE_*` environment variables < CLI flags.

The YAML file is `$SEGUE_CONFIG` if set, else `./segue.yaml` if present. Nested keys map to
environment variables with a double underscore: `SEGUE_SPARK__MASTER=spark://host:7077`.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


class Section(BaseModel):
    """A settings section: a misspelt key fails loudly here too, not only at the top level."""

    model_config = ConfigDict(extra="forbid")


class PathSettings(Section):
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
    models_dir: Path | None = Field(
        None, description="Trained model versions and `latest`; default <data_dir>/models"
    )
    index_dir: Path | None = Field(
        None, description="Index builds (catalogue snapshots, embeddings) and the embedded Milvus "
                          "database; default <data_dir>/index"
    )
    neighbours_dir: Path | None = Field(
        None, description="The co-occurrence neighbour table Feast reads (`segue batch neighbours`); "
                          "default <data_dir>/neighbours"
    )
    stream_dir: Path | None = Field(
        None, description="The stream's offline record of pushed tracks (Parquet), which batch feature "
                          "runs union in; default <data_dir>/stream"
    )

    @model_validator(mode="after")
    def _derive(self) -> "PathSettings":
        self.mpd_dir = self.mpd_dir or self.data_dir / "mpd"
        self.metadata_dir = self.metadata_dir or self.mpd_dir / "metadata"
        self.warehouse_dir = self.warehouse_dir or self.data_dir / "warehouse" / "mpd"
        self.features_dir = self.features_dir or self.data_dir / "features"
        self.examples_dir = self.examples_dir or self.data_dir / "examples"
        self.models_dir = self.models_dir or self.data_dir / "models"
        self.index_dir = self.index_dir or self.data_dir / "index"
        self.stream_dir = self.stream_dir or self.data_dir / "stream"
        self.neighbours_dir = self.neighbours_dir or self.data_dir / "neighbours"
        return self


class SparkSettings(Section):
    """The Spark session the batch jobs build. `master` is any Spark master URL."""

    master: str = Field("local[*]", description="Spark master URL of jobs run in-process (`segue batch ...`); "
                                                "under spark-submit its `--master` (default local[*]) is used")
    driver_memory: str = "4g"
    shuffle_partitions: int = Field(8, ge=1)
    conf: dict[str, str] = Field(default_factory=dict)


class GenerateSettings(Section):
    """Defaults for `segue data generate` (a demo-sized sample)."""

    playlists: int = Field(10_000, ge=100)
    seed: int = 7
    tastes: int = Field(32, ge=4)
    start: date = date(2011, 1, 1)
    end: date = date(2017, 11, 1)
    challenge_playlists: int = Field(1_000, ge=10)
    slice_size: int = Field(1_000, ge=1)
    profile: Literal["demo", "ids_only"] = Field(
        "demo", description="demo: MPD-like, with names, album/artist runs and metadata; "
                            "ids_only: like a radio-playlist source where ids are all there is "
                            "(long playlists, no names, no metadata/, one album per artist)")

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: date, info: Any) -> date:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError(f"`end` must be after `start`. Got start={start}, end={end}")
        return end


class FeatureSettings(Section):
    """Feast: which profile (feature_store*.yaml) to open, and the feature jobs' parameters."""

    profile: str = Field("local", pattern="^(local|redis|spark)$",
                         description="local: SQLite online + DuckDB offline; redis: Redis online; "
                                     "spark: Spark offline store")
    redis_connection_string: str = "localhost:6379"
    recent_tracks: int = Field(10, ge=1, le=100,
                               description="Tracks in a playlist's recent-sequence features")
    playlist_tracks: int = Field(250, ge=1, le=1000,
                                 description="Tracks in a playlist's whole-list feature `track_uris`, newest kept "
                                             "(MPD playlists hold at most 250)")
    repo_path: Path | None = Field(None, description="The Feast repo folder; default: the installed feature_repo/")


class ExampleSettings(Section):
    """`segue batch examples`: how training examples are sampled and split."""

    positions_share: float = Field(0.35, gt=0, le=1, description="Share of a playlist's tracks sampled as "
                                                                  "query positions (at least one)")
    positions_per_playlist: int = Field(64, ge=1, description="At most this many query positions per playlist")
    labels_per_position: int = Field(2, ge=1, description="Labels per query position, drawn from the tracks at "
                                                          "and after it (continuation asks for any later track)")
    split_quantile: float = Field(0.8, gt=0, lt=1,
                                  description="T = this quantile of playlists' modified_at; train before T")
    heldout_share: float = Field(0.3, ge=0, lt=1,
                                 description="Share of post-T playlists held out whole in challenge categories")
    positions_per_chunk: int = Field(25_000, ge=100, description="Query positions whose features are joined and "
                                                                 "written at once: bounds the job's memory")
    seed: int = 13


class CandidateSettings(Section):
    """Candidate sources besides the towers' ANN search, and how many each proposes."""

    neighbours_per_track: int = Field(100, ge=1, le=1000, description="Co-occurring tracks kept per track "
                                                                      "(`segue batch neighbours`)")
    seed_tracks: int = Field(50, ge=1, le=1000, description="A playlist's newest tracks whose neighbours "
                                                           "are read online")
    tower: int = Field(200, ge=1, le=16_384, description="Candidates from the towers' ANN search")
    neighbours: int = Field(200, ge=0, le=16_384, description="Candidates from co-occurrence (0: off)")


class RankerSettings(Section):
    """The ranking stage: a DCN-v2 model over the merged candidates (`segue train` fits it)."""

    enabled: bool = Field(True, description="Serve ranked candidates; false: the merged sources in "
                                            "reciprocal-rank-fusion order (a request may also ask for it)")
    cross_layers: int = Field(2, ge=0, le=6)
    cross_low_rank: int | None = Field(None, ge=1)
    layers: list[int] = Field(default_factory=lambda: [64, 32])
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(2048, ge=32)
    learning_rate: float = Field(0.003, gt=0)
    max_cases: int = Field(4000, ge=10, description="Ranker cases used for training (validation and test "
                                                    "playlists after the split time)")
    seed: int = 5


class TrainingSettings(Section):
    """`segue train`: the two towers, the retrieval loss and the training loop."""

    inputs: str = Field("features", pattern="^(features|ids)$",
                        description="features: every feature of the services; ids: track ids only "
                                    "(the id-only factorization baseline)")
    embedding_dim: int = Field(64, ge=8, le=512, description="Output embedding of both towers")
    id_embedding_dim: int = Field(32, ge=4, description="Track/artist/album id embeddings (shared)")
    text_embedding_dim: int = Field(16, ge=4)
    text_max_tokens: int = Field(20_000, ge=100, description="Vocabulary of each text feature")
    text_ngrams: int = Field(2, ge=1, le=3)
    text_length: int = Field(8, ge=1, description="Tokens (words and n-grams) kept per text value")
    oov_buckets: int = Field(8, ge=1, description="Hashed buckets for ids outside the vocabulary")
    min_id_count: int = Field(1, ge=1, description="Ids seen fewer times in training go to OOV buckets")
    adapt_rows: int = Field(2_000_000, ge=1000, description="Most training rows (examples, and query positions) "
                            "the text vocabularies and numeric statistics are learned from, spread evenly "
                            "over the split: all of them when fewer; id vocabularies always count every row")
    layers: list[int] = Field(default_factory=lambda: [128], description="Dense layers after the cross layer")
    cross: str = Field("stacked", pattern="^(stacked|parallel|none)$",
                       description="DCN cross layer before (stacked) or beside (parallel) the dense layers")
    cross_low_rank: int | None = Field(None, ge=1, description="Low-rank DCN-v2 projection")
    dropout: float = Field(0.3, ge=0, lt=1, description="Dropout on each tower's concatenated inputs")
    temperature: float = Field(0.1, gt=0, description="Scores are cosine / temperature")
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    mixed_negatives: int = Field(0, ge=0, description="Extra uniformly sampled catalog tracks per batch")
    hard_negatives: int | None = Field(None, ge=1, description="Keep only the k hardest negatives per query")
    batch_size: int = Field(1024, ge=8)
    steps_per_execution: int = Field(16, ge=1, description="Training steps per call into TensorFlow (less overhead)")
    epochs: int = Field(20, ge=1)
    optimizer: str = Field("adam", pattern="^(adam|adagrad)$",
                           description="adagrad updates only the embedding rows a batch touches")
    learning_rate: float = Field(0.005, gt=0)
    early_stopping_patience: int = Field(3, ge=1, description="Epochs without a better validation Recall@100")
    validation_queries: int = Field(5_000, ge=100, description="Validation examples scored each epoch")
    collapse_warmup_steps: int = Field(50, ge=1, description="Steps before the collapse guard looks")
    collapse_loss_ratio: float = Field(0.98, gt=0, le=1,
                                       description="Stop if loss stays above this share of chance-level loss")
    collapse_cosine: float = Field(0.9, gt=0, le=1,
                                   description="Stop if candidate embeddings' mean pairwise cosine exceeds this")
    retrieval_index: str = Field("scann", pattern="^(scann|brute_force)$",
                                 description="Top-k layer of the exported query-in, tracks-out model")
    seed: int = 42


class IndexSettings(Section):
    """`segue index`: where track embeddings live in Milvus and how a rebuild is accepted."""

    profile: str = Field("cpu_hnsw", pattern="^(embedded|cpu_hnsw|cpu_ivf|gpu_cagra|gpu_ivf_pq)$",
                         description="cpu_*/gpu_*: a Milvus server (by default the local one `segue milvus "
                                     "start` runs); embedded: Milvus Lite in <index_dir>/milvus.db, which one "
                                     "process at a time can open")
    uri: str = Field("http://127.0.0.1:19530", description="Milvus server URI of the server profiles; on this "
                     "machine's loopback, `segue milvus start` runs it (embedded ignores it)")
    token: SecretStr = Field(SecretStr(""), description="Milvus credentials (user:password or an API key); "
                                                       "never logged")
    alias: str = Field("tracks", pattern="^[A-Za-z_][A-Za-z0-9_]*$",
                       description="The alias serving searches; a rebuild swaps it")
    keep_previous: int = Field(1, ge=1, description="Earlier collections kept for `segue index rollback`")
    build_params: dict[str, Any] = Field(default_factory=dict, description="Overrides of the profile's index build parameters")
    search_params: dict[str, Any] = Field(default_factory=dict, description="Overrides of the profile's search parameters")
    write_batch: int = Field(1000, ge=1, le=10_000, description="Rows per Milvus insert")
    embed_batch: int = Field(2048, ge=1, description="Tracks per candidate-tower call in the rebuild")
    validation_queries: int = Field(100, ge=10, description="Sampled tracks whose ANN top-100 is checked against exact search")
    min_recall: float = Field(0.95, gt=0, le=1, description="ANN Recall@100 below this fails a rebuild")
    max_mean_cosine: float = Field(0.9, gt=0, le=1, description="Mean pairwise cosine above this means collapsed embeddings")
    orphan_after_s: float = Field(6 * 3600, gt=0, description="A build still `building` this long after it started "
                                  "is orphaned (its rebuild died): the stream stops writing to it and the next "
                                  "rebuild drops it")
    min_rows_share: float = Field(0.9, ge=0, le=1, description="A build with fewer rows than this share of the live "
                                  "collection's is refused (`segue index rebuild --force` accepts it)")
    beam_runner: str = Field("DirectRunner", description="Beam runner of the rebuild pipeline (FlinkRunner, DataflowRunner, ...)")
    beam_options: list[str] = Field(default_factory=list, description="Extra Beam pipeline options, e.g. --flink_master=host:8081")


class KafkaSettings(Section):
    """The Kafka cluster: the local broker by default, any cluster by configuration."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = Field("PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$")
    sasl_mechanism: str | None = Field(None, pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512|OAUTHBEARER)$")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = Field(None, description="Never logged; set it by environment variable")
    sasl_jaas_file: Path | None = Field(
        None, description="A Java properties file on the Beam workers with the line `sasl.jaas.config=...`: "
                          "the Beam pipeline's KafkaIO reads its credentials there (Kafka's FileConfigProvider), "
                          "so the password never enters the job graph")
    ssl_cafile: Path | None = None


class StreamSettings(Section):
    """`segue stream`: the new-track and playlist-edit topics, their dead letters and the consumer daemon."""

    topic: str = Field("segue.tracks.new", description="Track events, keyed by track URI")
    playlist_topic: str = Field("segue.playlists.edits", description="Playlist edits, keyed by pid")
    dlq_topic: str = Field("segue.tracks.dlq", description="Dead letters of both topics")
    partitions: int = Field(4, ge=1, description="Partitions of the topics `segue stream` creates; "
                                                 "the most consumers of one group that can share the work")
    replication_factor: int = Field(1, ge=1, description="Copies of each partition of the topics `segue stream` "
                                                         "creates (3 on a production cluster; 1 on the local broker)")
    min_insync_replicas: int | None = Field(None, ge=1, description="Copies a write must reach before it counts "
                                            "(acks=all); default: the broker's own setting")
    group_id: str = "segue-track-indexer"
    transactional_id: str | None = Field(None, max_length=200, description="Kafka transactional id of a daemon's "
                                         "dead letters and offsets; give each daemon a stable one (e.g. its pod "
                                         "name) so a restart aborts at once what a crash left open. Default: group, "
                                         "host and process id")
    transaction_timeout_s: float = Field(15.0, gt=0, le=900, description="A transaction a crashed daemon left "
                                         "open is aborted after this; until then readers of the dead-letter "
                                         "topic (read_committed) wait at it")
    max_batch: int = Field(2000, ge=1, le=50_000, description="Most events per micro-batch: a batch has fixed "
                           "costs (a Strong read per collection, a Kafka transaction), so under load larger "
                           "batches keep up; when events are few, a batch is what one poll brings")
    poll_timeout_ms: int = Field(200, ge=1, description="Longest wait for a micro-batch to fill")
    write_timeout_s: float = Field(10.0, gt=0, description="Longest wait of one Milvus call and of a Redis reply "
                                   "in a write; past it the write failed and is retried with back-off")
    retry_initial_s: float = Field(0.5, gt=0, description="First back-off after a failed write")
    retry_max_s: float = Field(15.0, gt=0, description="Longest back-off")
    isolate_after_failures: int = Field(3, ge=1, description="Failed writes of one batch, with the stores "
                                        "answering, before it is split to find the events that fail on their own "
                                        "(those go to the dead-letter topic, the rest is written)")
    max_event_ahead_s: float = Field(3600.0, gt=0, description="Events timed further ahead of the consumer's "
                                     "clock are dead letters (a far-future time would win every later update)")
    session_timeout_s: float = Field(45.0, ge=6, le=1800, description="How long the group waits for a silent "
                                     "daemon (killed, or its host gone) before its partitions go to the others: "
                                     "lower fails over sooner, but a daemon stalled longer than this is taken "
                                     "for dead. Kafka's default")
    rejoin_after_s: float = Field(20.0, ge=0, description="A member left without partitions this long leaves "
                                  "and rejoins its group (kafka-python 3.0 can lose an assignment in a quick "
                                  "second rebalance); 0 turns it off. Run at most one daemon per partition.")
    health_host: str = Field("127.0.0.1", description="Interface of /healthz and /metrics (0.0.0.0: every "
                                                     "interface, e.g. inside a container)")
    health_port: int | None = Field(9108, ge=0, le=65535,
                                    description="/healthz and /metrics; 0 picks a free port, null turns it off")
    freeze_heap: bool = Field(True, description="Once `segue stream run` has started, freeze what its start-up "
                              "loaded (TensorFlow, Feast, the towers) out of Python's full garbage collections, "
                              "which then walk only what the daemon made since (without: pauses of 0.3-0.7 s "
                              "measured). The towers loaded at start-up stay in memory after a model swap")
    beam_runner: str = Field("FlinkRunner", description="Runner of `segue stream beam` (FlinkRunner, DataflowRunner, ...)")
    beam_options: list[str] = Field(default_factory=list, description="Extra Beam pipeline options")

    @property
    def topics(self) -> list[str]:
        """The topics the daemon reads."""
        return [self.topic, self.playlist_topic]

    @model_validator(mode="after")
    def _replicas(self) -> "StreamSettings":
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"min_insync_replicas ({self.min_insync_replicas}) is more than replication_factor "
                             f"({self.replication_factor}): no write could ever succeed")
        return self


class ServeSettings(Section):
    """`segue serve`: the recommendation API, its limits and its dependencies' time limits."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes; the embedded index (Milvus Lite, "
                                              "one process per file) allows 1")
    threads: int = Field(16, ge=1, description="Threads per worker running lookups, towers and searches")
    max_k: int = Field(500, ge=1, le=1000, description="Largest k a request may ask for")
    max_track_uris: int = Field(500, ge=1, le=10_000, description="Most seed tracks in one request")
    max_excluded_artists: int = Field(100, ge=0, le=10_000)
    max_body_bytes: int = Field(65_536, ge=1024, description="Larger request bodies get 413")
    overfetch: int = Field(4, ge=1, le=50, description="Candidates searched per result asked for when "
                                                        "diversity drops some")
    max_candidates: int = Field(1024, ge=1, le=16_384, description="Most hits one search asks Milvus for "
                                                                   "(GPU indexes cap it at 1024)")
    feature_timeout_s: float = Field(1.0, gt=0, description="Longest wait for the online feature store")
    search_timeout_s: float = Field(2.0, gt=0, description="Longest wait for Milvus")
    redis_socket_timeout_s: float = Field(1.0, gt=0, description="Redis socket and connect timeouts of the "
                                          "API's feature reads, unless features.redis_connection_string sets them")
    max_in_flight: int = Field(64, ge=1, description="Requests a worker answers at once; more get 503 with "
                                                    "Retry-After at once instead of queueing behind a slow store")
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 503")
    refresh_s: float = Field(2.0, gt=0, description="How often the alias is checked for a swapped collection")
    admin_api_key: SecretStr | None = Field(None, description="X-API-Key of the admin endpoints; unset: they "
                                                              "are off. Never logged; set it by environment")


class LogSettings(Section):
    format: str = Field("text", pattern="^(text|json)$")
    level: str = "INFO"


class SegueSettings(BaseSettings):
    """All of Segue's configuration in one typed place."""

    model_config = SettingsConfigDict(
        env_prefix="SEGUE_", env_nested_delimiter="__", extra="forbid"
    )

    # The file these settings were read from: worker processes (Beam) read their secrets from it too.
    _source_file: Path | None = PrivateAttr(default=None)

    paths: PathSettings = Field(default_factory=PathSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    generate: GenerateSettings = Field(default_factory=GenerateSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    examples: ExampleSettings = Field(default_factory=ExampleSettings)
    candidates: CandidateSettings = Field(default_factory=CandidateSettings)
    ranker: RankerSettings = Field(default_factory=RankerSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
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


def config_path(config_file: Path | None = None) -> Path | None:
    """The settings file: `config_file` if given, else `$SEGUE_CONFIG`, else ./segue.yaml if present."""
    if config_file is not None:
        if not Path(config_file).is_file():
            raise FileNotFoundError(f"the settings file {config_file} is not a file")
        return Path(config_file)
    explicit = os.environ.get("SEGUE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"SEGUE_CONFIG points to {path}, which is not a file")
        return path
    default = Path("segue.yaml")
    return default if default.is_file() else None


def settings_document(settings: SegueSettings, secrets: bool = True) -> dict[str, Any]:
    """The settings as plain data, never for logs. With `secrets`, revealed (`model_dump` masks
    them): for a child process's config file. Without, left out whether set or not, so that
    whoever rebuilds the settings from the document takes them from its own environment."""
    doc = settings.model_dump(mode="json")
    for section, field in SegueSettings.model_fields.items():
        for name, key_field in field.annotation.model_fields.items():
            if "SecretStr" not in str(key_field.annotation):
                continue
            value = getattr(getattr(settings, section), name)
            if not secrets:
                doc[section].pop(name)
            elif value is not None:
                doc[section][name] = value.get_secret_value()
    return doc


def setting_sources(settings: SegueSettings, environ: dict[str, str] | None = None,
                    config_file: Path | None = None) -> dict[str, str]:
    """`section.key` -> where its value came from: `environment`, `file` (and which) or `default`."""
    environ = os.environ if environ is None else environ
    path = config_path(config_file)
    document = (yaml.safe_load(path.read_text()) or {}) if path is not None else {}
    out = {}
    for section in SegueSettings.model_fields:
        for key in type(getattr(settings, section)).model_fields:
            if f"SEGUE_{section}__{key}".upper() in {k.upper() for k in environ}:
                out[f"{section}.{key}"] = "environment"
            elif key in (document.get(section) or {}):
                out[f"{section}.{key}"] = f"file {path}"
            else:
                out[f"{section}.{key}"] = "default"
    return out


def load_settings(config_file: Path | None = None, **overrides: Any) -> SegueSettings:
    """Reads the settings; keyword arguments win over the environment, which wins over the file
    (`config_file`, else `$SEGUE_CONFIG` or ./segue.yaml)."""
    if config_file is None:
        settings = SegueSettings(**overrides)
        path = config_path()
        settings._source_file = path.absolute() if path is not None else None  # workers may run elsewhere
        return settings
    path = config_path(config_file)

    class FromFile(SegueSettings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, **_):
            return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=path)

    # Back to the plain class, whose instances pickle to worker processes (a local class's do not);
    # the sections are validated already, and constructing reads no source again.
    read = FromFile(**overrides)
    settings = SegueSettings.model_construct(**{name: getattr(read, name) for name in SegueSettings.model_fields})
    settings._source_file = path.absolute()
    return settings


def worker_settings(document: dict[str, Any], source_file: str | None) -> SegueSettings:
    """A worker's settings: `document` (the job's, without secrets) over the worker's own environment
    and the job's settings file where the worker can read it (a local run), else its own."""
    readable = Path(source_file) if source_file and Path(source_file).is_file() else None
    return load_settings(readable, **document)


def source_file(settings: SegueSettings) -> str | None:
    """The settings file `settings` were read from, as a job graph may carry it (a path, no secret)."""
    return str(settings._source_file) if settings._source_file is not None else None
