"""The rebuild's Beam pipeline: catalogue snapshot -> candidate tower -> Milvus (+ an embeddings copy).

It reads as the job does: ReadFromParquet | EmbedTracks | ToCollectionRows | WriteToMilvus, with the
embeddings also written to Parquet for validation. Nothing in it is runner-specific: the same
pipeline runs on the DirectRunner, Flink or Dataflow given `index.beam_runner` and options, with
the snapshot and embeddings on a filesystem the workers share (GCS, S3, HDFS).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from segue.indexing.track_collection import EVENT_TIME, KEY, VECTOR, track_row, upsert_columns
from segue.settings import IndexSettings

_LOGGER = logging.getLogger(__name__)
NAMESPACE = "segue.index"
REBUILD = "rebuild"


class CandidateTowerHandler(ModelHandler[dict, PredictionResult, Any]):
    """RunInference handler for the exported candidate tower: feature rows in, embeddings out."""

    def __init__(self, tower_path: str, batch_size: int):
        super().__init__(min_batch_size=max(1, batch_size // 4), max_batch_size=batch_size)
        self._tower_path = tower_path

    def load_model(self):
        from segue.training.export import load_tower

        return load_tower(Path(self._tower_path))

    def run_inference(self, batch: Sequence[dict], model, inference_args=None) -> Iterable[PredictionResult]:
        features = {name: [row.get(name) for row in batch] for name in model.feature_names}
        return [PredictionResult(row, e) for row, e in zip(batch, model.embed(features))]


class EmbedTracks(beam.PTransform):
    """Feature rows (one dict per track) -> PredictionResult(row, embedding), in batches."""

    def __init__(self, tower_path: str, batch_size: int):
        super().__init__()
        self._handler = CandidateTowerHandler(tower_path, batch_size)

    def expand(self, rows):
        return rows | RunInference(self._handler)


class _ToCollectionRow(beam.DoFn):
    def __init__(self, event_time_us: int, indexed_at_us: int):
        self._event_time_us = event_time_us
        self._indexed_at_us = indexed_at_us

    def process(self, result: PredictionResult):
        row = result.example
        # The features' own time when the snapshot has it: a streamed update newer than the features
        # (though older than the rebuild) must win over this row.
        event_time_us = row.get(EVENT_TIME) or self._event_time_us
        yield track_row(row[KEY], row, result.inference, event_time_us, REBUILD, self._indexed_at_us)


class _UpsertBatch(beam.DoFn):
    """Upserts (idempotent when a runner retries a bundle) one batch into a Milvus collection.

    The Milvus token is not in the job graph (runners show and store it): each worker reads
    `index.token` from its own environment (SEGUE_INDEX__TOKEN) or settings file."""

    def __init__(self, uri: str, collection: str, settings_file: str | None, log_every: int = 100_000):
        self._uri, self._collection, self._log_every = uri, collection, log_every
        self._settings_file = settings_file  # a path, no secret: the token is read on the worker
        self._written = Metrics.counter(NAMESPACE, "tracks_written")

    def setup(self):
        from pymilvus import MilvusClient

        from segue.settings import worker_settings

        token = worker_settings({}, self._settings_file).index.token
        self._client = MilvusClient(uri=self._uri, token=token.get_secret_value())
        self._description = self._client.describe_collection(self._collection)
        self._since_log = 0

    def process(self, rows: list[dict]):
        upsert_columns(self._client, self._collection, rows, description=self._description)
        self._written.inc(len(rows))
        self._since_log += len(rows)
        if self._since_log >= self._log_every:
            _LOGGER.info("rebuild progress", extra={"collection": self._collection, "rows": self._since_log})
            self._since_log = 0
        yield len(rows)


class WriteToMilvus(beam.PTransform):
    """Collection rows -> upserts of `batch_size` rows into `collection`."""

    def __init__(self, uri: str, collection: str, batch_size: int, settings_file: str | None = None):
        super().__init__()
        self._uri, self._collection, self._batch_size = uri, collection, batch_size
        self._settings_file = settings_file

    def expand(self, rows):
        return (rows
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
                | "Upsert" >> beam.ParDo(_UpsertBatch(self._uri, self._collection, self._settings_file)))


EMBEDDINGS_SCHEMA = pa.schema([(KEY, pa.string()), (VECTOR, pa.list_(pa.float32()))])


@dataclass(frozen=True)
class EmbeddingJob:
    """One rebuild's pipeline: which snapshot, through which tower, into which collection."""

    snapshot: Path  # the catalogue snapshot (Parquet)
    tower_path: Path  # the candidate tower's SavedModel
    milvus_uri: str
    collection: str
    embeddings_prefix: Path  # where the embeddings copy goes (validation reads it)
    event_time_us: int  # the snapshot's time: the rows' event time, newest wins
    indexed_at_us: int
    settings_file: str | None = None  # where workers read secrets (the Milvus token) when they can


def run_embedding_pipeline(job: EmbeddingJob, cfg: IndexSettings) -> int:
    """Runs the pipeline to completion on `index.beam_runner`; returns how many tracks it wrote."""
    pipeline_options = PipelineOptions(["--runner", cfg.beam_runner, *cfg.beam_options])
    if cfg.beam_runner == "DirectRunner":
        # Milvus Lite is a file owned by one process: keep the local run in this process.
        pipeline_options = PipelineOptions(["--runner", cfg.beam_runner, "--direct_num_workers", "1",
                                            "--direct_running_mode", "in_memory", *cfg.beam_options])
    with beam.Pipeline(options=pipeline_options) as p:
        rows = (p
                | "ReadSnapshot" >> beam.io.ReadFromParquet(str(job.snapshot))
                | "EmbedTracks" >> EmbedTracks(str(job.tower_path), cfg.embed_batch)
                | "ToCollectionRows" >> beam.ParDo(_ToCollectionRow(job.event_time_us, job.indexed_at_us)))
        _ = rows | "WriteToMilvus" >> WriteToMilvus(job.milvus_uri, job.collection, cfg.write_batch,
                                                    job.settings_file)
        _ = (rows
             | "KeepEmbedding" >> beam.Map(lambda r: {KEY: r[KEY], VECTOR: r[VECTOR]})
             | "WriteEmbeddings" >> beam.io.WriteToParquet(str(job.embeddings_prefix), EMBEDDINGS_SCHEMA,
                                                           file_name_suffix=".parquet"))
    result = p.result
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("tracks_written"))["counters"]
    return int(sum(c.committed or c.attempted or 0 for c in counters))


def read_embeddings(prefix: Path) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline's embeddings copy: (track URIs, [n, dim] float32)."""
    import pyarrow.parquet as pq

    files = sorted(Path(prefix).parent.glob(Path(prefix).name + "*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files]) if files else EMBEDDINGS_SCHEMA.empty_table()
    uris = table.column(KEY).to_numpy(zero_copy_only=False).astype(object)
    flat = table.column(VECTOR).combine_chunks()
    dim = len(flat[0]) if len(flat) else 0
    vectors = flat.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(uris), dim)
    return uris, vectors
