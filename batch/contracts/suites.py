"""The contracts, one suite per table. Each rule's `description` is what a failure report shows.

Raw suites check MPD slices as read (one row per playlist with derived counts, one row per track
entry); table suites check the Parquet tables that ingest writes.
"""

from __future__ import annotations

from collections.abc import Callable

import great_expectations.expectations as gxe

from segue.vocabulary import URI_PATTERNS

Expectation = gxe.Expectation


def _not_null(*columns: str) -> list[Expectation]:
    return [gxe.ExpectColumnValuesToNotBeNull(column=c, description=f"`{c}` is present")
            for c in columns]


def _well_formed(*columns: str) -> list[Expectation]:
    return [gxe.ExpectColumnValuesToMatchRegex(
        column=c, regex=URI_PATTERNS[c], description=f"`{c}` is a well-formed Spotify URI")
        for c in columns]


def _unique(column: str) -> Expectation:
    return gxe.ExpectColumnValuesToBeUnique(column=column, description=f"`{column}` is unique")


def raw_playlists() -> list[Expectation]:
    return [
        *_not_null("pid", "name", "modified_at", "num_tracks", "collaborative"),
        _unique("pid"),
        gxe.ExpectColumnValuesToBeInSet(column="collaborative", value_set=["true", "false"],
                                        description='`collaborative` is "true" or "false"'),
        gxe.ExpectColumnValuesToBeBetween(column="modified_at", min_value=0,
                                          description="`modified_at` is epoch seconds >= 0"),
        gxe.ExpectColumnValuesToBeBetween(column="num_tracks", min_value=1,
                                          description="a playlist has at least one track"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="num_tracks", column_B="track_count",
                                            description="`num_tracks` equals the number of track entries"),
        gxe.ExpectColumnValuesToBeInSet(column="pos_contiguous", value_set=[True],
                                        description="track `pos` values are contiguous from 0"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="num_artists", column_B="distinct_artists",
                                            description="`num_artists` equals the distinct artists of its tracks"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="num_albums", column_B="distinct_albums",
                                            description="`num_albums` equals the distinct albums of its tracks"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="duration_ms", column_B="tracks_duration_ms",
                                            description="`duration_ms` is the sum of its tracks' durations"),
        gxe.ExpectColumnValuesToBeBetween(column="num_followers", min_value=0,
                                          description="`num_followers` >= 0"),
        gxe.ExpectColumnValuesToBeBetween(column="num_edits", min_value=0,
                                          description="`num_edits` >= 0"),
    ]


def raw_tracks() -> list[Expectation]:
    return [
        *_not_null("pos", "track_uri", "track_name", "artist_uri", "artist_name",
                   "album_uri", "album_name", "duration_ms"),
        *_well_formed("track_uri", "artist_uri", "album_uri"),
        gxe.ExpectColumnValuesToBeBetween(column="duration_ms", min_value=1,
                                          description="track `duration_ms` is positive"),
    ]


def playlists_table() -> list[Expectation]:
    return [*_not_null("pid", "name", "event_timestamp", "collaborative"), _unique("pid")]


def playlist_tracks_table() -> list[Expectation]:
    return [
        *_not_null("pid", "pos", "track_uri", "event_timestamp"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["pid", "pos"],
                                            description="(`pid`, `pos`) is unique"),
    ]


def _unit_interval(*columns: str) -> list[Expectation]:
    return [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0,
                                              description=f"`{c}` is within [0, 1] when known")
            for c in columns]


def tracks_table() -> list[Expectation]:
    return [
        *_not_null("track_uri", "artist_uri", "album_uri", "event_timestamp"),
        _unique("track_uri"),
        gxe.ExpectColumnValuesToBeBetween(column="duration_ms", min_value=1,
                                          description="track `duration_ms` is positive"),
        gxe.ExpectColumnValuesToBeBetween(column="popularity", min_value=0, max_value=100,
                                          description="`popularity` is within [0, 100] when known"),
        *_unit_interval("danceability", "energy", "valence", "acousticness"),
    ]


def artists_table() -> list[Expectation]:
    return [
        *_not_null("artist_uri", "event_timestamp"),
        _unique("artist_uri"),
        gxe.ExpectColumnValuesToBeBetween(column="popularity", min_value=0, max_value=100,
                                          description="artist `popularity` is within [0, 100] when known"),
        gxe.ExpectColumnValuesToBeBetween(column="followers", min_value=0,
                                          description="artist `followers` >= 0 when known"),
    ]


def albums_table() -> list[Expectation]:
    return [*_not_null("album_uri", "artist_uri", "event_timestamp"), _unique("album_uri")]


def playlist_timeline() -> list[Expectation]:
    return [
        *_not_null("pid", "pos", "track_uri", "added_at"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["pid", "pos"], description="(`pid`, `pos`) is unique"),
    ]


def playlist_snapshots() -> list[Expectation]:
    return [
        # The recent-track arrays (collect_list, never null) are left out: persisting 3 arrays per
        # snapshot for the check ran a 4g driver out of heap at 100k playlists.
        *_not_null("pid", "event_timestamp", "name", "num_tracks"),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["pid", "event_timestamp"],
            description="one snapshot per (`pid`, `event_timestamp`): a point-in-time join has one answer"),
        gxe.ExpectColumnValuesToBeBetween(column="num_tracks", min_value=0, max_value=10_000,
                                          description="a snapshot's `num_tracks` is within [0, 10000]"),
    ]


def track_features() -> list[Expectation]:
    return [
        *_not_null("track_uri", "event_timestamp", "artist_uri", "album_uri"),
        # The batch job writes one row per track; the stream adds a row per update it records, so
        # the table Feast reads holds a track's versions, one per time.
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["track_uri", "event_timestamp"],
            description="one row per (`track_uri`, `event_timestamp`): a point-in-time join has one answer"),
        gxe.ExpectColumnValuesToBeBetween(column="popularity", min_value=0, max_value=100,
                                          description="`popularity` is within [0, 100] when known"),
        *_unit_interval("danceability", "energy", "valence", "acousticness"),
    ]


def artist_features() -> list[Expectation]:
    return [*_not_null("artist_uri", "event_timestamp"), _unique("artist_uri")]


def track_neighbours() -> list[Expectation]:
    return [
        *_not_null("track_uri", "event_timestamp", "playlists", "neighbour_uris", "neighbour_counts"),
        _unique("track_uri"),
        gxe.ExpectColumnValuesToBeBetween(column="playlists", min_value=1,
                                          description="every track in the table is on at least one playlist"),
    ]


SUITES: dict[str, Callable[[], list[Expectation]]] = {
    "raw_playlists": raw_playlists,
    "raw_tracks": raw_tracks,
    "playlists": playlists_table,
    "playlist_tracks": playlist_tracks_table,
    "tracks": tracks_table,
    "artists": artists_table,
    "albums": albums_table,
    "playlist_timeline": playlist_timeline,
    "playlist_snapshots": playlist_snapshots,
    "track_features": track_features,
    "artist_features": artist_features,
    "track_neighbours": track_neighbours,
}
