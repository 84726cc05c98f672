"""The stack's data across updates and rollbacks: data moves one way, so keep a way back.

Synapse, Immich and the bot migrate their database schemas when a new version first starts;
the old versions refuse (or worse, misread) a newer schema. So before the stack of a newer
OS version first starts on the family's data, the PostgreSQL cluster — which holds every
migrated schema — is copied to a snapshot; when the box later boots an older version than
the one that last ran the stack (a rollback), that snapshot is put back before anything
starts, and the data the newer version wrote is moved aside, not deleted.

    /var/lib/memu/stack/postgres                 the live cluster (compose.yaml)
    /var/lib/memu/stack-data.json                {"ran": "<version that last ran the stack>"}
    /var/lib/memu/stack-snapshots/<version>/     the cluster as <version> left it
    /var/lib/memu/stack-snapshots/abandoned-<version>/   what a rolled-back version wrote

What a rollback keeps: everything outside the database (photos and videos, chat media,
Synapse's signing key, Valkey's queues) stays as it is; database rows written while the newer
version ran (messages, reminders, photo metadata of that time) are in the abandoned copy only.
That is the price of running the old code safely; the status says so.

Only one snapshot is kept (the version before the newest that ran), which is all a rollback
can reach with two slots. Copies are made with the stack stopped (``memu-stack.service``
runs this before ``up``; containers are stopped at shutdown) and renamed into place only when
complete, so a power cut leaves either no snapshot or a whole one.

The decision is pure (:func:`decide`); :func:`carry_out` does the file work.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from memu_common import MemuError, run
from memu_common.files import read_json_object, write_json_atomic
from memu_ota.versions import is_newer

log = logging.getLogger(__name__)

STATE = Path("/var/lib/memu")
#: The services whose data carries migrated schemas (relative to the stack's state dir).
MIGRATED = ("postgres",)


class Step(enum.StrEnum):
    """What to do with the data before the stack starts."""

    NOTHING = "nothing"          # same version as last time, or no data yet
    SNAPSHOT = "snapshot"        # a newer version starts on older data: copy it first
    RESTORE = "restore"          # an older version boots on newer data: put the copy back
    NO_WAY_BACK = "no way back"  # an older version on newer data, and no snapshot of it


@dataclasses.dataclass(frozen=True)
class Plan:
    """:func:`decide`'s answer: the ``step``, and ``of`` (the version whose snapshot is
    made or restored), ``reason`` in words for the log and the status."""

    step: Step
    of: str | None
    reason: str


def decide(booted: str, ran: str | None, snapshots: frozenset[str],
           has_data: bool) -> Plan:
    """Decide what happens to the data before ``booted``'s stack starts.

    Args:
        booted: the OS version that booted.
        ran: the version that last ran the stack on this data (None: never, or unknown).
        snapshots: versions with a complete snapshot.
        has_data: whether there is live data at all (a fresh box has none).
    """
    if ran is None or ran == booted:
        return Plan(Step.NOTHING, None, "the data is this version's own")
    if is_newer(booted, ran):
        if not has_data:
            return Plan(Step.NOTHING, None, "no data yet to keep a copy of")
        return Plan(Step.SNAPSHOT, ran,
                    f"{booted} starts on data {ran} wrote: keeping a copy for a rollback")
    # A rollback is decided by the record and the snapshot alone: a restore cut short by a
    # power cut may have moved the live data aside already, and is finished next boot.
    if booted in snapshots:
        return Plan(Step.RESTORE, booted,
                    f"rolled back from {ran}: the database is put back as {booted} left it; "
                    f"what {ran} wrote to it is kept aside")
    return Plan(Step.NO_WAY_BACK, None,
                f"rolled back from {ran}, but there is no copy of the database as {booted} "
                "left it: services that migrated their schema may refuse to start")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the stack's data and its snapshots live (see the module docstring)."""

    stack: Path = STATE / "stack"
    snapshots: Path = STATE / "stack-snapshots"
    record: Path = STATE / "stack-data.json"

    def ran(self) -> str | None:
        data = read_json_object(self.record) or {}
        value = data.get("ran")
        return value if isinstance(value, str) else None

    def complete_snapshots(self) -> frozenset[str]:
        if not self.snapshots.is_dir():
            return frozenset()
        return frozenset(p.name for p in self.snapshots.iterdir()
                         if (p / ".complete").exists() and not p.name.startswith(
                             ("abandoned-", ".")))

    def has_data(self) -> bool:
        return any((self.stack / name).exists() for name in MIGRATED)


def _copy_tree(src: Path, dst: Path) -> None:
    # cp -a keeps owners, modes, symlinks and xattrs (PostgreSQL checks its directory's owner
    # and mode); --reflink=auto shares blocks where the filesystem can.
    run(["cp", "-a", "--reflink=auto", "--", src, dst], timeout=3600)


