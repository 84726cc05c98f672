"""Facts about the running system for ``/api/status``: OS version, boot slot and entry (the
entry from the board's boot chain, :mod:`memu_ota.boot`), uptime, host name. Every file read
comes from :class:`HostPaths`, so tests point it at a fake tree. Nothing here raises for a
missing or odd file: unknown facts are None."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from memu_common import boards, osrelease
from memu_firstboot.stack_config import CONFIG_DIR as STACK_CONFIG_DIR
from memu_ota.boot import BootBackend, Firmware, for_board
from memu_ota.boot.tryboot import SELECTOR_LABEL
from memu_ota.config import OtaConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostPaths:
    """Where the system files live (the defaults are the real ones).

    Attributes:
        os_release: tried in order, per os-release(5).
        proc: the procfs mount (``uptime``, ``self/mountinfo``, ``sys/kernel/hostname``).
        sys: the sysfs mount (``dev/block/MAJ:MIN/…``).
        firmware: where the firmware's facts are (EFI variables), for the boot chain.
        board_file: where the image names its board (:data:`memu_common.boards.BOARD_FILE`).
        dev: the device nodes (``/dev/hailo0``, :mod:`memu_agent.npu`).
        udev_data: udev's device database (``b<MAJ>:<MIN>`` files with ``E:KEY=value``).
        preload_status: what the container image preload reports (:mod:`memu_agent.preload`).
        pull_status: what the pull of registry images reports (:mod:`memu_agent.pull`).
        model_status: what the download of the LLM's models reports (:mod:`memu_agent.model`).
        stack_data_status: what the stack's start did with its data
            (:func:`memu_agent.stack.prepare_data`).
        docker_socket: the Docker Engine API's socket.
        data: a path on the writable partition, whose fullness ``/api/status`` reports.
        stack_config: the stack's configuration, where the assistant's account is
            (:mod:`memu_agent.assistant`).
    """

    os_release: tuple[Path, ...] = osrelease.PATHS
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    firmware: Firmware = field(default_factory=Firmware)
    board_file: Path = boards.BOARD_FILE
    dev: Path = Path("/dev")
    udev_data: Path = Path("/run/udev/data")
    preload_status: Path = Path("/run/memu-stack/preload.json")
    pull_status: Path = Path("/run/memu-stack/pull.json")
    model_status: Path = Path("/run/memu-stack/model.json")
    stack_data_status: Path = Path("/run/memu-stack/data.json")
    docker_socket: Path = Path("/run/docker.sock")
    data: Path = Path("/var")
    stack_config: Path = STACK_CONFIG_DIR


@dataclass(frozen=True)
class BootInfo:
    """Which OS slot and boot entry this boot came from.

    Attributes:
        slot: "a" or "b", or None when it cannot be told (yet).
        entry: the boot entry as the boot chain names it
            (:attr:`memu_ota.boot.ThisBoot.entry`, e.g. systemd-boot's
            ``memu-os_0.1.0+3-0.efi``), or None.
        usr_partlabel: GPT label of the partition backing ``/usr`` (e.g. ``memu-os_0.1.0``).
    """

    slot: str | None
    entry: str | None
    usr_partlabel: str | None


def os_version(paths: HostPaths) -> str:
    """The OS version: ``IMAGE_VERSION`` from the first os-release file that exists, else the
    ``memu-os`` package version, else "unknown"."""
    version = osrelease.read(paths.os_release).get("IMAGE_VERSION")
    if version:
        return version
    try:
        return metadata.version("memu-os")
    except metadata.PackageNotFoundError:
        return "unknown"


def os_variant(paths: HostPaths) -> str | None:
    """The image's build variant (os-release's ``VARIANT_ID``: "hailo"), or None for the
    plain image."""
    return osrelease.variant(osrelease.read(paths.os_release))


def uptime_s(paths: HostPaths) -> float | None:
    """Seconds since boot, from the first field of ``/proc/uptime``."""
    try:
        return float((paths.proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def local_name(host: str) -> str:
    """The box's name on the home network by mDNS: ``<host name>.local``, lower case
    (``Memu`` → ``memu.local``)."""
    return f"{host.lower()}.local"


def hostname(paths: HostPaths) -> str:
    """The kernel's host name (``/proc/sys/kernel/hostname``, else ``gethostname()``)."""
    try:
        name = (paths.proc / "sys" / "kernel" / "hostname").read_text().strip()
    except OSError:
        name = ""
    return name or socket.gethostname()


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


