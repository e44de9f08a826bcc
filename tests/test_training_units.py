"""The model's parts on tiny hand-made inputs: encodings, pooling, loss yardstick, data order,
export round trip, baselines."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs
from feast.types import Array, Bool, Float64, Int64, String

from segue.training.baselines import TrainingHistory, cooccurrence_rankings, popularity_rankings
from segue.training.callbacks import CollapseGuard, ProgressLog, TrainingCollapsed, mean_pairwise_cosine
from segue.training.data import RaggedIds, training_dataset
from segue.training.export import export_tower, load_tower, EmbeddingPipeline
from segue.training.feature_inputs import ID, ID_SEQUENCE, NUMERIC, TEXT, classify, to_tensors
from segue.training.model import chance_loss
from segue.training.preprocessing import FeaturePreprocessor, id_lookup, id_vocabulary
from segue.training.towers import IdSequencePooling, MaskedMeanPooling, TrackCandidateTower


def test_encodings_follow_feast_types_and_names():
    seq = classify("recent_track_uris", Array(String), "playlist_snapshots__recent_track_uris")
    assert (seq.encoding, seq.vocabulary, seq.is_list) == (ID_SEQUENCE, "track", True)
    assert classify("artist_uri", String, "x").vocabulary == "artist"
    assert classify("track_uri", String, "track_uri").encoding == ID
    assert classify("name", String, "x").encoding == TEXT
    genres = classify("artist_genres", Array(String), "x")
    assert (genres.encoding, genres.is_list) == (TEXT, True)
    assert {classify(n, t, n).encoding for n, t in (("a", Int64), ("b", Float64), ("c", Bool))} == {NUMERIC}
    with pytest.raises(ValueError, match=r"feature `scores` has Feast type .*Array\(Int64\)"):
        classify("scores", Array(Int64), "x")


def test_feast_online_values_become_signature_arrays():
    inputs = [classify("name", String, "name"), classify("num_tracks", Int64, "num_tracks"),
              classify("collaborative", Bool, "collaborative"),
              classify("recent_track_uris", Array(String), "recent_track_uris")]
    # As OnlineResponse.to_dict() returns them, an unknown playlist's nulls included.
    online = {"pid": [1, 2, 3], "name": ["Road trip", None, ""], "num_tracks": [12, None, 0],
              "collaborative": [True, None, False], "recent_track_uris": [["a", "b"], None, ["c"]]}
    arrays = to_tensors(online, inputs)
    assert arrays["name"].tolist() == ["Road trip", "", ""]
    assert arrays["num_tracks"][0] == 12 and math.isnan(arrays["num_tracks"][1])
    assert arrays["collaborative"].tolist()[::2] == [1.0, 0.0]
    assert arrays["recent_track_uris"].tolist() == [["a", "b"], ["", ""], ["c", ""]]
    with pytest.raises(KeyError, match="`num_tracks` is missing"):
        to_tensors({"name": ["x"]}, inputs)


def test_preprocessing_maps_nulls_to_the_mean_and_logs_heavy_tails():
    inputs = [classify("followers", Int64, "followers"), classify("tempo", Float64, "tempo"),
              classify("track_uri", String, "track_uri")]
    lookups = {"track": id_lookup(id_vocabulary([np.array(["a", "b", "a", ""], dtype=object)], 1), 2, "track")}
    pre = FeaturePreprocessor(inputs, lookups)
    followers = np.array([0, 1, 2, 3, 5, 8, 10, 4, 6, 100_000], dtype=np.float64)
    tempo = np.linspace(90, 130, 10)
    pre.adapt({"followers": followers, "tempo": tempo})
    transforms = pre.numeric_transforms()
    assert transforms["followers"]["log"] and not transforms["tempo"]["log"]
    out = pre({"followers": tf.constant([np.nan, 3.0]), "tempo": tf.constant([np.nan, 110.0]),
               "track_uri": tf.constant(["a", "never-seen"])})
    numeric = out["numeric"].numpy()
    assert numeric[0].tolist() == [0.0, 0.0]  # nulls sit at the mean
    assert numeric[1, 1] == pytest.approx(0.0, abs=1e-6)  # 110 is tempo's mean
    ids = out["track_uri"].numpy()
    assert ids[0] == 3  # 0 padding, 1-2 OOV buckets, then "a" (most frequent)
    assert 1 <= ids[1] <= 2


def test_masked_mean_pooling_ignores_padding():
    embeddings = tf.constant([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [9.0, 9.0], [7.0, 7.0]]])
    ids = tf.constant([[4, 7, 0], [0, 0, 0]])
    pooled = MaskedMeanPooling()(embeddings, ids).numpy()
    assert pooled.tolist() == [[2.0, 3.0], [0.0, 0.0]]


def test_id_sequence_pooling_gives_the_mean_and_a_recency_weighted_mean():
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    embedding = tf.keras.layers.Embedding(10, 2, embeddings_initializer=tf.constant_initializer(table))
    pooling = IdSequencePooling(embedding, initial_rate=0.5)
    ids = tf.constant([[1, 2, 3, 0], [4, 0, 0, 0], [0, 0, 0, 0]], tf.int64)
    out = pooling(ids).numpy()
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out[:, :2], [table[[1, 2, 3]].mean(0), table[4], [0, 0]], rtol=1e-6)
    weights = np.exp(-0.5 * np.array([2.0, 1.0, 0.0]))  # the newest (id 3) weighs most
    np.testing.assert_allclose(out[0, 2:], weights @ table[[1, 2, 3]] / weights.sum(), rtol=1e-5)
    np.testing.assert_allclose(out[1:, 2:], [table[4], [0, 0]], rtol=1e-6)
    # The decay is learned: the loss reaches the rate through the recency half.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(pooling(ids)[:, 2:])
    grads = tape.gradient(loss, pooling.trainable_weights)
    assert all(g is not None for g in grads) and len(pooling.trainable_weights) == 2


def test_chance_loss_is_the_loss_of_equal_scores():
    """The collapse yardstick equals TFRS's own loss when every candidate scores alike."""
    task = tfrs.tasks.Retrieval(loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))
    q, c = tf.ones([4, 3]), tf.ones([6, 3])  # 4 queries, 2 extra negatives
    p = tf.constant([0.1, 0.2, 0.3, 0.05, 0.01, 0.01])
    assert float(chance_loss(p, 4, 6)) == pytest.approx(float(task(q, c, candidate_sampling_probability=p)), rel=1e-5)
    assert float(chance_loss(None, 4, 6)) == pytest.approx(math.log(6))


