"""Training data: example splits and the tf.data pipeline."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf

from segue.training.feature_inputs import TowerInput, to_tensors
from segue.training.preprocessing import FeaturePreprocessor
from segue.vocabulary import TRACK_KEY


def candidate_ids(uris: np.ndarray | Sequence[str]) -> np.ndarray:
    """A stable int64 id per track URI (for accidental-hit removal; OOV tracks stay distinct)."""
    return tf.strings.to_hash_bucket_fast(np.asarray(uris, dtype=object), 2**62).numpy()


def split_files(examples_dir: Path, split: str) -> list[Path]:
    files = sorted((Path(examples_dir) / split).glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no examples in {Path(examples_dir) / split}; "
                                "build them first: segue batch examples")
    return files


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
    """One split: tower inputs, labels and their probabilities.

    Several labels share one query position, so `queries` holds each position's row once and
    `query_index` maps every example to its row there. The rows stay in Arrow and become tower
    inputs a chunk at a time (`query_chunks`): a million whole playlists as Python strings would
    take tens of GB, their encoded ids a few.
    """

    queries: pa.Table
    query_inputs: Sequence[TowerInput]
    query_index: np.ndarray
    candidate: dict[str, np.ndarray]
    track_uri: np.ndarray
    sampling_probability: np.ndarray
    time_range: dict[str, str]  # the first and last example's time

    def __len__(self) -> int:
        return len(self.track_uri)

    @classmethod
    def read(cls, examples_dir: Path, split: str, query_inputs: Sequence[TowerInput],
             candidate_inputs: Sequence[TowerInput]) -> "Examples":
        """A split as `segue batch examples` wrote it. Every label's row repeats its query's lists, so
        those columns are read file by file and only each position's first row is kept."""
        files = split_files(examples_dir, split)
        query_columns = [i.column for i in query_inputs]
        names = pq.read_schema(files[0]).names
        table = pa.concat_tables(pq.read_table(f, columns=[n for n in names if n not in query_columns]) for f in files)
        query_index, first = _positions(table)
        parts, start = [], 0
        for f in files:
            rows = pq.read_metadata(f).num_rows
            local = first[(first >= start) & (first < start + rows)] - start
            if len(local):
                parts.append(_with_large_offsets(pq.read_table(f, columns=query_columns)).take(pa.array(local)))
            start += rows
        columns = {name: table.column(name) for name in table.column_names}
        probability = table.column("candidate_sampling_probability").to_numpy(zero_copy_only=False)
        return cls(queries=pa.concat_tables(parts), query_inputs=list(query_inputs),
                   query_index=query_index.astype(np.int64),
                   candidate=to_tensors(columns, candidate_inputs, by_column=True),
                   track_uri=table.column(TRACK_KEY).to_numpy(zero_copy_only=False).astype(object),
                   # A validation label unseen in training has no probability; it is never a
                   # training negative, so any positive value will do.
                   sampling_probability=np.nan_to_num(probability.astype(np.float32), nan=1e-9),
                   time_range={"first_example": pc.min(table.column("added_at")).as_py().isoformat(),
                               "last_example": pc.max(table.column("added_at")).as_py().isoformat()})

    def labels_only(self) -> "Examples":
        """This split without its raw tower inputs (once they are encoded): labels, probabilities, query index."""
        return replace(self, queries=self.queries.schema.empty_table(), candidate={})

    def query_column(self, spec: TowerInput) -> pa.ChunkedArray:
        """One query input's raw column, one row per query position."""
        return self.queries.column(spec.column)

    def query_tensors(self, inputs: Sequence[TowerInput]) -> dict[str, np.ndarray]:
        """Some query inputs (e.g. the text and numbers a preprocessor adapts to) as whole arrays."""
        return to_tensors({i.column: self.query_column(i) for i in inputs}, inputs, by_column=True)

    def query_chunks(self, rows: np.ndarray | None = None, size: int = 8192) -> Iterator[dict[str, np.ndarray]]:
        """The query rows (all, or `rows` in order) as tower inputs, `size` rows at a time."""
        table = self.queries if rows is None else self.queries.take(pa.array(np.asarray(rows, np.int64)))
        for start in range(0, table.num_rows, size):
            part = table.slice(start, size)
            yield to_tensors({n: part.column(n) for n in part.column_names}, self.query_inputs, by_column=True)


