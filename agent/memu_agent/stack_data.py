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


def snapshot(layout: Layout, version: str) -> Path:
    """Copy the migrated services' data into ``snapshots/<version>`` (replacing every other
    snapshot once the new one is complete).

    Raises:
        MemuError: not enough free space, or the copy failed (the live data is untouched).
    """
    need = sum(f.stat().st_size for name in MIGRATED for f in (layout.stack / name).rglob("*")
               if f.is_file() and not f.is_symlink())
    try:
        layout.snapshots.mkdir(mode=0o700, parents=True, exist_ok=True)
        free = shutil.disk_usage(layout.snapshots).free
    except OSError as e:
        raise MemuError(f"copying the database for a rollback failed: {e}") from e
    if free < need * 1.1 + (256 << 20):
        raise MemuError(f"no room for a copy of the database ({need >> 20} MiB, "
                        f"{free >> 20} MiB free)",
                        hint="free some space (old photos or videos) so updates stay safe")
    tmp = layout.snapshots / f".{version}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(mode=0o700)
        for name in MIGRATED:
            if (layout.stack / name).exists():
                _copy_tree(layout.stack / name, tmp / name)
        (tmp / ".complete").touch()
    except (OSError, MemuError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MemuError(f"copying the database for a rollback failed: {e}") from e
    final = layout.snapshots / version
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for other in layout.snapshots.iterdir():
        if other != final and not other.name.startswith("abandoned-"):
            shutil.rmtree(other, ignore_errors=True)
    return final


def restore(layout: Layout, version: str, newer: str) -> None:
    """Put ``snapshots/<version>`` back as the live data; the live data of ``newer`` moves
    to ``snapshots/abandoned-<newer>`` (replacing an older abandoned copy). Renames only,
    each service's in two steps that a rerun resumes: a restore cut short by a power cut is
    finished by the next boot's (the record still names ``newer`` until it is done).

    Raises:
        MemuError: a rename failed (renames within one filesystem; nothing is copied).
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
                if put.exists():
                    shutil.rmtree(put)  # from an older rollback from the same version
                live.rename(put)
            saved.rename(live)
        shutil.rmtree(src)
    except OSError as e:
        raise MemuError(f"putting the database back as {version} left it failed: {e}") from e


def carry_out(layout: Layout, booted: str, stop: Callable[[], None] = lambda: None) -> Plan:
    """Decide and do what the data needs before ``booted``'s stack starts; record that
    ``booted`` runs the stack now. ``stop`` stops the stack's containers before any copy or
    rename (after a power cut Docker may have started last boot's containers itself).

    Raises:
        MemuError: a snapshot or restore failed (the caller reports it; a failed snapshot
            leaves the live data as it was).
    """
    ran = layout.ran()
    plan = decide(booted, ran, layout.complete_snapshots(), layout.has_data())
    log.info("stack data: %s", plan.reason)
    if plan.step is Step.SNAPSHOT and plan.of:
        stop()
        snapshot(layout, plan.of)
    elif plan.step is Step.RESTORE and plan.of and ran:
        stop()
        restore(layout, plan.of, ran)
    write_json_atomic(layout.record, {"ran": booted, "last": plan.reason}, mode=0o600)
    return plan
