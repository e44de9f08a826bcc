"""Raw feature tensors -> the integers and normalized numbers a tower embeds.

Preprocessing is adapted once on training data and saved inside the exported towers, so serving
feeds Feast's values as they come and never re-implements a transformation.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from segue.training.feature_inputs import ID, ID_SEQUENCE, NUMERIC, TEXT, TowerInput

_LOGGER = logging.getLogger(__name__)
# A numeric feature is log-transformed when its 99th percentile is this many times its median.
HEAVY_TAIL_RATIO = 10.0
# Stands in for an empty vocabulary (a feature null in every training example, e.g. genres
# without metadata): lookups need one entry, and no real value standardizes to it.
PLACEHOLDER = "\x00none\x00"


def id_vocabulary(values: Iterable[np.ndarray | pa.Array | pa.ChunkedArray], min_count: int) -> list[str]:
    """Ids seen at least `min_count` times, most frequent first, ties in order of first sight ("" is
    padding, never an id). Arrow columns (lists too) are counted in Arrow, without Python strings."""
    counts: Counter = Counter()
    for arr in values:
        if isinstance(arr, np.ndarray):
            counts.update(v for v in arr.ravel().tolist() if v)
            continue
        while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
            arr = pc.list_flatten(arr)
        found = pc.value_counts(arr)
        counts.update({v: n for v, n in zip(found.field("values").to_pylist(), found.field("counts").to_pylist())
                       if v})
    return [v for v, n in counts.most_common() if n >= min_count]


def id_lookup(vocabulary: Sequence[str], oov_buckets: int, name: str) -> tf.keras.layers.StringLookup:
    """Ids -> indices; index 0 is padding (""), unknown ids hash into `oov_buckets` buckets."""
    return tf.keras.layers.StringLookup(vocabulary=list(vocabulary) or [PLACEHOLDER], mask_token="",
                                        num_oov_indices=oov_buckets, name=f"{name}_lookup")


class FeaturePreprocessor(tf.keras.layers.Layer):
    """A tower's raw inputs (see `feature_inputs`) -> a dict of encoded tensors.

    Ids become vocabulary indices (shared lookups, so a track is the same index in both towers),
    text becomes n-gram token indices, numbers become normalized float32 with nulls at the mean.
    """

    def __init__(self, inputs: Sequence[TowerInput], lookups: Mapping[str, tf.keras.layers.StringLookup],
                 text_max_tokens: int = 20_000, text_ngrams: int = 2, text_length: int = 16, **kwargs):
        super().__init__(**kwargs)
        self._inputs = list(inputs)
        self._lookups = dict(lookups)
        self._text = {
            i.name: tf.keras.layers.TextVectorization(
                max_tokens=text_max_tokens, ngrams=text_ngrams, output_mode="int",
                output_sequence_length=text_length, name=f"{i.name}_text")
            for i in self._inputs if i.encoding == TEXT}
        numeric = [i.name for i in self._inputs if i.encoding == NUMERIC]
        self._numeric_names = numeric
        self._mean = self.add_weight(name="numeric_mean", shape=(len(numeric),), dtype=tf.float64,
                                     initializer="zeros", trainable=False)
        self._std = self.add_weight(name="numeric_std", shape=(len(numeric),), dtype=tf.float64,
                                    initializer="ones", trainable=False)
        self._log = self.add_weight(name="numeric_log", shape=(len(numeric),), dtype=tf.float64,
                                    initializer="zeros", trainable=False)

    @property
    def inputs(self) -> list[TowerInput]:
        return self._inputs

    def text_vocabulary_size(self, name: str) -> int:
        return self._text[name].vocabulary_size()

    def numeric_transforms(self) -> dict[str, dict[str, float | bool]]:
        """Per numeric feature: whether it is log-transformed, and the normalization's mean/std."""
        return {n: {"log": bool(lg), "mean": float(m), "std": float(s)}
                for n, lg, m, s in zip(self._numeric_names, self._log.numpy(), self._mean.numpy(),
                                       self._std.numpy())}

    def adapt(self, raw: Mapping[str, np.ndarray]) -> None:
        """Learns text vocabularies and numeric statistics from training data."""
        for name, layer in self._text.items():
            texts = self._joined(raw[name])
            if any(t.strip() for t in texts):
                layer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(4096))
            else:
                _LOGGER.warning("text feature is empty in every training example; it will carry no "
                                "signal", extra={"feature": name})
                layer.set_vocabulary([PLACEHOLDER])
        means, stds, logs = [], [], []
        for name in self._numeric_names:
            x = raw[name][~np.isnan(raw[name])]
            heavy = x.size > 0 and x.min() >= 0 and np.percentile(x, 99) > HEAVY_TAIL_RATIO * max(np.median(x), 1.0)
            x = np.log1p(x) if heavy else x
            means.append(x.mean() if x.size else 0.0)
            stds.append(x.std() if x.size and x.std() > 0 else 1.0)
            logs.append(float(heavy))
        if self._numeric_names:
            self._mean.assign(means)
            self._std.assign(stds)
            self._log.assign(logs)

    @staticmethod
    def _joined(values):
        """String lists become one text: the values separated by spaces."""
        if isinstance(values, np.ndarray) and values.ndim == 2:
            return np.array([" ".join(v for v in row if v) for row in values], dtype=object)
        if isinstance(values, tf.Tensor) and values.shape.rank == 2:
            return tf.strings.reduce_join(values, axis=-1, separator=" ")
        return values

    def call(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = {}
        for spec in self._inputs:
            x = features[spec.name]
            if spec.encoding in (ID, ID_SEQUENCE):
                out[spec.name] = self._lookups[spec.vocabulary](x)
            elif spec.encoding == TEXT:
                out[spec.name] = self._text[spec.name](self._joined(x))
        if self._numeric_names:
            x = tf.stack([tf.cast(features[n], tf.float64) for n in self._numeric_names], axis=1)
            missing = tf.math.is_nan(x)
            x = tf.where(missing, tf.zeros_like(x), x)
            logged = tf.where(self._log > 0, tf.math.log1p(tf.maximum(x, 0.0)), x)
            z = (logged - self._mean) / self._std
            out["numeric"] = tf.cast(tf.where(missing, tf.zeros_like(z), z), tf.float32)
        return out
