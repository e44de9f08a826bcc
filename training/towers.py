"""The two towers: encoded features -> an L2-normalized embedding.

Both are the same `FeatureTower` over different FeatureServices. Id embeddings (track, artist,
album) are built once and handed to both towers, so a playlist's recent tracks and a candidate
track live in one space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


class FeatureTower(tf.keras.Model):
    """Embeds one tower's encoded features (the output of its `FeaturePreprocessor`).

    Each input is embedded by its encoding, the pieces are concatenated, crossed (DCN-v2) and
    passed through dense layers; the output is L2-normalized, so scores are cosines.

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
                pieces.append(self._pool(self._id_embeddings[spec.vocabulary](ids), ids))
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
