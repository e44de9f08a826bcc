"""The strict streaming reader on hand-written valid and broken MPD files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_slice
from segue.batch.mpd import MpdFormatError, read_challenge_set, read_playlists, read_slice, slice_files


def test_reads_every_playlist_and_track_of_the_fixture(fixture_mpd: Path):
    playlists = list(read_playlists(fixture_mpd))
    assert [p["pid"] for p in playlists] == [0, 1, 2]
    assert [len(p["tracks"]) for p in playlists] == [4, 3, 2]
    assert playlists[1]["description"] == "road trip 🚗"
    assert "description" not in playlists[0]  # optional field stays optional
    assert playlists[1]["name"] == ""  # empty names are legal


def test_truncated_json_names_the_file(tmp_path: Path, fixture_mpd: Path):
    text = (fixture_mpd / "mpd.slice.0-2.json").read_text()
    path = write_slice(tmp_path, text[: len(text) // 2])
    with pytest.raises(MpdFormatError, match=r"mpd\.slice\.0-2\.json: not valid JSON.*truncated") as e:
        list(read_slice(path))
    assert e.value.file == str(path)


@pytest.mark.parametrize("mutate, pid, field, reason", [
    (lambda d: d["playlists"][1]["tracks"][2].pop("track_uri"), 1, "tracks[2].track_uri", "missing"),
    (lambda d: d["playlists"][0].pop("modified_at"), 0, "modified_at", "missing"),
    (lambda d: d["playlists"][1].update(num_tracks="3"), 1, "num_tracks", "valid integer"),
    (lambda d: d["playlists"][2].update(collaborative=True), 2, "collaborative", "true"),
    (lambda d: d["playlists"][0]["tracks"][1].update(artist_uri="spotify:artist:short"), 0,
     "tracks[1].artist_uri", "pattern"),
])
def test_broken_record_names_file_pid_and_field(tmp_path, fixture_doc, mutate, pid, field, reason):
    mutate(fixture_doc)
    path = write_slice(tmp_path, fixture_doc)
    with pytest.raises(MpdFormatError, match=reason) as e:
        list(read_slice(path))
    assert (e.value.file, e.value.pid, e.value.field) == (str(path), pid, field)
    assert f"pid={pid}" in str(e.value) and field in str(e.value)


def test_reader_streams_slice_by_slice(tmp_path, fixture_doc):
    write_slice(tmp_path, fixture_doc, "mpd.slice.0-2.json")
    write_slice(tmp_path, "{ broken", "mpd.slice.3-5.json")
    playlists = read_playlists(tmp_path)
    assert [next(playlists)["pid"] for _ in range(3)] == [0, 1, 2]  # first slice served before the second is read
    with pytest.raises(MpdFormatError, match=r"mpd\.slice\.3-5\.json"):
        next(playlists)


def test_slice_files_are_in_pid_order_and_others_ignored(tmp_path, fixture_doc):
    for start in (10000, 0, 2000, 1000):
        write_slice(tmp_path, fixture_doc, f"mpd.slice.{start}-{start + 999}.json")
    (tmp_path / "challenge_set.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not a slice")
    assert [p.name.split(".")[2] for p in slice_files(tmp_path)] == [
        "0-999", "1000-1999", "2000-2999", "10000-10999"]


def test_empty_folder_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MPD slice files"):
        slice_files(tmp_path)


def _challenge(fixture_doc: dict) -> dict:
    seeds = fixture_doc["playlists"][0]["tracks"][:2]
    return {"date": "2018-01-16 08:47:28.198015", "version": "v1", "playlists": [
        {"pid": 1000002, "name": "party", "num_holdouts": 2, "num_samples": 2, "num_tracks": 4, "tracks": seeds},
        {"pid": 1000003, "num_holdouts": 5, "num_samples": 0, "num_tracks": 5, "tracks": []},
    ]}


def test_challenge_set_reads_with_optional_name(tmp_path, fixture_doc):
    path = tmp_path / "challenge_set.json"
    path.write_text(json.dumps(_challenge(fixture_doc)))
    playlists = list(read_challenge_set(path))
    assert [p["num_samples"] for p in playlists] == [2, 0]
    assert "name" not in playlists[1]


def test_challenge_set_with_inconsistent_samples_fails(tmp_path, fixture_doc):
    doc = _challenge(fixture_doc)
    doc["playlists"][0]["num_samples"] = 3
    path = tmp_path / "challenge_set.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(MpdFormatError, match="num_samples is 3 but 2 tracks") as e:
        list(read_challenge_set(path))
    assert e.value.pid == 1000002
