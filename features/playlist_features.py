"""`playlist_query_v1` for a playlist Feast has never seen, built from a request.

The same definitions as `batch/build_features.py`'s `playlist_snapshots`, applied to one playlist
whose tracks arrive in the request: counts and durations so far, and the last `recent` tracks with
their artists and albums, read from Feast's online `track_features`. A test builds known playlists
both ways and compares, so the two paths cannot drift apart unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from segue.settings import FeatureSettings

# A brand-new playlist has one edit session and its owner as its one follower, as the batch
# snapshots estimate for a playlist's first session.
NEW_PLAYLIST_EDITS = 1
NEW_PLAYLIST_FOLLOWERS = 1


def playlist_query_features(name: str, track_uris: Sequence[str], tracks: Mapping[str, Mapping[str, Any]],
                            sequences: FeatureSettings, collaborative: bool = False) -> dict[str, list[Any]]:
    """The playlist's query features in Feast's online dict shape (name -> one value).

    Args:
        name: the playlist's title ("" if none).
        track_uris: its tracks in playlist order.
        tracks: track URI -> online `track_features` (`artist_uri`, `album_uri`, `duration_ms`);
            a track missing here still counts and still appears in `track_uris`/`recent_track_uris`.
        sequences: the sequence lengths the batch job used (`features.recent_tracks`,
            `features.playlist_tracks`).
    """
    track_uris = list(track_uris)
    last = track_uris[-sequences.recent_tracks:]
    known = [tracks.get(uri) or {} for uri in last]
    duration = sum(int((tracks.get(uri) or {}).get("duration_ms") or 0) for uri in track_uris)
    # Spark's collect_list skips nulls: an unknown artist or album leaves no gap in its sequence.
    return {
        "name": [name],
        "collaborative": [collaborative],
        "num_tracks": [len(track_uris)],
        "duration_ms": [duration],
        "num_followers": [NEW_PLAYLIST_FOLLOWERS],
        "num_edits": [NEW_PLAYLIST_EDITS if track_uris else 0],
        "track_uris": [track_uris[-sequences.playlist_tracks:]],
        "recent_track_uris": [last],
        "recent_artist_uris": [[t["artist_uri"] for t in known if t.get("artist_uri")]],
        "recent_album_uris": [[t["album_uri"] for t in known if t.get("album_uri")]],
    }
