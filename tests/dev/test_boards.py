"""The board table drives the build and the QEMU harness: each board's image name, mkosi
profiles and QEMU machine come from it, and a board it does not know is refused in words."""

from __future__ import annotations

from pathlib import Path

import pytest

from memu_common import MemuError, boards
from memu_dev import build
from memu_dev.paths import REPO, image_path
from memu_dev.vm import VM, VMConfig, machine


def test_every_board_has_its_profile_and_its_boot_chains() -> None:
    for board in boards.BOARDS.values():
        assert (REPO / f"mkosi.conf.d/50-board-{board.name}.conf").is_file()
        chain = (REPO / f"mkosi.conf.d/45-boot-{board.boot}.conf").read_text()
        assert f"\nProfiles={board.boot}\n" in chain
        assert f"RepartDirectories=image/repart-{board.boot}\n" in chain
        assert all(d.is_dir() for d in build.repart_dirs(board.name))
        assert (REPO / f"overlays/{board.name}/usr/lib/memu/board").read_text().strip() == (
            board.name)
        assert image_path(board.name, "1.0").name == f"memu-os_1.0_{board.arch}.raw"


def test_the_n100_boots_on_q35_with_ovmf(tmp_path: Path) -> None:
    vm = VM(VMConfig(image=tmp_path / "x.raw", workdir=tmp_path, board="n100"))
    argv = vm.qemu_argv()
    assert argv[:3] == ["qemu-system-x86_64", "-machine", "q35,smm=off"]
    assert f"if=pflash,format=raw,readonly=on,file={machine('n100').firmware_code}" in argv


def test_an_unknown_board_is_refused_in_words() -> None:
    with pytest.raises(MemuError, match="unknown board 'x'"):
        image_path("x")


def test_each_architecture_has_its_machine() -> None:
    n100, pi5 = machine("n100"), machine("pi5")
    assert n100.qemu == "qemu-system-x86_64" and n100.firmware_code  # UEFI
    # no UEFI on the Pi: direct kernel boot with the harness playing its firmware
    assert pi5.qemu == "qemu-system-aarch64" and pi5.firmware_code is None
    assert pi5.console == "ttyAMA0"


def _keys(path: Path) -> dict[str, str]:
    return {k: v for k, _, v in (line.partition("=") for line in path.read_text().splitlines())
            if k in ("Type", "SizeMinBytes", "SizeMaxBytes")}


def test_the_device_partition_definitions_mirror_the_image_for_every_boot_chain() -> None:
    """systemd-repart on the box matches its definitions to the disk's partitions in order,
    by type: each boot chain's device copy must say what the build laid out."""
    for chain in sorted({b.boot for b in boards.BOARDS.values()}):
        image = sorted((REPO / f"image/repart-{chain}").glob("*.conf"))
        device = sorted((REPO / f"overlays/boot-{chain}/usr/lib/repart.d").glob("*.conf"))
        assert [p.name for p in device] == [p.name for p in image], chain
        for built, shipped in zip(image, device, strict=True):
            # the type always; sizes where the device states them (an existing partition of
            # the right type is matched whatever its size)
            assert _keys(shipped)["Type"] == _keys(built)["Type"], (chain, built.name)
            assert _keys(shipped).items() <= _keys(built).items(), (chain, built.name)
