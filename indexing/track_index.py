"""Searching the serving alias: vectors, a track's neighbours, the build's model version."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymilvus import MilvusClient

from segue.indexing.profiles import IndexProfile
from segue.indexing.track_collection import KEY, VECTOR, collection_info, hit_uri, live_collection


@dataclass
class Hit:
    track_uri: str
    score: float
    fields: dict[str, Any]


class TrackIndex:
    """The collection behind `alias`: its model version, searches, and a track's neighbours."""

    def __init__(self, client: MilvusClient, alias: str, profile: IndexProfile):
        self.client, self.alias, self.profile = client, alias, profile
        self._loaded: set[str] = set()

    @property
    def collection(self) -> str:
        live = live_collection(self.client, self.alias)
        if live is None:
            raise LookupError(f"alias {self.alias!r} serves no collection yet: run `segue index rebuild`")
        if live not in self._loaded:  # Milvus Lite releases collections when its process ends
            self.client.load_collection(live)
            self._loaded.add(live)
        return live

    @property
    def model_version(self) -> str:
        return collection_info(self.client, self.collection).model_version

    def search(self, vectors: np.ndarray, limit: int, filter: str = "", output_fields: Sequence[str] = (),
               consistency_level: str = "Bounded", collection: str | None = None,
               timeout: float | None = None) -> list[list[Hit]]:
        """Top-`limit` tracks per query vector. `Strong` also sees upserts of the last moments.

        `collection` searches one build instead of the alias: serving pins the build whose model
        version matches its query tower, so an alias swap mid-request cannot mix the two.
        """
        results = self.client.search(collection or self.alias, data=np.asarray(vectors, np.float32).tolist(),
                                     limit=limit, filter=filter, output_fields=[KEY, *output_fields],
                                     search_params=self.profile.search_request(limit),
                                     consistency_level=consistency_level, timeout=timeout)
        return [[Hit(hit_uri(h), float(h["distance"]),
                     {k: v for k, v in h["entity"].items() if k != KEY}) for h in row] for row in results]

    def vectors(self, track_uris: Sequence[str], collection: str | None = None,
                timeout: float | None = None) -> dict[str, np.ndarray]:
        rows = self.client.query(collection or self.alias, filter=f"{KEY} in {json.dumps(list(track_uris))}",
                                 output_fields=[KEY, VECTOR], timeout=timeout)
        return {r[KEY]: np.asarray(r[VECTOR], np.float32) for r in rows}

    def entities(self, track_uris: Sequence[str], filter: str = "", output_fields: Sequence[str] = (),
                 collection: str | None = None, timeout: float | None = None) -> dict[str, Hit]:
        """The listed tracks that pass `filter`, with their vector (in `fields["vector"]`) and fields;
        `score` is 0 (no query)."""
        if not track_uris:
            return {}
        expression = f"{KEY} in {json.dumps(list(track_uris))}" + (f" and ({filter})" if filter else "")
        rows = self.client.query(collection or self.alias, filter=expression,
                                 output_fields=[KEY, VECTOR, *output_fields], timeout=timeout)
        return {r[KEY]: Hit(r[KEY], 0.0, {k: (np.asarray(v, np.float32) if k == VECTOR else v)
                                          for k, v in r.items() if k != KEY}) for r in rows}

    def score(self, vector: np.ndarray, track_uris: Sequence[str], filter: str = "",
              output_fields: Sequence[str] = (), collection: str | None = None,
              timeout: float | None = None) -> dict[str, Hit]:
        """The listed tracks that pass `filter`, each with its score against `vector`.

        One search restricted to the listed keys: with so selective a filter Milvus scans the listed
        rows instead of walking the graph (it switches to brute force when over 93% of a segment is
        filtered out), and it returns scores rather than vectors (0.6x the time of fetching the
        vectors by key, 100 of 100k tracks, `bench_candidate_search.py`). Without a `filter`, a track
        the search did not return is fetched by key and scored here, so none is lost to a graph
        walk in a small segment; with one, it is taken as filtered out.
        """
        if not track_uris:
            return {}
        expression = f"{KEY} in {json.dumps(list(track_uris))}" + (f" and ({filter})" if filter else "")
        scored = {h.track_uri: h for h in self.search(vector, len(track_uris), expression, output_fields,
                                                      collection=collection, timeout=timeout)[0]}
        missing = [] if filter else [u for u in track_uris if u not in scored]
        for uri, entity in self.entities(missing, "", output_fields, collection, timeout).items():
            embedding = entity.fields.pop(VECTOR)
            scored[uri] = Hit(uri, float(embedding @ np.ravel(vector)), entity.fields)
        return scored

    def nearest_tracks(self, track_uri: str, limit: int = 10, output_fields: Sequence[str] = ()) -> list[Hit]:
        """The tracks whose embeddings are closest to `track_uri`'s, without the track itself."""
        self.collection  # noqa: B018 - resolves the alias and loads its collection
        vector = self.vectors([track_uri]).get(track_uri)
        if vector is None:
            raise KeyError(f"{track_uri} is not in the index {self.alias!r}")
        hits = self.search(vector[None, :], limit + 1, output_fields=output_fields)[0]
        return [h for h in hits if h.track_uri != track_uri][:limit]