def _discard(path: Path) -> None:
    """Remove a directory so that a power cut midway never leaves a complete-looking
    remainder: renamed to a dot name first (which nothing counts), then deleted."""
    if not path.exists():
        return
    doomed = path.with_name(f".discard-{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


class RestoreFailed(MemuError):
    """The live data may be half moved: the stack must not start on it (PostgreSQL would
    make a new empty cluster in a missing directory)."""


def snapshot(layout: Layout, version: str) -> Path:
    """Copy the migrated services' data into ``snapshots/<version>``. Older snapshots are
    dropped first (the version they belong to is no longer in either slot), so the copy
    needs room for one database, not two. The copy reaches the disk (``sync``) before it is
    marked complete, so a power cut never leaves a "complete" snapshot with unwritten files.

    Raises:
        MemuError: not enough free space, or the copy failed (the live data is untouched).
    """
    try:
        layout.snapshots.mkdir(mode=0o700, parents=True, exist_ok=True)
        for other in layout.snapshots.iterdir():
            if not other.name.startswith(("abandoned-", ".discard-")):
                _discard(other)
        need = sum(f.stat().st_size for name in MIGRATED
                   for f in (layout.stack / name).rglob("*")
                   if f.is_file() and not f.is_symlink())
        free = shutil.disk_usage(layout.snapshots).free
    except OSError as e:
        raise MemuError(f"copying the database for a rollback failed: {e}") from e
    if free < need * 1.1 + (256 << 20):
        raise MemuError(f"no room for a copy of the database ({need >> 20} MiB, "
                        f"{free >> 20} MiB free)",
                        hint="free some space (old photos or videos) so updates stay safe")
    tmp = layout.snapshots / f".{version}.partial"
    final = layout.snapshots / version
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        for name in MIGRATED:
            if (layout.stack / name).exists():
                _copy_tree(layout.stack / name, tmp / name)
        os.sync()  # every copied file on the disk before the copy counts as complete
        (tmp / ".complete").touch()
        tmp.rename(final)
        os.sync()
    except (OSError, MemuError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MemuError(f"copying the database for a rollback failed: {e}") from e
    return final


def restore(layout: Layout, version: str, newer: str) -> None:
    """Put ``snapshots/<version>`` back as the live data; the live data of ``newer`` moves
    to ``snapshots/abandoned-<newer>`` (an older abandoned copy of the same version is kept
    under a numbered name, never deleted here). Renames only, each service's in two steps
    that a rerun resumes: a restore cut short by a power cut is finished by the next boot's
    (the record still names ``newer`` until it is done).

    Raises:
        RestoreFailed: a rename failed; the stack must not start.
    """
    src = layout.snapshots / version
    aside = layout.snapshots / f"abandoned-{newer}"
    try:
        aside.mkdir(mode=0o700, exist_ok=True)
        for name in MIGRATED:
            live, saved, put = layout.stack / name, src / name, aside / name
            if not saved.exists():
                continue  # put back already (or the snapshot did not have it)
            if live.exists():
                n = 1
                while put.exists():  # an older rollback from the same version: keep it
                    put, n = aside / f"{name}.{n}", n + 1
                live.rename(put)
            saved.rename(live)
        os.sync()
    except OSError as e:
        raise RestoreFailed(
            f"putting the database back as {version} left it failed: {e}",
            hint="the chat services stay stopped so nothing is lost; contact support") from e


def carry_out(layout: Layout, booted: str, stop: Callable[[], None] = lambda: None) -> Plan:
    """Decide and do what the data needs before ``booted``'s stack starts; record that
    ``booted`` runs the stack now (also when the snapshot failed: a later rollback must then
    know there is no way back). ``stop`` stops the stack's containers before any copy or
    rename (after a power cut Docker may have started last boot's containers itself); it
    raises when they do not stop, and nothing is copied then.

    Raises:
        RestoreFailed: a restore failed (the stack must not start).
        MemuError: the snapshot failed (recorded; the live data is as it was).
    """
    ran = layout.ran()
    plan = decide(booted, ran, layout.complete_snapshots(), layout.has_data())
    log.info("stack data: %s", plan.reason)
    try:
        if plan.step is Step.SNAPSHOT and plan.of:
            stop()
            snapshot(layout, plan.of)
        elif plan.step is Step.RESTORE and plan.of and ran:
            stop()
            restore(layout, plan.of, ran)
    except RestoreFailed:
        raise
    except MemuError as e:
        _record(layout, booted, f"no copy of the database as {ran} left it: {e.message}")
        raise
    _record(layout, booted, plan.reason)
    if plan.step is Step.RESTORE and plan.of:
        _discard(layout.snapshots / plan.of)  # after the record: a cut here loses nothing
    return plan


def _record(layout: Layout, booted: str, last: str) -> None:
    try:
        write_json_atomic(layout.record, {"ran": booted, "last": last}, mode=0o600)
    except OSError as e:
        raise MemuError(f"cannot record which version runs the stack: {e}") from e
