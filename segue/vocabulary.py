"""The domain's shared words: Spotify URIs, the Feast feature services, the challenge categories.

Every stage imports these from here, so that a URI is well formed by one rule and a service is
named once; the Feast definitions (`feature_repo/definitions.py`) register the services by these
names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import StringConstraints

URI_KINDS = ("track", "artist", "album")


def uri_pattern(kind: str) -> str:
    """The regex of a well-formed `spotify:<kind>:<22 base-62 characters>` URI."""
    if kind not in URI_KINDS:
        raise ValueError(f"unknown URI kind {kind!r}; one of {URI_KINDS}")
    return rf"^spotify:{kind}:[0-9A-Za-z]{{22}}$"


URI_PATTERNS = {f"{kind}_uri": uri_pattern(kind) for kind in URI_KINDS}  # by column name
TrackUri = Annotated[str, StringConstraints(pattern=uri_pattern("track"))]
ArtistUri = Annotated[str, StringConstraints(pattern=uri_pattern("artist"))]
AlbumUri = Annotated[str, StringConstraints(pattern=uri_pattern("album"))]
PROBE_TRACK_URI = "spotify:track:" + "0" * 22  # well formed, never a real track: health probes read it

# Feast feature services: what the query tower, the candidate tower and the neighbour source read.
PLAYLIST_SERVICE = "playlist_query_v1"
TRACK_SERVICE = "track_candidate_v1"
NEIGHBOUR_SERVICE = "track_neighbours_v1"
PLAYLIST_KEY, TRACK_KEY = "pid", "track_uri"
# Playlists holding a track in the co-occurrence window: the ranker's popularity fact. The index
# carries a copy (`window_playlists`) so that serving gets it with each hit.
WINDOW_PLAYLISTS_FEATURE = "track_neighbours:playlists"


@dataclass(frozen=True)
class Category:
    """One of the ten RecSys Challenge 2018 categories."""

    name: str
    seeds: int
    titled: bool
    random_seeds: bool
    min_tracks: int  # playlists with many seeds are long, so there is something left to predict


CATEGORIES = (
    Category("title_only", 0, True, False, 10),
    Category("title_first_1", 1, True, False, 10),
    Category("title_first_5", 5, True, False, 10),
    Category("first_5_no_title", 5, False, False, 10),
    Category("title_first_10", 10, True, False, 20),
    Category("first_10_no_title", 10, False, False, 20),
    Category("title_first_25", 25, True, False, 50),
    Category("title_random_25", 25, True, True, 50),
    Category("title_first_100", 100, True, False, 150),
    Category("title_random_100", 100, True, True, 150),
)
