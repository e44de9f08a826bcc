"""The Million Playlist Dataset format: records, a strict streaming reader, and the challenge metrics."""

from segue.batch.mpd.reader import (
    MpdFormatError,
    read_challenge_set,
    read_playlists,
    read_slice,
    slice_files,
)

__all__ = ["MpdFormatError", "read_challenge_set", "read_playlists", "read_slice", "slice_files"]
