"""The latent world behind a synthetic MPD: tastes, and a catalogue of artists, albums and tracks.

Everything is held as numpy arrays indexed by artist, album or track number, so a catalogue for
a million playlists (about 2.8M tracks) peaks near 0.6 GB. Tracks are numbered album by
album and albums artist by artist, so an album's (or an artist's) tracks are one contiguous range,
ordered by release day within the artist.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

GENRES = (
    "rock", "pop", "hip hop", "country", "jazz", "edm", "indie", "r&b", "latin", "metal", "folk",
    "classical", "reggae", "punk", "soul", "blues", "k-pop", "lofi", "house", "trap", "funk",
    "gospel", "disco", "techno", "emo", "grunge", "ska", "afrobeat",
)
MOODS = (
    "chill", "workout", "party", "sad", "happy", "road trip", "study", "sleep", "summer",
    "throwback", "love", "focus", "rainy day", "morning", "late night", "feels",
)
# Tastes that draw mostly on old releases are named as eras of the past, and the reverse.
OLD_ERAS = ("classic", "old school", "90s", "2000s")
NEW_ERAS = ("new", "fresh", "latest", "current")
SUBGENRE_WORDS = (
    "alt", "modern", "deep", "dark", "nu", "neo", "dream", "progressive", "underground",
    "melodic", "experimental", "acoustic",
)
AUDIO_FEATURES = (
    "danceability", "energy", "speechiness", "acousticness", "instrumentalness", "liveness",
    "valence",
)

EPOCH = date(1970, 1, 1)
DAYS_PER_YEAR = 365.25
HISTORY_YEARS = 10  # artists debut up to this long before the first playlist
FUTURE_DAYS = 182  # the challenge period after `end`, when new artists and albums still appear
RECENT_DAYS = 120  # how long a release counts as "new" for the recency boost
# The chart: hits across all tastes that any playlist mixes in a little of. Its weights are the
# latent popularity to a power above 1 and a third of its draws are new releases: top-heavy.
CHART_EXPONENT = 1.7
CHART_RECENCY = 0.35

# Catalogue size per playlist of scale, close to the real MPD's 296k artists, 735k albums and
# 2.26M tracks for 1M playlists; the floor keeps small samples dense enough to learn from.
ARTISTS_PER_PLAYLIST = 0.3
MIN_SCALE = 2_000

# Stream numbers that keep the random draws of each part independent of the others.
STREAM_CATALOG, STREAM_METADATA, STREAM_SLICE, STREAM_CHALLENGE = 1, 2, 3, 4
KIND_TRACK, KIND_ALBUM, KIND_ARTIST = 1, 2, 3


@dataclass(frozen=True)
class CatalogShape:
    """The knobs of `build_catalog` a profile may turn; the defaults make the demo (MPD-like)
    catalogue. Changing a number here never changes which random draws are made, only their scale.
    """

    artists_per_playlist: float = ARTISTS_PER_PLAYLIST
    min_scale: int = MIN_SCALE  # playlists the catalogue is sized for at least
    artist_sigma: float = 1.6  # log-sd of an artist's popularity
    album_sigma: float = 0.8  # ... of an album's, on top of its artist's
    track_sigma: float = 1.1  # ... of a track's, on top of its album's
    album_p: float = 0.55  # albums per artist are geometric(album_p)
    tracks_per_album_p: float = 0.45  # tracks per album are 3 + geometric(p), at most 15
    # None: lengths drawn around each taste's median; a number: every track lasts that long (for
    # sources that carry no durations).
    duration_ms: int | None = None
    # Sources that know no albums name one placeholder album per artist; the latent albums still
    # set release days, so artists keep releasing over time.
    one_album_per_artist: bool = False


_BASE62 = np.frombuffer(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8
)
_ID_CHUNK = 1 << 16
_SYLLABLES = (
    "ka", "lo", "mi", "ra", "ven", "tor", "sha", "ni", "bel", "do", "ri", "zan", "mo", "lu", "fe",
    "sta", "gri", "na", "vo", "el", "ar", "tin", "ko", "ma", "sol", "ve", "da", "ny", "ro", "qui",
    "bra", "li", "pa", "sen", "hu", "cal", "di", "om", "ja", "wex",
)
_TRACK_SUFFIXES = ("", "", "", "", "", "", "", "", " - Remix", " (Live)", " - Radio Edit",
                   " (feat. {})")
_ARTIST_PREFIXES = ("", "", "", "", "", "The ", "DJ ", "Lil ", "MC ")


def epoch_day(day: date) -> int:
    """Days since 1970-01-01."""
    return (day - EPOCH).days


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer: distinct inputs give distinct, well-scrambled outputs."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash_streams(seed: int, kind: int, salt: int, indices: np.ndarray, width: int) -> np.ndarray:
    """A (len(indices), width) matrix of 64-bit hashes of (seed, kind, salt, index)."""
    base = _splitmix64(np.array([(seed * 64 + kind * 8 + salt) & (2**64 - 1)], dtype=np.uint64))
    state = _splitmix64(indices.astype(np.uint64) + base)
    out = np.empty((len(indices), width), dtype=np.uint64)
    for j in range(width):
        state = _splitmix64(state)
        out[:, j] = state
    return out


def base62_ids(seed: int, kind: int, count: int) -> np.ndarray:
    """The 22-character base62 ids of items 0..count-1 of a kind, as an `S22` array."""
    out = np.empty(count, dtype="S22")
    # In chunks: the (n, 22) hash matrix of millions of tracks would not fit in a small budget.
    for lo in range(0, count, _ID_CHUNK):
        hi = min(lo + _ID_CHUNK, count)
        digits = _hash_streams(seed, kind, 0, np.arange(lo, hi), 22) % np.uint64(62)
        out[lo:hi] = _BASE62[digits].view("S22").ravel()
    return out


def _pseudo_word(h: int) -> str:
    count = 1 + h % 3
    h //= 3
    parts = []
    for _ in range(count):
        parts.append(_SYLLABLES[h % len(_SYLLABLES)])
        h //= len(_SYLLABLES)
    return "".join(parts)


def pseudo_names(seed: int, kind: int, indices: np.ndarray) -> list[str]:
    """Deterministic made-up names for the given items of a kind (track, album or artist)."""
    hashes = _hash_streams(seed, kind, 1, np.asarray(indices), 6).tolist()
    names = []
    for h in hashes:
        if kind == KIND_ARTIST:
            words = [_pseudo_word(x).capitalize() for x in h[1:2 + h[0] % 2]]
            names.append(_ARTIST_PREFIXES[h[5] % len(_ARTIST_PREFIXES)] + " ".join(words))
            continue
        words = [_pseudo_word(x) for x in h[1:2 + h[0] % (4 if kind == KIND_TRACK else 3)]]
        name = " ".join(words).capitalize() if h[5] % 3 else " ".join(words).title()
        if kind == KIND_TRACK:
            suffix = _TRACK_SUFFIXES[(h[5] >> 8) % len(_TRACK_SUFFIXES)]
            name += suffix.format(_pseudo_word(h[5] >> 16).capitalize())
        names.append(name)
    return names


@dataclass(frozen=True)
class Tastes:
    """Latent tastes: words, audio-feature centroids and how their popularity drifts over time."""

    genre: tuple[str, ...]
    mood: tuple[str, ...]
    era: tuple[str, ...]
    base: np.ndarray  # log popularity at the middle of the playlist period
    slope: np.ndarray  # log popularity change per year
    amplitude: np.ndarray  # of a slow sinusoid on top of the trend
    period_years: np.ndarray
    phase: np.ndarray
    recency: np.ndarray  # share of a taste's draws taken from the last RECENT_DAYS of releases
    centroid: np.ndarray  # (tastes, len(AUDIO_FEATURES)) in 0..1
    loudness: np.ndarray
    tempo: np.ndarray
    key: np.ndarray
    major: np.ndarray  # probability of mode 1
    explicit: np.ndarray
    duration_ms: np.ndarray  # median track length
    mid_day: float

    @property
    def count(self) -> int:
        return len(self.genre)

    def weights(self, day: int) -> np.ndarray:
        """Unnormalised popularity of each taste on an epoch day."""
        years = (day - self.mid_day) / DAYS_PER_YEAR
        wave = self.amplitude * np.sin(2 * math.pi * years / self.period_years + self.phase)
        return np.exp(self.base + self.slope * years + wave)


def _make_tastes(rng: np.random.Generator, count: int, mid_day: float) -> Tastes:
    genres = rng.permutation(len(GENRES))
    moods = rng.permutation(len(MOODS))
    recency = rng.uniform(0.03, 0.3, count)
    # Both lists are shuffled and cycled: (genre, mood) pairs stay distinct for 112 tastes.
    genre = tuple(GENRES[genres[i % len(GENRES)]] for i in range(count))
    mood = tuple(MOODS[moods[i % len(MOODS)]] for i in range(count))
    era = tuple(
        (OLD_ERAS if recency[i] < 0.12 else NEW_ERAS)[rng.integers(4)] if rng.random() < 0.5
        else "" for i in range(count)
    )
    return Tastes(
        genre=genre, mood=mood, era=era,
        base=rng.normal(0.0, 0.6, count),
        slope=rng.normal(0.0, 0.3, count),
        amplitude=rng.uniform(0.0, 0.6, count),
        period_years=rng.uniform(1.0, 4.0, count),
        phase=rng.uniform(0.0, 2 * math.pi, count),
        recency=recency,
        centroid=rng.beta(2.0, 2.0, (count, len(AUDIO_FEATURES))),
        loudness=rng.uniform(-14.0, -4.0, count),
        tempo=rng.uniform(75.0, 165.0, count),
        key=rng.integers(0, 12, count),
        major=rng.uniform(0.3, 0.9, count),
        explicit=rng.uniform(0.0, 0.4, count) ** 2,
        duration_ms=rng.uniform(170_000, 280_000, count),
        mid_day=mid_day,
    )


@dataclass(frozen=True)
class TasteTracks:
    """Every taste's tracks, taste after taste, each taste's sorted by release day.

    Taste k owns positions `offsets[k]:offsets[k + 1]`; the last "taste" (number `tastes`) is
    the chart, all tracks with top-heavy weights. `cumulative[i]` is the total sampling
    weight of positions before i, so a taste's released prefix on a day (or its recent window) is
    one position range, and draws from any mix of ranges take a single `searchsorted`.
    """

    tracks: np.ndarray
    days: np.ndarray
    cumulative: np.ndarray  # len(tracks) + 1
    offsets: np.ndarray  # tastes + 1

    def ranges(self, taste: int, day: int, recent_days: int) -> tuple[int, int, int]:
        """Positions where the taste starts, its recent window starts and its released end."""
        lo, hi = int(self.offsets[taste]), int(self.offsets[taste + 1])
        days = self.days[lo:hi]
        released = lo + int(np.searchsorted(days, day, side="right"))
        recent = lo + int(np.searchsorted(days, day - recent_days, side="right"))
        return lo, recent, released


@dataclass(frozen=True)
class Catalog:
    """Artists, albums and tracks as arrays, plus per-taste sampling indexes."""

    seed: int
    tastes: Tastes
    first_day: int  # the first playlist day
    last_day: int  # the last playlist day of the slices
    horizon_day: int  # the end of the challenge period
    artist_taste: np.ndarray
    artist_second_taste: np.ndarray  # -1 where the artist has a single taste
    artist_weight: np.ndarray
    artist_first_track: np.ndarray  # (artists + 1) offsets into the track arrays
    album_artist: np.ndarray
    album_day: np.ndarray
    album_first_track: np.ndarray  # (albums + 1) offsets into the track arrays
    track_album: np.ndarray
    track_artist: np.ndarray
    track_day: np.ndarray
    track_weight: np.ndarray  # latent popularity: artist x album x track
    track_duration_ms: np.ndarray
    first_release_day: int
    artist_day_key: np.ndarray  # artist << 32 | days since first_release_day
    by_taste: TasteTracks
    track_ids: np.ndarray  # S22 base62 ids
    album_ids: np.ndarray
    artist_ids: np.ndarray

    @property
    def n_tracks(self) -> int:
        return len(self.track_album)

    @property
    def n_albums(self) -> int:
        return len(self.album_artist)

    @property
    def n_artists(self) -> int:
        return len(self.artist_taste)

    def released_artist_end(self, artists: np.ndarray, day: int) -> np.ndarray:
        """For each artist, the end of its track range released on or before `day`."""
        key = (artists.astype(np.int64) << 32) | (day - self.first_release_day)
        return np.searchsorted(self.artist_day_key, key, side="right")


def growing_days(rng: np.random.Generator, first: int, last: int, n: int, growth: float
                 ) -> np.ndarray:
    """n days in [first, last] with a density growing exponentially (rate per year)."""
    span = (last - first) / DAYS_PER_YEAR
    u = rng.random(n)
    years = np.log1p(u * np.expm1(growth * span)) / growth
    return np.minimum(first + np.floor(years * DAYS_PER_YEAR).astype(np.int64), last)


def build_catalog(seed: int, tastes: int, playlists: int, start: date, end: date,
                  shape: CatalogShape = CatalogShape()) -> Catalog:
    """Builds the latent catalogue for a sample of `playlists` playlists over [start, end]."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, STREAM_CATALOG])))
    first_day, last_day = epoch_day(start), epoch_day(end)
    horizon_day = last_day + FUTURE_DAYS
    taste_table = _make_tastes(rng, tastes, (first_day + last_day) / 2)

    n_artists = int(shape.artists_per_playlist * max(playlists, shape.min_scale))
    taste_share = rng.dirichlet(np.full(tastes, 4.0))
    artist_taste = rng.choice(tastes, n_artists, p=taste_share)
    second = rng.choice(tastes, n_artists, p=taste_share)
    artist_second_taste = np.where((rng.random(n_artists) < 0.2) & (second != artist_taste),
                                   second, -1)
    history_start = first_day - int(HISTORY_YEARS * DAYS_PER_YEAR)
    debut = np.sort(growing_days(rng, history_start, horizon_day, n_artists, growth=0.12))
    artist_weight = rng.lognormal(0.0, shape.artist_sigma, n_artists)

    # Albums: the first on the debut day, the rest spread over the following years.
    albums_per_artist = rng.geometric(shape.album_p, n_artists)
    album_artist = np.repeat(np.arange(n_artists), albums_per_artist)
    n_albums = len(album_artist)
    career = np.minimum(horizon_day - debut, int(8 * DAYS_PER_YEAR))[album_artist]
    offset = np.floor(rng.random(n_albums) * (career + 1)).astype(np.int64)
    album_first = np.r_[0, np.cumsum(albums_per_artist)[:-1]]
    offset[album_first] = 0
    album_day = debut[album_artist] + offset
    # Sort albums by day within each artist so an artist's released tracks are a prefix.
    order = np.lexsort((album_day, album_artist))
    album_day = album_day[order]
    album_weight = rng.lognormal(0.0, shape.album_sigma, n_albums)

    tracks_per_album = np.minimum(3 + rng.geometric(shape.tracks_per_album_p, n_albums), 15)
    album_first_track = np.r_[0, np.cumsum(tracks_per_album)].astype(np.int64)
    track_album = np.repeat(np.arange(n_albums), tracks_per_album)
    n_tracks = len(track_album)
    track_artist = album_artist[track_album]
    track_day = album_day[track_album]
    track_weight = (artist_weight[track_artist] * album_weight[track_album]
                    * rng.lognormal(0.0, shape.track_sigma, n_tracks))
    track_taste = artist_taste[track_artist]
    track_duration_ms = np.clip(
        taste_table.duration_ms[track_taste] * rng.lognormal(0.0, 0.22, n_tracks),
        30_000, 900_000,
    ).astype(np.int64)
    if shape.duration_ms is not None:
        track_duration_ms = np.full(n_tracks, shape.duration_ms, dtype=np.int64)
    artist_first_track = np.r_[0, np.cumsum(np.bincount(track_artist, minlength=n_artists))]
    if shape.one_album_per_artist:
        # An artist's tracks are one contiguous range already, so it becomes the album.
        album_artist, album_day = np.arange(n_artists), debut
        album_first_track, track_album, n_albums = artist_first_track, track_artist, n_artists
    first_release_day = int(track_day.min())
    artist_day_key = (track_artist.astype(np.int64) << 32) | (track_day - first_release_day)

    return Catalog(
        seed=seed, tastes=taste_table, first_day=first_day, last_day=last_day,
        horizon_day=horizon_day,
        artist_taste=artist_taste, artist_second_taste=artist_second_taste,
        artist_weight=artist_weight, artist_first_track=artist_first_track,
        album_artist=album_artist, album_day=album_day, album_first_track=album_first_track,
        track_album=track_album, track_artist=track_artist, track_day=track_day,
        track_weight=track_weight, track_duration_ms=track_duration_ms,
        first_release_day=first_release_day, artist_day_key=artist_day_key,
        by_taste=_index_tastes(tastes, artist_taste, artist_second_taste, track_artist,
                               track_day, track_weight),
        track_ids=base62_ids(seed, KIND_TRACK, n_tracks),
        album_ids=base62_ids(seed, KIND_ALBUM, n_albums),
        artist_ids=base62_ids(seed, KIND_ARTIST, n_artists),
    )


