"""Training data: example splits and the tf.data pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from segue.training.feature_inputs import TowerInput, to_tensors
from segue.training.preprocessing import FeaturePreprocessor
from segue.vocabulary import TRACK_KEY


def candidate_ids(uris: np.ndarray | Sequence[str]) -> np.ndarray:
    """A stable int64 id per track URI (for accidental-hit removal; OOV tracks stay distinct)."""
    return tf.strings.to_hash_bucket_fast(np.asarray(uris, dtype=object), 2**62).numpy()


def read_split(examples_dir: Path, split: str) -> pa.Table:
    files = sorted((Path(examples_dir) / split).glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no examples in {Path(examples_dir) / split}; "
                                "build them first: segue batch examples")
    return pa.concat_tables(pq.read_table(f) for f in files)


def _with_large_offsets(table: pa.Table) -> pa.Table:
    """String and list columns with 64-bit offsets: `take` joins a column's chunks into one array,
    whose 32-bit offsets overflow past 2 GiB of strings (a million examples of whole playlists)."""
    def large(t: pa.DataType) -> pa.DataType:
        if pa.types.is_string(t):
            return pa.large_string()
        if pa.types.is_list(t):
            return pa.large_list(large(t.value_type))
        return t

    return table.cast(pa.schema([f.with_type(large(f.type)) for f in table.schema]))


@dataclass
class Examples:
    """One split: raw tower inputs (as the signatures take them), labels and their probabilities.

    Several labels share one query position, so `query` holds each position once and
    `query_index` maps every example to its row there: the whole-playlist lists are held once.
    """

    query: dict[str, np.ndarray]
    query_index: np.ndarray
    candidate: dict[str, np.ndarray]
    track_uri: np.ndarray
    sampling_probability: np.ndarray

    def __len__(self) -> int:
        return len(self.track_uri)

    @classmethod
    def from_table(cls, table: pa.Table, query_inputs: Sequence[TowerInput],
                   candidate_inputs: Sequence[TowerInput]) -> "Examples":
        columns = {name: table.column(name) for name in table.column_names}
        keys = pd.MultiIndex.from_arrays([table.column("pid").to_numpy(), table.column("pos").to_numpy()])
        query_index, _ = pd.factorize(keys)
        _, first = np.unique(query_index, return_index=True)  # the first example of each position
        queries = _with_large_offsets(table).take(pa.array(first))
        probability = table.column("candidate_sampling_probability").to_numpy(zero_copy_only=False)
        return cls(query=to_tensors({n: queries.column(n) for n in queries.column_names}, query_inputs, by_column=True),
                   query_index=query_index.astype(np.int64),
                   candidate=to_tensors(columns, candidate_inputs, by_column=True),
                   track_uri=table.column(TRACK_KEY).to_numpy(zero_copy_only=False).astype(object),
                   # A validation label unseen in training has no probability; it is never a
                   # training negative, so any positive value will do.
                   sampling_probability=np.nan_to_num(probability.astype(np.float32), nan=1e-9))


def encode(preprocessor: FeaturePreprocessor, raw: Mapping[str, np.ndarray],
           batch_size: int = 8192) -> dict[str, np.ndarray]:
    """Runs a preprocessor over raw arrays in batches; the encoded arrays stay in memory."""
    names = [i.name for i in preprocessor.inputs]
    n = len(raw[names[0]])
    call = tf.function(preprocessor.__call__)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        batch = {k: tf.constant(raw[k][start:start + batch_size]) for k in names}
        for k, v in call(batch).items():
            parts.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def training_dataset(query: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                     ids: np.ndarray, probability: np.ndarray, batch_size: int, seed: int,
                     query_index: np.ndarray | None = None) -> tf.data.Dataset:
    """Full batches of encoded examples in a new random order each epoch, prefetched.

    The arrays live in non-trainable variables and each batch is one gather of shuffled indices:
    per-element shuffling and batching cost more than a training step on two cores. `query_index`
    maps each example to its row of `query` (default: one query row per example).
    """
    n = len(ids)
    if n < batch_size:
        raise ValueError(f"{n} training examples do not fill one batch of {batch_size}; "
                         "lower training.batch_size or build more examples")
    query_index = np.arange(n, dtype=np.int64) if query_index is None else np.asarray(query_index, np.int64)
    per_example = {"candidate": dict(candidate), "candidate_id": ids, "candidate_sampling_probability": probability,
                   "query_index": query_index}
    stored = tf.nest.map_structure(lambda a: tf.Variable(a, trainable=False), per_example)
    stored_query = tf.nest.map_structure(lambda a: tf.Variable(a, trainable=False), dict(query))
    batches = n // batch_size
    generator = tf.random.Generator.from_seed(seed)

    def epoch_order(_):
        order = tf.argsort(generator.uniform([n]))[:batches * batch_size]
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [batches, batch_size]))

    def batch(idx):
        out = tf.nest.map_structure(lambda v: tf.gather(v, idx), stored)
        rows = out.pop("query_index")
        return {**out, "query": tf.nest.map_structure(lambda v: tf.gather(v, rows), stored_query)}

    return (tf.data.Dataset.from_tensors(0).flat_map(epoch_order)
            .map(batch, num_parallel_calls=tf.data.AUTOTUNE)
            .apply(tf.data.experimental.assert_cardinality(batches))  # flat_map hides it from Keras
            .prefetch(tf.data.AUTOTUNE))
