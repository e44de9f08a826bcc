"""The write step of a micro-batch, whatever its topics: track events to `TrackSink`, playlist
edits to `PlaylistEditSink`. The daemon and the Beam pipeline both write through it."""

from __future__ import annotations

from collections.abc import Sequence

from segue.streaming.events import Origin, PlaylistEditEvent, TrackEvent
from segue.streaming.playlist_sink import PlaylistEditSink
from segue.streaming.track_sink import SinkReport, TrackSink


class StreamSink:
    """Routes each event to its sink; one report for the batch."""

    def __init__(self, tracks: TrackSink, playlists: PlaylistEditSink):
        self.tracks = tracks
        self.playlists = playlists

    def warm_up(self) -> None:
        self.tracks.warm_up()

    def stores_answer(self) -> bool:
        """Whether the online store and Milvus answer now (see `TrackSink.stores_answer`)."""
        return self.tracks.stores_answer()

    def write(self, events: Sequence[TrackEvent | PlaylistEditEvent],
              origins: Sequence[Origin] | None = None) -> SinkReport:
        """Writes the batch's tracks, then applies its edits (an edit may add a track of the same
        batch, whose facts it then finds). Raises SinkWriteError naming the stage that failed."""
        origins = list(origins) if origins is not None else [None] * len(events)
        tracks = [(e, o) for e, o in zip(events, origins) if isinstance(e, TrackEvent)]
        edits = [(e, o) for e, o in zip(events, origins) if isinstance(e, PlaylistEditEvent)]
        report = SinkReport()
        stage_seconds: dict[str, float] = {}
        for sink, part, prefix in ((self.tracks, tracks, ""), (self.playlists, edits, "playlist_")):
            if part:
                written = sink.write([e for e, _ in part], None if part[0][1] is None else [o for _, o in part])
                report.add(written)
                stage_seconds |= {prefix + stage: seconds for stage, seconds in written.stage_seconds.items()}
        report.stage_seconds = stage_seconds
        return report


def open_stream_sink(settings) -> StreamSink:
    """The sinks of the configured feature store and index (`features.*`, `index.*`, `paths.*`), with
    `stream.write_timeout_s` on every Redis reply and Milvus call."""
    from segue.features.store import open_store, with_socket_timeouts
    from segue.streaming.playlist_sink import open_playlist_sink
    from segue.streaming.track_sink import open_track_sink

    features = settings.features.model_copy(update={"redis_connection_string": with_socket_timeouts(
        settings.features.redis_connection_string, settings.stream.write_timeout_s)})
    store = open_store(settings.model_copy(update={"features": features}))
    return StreamSink(open_track_sink(settings, store), open_playlist_sink(settings, store))