def test_collapse_guard_fires_on_chance_loss_and_on_collapsed_embeddings():
    guard = CollapseGuard(warmup_steps=2)
    guard.on_train_batch_end(0)
    guard.on_epoch_end(0, {"loss": 5.0, "chance_loss": 5.0})  # before warmup: silent
    guard.on_train_batch_end(1)
    guard.on_epoch_end(1, {"loss": 2.0, "chance_loss": 5.0, "candidate_cosine": 0.3})  # learning
    with pytest.raises(TrainingCollapsed, match="chance level"):
        guard.on_epoch_end(2, {"loss": 4.99, "chance_loss": 5.0})
    with pytest.raises(TrainingCollapsed, match="collapsed"):
        guard.on_epoch_end(3, {"loss": 1.0, "chance_loss": 5.0, "candidate_cosine": 0.95})
    same = np.tile([[0.6, 0.8]], (5, 1))
    assert mean_pairwise_cosine(same) == pytest.approx(1.0)
    assert mean_pairwise_cosine(np.eye(4)) == pytest.approx(0.0)


def test_progress_lines_come_inside_an_epoch_at_most_once_per_interval(caplog):
    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((32, 2), np.float32), np.zeros((32, 1), np.float32)
    with caplog.at_level("INFO", logger="segue.training.callbacks"):
        model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                  callbacks=[ProgressLog(4, 8, every_s=0), ProgressLog(4, 8, every_s=3600)])
    lines = [r for r in caplog.records if r.getMessage() == "training progress"]
    assert [(r.epoch, r.step) for r in lines] == [(e, s) for e in (1, 2) for s in (1, 2, 3, 4)]
    assert lines[-1].epoch_eta_s == 0 and lines[0].steps == 4 and lines[0].examples_per_s > 0


