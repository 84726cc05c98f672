"""The status files long downloads report into (the pull's, the model download's), read by
``/api/status``: written atomically, and while bytes are arriving at most every few seconds."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memu_common.files import write_json_atomic

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StatusFile:
    """``path`` (0644 JSON); ``every_s``: the shortest gap between two progress writes."""

    path: Path
    clock: Callable[[], float] = time.monotonic
    every_s: float = 2.0
    written: float = dataclasses.field(default=0.0, init=False)

    def write(self, status: dict[str, Any], force: bool = True) -> None:
        """Write ``status``; unless ``force``, skip it when the last write is more recent than
        ``every_s``. A failed write is logged, never raised (a full disk must not stop a
        download)."""
        if not force and self.clock() - self.written < self.every_s:
            return
        self.written = self.clock()
        try:
            write_json_atomic(self.path, status, mode=0o644)
        except OSError as e:
            log.error("cannot write %s: %s", self.path, e)
