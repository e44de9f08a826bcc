"""Strict, streaming reader for MPD slice files and `challenge_set.json`.

One slice (1,000 playlists) is held in memory at a time. Every playlist is validated against
`records.Playlist`; the first problem raises `MpdFormatError` naming the file, the pid and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from segue.batch.mpd.records import ChallengePlaylist, Playlist, SliceInfo

SLICE_NAME = re.compile(r"^mpd\.slice\.(\d+)-(\d+)\.json$")

_PLAYLIST = TypeAdapter(Playlist)
_CHALLENGE_PLAYLIST = TypeAdapter(ChallengePlaylist)
_SLICE_INFO = TypeAdapter(SliceInfo)


class MpdFormatError(ValueError):
    """A file that does not follow the MPD format; says where and what to do."""

    def __init__(self, file: Path | str, reason: str, pid: Any = None, field: str | None = None):
        self.file, self.reason, self.pid, self.field = str(file), reason, pid, field
        where = [self.file]
        if pid is not None:
            where.append(f"pid={pid}")
        if field:
            where.append(f"field `{field}`")
        super().__init__(
            f"{', '.join(where)}: {reason}. "
            "Fix or remove this record (the MPD README describes each field)."
        )


def slice_files(folder: Path | str) -> list[Path]:
    """The slice files of a folder in pid order (`mpd.slice.<start>-<end>.json`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MPD folder {folder} does not exist")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := SLICE_NAME.match(p.name))]
    if not found:
        raise FileNotFoundError(
            f"no MPD slice files (mpd.slice.<start>-<end>.json) in {folder}"
        )
    return [p for _, p in sorted(found)]


def _load_json(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise MpdFormatError(path, f"not valid JSON at line {e.lineno} column {e.colno} ({e.msg}); "
                             "the file may be truncated") from e
    except UnicodeDecodeError as e:
        raise MpdFormatError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from e


def _field_path(loc: tuple[Any, ...]) -> str:
    """('tracks', 3, 'track_uri') -> 'tracks[3].track_uri'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validate(adapter: TypeAdapter, record: Any, path: Path, index: int) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise MpdFormatError(path, f"playlist #{index} is a {type(record).__name__}, not an object")
    try:
        return adapter.validate_python(record, strict=True)
    except ValidationError as e:
        first = e.errors()[0]
        problem = first["msg"]
        if first["type"] == "missing":
            problem = "required field is missing"
        elif "input" in first and first["type"] != "missing":
            problem = f"{first['msg']} (got {first['input']!r:.80})"
        raise MpdFormatError(path, problem, pid=record.get("pid", f"#{index}"),
                             field=_field_path(tuple(first["loc"]))) from None


def read_slice(path: Path | str) -> Iterator[Playlist]:
    """Yields the validated playlists of one slice file."""
    path = Path(path)
    doc = _load_json(path)
    if not isinstance(doc, dict) or "playlists" not in doc:
        raise MpdFormatError(path, "expected an object with `info` and `playlists`", field="playlists")
    if "info" in doc:
        try:
            _SLICE_INFO.validate_python(doc["info"], strict=True)
        except ValidationError as e:
            first = e.errors()[0]
            raise MpdFormatError(path, first["msg"], field="info." + ".".join(map(str, first["loc"]))) from None
    playlists = doc["playlists"]
    if not isinstance(playlists, list):
        raise MpdFormatError(path, "`playlists` must be a list", field="playlists")
    for i, record in enumerate(playlists):
        yield _validate(_PLAYLIST, record, path, i)


def read_playlists(source: Path | str | Iterable[Path]) -> Iterator[Playlist]:
    """Streams every playlist of a slice folder (or of the given slice files), slice by slice."""
    files = slice_files(source) if isinstance(source, (str, Path)) else list(source)
    for path in files:
        yield from read_slice(path)


def read_challenge_set(path: Path | str) -> Iterator[ChallengePlaylist]:
    """Yields the validated playlists of a `challenge_set.json`."""
    path = Path(path)
    doc = _load_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("playlists"), list):
        raise MpdFormatError(path, "expected an object with a `playlists` list", field="playlists")
    for i, record in enumerate(doc["playlists"]):
        playlist = _validate(_CHALLENGE_PLAYLIST, record, path, i)
        if playlist["num_samples"] != len(playlist["tracks"]):
            raise MpdFormatError(path, f"num_samples is {playlist['num_samples']} but "
                                 f"{len(playlist['tracks'])} tracks are given",
                                 pid=playlist["pid"], field="num_samples")
        yield playlist