def _positions(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Each example's query position (numbered in order of first appearance) and, ascending, the
    row where each position first appears."""
    keys = pd.MultiIndex.from_arrays([table.column("pid").to_numpy(), table.column("pos").to_numpy()])
    query_index, _ = pd.factorize(keys)
    _, first = np.unique(query_index, return_index=True)
    return query_index, first


def encode(preprocessor: FeaturePreprocessor, raw: Mapping[str, np.ndarray],
           batch_size: int = 8192) -> dict[str, np.ndarray]:
    """Runs a preprocessor over raw arrays in batches; the encoded arrays stay in memory."""
    names = [i.name for i in preprocessor.inputs]
    n = len(raw[names[0]])
    return encode_chunks(preprocessor, ({k: raw[k][s:s + batch_size] for k in names} for s in range(0, n, batch_size)))


@dataclass(frozen=True)
class RaggedIds:
    """Rows of ids without their padding: every row's ids in row order, and where each row starts.

    A whole playlist is padded to 250 ids and most rows hold a few dozen, so stored padded the
    sequences of a million playlists' positions would fill the machine."""

    values: np.ndarray
    splits: np.ndarray  # int64, one more than the rows

    @classmethod
    def from_padded(cls, padded: np.ndarray) -> RaggedIds:
        """Rows padded with 0 (the padding index) at the end."""
        real = padded != 0
        return cls(padded[real], np.concatenate([[0], np.cumsum(real.sum(axis=1))]).astype(np.int64))

    @classmethod
    def concatenate(cls, parts: Sequence[RaggedIds]) -> RaggedIds:
        offsets = np.cumsum([0, *(len(p.values) for p in parts[:-1])])
        return cls(np.concatenate([p.values for p in parts]),
                   np.concatenate([[0], *(p.splits[1:] + o for p, o in zip(parts, offsets))]).astype(np.int64))

    def __len__(self) -> int:
        return len(self.splits) - 1


def encode_chunks(preprocessor: FeaturePreprocessor, chunks: Iterable[Mapping[str, np.ndarray]],
                  ragged: Collection[str] = ()) -> dict[str, np.ndarray | RaggedIds]:
    """Runs a preprocessor over chunks of raw inputs; only the encoded arrays are kept.

    String lists are padded to each chunk's longest; the chunks' encodings are padded with the
    padding index (0) to the longest of all before they are joined, except the `ragged` ones,
    which are kept without their padding from the first chunk on.
    """
    names = [i.name for i in preprocessor.inputs]
    call = tf.function(preprocessor.__call__, reduce_retracing=True)
    parts: dict[str, list] = {}
    for chunk in chunks:
        for k, v in call({k: tf.constant(chunk[k]) for k in names}).items():
            encoded = _narrow(v.numpy())
            parts.setdefault(k, []).append(RaggedIds.from_padded(encoded) if k in ragged else encoded)
    return {k: RaggedIds.concatenate(v) if k in ragged else _concatenate_padded(v) for k, v in parts.items()}


def _narrow(encoded: np.ndarray) -> np.ndarray:
    """Vocabulary indices as int32: half the memory of the int64 that lookups return."""
    if encoded.dtype == np.int64 and (encoded.size == 0 or encoded.max() < 2**31):
        return encoded.astype(np.int32)
    return encoded


def _concatenate_padded(parts: list[np.ndarray]) -> np.ndarray:
    if parts[0].ndim < 2 or len({p.shape[1] for p in parts}) == 1:
        return np.concatenate(parts)
    width = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, [(0, 0), (0, width - p.shape[1])]) for p in parts])


def training_dataset(query: Mapping[str, np.ndarray | RaggedIds], candidate: Mapping[str, np.ndarray],
                     ids: np.ndarray, probability: np.ndarray, batch_size: int, seed: int,
                     query_index: np.ndarray | None = None) -> tf.data.Dataset:
    """Full batches of encoded examples in a new random order each epoch, prefetched.

    The arrays live in non-trainable variables and each batch is one gather of shuffled indices:
    per-element shuffling and batching cost more than a training step on two cores. `query_index`
    maps each example to its row of `query` (default: one query row per example). `RaggedIds`
    query inputs are padded per batch, to the batch's longest row.
    """
    n = len(ids)
    if n < batch_size:
        raise ValueError(f"{n} training examples do not fill one batch of {batch_size}; "
                         "lower training.batch_size or build more examples")
    query_index = np.arange(n, dtype=np.int64) if query_index is None else np.asarray(query_index, np.int64)
    per_example = {"candidate": dict(candidate), "candidate_id": ids, "candidate_sampling_probability": probability,
                   "query_index": query_index}
    stored = tf.nest.map_structure(lambda a: tf.Variable(a, trainable=False), per_example)
    stored_query = {k: _RaggedRows(v) if isinstance(v, RaggedIds) else tf.Variable(v, trainable=False)
                    for k, v in query.items()}
    batches = n // batch_size
    generator = tf.random.Generator.from_seed(seed)

    def epoch_order(_):
        order = tf.argsort(generator.uniform([n]))[:batches * batch_size]
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [batches, batch_size]))

    def batch(idx):
        out = tf.nest.map_structure(lambda v: tf.gather(v, idx), stored)
        rows = out.pop("query_index")
        return {**out, "query": {k: v.gather(rows) if isinstance(v, _RaggedRows) else tf.gather(v, rows)
                                 for k, v in stored_query.items()}}

    return (tf.data.Dataset.from_tensors(0).flat_map(epoch_order)
            .map(batch, num_parallel_calls=tf.data.AUTOTUNE)
            .apply(tf.data.experimental.assert_cardinality(batches))  # flat_map hides it from Keras
            .prefetch(tf.data.AUTOTUNE))


class _RaggedRows:
    """`RaggedIds` held by TensorFlow, gathered as padded rows."""

    def __init__(self, ids: RaggedIds):
        self.values = tf.Variable(ids.values, trainable=False)
        self.splits = tf.Variable(ids.splits, trainable=False)

    def gather(self, rows: tf.Tensor) -> tf.Tensor:
        """The rows, padded with 0 to the longest of them."""
        table = tf.RaggedTensor.from_row_splits(self.values, self.splits, validate=False)
        return tf.gather(table, rows).to_tensor()
