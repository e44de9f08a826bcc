"""`segue stream publish`: sends track events to `segue.tracks.new`, keyed by track URI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaProducer

from segue.streaming.events import EventError, new_event, parse_event


class EventFileError(ValueError):
    """Lines of an event file that are not valid events; nothing was sent."""


def read_event_file(path: Path, max_errors: int = 20, max_ahead_s: float | None = None) -> list[dict]:
    """Events from a JSON-lines file: whole events, or bare track objects (wrapped as new events).
    Every line is checked first, so a bad file sends nothing."""
    events, errors = [], []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                if isinstance(doc, dict) and "schema_version" not in doc:
                    doc = new_event(doc)
                parse_event(json.dumps(doc).encode(), max_ahead_s)
                events.append(doc)
            except (json.JSONDecodeError, EventError) as e:
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


def event_key(event: dict) -> bytes | None:
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
