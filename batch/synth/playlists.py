"""Sampling playlists from the latent catalogue, naming them, and formatting them as MPD JSON.

A playlist is a date, a mixture of 1-3 tastes chosen by their popularity on that date plus a little
of the chart (cross-taste hits), and tracks drawn in runs by taste; inside a run a track often
continues the previous one's album or artist.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from segue.batch.synth.catalog import (
    CHART_EXPONENT,
    CHART_RECENCY,
    KIND_ALBUM,
    KIND_ARTIST,
    KIND_TRACK,
    RECENT_DAYS,
    Catalog,
    pseudo_names,
)

MIN_LENGTH, MAX_LENGTH = 5, 250

_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

_GENERIC_NAMES = ("my playlist", "new", "songs", "music", "playlist", "favorites", "good songs",
                  "jams", "vibes", "mix", "random", "car", "my songs", "new playlist")
_NAME_TEMPLATES = ("{mood}", "{genre}", "{mood} {genre}", "{genre} {mood}", "{mood} vibes",
                   "{genre} mix", "{mood} songs", "{genre} jams", "{genre}!!")
_ERA_NAME_TEMPLATES = _NAME_TEMPLATES + ("{era} {genre}", "{era} {mood}", "{mood} {genre} {era}")
_DESCRIPTION_TEMPLATES = ("{genre} songs for {mood} days", "all my favorite {genre}",
                          "{mood} {genre} vibes only", "for when you need some {mood}")
_EMOJI = ("🔥", "🎶", "✨", "💕", "🌞", "😎", "🌙", "💯", "🎧")


@dataclass(frozen=True)
class LatentPlaylist:
    """What the generator knows about a playlist: its day, taste mixture and tracks."""

    day: int
    tastes: np.ndarray  # taste ids, the dominant one first, then the chart (id = taste count)
    mix: np.ndarray  # their weights, summing to 1
    tracks: np.ndarray  # catalogue track indices in playlist order


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest values (all of them if there are fewer), in no order."""
    return np.argpartition(-values, k - 1)[:k] if len(values) > k else np.arange(len(values))


@dataclass(frozen=True)
class PlaylistLengths:
    """Playlist lengths: a lognormal (median 50 and mean about 66 as in MPD), optionally mixed
    with "full" playlists, normal around `full_mean` and clipped at the cap, where a source
    fills most playlists near the cap (radio logs)."""

    median: float = 50.0
    sigma: float = 0.75
    full_share: float = 0.0
    full_mean: float = 220.0
    full_sd: float = 45.0

    def sample(self, rng: np.random.Generator, low: int = MIN_LENGTH, high: int = MAX_LENGTH
               ) -> int:
        """A length in [low, high]; the lognormal is truncated there, full ones pile up at high."""
        # Without full playlists no extra draw is made, so the MPD-like lengths never change.
        if self.full_share and rng.random() < self.full_share:
            full = NormalDist(self.full_mean, self.full_sd)
            a = full.cdf(low)
            return min(high, max(low, int(full.inv_cdf(min(a + rng.random() * (1 - a),
                                                             1 - 1e-12)))))
        lognormal = NormalDist(math.log(self.median), self.sigma)
        a, b = lognormal.cdf(math.log(low)), lognormal.cdf(math.log(high + 1))
        return min(high, max(low, int(math.exp(lognormal.inv_cdf(a + rng.random() * (b - a))))))


@dataclass(frozen=True)
class PlaylistShape:
    """The knobs of `PlaylistSampler` a profile may turn; the defaults make MPD-like playlists."""

    lengths: PlaylistLengths = field(default_factory=PlaylistLengths)
    tastes_per_playlist: tuple[float, ...] = (0.45, 0.35, 0.2)  # P(1 taste), P(2), ...
    mix_concentration: float = 1.5  # Dirichlet concentration of the mix of several tastes
    chart_share: tuple[float, float] = (1.0, 8.0)  # Beta of a playlist's chart share (mean 0.11)
    mean_run: float = 6.0  # tracks in a row from one taste
    p_stick: float = 0.35  # a track continues the run's anchor album or artist
    p_same_album: float = 0.6  # ... and then its album rather than any released track of its artist
    oversample: float = 2.0  # candidates per wanted track: a third or more are duplicates


