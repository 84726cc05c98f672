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
import json
from collections.abc import Mapping
from pathlib import Path

from memu_common.files import write_atomic, write_json_atomic

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


@dataclasses.dataclass(frozen=True)
class Found:
    """What is on the box for one file.

    Attributes:
        digest: the SHA-256 of its content (hex), or None when there is no such file.
        mode: its permission bits, or None when there is no such file.
        beside: ``<file>.memu-new`` exists.
    """

    digest: str | None = None
    mode: int | None = None
    beside: bool = False


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to do to the files, in this order (paths relative to the directory).

    Attributes:
        record: the new record to write first (:data:`WRITTEN_RECORD`), or None when it stays.
        writes: (path, content, permission bits) to write, each atomically; a path may be a
            ``<file>.memu-new``.
        chmods: (path, permission bits) of files already right but for their mode.
        removes: ``<file>.memu-new`` files to delete (the box's version is in place again).
        applied: what it comes to, for people.
    """

    record: dict[str, list[str]] | None
    writes: tuple[tuple[str, bytes, int], ...]
    chmods: tuple[tuple[str, int], ...]
    removes: tuple[str, ...]
    applied: Applied


def plan(files: Mapping[str, tuple[bytes, int]], found: Mapping[str, Found],
         record: Mapping[str, list[str]]) -> Plan:
    """Decide, by the rule of the module docstring, what writing ``files`` (relative path →
    (content, permission bits)) means for a directory where ``found`` (relative path → what
    is there; a path missing from it has no file) and whose record is ``record``. Pure: the
    local writer (:func:`write_all`) and the pyinfra deploy (:mod:`memu_firstboot.deploy`)
    both carry it out."""
    new_record = {k: list(v) for k, v in record.items()}
    done: dict[str, list[str]] = {"made": [], "updated": [], "same": [], "kept": []}
    writes: list[tuple[str, bytes, int]] = []
    chmods: list[tuple[str, int]] = []
    removes: list[str] = []
    recorded = False
    for rel, (data, mode) in files.items():
        there = found.get(rel, Found())
        digest = _digest(data)
        if there.digest is not None and there.digest != digest \
                and there.digest not in record.get(rel, []):
            # not offered before, or offered and not dismissed (deleted) yet: (re)write
            if _remember(new_record, rel + NEW_SUFFIX, digest) or there.beside:
                writes.append((rel + NEW_SUFFIX, data, mode))
            done["kept"].append(rel)
            continue
        recorded |= _remember(new_record, rel, digest)
        if there.digest == digest:
            done["same"].append(rel)
            if there.mode != mode:
                chmods.append((rel, mode))
        else:
            writes.append((rel, data, mode))
            done["made" if there.digest is None else "updated"].append(rel)
        if there.beside:  # merged by hand, or the box's version again
            removes.append(rel + NEW_SUFFIX)
    return Plan(new_record if recorded or writes else None, tuple(writes), tuple(chmods),
                tuple(removes), Applied(**{k: tuple(v) for k, v in done.items()}))


def parse_record(text: str | None) -> dict[str, list[str]]:
    """The record from its JSON ``text`` (empty when there is none or it is not a record)."""
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        return {}
    return {str(k): [str(d) for d in v] for k, v in data.items() if isinstance(v, list)}


def read_record(directory: Path) -> dict[str, list[str]]:
    """The record in ``directory`` (empty when there is none or it is unreadable)."""
    try:
        return parse_record((directory / WRITTEN_RECORD).read_text("utf-8"))
    except (OSError, UnicodeDecodeError):
        return {}


def write_all(files: Mapping[str, tuple[bytes, int]], directory: Path) -> Applied:
    """Write ``files`` (relative path → (content, permission bits)) into ``directory`` by the
    rule of the module docstring, on this machine; return what was done. Idempotent: a
    second run with the same files changes nothing.

    Raises:
        OSError: ``directory`` cannot be written.
    """
    found = {}
    for rel in files:
        path = directory / rel
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        found[rel] = Found(_digest(data), path.stat().st_mode & 0o777,
                           path.with_name(path.name + NEW_SUFFIX).exists())
    todo = plan(files, found, read_record(directory))
    if todo.record is not None:  # before the files: see the module docstring
        write_json_atomic(directory / WRITTEN_RECORD, todo.record, mode=0o600)
    for rel, data, mode in todo.writes:
        write_atomic(directory / rel, data, mode=mode, dir_mode=0o755)
    for rel, mode in todo.chmods:
        (directory / rel).chmod(mode)
    for rel in todo.removes:
        (directory / rel).unlink(missing_ok=True)
    return todo.applied


def edited(directory: Path) -> list[str]:
    """The files kept because someone edited them, each with the box's new version beside
    it (relative paths, sorted)."""
    return sorted(str(p.relative_to(directory))[:-len(NEW_SUFFIX)]
                  for p in directory.rglob("*" + NEW_SUFFIX))
