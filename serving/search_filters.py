"""Milvus filter expressions built from validated requests, and the diversity rule after the search.

Only typed values reach an expression: URIs that matched `spotify:<kind>:<22 letters or digits>`
(serialized by `json.dumps`, so even a looser pattern could not close the quote) and integers.
Field names are constants of the collection schema, never taken from a request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from segue.indexing.track_collection import KEY
from segue.indexing.track_index import Hit
from segue.serving.api_models import Filters
from segue.vocabulary import uri_pattern

_URI = re.compile(f"{uri_pattern('track')}|{uri_pattern('artist')}")


def _uri_list(uris: Sequence[str]) -> str:
    for uri in uris:
        if not _URI.fullmatch(uri):  # the request models already refused it; never trust one layer
            raise ValueError(f"not a Spotify track or artist URI: {uri[:80]!r}")
    return json.dumps(sorted(set(uris)))


def search_expression(filters: Filters, exclude_tracks: Sequence[str] = ()) -> str:
    """The `filter` of a Milvus search: seeds and business rules, joined with `and`."""
    terms = []
    if exclude_tracks:
        terms.append(f"{KEY} not in {_uri_list(exclude_tracks)}")
    if filters.exclude_explicit:
        terms.append("explicit != 1")
    if filters.exclude_artists:
        terms.append(f"artist_uri not in {_uri_list(filters.exclude_artists)}")
    if filters.released_after is not None:
        terms.append(f"release_year > {int(filters.released_after)}")
    return " and ".join(terms)


def candidates_to_fetch(k: int, filters: Filters, overfetch: int, cap: int) -> int:
    """Hits to ask for: k, or more when diversity will drop some after the search."""
    return min(cap, k * overfetch if filters.max_per_artist else k)


def diversify(hits: Sequence[Hit], k: int, max_per_artist: int | None) -> list[Hit]:
    """The first k hits, at most `max_per_artist` of any one artist (unknown artists each count alone)."""
    if not max_per_artist:
        return list(hits[:k])
    kept, per_artist = [], {}
    for hit in hits:
        artist = hit.fields.get("artist_uri") or hit.track_uri
        if per_artist.get(artist, 0) < max_per_artist:
            per_artist[artist] = per_artist.get(artist, 0) + 1
            kept.append(hit)
            if len(kept) == k:
                break
    return kept
