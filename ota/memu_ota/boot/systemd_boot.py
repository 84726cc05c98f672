"""The N100's boot chain: UEFI firmware, systemd-boot and unified kernel images (UKIs) with
boot counting.

sysupdate writes a new version's UKI into the ESP's ``EFI/Linux`` as
``memu-os_<version>+<tries>-0.efi`` (``overlays/boot-systemd-boot/…/20-uki.transfer.in``).
Boot counting (systemd docs/AUTOMATIC_BOOT_ASSESSMENT.md) renames it on every try:
``memu-os_<version>+<left>-<done>.efi`` while being tried, ``+0-<done>`` once every try
failed (systemd-boot then boots the previous entry), ``memu-os_<version>.efi`` once
``systemd-bless-boot.service`` marked it good after ``boot-complete.target``, which the
health gate is ``RequiredBy=``. The firmware side is read from systemd-boot's EFI variables
(docs/BOOT_LOADER_INTERFACE.md).
"""

from __future__ import annotations

import re
from pathlib import Path

from memu_ota.boot.api import EntryState, Firmware, ThisBoot

ENTRY_RE = re.compile(r"^memu-os_(?P<version>.+?)(\+(?P<left>\d+)(-(?P<done>\d+))?)?\.efi$")

# systemd-boot's vendor GUID (systemd docs/BOOT_LOADER_INTERFACE.md).
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"


def read_entries(esp_dirs: tuple[Path, ...]) -> dict[str, EntryState] | None:
    """Boot entries by version from the first ESP directory that exists (None: none)."""
    for directory in esp_dirs:
        try:
            names = [p.name for p in directory.iterdir()]
        except OSError:
            continue
        entries: dict[str, EntryState] = {}
        for name in names:
            m = ENTRY_RE.match(name)
            if not m:
                continue
            if m["left"] is None:
                state = EntryState.BLESSED
            else:
                state = EntryState.TRYING if int(m["left"]) > 0 else EntryState.BAD
            entries[m["version"]] = state
        return entries
    return None


def efi_string(raw: bytes) -> str | None:
    """An EFI variable holding a string, as efivarfs shows it: 4 bytes of attributes, then
    UTF-16LE ending in NUL. None when it is not one."""
    try:
        text = raw[4:].decode("utf-16-le")
    except UnicodeDecodeError:
        return None
    return text.split("\0", 1)[0] or None


class SystemdBoot:
    """:class:`~memu_ota.boot.api.BootBackend` for systemd-boot with boot counting.

    Args:
        esp_dirs: where the UKIs are; the first that exists is used (the ESP is mounted at
            ``/efi`` or ``/boot``).
        firmware: where the EFI variables are read (default: the real efivarfs).
    """

    name = "systemd-boot"

    def __init__(self, esp_dirs: tuple[Path, ...], firmware: Firmware | None = None) -> None:
        self.esp_dirs = esp_dirs
        self.firmware = firmware or Firmware()

    def begin_boot(self) -> str | None:
        """Nothing: systemd-boot counts the tries itself, in the entries' names."""
        return None

    def entries(self) -> dict[str, EntryState] | None:
        """The UKIs in the ESP by version, their state from their boot-counting names."""
        return read_entries(self.esp_dirs)

    def this_boot(self) -> ThisBoot:
        """``LoaderEntrySelected`` is the entry; the boot is a trial when systemd-boot set
        ``LoaderBootCountPath`` (it booted an entry that still carries counters: the same
        condition ``systemd-bless-boot.service`` has). A boot not through systemd-boot is
        no trial and has no entry."""
        efivars = self.firmware.efivars
        try:
            entry = efi_string((efivars / f"LoaderEntrySelected-{LOADER_GUID}").read_bytes())
        except OSError:
            entry = None
        return ThisBoot(entry, (efivars / f"LoaderBootCountPath-{LOADER_GUID}").exists())

    def prepare_reboot(self, version: str | None) -> tuple[str, ...]:
        """Nothing to prepare, and a plain reboot: systemd-boot boots the newest entry, so a
        new version's (tried while it has tries left)."""
        return ("systemctl", "reboot")

    def commit(self) -> str:
        """Nothing to do here: passing the gate lets ``boot-complete.target`` be reached,
        and ``systemd-bless-boot.service`` then drops the entry's counters."""
        return "systemd-bless-boot marks this boot entry good after boot-complete.target"

    def boot_artifact(self, version: str) -> Path | None:
        """The newest UKI of ``version`` in the first ESP directory that exists."""
        esp = next((d for d in self.esp_dirs if d.is_dir()), None)
        if esp is None:
            return None
        ukis = [p for p in esp.glob(f"memu-os_{version}*.efi")
                if (m := ENTRY_RE.match(p.name)) and m["version"] == version]
        return max(ukis, key=lambda p: p.stat().st_mtime, default=None)