def test_training_batches_are_full_and_reshuffled_each_epoch():
    n = 64
    ids = np.arange(n, dtype=np.int64)
    query, candidate = {"x": ids.astype(np.float32)}, {"y": ids}
    ds = training_dataset(query, candidate, ids, np.full(n, 1 / n, np.float32), batch_size=16, seed=1)
    assert query == {} and candidate == {}  # handed over: the encoded split is not held twice
    epochs = [np.concatenate([b["candidate_id"].numpy() for b in ds]) for _ in range(2)]
    for order in epochs:
        assert sorted(order.tolist()) == ids.tolist()  # each example once per epoch
    assert epochs[0].tolist() != epochs[1].tolist()
    batch = next(iter(ds))
    assert batch["query"]["x"].numpy().tolist() == batch["candidate_id"].numpy().astype(np.float32).tolist()
    with pytest.raises(ValueError, match="do not fill one batch"):
        training_dataset({"x": ids}, {"y": ids}, ids, ids, batch_size=128, seed=1)


def test_ragged_query_rows_come_back_as_their_padded_rows():
    """An id sequence stored without its padding gives each batch the same rows, padded to the
    batch's longest (the pooling ignores the padding, so the width is free)."""
    rng = np.random.default_rng(3)
    n, width = 96, 40
    lengths = rng.integers(0, width + 1, n)
    padded = np.zeros((n, width), np.int32)
    for row, length in enumerate(lengths):
        padded[row, :length] = rng.integers(1, 1000, length)
    ids = np.arange(n, dtype=np.int64)
    query_index = rng.integers(0, n, n)  # several examples share a query row, as positions do
    # Built in chunks, as training encodes them: the row splits must join across the chunks.
    stored = RaggedIds.concatenate([RaggedIds.from_padded(padded[:50]),
                                    RaggedIds.from_padded(padded[50:, :lengths[50:].max()])])
    assert len(stored) == n
    ds = training_dataset({"seq": stored}, {"y": ids}, ids, np.full(n, 1 / n, np.float32), batch_size=32,
                          seed=2, query_index=query_index)
    for batch in ds:
        rows = query_index[batch["candidate_id"].numpy()]
        got = batch["query"]["seq"].numpy()
        assert got.shape[1] == lengths[rows].max()
        assert (got == padded[rows, :got.shape[1]]).all()
        assert not padded[rows, got.shape[1]:].any()


def _toy_tower():
    inputs = [classify("track_uri", String, "track_uri"), classify("track_name", String, "track_name"),
              classify("artist_genres", Array(String), "artist_genres"), classify("tempo", Float64, "tempo")]
    raw = {"track_uri": np.array(["a", "b", "c", "a"], dtype=object),
           "track_name": np.array(["One Love", "Two Hearts", "", "One Love"], dtype=object),
           "artist_genres": np.array([["reggae", ""], ["pop", "dance pop"], ["", ""], ["reggae", ""]], dtype=object),
           "tempo": np.array([70.0, 120.0, np.nan, 71.0])}
    lookups = {"track": id_lookup(id_vocabulary([raw["track_uri"]], 1), 2, "track")}
    pre = FeaturePreprocessor(inputs, lookups, text_max_tokens=100)
    pre.adapt(raw)
    emb = {"track": tf.keras.layers.Embedding(lookups["track"].vocabulary_size(), 4)}
    text = {i.name: pre.text_vocabulary_size(i.name) for i in inputs if i.encoding == TEXT}
    tower = TrackCandidateTower(inputs, emb, text, has_numeric=True, embedding_dim=8, layers=[16], cross="parallel")
    return pre, tower


def test_exported_tower_reloads_with_identical_embeddings(tmp_path):
    pre, tower = _toy_tower()
    online = {"track_uri": ["a", "zzz", "c"], "track_name": ["One Love", None, "x"],
              "artist_genres": [["reggae"], None, ["pop", "dance pop", "rock"]], "tempo": [70.0, None, 99.0],
              "popularity": [1, 2, 3]}  # Feast may return more than the tower reads
    in_memory = EmbeddingPipeline(pre, tower)({k: tf.constant(v) for k, v in to_tensors(online, pre.inputs).items()})
    export_tower(tmp_path / "candidate", pre, tower)
    reloaded = load_tower(tmp_path / "candidate")
    assert sorted(reloaded.feature_names) == sorted(i.name for i in pre.inputs)
    again = reloaded.embed(online)
    np.testing.assert_allclose(again, in_memory.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(again, axis=1), 1.0, atol=1e-5)


