"""The synthetic MPD generator: format, determinism, and the structure a model must learn."""

import json
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter

from segue.batch.mpd.reader import read_challenge_set, read_slice, slice_files
from segue.batch.mpd.records import ArtistMetadata, TrackMetadata
from segue.batch.synth import generate
from segue.vocabulary import CATEGORIES

START, END = date(2011, 1, 1), date(2017, 11, 1)
PLAYLISTS, CHALLENGE, SLICE = 2_200, 100, 1_000


def _generate(out: Path, seed: int, playlists: int = PLAYLISTS, challenge: int = CHALLENGE,
              slice_size: int = SLICE) -> dict:
    return generate(out, playlists=playlists, seed=seed, tastes=16, start=START, end=END,
                    challenge_playlists=challenge, slice_size=slice_size, progress=False)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    _generate(out, seed=11)
    return out


@pytest.fixture(scope="module")
def playlists(sample) -> list[dict]:
    return [p for path in slice_files(sample) for p in read_slice(path)]


@pytest.fixture(scope="module")
def challenge(sample) -> list[dict]:
    return list(read_challenge_set(sample / "challenge_set.json"))


@pytest.fixture(scope="module")
def holdout(sample) -> list[dict]:
    return json.loads((sample / "challenge_holdout.json").read_text())["playlists"]


@pytest.fixture(scope="module")
def report(sample) -> dict:
    return json.loads((sample / "generator_report.json").read_text())


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _outputs(folder: Path) -> dict[str, bytes]:
    names = [p.name for p in slice_files(folder)] + [
        "metadata/tracks.jsonl", "metadata/artists.jsonl", "challenge_set.json",
        "challenge_holdout.json",
    ]
    return {name: (folder / name).read_bytes() for name in names}


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    small = {"playlists": 250, "challenge": 20, "slice_size": 100}
    _generate(tmp_path / "a", seed=3, **small)
    _generate(tmp_path / "b", seed=3, **small)
    _generate(tmp_path / "c", seed=4, **small)
    first, again, other = (_outputs(tmp_path / x) for x in "abc")
    assert list(first) == list(other)
    assert first == again
    assert all(first[name] != other[name] for name in first)


def test_slice_files_are_named_by_pid_range_and_pass_the_reader(sample, playlists):
    assert [p.name for p in slice_files(sample)] == [
        "mpd.slice.0-999.json", "mpd.slice.1000-1999.json", "mpd.slice.2000-2199.json"]
    assert [p["pid"] for p in playlists] == list(range(PLAYLISTS))
    info = json.loads((sample / "mpd.slice.2000-2199.json").read_text())["info"]
    assert info["slice"] == "2000-2199" and info["version"] == "v1"


def test_playlist_fields_agree_with_their_tracks(playlists):
    first, last = (datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()
                   for d in (START, END))
    for p in playlists:
        tracks = p["tracks"]
        assert p["num_tracks"] == len(tracks) and 5 <= len(tracks) <= 250
        assert [t["pos"] for t in tracks] == list(range(len(tracks)))
        assert len({t["track_uri"] for t in tracks}) == len(tracks)
        assert p["duration_ms"] == sum(t["duration_ms"] for t in tracks)
        assert all(t["duration_ms"] > 0 for t in tracks)
        assert p["num_artists"] == len({t["artist_uri"] for t in tracks})
        assert p["num_albums"] == len({t["album_uri"] for t in tracks})
        assert p["modified_at"] % 86_400 == 0 and first <= p["modified_at"] <= last
        assert p["num_followers"] >= 1 and p["num_edits"] >= 1
    lengths = np.array([p["num_tracks"] for p in playlists])
    assert 35 <= np.median(lengths) <= 70
    collaborative = np.mean([p["collaborative"] == "true" for p in playlists])
    assert 0.003 < collaborative < 0.05
    assert 0.003 < np.mean(["description" in p for p in playlists]) < 0.05
    assert 0.005 < np.mean([p["name"] == "" for p in playlists]) < 0.08


def test_tracks_keep_one_name_album_and_artist_everywhere(playlists):
    seen: dict[str, tuple] = {}
    for p in playlists:
        for t in p["tracks"]:
            fields = (t["track_name"], t["artist_uri"], t["artist_name"], t["album_uri"],
                      t["album_name"], t["duration_ms"])
            assert seen.setdefault(t["track_uri"], fields) == fields


