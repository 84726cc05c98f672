"""Configuration files the box writes and a family or an operator may edit: the rule that
the box never overwrites a person's edit (the seeds' own rule: migrate a family's
configuration deliberately, never silently).

The box records what it wrote in ``<directory>/.memu-written.json`` (relative path → the
SHA-256 digests of the contents it wrote there, newest last). A file whose content is none
of those was edited by someone (a file the box has no record of counts as edited): it is
kept, and the box's new version goes beside it as ``<file>.memu-new`` for the admin to
merge. Every new digest is recorded before any file is written, so a power cut between the
two leaves the old content recognised as the box's own.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path

from memu_common.files import read_json_object, write_atomic, write_json_atomic

#: What the box wrote (see the module docstring).
WRITTEN_RECORD = ".memu-written.json"
#: How many digests the record keeps per file.
RECORD_DEPTH = 8
#: The suffix of the box's new version of a file someone edited, written beside it.
NEW_SUFFIX = ".memu-new"


@dataclasses.dataclass(frozen=True)
class Applied:
    """What :func:`write_all` did, file by file (paths relative to its directory).

    Attributes:
        made: files that did not exist.
        updated: files the box had written and nobody had changed since, now in their new
            version (the family's settings or the templates changed).
        same: files already as the box would write them.
        kept: files someone edited (they differ from what the box last wrote): kept as they
            are, the box's new version written beside each as ``<file>.memu-new`` (once per
            version: an admin who deleted it has seen it).
    """

    made: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    same: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    def summary(self) -> str:
        """One sentence for the setup's progress page."""
        said = []
        if self.made or self.updated:
            said.append(f"wrote {len(self.made) + len(self.updated)} files")
        if not self.made and not self.updated and not self.kept:
            said.append(f"nothing to change ({len(self.same)} files as they were)")
        if self.kept:
            said.append(f"kept {len(self.kept)} edited files as they are ("
                        + ", ".join(self.kept) + f"; the new versions beside them as "
                        f"{NEW_SUFFIX}, shown on the admin page)")
        return "; ".join(said)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _remember(record: dict[str, list[str]], key: str, digest: str) -> bool:
    """Add ``digest`` to ``record[key]`` (the newest :data:`RECORD_DEPTH` kept); False when
    it was there already."""
    known = record.get(key, [])
    if digest in known:
        return False
    record[key] = [*known, digest][-RECORD_DEPTH:]
    return True


def write_all(files: Mapping[str, tuple[bytes, int]], directory: Path) -> Applied:
    """Write ``files`` (relative path → (content, permission bits)) into ``directory`` by the
    rule of the module docstring; return what was done. Idempotent: a second run with the
    same files changes nothing.

    Raises:
        OSError: ``directory`` cannot be written.
    """
    record_path = directory / WRITTEN_RECORD
    record: dict[str, list[str]] = {
        k: [str(d) for d in v] for k, v in (read_json_object(record_path) or {}).items()
        if isinstance(v, list)}
    done: dict[str, list[str]] = {"made": [], "updated": [], "same": [], "kept": []}
    writes: list[tuple[Path, bytes, int]] = []
    recorded = False
    for rel, (data, mode) in files.items():
        path = directory / rel
        beside = path.with_name(path.name + NEW_SUFFIX)
        try:
            now: bytes | None = path.read_bytes()
        except FileNotFoundError:
            now = None
        if now is not None and now != data and _digest(now) not in record.get(rel, []):
            # not offered before, or offered and not dismissed (deleted) yet: (re)write
            if _remember(record, rel + NEW_SUFFIX, _digest(data)) or beside.exists():
                writes.append((beside, data, mode))
            done["kept"].append(rel)
            continue
        recorded |= _remember(record, rel, _digest(data))
        if now == data:
            done["same"].append(rel)
            if path.stat().st_mode & 0o777 != mode:
                path.chmod(mode)
        else:
            writes.append((path, data, mode))
            done["made" if now is None else "updated"].append(rel)
        beside.unlink(missing_ok=True)  # merged by hand, or the box's version again
    if recorded or writes:  # before the files: see the module docstring
        write_json_atomic(record_path, record, mode=0o600)
    for path, data, mode in writes:
        write_atomic(path, data, mode=mode, dir_mode=0o755)
    return Applied(**{k: tuple(v) for k, v in done.items()})


def edited(directory: Path) -> list[str]:
    """The files kept because someone edited them, each with the box's new version beside
    it (relative paths, sorted)."""
    return sorted(str(p.relative_to(directory))[:-len(NEW_SUFFIX)]
                  for p in directory.rglob("*" + NEW_SUFFIX))
