"""System facts from a fake host tree: version, uptime, hostname, boot entry, /usr label."""

from __future__ import annotations

import os
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from memu_agent.facts import (
    HostPaths,
    boot_chain,
    boot_disk_partition,
    boot_info,
    hostname,
    os_variant,
    os_version,
    uptime_s,
    usr_partlabel,
    usr_slot,
)
from memu_ota.boot import Firmware, TryBoot
from memu_ota.boot.tryboot import SELECTOR_BY_LABEL
from memu_ota.config import OtaConfig


def test_facts_from_fake_host(host: HostPaths) -> None:
    assert os_version(host) == "0.3.1"
    assert uptime_s(host) == 1234.56
    assert hostname(host) == "memu-box"
    # /usr is dm-verity over two partitions: the data one is reported, not the hash one.
    assert usr_partlabel(host) == "memu-os_0.3.1"
    info = boot_info(host, boot_chain(host, OtaConfig(), "0.3.1"))
    assert (info.slot, info.entry, info.usr_partlabel) == (
        None,
        "memu_0.3.1+2-1.efi",
        "memu-os_0.3.1",
    )


def test_os_version_falls_back_to_usr_lib(host: HostPaths) -> None:
    etc, usr = host.os_release
    etc.unlink()
    usr.parent.mkdir(parents=True)
    usr.write_text("IMAGE_VERSION=0.4.0\n")
    assert os_version(host) == "0.4.0"


def test_the_variant_is_os_release_s_variant_id(host: HostPaths) -> None:
    assert os_variant(host) is None  # the plain image
    host.os_release[0].write_text("IMAGE_VERSION=0.3.1\nVARIANT_ID=hailo\n")
    assert os_variant(host) == "hailo"
    host.os_release[0].write_text("VARIANT_ID='Not/A Variant'\n")
    assert os_variant(host) is None


def test_os_version_falls_back_to_package_version(host: HostPaths) -> None:
    host.os_release[0].write_text("ID=debian\n")
    assert os_version(host) == metadata.version("memu-os")


def test_plain_partition_and_root_fallback(host: HostPaths) -> None:
    (host.proc / "self" / "mountinfo").write_text(
        "22 1 259:3 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p3 rw\n"
    )
    part = host.sys / "dev" / "block" / "259:3"
    part.mkdir(parents=True)
    (part / "uevent").write_text("DEVTYPE=partition\nPARTNAME=memu-os_0.3.1\n")
    assert usr_partlabel(host) == "memu-os_0.3.1"


def test_nothing_known_on_a_bare_host(tmp_path: Path) -> None:
    bare = HostPaths(
        os_release=(tmp_path / "none",),
        proc=tmp_path / "proc",
        sys=tmp_path / "sys",
        firmware=Firmware(efivars=tmp_path / "efivars"),
    )
    assert uptime_s(bare) is None
    assert boot_info(bare, boot_chain(bare, OtaConfig(), "0.3.1")).entry is None
    assert usr_partlabel(bare) is None
    assert hostname(bare)  # falls back to gethostname()


USR_TYPE = "8484680c-9521-48c6-9c11-b0720656f69e"  # usr-x86-64
VERITY_TYPE = "77ff5f63-e7b6-4633-acf4-1565b864c0e6"  # usr-x86-64-verity


def _ab_disk(tmp_path: Path, running: int) -> HostPaths:
    """A fake sysfs disk laid out like the image: p2-p4 slot A, p5-p7 slot B, p8 root;
    /usr is dm-verity over partition ``running`` (4 or 7) and the one before it."""
    sys_, udev, proc = tmp_path / "sys", tmp_path / "udev", tmp_path / "proc"
    disk = sys_ / "devices" / "nvme0n1"
    (proc / "self").mkdir(parents=True)
    udev.mkdir()
    kinds = {2: "sig", 3: VERITY_TYPE, 4: USR_TYPE, 5: "sig", 6: VERITY_TYPE, 7: USR_TYPE,
             8: "root"}
    for n, ptype in kinds.items():
        part = disk / f"nvme0n1p{n}"
        part.mkdir(parents=True)
        (part / "partition").write_text(f"{n}\n")
        (part / "dev").write_text(f"259:{n}\n")
        label = "_empty" if n in (5, 6, 7) and running == 4 else (
            "memu-os_0.2.0_verity" if ptype == VERITY_TYPE else "memu-os_0.2.0")
        (part / "uevent").write_text(f"DEVTYPE=partition\nPARTN={n}\nPARTNAME={label}\n")
        (udev / f"b259:{n}").write_text(f"E:ID_PART_ENTRY_TYPE={ptype}\n")
    dm = sys_ / "dev" / "block" / "253:0"
    (dm / "slaves").mkdir(parents=True)
    for n in (running - 1, running):
        os.symlink(disk / f"nvme0n1p{n}", dm / "slaves" / f"nvme0n1p{n}")
    (proc / "self" / "mountinfo").write_text(
        "23 22 253:0 / /usr ro,relatime shared:2 - erofs /dev/mapper/usr ro\n")
    return HostPaths(os_release=(), proc=proc, sys=sys_, udev_data=udev)