def test_baselines_rank_by_hand_worked_counts():
    entries = pd.DataFrame({"pid": [1, 1, 1, 2, 2, 3, 3, 4],
                            "track_uri": ["a", "b", "c", "a", "b", "a", "d", "d"]})
    history = TrainingHistory(entries)
    # a: 3 playlists, b: 2, d: 2, c: 1
    assert popularity_rankings(history, [["a"]], k=2) == [["b", "d"]]
    # Seed a co-occurs with b twice (p1, p2), with c and d once; ties broken by popularity (d > c).
    assert cooccurrence_rankings(history, [["a"], []], k=3) == [["b", "d", "c"], ["a", "b", "d"]]


def test_mixed_and_hard_negatives_join_the_softmax():
    from segue.training.model import TwoTowerModel

    pre, candidate_tower = _toy_tower()
    _, query_tower = _toy_tower()
    raw = to_tensors({"track_uri": ["a", "b", "c", "a"], "track_name": ["One Love", "x", "", "y"],
                      "artist_genres": [["reggae"], [], ["pop"], []], "tempo": [1.0, 2.0, 3.0, 4.0]}, pre.inputs)
    encoded = pre({k: tf.constant(v) for k, v in raw.items()})
    pool = {**{k: v[:3] for k, v in encoded.items()}, "candidate_id": tf.constant([1, 2, 3], tf.int64)}
    batch = {"query": encoded, "candidate": encoded, "candidate_id": tf.constant([1, 2, 3, 1], tf.int64),
             "candidate_sampling_probability": tf.constant([0.4, 0.2, 0.2, 0.4])}
    model = TwoTowerModel(query_tower, candidate_tower, logq_correction=False, mixed_negatives=5,
                          negative_pool=pool, hard_negatives=2)
    loss = float(model.compute_loss(batch, training=True))
    assert np.isfinite(loss) and loss > 0
    assert float(model.chance_loss.result()) == pytest.approx(math.log(4 + 5))  # 4 in-batch + 5 mixed
    with pytest.raises(ValueError, match="needs a `negative_pool`"):
        TwoTowerModel(query_tower, candidate_tower, mixed_negatives=5)


def test_python_lists_and_arrow_columns_convert_alike():
    """Feast's online dict (Python lists) and Parquet (Arrow) take two paths to the same arrays."""
    import pyarrow as pa

    inputs = [classify("name", String, "name"), classify("num_tracks", Int64, "num_tracks"),
              classify("collaborative", Bool, "collaborative"),
              classify("recent_track_uris", Array(String), "recent_track_uris")]
    values = {"name": ["a", None, ""], "num_tracks": [3, None, 0], "collaborative": [None, True, False],
              "recent_track_uris": [["x", "y", "z"], None, []]}
    from_lists = to_tensors(values, inputs)
    from_arrow = to_tensors({k: pa.array(v) for k, v in values.items()}, inputs)
    for name in values:
        np.testing.assert_array_equal(from_lists[name], from_arrow[name])


def test_features_empty_in_training_still_encode():
    """Without metadata every genre list is empty: the tower still builds and embeds."""
    inputs = [classify("artist_genres", Array(String), "artist_genres"), classify("album_uri", String, "album_uri")]
    lookups = {"album": id_lookup(id_vocabulary([np.array(["", ""], dtype=object)], 1), 2, "album")}
    pre = FeaturePreprocessor(inputs, lookups)
    pre.adapt({"artist_genres": np.array([["", ""], ["", ""]], dtype=object)})
    out = pre({"artist_genres": tf.constant([["rock", ""]]), "album_uri": tf.constant(["spotify:album:x"])})
    assert out["artist_genres"].numpy()[0, 0] == 1  # out of vocabulary
    assert 1 <= out["album_uri"].numpy()[0] <= 2


