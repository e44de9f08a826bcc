"""The events on `segue.tracks.new` and `segue.playlists.edits` (schema version 1) and the dead
letters of both on `segue.tracks.dlq`.

Track events: one JSON object per message, keyed by the track URI (so one track's events stay in
order on one partition):

    {"schema_version": 1,
     "event_id": "0b6c3c1e-...",                      unique per event; any string up to 128 characters
     "event_time": "2026-11-22T09:30:00.123456Z",     when the track was released or changed (RFC 3339, with zone)
     "track": {"track_uri": "spotify:track:...", "track_name": "...", "artist_uri": "spotify:artist:...",
               "artist_name": "...", "album_uri": "spotify:album:...", "album_name": "...",
               "duration_ms": 215000, ...}}

`track` carries the `track_features` view's fields by the same names; those below `duration_ms` in
`TrackFeatures` may be null or absent (unknown). A later event for the same track replaces it
whole: the newest `event_time` wins.

Playlist edits: one JSON object per message, keyed by the pid in decimal (so one playlist's edits
stay in order on one partition):

    {"schema_version": 1,
     "event_id": "6f1d...",
     "event_time": "2026-11-22T09:31:02.5Z",          when the user made the edit
     "pid": 17,
     "added_track_uris": ["spotify:track:..."],       appended in this order (may be empty)
     "removed_track_uris": ["spotify:track:..."],     every occurrence removed, before the additions
     "name": "road trip"}                            the new title, or absent/null to keep it

An edit is a change, not a state: a playlist's edits apply in order, and one timed at or before
the playlist's stored state (a replay of an edit already applied, or one published out of order)
is skipped and counted as superseded. Publish each playlist's edits in order, with rising times.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from segue.vocabulary import uri_pattern

SCHEMA_VERSION = 1
INT64_MAX = 2**63 - 1  # what Feast, Arrow and Milvus store: a larger integer fails every write
_Unit = Field(None, ge=0, le=1)


class TrackFeatures(BaseModel):
    """A track as the candidate tower and the index need it; names match the Feast view."""

    model_config = ConfigDict(extra="forbid")

    track_uri: str = Field(pattern=uri_pattern("track"))
    # Names may be empty: sources with ids only have none, and the MPD reader takes them too.
    track_name: str = Field(max_length=500)
    artist_uri: str = Field(pattern=uri_pattern("artist"))
    artist_name: str = Field(max_length=500)
    album_uri: str = Field(pattern=uri_pattern("album"))
    album_name: str = Field(max_length=500)
    duration_ms: int = Field(gt=0, le=24 * 3600 * 1000)
    popularity: int | None = Field(None, ge=0, le=100)
    explicit: bool | None = None
    release_year: int | None = Field(None, ge=1000, le=2999)
    first_added_s: int | None = Field(None, ge=0, le=INT64_MAX, description="Default: the track's first event time")
    danceability: float | None = _Unit
    energy: float | None = _Unit
    speechiness: float | None = _Unit
    acousticness: float | None = _Unit
    instrumentalness: float | None = _Unit
    liveness: float | None = _Unit
    valence: float | None = _Unit
    loudness: float | None = Field(None, ge=-100, le=10)
    tempo: float | None = Field(None, ge=0, le=400)
    key: int | None = Field(None, ge=-1, le=11)
    mode: int | None = Field(None, ge=0, le=1)
    time_signature: int | None = Field(None, ge=0, le=7)
    artist_genres: list[str] | None = Field(None, max_length=64)
    artist_popularity: int | None = Field(None, ge=0, le=100)
    artist_followers: int | None = Field(None, ge=0, le=INT64_MAX)


class TrackEvent(BaseModel):
    """A new or changed track."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int
    event_id: str = Field(min_length=1, max_length=128)
    event_time: AwareDatetime
    track: TrackFeatures

    @property
    def event_time_us(self) -> int:
        return int(self.event_time.timestamp() * 1_000_000)


FEATURE_NAMES = [n for n in TrackFeatures.model_fields if n != "track_uri"]
MAX_EDITED_TRACKS = 250  # an MPD playlist's most tracks: no one edit changes more


