"""The serving path: playlist features -> query tower -> candidates -> ranking -> diversity -> k.

Candidates come from the ANN search (business filters inside it) and, when the model version has
the ranking stage, from the co-occurrence neighbours of the playlist's newest tracks (read from
Feast, filtered by the same rules in Milvus). The ranker orders the merge; retrieval only orders it
by reciprocal-rank fusion. Merge and ranker features are `segue.ranking`'s, the code evaluation runs.

Every blocking call (Feast, TensorFlow, Milvus) runs on the recommender's thread pool under a time
limit, so a stalled dependency costs a request its limit and a 503, never a hang.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
from feast import FeatureStore
from pymilvus.exceptions import MilvusException
from redis.exceptions import RedisError

from segue.features.online import OnlineFeatureReader
from segue.features.playlist_features import playlist_query_features
from segue.indexing.track_collection import UNKNOWN, WINDOW_PLAYLISTS
from segue.indexing.track_index import Hit, TrackIndex
from segue.ranking.candidates import (
    CandidateSet, NeighbourList, artist_shares, merge_candidates, neighbour_candidates, seeds_to_read)
from segue.ranking.ranker_features import ranker_features
from segue.serving.api_metrics import ServingMetrics
from segue.serving.api_models import (
    Filters, IndexVersion, RecommendationRequest, RecommendationResponse, SimilarTracksResponse, Track)
from segue.serving.search_filters import candidates_to_fetch, diversify, search_expression
from segue.serving.serving_target import ServingTarget, ServingTargets
from segue.settings import CandidateSettings, FeatureSettings, RankerSettings, ServeSettings
from segue.vocabulary import (
    NEIGHBOUR_SERVICE, PLAYLIST_SERVICE, PROBE_TRACK_URI, TRACK_SERVICE, WINDOW_PLAYLISTS_FEATURE)

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")
# What a cold playlist needs of its seed tracks, and what a result shows: one online read each,
# of only those features (a read's cost grows with features x tracks).
SEED_FIELDS = ("artist_uri", "album_uri", "duration_ms")
RESULT_FIELDS = ("track_name", "artist_name", "album_name")
HIT_FIELDS = ["artist_uri", "explicit", "popularity", "release_year"]
# A seed's neighbours and artist: one read for the seeds of a request.
NEIGHBOUR_FIELDS = ["track_neighbours:neighbour_uris", "track_neighbours:neighbour_counts",
                    "track_features:artist_uri"]
_FEATURE_STORE_ERRORS = (RedisError, sqlite3.Error, OSError)
_MILVUS_ERRORS = (MilvusException, grpc.RpcError, OSError)


class DependencyUnavailable(RuntimeError):
    def __init__(self, dependency: str, detail: str):
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency, self.detail = dependency, detail


class PlaylistNotFound(LookupError):
    pass


class TrackNotFound(LookupError):
    pass


class RequestLimit(ValueError):
    """A request within the schema but beyond this deployment's configured limits."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass
class QueryFeatures:
    features: dict[str, list[Any]]
    source: str  # feature_store | request
    seeds: list[str]
    unknown: list[str]


