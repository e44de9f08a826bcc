"""The two towers: encoded features -> an L2-normalized embedding.

Both are the same `FeatureTower` over different FeatureServices. Id embeddings (track, artist,
album) are built once and handed to both towers, so a playlist's recent tracks and a candidate
track live in one space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from segue.training.feature_inputs import ID, ID_SEQUENCE, TEXT, TowerInput


@tf.keras.utils.register_keras_serializable(package="segue")
class MaskedMeanPooling(tf.keras.layers.Layer):
    """Mean of a sequence's embeddings over its non-padding positions (index 0 is padding).

    Input: `embeddings` [batch, length, dim] and `ids` [batch, length]. Output: [batch, dim];
    an all-padding row gives zeros.
    """

    def call(self, embeddings: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        mask = tf.cast(tf.not_equal(ids, 0), embeddings.dtype)[..., tf.newaxis]
        total = tf.reduce_sum(embeddings * mask, axis=1)
        return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


@tf.keras.utils.register_keras_serializable(package="segue")
class IdSequencePooling(tf.keras.layers.Layer):
    """An id sequence -> [plain mean, recency-weighted mean] of its ids' embeddings: [batch, 2 * dim].

    Sequences run oldest to newest; index 0 is padding. Only real positions are embedded (a
    playlist's list is padded to the longest in the batch, often 8x its mean length). The recency
    weights decay as exp(-rate * age), age counted back from the newest position, and `rate` is
    learned (softplus of a weight starting at `initial_rate`), so training chooses how much the
    newest tracks count against the whole playlist. An empty sequence gives zeros.
    """

    def __init__(self, embedding: tf.keras.layers.Embedding, initial_rate: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding
        self.initial_rate = initial_rate

    def build(self, input_shape):
        raw = float(np.log(np.expm1(self.initial_rate)))  # softplus(raw) == initial_rate
        self._raw_rate = self.add_weight(name="raw_rate", shape=(), initializer=tf.constant_initializer(raw))
        super().build(input_shape)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        real = tf.not_equal(ids, 0)
        where = tf.where(real)  # [n, 2]: (row, position) of every real id
        rows, position = where[:, 0], tf.cast(where[:, 1], tf.float32)
        vectors = self.embedding(tf.gather_nd(ids, where))
        batch = tf.shape(ids, out_type=tf.int64)[0]
        length = tf.reduce_sum(tf.cast(real, tf.float32), axis=1)
        # Positions are real ids' columns; with padding only at the end, the newest is length - 1.
        newest = tf.math.unsorted_segment_max(position, rows, batch)
        age = tf.gather(newest, rows) - position
        weights = tf.exp(-tf.nn.softplus(self._raw_rate) * age)
        total = tf.math.unsorted_segment_sum(vectors, rows, batch)
        weighted = tf.math.unsorted_segment_sum(vectors * weights[:, tf.newaxis], rows, batch)
        weight_sum = tf.math.unsorted_segment_sum(weights, rows, batch)
        return tf.concat([total / tf.maximum(length, 1.0)[:, tf.newaxis],
                          weighted / tf.maximum(weight_sum, 1e-6)[:, tf.newaxis]], axis=1)


class FeatureTower(tf.keras.Model):
    """Embeds one tower's encoded features (the output of its `FeaturePreprocessor`).

    Each input is embedded by its encoding, the pieces are concatenated, crossed (DCN-v2) and
    passed through dense layers; the output is L2-normalized, so scores are cosines. An id sequence
    (a playlist's tracks) gives two pieces: its plain mean and a recency-weighted mean with a
    learned decay, so the tower can weigh the newest tracks against the whole list.

    Args:
        inputs: the tower's inputs, from the FeatureService.
        id_embeddings: vocabulary name -> the shared Embedding for ids of that kind.
        text_vocabulary_sizes: text input name -> its vocabulary size.
        has_numeric: whether the preprocessor emits a `numeric` matrix.
        embedding_dim: output dimension.
        text_embedding_dim: dimension of each text feature's token embeddings.
        layers: widths of the dense layers.
        cross: "stacked" (cross, then dense), "parallel" (cross beside dense) or "none".
        cross_low_rank: optional low-rank projection of the cross layer.
        dropout: rate of dropout on the concatenated inputs while training.
    """

    def __init__(self, inputs: Sequence[TowerInput], id_embeddings: Mapping[str, tf.keras.layers.Embedding],
                 text_vocabulary_sizes: Mapping[str, int], has_numeric: bool, embedding_dim: int = 64,
                 text_embedding_dim: int = 16, layers: Sequence[int] = (128,), cross: str = "stacked",
                 cross_low_rank: int | None = None, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if cross not in ("stacked", "parallel", "none"):
            raise ValueError(f"`cross` should be stacked, parallel or none. Got `cross` = {cross!r}")
        self._inputs = [i for i in inputs if i.encoding in (ID, ID_SEQUENCE, TEXT)]
        self._id_embeddings = dict(id_embeddings)
        self._text_embeddings = {
            name: tf.keras.layers.Embedding(size, text_embedding_dim, name=f"{name}_embedding")
            for name, size in text_vocabulary_sizes.items()}
        self._has_numeric = has_numeric
        self._pool = MaskedMeanPooling()
        self._sequences = {spec.name: IdSequencePooling(self._id_embeddings[spec.vocabulary],
                                                        name=f"{spec.name}_pooling")
                           for spec in self._inputs if spec.encoding == ID_SEQUENCE}
        self._cross_mode = cross
        self._cross = None if cross == "none" else tfrs.layers.dcn.Cross(projection_dim=cross_low_rank)
        self._dense = [tf.keras.layers.Dense(w, activation="relu") for w in layers]
        self._projection = tf.keras.layers.Dense(embedding_dim)
        self._dropout = tf.keras.layers.Dropout(dropout)

    def _pieces(self, encoded: Mapping[str, tf.Tensor]) -> list[tf.Tensor]:
        pieces = []
        for spec in self._inputs:
            ids = encoded[spec.name]
            if spec.encoding == ID:
                pieces.append(self._id_embeddings[spec.vocabulary](ids))
            elif spec.encoding == ID_SEQUENCE:
                pieces.append(self._sequences[spec.name](ids))
            else:
                pieces.append(self._pool(self._text_embeddings[spec.name](ids), ids))
        if self._has_numeric:
            pieces.append(encoded["numeric"])
        return pieces

    def call(self, encoded: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        x0 = self._dropout(tf.concat(self._pieces(encoded), axis=1), training=training)
        deep = x0 if self._cross_mode != "stacked" else self._cross(x0)
        for layer in self._dense:
            deep = layer(deep)
        if self._cross_mode == "parallel":
            deep = tf.concat([deep, self._cross(x0)], axis=1)
        return tf.math.l2_normalize(self._projection(deep), axis=1)


class PlaylistQueryTower(FeatureTower):
    """The query tower: a playlist as of a time (`playlist_query_v1`) -> embedding."""


class TrackCandidateTower(FeatureTower):
    """The candidate tower: a track (`track_candidate_v1`, with its id) -> embedding."""
