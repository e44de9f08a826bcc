"""A RecSys 2018 style challenge set from the generator's own future, and its two yardsticks.

Challenge playlists come from the same process as the slices but are dated after `end`, so new
artists and releases appear in their held-out tracks. The yardsticks bracket what a model can do:
ranking by play count in the slices, and an oracle that knows each playlist's true tastes and date.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segue.vocabulary import CATEGORIES, Category
from segue.batch.synth.catalog import STREAM_CHALLENGE, Catalog
from segue.batch.synth.playlists import (
    LatentPlaylist,
    PlaylistSampler,
    TrackEntryFormat,
    playlist_json,
    playlist_name,
)

RANKED = 500  # tracks a submission ranks per playlist


@dataclass(frozen=True)
class ChallengeCase:
    """A challenge playlist: what is shown (name, seeds) and what is held out."""

    pid: int
    category: Category
    name: str | None
    playlist: LatentPlaylist
    seed_positions: np.ndarray

    @property
    def seeds(self) -> np.ndarray:
        return self.playlist.tracks[self.seed_positions]

    @property
    def holdouts(self) -> np.ndarray:
        shown = np.zeros(len(self.playlist.tracks), dtype=bool)
        shown[self.seed_positions] = True
        return self.playlist.tracks[~shown]


def sample_challenge(catalog: Catalog, sampler: PlaylistSampler, count: int, first_pid: int,
                     named: bool = True) -> list[ChallengeCase]:
    """`count` playlists split evenly over the categories, dated in the challenge period.

    Titled categories of an unnamed sample show an empty name, as a source without names would.
    """
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([catalog.seed, STREAM_CHALLENGE]))
    )
    per_category = [count // len(CATEGORIES) + (i < count % len(CATEGORIES))
                    for i in range(len(CATEGORIES))]
    cases = []
    for category, n in zip(CATEGORIES, per_category):
        days = rng.integers(catalog.last_day + 1, catalog.horizon_day + 1, n)
        for day in days.tolist():
            playlist = sampler.sample(rng, day, min_length=category.min_tracks)
            if category.random_seeds:
                seeds = np.sort(rng.choice(len(playlist.tracks), category.seeds, replace=False))
            else:
                seeds = np.arange(category.seeds)
            name = None
            if category.titled:
                name = (playlist_name(rng, catalog, int(playlist.tastes[0]), allow_empty=False)
                        if named else "")
            cases.append(ChallengeCase(first_pid + len(cases), category, name, playlist, seeds))
    return cases


def write_challenge(out_dir: Path, cases: list[ChallengeCase], catalog: Catalog,
                    entries: TrackEntryFormat, date_text: str) -> None:
    """Writes `challenge_set.json` (what a model sees) and `challenge_holdout.json` (the truth)."""
    records = []
    for case in cases:
        fields: dict = {"pid": case.pid}
        if case.name is not None:
            fields["name"] = case.name
        n_seeds = len(case.seed_positions)
        fields.update(num_holdouts=len(case.playlist.tracks) - n_seeds, num_samples=n_seeds,
                      num_tracks=len(case.playlist.tracks))
        records.append(playlist_json(
            fields, entries.entries(case.seeds, case.seed_positions.tolist())
        ))
    header = json.dumps({"date": date_text, "version": "v1"}, separators=(",", ":"))[:-1]
    (out_dir / "challenge_set.json").write_text(
        f'{header},"playlists":[{",".join(records)}]}}', encoding="utf-8"
    )
    holdout = {"playlists": [
        {"pid": case.pid, "category": case.category.name,
         "holdout_track_uris": ["spotify:track:" + i.decode()
                                for i in catalog.track_ids[case.holdouts].tolist()]}
        for case in cases
    ]}
    (out_dir / "challenge_holdout.json").write_text(
        json.dumps(holdout, separators=(",", ":")), encoding="utf-8"
    )


def _top_unseen(tracks: np.ndarray, scores: np.ndarray, seeds: np.ndarray, k: int) -> list[int]:
    """The k best-scored tracks that are not seeds, best first (ties by track index)."""
    keep = ~np.isin(tracks, seeds)
    tracks, scores = tracks[keep], scores[keep]
    if len(tracks) > k:
        top = np.argpartition(-scores, k - 1)[:k]
        tracks, scores = tracks[top], scores[top]
    return tracks[np.lexsort((tracks, -scores))].tolist()


def popularity_rankings(cases: list[ChallengeCase], track_counts: np.ndarray, k: int = RANKED
                        ) -> dict[int, list[int]]:
    """Most-played tracks of the slices, seeds excluded."""
    pool = np.argsort(-track_counts, kind="stable")[:k + max((len(c.seeds) for c in cases),
                                                             default=0)]
    return {c.pid: _top_unseen(pool, track_counts[pool].astype(float), c.seeds, k)
            for c in cases}


def oracle_rankings(cases: list[ChallengeCase], sampler: PlaylistSampler, k: int = RANKED
                    ) -> dict[int, list[int]]:
    """Tracks by the generator's own draw probability for each playlist, seeds excluded."""
    # Enough chart leaders that k remain after any playlist's seeds; shared by a day's playlists.
    count = k + max((len(c.seeds) for c in cases), default=0)
    leaders: dict[int, np.ndarray] = {}
    rankings = {}
    for c in cases:
        day = c.playlist.day
        if day not in leaders:
            leaders[day] = sampler.chart_leaders(day, count)
        tracks, probs = sampler.probabilities(day, c.playlist.tastes, c.playlist.mix,
                                              leaders[day])
        rankings[c.pid] = _top_unseen(tracks, probs, c.seeds, k)
    return rankings