class PlaylistEditEvent(BaseModel):
    """Tracks added to or removed from a playlist, or a new title."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int
    event_id: str = Field(min_length=1, max_length=128)
    event_time: AwareDatetime
    pid: int = Field(ge=0, le=INT64_MAX)
    added_track_uris: list[Annotated[str, Field(pattern=uri_pattern("track"))]] = Field(
        default_factory=list, max_length=MAX_EDITED_TRACKS)
    removed_track_uris: list[Annotated[str, Field(pattern=uri_pattern("track"))]] = Field(
        default_factory=list, max_length=MAX_EDITED_TRACKS)
    name: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _changes_something(self) -> "PlaylistEditEvent":
        if not (self.added_track_uris or self.removed_track_uris or self.name is not None):
            raise ValueError("an edit adds tracks, removes tracks or renames the playlist; this one does none")
        return self

    @property
    def event_time_us(self) -> int:
        return int(self.event_time.timestamp() * 1_000_000)


class EventError(ValueError):
    """Why a message is not a valid event; the text goes into the dead letter."""


def new_event(track: dict[str, Any], event_time: datetime | None = None, event_id: str | None = None) -> dict:
    """A schema-1 event for a track dict (what `segue stream publish` sends)."""
    when = event_time or datetime.now(timezone.utc)
    return {"schema_version": SCHEMA_VERSION, "event_id": event_id or str(uuid.uuid4()),
            "event_time": when.isoformat().replace("+00:00", "Z"), "track": track}


def new_playlist_edit(pid: int, added: list[str] = (), removed: list[str] = (), name: str | None = None,
                      event_time: datetime | None = None, event_id: str | None = None) -> dict:
    """A schema-1 playlist edit."""
    when = event_time or datetime.now(timezone.utc)
    event = {"schema_version": SCHEMA_VERSION, "event_id": event_id or str(uuid.uuid4()),
             "event_time": when.isoformat().replace("+00:00", "Z"), "pid": pid,
             "added_track_uris": list(added), "removed_track_uris": list(removed)}
    return event if name is None else {**event, "name": name}


def parse_event(value: bytes | None, max_ahead_s: float | None = None, now: datetime | None = None,
                kind: type[TrackEvent] | type[PlaylistEditEvent] = TrackEvent) -> TrackEvent | PlaylistEditEvent:
    """The event of `kind` in a message value, or EventError naming what is wrong and where.

    `max_ahead_s` refuses events timed further ahead of `now`: newest wins, so one far-future time
    would silently beat every later update of its track.
    """
    if value is None:
        raise EventError("empty message (a tombstone): events are never deleted this way; "
                         "publish a JSON event instead")
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EventError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise EventError(f"not a JSON object but {type(doc).__name__}")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EventError(f"schema_version {version!r} is not supported: this consumer reads version "
                         f"{SCHEMA_VERSION}; upgrade the consumer or publish version {SCHEMA_VERSION}")
    try:
        event = kind.model_validate(doc)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}" for err in e.errors())
        raise EventError(f"invalid event {str(doc.get('event_id', '?'))[:128]!r}: {problems}") from None
    if max_ahead_s is not None:
        ahead = (event.event_time - (now or datetime.now(timezone.utc))).total_seconds()
        if ahead > max_ahead_s:
            raise EventError(f"invalid event {event.event_id[:128]!r}: event_time {event.event_time.isoformat()} is "
                             f"{ahead:.0f} s ahead of this consumer's clock (at most {max_ahead_s:.0f} s, "
                             "`stream.max_event_ahead_s`); publish the time the track changed, with its zone")
    return event


@dataclass(frozen=True)
class Origin:
    """Where an event was read. The offline record names its files by it, so a batch written again
    (a retry, a replay after a crash) replaces its earlier files instead of adding to them."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not be indexed, with where it came from and why."""

    reason: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes | None

    def to_json(self) -> bytes:
        def text(raw: bytes | None) -> tuple[str | None, str]:
            if raw is None:
                return None, "none"
            try:
                return raw.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                return base64.b64encode(raw).decode("ascii"), "base64"

        payload, encoding = text(self.payload)
        key, _ = text(self.key)
        return json.dumps({"reason": self.reason, "topic": self.topic, "partition": self.partition,
                           "offset": self.offset, "key": key, "payload": payload,
                           "payload_encoding": encoding,
                           "rejected_at": datetime.now(timezone.utc).isoformat()}).encode()