class PlaylistSampler:
    """Draws playlists, and gives a playlist's per-draw track probabilities (for the oracle).

    The probabilities are exact for the taste and chart draws; the album and artist runs, which
    replace about a third of the draws by siblings of earlier tracks, are left out.
    """

    def __init__(self, catalog: Catalog, shape: PlaylistShape = PlaylistShape()):
        self.catalog = catalog
        self.shape = shape
        self._tastes_cdf = np.cumsum(shape.tastes_per_playlist)[:-1]
        self.chart = catalog.tastes.count
        self._recency = np.append(catalog.tastes.recency, CHART_RECENCY)
        index = catalog.by_taste
        starts = index.offsets[:self.chart]
        first_release = np.where(np.diff(index.offsets)[:self.chart] > 0,
                                 index.days[np.minimum(starts, len(index.days) - 1)],
                                 np.iinfo(np.int64).max)
        # Log taste weights for every playlist day, -inf where a taste has no release yet.
        self._first_day = catalog.first_day
        days = np.arange(catalog.first_day, catalog.horizon_day + 1)[:, None]
        with np.errstate(divide="ignore"):
            self._log_weights = np.where(days >= first_release,
                                         np.log(catalog.tastes.weights(days)), -np.inf)

    def choose_tastes(self, rng: np.random.Generator, day: int) -> tuple[np.ndarray, np.ndarray]:
        """Distinct tastes (how many: the shape's `tastes_per_playlist`) by their popularity on
        `day`, plus the chart, and mixture weights."""
        log_weights = self._log_weights[day - self._first_day]
        count = min(1 + int(np.searchsorted(self._tastes_cdf, rng.random(), side="right")),
                    int(np.isfinite(log_weights).sum()))
        # Gumbel top-k: `count` tastes without replacement, proportional to their weights.
        keys = log_weights - np.log(-np.log(rng.random(len(log_weights))))
        tastes = np.argsort(-keys)[:count]
        mix = (rng.dirichlet(np.full(count, self.shape.mix_concentration)) if count > 1
               else np.ones(1))
        order = np.argsort(-mix, kind="stable")
        chart_share = rng.beta(*self.shape.chart_share)
        return (np.append(tastes[order], self.chart),
                np.append((1.0 - chart_share) * mix[order], chart_share))

    def _ranges(self, tastes: np.ndarray, day: int) -> tuple[np.ndarray, ...]:
        """Per taste: start, recent-window start, released end (positions) and recency share."""
        rows = [self.catalog.by_taste.ranges(t, day, RECENT_DAYS) for t in tastes.tolist()]
        start, recent, released = (np.array(col) for col in zip(*rows))
        share = np.where(recent < released, self._recency[tastes], 0.0)
        return start, recent, released, share

    def _draw(self, rng: np.random.Generator, labels: np.ndarray,
              ranges: tuple[np.ndarray, ...]) -> np.ndarray:
        """For each label (an index into the playlist's tastes, whose `_ranges` are given), a
        released track of that taste by latent popularity, some from recent releases only."""
        start, recent, released, share = ranges
        n = len(labels)
        lo = np.where(rng.random(n) < share[labels], recent[labels], start[labels])
        hi = released[labels]
        index = self.catalog.by_taste
        cum = index.cumulative
        u = cum[lo] + rng.random(n) * (cum[hi] - cum[lo])
        # The clamp guards float round-off at the range ends.
        pos = np.minimum(np.maximum(np.searchsorted(cum, u, side="right") - 1, lo), hi - 1)
        return index.tracks[pos]

    def chart_leaders(self, day: int, count: int) -> np.ndarray:
        """A superset of the `count` tracks most likely drawn from the chart on `day`.

        Chart probability is weight x (a + b if recent), so the top `count` by weight overall
        plus the top `count` by weight among recent releases contain them all.
        """
        index = self.catalog.by_taste
        start, recent, released = index.ranges(self.chart, day, RECENT_DAYS)
        weight = np.diff(index.cumulative[start:released + 1])
        picks = np.concatenate([_top(weight, count),
                                recent - start + _top(weight[recent - start:], count)])
        return np.unique(index.tracks[start + picks])

    def chart_probabilities(self, tracks: np.ndarray, day: int) -> np.ndarray:
        """The probability that one chart draw on `day` gives each of `tracks`."""
        index, c = self.catalog.by_taste, self.catalog
        start, recent, released = index.ranges(self.chart, day, RECENT_DAYS)
        cum = index.cumulative
        weight = c.track_weight[tracks] ** CHART_EXPONENT
        released_on = c.track_day[tracks]
        share = CHART_RECENCY if recent < released else 0.0
        p = np.where(released_on <= day, (1.0 - share) * weight / (cum[released] - cum[start]), 0.0)
        if share:
            is_recent = (released_on > day - RECENT_DAYS) & (released_on <= day)
            p += np.where(is_recent, share * weight / (cum[released] - cum[recent]), 0.0)
        return p

    def probabilities(self, day: int, tastes: np.ndarray, mix: np.ndarray,
                      chart_tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate tracks of a playlist and the probability that one draw gives each.

        Candidates are every released track of its tastes plus `chart_tracks` (the chart, last in
        `tastes`, reaches every track, but `chart_leaders` is all a top-k ranking needs).
        """
        index = self.catalog.by_taste
        found, probs = [], []
        for taste, share_of_mix in zip(tastes[:-1].tolist(), mix[:-1].tolist()):
            start, recent, released = index.ranges(taste, day, RECENT_DAYS)
            cum = index.cumulative
            weight = np.diff(cum[start:released + 1])
            p = weight / (cum[released] - cum[start])
            if recent < released:
                share = float(self._recency[taste])
                p *= 1.0 - share
                new = slice(recent - start, None)
                p[new] += share * weight[new] / (cum[released] - cum[recent])
            found.append(index.tracks[start:released])
            probs.append(share_of_mix * p)
        taste_tracks = np.concatenate(found)
        tracks = np.unique(np.concatenate([taste_tracks, chart_tracks]))
        scores = np.bincount(np.searchsorted(tracks, taste_tracks),
                             weights=np.concatenate(probs), minlength=len(tracks))
        return tracks, scores + mix[-1] * self.chart_probabilities(tracks, day)

    def _candidates(self, rng: np.random.Generator, day: int, mix: np.ndarray,
                    ranges: tuple[np.ndarray, ...], n: int) -> np.ndarray:
        steps = np.arange(n)
        # Runs: at each switch a fresh label is drawn by the mix (often the same one again).
        switch = rng.random(n) < 1.0 / self.shape.mean_run
        switch[0] = True
        fresh = np.searchsorted(np.cumsum(mix)[:-1], rng.random(n), side="right")
        labels = fresh[np.maximum.accumulate(np.where(switch, steps, 0))]
        base = self._draw(rng, labels, ranges)
        # A sticky position takes a sibling of the last non-sticky track of its run.
        stick = rng.random(n) < self.shape.p_stick
        stick[0] = False
        stick[1:] &= labels[1:] == labels[:-1]
        anchor = base[np.maximum.accumulate(np.where(stick, 0, steps))]
        c = self.catalog
        album, artist = c.track_album[anchor], c.track_artist[anchor]
        same_album = rng.random(n) < self.shape.p_same_album
        lo = np.where(same_album, c.album_first_track[album], c.artist_first_track[artist])
        hi = np.where(same_album, c.album_first_track[album + 1],
                      c.released_artist_end(artist, day))
        sibling = lo + (rng.random(n) * (hi - lo)).astype(np.int64)
        return np.where(stick, sibling, base)

    def sample_tracks(self, rng: np.random.Generator, day: int, tastes: np.ndarray,
                      mix: np.ndarray, length: int) -> np.ndarray:
        """Up to `length` distinct tracks in playlist order (fewer only for tiny catalogues)."""
        ranges = self._ranges(tastes, day)
        tracks = np.empty(0, dtype=np.int64)
        unique_share = 1.0 / self.shape.oversample
        for _ in range(4):
            wanted = length - len(tracks)
            n = int(wanted / unique_share) + 5
            candidates = self._candidates(rng, day, mix, ranges, n)
            merged = np.concatenate([tracks, candidates])
            _, first = np.unique(merged, return_index=True)
            # Small or top-heavy tastes repeat more; the next round asks for enough to cover it.
            unique_share = max((len(first) - len(tracks)) / n, 0.02) / 1.5
            tracks = merged[np.sort(first)][:length]
            if len(tracks) == length:
                break
        return tracks

    def sample(self, rng: np.random.Generator, day: int, min_length: int = MIN_LENGTH
               ) -> LatentPlaylist:
        """A playlist on `day` with at least `min_length` tracks."""
        while True:
            tastes, mix = self.choose_tastes(rng, day)
            length = self.shape.lengths.sample(rng, min_length)
            tracks = self.sample_tracks(rng, day, tastes, mix, length)
            if len(tracks) >= min_length:
                return LatentPlaylist(day, tastes, mix, tracks)


def _typo(rng: np.random.Generator, text: str) -> str:
    if len(text) < 4:
        return text
    i = int(rng.integers(1, len(text) - 1))
    if rng.random() < 0.5:
        return text[:i] + text[i + 1:]
    return text[:i - 1] + text[i] + text[i - 1] + text[i + 1:]


def playlist_name(rng: np.random.Generator, catalog: Catalog, taste: int,
                  allow_empty: bool = True) -> str:
    """A user-typed title from the dominant taste's words, with the noise real titles have."""
    roll = rng.random()
    if allow_empty and roll < 0.03:
        return ""
    if roll < 0.09:
        name = _GENERIC_NAMES[rng.integers(len(_GENERIC_NAMES))]
    else:
        t = catalog.tastes
        templates = _ERA_NAME_TEMPLATES if t.era[taste] else _NAME_TEMPLATES
        name = templates[rng.integers(len(templates))].format(
            genre=t.genre[taste], mood=t.mood[taste], era=t.era[taste])
    case = rng.random()
    if case < 0.25:
        name = name.title()
    elif case < 0.35:
        name = name.upper()
    elif case < 0.45:
        name = name.capitalize()
    if rng.random() < 0.06:
        name = _typo(rng, name)
    if rng.random() < 0.06:
        name += " " + _EMOJI[rng.integers(len(_EMOJI))]
    return name


def playlist_description(rng: np.random.Generator, catalog: Catalog, taste: int) -> str:
    template = _DESCRIPTION_TEMPLATES[rng.integers(len(_DESCRIPTION_TEMPLATES))]
    return template.format(genre=catalog.tastes.genre[taste], mood=catalog.tastes.mood[taste])


def _bounded_fill(cache: dict, keys: list[int], max_cached: int, fill) -> None:
    """Calls `fill` with the keys missing from `cache`. When they would overflow it, the cache is
    emptied first, and then every key is missing: the ones it held are gone too."""
    wanted = list(dict.fromkeys(keys))
    missing = [k for k in wanted if k not in cache]
    if missing and len(cache) + len(missing) > max_cached:
        cache.clear()
        missing = wanted
    if missing:
        fill(missing)


class TrackEntryFormat:
    """Formats MPD track entries, caching each track's JSON (everything but `pos`) and each
    album's artist and album fields.

    The caches are bounded: each is dropped when it passes `max_cached` items, which only costs
    recomputation, never changes the output. Unnamed entries carry empty track, artist and album
    names: the ids are all a model gets.
    """

    def __init__(self, catalog: Catalog, max_cached: int = 300_000, named: bool = True):
        self.catalog = catalog
        self.max_cached = max_cached
        self.named = named
        self._tracks: dict[int, str] = {}
        self._albums: dict[int, str] = {}

    def _names(self, kind: int, indices: np.ndarray) -> list[str]:
        return (pseudo_names(self.catalog.seed, kind, indices) if self.named
                else [""] * len(indices))

    def _album_fields(self, albums: list[int]) -> None:
        c = self.catalog
        idx = np.array(albums, dtype=np.int64)
        artists = c.album_artist[idx]
        rows = zip(albums, self._names(KIND_ARTIST, artists),
                   c.artist_ids[artists].tolist(), self._names(KIND_ALBUM, idx),
                   c.album_ids[idx].tolist())
        for album, artist_name, artist_id, album_name, album_id in rows:
            self._albums[album] = (
                f'"artist_name":{_JSON.encode(artist_name)},'
                f'"artist_uri":"spotify:artist:{artist_id.decode()}",'
                f'"album_name":{_JSON.encode(album_name)},'
                f'"album_uri":"spotify:album:{album_id.decode()}"'
            )

    def _track_fields(self, tracks: list[int]) -> None:
        c = self.catalog
        idx = np.array(tracks, dtype=np.int64)
        albums = c.track_album[idx].tolist()
        _bounded_fill(self._albums, albums, self.max_cached, self._album_fields)
        rows = zip(tracks, self._names(KIND_TRACK, idx), c.track_ids[idx].tolist(),
                   albums, c.track_duration_ms[idx].tolist())
        for track, name, track_id, album, duration in rows:
            self._tracks[track] = (
                f'"track_name":{_JSON.encode(name)},'
                f'"track_uri":"spotify:track:{track_id.decode()}",'
                f'{self._albums[album]},"duration_ms":{duration}}}'
            )

    def prepare(self, tracks: np.ndarray) -> None:
        """Formats the uncached tracks among `tracks` in one batch (cheaper than one by one)."""
        _bounded_fill(self._tracks, tracks.tolist(), self.max_cached, self._track_fields)

    def entries(self, tracks: np.ndarray, positions: list[int] | None = None) -> str:
        """The JSON list of track entries; `pos` is 0.. unless `positions` are given."""
        self.prepare(tracks)
        cache = self._tracks
        keys = tracks.tolist()
        positions = positions if positions is not None else range(len(keys))
        return "[" + ",".join(f'{{"pos":{p},{cache[t]}' for p, t in zip(positions, keys)) + "]"


def playlist_json(fields: dict, entries: str) -> str:
    """One playlist object: the fields, then `tracks` (preformatted entries)."""
    return f'{_JSON.encode(fields)[:-1]},"tracks":{entries}}}'


def playlist_fields(rng: np.random.Generator, catalog: Catalog, pid: int,
                    playlist: LatentPlaylist, named: bool = True) -> dict:
    """The MPD fields of a playlist other than `tracks`; unnamed ones have an empty name and no
    description (and draw no random numbers for them)."""
    tracks = playlist.tracks
    dominant = int(playlist.tastes[0])
    fields: dict = {"pid": pid, "name": playlist_name(rng, catalog, dominant) if named else ""}
    if named and rng.random() < 0.02:
        fields["description"] = playlist_description(rng, catalog, dominant)
    fields.update(
        modified_at=playlist.day * 86_400,
        num_artists=len(np.unique(catalog.track_artist[tracks])),
        num_albums=len(np.unique(catalog.track_album[tracks])),
        num_tracks=len(tracks),
        # Followers are mostly 1 (the owner) with a Pareto tail; edits grow with length.
        num_followers=1 + int(rng.pareto(2.0)),
        num_edits=1 + int(rng.poisson(0.25 * len(tracks))),
        duration_ms=int(catalog.track_duration_ms[tracks].sum()),
        collaborative="true" if rng.random() < 0.02 else "false",
    )
    return fields
