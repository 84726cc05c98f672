"""The build's hailo option, proven end to end without Hailo's code: the image is built with
the option on, given a small GPL fixture module laid out like the driver's source tree
(tests/fixtures/kmod) and a stand-in firmware file. The build compiles the module with kbuild
against the image's own kernel, installs it under /usr/lib/modules/<kver>/updates/ and the
firmware under /usr/lib/firmware/hailo/; booted in QEMU, modprobe loads the module. The real
hailo_pci and the chip are not here (README: "Hailo NPU").

For both boards: the N100 image in ``just test``, the Pi 5's (arm64, the module built against
the backports kernel under binfmt) in ``just test-pi5`` (marker ``pi5``)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from memu_dev import hailo
from memu_dev.build import build, ensure_host
from memu_dev.paths import OUTPUT, REPO, image_path
from memu_dev.vm import VM, VMConfig

FIXTURE = REPO / "tests/fixtures/kmod"
#: The stand-in firmware (checked byte for byte in the booted image).
FIRMWARE = b"memu test firmware: stands in for hailo8_fw.bin, which is not ours to ship\n" * 32


@pytest.fixture(scope="module", params=["n100", pytest.param("pi5", marks=pytest.mark.pi5)])
def board(request: pytest.FixtureRequest) -> str:
    """The board whose image is built with the option."""
    return str(request.param)


@pytest.fixture(scope="module")
def hailo_image(board: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The board's image built with the hailo option and the fixture, under a name of its own
    (an operator's hailo image is never replaced). Nothing releases this build: its split
    partitions are dropped at once and the rest after the module (0.8 GB that would
    otherwise sit on a test run's disk through the update and stack tests)."""
    img = image_path(board, variant="hailo-fixture")
    firmware = tmp_path_factory.mktemp("hailo") / "hailo8_fw.bin"
    firmware.write_bytes(FIRMWARE)
    ensure_host(board)
    try:
        build(board, hailo_settings=hailo.Settings(source=FIXTURE, firmware=firmware),
              variant="hailo-fixture")
        for split in OUTPUT.glob(f"{img.stem}.usr*.raw"):
            split.unlink()
        yield img
    finally:
        for output in OUTPUT.glob(f"{img.stem}*"):
            if output.is_dir() and not output.is_symlink():
                shutil.rmtree(output)
            else:
                output.unlink()


@pytest.fixture(scope="module")
def vm(board: str, hailo_image: Path) -> Iterator[VM]:
    """The hailo image booted on an overlay until its root shell answers."""
    machine = VM(VMConfig(image=hailo_image, workdir=REPO / f"test-results/qemu/hailo-{board}",
                          board=board))
    machine.start()
    try:
        machine.wait_for_shell(600)
        yield machine
    except BaseException:
        print(f"\nserial log kept at {machine.serial_log}")
        raise
    finally:
        machine.stop()
        machine.overlay.unlink(missing_ok=True)


def test_the_module_built_against_the_image_kernel_loads_with_modprobe(vm: VM) -> None:
    kver = vm.sh("uname -r").strip()
    # depmod indexed it where out-of-tree modules go, and kbuild used this kernel's headers
    assert vm.sh("realpath $(modinfo -F filename memu_kmod_fixture)").strip() == (
        f"/usr/lib/modules/{kver}/updates/memu_kmod_fixture.ko")
    assert vm.sh("modinfo -F vermagic memu_kmod_fixture").split()[0] == kver
    # the version from the shared header, compiled from outside kbuild's M= directory
    assert vm.sh("modinfo -F version memu_kmod_fixture").strip() == hailo.pins().driver
    vm.sh("modprobe memu_kmod_fixture")
    assert vm.sh_status("test -d /sys/module/memu_kmod_fixture") == 0
    assert f"memu_kmod_fixture: loaded, version {hailo.pins().driver}" in vm.sh(
        "dmesg | grep memu_kmod_fixture")
    vm.sh("modprobe -r memu_kmod_fixture")
    assert vm.sh_status("test -d /sys/module/memu_kmod_fixture") != 0


def test_the_firmware_survives_the_image_firmware_trimming(vm: VM) -> None:
    path = f"/usr/lib/firmware/{hailo.pins().firmware_path}"
    assert vm.sh(f"sha256sum {path}").split()[0] == hashlib.sha256(FIRMWARE).hexdigest()
    assert vm.sh(f"stat -c '%a %U' {path}").strip() == "644 root"


def test_the_device_rule_is_valid_and_its_group_exists(vm: VM) -> None:
    vm.sh("udevadm verify --no-style /usr/lib/udev/rules.d/60-memu-hailo.rules")
    assert vm.sh("getent group hailo").startswith("hailo:x:")


def test_the_box_takes_updates_only_from_its_variant_s_artifacts(vm: VM, board: str) -> None:
    """os-release names the variant, and the agent's transfers fetch memu-os-hailo_… from
    the channel: an update keeps the driver (tests/ota/test_variants.py: one channel, both
    variants)."""
    assert "VARIANT_ID=hailo" in vm.sh("cat /usr/lib/os-release").splitlines()
    vm.sh("timeout 300 sh -c 'until test -s /run/memu/sysupdate.d/12-usr.transfer; do "
          "sleep 2; done'", timeout=310)
    patterns = vm.sh("grep -h '^MatchPattern=' /run/memu/sysupdate.d/*.transfer").split()
    assert "MatchPattern=memu-os-hailo_@v_%a.usr.@u.raw.gz" in patterns
    boot = {"n100": "memu-os-hailo_@v_%a.efi", "pi5": "memu-os-hailo_@v_%a.boot.@u.raw.gz"}
    assert f"MatchPattern={boot[board]}" in patterns
    # no source pattern of the plain image's (the targets, slot labels, are named alike)
    assert not [p for p in patterns if p.startswith("MatchPattern=memu-os_@v_%a")]
