"""`segue train`: fit the two towers on the training examples and export them.

    segue train [--examples data/examples] [--out data/models] [--set epochs=5 --set temperature=0.1]

Reads the tower inputs from the FeatureServices, adapts preprocessing on the training split,
trains with early stopping on validation Recall@100 over the full catalog, and writes a model
version: `query/` and `candidate/` SavedModels, a `retrieval/` model (query tower + ScaNN),
checkpoints, TensorBoard logs and `manifest.json`. `<models>/latest` points to the newest version.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from itertools import chain
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from feast import FeatureStore

from segue.settings import SegueSettings, TrainingSettings
from segue.training.callbacks import CollapseGuard, ProgressLog, ValidationRecall, embed_all
from segue.features.track_catalog import TrackCatalog, load_catalog
from segue.training.data import Examples, candidate_ids, encode, encode_chunks, training_dataset
from segue.training.export import EmbeddingPipeline, export_tower
from segue.training.feature_inputs import ID, ID_SEQUENCE, TowerInput, service_inputs, to_tensors
from segue.training.model import TwoTowerModel
from segue.training.model_versions import CANDIDATE_DIR, QUERY_DIR, ModelVersion, ModelVersions
from segue.training.preprocessing import FeaturePreprocessor, id_lookup, id_vocabulary
from segue.training.retrieval_model import export_retrieval, top_k_layer
from segue.training.towers import PlaylistQueryTower, TrackCandidateTower
from segue.vocabulary import PLAYLIST_SERVICE, TRACK_KEY, TRACK_SERVICE

_LOGGER = logging.getLogger(__name__)
RECALL_K = 100
RETRIEVAL_K = 500


@dataclass
class TrainedModel:
    path: Path
    manifest: dict[str, Any]


def tower_inputs(store: FeatureStore, inputs_mode: str) -> tuple[list[TowerInput], list[TowerInput]]:
    """The query and candidate inputs; `ids` keeps only track ids (the factorization baseline)."""
    query = service_inputs(store, PLAYLIST_SERVICE, embed_entity_key=False)
    candidate = service_inputs(store, TRACK_SERVICE, embed_entity_key=True)
    if inputs_mode == "ids":
        query = [i for i in query if i.encoding == ID_SEQUENCE and i.vocabulary == "track"]
        candidate = [i for i in candidate if i.name == TRACK_KEY]
    return query, candidate


def _lookups(cfg: TrainingSettings, train: Examples, inputs: list[TowerInput]) -> dict[str, tf.keras.layers.StringLookup]:
    """One lookup per id vocabulary, over every training column of that kind in both towers, read
    a part at a time."""
    query = {i.name for i in train.query_inputs}

    def column(spec: TowerInput):
        return train.query_column(spec) if spec.name in query else train.candidate_column(spec)

    kinds = sorted({i.vocabulary for i in inputs if i.encoding in (ID, ID_SEQUENCE)})
    return {kind: id_lookup(id_vocabulary(chain.from_iterable(column(i) for i in inputs if i.vocabulary == kind),
                                          cfg.min_id_count), cfg.oov_buckets, kind)
            for kind in kinds}


def _tower(cls, cfg: TrainingSettings, preprocessor: FeaturePreprocessor, id_embeddings, name: str):
    text = {i.name: preprocessor.text_vocabulary_size(i.name) for i in preprocessor.inputs if i.encoding == "text"}
    return cls(preprocessor.inputs, id_embeddings, text, has_numeric=any(i.encoding == "numeric" for i in preprocessor.inputs),
               embedding_dim=cfg.embedding_dim, text_embedding_dim=cfg.text_embedding_dim, layers=cfg.layers,
               cross=cfg.cross, cross_low_rank=cfg.cross_low_rank, dropout=cfg.dropout, name=name)


def _first_rows(values: np.ndarray) -> np.ndarray:
    _, first = np.unique(values, return_index=True)
    return np.sort(first)


@dataclass
class TrainingSetup:
    """Everything `fit` needs: the model, its data encoded in memory, and the validation catalog."""

    model: TwoTowerModel
    query_preprocessor: FeaturePreprocessor
    candidate_preprocessor: FeaturePreprocessor
    lookups: dict[str, tf.keras.layers.StringLookup]
    train_examples: int
    validation_track_uri: np.ndarray  # every validation example's label
    time_range: dict[str, str]  # the first and last training example's time
    dataset: tf.data.Dataset
    catalog: TrackCatalog
    catalog_encoded: dict[str, np.ndarray]
    validation_query: dict[str, np.ndarray]
    validation_labels: np.ndarray  # catalog row of each validation query's label
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return self.train_examples // self.batch_size


def prepare(settings: SegueSettings, store: FeatureStore, examples_dir: Path) -> TrainingSetup:
    """Reads the examples and the catalog, adapts preprocessing, builds the model and the dataset."""
    cfg = settings.training
    tf.keras.utils.set_random_seed(cfg.seed)
    query_inputs, candidate_inputs = tower_inputs(store, cfg.inputs)
    train_ex = Examples.read(examples_dir, "train", query_inputs, candidate_inputs)
    validation = Examples.read(examples_dir, "validation", query_inputs, candidate_inputs)
    _LOGGER.info("examples read", extra={"train": len(train_ex), "validation": len(validation)})

    lookups = _lookups(cfg, train_ex, query_inputs + candidate_inputs)
    text_args = dict(text_max_tokens=cfg.text_max_tokens, text_ngrams=cfg.text_ngrams, text_length=cfg.text_length)
    query_pre = FeaturePreprocessor(query_inputs, lookups, name="query_preprocessor", **text_args)
    candidate_pre = FeaturePreprocessor(candidate_inputs, lookups, name="candidate_preprocessor", **text_args)
    query_pre.adapt(train_ex.query_tensors([i for i in query_inputs if i.encoding not in (ID, ID_SEQUENCE)],
                                           limit=cfg.adapt_rows))
    candidate_pre.adapt(train_ex.candidate_tensors(limit=cfg.adapt_rows))
    id_embeddings = {kind: tf.keras.layers.Embedding(lookup.vocabulary_size(), cfg.id_embedding_dim, name=f"{kind}_embedding")
                     for kind, lookup in lookups.items()}
    query_tower = _tower(PlaylistQueryTower, cfg, query_pre, id_embeddings, "query_tower")
    candidate_tower = _tower(TrackCandidateTower, cfg, candidate_pre, id_embeddings, "candidate_tower")

    sequences = [i.name for i in query_inputs if i.encoding == ID_SEQUENCE]
    train_query = encode_chunks(query_pre, train_ex.query_chunks(), ragged=sequences)
    train_candidate = encode_chunks(candidate_pre, train_ex.candidate_chunks())
    train_ids = candidate_ids(train_ex.label_tracks)[train_ex.label_codes]
    # Mixed negatives come from tracks seen in training: later tracks would leak the future.
    pool_rows = _first_rows(train_ex.label_codes)
    pool = {**{k: v[pool_rows] for k, v in train_candidate.items()}, "candidate_id": train_ids[pool_rows]}
    model = TwoTowerModel(query_tower, candidate_tower, temperature=cfg.temperature,
                          logq_correction=cfg.logq_correction, remove_accidental_hits=cfg.remove_accidental_hits,
                          mixed_negatives=cfg.mixed_negatives, hard_negatives=cfg.hard_negatives,
                          negative_pool={k: tf.constant(v) for k, v in pool.items()} if cfg.mixed_negatives else None)
    optimizer = {"adam": tf.keras.optimizers.Adam, "adagrad": tf.keras.optimizers.Adagrad}[cfg.optimizer]
    model.compile(optimizer=optimizer(cfg.learning_rate), steps_per_execution=cfg.steps_per_execution)
    dataset = training_dataset(train_query, train_candidate, train_ids, train_ex.sampling_probability,
                               cfg.batch_size, cfg.seed, query_index=train_ex.query_index)

    catalog = load_catalog(store)
    catalog_encoded = encode(candidate_pre, to_tensors(catalog.features, candidate_inputs))
    position = {uri: i for i, uri in enumerate(catalog.track_uri)}
    rows = np.random.default_rng(cfg.seed).choice(len(validation), size=min(len(validation), cfg.validation_queries),
                                                  replace=False)
    return TrainingSetup(
        model=model, query_preprocessor=query_pre, candidate_preprocessor=candidate_pre, lookups=lookups,
        train_examples=len(train_ex), validation_track_uri=validation.track_uri, time_range=train_ex.time_range,
        dataset=dataset, catalog=catalog,
        catalog_encoded=catalog_encoded,
        validation_query=encode_chunks(query_pre, validation.query_chunks(validation.query_index[rows])),
        validation_labels=np.array([position.get(u, -1) for u in validation.track_uri[rows]]),
        batch_size=cfg.batch_size)


def train(settings: SegueSettings, store: FeatureStore, examples_dir: Path | None = None,
          models_dir: Path | None = None, version: str | None = None, verbose: int | None = None,
          publish_latest: bool = True, with_ranker: bool = True) -> TrainedModel:
    """Trains, exports and returns the model version written under `models_dir`: the towers and,
    with `with_ranker`, the ranking stage over them and the co-occurrence table."""
    cfg = settings.training
    examples_dir = Path(examples_dir or settings.paths.examples_dir)
    models_dir = Path(models_dir or settings.paths.models_dir)
    versions = ModelVersions(models_dir)
    version = version or f"{'two_tower' if cfg.inputs == 'features' else 'id_only'}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    out = models_dir / version
    out.mkdir(parents=True, exist_ok=False)
    started = time.perf_counter()
    examples_manifest = json.loads((examples_dir / "_manifest.json").read_text())
    setup = prepare(settings, store, examples_dir)
    model, catalog = setup.model, setup.catalog
    query_pre, candidate_pre = setup.query_preprocessor, setup.candidate_preprocessor
    monitor = f"val_recall_at_{RECALL_K}"
    recall_cb = ValidationRecall(setup.validation_query, setup.validation_labels, setup.catalog_encoded,
                                 k=RECALL_K, seed=cfg.seed)
    checkpoints = out / "checkpoints"
    callbacks = [
        recall_cb,
        CollapseGuard(cfg.collapse_warmup_steps, cfg.collapse_loss_ratio, cfg.collapse_cosine),
        tf.keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=cfg.early_stopping_patience,
                                         restore_best_weights=True),
        tf.keras.callbacks.ModelCheckpoint(str(checkpoints / "best.weights"), monitor=monitor, mode="max",
                                           save_best_only=True, save_weights_only=True),
        tf.keras.callbacks.TensorBoard(log_dir=str(out / "logs"), update_freq="epoch", profile_batch=0),
    ]
    steps = setup.steps_per_epoch
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if verbose != 1:  # Keras's progress bar is the terminal's progress
        callbacks.append(ProgressLog(steps, cfg.batch_size))
    fit_started = time.perf_counter()
    model.fit(setup.dataset, epochs=cfg.epochs, callbacks=callbacks, verbose=verbose)
    fit_seconds = time.perf_counter() - fit_started
    epochs_run = len(recall_cb.history)
    best = max(recall_cb.history, key=lambda h: h[monitor])

    export_tower(out / QUERY_DIR, query_pre, model.query_tower)
    export_tower(out / CANDIDATE_DIR, candidate_pre, model.candidate_tower)
    catalog_embeddings = embed_all(model.candidate_tower, setup.catalog_encoded)
    retrieval_kind = cfg.retrieval_index
    index = top_k_layer(EmbeddingPipeline(query_pre, model.query_tower), catalog_embeddings, catalog.track_uri,
                        k=RETRIEVAL_K, kind=retrieval_kind)
    export_retrieval(out / "retrieval", index, {i.name: i.spec for i in query_pre.inputs}, retrieval_kind)

    ranker = None
    if with_ranker:
        from segue.ranking.train_ranker import NEIGHBOURS_TABLE, train_ranker

        neighbours = Path(settings.paths.neighbours_dir) / NEIGHBOURS_TABLE
        if not neighbours.exists():
            raise FileNotFoundError(f"no co-occurrence table at {neighbours}: the ranker needs it. Run "
                                    "`segue batch neighbours` after `segue batch examples`, then train again")
        ranker = train_ranker(settings, store, versions, ModelVersion(out), examples_dir, neighbours, verbose=0)

    lookups = setup.lookups
    track_vocab = set(lookups["track"].get_vocabulary()[1 + cfg.oov_buckets:]) if "track" in lookups else set()
    manifest = {
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(),
        "feature_services": {"query": PLAYLIST_SERVICE, "candidate": TRACK_SERVICE},
        "inputs": {"query": [i.__dict__ for i in query_pre.inputs], "candidate": [i.__dict__ for i in candidate_pre.inputs]},
        "embedding_dim": cfg.embedding_dim,
        "data": {"examples": str(examples_dir.absolute()), "examples_run": str(examples_dir.resolve()),
                 "split_time": examples_manifest["split_time"],
                 **setup.time_range, "train_examples": setup.train_examples,
                 "validation_examples": len(setup.validation_track_uri),
                 "catalog_tracks": len(catalog)},
        "vocabularies": {kind: lookup.vocabulary_size() for kind, lookup in lookups.items()},
        "validation_label_oov_rate": round(float(np.mean([u not in track_vocab for u in setup.validation_track_uri])), 4),
        "numeric_transforms": {"query": query_pre.numeric_transforms(), "candidate": candidate_pre.numeric_transforms()},
        "training": cfg.model_dump(mode="json"),
        "metrics": {"best_epoch": best["epoch"], monitor: round(best[monitor], 4),
                    "final_loss": round(recall_cb.history[-1].get("loss", float("nan")), 4),
                    "chance_loss": round(recall_cb.history[-1].get("chance_loss", float("nan")), 4),
                    "candidate_cosine": round(best["candidate_cosine"], 4)},
        "history": recall_cb.history,
        "speed": {"epochs": epochs_run, "steps_per_epoch": steps, "fit_seconds": round(fit_seconds, 1),
                  "examples_per_s": round(epochs_run * steps * cfg.batch_size / fit_seconds),
                  "total_seconds": round(time.perf_counter() - started, 1)},
        "retrieval": {"kind": retrieval_kind, "k": RETRIEVAL_K},
        "ranker": ranker,
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    if publish_latest:
        versions.publish_latest(version)
    _LOGGER.info("model written", extra={"path": str(out), monitor: manifest["metrics"][monitor],
                                         "examples_per_s": manifest["speed"]["examples_per_s"]})
    return TrainedModel(out, manifest)