def _index_tastes(tastes: int, artist_taste: np.ndarray, artist_second_taste: np.ndarray,
                  track_artist: np.ndarray, track_day: np.ndarray, track_weight: np.ndarray
                  ) -> TasteTracks:
    all_tracks = np.arange(len(track_artist))
    primary = artist_taste[track_artist]
    secondary = artist_second_taste[track_artist]
    parts, weights, sizes = [], [], []
    for taste in range(tastes):
        # A second taste gets the artist's tracks at half weight: it is a side line.
        main, side = all_tracks[primary == taste], all_tracks[secondary == taste]
        tracks = np.concatenate([main, side])
        weight = np.concatenate([track_weight[main], 0.5 * track_weight[side]])
        order = np.argsort(track_day[tracks], kind="stable")
        parts.append(tracks[order])
        weights.append(weight[order])
        sizes.append(len(tracks))
    chart = np.argsort(track_day, kind="stable")
    parts.append(chart)
    weights.append(track_weight[chart] ** CHART_EXPONENT)
    sizes.append(len(chart))
    tracks = np.concatenate(parts)
    return TasteTracks(
        tracks=tracks,
        days=track_day[tracks],
        cumulative=np.concatenate([[0.0], np.cumsum(np.concatenate(weights))]),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
    )


_METADATA_CHUNK = 100_000
_TIME_SIGNATURES = np.array([4, 3, 5, 7, 6])
_TIME_SIGNATURE_P = np.array([0.9, 0.06, 0.025, 0.01, 0.005])


