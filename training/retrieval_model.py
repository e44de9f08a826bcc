"""The seed design's "query features in, recommendations out" model: query tower + a TFRS index.

Kept for comparison with the Milvus path: one SavedModel that takes a playlist's Feast features
and returns the top-k track URIs, with a ScaNN (approximate) or BruteForce (exact) layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from segue.training.export import SIGNATURE, EmbeddingPipeline, quiet_keras_config_warnings

# ScaNN's ops live in their own namespace; SavedModel refuses unknown op namespaces unless listed.
_SCANN_NAMESPACE = ["Scann"]


def top_k_layer(pipeline: EmbeddingPipeline, embeddings: np.ndarray, track_uris: np.ndarray,
                k: int, kind: str = "scann") -> tfrs.layers.factorized_top_k.TopK:
    """A top-k layer over the catalog's embeddings, queried through `pipeline`."""
    candidates = tf.data.Dataset.from_tensor_slices(
        (tf.constant(track_uris.astype(str)), tf.constant(embeddings))).batch(4096)
    if kind == "scann":
        n = len(track_uris)
        # Leaves ~ sqrt(n), searching ~10% of them, then exact re-scoring of the best 4k. The
        # leaves searched must hold well over k tracks, or a small catalogue returns fewer than k.
        leaves = max(2, int(np.sqrt(n)))
        to_search = min(leaves, max(1, leaves // 10, int(np.ceil(4 * k * leaves / n))))
        index = tfrs.layers.factorized_top_k.ScaNN(
            pipeline, k=k, num_leaves=leaves, num_leaves_to_search=to_search,
            num_reordering_candidates=max(k, 4 * k))
    elif kind == "brute_force":
        index = tfrs.layers.factorized_top_k.BruteForce(pipeline, k=k)
    else:
        raise ValueError(f"`kind` should be scann or brute_force. Got `kind` = {kind!r}")
    index.index_from_dataset(candidates)
    return index


class _RetrievalModule(tf.Module):
    def __init__(self, index: tfrs.layers.factorized_top_k.TopK, specs: dict[str, tf.TensorSpec]):
        super().__init__()
        self.index = index

        def serve(features):
            scores, uris = self.index(features)
            return {"scores": scores, "track_uris": uris}

        self.serve = tf.function(serve, input_signature=[specs])


def export_retrieval(path: Path, index: tfrs.layers.factorized_top_k.TopK, specs: dict[str, tf.TensorSpec],
                     kind: str) -> Path:
    module = _RetrievalModule(index, specs)
    options = tf.saved_model.SaveOptions(namespace_whitelist=_SCANN_NAMESPACE) if kind == "scann" else None
    with quiet_keras_config_warnings():
        tf.saved_model.save(module, str(path), signatures={SIGNATURE: module.serve}, options=options)
    return Path(path)
