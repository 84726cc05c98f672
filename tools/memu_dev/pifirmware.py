"""The QEMU harness's stand-in for the Raspberry Pi 5's EEPROM firmware (tryboot boot chain).

QEMU has no Pi 5 machine, so an arm64 image boots on ``-M virt`` by direct kernel boot, and
this module does what the Pi's firmware does before Linux starts (raspberrypi/documentation,
config_txt/autoboot.adoc): read ``autoboot.txt`` on partition 1, boot the ``[all]``
partition, or the ``[tryboot]`` one once when the one-shot tryboot flag is set, load that
partition's kernel, initrd and ``cmdline.txt``, and tell Linux what it did in the device
tree's ``/chosen/bootloader`` (``tryboot`` and ``partition``, 4-byte big-endian cells), which
the box reads as on a real Pi (:mod:`memu_ota.boot.tryboot`).

The flag itself: on a Pi, ``systemctl reboot --reboot-argument="0 tryboot"`` reaches the
firmware through Memu's kernel module; ``-M virt`` has no Pi firmware, so the harness sets the
flag when the guest's kernel says it restarts with that argument (:func:`asks_tryboot`).
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

from memu_common import MemuError, run
from memu_dev.paths import REPO, mkosi_cmd
from memu_ota.boot import fat, gpt
from memu_ota.boot.tryboot import parse_autoboot

#: The selector partition (image/repart-tryboot/00-autoboot.conf).
SELECTOR = 1
#: What the kernel prints (pr_emerg, so whatever the console's log level) when it restarts
#: with the argument ``systemctl reboot --reboot-argument="0 tryboot"`` gave it
#: (kernel/reboot.c).
_TRYBOOT_REQUEST = re.compile(r"Restarting system with command '[^']*\btryboot\b")
#: What it prints on any restart (not on power-off: "reboot: Power down").
RESTARTING = "reboot: Restarting system"


@dataclass(frozen=True)
class DirectBoot:
    """What QEMU boots: files in the VM's work directory and the command line.

    Attributes:
        kernel: the kernel Image.
        initrd: the initrd.
        cmdline: the slot's ``cmdline.txt`` (without its newline).
        dtb: the device tree with ``/chosen/bootloader``.
        partition: the boot slot it came from.
        tryboot: whether the one-shot flag chose it.
    """

    kernel: Path
    initrd: Path
    cmdline: str
    dtb: Path
    partition: int
    tryboot: bool


def asks_tryboot(console: str) -> bool:
    """Whether a boot's console output shows the guest rebooting with the tryboot flag."""
    return bool(_TRYBOOT_REQUEST.search(console))


def _copy_out(disk: Path, start: int, size: int, dest: Path) -> Path:
    """Copy ``size`` bytes from byte ``start`` of the qcow2 ``disk`` into the raw ``dest``:
    qemu-img's raw driver with an offset and a size over the qcow2 (not ``qemu-img dd``,
    whose ``count=`` counts from the start of the input, skipped blocks included)."""
    dest.unlink(missing_ok=True)
    run([*mkosi_cmd(), "sandbox", "--", "qemu-img", "convert", "-O", "raw", "--image-opts",
         f"driver=raw,offset={start},size={size},file.driver=qcow2,"
         f"file.file.filename={disk}", str(dest)], cwd=REPO)
    return dest


def _partition_image(disk: Path, table: dict[int, gpt.Entry], number: int, dest: Path) -> Path:
    """Copy partition ``number`` (of ``table``, the GPT of the qcow2 ``disk``) into the raw
    file ``dest``."""
    part = table.get(number)
    if part is None:
        raise MemuError(f"{disk} has no partition {number}: the firmware finds no boot slot")
    return _copy_out(disk, part.start, part.size, dest)


def virt_dtb(base: Path, out: Path, *, tryboot: bool, partition: int) -> Path:
    """``base`` (the ``-M virt`` machine's own device tree, from QEMU's ``dumpdtb``) with
    ``/chosen/bootloader`` saying ``tryboot`` and ``partition`` as the Pi firmware does."""
    source = run([*mkosi_cmd(), "sandbox", "--", "dtc", "-I", "dtb", "-O", "dts", str(base)],
                 cwd=REPO).stdout
    node = (f"\n/ {{ chosen {{ bootloader {{ tryboot = <{int(tryboot)}>; "
            f"partition = <{partition}>; }}; }}; }};\n")
    dts = out.with_suffix(".dts")
    dts.write_text(source + node)
    run([*mkosi_cmd(), "sandbox", "--", "dtc", "-I", "dts", "-O", "dtb", "-o", str(out),
         str(dts)], cwd=REPO)
    return out


def boot(disk: Path, workdir: Path, base_dtb: Path, *, tryboot: bool) -> DirectBoot:
    """Play the firmware for one boot of the qcow2 ``disk``: choose the slot as
    ``autoboot.txt`` says (the ``[tryboot]`` one when ``tryboot``), and unpack its kernel,
    initrd and command line into ``workdir``.

    Raises:
        MemuError: ``autoboot.txt`` cannot be read or parsed (a real Pi would then not boot
            either), or the chosen slot lacks a file.
    """
    table = gpt.entries(_copy_out(disk, 0, 1 << 20, workdir / "gpt.raw"))
    selector = _partition_image(disk, table, SELECTOR, workdir / "selector.raw")
    choice = parse_autoboot(fat.read(selector, "autoboot.txt"))
    number = choice.trial if tryboot else choice.default
    slot = _partition_image(disk, table, number, workdir / "slot.raw")
    kernel = workdir / "Image"
    kernel.write_bytes(gzip.decompress(fat.read(slot, "vmlinuz.gz")))
    initrd = workdir / "initrd.img"
    initrd.write_bytes(fat.read(slot, "initrd.img"))
    line = fat.read(slot, "cmdline.txt").decode().strip()
    slot.unlink()
    if not line:
        raise MemuError(f"partition {number}'s cmdline.txt is empty")
    dtb = virt_dtb(base_dtb, workdir / "virt.dtb", tryboot=tryboot, partition=number)
    return DirectBoot(kernel, initrd, line, dtb, number, tryboot)
