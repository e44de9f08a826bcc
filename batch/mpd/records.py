"""MPD records as published, plus the metadata files Segue adds.

These TypedDicts are the one definition of the format: the strict reader validates against them
and the Spark ingest derives its read schema from them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from typing_extensions import NotRequired, TypedDict

from pydantic import Field

from segue.vocabulary import AlbumUri, ArtistUri, TrackUri

NonNegative = Annotated[int, Field(ge=0)]


class TrackEntry(TypedDict):
    pos: NonNegative
    track_name: str
    track_uri: TrackUri
    artist_name: str
    artist_uri: ArtistUri
    album_name: str
    album_uri: AlbumUri
    duration_ms: int


class Playlist(TypedDict):
    pid: NonNegative
    name: str
    description: NotRequired[str]
    modified_at: int
    num_artists: int
    num_albums: int
    num_tracks: int
    num_followers: int
    num_edits: int
    duration_ms: int
    collaborative: Literal["true", "false"]
    tracks: list[TrackEntry]


class SliceInfo(TypedDict):
    slice: str
    version: str
    generated_on: NotRequired[str]
    description: NotRequired[str]
    license: NotRequired[str]


class ChallengePlaylist(TypedDict):
    pid: NonNegative
    name: NotRequired[str]
    num_holdouts: NonNegative
    num_samples: NonNegative
    num_tracks: NonNegative
    tracks: list[TrackEntry]


# Metadata from the (now closed) Spotify Web API, one JSON object per line.
class TrackMetadata(TypedDict):
    track_uri: TrackUri
    popularity: int
    explicit: bool
    release_date: str
    danceability: float
    energy: float
    speechiness: float
    acousticness: float
    instrumentalness: float
    liveness: float
    valence: float
    loudness: float
    tempo: float
    key: int
    mode: int
    time_signature: int


class ArtistMetadata(TypedDict):
    artist_uri: ArtistUri
    genres: list[str]
    popularity: int
    followers: int
