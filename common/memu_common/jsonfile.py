"""Small files (JSON above all) written so that a power cut leaves either the old or the new
file, never a torn one: write a temporary file in the same directory, fsync it, rename it over the
target, fsync the directory (rename(2) is atomic within one filesystem)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (parent created with mode 0700).

    Raises:
        OSError: the directory or file cannot be written.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomic(path: Path, data: Any, *, mode: int = 0o600) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically (see
    :func:`write_atomic`).

    Raises:
        OSError: the directory or file cannot be written.
    """
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    write_atomic(path, text.encode("utf-8"), mode=mode)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """Read a JSON object from ``path``; None when missing. A damaged or non-object file is
    logged and treated as missing (never raises)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.error("%s: cannot read it (%s); ignoring it", path, e)
        return None
    if not isinstance(data, dict):
        log.error("%s: not a JSON object; ignoring it", path)
        return None
    return data
