"""One file in the root directory of a FAT partition, found and rewritten in place without
mounting it: the Raspberry Pi's ``autoboot.txt`` (:mod:`memu_ota.boot.tryboot`).

Rewriting a file in place, the same length, changes only the sectors of its data: no
allocation table, no directory entry. A power cut then leaves each of those sectors old or
new, never a file system that needs repair; the Pi firmware reads the file either way. (A
write through the kernel's vfat driver would also rewrite the directory entry's times.)

The on-disk format is Microsoft's "FAT: General Overview of On-Disk Format" (FAT12, FAT16
and FAT32): the BIOS parameter block in sector 0, then the reserved sectors, the FATs, the
fixed root directory (FAT12/16) and the data clusters, numbered from 2.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from memu_common import MemuError

DIR_ENTRY = 32
ATTR_LFN = 0x0F
ATTR_VOLUME = 0x08
ATTR_DIRECTORY = 0x10


@dataclass(frozen=True)
class Extent:
    """Where a file's bytes are: ``size`` bytes from byte ``offset`` of the partition, in one
    cluster run, and its directory entry at byte ``entry``."""

    offset: int
    size: int
    entry: int


@dataclass(frozen=True)
class _Layout:
    sector: int
    cluster: int  # bytes per cluster
    fat_offset: int
    fat_bits: int
    root_offset: int  # the fixed root directory (FAT12/16), 0 on FAT32
    root_size: int
    root_cluster: int  # FAT32's root directory's first cluster, 0 on FAT12/16
    data_offset: int
    clusters: int

    def cluster_offset(self, number: int) -> int:
        return self.data_offset + (number - 2) * self.cluster


def _layout(head: bytes) -> _Layout:
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        raise MemuError("not a FAT file system (no boot sector signature)")
    sector, per_cluster, reserved, fats, root_entries, total16, fat16 = struct.unpack_from(
        "<HBHBHH", head, 11)[:6] + struct.unpack_from("<H", head, 22)
    total = total16 or struct.unpack_from("<I", head, 32)[0]
    fat_size = fat16 or struct.unpack_from("<I", head, 36)[0]
    if sector not in (512, 1024, 2048, 4096) or per_cluster == 0 or fats == 0:
        raise MemuError("not a FAT file system (bad BIOS parameter block)")
    root_sectors = (root_entries * DIR_ENTRY + sector - 1) // sector
    first_data = reserved + fats * fat_size + root_sectors
    clusters = (total - first_data) // per_cluster
    # FAT32 has no 16-bit FAT size (as Linux's vfat tells it); FAT12 and FAT16 by the count
    # of clusters, as the specification does.
    bits = 32 if fat16 == 0 else 12 if clusters < 4085 else 16
    return _Layout(
        sector=sector, cluster=sector * per_cluster, fat_offset=reserved * sector,
        fat_bits=bits,
        root_offset=(reserved + fats * fat_size) * sector if bits != 32 else 0,
        root_size=root_sectors * sector,
        root_cluster=struct.unpack_from("<I", head, 44)[0] if bits == 32 else 0,
        data_offset=first_data * sector, clusters=clusters)


def _next_cluster(fd: int, layout: _Layout, number: int) -> int | None:
    if layout.fat_bits == 32:
        raw = os.pread(fd, 4, layout.fat_offset + number * 4)
        value = struct.unpack("<I", raw)[0] & 0x0FFFFFFF
        end = 0x0FFFFFF8
    elif layout.fat_bits == 16:
        value = struct.unpack("<H", os.pread(fd, 2, layout.fat_offset + number * 2))[0]
        end = 0xFFF8
    else:
        pair = struct.unpack("<H", os.pread(fd, 2, layout.fat_offset + number * 3 // 2))[0]
        value = pair >> 4 if number & 1 else pair & 0x0FFF
        end = 0xFF8
    return None if value >= end or value < 2 else value


def _root_regions(fd: int, layout: _Layout) -> list[tuple[int, int]]:
    """(offset, size) of the root directory's pieces."""
    if layout.fat_bits != 32:
        return [(layout.root_offset, layout.root_size)]
    regions: list[tuple[int, int]] = []
    number: int | None = layout.root_cluster
    while number is not None and len(regions) <= layout.clusters:
        regions.append((layout.cluster_offset(number), layout.cluster))
        number = _next_cluster(fd, layout, number)
    return regions


def short_name(name: str) -> bytes:
    """The 8.3 directory name of ``name`` (``autoboot.txt`` → ``b"AUTOBOOTTXT"``).

    Raises:
        MemuError: the name has no 8.3 form.
    """
    base, _, ext = name.upper().rpartition(".") if "." in name else (name.upper(), "", "")
    if not base or len(base) > 8 or len(ext) > 3:
        raise MemuError(f"{name!r} has no 8.3 name")
    return base.ljust(8).encode("ascii") + ext.ljust(3).encode("ascii")


