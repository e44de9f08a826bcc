"""Two-tower training end to end on a generated sample with planted structure: real Spark, real
Feast (DuckDB offline, SQLite online), real TensorFlow; quality asserted, not time."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from segue.training.callbacks import TrainingCollapsed
from segue.training.export import load_tower
from segue.training.train import train

from conftest import INTERRUPTED_MARKER

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_two_tower_beats_popularity_on_every_recall_at_k(trained):
    model, report = trained
    tower, popularity = report["models"]["two_tower"]["overall"], report["models"]["popularity"]["overall"]
    for k in report["recall_ks"]:
        assert tower[f"recall@{k}"] > popularity[f"recall@{k}"], (k, tower, popularity)
    # With 4k tracks, popularity's top 500 already covers 12% of the catalog: the margin is
    # asserted where ranking matters, not at K=500.
    assert tower["recall@100"] > 1.15 * popularity["recall@100"], (tower, popularity)
    assert tower["ndcg"] > popularity["ndcg"] and tower["clicks"] < popularity["clicks"]
    # The model learned: well under chance-level loss, embeddings spread out.
    metrics = model.manifest["metrics"]
    assert metrics["final_loss"] < 0.9 * metrics["chance_loss"] and metrics["candidate_cosine"] < 0.9
    assert set(report["models"]) == {"two_tower", "full_pipeline", "merged_sources", "neighbours", "id_only_mf",
                                     "cooccurrence", "popularity"}
    assert report["heldout_playlists"] > 50 and report["models"]["two_tower"]["cold_start"]["playlists"] > 0
    # Content features reach tracks never seen in training. Ids alone reach them only through the
    # few shared out-of-vocabulary buckets (see the next test), so they find fewer.
    cold = {m: report["models"][m]["cold_start"]["recall@500"] for m in ("two_tower", "id_only_mf")}
    assert cold["two_tower"] > 0 and cold["two_tower"] > cold["id_only_mf"], cold


def test_id_only_model_gives_unseen_tracks_only_its_oov_bucket_embeddings(world, trained):
    """Why id-only cold-start recall is not zero: every unseen track shares one of
    `training.oov_buckets` embeddings, so at most that many distinct vectors exist for them."""
    from segue.features.track_catalog import load_catalog

    settings, store = world
    model, report = trained
    id_only = model.path / "baselines" / "id_only"
    # The fixture left an interrupted evaluate's baseline folder behind: it was trained afresh.
    assert (id_only / "manifest.json").is_file() and not (id_only / "checkpoints" / INTERRUPTED_MARKER).exists()
    catalog = load_catalog(store)
    # The vocabulary holds every track id of the training split: labels and the queries' lists.
    train = pd.read_parquet(settings.paths.examples_dir / "train", columns=[
        "track_uri", "playlist_snapshots__track_uris", "playlist_snapshots__recent_track_uris"])
    seen = set(train.track_uri).union(*map(set, train.playlist_snapshots__track_uris),
                                      *map(set, train.playlist_snapshots__recent_track_uris))
    unseen = np.array([u for u in catalog.track_uri if u not in seen], dtype=object)
    assert len(unseen) > settings.training.oov_buckets
    vectors = load_tower(id_only / "candidate").embed({"track_uri": unseen.tolist()})
    assert len(np.unique(np.round(vectors, 5), axis=0)) <= settings.training.oov_buckets


def test_neighbour_table_holds_the_training_windows_co_occurrence_counts(world):
    """Every kept neighbour's count is the number of training-window playlists holding both tracks
    (entries before T, held-out playlists left out), strongest first, stamped T."""
    from segue.training.baselines import TrainingHistory

    settings, _ = world
    split = pd.Timestamp(json.loads((settings.paths.examples_dir / "_manifest.json").read_text())["split_time"])
    heldout = pd.read_parquet(settings.paths.examples_dir / "heldout_challenge.parquet", columns=["pid"])
    timeline = pd.read_parquet(settings.paths.features_dir / "playlist_timeline", columns=["pid", "track_uri", "added_at"])
    history = TrainingHistory(timeline[(timeline.added_at < split) & ~timeline.pid.isin(heldout.pid)])
    table = pd.read_parquet(settings.paths.neighbours_dir / "track_neighbours")
    assert set(table.track_uri) == set(history.tracks)
    assert (pd.to_datetime(table.event_timestamp, utc=True) == split).all()
    sample = table.sample(30, random_state=0)
    co = (history.matrix.T @ history.matrix).tocsr()
    for row in sample.itertuples():
        i = history.position[row.track_uri]
        assert row.playlists == history.counts[i]
        counts = list(row.neighbour_counts)
        assert counts == sorted(counts, reverse=True) and row.track_uri not in set(row.neighbour_uris)
        assert counts == [co[i, history.position[u]] for u in row.neighbour_uris]
        # Nothing stronger was left out.
        others = co[i].toarray().ravel()
        others[[i, *[history.position[u] for u in row.neighbour_uris]]] = 0
        assert others.max() <= (counts[-1] if len(counts) == settings.candidates.neighbours_per_track else 0)


def test_ranker_learns_only_from_tracks_added_after_the_retrieval_window(world, trained):
    settings, _ = world
    model, _ = trained
    facts = model.manifest["ranker"]
    split = pd.Timestamp(model.manifest["data"]["split_time"])
    assert pd.Timestamp(facts["retrieval_window_end"]) == split and facts["cases"] > 20
    assert pd.Timestamp(facts["targets_from"]) >= split
    # Every target of every case was added at or after T; the towers' training examples before it.
    cases = pd.read_parquet(settings.paths.examples_dir / "ranker_cases.parquet")
    timeline = pd.read_parquet(settings.paths.features_dir / "playlist_timeline", columns=["pid", "track_uri", "added_at"])
    targets = cases[["pid", "target_track_uris"]].explode("target_track_uris").rename(
        columns={"target_track_uris": "track_uri"}).merge(timeline, on=["pid", "track_uri"])
    assert len(targets) >= cases.target_track_uris.map(len).sum() and (targets.added_at >= split).all()
    train_examples = pd.read_parquet(settings.paths.examples_dir / "train", columns=["added_at"])
    assert (pd.to_datetime(train_examples.added_at, utc=True) < split).all()
    heldout = set(pd.read_parquet(settings.paths.examples_dir / "heldout_challenge.parquet").pid)
    assert not heldout & set(cases.pid)


def test_evaluation_writes_json_markdown_and_plot(trained):
    model, report = trained
    out = model.path / "evaluation"
    assert json.loads((out / "metrics.json").read_text())["models"].keys() == report["models"].keys()
    md = (out / "metrics.md").read_text()
    assert "| two_tower |" in md and "| popularity |" in md and "title_only" in md
    assert (out / "recall_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((model.path / "manifest.json").read_text())
    assert manifest["feature_services"] == {"query": "playlist_query_v1", "candidate": "track_candidate_v1"}
    assert manifest["embedding_dim"] == 64 and manifest["data"]["split_time"]
    assert (model.path.parent / "latest").resolve() == model.path.resolve()


def test_exported_towers_embed_feast_online_output_as_is(world, trained):
    settings, store = world
    model, _ = trained
    timeline = pd.read_parquet(settings.paths.features_dir / "playlist_timeline", columns=["pid", "track_uri"])
    pids = timeline.pid.drop_duplicates().head(5).tolist() + [-1]  # -1: unknown playlist
    tracks = timeline.track_uri.drop_duplicates().head(5).tolist() + ["spotify:track:unknown"]
    query = store.get_online_features(features=store.get_feature_service("playlist_query_v1"),
                                      entity_rows=[{"pid": p} for p in pids]).to_dict()
    candidate = store.get_online_features(features=store.get_feature_service("track_candidate_v1"),
                                          entity_rows=[{"track_uri": t} for t in tracks]).to_dict()
    q = load_tower(model.path / "query").embed(query)
    c = load_tower(model.path / "candidate").embed(candidate)
    assert q.shape == (6, 64) and c.shape == (6, 64)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)

    # Offline (point-in-time, now) and online features give the same embedding: no skew.
    offline = store.get_historical_features(
        entity_df=pd.DataFrame({"track_uri": tracks[:5], "event_timestamp": pd.Timestamp.now(tz="UTC")}),
        features=store.get_feature_service("track_candidate_v1")).to_df()
    offline = offline.set_index("track_uri").loc[tracks[:5]].reset_index()
    c_offline = load_tower(model.path / "candidate").embed({k: offline[k].tolist() for k in offline.columns})
    np.testing.assert_allclose(c_offline, c[:5], atol=1e-5)

    import scann  # noqa: F401  (registers ScaNN's ops before loading)
    import tensorflow as tf

    retrieval = tf.saved_model.load(str(model.path / "retrieval")).signatures["serving_default"]
    inputs = load_tower(model.path / "query")
    top = retrieval(**inputs.tensors(query))
    assert top["track_uris"].shape == (6, 500)
    assert top["track_uris"][0, 0].numpy().decode().startswith("spotify:track:")


def test_collapse_guard_stops_a_model_that_cannot_learn(world, tmp_path):
    settings, store = world
    # Scores of cosine / 1000 are all about 0: every candidate looks alike, the loss stays at chance.
    broken = settings.model_copy(update={"training": settings.training.model_copy(
        update={"temperature": 1000.0, "collapse_warmup_steps": 10, "epochs": 3})})
    with pytest.raises(TrainingCollapsed, match="chance level"):
        train(broken, store, models_dir=tmp_path, verbose=0, publish_latest=False)


def test_the_ranker_beats_the_retrieval_order_on_held_out_playlists(trained):
    """The ranking stage against the orders it replaces, paired on the same held-out playlists: it
    beats the towers' search by an interval that excludes 0, and is never worse than fusing the
    same candidates. (Against fusion it ties here and on the demo data; on id-only data it wins.)"""
    _, report = trained
    against = report["ranker_vs_retrieval"]["against"]
    assert set(against) == {"merged_sources", "two_tower"}
    for metric in ("recall@100", "ndcg", "r_precision"):
        assert against["two_tower"][metric]["verdict"] == "better", (metric, against["two_tower"][metric])
    assert all(c["verdict"] != "worse" for c in against["merged_sources"].values()), against["merged_sources"]
