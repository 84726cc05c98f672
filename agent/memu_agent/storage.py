"""How full the box's writable partition is (``/var``: the family's data, Docker's images,
the stack's databases), judged in words a family understands, for ``/api/status``.

A full partition is the common way an appliance like this dies (databases stop, containers
restart in a loop, logs cannot be written). The box keeps the agent up whatever the disk
says (the agent writes nothing in a request that only reads, and a write that fails is
reported, never fatal), the health gate never reboots a blessed boot into a loop
(:func:`memu_agent.health_gate.conclude`), and this report tells the family early.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

MIB = 1 << 20
GIB = 1 << 30
#: Below this the partition is full: PostgreSQL and Docker fail to write soon or already.
FULL_BELOW = 512 * MIB


@dataclasses.dataclass(frozen=True)
class Storage:
    """``state`` is "ok", "low", "full" or "unknown"; bytes as ``statvfs`` reports them for an
    unprivileged writer (``f_bavail``); ``message`` is for the family (empty when ok)."""

    state: str
    total_bytes: int
    free_bytes: int
    message: str = ""


def judge(total: int, free: int) -> Storage:
    """Judge ``free`` of ``total`` bytes: full below 512 MiB; low below 5 % of the
    partition, but never below 2 GiB or above 10 GiB (a big disk is not "low" with 40 GB
    left, a small one is with 1 GB)."""
    low_below = min(10 * GIB, max(2 * GIB, total // 20))
    shown = f"{free / GIB:.1f} GB free of {total / GIB:.0f} GB"
    if free < FULL_BELOW:
        return Storage("full", total, free,
                       f"The box's storage is full ({shown}). Chat and photos cannot save "
                       "anything new until space is freed: delete old videos or photos, or "
                       "move them off the box.")
    if free < low_below:
        return Storage("low", total, free,
                       f"The box's storage is almost full ({shown}). Delete old videos or "
                       "photos soon, or chat and photos will stop saving new things.")
    return Storage("ok", total, free)


def measure(path: Path) -> Storage:
    """:func:`judge` of the filesystem holding ``path``; "unknown" when it cannot be read."""
    try:
        st = os.statvfs(path)
    except OSError as e:
        return Storage("unknown", 0, 0, f"cannot read {path}: {e.strerror}")
    return judge(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)
