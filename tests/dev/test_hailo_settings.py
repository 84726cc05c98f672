"""The build's hailo option, before mkosi runs: the operator's driver source and firmware are
checked against image/hailo.toml's pins, with an error that says what to fetch, and staged
where the hailo profile's build source is. (The build itself, kbuild against the image's
kernel and the module loading in QEMU: tests/qemu/test_hailo.py.)"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from memu_common import MemuError
from memu_dev import hailo
from memu_dev.paths import REPO

FIXTURE = REPO / "tests/fixtures/kmod"


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    fw = tmp_path / "hailo8_fw.4.20.0.bin"
    fw.write_bytes(b"\x01firmware bytes\x00" * 8)
    return fw


def test_the_pins_name_one_release_for_driver_firmware_and_runtime() -> None:
    p = hailo.pins()
    assert p.driver == p.firmware == p.runtime
    assert re.fullmatch(r"\d+\.\d+\.\d+", p.driver)
    assert p.firmware_path == "hailo/hailo8_fw.bin"
    assert p.firmware_url.endswith(f"/{p.firmware}/FW/hailo8_fw.{p.firmware}.bin")


def test_pins_that_disagree_are_refused(tmp_path: Path) -> None:
    text = hailo.PINS.read_text().replace('[runtime]\nname = "hailort"\nversion = "4.20.0"',
                                          '[runtime]\nname = "hailort"\nversion = "4.21.0"')
    (tmp_path / "hailo.toml").write_text(text)
    with pytest.raises(MemuError, match="differ") as e:
        hailo.pins(tmp_path / "hailo.toml")
    assert e.value.hint and "one release" in e.value.hint


def test_the_source_and_firmware_are_staged_for_the_image_build(tmp_path: Path,
                                                                firmware: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(FIXTURE, source)
    (source / "linux/pcie/stale.o").write_bytes(b"an object a local make left")
    env = hailo.stage(hailo.Settings(source=source, firmware=firmware), dest=tmp_path / "stage")
    assert env == {"MEMU_KMOD_DIR_HAILO": "hailo/driver/linux/pcie"}
    staged = tmp_path / "stage"
    assert (staged / "driver/linux/pcie/Kbuild").read_text() == (
        FIXTURE / "linux/pcie/Kbuild").read_text()
    assert not (staged / "driver/linux/pcie/stale.o").exists()  # build leftovers stay out
    assert (staged / "firmware/hailo/hailo8_fw.bin").read_bytes() == firmware.read_bytes()
    # a second staging replaces the first (no file of an older source survives)
    (staged / "driver/old.c").write_text("from another checkout")
    hailo.stage(hailo.Settings(source=FIXTURE, firmware=firmware), dest=staged)
    assert not (staged / "driver/old.c").exists()


@pytest.mark.parametrize("env, missing", [
    ({"MEMU_HAILO": "1"}, "MEMU_HAILO_SRC and MEMU_HAILO_FW are not set"),
    ({"MEMU_HAILO_SRC": str(FIXTURE)}, "MEMU_HAILO_FW is not set"),
    ({"MEMU_HAILO_FW": "/x/fw.bin", "MEMU_HAILO_SRC": ""}, "MEMU_HAILO_SRC is not set"),
])
def test_a_missing_setting_stops_the_build_with_what_to_fetch(
        tmp_path: Path, env: dict[str, str], missing: str) -> None:
    with pytest.raises(MemuError) as e:
        hailo.stage(hailo.Settings.from_env(env), dest=tmp_path / "stage")
    assert e.value.message == f"the hailo option is on but {missing}"
    assert e.value.hint and "hailort-drivers checkout at v4.20.0" in e.value.hint
    assert hailo.pins().firmware_url in e.value.hint
    assert not (tmp_path / "stage").exists()


def test_paths_that_are_not_a_source_tree_or_a_firmware_file_are_named(
        tmp_path: Path, firmware: Path) -> None:
    with pytest.raises(MemuError, match="is not a directory"):
        hailo.stage(hailo.Settings(source=tmp_path / "nope", firmware=firmware),
                    dest=tmp_path / "stage")
    with pytest.raises(MemuError, match="not a hailort-drivers source tree") as e:
        hailo.stage(hailo.Settings(source=tmp_path, firmware=firmware), dest=tmp_path / "stage")
    assert e.value.hint and "v4.20.0" in e.value.hint
    empty = tmp_path / "empty.bin"
    empty.touch()
    for fw in (empty, tmp_path / "missing.bin", tmp_path):
        with pytest.raises(MemuError, match="is not a firmware file") as e:
            hailo.stage(hailo.Settings(source=FIXTURE, firmware=fw), dest=tmp_path / "stage")
        assert e.value.hint and e.value.hint.startswith("download the Hailo-8 firmware 4.20.0")
    # what a failed `curl -LO` leaves behind: the server's error page
    page = tmp_path / "hailo8_fw.4.20.0.bin"
    page.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>')
    with pytest.raises(MemuError, match="is a web page, not firmware") as e:
        hailo.stage(hailo.Settings(source=FIXTURE, firmware=page), dest=tmp_path / "stage")
    assert e.value.hint and "curl -fLO" in e.value.hint


def test_another_driver_release_is_refused(tmp_path: Path, firmware: Path) -> None:
    source = tmp_path / "hailort-drivers"
    header = source / "common/hailo_ioctl_common.h"
    header.parent.mkdir(parents=True)
    (source / "linux/pcie").mkdir(parents=True)
    (source / "linux/pcie/Kbuild").write_text("obj-m := hailo_pci.o\n")
    header.write_text((FIXTURE / "common/hailo_ioctl_common.h").read_text()
                      .replace("MINOR 20", "MINOR 18"))
    with pytest.raises(MemuError, match=r"is hailort-drivers 4\.18\.0, not the pinned 4\.20\.0"):
        hailo.stage(hailo.Settings(source=source, firmware=firmware), dest=tmp_path / "stage")
    header.write_text("#define HAILO_DRV_VER_MAJOR 4\n")
    with pytest.raises(MemuError, match="does not say the driver's version"):
        hailo.stage(hailo.Settings(source=source, firmware=firmware), dest=tmp_path / "stage")


def test_the_option_is_off_unless_asked_for() -> None:
    assert not hailo.enabled({})
    assert not hailo.enabled({"MEMU_HAILO": "0"})
    assert hailo.enabled({"MEMU_HAILO": "1"}) and hailo.enabled({"MEMU_HAILO": "yes"})


def test_the_device_node_is_for_the_hailo_group_only() -> None:
    rule = (REPO / "overlays/hailo/usr/lib/udev/rules.d/60-memu-hailo.rules").read_text()
    lines = [line for line in rule.splitlines() if line and not line.startswith("#")]
    assert lines == ['SUBSYSTEM=="hailo_chardev", KERNEL=="hailo[0-9]*", GROUP="hailo", '
                     'MODE="0660"']
    assert "g hailo -" in (REPO / "overlays/hailo/usr/lib/sysusers.d/memu-hailo.conf"
                           ).read_text()
