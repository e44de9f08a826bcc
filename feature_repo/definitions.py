"""Segue's features: the one definition that training and serving both read.

The towers' inputs ARE the two FeatureServices `playlist_query_v1` and `track_candidate_v1`;
training and serving ask Feast for them by name and never list features themselves.
Sources read the tables `batch/build_features.py` writes under `paths.features_dir`.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Bool, Float64, Int64, String

from segue.settings import load_settings
from segue.vocabulary import NEIGHBOUR_SERVICE, PLAYLIST_SERVICE, TRACK_SERVICE

_SETTINGS = load_settings()
_REPO_ROOT = Path(__file__).resolve().parents[1]
_FEATURES_DIR = _SETTINGS.paths.features_dir
FEATURES_DIR = _FEATURES_DIR if _FEATURES_DIR.is_absolute() else _REPO_ROOT / _FEATURES_DIR
_NEIGHBOURS_DIR = _SETTINGS.paths.neighbours_dir
NEIGHBOURS_DIR = _NEIGHBOURS_DIR if _NEIGHBOURS_DIR.is_absolute() else _REPO_ROOT / _NEIGHBOURS_DIR
# Features never expire in point-in-time joins: a playlist's last state stays its state.
NO_EXPIRY = timedelta(days=365 * 30)


def _batch_source(name: str, table: str, folder: Path = FEATURES_DIR):
    path = str(folder / table)
    if _SETTINGS.features.profile == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=name, path=path, file_format="parquet", timestamp_field="event_timestamp")
    return FileSource(name=name, path=path, file_format=ParquetFormat(), timestamp_field="event_timestamp")


# Entity definitions
playlist = Entity(name="playlist", join_keys=["pid"], value_type=ValueType.INT64,
                  description="An MPD playlist")
track = Entity(name="track", join_keys=["track_uri"], value_type=ValueType.STRING,
               description="A track, spotify:track:<id>")
artist = Entity(name="artist", join_keys=["artist_uri"], value_type=ValueType.STRING,
                description="An artist, spotify:artist:<id>")

# Sources
playlist_snapshots_source = _batch_source("playlist_snapshots_source", "playlist_snapshots")
track_features_source = _batch_source("track_features_source", "track_features")
artist_features_source = _batch_source("artist_features_source", "artist_features")
track_neighbours_source = _batch_source("track_neighbours_source", "track_neighbours", NEIGHBOURS_DIR)

# Tracks and playlist edits that arrive by stream are pushed here; they land in the same views as
# the batch rows.
track_push_source = PushSource(name="track_push_source", batch_source=track_features_source)
playlist_push_source = PushSource(name="playlist_push_source", batch_source=playlist_snapshots_source)

# Feature views: one per tower, so each tower's lookup is one online round trip.
playlist_snapshots_fv = FeatureView(
    name="playlist_snapshots",
    entities=[playlist],
    ttl=NO_EXPIRY,
    schema=[
        Field(name="name", dtype=String),
        Field(name="collaborative", dtype=Bool),
        Field(name="num_tracks", dtype=Int64),
        Field(name="duration_ms", dtype=Int64),
        Field(name="num_followers", dtype=Int64),
        Field(name="num_edits", dtype=Int64),
        # The whole playlist so far (newest `features.playlist_tracks`): the query reads all of it,
        # and serving never recommends a track already in it.
        Field(name="track_uris", dtype=Array(String)),
        Field(name="recent_track_uris", dtype=Array(String)),
        Field(name="recent_artist_uris", dtype=Array(String)),
        Field(name="recent_album_uris", dtype=Array(String)),
        # Not a tower input: the time of the last streamed edit applied (epoch microseconds; null on
        # batch rows), written with the features in one push, so an edit replayed after a crash is
        # recognised and not applied twice. (Feast's SQLite store keeps event times in seconds.)
        Field(name="applied_edit_us", dtype=Int64),
    ],
    online=True,
    source=playlist_push_source,
    tags={"tower": "query"},
)

track_features_fv = FeatureView(
    name="track_features",
    entities=[track],
    ttl=NO_EXPIRY,
    schema=[
        Field(name="track_name", dtype=String),
        Field(name="artist_uri", dtype=String),
        Field(name="artist_name", dtype=String),
        Field(name="album_uri", dtype=String),
        Field(name="album_name", dtype=String),
        Field(name="duration_ms", dtype=Int64),
        Field(name="popularity", dtype=Int64),
        Field(name="explicit", dtype=Bool),
        Field(name="release_year", dtype=Int64),
        Field(name="first_added_s", dtype=Int64),  # first time on any playlist (epoch s): track age
        *[Field(name=f, dtype=Float64) for f in (
            "danceability", "energy", "speechiness", "acousticness", "instrumentalness",
            "liveness", "valence", "loudness", "tempo")],
        *[Field(name=f, dtype=Int64) for f in ("key", "mode", "time_signature")],
        Field(name="artist_genres", dtype=Array(String)),
        Field(name="artist_popularity", dtype=Int64),
        Field(name="artist_followers", dtype=Int64),
    ],
    online=True,
    source=track_push_source,
    tags={"tower": "candidate"},
)

artist_features_fv = FeatureView(
    name="artist_features",
    entities=[artist],
    ttl=NO_EXPIRY,
    schema=[
        Field(name="artist_name", dtype=String),
        Field(name="genres", dtype=Array(String)),
        Field(name="popularity", dtype=Int64),
        Field(name="followers", dtype=Int64),
    ],
    online=True,
    source=artist_features_source,
)

# Candidate source: each track's strongest co-occurring tracks over the towers' training window,
# read online for a request's seed tracks. Built after the examples (it needs their split time).
track_neighbours_fv = FeatureView(
    name="track_neighbours",
    entities=[track],
    ttl=NO_EXPIRY,
    schema=[
        Field(name="playlists", dtype=Int64),
        Field(name="neighbour_uris", dtype=Array(String)),
        Field(name="neighbour_counts", dtype=Array(Int64)),
    ],
    online=True,
    source=track_neighbours_source,
    tags={"built_by": "segue batch neighbours"},
)

# Feature services: the towers' inputs, versioned with the model.
QUERY_FEATURES = [f.name for f in playlist_snapshots_fv.features if f.name != "applied_edit_us"]
playlist_query_v1 = FeatureService(
    name=PLAYLIST_SERVICE,
    features=[playlist_snapshots_fv[QUERY_FEATURES]],
    description="Query tower input: a playlist's name, counts, whole track list and recent tracks as of a time",
)
track_candidate_v1 = FeatureService(
    name=TRACK_SERVICE,
    features=[track_features_fv],
    description="Candidate tower input: a track's names, ids, audio features and artist facts",
)
track_neighbours_v1 = FeatureService(
    name=NEIGHBOUR_SERVICE,
    features=[track_neighbours_fv],
    description="Co-occurrence candidate source: a track's playlist count and its top co-occurring tracks",
)
