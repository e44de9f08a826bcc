"""Training data: example splits and the tf.data pipeline."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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
    """One split: its labels and their probabilities in memory, its tower inputs read from the
    Parquet parts when asked for, a part at a time.

    Several labels share one query position, so the query rows are each position's first row
    (`first_rows`, per part) and `query_index` maps every example to its query row, numbered in
    order of first appearance. Neither the raw query lists nor the candidates' raw features are
    held whole: at a million playlists they would take tens of GB; callers encode them part by
    part (`query_chunks`, `candidate_chunks`) and keep the encodings.
    """

    files: list[Path]
    query_inputs: Sequence[TowerInput]
    candidate_inputs: Sequence[TowerInput]
    query_index: np.ndarray
    first_rows: list[np.ndarray]  # per part: its rows where a query position first appears
    # Each label as a code into the split's distinct tracks: a Python string per example took
    # 85 bytes each, some 1.9 GB for the 22M examples of a million playlists.
    label_tracks: np.ndarray  # the distinct label URIs
    label_codes: np.ndarray  # int32, each example's row of `label_tracks`
    sampling_probability: np.ndarray
    time_range: dict[str, str]  # the first and last example's time

    def __len__(self) -> int:
        return len(self.label_codes)

    @property
    def track_uri(self) -> np.ndarray:
        """Every example's label URI (a new object array: for small splits or selected rows)."""
        return self.label_tracks[self.label_codes]

    @property
    def query_rows(self) -> int:
        return sum(len(f) for f in self.first_rows)

    @classmethod
    def read(cls, examples_dir: Path, split: str, query_inputs: Sequence[TowerInput],
             candidate_inputs: Sequence[TowerInput]) -> "Examples":
        """A split as `segue batch examples` wrote it: only the label columns are read now."""
        files = split_files(examples_dir, split)
        label_columns = ["pid", "pos", TRACK_KEY, "candidate_sampling_probability", "added_at"]
        table = pa.concat_tables(pq.read_table(f, columns=label_columns) for f in files)
        query_index, first = _positions(table)
        first_rows, start = [], 0
        for f in files:
            rows = pq.read_metadata(f).num_rows
            first_rows.append(first[(first >= start) & (first < start + rows)] - start)
            start += rows
        probability = table.column("candidate_sampling_probability").to_numpy(zero_copy_only=False)
        labels = table.column(TRACK_KEY).combine_chunks().dictionary_encode()
        return cls(files=files, query_inputs=list(query_inputs), candidate_inputs=list(candidate_inputs),
                   query_index=query_index.astype(np.int64), first_rows=first_rows,
                   label_tracks=labels.dictionary.to_numpy(zero_copy_only=False).astype(object),
                   label_codes=labels.indices.to_numpy().astype(np.int32),
                   # A validation label unseen in training has no probability; it is never a
                   # training negative, so any positive value will do.
                   sampling_probability=np.nan_to_num(probability.astype(np.float32), nan=1e-9),
                   time_range={"first_example": pc.min(table.column("added_at")).as_py().isoformat(),
                               "last_example": pc.max(table.column("added_at")).as_py().isoformat()})

    def query_parts(self, inputs: Sequence[TowerInput] | None = None) -> Iterator[pa.Table]:
        """Per part, the raw query columns (all query inputs, or `inputs`) of its query rows."""
        columns = [i.column for i in (self.query_inputs if inputs is None else inputs)]
        for f, local in zip(self.files, self.first_rows):
            if len(local):
                yield _with_large_offsets(pq.read_table(f, columns=columns)).take(pa.array(local))

    def candidate_parts(self, inputs: Sequence[TowerInput] | None = None) -> Iterator[pa.Table]:
        """Per part, the raw candidate columns (all candidate inputs, or `inputs`) of every example."""
        columns = list(dict.fromkeys(i.column for i in (self.candidate_inputs if inputs is None else inputs)))
        for f in self.files:
            yield pq.read_table(f, columns=columns)

    def query_column(self, spec: TowerInput) -> Iterator[pa.ChunkedArray]:
        """One query input's raw column, a part at a time (e.g. to count a vocabulary)."""
        return (t.column(spec.column) for t in self.query_parts([spec]))

    def candidate_column(self, spec: TowerInput) -> Iterator[pa.ChunkedArray]:
        """One candidate input's raw column, a part at a time."""
        return (t.column(spec.column) for t in self.candidate_parts([spec]))

    def query_tensors(self, inputs: Sequence[TowerInput], limit: int | None = None) -> dict[str, np.ndarray]:
        """Some query inputs (e.g. the text and numbers a preprocessor adapts to) as whole arrays:
        every query row, or at most `limit` of them spread evenly over the split."""
        return _tensors(self.query_parts(inputs), inputs, self.query_rows, limit) if inputs else {}

    def candidate_tensors(self, limit: int | None = None) -> dict[str, np.ndarray]:
        """The candidate inputs as whole arrays: every example's, or at most `limit` spread evenly."""
        return _tensors(self.candidate_parts(), self.candidate_inputs, len(self), limit)

    def candidate_chunks(self, size: int = 8192) -> Iterator[dict[str, np.ndarray]]:
        """Every example's candidate inputs, in order, `size` rows at a time."""
        for table in self.candidate_parts():
            yield from _chunks(table, self.candidate_inputs, size)

    def query_chunks(self, rows: np.ndarray | None = None, size: int = 8192) -> Iterator[dict[str, np.ndarray]]:
        """The query rows (all, or `rows` in order) as tower inputs, `size` rows at a time."""
        tables = self.query_parts() if rows is None else [self._query_rows(np.asarray(rows, np.int64))]
        for table in tables:
            yield from _chunks(table, self.query_inputs, size)

    def _query_rows(self, rows: np.ndarray) -> pa.Table:
        """The query columns of `rows` (query row numbers, any order, repeats allowed)."""
        starts = np.cumsum([0, *(len(f) for f in self.first_rows)])
        part_of = np.searchsorted(starts, rows, side="right") - 1
        columns = [i.column for i in self.query_inputs]
        tables, order = [], []
        for i in np.unique(part_of):
            wanted = np.flatnonzero(part_of == i)
            local = self.first_rows[i][rows[wanted] - starts[i]]
            tables.append(_with_large_offsets(pq.read_table(self.files[i], columns=columns)).take(pa.array(local)))
            order.append(wanted)
        if not tables:
            return _with_large_offsets(pq.read_table(self.files[0], columns=columns).slice(0, 0))
        position = np.empty(len(rows), np.int64)
        position[np.concatenate(order)] = np.arange(len(rows))
        return pa.concat_tables(tables).take(pa.array(position))