def test_model_versions_resolve_load_once_and_keep_a_bounded_cache(tmp_path):
    from segue.training.model_versions import ModelNotFound, ModelVersions

    pre, tower = _toy_tower()
    for name in ("v1", "v2", "v3"):
        export_tower(tmp_path / name / "query", pre, tower)
        export_tower(tmp_path / name / "candidate", pre, tower)
        (tmp_path / name / "manifest.json").write_text(json.dumps({"version": name}))
    versions = ModelVersions(tmp_path, cache_size=2)
    with pytest.raises(ModelNotFound, match="segue train"):
        versions.resolve()  # no `latest` yet
    versions.publish_latest("v2")
    assert versions.resolve().name == "v2" and versions.names() == ["v1", "v2", "v3"]
    with pytest.raises(ModelNotFound, match="v1, v2, v3"):
        versions.resolve("v9")
    first = versions.query_tower("v1")
    assert versions.query_tower("v1") is first  # loaded once
    assert versions.query_tower(tmp_path / "v1") is first  # a folder names the same version
    assert versions.ranker("v1") is None  # trained without the ranking stage
    versions.candidate_tower("latest"), versions.candidate_tower("v3")
    assert versions.query_tower("v1") is not first  # evicted: only two versions stay loaded


def test_a_split_keeps_each_query_position_once_across_its_files(tmp_path):
    """Labels of one position may sit in different files: each position's lists are read once, from
    its first row, and every example points at its own position's lists. Inputs are read a file at
    a time: whole, by query row in any order, or sampled evenly."""
    from datetime import datetime, timezone

    import pyarrow as pa
    import pyarrow.parquet as pq

    from segue.training.data import Examples, encode_chunks
    from segue.training.feature_inputs import TowerInput

    seq = TowerInput("track_uris", ID_SEQUENCE, "snap__track_uris", vocabulary="track", is_list=True)
    track = TowerInput("track_uri", ID, "track_uri", vocabulary="track")
    at = datetime(2017, 1, 1, tzinfo=timezone.utc)

    def part(rows):  # (pid, pos, label, playlist so far)
        return pa.table({"pid": [r[0] for r in rows], "pos": [r[1] for r in rows], "track_uri": [r[2] for r in rows],
                         "snap__track_uris": [r[3] for r in rows], "candidate_sampling_probability": [0.5] * len(rows),
                         "added_at": [at] * len(rows)})

    (tmp_path / "train").mkdir()
    pq.write_table(part([(1, 2, "c", ["a", "b"]), (7, 1, "y", ["x"])]), tmp_path / "train" / "part-0.parquet")
    pq.write_table(part([(7, 1, "z", ["x"]), (1, 2, "d", ["a", "b"]), (1, 3, "d", ["a", "b", "c"])]),
                   tmp_path / "train" / "part-1.parquet")
    examples = Examples.read(tmp_path, "train", [seq], [track])
    assert examples.query_rows == 3 and len(examples) == 5
    lists = [row for t in examples.query_parts() for row in t.column("snap__track_uris").to_pylist()]
    assert [lists[i] for i in examples.query_index] == [["a", "b"], ["x"], ["x"], ["a", "b"], ["a", "b", "c"]]
    assert list(examples.track_uri) == ["c", "y", "z", "d", "d"]
    vocabulary = id_vocabulary([*examples.query_column(seq), *examples.candidate_column(track)], 1)
    assert vocabulary == ["a", "b", "c", "d", "x", "y", "z"]  # by count, ties in order of first sight
    lookups = {"track": id_lookup(vocabulary, 2, "track")}
    preprocessor, candidate = FeaturePreprocessor([seq], lookups), FeaturePreprocessor([track], lookups)
    encoded = encode_chunks(preprocessor, examples.query_chunks(size=2))
    assert encoded["track_uris"].shape == (3, 3) and (encoded["track_uris"][:2, 2] == 0).all()  # padded across chunks
    picked = encode_chunks(preprocessor, examples.query_chunks(np.array([2, 0, 2, 1])))["track_uris"]
    assert (picked == encoded["track_uris"][[2, 0, 2, 1]]).all()
    assert list(encode_chunks(candidate, examples.candidate_chunks(size=2))["track_uri"]) == [5, 8, 9, 6, 6]
    assert list(examples.candidate_tensors(limit=2)["track_uri"]) == ["c", "d"]  # every 3rd of 5, across files
