"""Atomic replacement of a job's output folder.

A run writes into `.<name>.runs/<run_id>/` beside the output; only when it is complete and checked is
the output path (a symbolic link) switched to it with one `rename`, so readers see the old output or
the new one, never a mix, and a failed run leaves the previous output untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from uuid import uuid4

_LOGGER = logging.getLogger(__name__)


class OutputPublisher:
    """Context manager: yields a fresh run folder; publishes it on success, deletes it on failure."""

    def __init__(self, output: Path | str, keep_previous: int = 1):
        text = str(output)
        if "://" in text:
            raise ValueError(
                f"--output {text}: atomic publish needs a POSIX path (local disk or a shared mount "
                "such as NFS that every Spark worker sees); object stores have no atomic rename")
        self.output = Path(text).absolute()
        if self.output.exists() and not self.output.is_symlink():
            raise FileExistsError(
                f"{self.output} exists and was not written by Segue (it is not a link to a run); "
                "move it away or choose another --output")
        self.keep_previous = keep_previous
        self.runs_dir = self.output.parent / f".{self.output.name}.runs"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.run_dir = self.runs_dir / f"{stamp}-{uuid4().hex[:8]}"

    def __enter__(self) -> Path:
        self.run_dir.mkdir(parents=True)
        return self.run_dir

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            _LOGGER.warning("run discarded; previous output untouched", extra={"run": str(self.run_dir)})
            return
        self._publish()

    def _publish(self) -> None:
        link = self.output.parent / f".{self.output.name}.{uuid4().hex[:8]}.link"
        os.symlink(os.path.relpath(self.run_dir, self.output.parent), link)
        os.replace(link, self.output)
        _LOGGER.info("output published", extra={"output": str(self.output), "run": self.run_dir.name})
        self._prune()

    def _prune(self) -> None:
        runs = sorted(p for p in self.runs_dir.iterdir() if p.is_dir() and p != self.run_dir)
        for old in runs[: max(0, len(runs) - self.keep_previous)]:
            shutil.rmtree(old, ignore_errors=True)
