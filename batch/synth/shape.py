"""The shape of a sample's playlists, in the statistics we compare with real datasets.

They are tallied playlist by playlist while the slices are written, so they cost no second pass:
lengths, how often consecutive tracks share an artist (pooled over all consecutive pairs), and
distinct artists per track (averaged over playlists).
"""

from __future__ import annotations

from array import array

import numpy as np

# The keys `statistics` adds to a report, in the order a comparison table lists them.
SHAPE_KEYS = (
    "tracks_per_playlist_mean", "tracks_per_playlist_median", "tracks_per_playlist_p90",
    "entry_share_top_1pct_tracks", "track_share_seen_once",
    "same_artist_consecutive_share", "distinct_artists_per_track",
)


class ShapeTally:
    """Running totals over the playlists of a sample (a few bytes per playlist)."""

    def __init__(self) -> None:
        self._lengths = array("I")
        self._pairs = 0
        self._same_artist_pairs = 0
        self._distinct_ratio_sum = 0.0

    def add(self, artists: np.ndarray) -> None:
        """One playlist, given as the artist of each track in playlist order."""
        n = len(artists)
        self._lengths.append(n)
        if n:
            self._pairs += n - 1
            self._same_artist_pairs += int(np.count_nonzero(artists[1:] == artists[:-1]))
            self._distinct_ratio_sum += len(np.unique(artists)) / n

    def statistics(self) -> dict[str, float]:
        """Length mean/median/p90, same-artist consecutive share, distinct artists per track."""
        lengths = np.array(self._lengths, dtype=np.int64)
        if not len(lengths):
            return {}
        return {
            "tracks_per_playlist_mean": float(lengths.mean()),
            "tracks_per_playlist_median": float(np.median(lengths)),
            "tracks_per_playlist_p90": float(np.percentile(lengths, 90)),
            "same_artist_consecutive_share": self._same_artist_pairs / max(self._pairs, 1),
            "distinct_artists_per_track": self._distinct_ratio_sum / len(lengths),
        }
