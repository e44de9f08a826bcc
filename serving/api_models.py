"""The API's request and response bodies: validated here, so nothing unchecked reaches Milvus."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from segue.vocabulary import ArtistUri, TrackUri

# The hard ceilings of the schema; `serve.max_k` and `serve.max_track_uris` may set lower ones.
MAX_K = 1000
MAX_TRACK_URIS = 10_000
MAX_EXCLUDED_ARTISTS = 10_000


class Filters(BaseModel):
    """Business rules applied inside the ANN search (as Milvus expressions) and after it."""

    model_config = ConfigDict(extra="forbid")

    exclude_explicit: bool = Field(False, description="Leave out tracks marked explicit")
    exclude_artists: list[ArtistUri] = Field(default_factory=list, max_length=MAX_EXCLUDED_ARTISTS,
                                             description="Leave out these artists' tracks")
    released_after: int | None = Field(None, ge=1000, le=3000,
                                       description="Only tracks released in a later year (unknown years are left out)")
    max_per_artist: int | None = Field(None, ge=1, le=MAX_K,
                                       description="At most this many tracks of one artist (diversity)")


class RecommendationRequest(BaseModel):
    """A known playlist by id, or a cold one described by its name and/or tracks."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"playlist_id": 17, "k": 10},
        {"name": "summer roadtrip", "track_uris": ["spotify:track:0UaMYEvWZi0ZqiDOoHU3YI"], "k": 20,
         "filters": {"exclude_explicit": True, "max_per_artist": 2}}]})

    playlist_id: int | None = Field(None, ge=0, le=2**62, description="An MPD pid Feast holds features for")
    name: str | None = Field(None, max_length=500, description="The playlist's title (cold playlists)")
    track_uris: list[TrackUri] = Field(default_factory=list, max_length=MAX_TRACK_URIS,
                                       description="Tracks in the playlist, in order: a cold playlist's seeds; "
                                                   "never recommended back")
    k: int = Field(10, ge=1, le=MAX_K, description="How many tracks to return")
    filters: Filters = Field(default_factory=Filters)
    ranked: bool | None = Field(None, description="true: the model's ranker orders the merged candidates; "
                                                  "false: retrieval only (the sources merged by reciprocal-rank "
                                                  "fusion); default: the server's `ranker.enabled`")

    @model_validator(mode="after")
    def _has_context(self) -> "RecommendationRequest":
        if self.playlist_id is None and not (self.name or "").strip() and not self.track_uris:
            raise ValueError("give a playlist_id, or describe a new playlist with a name and/or track_uris")
        return self


class Track(BaseModel):
    rank: int
    track_uri: str
    score: float = Field(description="Cosine of the query and track embeddings")
    sources: list[str] = Field(default_factory=list, description="The candidate sources that proposed the "
                                                                 "track: tower, neighbours")
    ranker_score: float | None = Field(None, description="The ranker's logit, when the ranker ordered the results")
    track_name: str | None = None
    artist_uri: str | None = None
    artist_name: str | None = None
    album_name: str | None = None
    release_year: int | None = None
    explicit: bool | None = None
    popularity: int | None = None


class IndexVersion(BaseModel):
    alias: str
    collection: str = Field(description="The Milvus collection searched (one nightly build)")
    model_version: str = Field(description="The training that made both the query tower and the index")


class RecommendationResponse(BaseModel):
    playlist_id: int | None
    query_features: Literal["feature_store", "request"] = Field(
        description="feature_store: the playlist's online features; request: built from the request")
    k: int
    returned: int
    partial: bool = Field(description="True when fewer than k tracks passed the filters")
    excluded_seeds: int = Field(description="Tracks of the playlist kept out of the results")
    unknown_track_uris: list[str] = Field(default_factory=list,
                                          description="Seed tracks the feature store does not know")
    ordering: Literal["ranker", "fusion", "tower"] = Field(
        description="ranker: the ranking stage ordered the merged candidates; fusion: retrieval only (asked "
                    "for, or no seed tracks for the ranker to read), the sources merged by reciprocal rank; "
                    "tower: the towers' search alone (no neighbour table)")
    tracks: list[Track]
    index: IndexVersion
    timings_ms: dict[str, float]


class SimilarTracksResponse(BaseModel):
    track_uri: str
    k: int
    returned: int
    tracks: list[Track]
    index: IndexVersion


class Problem(BaseModel):
    """Every error body: what went wrong and what to do."""

    error: str
    detail: str
    retry_after_s: int | None = None


class TargetChoice(BaseModel):
    collection: str | None = Field(None, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                   description="A build to serve whatever the alias says; null follows the alias")


class ServingStatus(BaseModel):
    status: str
    alias: str
    collection: str | None = None
    model_version: str | None = None
    pinned: str | None = None
    problem: str | None = None
