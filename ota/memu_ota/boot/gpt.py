"""Partition names read from a disk's GUID partition table itself (UEFI Specification 2.10,
section 5.3: the header at LBA 1, "EFI PART", then the partition entry array).

Why not sysfs or udev: the kernel learns partition names when it scans the table, and it
cannot rescan a disk whose partitions are in use (``/usr`` is mounted from it). After
systemd-sysupdate relabels a slot (``_empty`` → ``memu-os_0.2.0``) they go on saying the old
name until the next boot; the table on the disk says the new one at once.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from memu_common import MemuError

SIGNATURE = b"EFI PART"


@dataclass(frozen=True)
class Entry:
    """One used GPT partition entry.

    Attributes:
        name: the partition's name (label).
        uuid: its unique partition GUID, lower-case text (what ``PARTUUID=`` names).
        start: its first byte on the disk.
        size: its length in bytes.
    """

    name: str
    uuid: str
    start: int
    size: int


def entries(disk: Path) -> dict[int, Entry]:
    """Partition number (from 1, as the kernel numbers them) → entry, for every used entry
    of the GPT on ``disk`` (a block device or an image file, or just its first MiB; 512- or
    4096-byte sectors).

    Raises:
        MemuError: it cannot be read or holds no GPT.
    """
    try:
        with disk.open("rb") as f:
            for sector in (512, 4096):
                f.seek(sector)
                header = f.read(92)
                if header[:8] == SIGNATURE:
                    break
            else:
                raise MemuError(f"{disk} has no GUID partition table")
            first, count, size = struct.unpack_from("<QII", header, 72)
            if size < 128 or count > 1024:
                raise MemuError(f"{disk}'s partition table header is not valid")
            f.seek(first * sector)
            table = f.read(count * size)
    except OSError as e:
        raise MemuError(f"cannot read the partition table of {disk}: {e.strerror}") from e
    found: dict[int, Entry] = {}
    for number in range(1, count + 1):
        entry = table[(number - 1) * size:number * size]
        if len(entry) < 128 or entry[:16] == bytes(16):  # unused: the type GUID is zero
            continue
        first_lba, last_lba = struct.unpack_from("<QQ", entry, 32)
        found[number] = Entry(
            name=entry[56:128].decode("utf-16-le", "replace").split("\0", 1)[0],
            uuid=str(uuid.UUID(bytes_le=entry[16:32])),
            start=first_lba * sector, size=(last_lba - first_lba + 1) * sector)
    return found


def names(disk: Path) -> dict[int, str]:
    """Partition number → name, for every used entry of the GPT on ``disk``
    (:func:`entries`).

    Raises:
        MemuError: it cannot be read or holds no GPT.
    """
    return {number: e.name for number, e in entries(disk).items()}