def _usr_data_block(paths: HostPaths) -> Path | None:
    """sysfs directory of the partition that holds ``/usr``'s data (or ``/``'s when ``/usr``
    is not its own mount). Through dm-verity: the slave whose label does not say "verity"."""
    devno = _mount_device(paths, "/usr") or _mount_device(paths, "/")
    if devno is None:
        return None
    block = paths.sys / "dev" / "block" / devno
    if _uevent(paths, block).get("PARTNAME"):
        return block
    try:
        slaves = sorted((block / "slaves").iterdir())
    except OSError:
        return None
    for s in slaves:
        name = _uevent(paths, s).get("PARTNAME")
        if name and "verity" not in name:
            return s
    return None


def usr_partlabel(paths: HostPaths) -> str | None:
    """GPT partition label of the partition holding ``/usr`` (e.g. ``memu-os_0.1.0``)."""
    block = _usr_data_block(paths)
    return _uevent(paths, block).get("PARTNAME") if block else None


def _part_type(paths: HostPaths, block: Path) -> str | None:
    """GPT partition type UUID of a partition, from udev's database."""
    try:
        devno = (block / "dev").read_text().strip()
        lines = (paths.udev_data / f"b{devno}").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("E:ID_PART_ENTRY_TYPE="):
            return line.split("=", 1)[1].lower()
    return None


def usr_slot(paths: HostPaths) -> str | None:
    """"a" or "b": which of the disk's ``/usr`` partitions (same GPT type, in partition-number
    order) holds the running ``/usr``. None when it cannot be told."""
    block = _usr_data_block(paths)
    if block is None:
        return None
    block = block.resolve()
    ptype = _part_type(paths, block)
    if ptype is None:
        return None
    same: list[tuple[int, Path]] = []
    for sib in block.parent.iterdir():
        try:
            number = int((sib / "partition").read_text())
        except (OSError, ValueError):
            continue
        if _part_type(paths, sib) == ptype:
            same.append((number, sib.resolve()))
    order = [p for _, p in sorted(same)]
    if block not in order or order.index(block) > 1:
        return None
    return "ab"[order.index(block)]


def boot_disk_partition(paths: HostPaths, number: int, label: str) -> Path | None:
    """The device node of partition ``number`` on the disk the running ``/usr`` came from
    (``/dev/nvme0n1p1`` for 1), when its GPT label is ``label``; else None (also when that
    disk cannot be told).

    The Pi's selector partition (1: ``autoboot.txt``) is looked up here rather than by its
    label alone: a second Memu disk on USB (a fresh one being flashed, an old one as backup)
    carries a ``memu-autoboot`` too, and the commit must go to the disk the running system
    is on.
    """
    block = _usr_data_block(paths)
    if block is None:
        return None
    try:
        siblings = list(block.resolve().parent.iterdir())
    except OSError:
        return None
    for sib in siblings:
        try:
            if int((sib / "partition").read_text()) == number:
                return paths.dev / sib.name if _uevent(paths, sib).get(
                    "PARTNAME") == label else None
        except (OSError, ValueError):
            continue
    return None


def boot_chain(paths: HostPaths, ota: OtaConfig, running: str) -> BootBackend:
    """The boot chain of the board this image is for (:func:`memu_ota.boot.for_board`),
    running version ``running``; the Pi's selector is partition 1 of the boot disk
    (:func:`boot_disk_partition`).

    Raises:
        MemuError: the image names a board this version does not know.
    """
    board = boards.running(paths.board_file)
    selector = (boot_disk_partition(paths, 1, SELECTOR_LABEL) if board.boot == "tryboot"
                else None)
    return for_board(board, ota, running, paths.firmware, selector=selector)


def boot_info(paths: HostPaths, boot: BootBackend) -> BootInfo:
    """What this boot came from: slot, boot entry and the ``/usr`` partition's label."""
    return BootInfo(
        slot=usr_slot(paths), entry=boot.this_boot().entry,
        usr_partlabel=usr_partlabel(paths),
    )