class Recommender:
    def __init__(self, store: FeatureStore, index: TrackIndex, targets: ServingTargets, cfg: ServeSettings,
                 sequences: FeatureSettings, candidates: CandidateSettings, ranker: RankerSettings,
                 metrics: ServingMetrics):
        self.index, self.targets, self.cfg, self.sequences, self.metrics = index, targets, cfg, sequences, metrics
        self.candidates, self.ranker = candidates, ranker
        self.seed_neighbours = OnlineFeatureReader(store, NEIGHBOUR_SERVICE, "track_uri", only=NEIGHBOUR_FIELDS)
        self.popularity = OnlineFeatureReader(store, NEIGHBOUR_SERVICE, "track_uri", only=[WINDOW_PLAYLISTS_FEATURE])
        self.playlists = OnlineFeatureReader(store, PLAYLIST_SERVICE, "pid")
        self.seeds = OnlineFeatureReader(store, TRACK_SERVICE, "track_uri",
                                         only=[f"track_features:{f}" for f in SEED_FIELDS])
        self.names = OnlineFeatureReader(store, TRACK_SERVICE, "track_uri",
                                         only=[f"track_features:{f}" for f in RESULT_FIELDS])
        self.pool = ThreadPoolExecutor(cfg.threads, thread_name_prefix="segue-serve")

    def warm_up(self) -> None:
        """First calls pay for registry reads, connections and the tower's tracing: pay before traffic."""
        self.targets.refresh()
        try:
            self.playlists.read([0])
            self.seeds.read([PROBE_TRACK_URI])
            self.names.read([PROBE_TRACK_URI])
        except _FEATURE_STORE_ERRORS as e:  # serving starts anyway; requests will say 503 until it is back
            _LOGGER.warning("feature store not reachable at start", extra={"error": str(e)[:300]})
        try:
            self.seed_neighbours.read([PROBE_TRACK_URI])
            self.popularity.read([PROBE_TRACK_URI])
        except Exception as e:  # noqa: BLE001 - e.g. a registry applied before the view existed
            _LOGGER.warning("co-occurrence neighbours not readable: run `segue features apply` and "
                            "`segue batch neighbours`", extra={"error": str(e)[:300]})

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _call(self, stage: str, timings: dict[str, float], fn: Callable[[], T], dependency: str | None,
                    errors: tuple[type[BaseException], ...] = (), timeout: float | None = None) -> T:
        start = time.perf_counter()
        try:
            future = asyncio.get_running_loop().run_in_executor(self.pool, fn)
            return await (asyncio.wait_for(future, timeout) if timeout else future)
        except asyncio.TimeoutError:
            raise DependencyUnavailable(dependency, f"no answer within {timeout:g} s") from None
        except errors as e:
            raise DependencyUnavailable(dependency, f"{type(e).__name__}: {str(e)[:300]}") from e
        finally:
            seconds = time.perf_counter() - start
            timings[stage] = round(timings.get(stage, 0) + seconds * 1000, 3)
            self.metrics.stage_seconds.observe(seconds, stage)

    async def _features(self, stage: str, timings: dict[str, float], fn: Callable[[], T]) -> T:
        return await self._call(stage, timings, fn, "feature store", _FEATURE_STORE_ERRORS,
                                self.cfg.feature_timeout_s)

    async def _track_features(self, reader: OnlineFeatureReader, uris: Sequence[str], stage: str,
                              timings: dict[str, float]) -> dict[str, dict]:
        if not uris:
            return {}
        rows = await self._features(stage, timings, lambda: reader.read(list(uris)))
        return {r.key: r.features for r in rows if r.found}

    def check_limits(self, request: RecommendationRequest) -> None:
        cfg = self.cfg
        if request.k > cfg.max_k:
            raise RequestLimit("k", f"k={request.k} is above this server's limit of {cfg.max_k}")
        if len(request.track_uris) > cfg.max_track_uris:
            raise RequestLimit("track_uris", f"{len(request.track_uris)} track_uris, this server takes at most "
                                             f"{cfg.max_track_uris}")
        if len(request.filters.exclude_artists) > cfg.max_excluded_artists:
            raise RequestLimit("filters.exclude_artists", f"at most {cfg.max_excluded_artists} excluded artists")

    async def query_features(self, request: RecommendationRequest, timings: dict[str, float]) -> QueryFeatures:
        """The playlist's `playlist_query_v1` features: online when Feast knows it, else from the request."""
        if request.playlist_id is not None:
            row = (await self._features("playlist_features", timings,
                                        lambda: self.playlists.read([request.playlist_id])))[0]
            if row.found:
                # Every track already in the playlist is excluded, not only the recent ones.
                known = list(row.features.get("track_uris") or [])
                return QueryFeatures({n: [v] for n, v in row.features.items()}, "feature_store",
                                     list(dict.fromkeys([*known, *request.track_uris])), [])
            if not (request.name or "").strip() and not request.track_uris:
                raise PlaylistNotFound(f"playlist {request.playlist_id} has no features online and the request "
                                       "gives no name or track_uris to start from")
        tracks = await self._track_features(self.seeds, list(dict.fromkeys(request.track_uris)), "seed_tracks",
                                            timings)
        features = playlist_query_features((request.name or "").strip(), request.track_uris, tracks, self.sequences)
        return QueryFeatures(features, "request", list(dict.fromkeys(request.track_uris)),
                             sorted({u for u in request.track_uris if u not in tracks}))

    async def _search(self, target: ServingTarget, vector: np.ndarray, limit: int, expression: str,
                      timings: dict[str, float], fields: Sequence[str] = HIT_FIELDS) -> list[Hit]:
        def search() -> list[Hit]:
            return self.index.search(vector, limit, filter=expression, output_fields=fields,
                                     collection=target.collection, timeout=self.cfg.search_timeout_s)[0]

        return await self._call("search", timings, search, "Milvus", _MILVUS_ERRORS, self.cfg.search_timeout_s)

    async def _tower_search(self, target: ServingTarget, vector: np.ndarray, request_k: int, filters: Filters,
                      seeds: list[str], timings: dict[str, float]) -> list[Hit]:
        """Searches, widening the search while diversity leaves fewer than k and more hits exist."""
        expression = search_expression(filters, seeds)
        limit = candidates_to_fetch(request_k, filters, self.cfg.overfetch, self.cfg.max_candidates)
        while True:
            hits = await self._search(target, vector, limit, expression, timings)
            kept = diversify(hits, request_k, filters.max_per_artist)
            if len(kept) == request_k or len(hits) < limit or limit >= self.cfg.max_candidates:
                return kept
            limit = min(self.cfg.max_candidates, limit * 4)

    async def _neighbours(self, seeds: list[str], timings: dict[str, float]
                          ) -> tuple[list[str], dict[str, NeighbourList], list[str | None]]:
        """The newest seeds read, their neighbour lists, and their artists (None when unknown)."""
        read = seeds_to_read(seeds, self.candidates.seed_tracks)
        if not read:
            return read, {}, []
        rows = await self._features("neighbours", timings, lambda: self.seed_neighbours.read(read))
        lists = {r.key: NeighbourList(r.features["neighbour_uris"], r.features["neighbour_counts"])
                 for r in rows if r.found and r.features.get("neighbour_uris")}
        return read, lists, [r.features.get("artist_uri") if r.found else None for r in rows]

    async def _candidates(self, target: ServingTarget, vector: np.ndarray, request_k: int, filters: Filters,
                          seeds: list[str], timings: dict[str, float]) -> tuple[CandidateSet, list[Hit]]:
        """Both sources merged, business filters applied to each; every candidate's hit (fields and
        the cosine with the query)."""
        expression = search_expression(filters, seeds)
        limit = min(self.cfg.max_candidates, max(self.candidates.tower, candidates_to_fetch(
            request_k, filters, self.cfg.overfetch, self.cfg.max_candidates)))
        fields = [*HIT_FIELDS, WINDOW_PLAYLISTS] if target.carries_window_playlists else HIT_FIELDS
        tower = await self._search(target, vector, limit, expression, timings, fields)
        read, lists, seed_artists = await self._neighbours(seeds, timings)
        n_uris, n_counts, n_hits = neighbour_candidates(lists, set(seeds), self.candidates.neighbours)
        hits = {h.track_uri: h for h in tower}
        wanted = [u for u in n_uris if u not in hits]
        if wanted:  # never a seed: the business rules are the only filter left for them
            hits.update(await self._call("search", timings, lambda: self.index.score(
                vector, wanted, search_expression(filters), fields, collection=target.collection,
                timeout=self.cfg.search_timeout_s), "Milvus", _MILVUS_ERRORS, self.cfg.search_timeout_s))
        keep = [i for i, u in enumerate(n_uris) if u in hits]  # the rest failed a filter or is not indexed
        c = merge_candidates([h.track_uri for h in tower], [n_uris[i] for i in keep], n_counts[keep], n_hits[keep],
                             len(read))
        ordered_hits = [hits[u] for u in c.track_uri]
        c.tower_score = np.array([h.score for h in ordered_hits], np.float64)
        c.popularity = await self._window_playlists(c.track_uri, ordered_hits, timings)
        c.artist_share = artist_shares([h.fields.get("artist_uri") for h in ordered_hits], seed_artists)
        return c, ordered_hits

    async def _window_playlists(self, uris: Sequence[str], hits: Sequence[Hit], timings: dict[str, float]
                                ) -> np.ndarray:
        """The ranker's popularity fact per candidate: off the hit where the build carries it, else
        (a streamed track, a build from before the field) from Feast in one read."""
        carried = [h.fields.get(WINDOW_PLAYLISTS, UNKNOWN) for h in hits]
        unknown = [u for u, v in zip(uris, carried) if v is None or v == UNKNOWN]
        facts = await self._track_features(self.popularity, unknown, "candidate_facts", timings)
        name = WINDOW_PLAYLISTS_FEATURE.split(":")[1]
        return np.array([float(v) if v is not None and v != UNKNOWN else float((facts.get(u) or {}).get(name) or 0)
                         for u, v in zip(uris, carried)])

    async def _staged(self, target: ServingTarget, vector: np.ndarray, request: RecommendationRequest,
                      seeds: list[str], ranked: bool, timings: dict[str, float]) -> tuple[list[Hit], dict, str]:
        """Merged candidates in the ranker's order (or fusion's), then diversity; the hits, per track
        its sources and ranker score, and the order used."""
        c, hits = await self._candidates(target, vector, request.k, request.filters, seeds, timings)
        scores = None
        ranked = ranked and c.ranker_applies
        if ranked:
            scores = await self._call("ranker", timings, lambda: target.ranker.score(ranker_features(c)), None)
            order = np.argsort(-scores, kind="stable")
        else:
            order = c.fused_order()
        sources = c.sources()
        about = {c.track_uri[i]: (sources[i].split("+"), None if scores is None else round(float(scores[i]), 6))
                 for i in order}
        return (diversify([hits[i] for i in order], request.k, request.filters.max_per_artist), about,
                "ranker" if ranked else "fusion")

    async def _tracks(self, hits: Sequence[Hit], timings: dict[str, float],
                      about: dict[str, tuple[list[str], float | None]] | None = None) -> list[Track]:
        names = await self._track_features(self.names, [h.track_uri for h in hits], "metadata", timings)
        out = []
        for rank, hit in enumerate(hits, 1):
            meta, f = names.get(hit.track_uri, {}), hit.fields
            known = {n: (None if f.get(n) in (None, UNKNOWN) else f[n])
                     for n in ("explicit", "popularity", "release_year")}
            sources, ranker_score = (about or {}).get(hit.track_uri, (["tower"], None))
            out.append(Track(rank=rank, track_uri=hit.track_uri, score=round(hit.score, 6),
                             sources=sources, ranker_score=ranker_score,
                             track_name=meta.get("track_name"), artist_uri=f.get("artist_uri") or None,
                             artist_name=meta.get("artist_name"), album_name=meta.get("album_name"),
                             release_year=known["release_year"], popularity=known["popularity"],
                             explicit=None if known["explicit"] is None else bool(known["explicit"])))
        return out

    def _version(self, target: ServingTarget) -> IndexVersion:
        return IndexVersion(alias=self.targets.alias, collection=target.collection,
                            model_version=target.model_version)

    def ordering(self, target: ServingTarget, request: RecommendationRequest) -> str:
        """ranker, fusion (retrieval only), or tower for a version without the ranking stage."""
        if target.ranker is None or self.candidates.neighbours == 0:
            return "tower"
        wants_ranker = self.ranker.enabled if request.ranked is None else request.ranked
        return "ranker" if wants_ranker else "fusion"

    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        self.check_limits(request)
        timings: dict[str, float] = {}
        target = self.targets.current  # one build for the whole request
        query = await self.query_features(request, timings)
        vector = await self._call("query_tower", timings, lambda: target.query_tower.embed(query.features), None)
        ordering = self.ordering(target, request)
        if ordering == "tower":
            hits = await self._tower_search(target, vector, request.k, request.filters, query.seeds, timings)
            about = None
        else:
            hits, about, ordering = await self._staged(target, vector, request, query.seeds, ordering == "ranker",
                                                       timings)
        tracks = await self._tracks(hits, timings, about)
        if len(tracks) < request.k:
            self.metrics.partial.inc()
        return RecommendationResponse(
            playlist_id=request.playlist_id, query_features=query.source, k=request.k, returned=len(tracks),
            partial=len(tracks) < request.k, excluded_seeds=len(query.seeds), unknown_track_uris=query.unknown,
            ordering=ordering, tracks=tracks, index=self._version(target), timings_ms=timings)

    async def similar(self, track_uri: str, k: int) -> SimilarTracksResponse:
        if k > self.cfg.max_k:
            raise RequestLimit("k", f"k={k} is above this server's limit of {self.cfg.max_k}")
        timings: dict[str, float] = {}
        target = self.targets.current
        vectors = await self._call("search", timings, lambda: self.index.vectors(
            [track_uri], collection=target.collection, timeout=self.cfg.search_timeout_s), "Milvus",
            _MILVUS_ERRORS, self.cfg.search_timeout_s)
        if track_uri not in vectors:
            raise TrackNotFound(f"{track_uri} is not in the index {target.collection!r}")
        hits = await self._tower_search(target, vectors[track_uri][None, :], k, Filters(), [track_uri], timings)
        tracks = await self._tracks(hits, timings)
        return SimilarTracksResponse(track_uri=track_uri, k=k, returned=len(tracks), tracks=tracks,
                                     index=self._version(target))
