"""`just flash` (memu_ota.flash, memu_ota.flash_target) on loop devices only, never near a disk
of this machine: images written head last and read back, compressed images streamed, and
every unsafe target refused before a byte is written. The disk "this machine runs from" is
faked by pointing the check at a mounted loop device instead of ``/``; partitions and a
stacked device (dm-verity over a partition) by a sysfs tree made here, since these hosts'
kernel has neither partition tables nor device-mapper."""

from __future__ import annotations

import io
import os
import random
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from memu_ota import flash
from memu_ota.flash_target import FlashRefused, disks_under, inspect

MiB = 1 << 20


def _loop(backing: Path, *args: str) -> Path:
    out = subprocess.run(["losetup", "--find", "--show", *args, str(backing)], check=True,
                         capture_output=True, text=True)
    return Path(out.stdout.strip())


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A 16 MiB loop device filled with 0xAA (an old disk's contents); yields (device,
    backing file)."""
    backing = tmp_path / "disk.img"
    backing.write_bytes(b"\xaa" * 16 * MiB)
    dev = _loop(backing)
    try:
        yield dev, backing
    finally:
        subprocess.run(["losetup", "-d", str(dev)], check=False)


@pytest.fixture
def image(tmp_path: Path) -> bytes:
    """6 MiB of image: a recognisable first MiB (the partition table's place), then noise."""
    data = b"MEMU-HEAD" + bytes(MiB - 9) + random.Random(1).randbytes(5 * MiB)
    (tmp_path / "memu.raw").write_bytes(data)
    return data


def _compressed(tmp_path: Path, kind: str) -> Path:
    raw = tmp_path / "memu.raw"
    if kind == "raw":
        return raw
    tool = {"xz": ["xz", "-T1", "-0", "-k"], "zst": ["zstd", "-q", "-k"]}[kind]
    subprocess.run([*tool, str(raw)], check=True)
    return raw.with_name(f"memu.raw.{kind}")


@pytest.mark.parametrize("kind", ["raw", "xz", "zst"])
def test_an_image_is_written_and_read_back(tmp_path: Path, disk: tuple[Path, Path],
                                           image: bytes, kind: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    dev, backing = disk
    src = _compressed(tmp_path, kind)
    assert flash.image_size(src) == len(image)  # from the xz index, the zstd frame header
    assert flash.main([str(src), str(dev), "--confirm", dev.name]) == 0
    on_disk = backing.read_bytes()
    assert on_disk[:len(image)] == image
    assert on_disk[len(image):] == b"\xaa" * (16 * MiB - len(image))  # past it: untouched
    out = capsys.readouterr()
    assert "written to" in out.out and "verified" in out.out
    assert "MiB/s" in out.err and "(100 %)" in out.err  # the progress line


def test_a_damaged_image_leaves_no_partition_table(tmp_path: Path, disk: tuple[Path, Path],
                                                   image: bytes,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    dev, backing = disk
    src = _compressed(tmp_path, "xz")
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the index at the end is whole: found while streaming
    src.write_bytes(bytes(data))
    assert flash.main([str(src), str(dev), "--confirm", dev.name]) == 1
    assert "cannot be decompressed" in capsys.readouterr().err
    on_disk = backing.read_bytes()
    assert on_disk[:MiB] == bytes(MiB)  # the head is zeroed first and never written
    assert b"MEMU-HEAD" not in on_disk


def test_a_truncated_image_is_refused_before_writing(tmp_path: Path, disk: tuple[Path, Path],
                                                     image: bytes,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    dev, backing = disk
    src = _compressed(tmp_path, "xz")
    cut = tmp_path / "cut.raw.xz"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert flash.main([str(cut), str(dev), "--confirm", dev.name]) == 1
    assert "damaged or truncated" in capsys.readouterr().err
    assert backing.read_bytes() == b"\xaa" * 16 * MiB


def test_a_corrupted_read_back_is_refused(tmp_path: Path, disk: tuple[Path, Path],
                                          image: bytes) -> None:
    dev, backing = disk
    target = inspect(dev, len(image))
    digest, size = flash.write(tmp_path / "memu.raw", target, len(image))
    with backing.open("r+b") as f:  # the disk returns other bytes than it was given
        f.seek(3 * MiB)
        f.write(b"\x00")
        f.flush()
        os.fsync(f.fileno())
    with pytest.raises(flash.MemuError, match="does not hold what was written"):
        flash.verify(target, digest, size)


def test_a_disk_smaller_than_the_image_is_refused(tmp_path: Path, image: bytes) -> None:
    backing = tmp_path / "small.img"
    backing.write_bytes(b"\xaa" * 4 * MiB)
    dev = _loop(backing)
    try:
        with pytest.raises(FlashRefused, match="the image needs"):
            inspect(dev, len(image))
        assert flash.main([str(tmp_path / "memu.raw"), str(dev), "--confirm", dev.name]) == 1
    finally:
        subprocess.run(["losetup", "-d", str(dev)], check=False)
    assert backing.read_bytes() == b"\xaa" * 4 * MiB


def test_a_read_only_disk_is_refused(tmp_path: Path) -> None:
    backing = tmp_path / "ro.img"
    backing.write_bytes(bytes(8 * MiB))
    dev = _loop(backing, "--read-only")
    try:
        with pytest.raises(FlashRefused, match="read-only"):
            inspect(dev, MiB)
    finally:
        subprocess.run(["losetup", "-d", str(dev)], check=False)


def _fake_sysfs(root: Path) -> Path:
    """A sysfs tree with disk sda (8:0), its partition sda3 (8:3) and dm-0 (254:0, a
    dm-verity device over sda3, as the image's /usr)."""
    sysfs = root / "sys"
    sda = sysfs / "devices/pci0000:00/0000:00:17.0/block/sda"
    (sda / "sda3").mkdir(parents=True)
    (sda / "size").write_text("62533296\n")
    (sda / "sda3/partition").write_text("3\n")
    dm = sysfs / "devices/virtual/block/dm-0"
    (dm / "slaves").mkdir(parents=True)
    (dm / "slaves/sda3").symlink_to(sda / "sda3")
    (sysfs / "dev/block").mkdir(parents=True)
    (sysfs / "dev/block/8:0").symlink_to(sda)
    (sysfs / "dev/block/8:3").symlink_to(sda / "sda3")
    (sysfs / "dev/block/254:0").symlink_to(dm)
    return sysfs


def test_a_partition_is_refused_with_the_whole_disk_named(tmp_path: Path) -> None:
    """On a fake sysfs (these hosts' kernel reads no partition tables), with a real device
    node for sda3."""
    sysfs = _fake_sysfs(tmp_path)
    node = tmp_path / "sda3"
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(8, 3))
    with pytest.raises(FlashRefused, match="is a partition of sda") as e:
        inspect(node, MiB, sysfs=sysfs)
    assert e.value.hint == "give the whole disk: /dev/sda"


@pytest.fixture
def mounted(tmp_path: Path, disk: tuple[Path, Path]) -> Iterator[tuple[Path, Path]]:
    """The loop disk with an ext4 on it, mounted; yields (device, mount point)."""
    dev, _ = disk
    subprocess.run(["mkfs.ext4", "-q", "-F", str(dev)], check=True)
    where = tmp_path / "mnt"
    where.mkdir()
    subprocess.run(["mount", str(dev), str(where)], check=True)
    try:
        yield dev, where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_a_mounted_disk_is_refused(mounted: tuple[Path, Path], image: bytes) -> None:
    dev, where = mounted
    with pytest.raises(FlashRefused, match=f"mounted at {where}"):
        inspect(dev, len(image))


def test_the_disk_the_machine_runs_from_is_refused(mounted: tuple[Path, Path]) -> None:
    dev, where = mounted
    with pytest.raises(FlashRefused, match="the disk this machine runs from"):
        inspect(dev, MiB, root=where)


def test_a_stacked_device_leads_to_the_disks_under_it(tmp_path: Path) -> None:
    """/ on dm-verity over sda3 (the image's /usr): the check reaches sda through slaves/."""
    sysfs = _fake_sysfs(tmp_path)
    assert disks_under(os.makedev(254, 0), sysfs) == {"sda"}
    assert disks_under(os.makedev(8, 3), sysfs) == {"sda"}
    assert disks_under(os.makedev(0, 42), sysfs) == set()  # tmpfs, overlay: no disk


def test_a_fixed_disk_is_written_only_when_its_name_is_typed(
        tmp_path: Path, disk: tuple[Path, Path], image: bytes,
        capsys: pytest.CaptureFixture[str]) -> None:
    dev, backing = disk
    target = inspect(dev, len(image))
    assert not target.removable  # loop devices are not removable, as internal drives
    assert not flash.confirmed(target, None, io.StringIO("sdb\n"))
    assert "Type its name" in capsys.readouterr().err
    assert flash.confirmed(target, None, io.StringIO(f"{dev.name}\n"))
    assert not flash.confirmed(target, "sdb")
    assert flash.main([str(tmp_path / "memu.raw"), str(dev), "--confirm", "sdb"]) == 2
    assert backing.read_bytes() == b"\xaa" * 16 * MiB


def test_a_missing_image_or_device_says_what_to_do(tmp_path: Path, disk: tuple[Path, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    dev, _ = disk
    assert flash.main([str(tmp_path / "none.raw"), str(dev)]) == 1
    assert "no such image" in capsys.readouterr().err
    (tmp_path / "a.raw").write_bytes(b"x")
    assert flash.main([str(tmp_path / "a.raw"), str(tmp_path / "a.raw")]) == 1
    assert "not a block device" in capsys.readouterr().err


def test_the_progress_line_says_bytes_speed_and_time_left() -> None:
    p = flash.Progress("writing", 100 * MiB, out=io.StringIO())
    line = p.line(25 * MiB, p.start + 5.0)
    assert line == "writing 25 MiB of 100 MiB (25 %), 5.0 MiB/s, 0:15 left"
    unknown = flash.Progress("writing", None, out=io.StringIO())
    assert unknown.line(10 * MiB, unknown.start + 2.0) == "writing 10 MiB, 5.0 MiB/s"

