"""Is a block device safe to flash? The checks the careful flashing tools make (Raspberry Pi
Imager, balenaEtcher), read from sysfs and procfs, never from ``lsblk`` output.

A target is refused when it is not a whole disk (a partition, a regular file, a missing
path), when it is the disk the machine runs from (the disk under ``/``, followed through
partitions and stacked devices such as dm-verity, dm-crypt, LVM and md), when it or a device
built on it is mounted or used as swap, when it is read-only, or when it is smaller than the
image. Sources: sysfs-block (Documentation/ABI/stable/sysfs-block: ``size`` in 512-byte
sectors, ``ro``, ``removable``, ``partition``, ``slaves/``), proc(5) for
``/proc/self/mountinfo`` (field 3 is ``major:minor``) and ``/proc/swaps``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

from memu_common import MemuError

SECTOR = 512


class FlashRefused(MemuError):
    """The target must not be written; the message says why, the hint what to do."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A whole disk that may be written: ``path`` (``/dev/sdb``), kernel ``name`` (``sdb``),
    ``size`` in bytes, ``removable`` (sysfs says so: USB sticks, SD cards), ``model`` (may
    be empty)."""

    path: Path
    name: str
    size: int
    removable: bool
    model: str

    def describe(self) -> str:
        """``/dev/sdb (SanDisk Ultra, 29.8 GiB)``."""
        what = ", ".join(x for x in (self.model, f"{self.size / 2**30:.1f} GiB") if x)
        return f"{self.path} ({what})"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def disks_under(devnum: int, sysfs: Path = Path("/sys")) -> set[str]:
    """Kernel names of the whole disks that hold block device ``devnum`` (``st_dev`` or
    ``st_rdev``): its own disk, or for a partition its parent, and for a stacked device
    (device-mapper, md) the disks under each of its ``slaves``. Empty for a device that
    is not a block device on a disk (tmpfs, overlay, NFS)."""
    node = sysfs / "dev/block" / f"{os.major(devnum)}:{os.minor(devnum)}"
    return _disks_of(node.resolve(), set()) if node.exists() else set()


def _disks_of(dev: Path, seen: set[Path]) -> set[str]:
    if dev in seen:
        return set()
    seen.add(dev)
    if (dev / "partition").exists():
        return {dev.parent.name}
    slaves = sorted((dev / "slaves").glob("*")) if (dev / "slaves").is_dir() else []
    if not slaves:
        return {dev.name}
    found: set[str] = set()
    for slave in slaves:
        found |= _disks_of(slave.resolve(), seen)
    return found


def _mounts(mountinfo: Path) -> list[tuple[int, str]]:
    """``(device number, mount point)`` of every mount in ``mountinfo`` (proc(5))."""
    out = []
    for line in _read(mountinfo).splitlines():
        fields = line.split()
        if len(fields) > 4 and ":" in fields[2]:
            major, minor = fields[2].split(":", 1)
            out.append((os.makedev(int(major), int(minor)), fields[4]))
    return out


def _swaps(swaps: Path) -> list[Path]:
    return [Path(line.split()[0]) for line in _read(swaps).splitlines()[1:] if line.split()]


def inspect(device: Path, image_size: int | None, *, sysfs: Path = Path("/sys"),
            root: Path = Path("/"), mountinfo: Path = Path("/proc/self/mountinfo"),
            swaps: Path = Path("/proc/swaps")) -> Target:
    """Check ``device`` as a target for an image of ``image_size`` bytes (None: unknown);
    return it. ``root`` is the directory whose disk the machine runs from.

    Raises:
        FlashRefused: any of the reasons in the module docstring.
    """
    try:
        st = os.stat(device)
    except OSError as e:
        raise FlashRefused(f"{device}: {e.strerror}",
                           hint="give the whole disk, e.g. /dev/sdb or /dev/nvme1n1") from e
    if not stat.S_ISBLK(st.st_mode):
        raise FlashRefused(f"{device} is not a block device",
                           hint="give the whole disk, e.g. /dev/sdb or /dev/nvme1n1")
    node = (sysfs / "dev/block" / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}").resolve()
    name = node.name
    if (node / "partition").exists():
        raise FlashRefused(f"{device} is a partition of {node.parent.name}",
                           hint=f"give the whole disk: /dev/{node.parent.name}")
    if name in disks_under(os.stat(root).st_dev, sysfs):
        raise FlashRefused(f"{device} is the disk this machine runs from ({root} is on it)",
                           hint="flash another disk")
    for devnum, where in _mounts(mountinfo):
        if name in disks_under(devnum, sysfs):
            raise FlashRefused(f"{device} is in use: a filesystem on it is mounted at {where}",
                               hint=f"unmount it first (umount {where})")
    for swap in _swaps(swaps):
        try:
            number = os.stat(swap).st_rdev
        except OSError:
            continue
        if name in disks_under(number, sysfs):
            raise FlashRefused(f"{device} is in use as swap ({swap})",
                               hint=f"turn it off first (swapoff {swap})")
    if _read(node / "ro") == "1":
        raise FlashRefused(f"{device} is read-only",
                           hint="check the write-protect switch of the card or adapter")
    size = int(_read(node / "size") or 0) * SECTOR
    if image_size is not None and size < image_size:
        raise FlashRefused(f"{device} holds {size / 2**30:.2f} GiB, the image needs "
                           f"{image_size / 2**30:.2f} GiB", hint="use a larger disk")
    model = " ".join(_read(node / "device/model").split())
    return Target(device, name, size, _read(node / "removable") == "1", model)
