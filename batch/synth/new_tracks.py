"""The generator's future: tracks released after the slices' last day, as full track records.

No playlist in the slices holds them, so the batch features never saw them: they are what the
stream announces (`segue stream publish --generated N`). Names, ids and metadata are the same the
generator wrote for the challenge period, so a later batch run agrees with the stream.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from segue.batch.synth.catalog import (
    EPOCH,
    KIND_ALBUM,
    KIND_ARTIST,
    KIND_TRACK,
    artist_metadata_rows,
    build_catalog,
    pseudo_names,
    track_metadata_rows,
)


def future_tracks(seed: int, tastes: int, playlists: int, start: date, end: date, count: int) -> list[dict]:
    """Up to `count` tracks released after `end`, earliest first, with the `track_features` fields."""
    catalog = build_catalog(seed, tastes, playlists, start, end)
    future = np.flatnonzero(catalog.track_day > catalog.last_day)
    future = future[np.argsort(catalog.track_day[future], kind="stable")][:count]
    if not len(future):
        return []
    metadata = {}
    for chunk in track_metadata_rows(catalog):
        metadata.update((row["track_uri"], row) for row in chunk)
    artists = {row["artist_uri"]: row for row in artist_metadata_rows(catalog)}
    album = catalog.track_album[future]
    artist = catalog.album_artist[album]
    names = zip(pseudo_names(catalog.seed, KIND_TRACK, future), pseudo_names(catalog.seed, KIND_ALBUM, album),
                pseudo_names(catalog.seed, KIND_ARTIST, artist))
    tracks = []
    for i, (track_name, album_name, artist_name) in zip(future.tolist(), names):
        uri = "spotify:track:" + catalog.track_ids[i].decode()
        artist_uri = "spotify:artist:" + catalog.artist_ids[catalog.album_artist[catalog.track_album[i]]].decode()
        meta = {k: v for k, v in metadata[uri].items() if k not in ("track_uri", "release_date")}
        facts = artists.get(artist_uri, {})
        tracks.append({
            "track_uri": uri, "track_name": track_name, "artist_uri": artist_uri, "artist_name": artist_name,
            "album_uri": "spotify:album:" + catalog.album_ids[catalog.track_album[i]].decode(),
            "album_name": album_name, "duration_ms": int(catalog.track_duration_ms[i]),
            "release_year": date.fromordinal(EPOCH.toordinal() + int(catalog.track_day[i])).year,
            **meta,
            "artist_genres": facts.get("genres"), "artist_popularity": facts.get("popularity"),
            "artist_followers": facts.get("followers"),
        })
    return tracks
