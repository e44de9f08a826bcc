"""The ten RecSys Challenge 2018 categories."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    """One of the ten challenge categories."""

    name: str
    seeds: int
    titled: bool
    random_seeds: bool
    min_tracks: int  # playlists with many seeds are long, so there is something left to predict


CATEGORIES = (
    Category("title_only", 0, True, False, 10),
    Category("title_first_1", 1, True, False, 10),
    Category("title_first_5", 5, True, False, 10),
    Category("first_5_no_title", 5, False, False, 10),
    Category("title_first_10", 10, True, False, 20),
    Category("first_10_no_title", 10, False, False, 20),
    Category("title_first_25", 25, True, False, 50),
    Category("title_random_25", 25, True, True, 50),
    Category("title_first_100", 100, True, False, 150),
    Category("title_random_100", 100, True, True, 150),
)