def find(fd: int, name: str) -> Extent:
    """Where file ``name`` of the root directory is, on the FAT partition open as ``fd``.

    Raises:
        MemuError: not FAT, no such file, or its bytes are not in one cluster run.
    """
    layout = _layout(os.pread(fd, 512, 0))
    wanted = short_name(name)
    for offset, size in _root_regions(fd, layout):
        table = os.pread(fd, size, offset)
        for at in range(0, len(table) - DIR_ENTRY + 1, DIR_ENTRY):
            entry = table[at:at + DIR_ENTRY]
            if entry[0] == 0:
                raise MemuError(f"{name} is not on the partition")
            attr = entry[11]
            if entry[0] == 0xE5 or attr == ATTR_LFN or attr & (ATTR_VOLUME | ATTR_DIRECTORY):
                continue
            if entry[:11] != wanted:
                continue
            first = struct.unpack_from("<H", entry, 20)[0] << 16 | struct.unpack_from(
                "<H", entry, 26)[0]
            length = struct.unpack_from("<I", entry, 28)[0]
            if length and not 2 <= first <= layout.clusters + 1:
                raise MemuError(f"{name}'s directory entry points outside the data area")
            number = first
            for _ in range(1, -(-length // layout.cluster)):  # each cluster after the first
                following = _next_cluster(fd, layout, number)
                if following is None or following != number + 1:
                    raise MemuError(f"{name} is fragmented; it cannot be rewritten in place")
                number = following
            return Extent(layout.cluster_offset(first), length, offset + at)
    raise MemuError(f"{name} is not on the partition")


@contextlib.contextmanager
def _opened(path: Path, name: str, *, write: bool) -> Iterator[tuple[int, Extent]]:
    """``path`` open (read-write when ``write``) and where ``name`` is on it; an OSError on
    the way becomes a MemuError that names the file."""
    try:
        fd = os.open(path, os.O_RDWR if write else os.O_RDONLY)
    except OSError as e:
        raise MemuError(f"cannot open {path}{' to write' if write else ''}: {e.strerror}"
                        ) from e
    try:
        yield fd, find(fd, name)
    except OSError as e:
        raise MemuError(f"cannot {'write' if write else 'read'} {name} on {path}: "
                        f"{e.strerror}") from e
    finally:
        os.close(fd)


def read(path: Path, name: str) -> bytes:
    """The bytes of root-directory file ``name`` on the FAT partition (or image) ``path``.

    Raises:
        MemuError: it cannot be read (the message says why).
    """
    with _opened(path, name, write=False) as (fd, extent):
        return os.pread(fd, extent.size, extent.offset)


def rewrite(path: Path, name: str, data: bytes) -> None:
    """Replace the content of root-directory file ``name`` on ``path`` by ``data``, which
    must be exactly as long: written in place, flushed to the disk (``fsync``) and read back.

    Raises:
        MemuError: a different length, the file is not there, or what was read back is not
            ``data`` (the message says which).
    """
    with _opened(path, name, write=True) as (fd, extent):
        if len(data) != extent.size:
            raise MemuError(f"{name} is {extent.size} bytes; a rewrite in place must be too, "
                            f"not {len(data)}")
        os.pwrite(fd, data, extent.offset)
        os.fsync(fd)
        # Read back from the disk, not from the page cache the write just filled.
        os.posix_fadvise(fd, extent.offset, extent.size, os.POSIX_FADV_DONTNEED)
        back = os.pread(fd, extent.size, extent.offset)
    if back != data:
        raise MemuError(f"{name} on {path} did not read back as written")


def resize(path: Path, name: str, data: bytes) -> None:
    """Replace the content of root-directory file ``name`` by ``data`` of another length
    (the file taking one cluster before and after, so no cluster is allocated or freed):
    the data first, then the length in its directory
    entry, each flushed. Only for repairing a file that cannot be read anyway: a power cut
    between the two leaves the old length over the new bytes.

    Raises:
        MemuError: the file is not there, ``data`` does not fit its cluster, or a write
            failed.
    """
    with _opened(path, name, write=True) as (fd, extent):
        layout = _layout(os.pread(fd, 512, 0))
        if not 0 < extent.size <= layout.cluster or len(data) > layout.cluster:
            raise MemuError(f"{name} cannot be resized in place on {path}: it must take "
                            "one cluster, before and after")
        os.pwrite(fd, data, extent.offset)
        os.fsync(fd)
        os.pwrite(fd, struct.pack("<I", len(data)), extent.entry + 28)
        os.fsync(fd)
