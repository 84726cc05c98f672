"""The one way Memu OS writes small files (JSON above all), so that a power cut leaves either
the old or the new file, never a torn one: write a temporary file in the same directory,
fsync it, rename it over the target, fsync the directory (rename(2) is atomic within one
filesystem)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _make_dirs(directory: Path, mode: int) -> None:
    """Create ``directory`` and its missing parents with exactly ``mode`` (whatever the
    process's umask: a service with ``UMask=0077`` still makes directories that a container's
    own user can read when ``mode`` says so); existing ones are left as they are."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=mode)
            os.chmod(d, mode)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, dir_mode: int = 0o700,
                 exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically: readers see the old file or the new one, also
    after a power cut (the file and its directory are fsynced).

    Args:
        path: the file to write; its parent is created with ``dir_mode`` when missing
            (exactly: the umask does not apply).
        data: the whole new content.
        mode: the file's permission bits (set before any byte is written).
        exclusive: only write when ``path`` does not exist yet (the new file is linked into
            place, which fails when one is there; rename would replace it).

    Returns:
        True when written; False when ``exclusive`` and ``path`` already existed.

    Raises:
        OSError: the directory or file cannot be written.
    """
    _make_dirs(path.parent, dir_mode)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # whatever the umask said
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


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


def read_env_file(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of an env file the box writes itself (Compose's
    ``--env-file`` format, without quoting or expansion; ``#`` lines are comments), later
    lines winning; {} when the file is missing or unreadable (never raises)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def sha256_file(path: Path, size: int | None = None) -> str:
    """Hex SHA-256 of a file's bytes, or of its first ``size`` bytes (fewer when the file is
    shorter), read in 1 MiB pieces."""
    digest = hashlib.sha256()
    left = -1 if size is None else size
    with path.open("rb") as f:
        while left and (chunk := f.read(1 << 20 if left < 0 else min(1 << 20, left))):
            digest.update(chunk)
            left = left - len(chunk) if left > 0 else left
    return digest.hexdigest()