def test_slot_a_and_b_from_partition_order(tmp_path: Path) -> None:
    assert usr_slot(_ab_disk(tmp_path / "a", running=4)) == "a"
    assert usr_slot(_ab_disk(tmp_path / "b", running=7)) == "b"
    host = _ab_disk(tmp_path / "c", running=7)
    assert boot_info(host, boot_chain(host, OtaConfig(), "0.3.1")).slot == "b"


def test_slot_unknown_without_udev_data(tmp_path: Path) -> None:
    paths = replace(_ab_disk(tmp_path, running=4), udev_data=tmp_path / "missing")
    assert usr_slot(paths) is None
    assert usr_partlabel(paths) == "memu-os_0.2.0"


def _disk(sys_: Path, devices: Path, disk: str, parts: dict[int, str]) -> None:
    """A disk under ``devices`` as sysfs lays it out: ``<disk>/<part>/partition`` and
    ``uevent``, ``class/block/<part>`` a link to it, ``dev/block/MAJ:MIN`` too."""
    for number, label in parts.items():
        name = f"{disk}{'p' if disk[-1].isdigit() else ''}{number}"
        part = devices / disk / name
        part.mkdir(parents=True)
        (part / "partition").write_text(f"{number}\n")
        (part / "uevent").write_text(f"DEVTYPE=partition\nDEVNAME={name}\nPARTNAME={label}\n")
        (sys_ / "class/block").mkdir(parents=True, exist_ok=True)
        os.symlink(part, sys_ / "class/block" / name)


def test_the_pi_commits_on_the_disk_it_booted_from_not_on_another_memu_disk(
        host: HostPaths) -> None:
    """Two Memu disks, both with a memu-autoboot selector: the NVMe one booted (its /usr
    is under dm-verity), a USB one is plugged in. The selector is the booted disk's."""
    devices = host.sys / "devices"
    layout = {1: "memu-autoboot", 2: "memu-os_0.3.1", 3: "_empty", 4: "memu-os_0.3.1_verity",
              5: "memu-os_0.3.1"}
    _disk(host.sys, devices / "usb", "sda", layout)
    _disk(host.sys, devices / "pcie", "nvme1n1", layout)
    slaves = host.sys / "dev/block/253:0/slaves"
    for old in slaves.iterdir():
        old.unlink()
    for name in ("nvme1n1p4", "nvme1n1p5"):
        os.symlink(host.sys / "class/block" / name, slaves / name)
    assert boot_disk_partition(host, 1, "memu-autoboot") == host.dev / "nvme1n1p1"
    assert boot_disk_partition(host, 2, "memu-autoboot") is None  # not the selector
    assert boot_disk_partition(host, 9, "memu-autoboot") is None
    host = replace(host, board_file=host.sys.parent / "board")
    host.board_file.write_text("pi5\n")
    chain = boot_chain(host, OtaConfig(), "0.3.1")
    assert isinstance(chain, TryBoot) and chain.selector == host.dev / "nvme1n1p1"


def test_without_a_boot_disk_the_selector_is_found_by_its_label(tmp_path: Path) -> None:
    board = tmp_path / "board"
    board.write_text("pi5\n")
    bare = HostPaths(os_release=(), proc=tmp_path / "proc", sys=tmp_path / "sys",
                     board_file=board)
    assert boot_disk_partition(bare, 1, "memu-autoboot") is None
    chain = boot_chain(bare, OtaConfig(), "0.3.1")
    assert isinstance(chain, TryBoot) and chain.selector == SELECTOR_BY_LABEL
