"""What every boot backend offers (:class:`BootBackend`) and the words they share."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class EntryState(enum.StrEnum):
    """What the boot chain says about one version (the input of
    :func:`memu_ota.report.reconcile`)."""

    #: committed: the boot chain boots it by default.
    BLESSED = "blessed"
    #: installed and still being tried: the next boot (or this one) is its trial.
    TRYING = "trying"
    #: its trial failed; the boot chain has gone back to the version before.
    BAD = "bad"
    #: the boot chain does not know it (never written, or removed).
    MISSING = "missing"


@dataclass(frozen=True)
class ThisBoot:
    """What the firmware says about the running boot.

    Attributes:
        entry: the boot entry or slot it came from, as the boot chain names it (e.g.
            systemd-boot's ``memu-os_0.2.0+2-1.efi``), or None when it cannot be told.
        trial: this boot is a trial of a new version, not yet committed; only a trial may
            fail the health gate and reboot (:func:`memu_agent.health_gate.conclude`).
    """

    entry: str | None
    trial: bool


@dataclass(frozen=True)
class Firmware:
    """Where the running system's firmware facts are read (the defaults are the real ones).

    Attributes:
        efivars: the efivarfs directory (UEFI variables, systemd-boot's Boot Loader
            Interface).
        device_tree: the device tree the firmware handed the kernel (the Raspberry Pi's
            ``chosen/bootloader``).
    """

    efivars: Path = Path("/sys/firmware/efi/efivars")
    device_tree: Path = Path("/proc/device-tree")


class BootBackend(Protocol):
    """One boot chain.

    The install itself is systemd-sysupdate's (its transfer files, shipped per backend in
    ``overlays/boot-<backend>/usr/lib/memu/sysupdate.d/``); the backend knows what those
    transfers leave behind and how the firmware reads it.
    """

    #: the backend's name, as in :data:`memu_common.boards.BootBackendName`.
    name: str

    def begin_boot(self) -> str | None:
        """Called once per boot, by the agent at its start, before anything else reads the
        boot chain: lets it record what this boot is and repair what the firmware reads.
        Returns what was done, in words, or None when nothing was needed.

        Raises:
            MemuError: something needed could not be done (the message says what).
        """
        ...

    def entries(self) -> dict[str, EntryState] | None:
        """Version → what the boot chain says about it; None when the boot chain cannot
        be read (then nothing is concluded from it)."""
        ...

    def this_boot(self) -> ThisBoot:
        """What the firmware says about the running boot. Never raises."""
        ...

    def prepare_reboot(self, version: str | None) -> tuple[str, ...]:
        """Get the boot chain ready to boot ``version`` (a newly installed one, for its
        trial; None: the committed one) and return the command that reboots.

        Raises:
            MemuError: it cannot be got ready (then nothing reboots).
        """
        ...

    def commit(self) -> str:
        """Make the running version the one booted from now on; called after the health
        gate passed on a trial boot. Returns what was done, in words, for the log.

        Raises:
            MemuError: it could not be committed (the next boot is then the old version).
        """
        ...

    def boot_artifact(self, version: str) -> Path | None:
        """The installed file (or device) ``version`` boots from, whose blocks a delta
        update may reuse for the new version's (:mod:`memu_ota.delta`); None when there
        is none."""
        ...