def _popularity_0_100(weight: np.ndarray) -> np.ndarray:
    """Spotify-style popularity, a monotone function of the latent weight."""
    log_w = np.log(weight)
    z = (log_w - log_w.mean()) / max(log_w.std(), 1e-9)
    return np.clip(np.round(40 + 15 * z), 0, 100).astype(np.int64)


def _metadata_rng(catalog: Catalog, *path: int) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([catalog.seed, STREAM_METADATA, *path]))
    )


def track_metadata_rows(catalog: Catalog) -> Iterator[list[dict]]:
    """`TrackMetadata` rows for the whole catalogue, in chunks; features carry the taste."""
    tastes = catalog.tastes
    artist_offset = _metadata_rng(catalog, 0).normal(
        0.0, 0.06, (catalog.n_artists, len(AUDIO_FEATURES))
    )
    popularity = _popularity_0_100(catalog.track_weight)
    for chunk, lo in enumerate(range(0, catalog.n_tracks, _METADATA_CHUNK)):
        rng = _metadata_rng(catalog, 1, chunk)
        hi = min(lo + _METADATA_CHUNK, catalog.n_tracks)
        n = hi - lo
        artist = catalog.track_artist[lo:hi]
        taste = catalog.artist_taste[artist]
        features = np.clip(tastes.centroid[taste] + artist_offset[artist]
                           + rng.normal(0.0, 0.08, (n, len(AUDIO_FEATURES))), 0.0, 1.0)
        loudness = np.clip(tastes.loudness[taste] + rng.normal(0.0, 1.5, n), -40.0, -0.5)
        tempo = np.clip(tastes.tempo[taste] * rng.lognormal(0.0, 0.08, n), 40.0, 220.0)
        key = np.where(rng.random(n) < 0.3, tastes.key[taste], rng.integers(0, 12, n))
        mode = (rng.random(n) < tastes.major[taste]).astype(np.int64)
        signature = rng.choice(_TIME_SIGNATURES, n, p=_TIME_SIGNATURE_P)
        explicit = rng.random(n) < tastes.explicit[taste]
        release = [(EPOCH + timedelta(days=int(d))).isoformat()
                   for d in catalog.track_day[lo:hi]]
        rows = []
        feature_rows = np.round(features, 3).tolist()
        for i, (ident, f) in enumerate(zip(catalog.track_ids[lo:hi].tolist(), feature_rows)):
            row = {"track_uri": "spotify:track:" + ident.decode(),
                   "popularity": int(popularity[lo + i]), "explicit": bool(explicit[i]),
                   "release_date": release[i]}
            row.update(zip(AUDIO_FEATURES, f))
            row.update(loudness=round(float(loudness[i]), 2), tempo=round(float(tempo[i]), 3),
                       key=int(key[i]), mode=int(mode[i]), time_signature=int(signature[i]))
            rows.append(row)
        yield rows


def artist_metadata_rows(catalog: Catalog) -> list[dict]:
    """`ArtistMetadata` rows: the taste's genre plus 0-2 sub-genres (and a second taste's genre)."""
    rng = _metadata_rng(catalog, 2)
    n = catalog.n_artists
    popularity = _popularity_0_100(catalog.artist_weight)
    followers = np.round(catalog.artist_weight ** 1.5 * 2_000 * rng.lognormal(0.0, 0.5, n))
    extra = rng.integers(0, 3, n)
    words = rng.integers(0, len(SUBGENRE_WORDS), (n, 2))
    genre = catalog.tastes.genre
    rows = []
    for a, ident in enumerate(catalog.artist_ids.tolist()):
        main = genre[catalog.artist_taste[a]]
        genres = [main] + [f"{SUBGENRE_WORDS[w]} {main}" for w in words[a, :extra[a]]]
        if catalog.artist_second_taste[a] >= 0:
            genres.append(genre[catalog.artist_second_taste[a]])
        rows.append({"artist_uri": "spotify:artist:" + ident.decode(),
                     "genres": list(dict.fromkeys(genres)),
                     "popularity": int(popularity[a]), "followers": int(followers[a])})
    return rows
