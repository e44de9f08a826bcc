"""Filter expressions: fuzzed inputs either fail validation or become expressions a real Milvus
(Lite) parses and honours; nothing a client sends can change an expression's structure."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pymilvus import MilvusClient

from segue.indexing.track_collection import track_rows, track_schema
from segue.indexing.track_index import Hit, TrackIndex
from segue.indexing.profiles import resolve_profile
from segue.serving.api_models import Filters, RecommendationRequest
from segue.serving.search_filters import diversify, search_expression

ALNUM = string.ascii_letters + string.digits
DIM = 8
N = 60


def uri(kind: str, i: int) -> str:
    return f"spotify:{kind}:{i:022d}"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    client = MilvusClient(str(tmp_path_factory.mktemp("filters") / "milvus.db"))
    client.create_collection("tracks_test", schema=track_schema(DIM))
    index_params = client.prepare_index_params()
    index_params.add_index("embedding", index_type="FLAT", metric_type="IP")
    client.create_index("tracks_test", index_params)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    features = {"artist_uri": [uri("artist", i % 7) for i in range(N)],
                "explicit": [[True, False, None][i % 3] for i in range(N)],
                "release_year": [None if i % 11 == 0 else 1990 + i % 30 for i in range(N)]}
    client.insert("tracks_test", track_rows([uri("track", i) for i in range(N)], features, vectors, [0] * N, "rebuild"))
    client.load_collection("tracks_test")
    return TrackIndex(client, "tracks_test", resolve_profile("embedded")), features


def test_injection_attempts_fail_validation():
    for bad in ['spotify:artist:" or 1==1 or "', "spotify:artist:abc", 'x" || true', "spotify:artist:" + "a" * 21 + '"']:
        with pytest.raises(ValidationError, match="should match pattern"):
            Filters(exclude_artists=[bad])
        with pytest.raises(ValidationError, match="should match pattern"):
            RecommendationRequest(track_uris=[bad.replace("artist", "track")])
    # A value that skipped validation is still refused where the expression is built.
    with pytest.raises(ValueError, match="not a Spotify"):
        search_expression(Filters.model_construct(exclude_explicit=False, exclude_artists=['a" or "1'],
                                                  released_after=None, max_per_artist=None))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(artists=st.lists(st.one_of(st.text(max_size=40), st.text(ALNUM, min_size=22, max_size=22).map(
           lambda s: "spotify:artist:" + s)), max_size=4),
       explicit=st.booleans(), year=st.one_of(st.none(), st.integers(-10**6, 10**6)))
def test_fuzzed_filters_are_refused_or_parse(artists, explicit, year):
    try:
        filters = Filters(exclude_artists=artists, exclude_explicit=explicit, released_after=year)
    except ValidationError:
        return
    expression = search_expression(filters, [uri("track", 1)])
    # Every value sits inside one JSON string literal or is an integer: the structure is fixed.
    for artist in filters.exclude_artists:
        assert json.dumps(artist) in expression


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(excluded=st.lists(st.integers(0, 6), max_size=3), explicit=st.booleans(),
       year=st.one_of(st.none(), st.integers(1985, 2025)), seeds=st.lists(st.integers(0, N - 1), max_size=5))
def test_milvus_honours_every_expression(index, excluded, explicit, year, seeds):
    track_index, features = index
    filters = Filters(exclude_artists=[uri("artist", a) for a in excluded], exclude_explicit=explicit,
                      released_after=year)
    expression = search_expression(filters, [uri("track", s) for s in seeds])
    hits = track_index.search(np.ones((1, DIM), np.float32), N, filter=expression,
                              output_fields=["artist_uri", "explicit", "release_year"])[0]
    expected = {uri("track", i) for i in range(N)
                if i not in seeds and features["artist_uri"][i] not in filters.exclude_artists
                and not (explicit and features["explicit"][i] is True)
                and (year is None or (features["release_year"][i] or -1) > year)}
    assert {h.track_uri for h in hits} == expected


def test_diversify_keeps_order_and_caps_each_artist():
    hits = [Hit(f"t{i}", 1 - i / 10, {"artist_uri": "a" if i < 5 else "b"}) for i in range(8)]
    assert [h.track_uri for h in diversify(hits, 4, 2)] == ["t0", "t1", "t5", "t6"]
    assert [h.track_uri for h in diversify(hits, 3, None)] == ["t0", "t1", "t2"]
