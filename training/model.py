"""The two-tower retrieval model: both towers and a TFRS `Retrieval` task with logQ correction."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf
import tensorflow_recommenders as tfrs

from segue.training.towers import PlaylistQueryTower, TrackCandidateTower


def chance_loss(sampling_probability: tf.Tensor | None, num_queries: tf.Tensor,
                num_candidates: tf.Tensor) -> tf.Tensor:
    """The softmax loss of a model that scores every candidate alike (the collapse yardstick).

    Without logQ correction that is ln(num_candidates). With it, every query's logits become
    -log(p_j), so the loss is logsumexp_j(-log p_j) - mean over the labels i of (-log p_i).
    """
    if sampling_probability is None:
        return tf.math.log(tf.cast(num_candidates, tf.float32))
    logits = -tf.math.log(sampling_probability)
    return tf.reduce_logsumexp(logits) - tf.reduce_mean(logits[:num_queries])


class TwoTowerModel(tfrs.Model):
    """Trains a query and a candidate tower with in-batch softmax.

    Each batch holds `query` and `candidate` (encoded feature dicts), `candidate_id` (int64, for
    accidental-hit removal) and `candidate_sampling_probability` (the label track's share of
    training examples). In-batch candidates are sampled by popularity, so their logits are
    corrected by log(batch_size * p); optional mixed negatives are drawn uniformly from
    `negative_pool` (an encoded catalog) and corrected by log(num_mixed / catalog_size).

    Args:
        query_tower: encoded query features -> [batch, dim].
        candidate_tower: encoded candidate features -> [batch, dim].
        temperature: scores are cosine / temperature.
        logq_correction: subtract the log sampling probability from each candidate's logit.
        remove_accidental_hits: do not count a batch's other copies of the label as negatives.
        mixed_negatives: extra uniformly sampled candidates per batch (needs `negative_pool`).
        hard_negatives: keep only this many hardest negatives per query.
        negative_pool: encoded candidate features of the catalog, plus `candidate_id`.
    """

    def __init__(self, query_tower: PlaylistQueryTower, candidate_tower: TrackCandidateTower,
                 temperature: float = 0.05, logq_correction: bool = True,
                 remove_accidental_hits: bool = True, mixed_negatives: int = 0,
                 hard_negatives: int | None = None,
                 negative_pool: Mapping[str, tf.Tensor] | None = None):
        super().__init__()
        if mixed_negatives and not negative_pool:
            raise ValueError("`mixed_negatives` needs a `negative_pool` of catalog candidates. "
                             f"Got `mixed_negatives` = {mixed_negatives} and no pool")
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self._logq = logq_correction
        self._remove_hits = remove_accidental_hits
        self._mixed = mixed_negatives
        self._pool = dict(negative_pool or {})
        self.task = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
            temperature=temperature, remove_accidental_hits=remove_accidental_hits,
            num_hard_negatives=hard_negatives)
        self.chance_loss = tf.keras.metrics.Mean(name="chance_loss")

    @property
    def metrics(self):
        return super().metrics + [self.chance_loss]

    def _mixed_negatives(self) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
        size = tf.shape(self._pool["candidate_id"])[0]
        idx = tf.random.uniform([self._mixed], maxval=size, dtype=tf.int32)
        encoded = {k: tf.gather(v, idx) for k, v in self._pool.items() if k != "candidate_id"}
        probability = tf.fill([self._mixed], self._mixed / tf.cast(size, tf.float32))
        return encoded, tf.gather(self._pool["candidate_id"], idx), probability

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        query = self.query_tower(features["query"], training=training)
        candidates = self.candidate_tower(features["candidate"], training=training)
        ids = features["candidate_id"]
        batch = tf.cast(tf.shape(ids)[0], tf.float32)
        probability = tf.cast(features["candidate_sampling_probability"], tf.float32) * batch
        if self._mixed:
            extra, extra_ids, extra_probability = self._mixed_negatives()
            candidates = tf.concat([candidates, self.candidate_tower(extra, training=training)], axis=0)
            ids = tf.concat([ids, extra_ids], axis=0)
            probability = tf.concat([probability, extra_probability], axis=0)
        probability = probability if self._logq else None
        self.chance_loss.update_state(chance_loss(probability, tf.shape(query)[0], tf.shape(candidates)[0]))
        return self.task(query, candidates, candidate_sampling_probability=probability,
                         candidate_ids=ids if self._remove_hits else None, compute_metrics=False)
