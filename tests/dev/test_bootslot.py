"""The Raspberry Pi 5's boot slot as the build assembles it after mkosi, on real files: a FAT
made by mkfs.vfat and filled by mtools, read back by mtools and by the box's own FAT reader
(memu_ota.boot.fat), a GPT made by sfdisk."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from pathlib import Path

import pytest

from memu_common import MemuError
from memu_dev import bootslot
from memu_dev.paths import REPO
from memu_ota.boot import fat, gpt

HASH = "ab" * 32


def _sig(tmp_path: Path, obj: object) -> Path:
    p = tmp_path / "usr-verity-sig.raw"
    p.write_bytes(json.dumps(obj).encode().ljust(16384, b"\0"))
    return p


def test_the_root_hash_comes_from_the_verity_signature_partition(tmp_path: Path) -> None:
    assert bootslot.root_hash(_sig(tmp_path, {"rootHash": HASH, "signature": "MIIx"})) == HASH
    with pytest.raises(MemuError, match="not a verity signature partition"):
        bootslot.root_hash(_sig(tmp_path, {"signature": "MIIx"}))
    with pytest.raises(MemuError, match="not a SHA-256"):
        bootslot.root_hash(_sig(tmp_path, {"rootHash": "abc"}))


def test_the_command_line_names_root_and_usr_explicitly() -> None:
    line = bootslot.cmdline("rw systemd.firstboot=no console=ttyAMA10,115200", HASH,
                            "0f1e2d3c-0000-4000-8000-000000000001")
    assert line == (f"root=PARTUUID=0f1e2d3c-0000-4000-8000-000000000001 usrhash={HASH} "
                    "rw systemd.firstboot=no console=ttyAMA10,115200\n")


def test_the_slot_is_a_512_byte_sector_fat_that_others_read(tmp_path: Path) -> None:
    files = {"config.txt": b"[pi5]\narm_64bit=1\n", "cmdline.txt": b"root=x usrhash=y\n",
             "initrd.img": bytes(range(256)) * 4000}
    img = bootslot.make_fat(tmp_path / "boot.raw", files, 64 << 20, "MEMU-BOOT", "abcd1234")
    assert img.stat().st_size == 64 << 20
    boot_sector = img.read_bytes()[:512]
    assert int.from_bytes(boot_sector[11:13], "little") == 512  # bytes per sector
    for name, data in files.items():
        assert fat.read(img, name) == data
        shown = subprocess.run(["mtype", "-i", str(img), f"::{name}"], capture_output=True,
                               check=True, env={"MTOOLS_SKIP_CHECK": "1"}).stdout
        assert shown == data
    # the same inputs make the same bytes (fixed volume ID, no times but the build's)
    time.sleep(1.1)  # FAT keeps times in 2-second steps
    again = bootslot.make_fat(tmp_path / "again.raw", files, 64 << 20, "MEMU-BOOT", "abcd1234")
    assert again.read_bytes() == img.read_bytes()
    assert subprocess.run(["fsck.fat", "-n", str(again)], capture_output=True).returncode == 0
    with pytest.raises(MemuError, match="do not fit"):
        bootslot.make_fat(tmp_path / "small.raw", files, 1 << 20, "MEMU-BOOT", "abcd1234")


def test_boot_files_carry_a_reproducible_gzipped_kernel_and_both_device_trees(
        tmp_path: Path) -> None:
    kernel, initrd, dtbs = tmp_path / "vmlinuz", tmp_path / "initrd", tmp_path / "dtbs"
    kernel.write_bytes(b"ARMd" * 10000)
    initrd.write_bytes(b"070701")
    dtbs.mkdir()
    (dtbs / "bcm2712-rpi-5-b.dtb").write_bytes(b"\xd0\x0d\xfe\xed c1")
    with pytest.raises(MemuError, match=r"bcm2712-d-rpi-5-b\.dtb is missing"):
        bootslot.boot_files(kernel, initrd, dtbs, "x\n")
    (dtbs / "bcm2712-d-rpi-5-b.dtb").write_bytes(b"\xd0\x0d\xfe\xed d0")
    files = bootslot.boot_files(kernel, initrd, dtbs, "root=x\n")
    assert sorted(files) == ["bcm2712-d-rpi-5-b.dtb", "bcm2712-rpi-5-b.dtb", "cmdline.txt",
                             "config.txt", "initrd.img", "vmlinuz.gz"]
    assert gzip.decompress(files["vmlinuz.gz"]) == kernel.read_bytes()
    assert files["vmlinuz.gz"] == bootslot.boot_files(kernel, initrd, dtbs, "y\n")["vmlinuz.gz"]
    assert b"kernel=vmlinuz.gz" in files["config.txt"]
    assert b"initramfs initrd.img followkernel" in files["config.txt"]


def _disk(tmp_path: Path) -> Path:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\xee" * (40 << 20))
    layout = ("label: gpt\nsize=16M, type=L, name=memu-autoboot\n"
              "size=8M, type=L, name=memu-os_0.1.0\ntype=L, name=root-arm64\n")
    subprocess.run(["sfdisk", "-q", str(disk)], input=layout.encode(), check=True)
    return disk


def test_the_slot_is_written_into_its_partition_only(tmp_path: Path) -> None:
    disk = _disk(tmp_path)
    parts = gpt.entries(disk)
    assert [p.name for p in parts.values()] == ["memu-autoboot", "memu-os_0.1.0", "root-arm64"]
    slot = parts[2]
    image = tmp_path / "slot.raw"
    image.write_bytes(b"\x42" * (1 << 20))
    bootslot.splice(disk, 2, image)
    data = disk.read_bytes()
    assert data[slot.start:slot.start + (1 << 20)] == image.read_bytes()
    assert data[slot.start + (1 << 20):slot.start + slot.size] == bytes(slot.size - (1 << 20))
    assert data[slot.start - 1] == data[slot.start + slot.size] == 0xEE  # neighbours kept
    image.write_bytes(bytes(slot.size + 512))
    with pytest.raises(MemuError, match="bigger than partition 2"):
        bootslot.splice(disk, 2, image)
    with pytest.raises(MemuError, match="has no partition 9"):
        bootslot.splice(disk, 9, image)


def test_the_pi_layout_puts_selector_and_boot_slots_first() -> None:
    """systemd-repart numbers partitions by their definitions' file names across both
    directories; the Pi firmware and memu_ota.boot.tryboot want 1, 2, 3 for the selector
    and the boot slots, and the selector made with the choice the build ships."""
    from memu_dev.build import repart_dirs
    from memu_ota.boot.tryboot import SLOTS, Autoboot, parse_autoboot, render_autoboot

    files = sorted((p.name, p) for d in repart_dirs("pi5") for p in d.glob("*.conf"))
    labels = [next(line.partition("=")[2] for line in p.read_text().splitlines()
                   if line.startswith("Label=")) for _, p in files[:3]]
    assert labels == ["memu-autoboot", "%M_%A", "_empty"]
    assert bootslot.SLOT_A == SLOTS[0] == 2
    shipped = (REPO / "overlays/boot-tryboot/usr/lib/memu/tryboot/autoboot.txt").read_bytes()
    assert shipped == render_autoboot(Autoboot(2, 3))
    assert parse_autoboot(shipped) == Autoboot(default=2, trial=3)
