"""Generator profiles: which kind of source a synthetic sample imitates.

`demo` is MPD-like: named playlists, album and artist runs, track and artist metadata.

`ids_only` imitates a real radio-playlist dataset we check quality on, where ids are all there
is. Its shape, next to the demo profile's (10,000 playlists, seed 7):

| statistic                                   | real (radio) | demo  |
|---------------------------------------------|-------------:|------:|
| tracks per playlist: mean / median / p90    | 162/191/250  | 61/49/122 |
| share of entries on the top 1% of tracks    | 0.327        | 0.208 |
| share of tracks that appear once            | 0.308        | 0.126 |
| consecutive tracks by the same artist       | 0.017        | 0.285 |
| distinct artists per track in a playlist    | 0.566        | 0.480 |

and it has no playlist names, no metadata files, one duration for every track and one
placeholder album per artist. Its playlists are long and coherent (1-2 tastes), so item
co-occurrence is strong, while artist runs are rare.

Its numbers were tuned at the real data's size (11,039 playlists, seed 7). The two popularity
shares depend on sample size (a smaller sample repeats fewer tracks: at 2,000 playlists the top-1%
share is lower and the seen-once share higher); up to 11k playlists the others do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from segue.batch.synth.catalog import CatalogShape
from segue.batch.synth.playlists import PlaylistLengths, PlaylistShape


@dataclass(frozen=True)
class Profile:
    """A catalogue shape, a playlist shape, and what the records carry besides ids."""

    name: str
    catalog: CatalogShape = field(default_factory=CatalogShape)
    playlists: PlaylistShape = field(default_factory=PlaylistShape)
    named: bool = True  # playlist, track, artist and album names (else empty)
    metadata: bool = True  # metadata/tracks.jsonl and metadata/artists.jsonl


DEMO = Profile("demo")

IDS_ONLY = Profile(
    "ids_only",
    catalog=CatalogShape(
        # Sized like the real data (11k playlists) even for small samples: distinct artists per
        # track and artist runs depend on how many artists a taste holds, so they stay put.
        min_scale=11_000,
        # Fewer artists with many tracks each (~40), more even in popularity than the demo's:
        # ~100 distinct artists in a 160-track playlist, yet rarely two in a row by one artist.
        artists_per_playlist=0.4,
        artist_sigma=1.0,
        album_p=0.18,
        tracks_per_album_p=0.2,
        # A wider spread of track popularity: a heavier head and a longer tail of one-off plays.
        track_sigma=2.3,
        duration_ms=210_000,
        one_album_per_artist=True,
    ),
    playlists=PlaylistShape(
        # A third short playlists, the rest filled near the 250-track cap: mean ~162, median ~190.
        lengths=PlaylistLengths(full_share=0.65, full_mean=220.0, full_sd=45.0),
        # Coherent: one or two tastes in long blocks, so tracks co-occur strongly.
        tastes_per_playlist=(0.6, 0.4),
        mean_run=12.0,
        # No album or artist runs: a station does not play an artist twice in a row.
        p_stick=0.0,
        # More of the cross-taste hits (mean 0.25 of a playlist): the rotation's heavy head.
        chart_share=(2.0, 6.0),
    ),
    named=False,
    metadata=False,
)

PROFILES = {p.name: p for p in (DEMO, IDS_ONLY)}


def profile_named(name: str) -> Profile:
    """The profile called `name`; a ValueError lists the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown generator profile {name!r}; known: {', '.join(PROFILES)}"
                         ) from None
