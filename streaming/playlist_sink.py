"""The one write path of streamed playlist edits, shared by the consumer daemon and the Beam
pipeline: the playlists' online features -> the edits applied in order -> Feast online push ->
offline record (`playlist_snapshots`, read by the next batch run).

An edit is a change, so it must apply once: each playlist's stored state carries the time of the
last edit applied (`applied_edit_us`, pushed with the features in one write), and an edit timed at
or before it is skipped (a replay, or published out of order). A batch written again after a crash
therefore changes nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode

from segue.features.online import OnlineFeatureReader
from segue.features.playlist_features import edited_playlist_features, edited_track_list, recent_window
from segue.settings import FeatureSettings
from segue.streaming.events import Origin, PlaylistEditEvent
from segue.streaming.track_sink import OfflineRecord, SinkReport, SinkWriteError, StageClock, record_keys
from segue.vocabulary import PLAYLIST_KEY, PLAYLIST_SERVICE, TRACK_KEY, TRACK_SERVICE

PUSH_SOURCE = "playlist_push_source"
TABLE = "playlist_snapshots"
EDIT_MARK = "applied_edit_us"
_TRACK_FACTS = [f"track_features:{name}" for name in ("artist_uri", "album_uri", "duration_ms")]


class PlaylistEditSink:
    """Applies valid playlist edits to the playlists' features where serving and training read them."""

    def __init__(self, store: FeatureStore, record: OfflineRecord, sequences: FeatureSettings):
        self.store = store
        self.record = record
        self.sequences = sequences
        # The service's features and the edit mark, which is in the view but not a tower input.
        view = store.get_feature_view(store.get_feature_service(PLAYLIST_SERVICE).feature_view_projections[0].name)
        self._playlists = OnlineFeatureReader(store, PLAYLIST_SERVICE, PLAYLIST_KEY,
                                              only=[f"{view.name}:{f.name}" for f in view.features])
        self._tracks = OnlineFeatureReader(store, TRACK_SERVICE, TRACK_KEY, only=_TRACK_FACTS)

    def write(self, events: Sequence[PlaylistEditEvent], origins: Sequence[Origin] | None = None) -> SinkReport:
        """Applies the edits (in the given order per playlist); raises SinkWriteError naming the
        stage that failed. `origins` (one per event) make the offline record exactly-once."""
        if not events:
            return SinkReport()
        clock = StageClock()
        stage = "read_stored"
        try:
            pids = list(dict.fromkeys(e.pid for e in events))
            stored = {row.key: row for row in self._playlists.read(pids)}
            # Per playlist: the edits newer than its stored state, and the event that last set it.
            applied: dict[int, list[PlaylistEditEvent]] = {pid: [] for pid in pids}
            setter: dict[int, PlaylistEditEvent] = {}
            # A batch row has no mark: its snapshot time (seconds, on SQLite) is when it was last changed.
            marks = {pid: int(stored[pid].features.get(EDIT_MARK) or 0) for pid in pids}
            state_us = {pid: marks[pid] or stored[pid].event_time_us for pid in pids}
            superseded = 0
            # In time order (stable: offsets break ties); a runner may deliver a playlist's edits out of order.
            for e in sorted(events, key=lambda e: e.event_time_us):
                if e.event_time_us > state_us[e.pid]:
                    applied[e.pid].append(e)
                    state_us[e.pid] = e.event_time_us
                    setter[e.pid] = e
                else:
                    superseded += 1
                    if e.event_time_us == state_us[e.pid] == marks[e.pid] and not applied[e.pid]:
                        setter[e.pid] = e  # a replay of the edit that made the stored state: record it again
            edits = {pid: [(e.added_track_uris, e.removed_track_uris, e.name) for e in applied[pid]]
                     for pid in setter}
            # Durations of the tracks added and removed; artists and albums of the new recent window,
            # most of which the stored window already holds.
            needed, known = set(), {}
            for pid, changes in edits.items():
                window = _window_facts(stored[pid].features)
                after, removed = edited_track_list(stored[pid].features.get("track_uris") or [],
                                                   [(a, r) for a, r, _ in changes])
                needed |= set(removed) | {uri for a, _, _ in changes for uri in a} | (
                    set(recent_window(after, self.sequences)) - set(window))
                known |= window
            read = {row.key: row.features for row in self._tracks.read(sorted(needed))} if needed else {}
            tracks = known | read
            clock.lap(stage)
            report = SinkReport(superseded=superseded)
            if setter:
                frame = self._frame(setter, stored, edits, tracks)
                stage = "feast_push"
                self.store.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)
                clock.lap(stage)
                stage = "offline_record"
                self.record.append(frame, *record_keys(events, origins, list(setter.values())))
                clock.lap(stage)
                report.edited = sum(len(changes) for changes in edits.values())
        except Exception as e:  # noqa: BLE001 (re-raised with the stage)
            raise SinkWriteError(stage, e) from e
        report.stage_seconds = clock.laps
        return report

    def _frame(self, setter, stored, edits, tracks) -> pd.DataFrame:
        rows = []
        for pid, event in setter.items():
            if edits[pid]:
                row = edited_playlist_features(stored[pid].features if stored[pid].found else None,
                                               edits[pid], tracks, self.sequences)
            else:  # a replay of the last edit applied: the stored state is its result
                row = dict(stored[pid].features)
            rows.append({PLAYLIST_KEY: pid, **row, EDIT_MARK: event.event_time_us,
                         "event_timestamp": pd.Timestamp(event.event_time).tz_convert("UTC")})
        frame = pd.DataFrame(rows)
        frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[us, UTC]")
        return frame


def _window_facts(features: dict) -> dict[str, dict]:
    """Each track of the stored recent window with its artist and album, when the three stored
    sequences line up (they do unless a track had no artist or album, which the batch skips)."""
    window = [features.get(f"recent_{kind}_uris") or [] for kind in ("track", "artist", "album")]
    if not len(window[0]) == len(window[1]) == len(window[2]):
        return {}
    return {t: {"artist_uri": a, "album_uri": al} for t, a, al in zip(*window)}


def open_playlist_sink(settings, store: FeatureStore) -> PlaylistEditSink:
    """The edit sink of the configured feature store (`features.*`, `paths.*`)."""
    return PlaylistEditSink(store, OfflineRecord(Path(settings.paths.features_dir), Path(settings.paths.stream_dir),
                                                 TABLE), settings.features)
