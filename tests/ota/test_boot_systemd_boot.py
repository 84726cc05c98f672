"""The N100's boot chain (memu_ota.boot.systemd_boot) from a fake ESP and efivarfs: boot
counting's names, LoaderEntrySelected, the trial flag, the running UKI; and the board table
picking it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memu_common import MemuError, boards
from memu_ota.boot import EntryState, Firmware, SystemdBoot, TryBoot, for_board
from memu_ota.boot.systemd_boot import LOADER_GUID, read_entries
from memu_ota.config import OtaConfig


def efi_string(text: str, attributes: int = 6) -> bytes:
    """An EFI string variable as efivarfs shows it: attributes, then UTF-16LE with a NUL."""
    return attributes.to_bytes(4, "little") + (text + "\0").encode("utf-16-le")


def test_read_entries(tmp_path: Path) -> None:
    for name in ("memu-os_0.1.0.efi", "memu-os_0.2.0+0-3.efi", "memu-os_0.3.0+2-1.efi",
                 "memu-os_1.10.0+3.efi", "other.efi"):
        (tmp_path / name).touch()
    assert read_entries((tmp_path / "nope", tmp_path)) == {
        "0.1.0": EntryState.BLESSED, "0.2.0": EntryState.BAD,
        "0.3.0": EntryState.TRYING, "1.10.0": EntryState.TRYING,
    }
    assert read_entries((tmp_path / "nope",)) is None
    assert SystemdBoot((tmp_path,)).entries() == read_entries((tmp_path,))


def test_this_boot_from_the_boot_loader_interface(tmp_path: Path) -> None:
    boot = SystemdBoot((tmp_path / "esp",), Firmware(efivars=tmp_path))
    assert (boot.this_boot().entry, boot.this_boot().trial) == (None, False)  # not via sd-boot
    (tmp_path / f"LoaderEntrySelected-{LOADER_GUID}").write_bytes(
        efi_string("memu-os_0.2.0+2-1.efi"))
    assert (boot.this_boot().entry, boot.this_boot().trial) == ("memu-os_0.2.0+2-1.efi", False)
    # systemd-boot sets LoaderBootCountPath only when the entry it booted still counts tries
    (tmp_path / f"LoaderBootCountPath-{LOADER_GUID}").write_bytes(
        efi_string("\\EFI\\Linux\\memu-os_0.2.0+2-1.efi"))
    assert boot.this_boot().trial


@pytest.mark.parametrize("raw", [b"\x07\x00\x00\x00\xff", efi_string("")])
def test_an_odd_entry_variable_is_no_entry(tmp_path: Path, raw: bytes) -> None:
    (tmp_path / f"LoaderEntrySelected-{LOADER_GUID}").write_bytes(raw)  # odd length, empty
    assert SystemdBoot((), Firmware(efivars=tmp_path)).this_boot().entry is None


def test_the_boot_artifact_is_the_running_versions_newest_uki(tmp_path: Path) -> None:
    esp = tmp_path / "esp"
    esp.mkdir()
    for name in ("memu-os_0.1.0+3-0.efi", "memu-os_0.1.0.efi", "memu-os_0.0.9.efi",
                 "memu-os_0.1.01.efi"):
        (esp / name).touch()
    os.utime(esp / "memu-os_0.1.0.efi", (2e9, 2e9))
    boot = SystemdBoot((tmp_path / "no-efi", esp))
    assert boot.boot_artifact("0.1.0") == esp / "memu-os_0.1.0.efi"
    assert boot.boot_artifact("0.2.0") is None
    assert SystemdBoot((tmp_path / "no-efi",)).boot_artifact("0.1.0") is None


def test_a_plain_reboot_tries_the_new_entry_and_blessing_is_systemds() -> None:
    boot = SystemdBoot(())
    assert boot.prepare_reboot("0.2.0") == ("systemctl", "reboot")
    assert "systemd-bless-boot" in boot.commit()


def test_the_board_table_picks_the_boot_chain(tmp_path: Path) -> None:
    board_file = tmp_path / "board"
    assert boards.running(board_file).name == boards.DEFAULT_BOARD  # not a Memu image
    board_file.write_text("n100\n")
    assert isinstance(for_board(boards.running(board_file), OtaConfig(), "0.1.0"), SystemdBoot)
    board_file.write_text("pi9\n")
    with pytest.raises(MemuError, match="unknown board 'pi9'") as e:
        boards.running(board_file)
    assert e.value.hint == "use one of: n100, pi5"
    assert isinstance(for_board(boards.get("pi5"), OtaConfig(), "0.1.0"), TryBoot)
