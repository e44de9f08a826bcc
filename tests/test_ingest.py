"""Spark ingest with real Spark and real Great Expectations: round trip, contracts, atomic output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import write_slice
from segue.batch.contracts import ContractViolation
from segue.batch.ingest_mpd import TABLES, ingest
from segue.batch.mpd import MpdFormatError

pytestmark = pytest.mark.spark


def _table(output: Path, name: str):
    return pq.read_table(output / name).to_pandas()


def test_fixture_round_trip(spark, fixture_mpd, tmp_path):
    output = tmp_path / "warehouse" / "mpd"
    manifest = ingest(spark, fixture_mpd, output, fixture_mpd / "metadata")

    assert manifest["counts"] == {"playlists": 3, "playlist_tracks": 9, "tracks": 8, "artists": 5, "albums": 5}
    playlists = _table(output, "playlists").set_index("pid")
    assert playlists.loc[1, "collaborative"] and not playlists.loc[0, "collaborative"]
    assert playlists.loc[0, "event_timestamp"].timestamp() == 1493424000
    assert playlists.loc[1, "description"] == "road trip 🚗"

    entries = _table(output, "playlist_tracks")
    assert len(entries) == playlists["num_tracks"].sum()
    assert list(entries[entries.pid == 0].sort_values("pos")["track_uri"].str[-2:]) == ["01", "02", "03", "04"]

    tracks = _table(output, "tracks").set_index("track_uri")
    toxic = "spotify:track:tr00000000000000000002"
    assert tracks.loc[toxic, "num_entries"] == 2  # in playlists 0 and 1
    # first seen = the earlier of the two playlists' modified_at
    assert tracks.loc[toxic, "event_timestamp"].timestamp() == 1493424000
    assert tracks.loc[toxic, "popularity"] == 20
    assert tracks["popularity"].isna().sum() == manifest["tracks_without_metadata"] == 1

    artists = _table(output, "artists").set_index("artist_uri")
    assert list(artists.loc["spotify:artist:ar00000000000000000005", "genres"]) == ["ambient", "chill"]

    for name in TABLES:  # UTC, microseconds: what Feast's DuckDB store can read
        assert str(pq.read_schema(next((output / name).glob("*.parquet"))).field("event_timestamp").type) \
            == "timestamp[us, tz=UTC]"


def test_slices_alone_without_metadata(spark, fixture_mpd, tmp_path):
    output = tmp_path / "mpd"
    manifest = ingest(spark, fixture_mpd, output, metadata_dir=None)
    assert manifest["counts"]["tracks"] == 8 and manifest["tracks_without_metadata"] == 8
    tracks = _table(output, "tracks")
    assert {"popularity", "danceability", "release_date"} <= set(tracks.columns)
    assert tracks["popularity"].isna().all()


def test_broken_slice_fails_and_previous_output_survives(spark, fixture_mpd, fixture_doc, tmp_path):
    output = tmp_path / "mpd"
    ingest(spark, fixture_mpd, output, None)
    published = os.readlink(output)
    before = sorted(p.name for p in (output / "playlists").iterdir())

    fixture_doc["playlists"][2]["tracks"][1]["duration_ms"] = "310000"
    broken = tmp_path / "broken"
    write_slice(broken, fixture_doc, "mpd.slice.0-2.json")
    write_slice(broken, (fixture_mpd / "mpd.slice.0-2.json").read_text()[:500], "mpd.slice.3-5.json")
    with pytest.raises(MpdFormatError) as e:
        ingest(spark, broken, output, None)
    assert "mpd.slice.0-2.json" in str(e.value) and "pid=2" in str(e.value)
    assert "tracks[1].duration_ms" in str(e.value) and "1 more file(s) are broken" in str(e.value)

    assert os.readlink(output) == published
    assert sorted(p.name for p in (output / "playlists").iterdir()) == before
    assert [p.name for p in (tmp_path / ".mpd.runs").iterdir()] == [Path(published).name]


def test_contract_violations_are_reported_and_nothing_is_written(spark, fixture_doc, tmp_path):
    p0, p1, p2 = fixture_doc["playlists"]
    p1["pid"] = 0                                  # duplicate pid
    p2["tracks"][1]["pos"] = 5                     # gap in pos
    p0["num_tracks"] = 7                           # count disagrees with the entries
    p0["collaborative"] = "maybe"                  # not "true"/"false"
    del p2["tracks"][0]["track_uri"]               # missing field
    slices = tmp_path / "slices"
    write_slice(slices, fixture_doc)
    output = tmp_path / "mpd"

    with pytest.raises(ContractViolation) as e:
        ingest(spark, slices, output, None)
    report = str(e.value)
    for rule in ("`pid` is unique", "contiguous from 0", "`num_tracks` equals the number of track entries",
                 '`collaborative` is "true" or "false"', "`track_uri` is present"):
        assert rule in report, f"{rule!r} missing from:\n{report}"
    assert "2 of 3 rows" in report  # both playlists with pid 0
    assert "source_file='mpd.slice.0-2.json'" in report
    assert not output.exists() and not any((tmp_path / ".mpd.runs").iterdir())


def test_a_failed_ingest_from_the_command_line_exits_1_and_keeps_the_previous_output(spark, fixture_mpd, tmp_path):
    """`segue batch ingest` on a broken folder after a good run: exit code 1, the file named, the
    good run's tables kept. (`spark-submit batch/ingest_mpd.py` itself runs, as the README writes
    it, in test_demo_by_hand.)"""
    output = tmp_path / "mpd"
    ingest(spark, fixture_mpd, output, None)
    broken = tmp_path / "broken"
    write_slice(broken, "{\"info\": {}, \"playlists\": [")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SEGUE_SPARK__DRIVER_MEMORY": "1g"}
    bad = subprocess.run([Path(sys.executable).parent / "segue", "batch", "ingest", "--input", broken, "--output", output],
                         env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1
    assert "mpd.slice.0-2.json: not valid JSON" in bad.stderr and "previous output" in bad.stderr
    assert (output / "_manifest.json").is_file() and sorted(_table(output, "playlists").pid) == [0, 1, 2]


def test_generated_sample_round_trip(spark, tmp_path):
    """Every playlist and track entry of a generated sample arrives; counts equal the reader's."""
    from datetime import date

    from segue.batch.mpd import read_playlists
    from segue.batch.synth import generate

    mpd = tmp_path / "mpd"
    generate(mpd, playlists=1500, seed=3, tastes=8, start=date(2015, 1, 1), end=date(2017, 1, 1),
             challenge_playlists=20, slice_size=500, progress=False)
    read = list(read_playlists(mpd))
    entries = {(p["pid"], t["pos"], t["track_uri"]) for p in read for t in p["tracks"]}

    output = tmp_path / "mpd-tables"
    manifest = ingest(spark, mpd, output, mpd / "metadata")
    assert manifest["slice_files"] == 3
    assert manifest["counts"]["playlists"] == len(read)
    assert manifest["counts"]["playlist_tracks"] == len(entries)
    assert manifest["counts"]["tracks"] == len({uri for _, _, uri in entries})
    got = _table(output, "playlist_tracks")
    assert set(zip(got.pid, got.pos, got.track_uri)) == entries
    assert manifest["tracks_without_metadata"] == 0  # the generator covers its whole catalogue
