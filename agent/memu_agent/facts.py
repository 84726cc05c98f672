"""Facts about the running system for ``/api/status``: OS version, boot slot and entry,
uptime, host name. Every file read comes from :class:`HostPaths`, so tests point it at a
fake tree. Nothing here raises for a missing or odd file: unknown facts are None."""

from __future__ import annotations

import logging
import shlex
import socket
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

# systemd-boot's vendor GUID (systemd docs/BOOT_LOADER_INTERFACE.md).
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"


@dataclass(frozen=True)
class HostPaths:
    """Where the system files live (the defaults are the real ones).

    Attributes:
        os_release: tried in order, per os-release(5).
        proc: the procfs mount (``uptime``, ``self/mountinfo``, ``sys/kernel/hostname``).
        sys: the sysfs mount (``dev/block/MAJ:MIN/…``).
        efivars: the efivarfs directory.
    """

    os_release: tuple[Path, ...] = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    efivars: Path = Path("/sys/firmware/efi/efivars")


@dataclass(frozen=True)
class BootInfo:
    """Which OS slot and boot entry this boot came from.

    Attributes:
        slot: "a" or "b", or None when it cannot be told (yet).
        entry: systemd-boot's ``LoaderEntrySelected`` (e.g. ``memu_0.1.0+3-0.efi``), or None.
        usr_partlabel: GPT label of the partition backing ``/usr`` (e.g. ``memu-os_0.1.0``).
    """

    slot: str | None
    entry: str | None
    usr_partlabel: str | None


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5) text (shell-style ``KEY=value`` lines, optionally quoted)."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            continue
        result[key.strip()] = words[0] if words else ""
    return result


def os_version(paths: HostPaths) -> str:
    """The OS version: ``IMAGE_VERSION`` from the first os-release file that exists, else the
    ``memu-os`` package version, else "unknown"."""
    for path in paths.os_release:
        try:
            text = path.read_text("utf-8")
        except OSError:
            continue
        version = parse_os_release(text).get("IMAGE_VERSION")
        if version:
            return version
        break  # os-release(5): the first file that exists is the one
    try:
        return metadata.version("memu-os")
    except metadata.PackageNotFoundError:
        return "unknown"


def uptime_s(paths: HostPaths) -> float | None:
    """Seconds since boot, from the first field of ``/proc/uptime``."""
    try:
        return float((paths.proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def hostname(paths: HostPaths) -> str:
    """The kernel's host name (``/proc/sys/kernel/hostname``, else ``gethostname()``)."""
    try:
        name = (paths.proc / "sys" / "kernel" / "hostname").read_text().strip()
    except OSError:
        name = ""
    return name or socket.gethostname()


def loader_entry_selected(paths: HostPaths) -> str | None:
    """systemd-boot's ``LoaderEntrySelected`` EFI variable: 4 bytes of attributes, then a
    UTF-16LE string ending in NUL. None when not booted through systemd-boot."""
    try:
        raw = (paths.efivars / f"LoaderEntrySelected-{LOADER_GUID}").read_bytes()
    except OSError:
        return None
    try:
        text = raw[4:].decode("utf-16-le")
    except UnicodeDecodeError:
        return None
    return text.split("\0", 1)[0] or None


def _mount_device(paths: HostPaths, mount_point: str) -> str | None:
    """``MAJ:MIN`` of the last mount at ``mount_point`` in ``/proc/self/mountinfo``."""
    try:
        lines = (paths.proc / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        parts = line.split()
        if len(parts) > 4 and parts[4] == mount_point:
            found = parts[2]
    return found


def _uevent(paths: HostPaths, block: Path) -> dict[str, str]:
    try:
        text = (block / "uevent").read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def usr_partlabel(paths: HostPaths) -> str | None:
    """GPT partition label of the block device backing ``/usr`` (or ``/`` when ``/usr`` is
    not its own mount). Through dm-verity, the label of the data device under it (the slave
    whose label does not mention "verity")."""
    devno = _mount_device(paths, "/usr") or _mount_device(paths, "/")
    if devno is None:
        return None
    block = paths.sys / "dev" / "block" / devno
    label = _uevent(paths, block).get("PARTNAME")
    if label:
        return label
    try:
        slaves = sorted((block / "slaves").iterdir())
    except OSError:
        return None
    labels = [_uevent(paths, s).get("PARTNAME") for s in slaves]
    data = [name for name in labels if name and "verity" not in name]
    return data[0] if data else None


def boot_info(paths: HostPaths) -> BootInfo:
    """What this boot came from. ``slot`` stays None until the image's partition labels
    say which slot is which (a later release)."""
    return BootInfo(
        slot=None, entry=loader_entry_selected(paths), usr_partlabel=usr_partlabel(paths)
    )
