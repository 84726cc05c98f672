"""The QEMU harness's stand-in for the Pi 5 firmware, on a real disk: a GPT by sfdisk, FAT
slots by mkfs.vfat and mtools, the disk as the qcow2 a VM boots, and the device tree compiled
and read back by dtc's own tools (mkosi's tools tree)."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from memu_common import MemuError
from memu_dev import bootslot, pifirmware
from memu_dev.paths import REPO, mkosi_cmd
from memu_ota.boot.tryboot import Autoboot, render_autoboot

MIB = 1 << 20


def _sandbox(*argv: str) -> str:
    return subprocess.run([*mkosi_cmd(), "sandbox", "--", *argv], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout


def _disk(tmp_path: Path, autoboot: bytes) -> Path:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(48 * MIB))
    layout = ("label: gpt\nsize=8M, type=L, name=memu-autoboot\n"
              "size=16M, type=L, name=memu-os_0.1.0\nsize=16M, type=L, name=memu-os_0.2.0\n")
    subprocess.run(["sfdisk", "-q", str(raw)], input=layout.encode(), check=True)
    slots = {
        1: {"autoboot.txt": autoboot},
        2: {"cmdline.txt": b"root=PARTUUID=a usrhash=1\n", "vmlinuz.gz": gzip.compress(b"A" * 9),
            "initrd.img": b"initrd of 0.1.0"},
        3: {"cmdline.txt": b"root=PARTUUID=a usrhash=2\n", "vmlinuz.gz": gzip.compress(b"B" * 9),
            "initrd.img": b"initrd of 0.2.0"},
    }
    from memu_ota.boot import gpt
    for number, files in slots.items():
        part = gpt.entries(raw)[number]
        fs = bootslot.make_fat(tmp_path / f"p{number}.raw", files, part.size, "MEMU",
                               f"0000000{number}")
        bootslot.splice(raw, number, fs)
    disk = tmp_path / "disk.qcow2"
    _sandbox("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk))
    return disk


@pytest.fixture
def base_dtb(tmp_path: Path) -> Path:
    (tmp_path / "base.dts").write_text('/dts-v1/;\n/ { model = "virt"; chosen { }; };\n')
    _sandbox("dtc", "-I", "dts", "-O", "dtb", "-o", str(tmp_path / "base.dtb"),
             str(tmp_path / "base.dts"))
    return tmp_path / "base.dtb"


def test_the_committed_slot_boots_unless_the_one_shot_flag_is_set(
        tmp_path: Path, base_dtb: Path) -> None:
    disk = _disk(tmp_path, render_autoboot(Autoboot(2, 3)))
    work = tmp_path / "vm"
    work.mkdir()
    plain = pifirmware.boot(disk, work, base_dtb, tryboot=False)
    assert (plain.partition, plain.tryboot) == (2, False)
    assert plain.kernel.read_bytes() == b"A" * 9  # unpacked, as the firmware does
    assert plain.initrd.read_bytes() == b"initrd of 0.1.0"
    assert plain.cmdline == "root=PARTUUID=a usrhash=1"
    # the box reads these as on a Pi: /proc/device-tree/chosen/bootloader/{tryboot,partition}
    assert _sandbox("fdtget", "-t", "u", str(plain.dtb), "/chosen/bootloader",
                    "partition").split() == ["2"]
    assert _sandbox("fdtget", "-t", "u", str(plain.dtb), "/chosen/bootloader",
                    "tryboot").split() == ["0"]
    trial = pifirmware.boot(disk, work, base_dtb, tryboot=True)
    assert (trial.partition, trial.tryboot) == (3, True)
    assert trial.initrd.read_bytes() == b"initrd of 0.2.0"
    assert _sandbox("fdtget", "-t", "u", str(trial.dtb), "/chosen/bootloader",
                    "tryboot").split() == ["1"]
    assert _sandbox("fdtget", str(trial.dtb), "/", "model").strip() == "virt"  # the rest kept


def test_an_unreadable_autoboot_txt_boots_nothing(tmp_path: Path, base_dtb: Path) -> None:
    disk = _disk(tmp_path, b"[all]\nboot_partition=2\n")
    (tmp_path / "vm").mkdir()
    with pytest.raises(MemuError, match="tryboot_a_b=1"):
        pifirmware.boot(disk, tmp_path / "vm", base_dtb, tryboot=False)


def test_the_guest_asking_for_a_trial_is_seen_on_its_console() -> None:
    console = ("[  OK  ] Finished systemd-reboot.service.\r\n"
               "[  123.456789] reboot: Restarting system with command '0 tryboot'\r\n")
    assert pifirmware.asks_tryboot(console)
    assert not pifirmware.asks_tryboot("[  99.1] reboot: Restarting system\r\n")
    assert not pifirmware.asks_tryboot("reboot: Restarting system with command 'notryboot'")
