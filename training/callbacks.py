"""Keras callbacks: validation Recall@K over the full catalog, the collapse guard, and progress lines."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

_LOGGER = logging.getLogger(__name__)


class TrainingCollapsed(RuntimeError):
    """Training stopped because the model is not learning (see `CollapseGuard`)."""


def embed_all(tower: tf.keras.Model | tf.types.experimental.GenericFunction, encoded: Mapping[str, np.ndarray],
              batch_size: int = 8192) -> np.ndarray:
    """Runs a tower (or a tf.function of one) over encoded arrays in batches -> [n, dim] float32."""
    n = len(next(iter(encoded.values())))
    call = tower if isinstance(tower, tf.types.experimental.GenericFunction) else tf.function(
        lambda x: tower(x, training=False))
    return np.concatenate([call({k: v[s:s + batch_size] for k, v in encoded.items()}).numpy()
                           for s in range(0, n, batch_size)])


def recall_at_k(query_embeddings: np.ndarray, catalog_embeddings: np.ndarray,
                label_index: np.ndarray, k: int, chunk: int = 1024) -> float:
    """Share of queries whose label (a catalog row) is among the k best-scoring catalog rows."""
    catalog = tf.constant(catalog_embeddings)
    # A block of scores stays near 512 MB however large the catalog (1,024 x 1.8M floats were 7 GB).
    chunk = max(1, min(chunk, 2**27 // max(1, len(catalog_embeddings))))
    hits = 0
    for s in range(0, len(query_embeddings), chunk):
        scores = tf.linalg.matmul(query_embeddings[s:s + chunk], catalog, transpose_b=True)
        top = tf.math.top_k(scores, k=min(k, catalog.shape[0])).indices.numpy()
        hits += int((top == label_index[s:s + chunk, None]).any(axis=1).sum())
    return hits / max(1, len(query_embeddings))


def mean_pairwise_cosine(embeddings: np.ndarray) -> float:
    """Mean cosine between distinct rows (rows are L2-normalized): near 1 means collapse."""
    n = len(embeddings)
    if n < 2:
        return 0.0
    total = embeddings.sum(axis=0)
    return float((total @ total - (embeddings * embeddings).sum()) / (n * (n - 1)))


class ValidationRecall(tf.keras.callbacks.Callback):
    """At each epoch's end: exact Recall@K of validation queries against the whole catalog.

    Adds `val_recall_at_{k}` and `candidate_cosine` (mean pairwise cosine of a catalog sample) to
    the epoch logs, for early stopping, checkpoints, TensorBoard and the collapse guard.
    """

    def __init__(self, queries: Mapping[str, np.ndarray], label_index: np.ndarray,
                 catalog: Mapping[str, np.ndarray], k: int = 100, cosine_sample: int = 2000, seed: int = 0):
        super().__init__()
        self._queries, self._labels, self._catalog, self._k = queries, label_index, catalog, k
        n = len(next(iter(catalog.values())))
        self._sample = np.random.default_rng(seed).choice(n, size=min(n, cosine_sample), replace=False)
        self.history: list[dict[str, float]] = []

    def set_model(self, model: tf.keras.Model) -> None:
        super().set_model(model)
        # Traced once per run, not once per epoch.
        self._embed_candidates = tf.function(lambda x: model.candidate_tower(x, training=False))
        self._embed_queries = tf.function(lambda x: model.query_tower(x, training=False))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        catalog = embed_all(self._embed_candidates, self._catalog)
        queries = embed_all(self._embed_queries, self._queries)
        recall = recall_at_k(queries, catalog, self._labels, self._k)
        cosine = mean_pairwise_cosine(catalog[self._sample])
        if logs is not None:
            logs[f"val_recall_at_{self._k}"] = recall
            logs["candidate_cosine"] = cosine
        self.history.append({"epoch": epoch + 1, f"val_recall_at_{self._k}": recall, "candidate_cosine": cosine,
                             **{k: float(v) for k, v in (logs or {}).items()}})
        _LOGGER.info("epoch done", extra={"epoch": epoch + 1, "loss": round(float((logs or {}).get("loss", np.nan)), 4),
                                          f"val_recall_at_{self._k}": round(recall, 4),
                                          "candidate_cosine": round(cosine, 3)})


class CollapseGuard(tf.keras.callbacks.Callback):
    """Stops training loudly when the model is at chance or its candidate embeddings collapse.

    Looks at each epoch's end once `warmup_steps` steps have run: the epoch's mean loss against
    the chance-level loss of the same batches (`chance_loss`, logged by the model), and the
    catalog sample's mean pairwise cosine (`candidate_cosine`, from `ValidationRecall`).
    """

    def __init__(self, warmup_steps: int, loss_ratio: float = 0.98, max_cosine: float = 0.9):
        super().__init__()
        self._warmup, self._loss_ratio, self._max_cosine = warmup_steps, loss_ratio, max_cosine
        self._steps = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self._steps < self._warmup:
            return
        loss, chance = logs.get("loss"), logs.get("chance_loss")
        if loss is not None and chance and loss / chance > self._loss_ratio:
            raise TrainingCollapsed(
                f"the loss stays at chance level after {self._steps} steps: {loss:.4f} is "
                f"{loss / chance:.1%} of the chance-level {chance:.4f} (limit {self._loss_ratio:.0%}). "
                "The towers are not learning: check training.temperature (scores are cosine / temperature), "
                "training.learning_rate, and that the examples' features are not all empty")
        cosine = logs.get("candidate_cosine")
        if cosine is not None and cosine > self._max_cosine:
            raise TrainingCollapsed(
                f"candidate embeddings collapsed after {self._steps} steps: mean pairwise cosine "
                f"{cosine:.3f} > {self._max_cosine}. Every track looks alike to the model; lower "
                "training.learning_rate or raise training.temperature")


class ProgressLog(tf.keras.callbacks.Callback):
    """A log line every `every_s` seconds inside an epoch: step, examples/s and the epoch's ETA.

    Keras without a terminal prints one line per epoch, and an epoch at MPD scale is an hour.
    """

    def __init__(self, steps_per_epoch: int, batch_size: int, every_s: float = 60.0):
        super().__init__()
        self._steps, self._batch, self._every = steps_per_epoch, batch_size, every_s

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch, self._started = epoch + 1, time.perf_counter()
        self._last = self._started

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if now - self._last < self._every:
            return
        self._last = now
        step, seconds = batch + 1, now - self._started
        _LOGGER.info("training progress", extra={
            "epoch": self._epoch, "step": step, "steps": self._steps,
            "examples_per_s": round(step * self._batch / seconds),
            "epoch_eta_s": round(seconds / step * (self._steps - step)),
            "loss": round(float((logs or {}).get("loss", np.nan)), 4)})