def test_challenge_set_categories_seeds_and_holdouts(playlists, challenge, holdout):
    assert [c["pid"] for c in challenge] == list(range(PLAYLISTS, PLAYLISTS + CHALLENGE))
    assert [h["pid"] for h in holdout] == [c["pid"] for c in challenge]
    per_category = Counter(h["category"] for h in holdout)
    assert per_category == {c.name: CHALLENGE // len(CATEGORIES) for c in CATEGORIES}
    by_name = {c.name: c for c in CATEGORIES}
    for c, h in zip(challenge, holdout):
        category = by_name[h["category"]]
        assert c["num_samples"] == len(c["tracks"]) == category.seeds
        assert c["num_tracks"] == c["num_samples"] + c["num_holdouts"]
        assert c["num_holdouts"] == len(h["holdout_track_uris"]) >= 1
        assert ("name" in c) == category.titled
        assert c.get("name", "x") != ""
        positions = [t["pos"] for t in c["tracks"]]
        if not category.random_seeds:
            assert positions == list(range(category.seeds))
        assert positions == sorted(positions) and max(positions, default=0) < c["num_tracks"]
        assert not {t["track_uri"] for t in c["tracks"]} & set(h["holdout_track_uris"])
    random_positions = [[t["pos"] for t in c["tracks"]] for c, h in zip(challenge, holdout)
                        if by_name[h["category"]].random_seeds]
    assert any(pos != list(range(len(pos))) for pos in random_positions)
    assert min(c["num_tracks"] for c in challenge if c["num_samples"] == 100) > 100


def test_every_track_and_artist_has_valid_metadata(sample, playlists, holdout):
    tracks = {row["track_uri"]: row for row in _jsonl(sample / "metadata" / "tracks.jsonl")}
    artists = {row["artist_uri"]: row for row in _jsonl(sample / "metadata" / "artists.jsonl")}
    track_adapter, artist_adapter = TypeAdapter(TrackMetadata), TypeAdapter(ArtistMetadata)
    for row in list(tracks.values())[:300]:
        track_adapter.validate_python(row, strict=True)
    for row in list(artists.values())[:300]:
        artist_adapter.validate_python(row, strict=True)
        assert 1 <= len(row["genres"]) <= 4
    for p in playlists:
        modified = datetime.fromtimestamp(p["modified_at"], timezone.utc).date().isoformat()
        for t in p["tracks"]:
            assert t["artist_uri"] in artists
            # Nothing is played before it is released.
            assert tracks[t["track_uri"]]["release_date"] <= modified
    assert all(uri in tracks for h in holdout for uri in h["holdout_track_uris"])
    values = {name: np.array([row[name] for row in tracks.values()])
              for name in ("danceability", "energy", "valence", "loudness", "tempo", "key",
                           "mode", "time_signature", "popularity")}
    for name in ("danceability", "energy", "valence"):
        assert values[name].min() >= 0 and values[name].max() <= 1
    assert values["loudness"].max() < 0 and 40 <= values["tempo"].min()
    assert set(values["key"]) <= set(range(12)) and set(values["mode"]) <= {0, 1}
    assert set(values["time_signature"]) <= set(range(3, 8))
    assert values["popularity"].min() >= 0 and values["popularity"].max() <= 100


def test_audio_features_carry_the_artists_genre(sample):
    tracks = _jsonl(sample / "metadata" / "tracks.jsonl")
    artists = _jsonl(sample / "metadata" / "artists.jsonl")
    genre_of = {row["artist_uri"]: row["genres"][0] for row in artists}
    track_artist = {}
    for path in slice_files(sample):
        for p in read_slice(path):
            track_artist.update((t["track_uri"], t["artist_uri"]) for t in p["tracks"])
    rows = [(genre_of[track_artist[row["track_uri"]]], row["energy"], row["danceability"])
            for row in tracks if row["track_uri"] in track_artist]
    genres = np.array([g for g, *_ in rows])
    features = np.array([f for _, *f in rows])
    within = np.mean([features[genres == g].var(axis=0).sum() for g in set(genres)])
    # Tastes have their own centroids, so a genre's tracks vary far less than all tracks.
    assert within < 0.5 * features.var(axis=0).sum()


def test_popularity_is_heavy_tailed(playlists, report):
    counts = np.array(sorted(Counter(t["track_uri"] for p in playlists for t in p["tracks"])
                             .values(), reverse=True))
    top = max(1, round(len(counts) / 100))
    assert counts[:top].sum() / counts.sum() > 0.12
    assert report["statistics"]["entry_share_top_1pct_tracks"] == pytest.approx(
        counts[:top].sum() / counts.sum())


def test_playlists_spread_over_years_with_recent_years_busier(playlists, report):
    years = Counter(datetime.fromtimestamp(p["modified_at"], timezone.utc).year for p in playlists)
    assert len(years) >= 5
    assert years[2016] > 2 * years[2012] and years[2015] > years[2013]
    per_year = {str(year): n for year, n in sorted(years.items())}
    assert report["statistics"]["playlists_per_year"] == per_year


def test_new_tracks_keep_appearing(playlists, holdout):
    first_seen: dict[str, int] = {}
    for p in playlists:
        for t in p["tracks"]:
            first_seen[t["track_uri"]] = min(first_seen.get(t["track_uri"], p["modified_at"]),
                                             p["modified_at"])
    last_year = datetime(END.year - 1, END.month, END.day, tzinfo=timezone.utc).timestamp()
    assert np.mean([day >= last_year for day in first_seen.values()]) > 0.03
    held_out = [uri for h in holdout for uri in h["holdout_track_uris"]]
    unseen = np.mean([uri not in first_seen for uri in held_out])
    assert 0.03 < unseen < 0.4


def test_playlists_run_through_albums_and_artists(playlists):
    pairs = [(a, b) for p in playlists for a, b in zip(p["tracks"], p["tracks"][1:])]
    same_artist = np.mean([a["artist_uri"] == b["artist_uri"] for a, b in pairs])
    rng = np.random.default_rng(0)
    shuffled = [rng.permutation(len(p["tracks"])) for p in playlists]
    chance = np.mean([p["tracks"][i]["artist_uri"] == p["tracks"][j]["artist_uri"]
                      for p, order in zip(playlists, shuffled) for i, j in zip(order, order[1:])])
    assert same_artist > 0.15 and same_artist > 2 * chance


def test_oracle_beats_popularity_on_the_challenge(sample, report):
    yardsticks = report["yardsticks"]
    oracle, popularity = yardsticks["oracle"]["overall"], yardsticks["popularity"]["overall"]
    assert oracle["r_precision"] > popularity["r_precision"] + 0.1
    assert oracle["recall@500"] > popularity["recall@500"] + 0.1
    assert set(yardsticks["oracle"]["by_category"]) == {c.name for c in CATEGORIES}
    text = (sample / "generator_report.md").read_text()
    assert "## Yardsticks on the challenge set" in text and "title_random_100" in text


# The ids_only profile: a source where ids are all there is (a radio-playlist dataset's shape).

IDS_PLAYLISTS, IDS_CHALLENGE = 500, 20


@pytest.fixture(scope="module")
def ids_sample(tmp_path_factory) -> Path:
    from click.testing import CliRunner

    from segue.cli import cli

    out = tmp_path_factory.mktemp("ids_only")
    result = CliRunner().invoke(cli, [
        "data", "generate", "--profile", "ids_only", "--playlists", str(IDS_PLAYLISTS),
        "--challenge", str(IDS_CHALLENGE), "--seed", "11", "--tastes", "16", "--out", str(out),
        "--quiet"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def ids_playlists(ids_sample) -> list[dict]:
    return [p for path in slice_files(ids_sample) for p in read_slice(path)]


@pytest.fixture(scope="module")
def ids_report(ids_sample) -> dict:
    return json.loads((ids_sample / "generator_report.json").read_text())


def test_ids_only_writes_ids_and_no_metadata(ids_sample, ids_playlists):
    assert not (ids_sample / "metadata").exists()
    assert len(ids_playlists) == IDS_PLAYLISTS
    album_of_artist: dict[str, str] = {}
    for p in ids_playlists:
        assert p["name"] == "" and "description" not in p
        tracks = p["tracks"]
        assert p["num_albums"] == p["num_artists"] == len({t["artist_uri"] for t in tracks})
        assert p["duration_ms"] == 210_000 * len(tracks)
        for t in tracks:
            assert t["duration_ms"] == 210_000
            assert t["track_name"] == t["artist_name"] == t["album_name"] == ""
            assert album_of_artist.setdefault(t["artist_uri"], t["album_uri"]) == t["album_uri"]
    # One placeholder album per artist: no two artists share one.
    assert len(set(album_of_artist.values())) == len(album_of_artist)


def test_ids_only_challenge_has_empty_titles_and_the_reader_accepts_everything(ids_sample):
    from click.testing import CliRunner

    from segue.cli import cli

    challenge = list(read_challenge_set(ids_sample / "challenge_set.json"))
    holdout = json.loads((ids_sample / "challenge_holdout.json").read_text())["playlists"]
    titled = {c.name: c.titled for c in CATEGORIES}
    assert len(challenge) == len(holdout) == IDS_CHALLENGE
    for c, h in zip(challenge, holdout):
        assert c.get("name") == ("" if titled[h["category"]] else None)
    # `segue data validate` reads every slice and the challenge set strictly.
    result = CliRunner().invoke(cli, ["data", "validate", str(ids_sample)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["playlists"] == IDS_PLAYLISTS


def test_ids_only_playlists_are_long_with_rare_artist_runs_and_a_heavy_head(
        tmp_path, ids_playlists, ids_report):
    lengths = np.array([len(p["tracks"]) for p in ids_playlists])
    assert lengths.max() <= 250 and lengths.mean() > 120 and np.median(lengths) > 150
    assert np.percentile(lengths, 90) >= 240
    pairs = [(a["artist_uri"], b["artist_uri"]) for p in ids_playlists
             for a, b in zip(p["tracks"], p["tracks"][1:])]
    same_artist = np.mean([a == b for a, b in pairs])
    assert same_artist < 0.06
    distinct = np.mean([len({t["artist_uri"] for t in p["tracks"]}) / len(p["tracks"])
                        for p in ids_playlists])
    assert 0.4 < distinct < 0.8
    # The report states the shape as measured here.
    stats = ids_report["statistics"]
    assert ids_report["parameters"]["profile"] == "ids_only"
    assert stats["tracks_per_playlist_mean"] == pytest.approx(lengths.mean())
    assert stats["tracks_per_playlist_median"] == pytest.approx(np.median(lengths))
    assert stats["tracks_per_playlist_p90"] == pytest.approx(np.percentile(lengths, 90))
    assert stats["same_artist_consecutive_share"] == pytest.approx(same_artist)
    assert stats["distinct_artists_per_track"] == pytest.approx(distinct)
    # Heavier head and longer tail than the demo profile at the same seed and size.
    demo = _generate(tmp_path / "demo", seed=11, playlists=IDS_PLAYLISTS, challenge=IDS_CHALLENGE)
    assert stats["entry_share_top_1pct_tracks"] > demo["statistics"]["entry_share_top_1pct_tracks"]
    assert stats["track_share_seen_once"] > demo["statistics"]["track_share_seen_once"]
    assert demo["statistics"]["same_artist_consecutive_share"] > 3 * same_artist


def test_ids_only_playlists_cohere_so_the_oracle_beats_popularity(ids_sample, ids_report):
    yardsticks = ids_report["yardsticks"]
    oracle, popularity = yardsticks["oracle"]["overall"], yardsticks["popularity"]["overall"]
    assert oracle["recall@500"] > popularity["recall@500"] + 0.2
    text = (ids_sample / "generator_report.md").read_text()
    assert "## Shape (profile ids_only)" in text and "same artist consecutive share" in text


def test_ids_only_is_deterministic_for_a_seed(tmp_path):
    small = {"playlists": 200, "challenge": 20, "slice_size": 80}

    def outputs(folder: Path, seed: int) -> dict[str, bytes]:
        generate(folder, playlists=small["playlists"], seed=seed, tastes=16, start=START, end=END,
                 challenge_playlists=small["challenge"], slice_size=small["slice_size"],
                 progress=False, profile="ids_only")
        names = [p.name for p in slice_files(folder)] + ["challenge_set.json",
                                                        "challenge_holdout.json"]
        return {name: (folder / name).read_bytes() for name in names}

    first, again, other = (outputs(tmp_path / name, seed)
                           for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    assert list(first) == ["mpd.slice.0-79.json", "mpd.slice.80-159.json",
                           "mpd.slice.160-199.json", "challenge_set.json",
                           "challenge_holdout.json"]
    assert first == again
    assert all(first[name] != other[name] for name in first)


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(ValueError, match="ids_only"):
        generate(tmp_path, playlists=100, seed=1, tastes=4, start=START, end=END,
                 challenge_playlists=10, profile="radio")


def test_track_entries_are_the_same_whatever_the_cache_bound():
    """The entry caches are dropped when they overflow (a 1M-playlist run did, 115k playlists in):
    entries formatted through a tiny cache equal those formatted through an unbounded one."""
    from segue.batch.synth.catalog import build_catalog
    from segue.batch.synth.playlists import TrackEntryFormat

    catalog = build_catalog(3, 4, 200, date(2015, 1, 1), date(2017, 1, 1))
    tiny, unbounded = TrackEntryFormat(catalog, max_cached=5), TrackEntryFormat(catalog)
    rng = np.random.default_rng(0)
    n = len(catalog.track_ids)
    for _ in range(30):  # overlapping batches: some tracks cached, some not, albums shared
        tracks = rng.integers(0, min(n, 60), size=8)
        assert json.loads(tiny.entries(tracks)) == json.loads(unbounded.entries(tracks))
