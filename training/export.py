"""Exported towers: SavedModels whose signatures take features exactly as Feast serves them.

Each tower is saved with its preprocessing inside, so serving hands it Feast's online values and
nothing else: `load_tower(path).embed(store.get_online_features(...).to_dict())`.
Signature inputs are named after the features; strings are `tf.string` (null -> ""), numbers
`tf.float64` (null -> NaN), string lists a padded `[batch, length]` matrix. `ExportedTower` does
that conversion from the signature's own specs, so no feature list is kept outside the model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from segue.training.feature_inputs import NUMERIC, TEXT, TowerInput, to_tensors
from segue.training.preprocessing import FeaturePreprocessor

SIGNATURE = "serving_default"
OUTPUT = "embedding"


class EmbeddingPipeline(tf.keras.Model):
    """Raw features -> preprocessing -> tower -> embedding, as one callable model."""

    def __init__(self, preprocessor: FeaturePreprocessor, tower: tf.keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.preprocessor = preprocessor
        self.tower = tower

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.tower(self.preprocessor(features), training=training)


class _TowerModule(tf.Module):
    def __init__(self, pipeline: EmbeddingPipeline, inputs: Sequence[TowerInput]):
        super().__init__()
        self.pipeline = pipeline
        specs = {i.name: i.spec for i in inputs}
        self.serve = tf.function(lambda features: {OUTPUT: self.pipeline(features)},
                                 input_signature=[specs])


class _KerasConfigWarningFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "non-serializable objects" not in record.getMessage()


@contextmanager
def quiet_keras_config_warnings() -> Iterator[None]:
    """Saving warns once per layer that its Keras config is not serializable. The SavedModel
    is restored with tf.saved_model.load, which never reads Keras configs, so the warning is noise."""
    log, quiet = tf.get_logger(), _KerasConfigWarningFilter()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


def export_tower(path: Path, preprocessor: FeaturePreprocessor, tower: tf.keras.Model) -> Path:
    """Saves preprocessing + tower as a SavedModel with one `serving_default` signature."""
    module = _TowerModule(EmbeddingPipeline(preprocessor, tower), preprocessor.inputs)
    with quiet_keras_config_warnings():
        tf.saved_model.save(module, str(path), signatures={SIGNATURE: module.serve})
    return Path(path)


def _input_from_spec(name: str, spec: tf.TensorSpec) -> TowerInput:
    # Converting values needs only numeric / string / string list; ids and text convert alike.
    if spec.dtype == tf.float64:
        return TowerInput(name, NUMERIC, name)
    return TowerInput(name, TEXT, name, is_list=spec.shape.rank == 2)


class ExportedTower:
    """A reloaded tower: `embed(features)` takes Feast's online dict (or any name -> values)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._loaded = tf.saved_model.load(str(path))
        self._fn = self._loaded.signatures[SIGNATURE]
        specs = self._fn.structured_input_signature[1]
        self.inputs = [_input_from_spec(name, spec) for name, spec in sorted(specs.items())]
        self.embedding_dim = int(self._fn.structured_outputs[OUTPUT].shape[-1])

    @property
    def signature(self):
        """The raw `serving_default` function: keyword tensors in, {"embedding": ...} out."""
        return self._fn

    @property
    def feature_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def tensors(self, features: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """Feast values -> the signature's tensors (nulls as "" / NaN, lists padded)."""
        return {k: tf.constant(v) for k, v in to_tensors(features, self.inputs).items()}

    def embed(self, features: Mapping[str, Any], batch_size: int = 8192) -> np.ndarray:
        """[n, dim] float32 embeddings of n entities' features."""
        arrays = to_tensors(features, self.inputs)
        n = len(next(iter(arrays.values())))
        if n <= batch_size:  # one request: no slicing
            return self._fn(**{k: tf.constant(v) for k, v in arrays.items()})[OUTPUT].numpy()
        out = [self._fn(**{k: tf.constant(v[s:s + batch_size]) for k, v in arrays.items()})[OUTPUT].numpy()
               for s in range(0, n, batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.embedding_dim), np.float32)


def load_tower(path: Path) -> ExportedTower:
    return ExportedTower(path)
