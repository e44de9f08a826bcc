"""`segue stream publish`: sends track events to `segue.tracks.new`, keyed by track URI, and
playlist edits to `segue.playlists.edits`, keyed by pid."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaProducer

from segue.streaming.events import EventError, PlaylistEditEvent, TrackEvent, new_event, new_playlist_edit, parse_event


class EventFileError(ValueError):
    """Lines of an event file that are not valid events; nothing was sent."""


def read_event_file(path: Path, max_errors: int = 20, max_ahead_s: float | None = None,
                    kind: type[TrackEvent] | type[PlaylistEditEvent] = TrackEvent) -> list[dict]:
    """Events of `kind` from a JSON-lines file: whole events, or bare track objects / bare edits
    (`pid` and the changes; wrapped as events timed now). Every line is checked first, so a bad
    file sends nothing."""
    events, errors = [], []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                if isinstance(doc, dict) and "schema_version" not in doc:
                    doc = new_event(doc) if kind is TrackEvent else new_playlist_edit(**_edit_fields(doc))
                parse_event(json.dumps(doc).encode(), max_ahead_s, kind=kind)
                events.append(doc)
            except (json.JSONDecodeError, EventError, TypeError) as e:
                errors.append(f"{path}:{number}: {e}")
    if errors:
        shown = "\n".join(errors[:max_errors])
        more = f"\n... and {len(errors) - max_errors} more" if len(errors) > max_errors else ""
        raise EventFileError(f"{len(errors)} invalid line(s), nothing sent; fix them and publish again:\n"
                             f"{shown}{more}")
    return events


@dataclass
class PublishReport:
    sent: int
    seconds: float


def _edit_fields(doc: dict) -> dict:
    known = {"pid": "pid", "added_track_uris": "added", "removed_track_uris": "removed", "name": "name"}
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise TypeError(f"unknown field(s) {unknown} in a bare edit; it has pid, added_track_uris, "
                        "removed_track_uris and name")
    return {known[k]: v for k, v in doc.items()}


def event_key(event: dict) -> bytes | None:
    """The partition key: a track event's track URI, a playlist edit's pid."""
    if isinstance(event, dict) and isinstance(event.get("pid"), int):
        return str(event["pid"]).encode()
    track = event.get("track") if isinstance(event, dict) else None
    uri = track.get("track_uri") if isinstance(track, dict) else None
    return uri.encode() if isinstance(uri, str) else None


def publish_events(producer: KafkaProducer, topic: str, events: Iterable[dict | bytes],
                   rate_per_s: float | None = None) -> PublishReport:
    """Sends events (dicts, or raw bytes as they are); returns once the broker stored them all.
    With `rate_per_s`, pass a generator that makes each event when asked, so its time is its send."""
    started = time.monotonic()
    sent = []
    pending = iter(events)
    while True:
        if rate_per_s:  # wait first, then take the event: a lazily made event is stamped at its send
            time.sleep(max(0.0, started + len(sent) / rate_per_s - time.monotonic()))
        event = next(pending, None)
        if event is None:
            break
        if isinstance(event, bytes):
            sent.append(producer.send(topic, value=event))
        else:
            sent.append(producer.send(topic, key=event_key(event), value=json.dumps(event).encode()))
    producer.flush()
    for future in sent:
        future.get(timeout=30)  # raises if the broker refused one
    return PublishReport(sent=len(sent), seconds=time.monotonic() - started)
