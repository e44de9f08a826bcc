"""`playlist_query_v1` built outside the batch job: for a playlist Feast has never seen (from a
request), and for a known playlist after a streamed edit.

The same definitions as `batch/build_features.py`'s `playlist_snapshots`, applied to one playlist:
counts and durations so far, the newest `playlist_tracks` tracks, and the last `recent` tracks with
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
    return {
        "name": [name],
        "collaborative": [collaborative],
        "num_tracks": [len(track_uris)],
        "duration_ms": [sum(_duration(tracks, uri) for uri in track_uris)],
        "num_followers": [NEW_PLAYLIST_FOLLOWERS],
        "num_edits": [NEW_PLAYLIST_EDITS if track_uris else 0],
        **_sequences(track_uris, tracks, sequences),
    }


def edited_track_list(track_uris: Sequence[str], edits: Sequence[tuple[Sequence[str], Sequence[str]]]
                      ) -> tuple[list[str], list[str]]:
    """The playlist after `edits` ((added, removed) each, in order: every occurrence of a removed
    track goes, then the added ones are appended), and the occurrences that were removed."""
    tracks, removed = list(track_uris), []
    for added, removing in edits:
        gone = set(removing)
        removed += [uri for uri in tracks if uri in gone]
        tracks = [uri for uri in tracks if uri not in gone] + list(added)
    return tracks, removed


def recent_window(track_uris: Sequence[str], sequences: FeatureSettings) -> list[str]:
    """The tracks whose artists and albums the recent sequences hold."""
    return list(track_uris[-sequences.recent_tracks:])


def edited_playlist_features(stored: Mapping[str, Any] | None,
                             edits: Sequence[tuple[Sequence[str], Sequence[str], str | None]],
                             tracks: Mapping[str, Mapping[str, Any]], sequences: FeatureSettings) -> dict[str, Any]:
    """A playlist's query features after `edits` ((added, removed, new name or None) each, in
    order), from its online features (`stored`; None for a playlist Feast has never seen).

    Each edit counts as one edit session. `tracks` must hold the added and removed tracks and the
    new recent window. The stored list holds the newest `playlist_tracks` tracks: removing a track
    older than those is not seen, so counts and duration may then be off by what it added.
    """
    state = dict(stored or {})
    track_uris, removed = edited_track_list(state.get("track_uris") or [], [(a, r) for a, r, _ in edits])
    added = [uri for a, _, _ in edits for uri in a]
    names = [n for _, _, n in edits if n is not None]
    return {
        "name": names[-1] if names else state.get("name") or "",
        "collaborative": bool(state.get("collaborative") or False),
        "num_tracks": max(0, int(state.get("num_tracks") or 0) - len(removed) + len(added)),
        "duration_ms": max(0, int(state.get("duration_ms") or 0) - sum(_duration(tracks, u) for u in removed)
                           + sum(_duration(tracks, u) for u in added)),
        "num_followers": int(state.get("num_followers") or NEW_PLAYLIST_FOLLOWERS),
        "num_edits": int(state.get("num_edits") or 0) + len(edits),
        **{name: values[0] for name, values in _sequences(track_uris, tracks, sequences).items()},
    }


def _duration(tracks: Mapping[str, Mapping[str, Any]], uri: str) -> int:
    return int((tracks.get(uri) or {}).get("duration_ms") or 0)


def _sequences(track_uris: list[str], tracks: Mapping[str, Mapping[str, Any]],
               sequences: FeatureSettings) -> dict[str, list[list[str]]]:
    last = recent_window(track_uris, sequences)
    known = [tracks.get(uri) or {} for uri in last]
    # Spark's collect_list skips nulls: an unknown artist or album leaves no gap in its sequence.
    return {
        "track_uris": [track_uris[-sequences.playlist_tracks:]],
        "recent_track_uris": [last],
        "recent_artist_uris": [[t["artist_uri"] for t in known if t.get("artist_uri")]],
        "recent_album_uris": [[t["album_uri"] for t in known if t.get("album_uri")]],
    }
