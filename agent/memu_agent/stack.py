"""The family stack's state for ``/api/status``: today what the image preload reported
(:mod:`memu_agent.preload`), read from its status file. Never raises: a missing or damaged
file means the preload has not run (yet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memu_common.files import read_json_object


def read_preload(path: Path) -> dict[str, Any]:
    """The ``stack`` object of ``/api/status``, from the preload's status file ``path``
    (``HostPaths.preload_status``)::

        {"preload": {"state": "not started" | "running" | "done" | "failed",
                     "version": "0.2.0", "seconds": 41.2, "error": "..."},   # when known
         "images": {"postgres": {"state": "loaded", "seconds": 12.5}, ...,
                    "synapse": {"state": "refused", "error": "synapse: refused: ..."}}}
    """
    data = read_json_object(path)
    if data is None:
        return {"preload": {"state": "not started"}, "images": {}}
    preload = {k: data[k] for k in ("state", "version", "seconds", "error") if k in data}
    images = data.get("images")
    return {"preload": preload, "images": images if isinstance(images, dict) else {}}
