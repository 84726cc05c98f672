"""Helpers for the update tests: test builds of other versions and reading the guest's disk.
The channel server and the agent API helpers are in memu_dev.channel."""

from __future__ import annotations

from pathlib import Path

from memu_dev.build import ensure_built
from memu_dev.channel import (
    Channel,
    api,
    channel,
    drain,
    update,
    wait_update,
    wait_version,
)
from memu_dev.paths import REPO
from memu_dev.vm import VM

TREES = Path(__file__).parent / "trees"


def ensure_build(version: str, *trees: str) -> Path:
    """Build ``version`` with test trees (tests/qemu/trees/<name>) when missing or stale."""
    return ensure_built(version, [TREES / t for t in trees])


def labels(vm: VM) -> dict[int, str]:
    """GPT partition number -> label on the guest's disk (read from the GPT, not a cache)."""
    out = vm.sh("for p in /dev/nvme0n1p*; do "
                "echo \"${p##*p} $(blkid -p -s PART_ENTRY_NAME -o value $p)\"; done")
    result: dict[int, str] = {}
    for line in out.splitlines():
        number, _, name = line.strip().partition(" ")
        if number.isdigit():
            result[int(number)] = name.strip()
    return result


def boot_entries(vm: VM) -> list[str]:
    """UKI file names in the ESP's EFI/Linux."""
    return sorted(vm.sh("ls /boot/EFI/Linux/").split())


__all__ = ["REPO", "Channel", "api", "boot_entries", "channel", "drain", "ensure_build",
           "labels", "update", "wait_update", "wait_version"]
