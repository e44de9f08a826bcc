"""`CandidateRanker`: a DCN-v2 ranking model over the merged candidates' features.

Pointwise: each (query, candidate) row is scored alone, the label is whether the candidate is a
hidden track of the playlist. Cross layers learn the interactions a fixed blend cannot (a
co-occurrence count means more when many seeds agree; a cosine means more for a short playlist).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from segue.ranking.ranker_features import FEATURES
from segue.settings import RankerSettings

SIGNATURE = "serving_default"
MANIFEST = "ranker.json"


class CandidateRanker(tfrs.Model):
    """Normalized features -> DCN-v2 cross layers -> dense layers -> one logit."""

    def __init__(self, cross_layers: int, layers: list[int], cross_low_rank: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.normalize = tf.keras.layers.Normalization(axis=-1)
        self.crosses = [tfrs.layers.dcn.Cross(projection_dim=cross_low_rank) for _ in range(cross_layers)]
        self.deep = [tf.keras.layers.Dense(units, activation="relu") for units in layers]
        self.logit = tf.keras.layers.Dense(1)
        self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
                                       metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc")])

    def call(self, features: tf.Tensor) -> tf.Tensor:
        x0 = self.normalize(features)
        x = x0
        for cross in self.crosses:
            x = cross(x0, x)
        for dense in self.deep:
            x = dense(x)
        return tf.squeeze(self.logit(x), axis=-1)

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features, labels = inputs
        return self.task(labels=labels, predictions=self(features, training=training))


def fit_ranker(features: np.ndarray, labels: np.ndarray, cfg: RankerSettings, verbose: int = 0) -> CandidateRanker:
    """Trains on all rows (rows of one case stay shuffled among others)."""
    tf.keras.utils.set_random_seed(cfg.seed)
    model = CandidateRanker(cfg.cross_layers, cfg.layers, cfg.cross_low_rank)
    model.normalize.adapt(features)
    model.compile(optimizer=tf.keras.optimizers.Adam(cfg.learning_rate))
    data = (tf.data.Dataset.from_tensor_slices((features, labels.astype(np.float32)))
            .shuffle(min(len(features), 200_000), seed=cfg.seed).batch(cfg.batch_size).prefetch(2))
    model.fit(data, epochs=cfg.epochs, verbose=verbose)
    return model


class _RankerModule(tf.Module):
    def __init__(self, model: CandidateRanker):
        super().__init__()
        self.model = model
        self.serve = tf.function(lambda features: {"score": self.model(features)},
                                 input_signature=[tf.TensorSpec([None, len(FEATURES)], tf.float32)])


def export_ranker(path: Path, model: CandidateRanker, facts: dict) -> Path:
    """A SavedModel taking the FEATURES matrix, and `ranker.json` naming its columns."""
    module = _RankerModule(model)
    tf.saved_model.save(module, str(path), signatures={SIGNATURE: module.serve})
    (Path(path) / MANIFEST).write_text(json.dumps({"features": list(FEATURES), **facts}, indent=2, default=str))
    return Path(path)


class ExportedRanker:
    """A reloaded ranker: `score(features)` -> one float per candidate row."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.facts = json.loads((self.path / MANIFEST).read_text())
        if tuple(self.facts["features"]) != FEATURES:
            raise ValueError(f"ranker {self.path} was trained on features {self.facts['features']}, this code "
                             f"computes {list(FEATURES)}: retrain it (`segue train`)")
        self._fn = tf.saved_model.load(str(self.path)).signatures[SIGNATURE]

    def warm_up(self) -> None:
        """The first call traces the signature: pay it before a request does."""
        self.score(np.zeros((1, len(FEATURES)), np.float32))

    def score(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0, np.float32)
        return self._fn(features=tf.constant(features, tf.float32))["score"].numpy()