def _chunks(table: pa.Table, inputs: Sequence[TowerInput], size: int) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, table.num_rows, size):
        part = table.slice(start, size)
        yield to_tensors({n: part.column(n) for n in part.column_names}, inputs, by_column=True)


def _tensors(parts: Iterable[pa.Table], inputs: Sequence[TowerInput], total: int, limit: int | None
             ) -> dict[str, np.ndarray]:
    """The parts' rows as tower inputs: all of them, or every n-th row (n = ceil(total / limit))
    when there are more than `limit`, so a sample spans the whole split, not its first parts."""
    step = 1 if limit is None or total <= limit else -(-total // limit)
    kept, seen = [], 0
    for table in parts:
        if step > 1:
            rows = np.arange(table.num_rows)
            table = table.take(pa.array(rows[(seen + rows) % step == 0]))
            seen += len(rows)
        kept.append(table)
    table = pa.concat_tables(kept)
    return to_tensors({n: table.column(n) for n in table.column_names}, inputs, by_column=True)


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


def training_dataset(query: dict[str, np.ndarray | RaggedIds], candidate: dict[str, np.ndarray],
                     ids: np.ndarray, probability: np.ndarray, batch_size: int, seed: int,
                     query_index: np.ndarray | None = None) -> tf.data.Dataset:
    """Full batches of encoded examples in a new random order each epoch, prefetched.

    The arrays live in non-trainable variables and each batch is one gather of shuffled indices:
    per-element shuffling and batching cost more than a training step on two cores. `query_index`
    maps each example to its row of `query` (default: one query row per example). `RaggedIds`
    query inputs are padded per batch, to the batch's longest row.

    `query` and `candidate` are emptied: each array is dropped as soon as its variable holds a
    copy, so the encoded split is never in memory twice (1.3 GB at 100k playlists, ten times that at 1M).
    """
    n = len(ids)
    if n < batch_size:
        raise ValueError(f"{n} training examples do not fill one batch of {batch_size}; "
                         "lower training.batch_size or build more examples")
    query_index = np.arange(n, dtype=np.int64) if query_index is None else np.asarray(query_index, np.int64)

    def moved(arrays: dict) -> dict:
        out = {}
        while arrays:
            k, v = arrays.popitem()
            out[k] = _RaggedRows(v) if isinstance(v, RaggedIds) else tf.Variable(v, trainable=False)
            del v
        return out

    stored = {"candidate": moved(candidate),
              **tf.nest.map_structure(lambda a: tf.Variable(a, trainable=False),
                                      {"candidate_id": ids, "candidate_sampling_probability": probability,
                                       "query_index": query_index})}
    stored_query = moved(query)
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
