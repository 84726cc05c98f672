"""The Raspberry Pi 5's boot chain: the firmware's A/B boot partitions and its one-shot
tryboot flag (no UEFI, no boot loader of ours).

The disk begins with three FAT partitions: a selector holding only ``autoboot.txt``, and
boot slots A and B (``config.txt``, ``cmdline.txt``, kernel, initrd, device trees), each
labelled ``memu-os_<version>`` by sysupdate (``_empty`` until written). ``autoboot.txt``
(Raspberry Pi documentation, "autoboot.txt"; at most 512 bytes)::

    [all]
    tryboot_a_b=1
    boot_partition=2
    [tryboot]
    boot_partition=3

The firmware boots ``[all]``'s partition, or ``[tryboot]``'s when the tryboot flag is set;
the flag is one-shot, so any crash, hang or power cut of a trial boots the committed slot
again. The running system learns what the firmware did from the device tree
(``/proc/device-tree/chosen/bootloader/{tryboot,partition}``, 4-byte big-endian; some Pi 5
firmware reports partition 0, so the running version and the slots' labels stand in).

The update's way through it: sysupdate writes the new boot slot and ``/usr`` slot; the
agent reboots with ``systemctl reboot --reboot-argument="0 tryboot"`` (:data:`TRYBOOT_REBOOT`;
:meth:`TryBoot.prepare_reboot` first
records that the trial is asked for; :meth:`TryBoot.begin_boot` on the trial boot records
that it happened); the health gate, on that trial boot, commits by rewriting
``autoboot.txt`` in place (:mod:`memu_ota.boot.fat`: the same length, so only its data
sector changes; fsync; read back), and only then. A tryboot flag that nobody asked for
never commits.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from memu_common import MemuError
from memu_common.files import read_json_object, write_atomic
from memu_ota.boot import fat, gpt
from memu_ota.boot.api import EntryState, Firmware, ThisBoot
from memu_ota.versions import is_newer

log = logging.getLogger(__name__)

AUTOBOOT = "autoboot.txt"
#: The length every autoboot.txt of ours has (padded with a comment), so that a commit is
#: always a rewrite in place.
AUTOBOOT_SIZE = 128
#: The boot slots' partition numbers (A, B); the selector is partition 1.
SLOTS = (2, 3)
LABEL_RE = re.compile(r"^memu-os_(?P<version>.+)$")
#: The restart with the flag: the argument reaches reboot(2) through --reboot-argument=
#: (systemctl(1); systemd 257's ``systemctl reboot ARG`` says "Too many arguments"). systemctl
#: writes it to /run/systemd/reboot-param itself, which the agent's sandbox keeps read-only
#: (ProtectSystem=strict), so it runs in a transient service (systemd-run(1)); ``--wait``
#: hands its failure back to the agent.
TRYBOOT_REBOOT = ("systemd-run", "--quiet", "--wait", "--collect", "--",
                  "systemctl", "reboot", "--reboot-argument=0 tryboot")
#: The selector partition by its GPT label, for when the boot disk cannot be told (the agent
#: looks on the disk the running /usr is on first: memu_agent.facts.boot_disk_partition).
SELECTOR_LABEL = "memu-autoboot"
SELECTOR_BY_LABEL = Path("/dev/disk/by-partlabel") / SELECTOR_LABEL
#: What the agent writes before a trial reboot (in the update state directory).
TRIAL_FILE = "tryboot-trial.json"


@dataclass(frozen=True)
class Autoboot:
    """What ``autoboot.txt`` says: the committed boot partition and the trial one."""

    default: int
    trial: int


def parse_autoboot(data: bytes) -> Autoboot:
    """Read ``autoboot.txt``: ``[all]`` must say ``tryboot_a_b=1`` and a ``boot_partition``,
    ``[tryboot]`` a ``boot_partition``; both boot slots (:data:`SLOTS`), not the same.
    Comments and other sections are ignored.

    Raises:
        MemuError: it does not say that (the message says what is missing or wrong).
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise MemuError("autoboot.txt is not text") from None
    sections: dict[str, dict[str, str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise MemuError(f"autoboot.txt has a line that is not key=value: {line!r}")
        sections.setdefault(section, {})[key.strip()] = value.strip()
    every, trial = sections.get("all", {}), sections.get("tryboot", {})
    if every.get("tryboot_a_b") != "1":
        raise MemuError("autoboot.txt does not turn on tryboot_a_b=1 in [all]")
    parts = []
    for name, values in (("all", every), ("tryboot", trial)):
        value = values.get("boot_partition", "")
        if not value.isdigit() or int(value) not in SLOTS:
            raise MemuError(f"autoboot.txt's [{name}] boot_partition is {value or 'missing'}, "
                            f"not one of {SLOTS}")
        parts.append(int(value))
    if parts[0] == parts[1]:
        raise MemuError("autoboot.txt tries the partition it boots by default")
    return Autoboot(parts[0], parts[1])


def render_autoboot(choice: Autoboot) -> bytes:
    """``autoboot.txt`` for ``choice``, padded with a comment to :data:`AUTOBOOT_SIZE`."""
    text = (f"[all]\ntryboot_a_b=1\nboot_partition={choice.default}\n"
            f"[tryboot]\nboot_partition={choice.trial}\n")
    note = "# Memu OS: rewritten in place when an update is committed.\n"
    pad = AUTOBOOT_SIZE - len(text) - len(note)
    return (note[:-1] + " " * pad + "\n" + text).encode("ascii")


def disk_dir(selector: Path, sysfs: Path = Path("/sys")) -> Path | None:
    """The sysfs directory of the disk the selector partition is on (a partition's sysfs
    directory sits in its disk's); None when it cannot be told."""
    try:
        part = (sysfs / "class/block" / selector.resolve().name).resolve()
    except OSError:
        return None
    return part.parent if part.parent.name != "block" else None


def partitions(selector: Path, sysfs: Path = Path("/sys")) -> dict[int, str]:
    """Partition number → kernel name (``nvme0n1p2``) of the partitions on the selector's
    disk, from sysfs (``class/block/<selector>/..`` holds the disk's partitions, each with
    its ``partition`` number). Empty when the disk cannot be read. (Their names are read
    from the disk instead: :mod:`memu_ota.boot.gpt` says why.)"""
    disk = disk_dir(selector, sysfs)
    try:
        siblings = list(disk.iterdir()) if disk is not None else []
    except OSError:
        return {}
    found: dict[int, str] = {}
    for sib in siblings:
        try:
            found[int((sib / "partition").read_text())] = sib.name
        except (OSError, ValueError):
            continue
    return found


def _u32(path: Path) -> int | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    return int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None


class TryBoot:
    """:class:`~memu_ota.boot.api.BootBackend` for the Raspberry Pi firmware's tryboot.

    The trial record (``<state_dir>/tryboot-trial.json``): ``version`` and ``partition``
    written by :meth:`prepare_reboot` with the ``asked`` boot's ID; ``tried``, the ID of the
    boot that the firmware made with the flag into that version, added by
    :meth:`begin_boot`. Only that boot is a trial (a flag nobody asked for, or asked for
    long ago, is not); once another boot follows it uncommitted, the trial is spent.

    Args:
        running: the running OS version.
        state_dir: where the trial record is kept (the update state directory).
        selector: the selector partition (or a FAT image, in tests).
        firmware: where the device tree is read.
        sysfs: where the selector's disk and its partitions' kernel names are found
            (:func:`partitions`).
        dev: where their device nodes are; the slots' versions come from the GPT on the
            disk itself (:mod:`memu_ota.boot.gpt`).
        boot_id_file: this boot's ID (a new one on every boot).
    """

    name = "tryboot"

    def __init__(self, running: str, state_dir: Path, *,
                 selector: Path = SELECTOR_BY_LABEL,
                 firmware: Firmware | None = None, sysfs: Path = Path("/sys"),
                 dev: Path = Path("/dev"),
                 boot_id_file: Path = Path("/proc/sys/kernel/random/boot_id")) -> None:
        self.running = running
        self.state_dir = state_dir
        self.selector = selector
        self.firmware = firmware or Firmware()
        self.sysfs = sysfs
        self.dev = dev
        self.boot_id_file = boot_id_file

    # -- what the disk and the firmware say ---------------------------------------------------

    def _disk(self) -> Path | None:
        disk = disk_dir(self.selector, self.sysfs)
        return self.dev / disk.name if disk is not None else None

    def _versions(self) -> dict[int, str | None]:
        """Boot slot → the version its GPT name says (None: ``_empty`` or unknown)."""
        disk = self._disk()
        try:
            names = gpt.names(disk) if disk is not None else {}
        except MemuError as e:
            log.error("tryboot: %s", e.message)
            names = {}
        return {n: (m["version"] if (m := LABEL_RE.match(names.get(n, ""))) else None)
                for n in SLOTS}

    def _booted(self, versions: dict[int, str | None], default: int | None) -> int | None:
        """The boot slot this boot came from: the firmware's word, else the slot that holds
        the running version (the committed one when both do)."""
        said = _u32(self.firmware.device_tree / "chosen/bootloader/partition")
        if said in SLOTS:
            return said
        holding = [n for n in SLOTS if versions[n] == self.running]
        if default in holding:
            return default
        return holding[0] if holding else None

    def _flag(self) -> bool:
        return _u32(self.firmware.device_tree / "chosen/bootloader/tryboot") == 1

    def _boot_id(self) -> str:
        try:
            return self.boot_id_file.read_text().strip()
        except OSError:
            return ""

    def _record(self) -> dict[str, object]:
        return read_json_object(self.state_dir / TRIAL_FILE) or {}

    def _save_record(self, record: dict[str, object]) -> None:
        try:
            write_atomic(self.state_dir / TRIAL_FILE, json.dumps(record).encode())
        except OSError as e:
            raise MemuError(f"cannot record the trial in {self.state_dir}: {e.strerror}"
                            ) from e

    def read_autoboot(self) -> Autoboot:
        """What ``autoboot.txt`` says.

        Raises:
            MemuError: it cannot be read or does not make sense.
        """
        return parse_autoboot(fat.read(self.selector, AUTOBOOT))

    def repair(self) -> str | None:
        """When ``autoboot.txt`` cannot be read, point it at the running slot (and the other
        as the trial); returns what was done, or None when nothing was needed.

        Raises:
            MemuError: it is unreadable and cannot be repaired (the running slot is unknown,
                or the partition cannot be written).
        """
        try:
            self.read_autoboot()
            return None
        except MemuError as e:
            why = e.message
        booted = self._booted(self._versions(), None)
        if booted is None:
            raise MemuError(f"{why}; the running slot is not known, so it cannot be repaired")
        new = render_autoboot(Autoboot(booted, SLOTS[1 - SLOTS.index(booted)]))
        try:
            fat.rewrite(self.selector, AUTOBOOT, new)
        except MemuError:
            fat.resize(self.selector, AUTOBOOT, new)
        log.warning("autoboot.txt repaired to boot partition %d (%s)", booted, why)
        return f"autoboot.txt repaired to boot partition {booted} ({why})"

    # -- BootBackend ------------------------------------------------------------------------

    def begin_boot(self) -> str | None:
        """On the boot the firmware made with the flag into the version a trial was asked
        for: record it as the trial. On any boot without the flag: repair an unreadable
        ``autoboot.txt`` (never on a trial boot: that would commit what is being tried).

        Raises:
            MemuError: the record or the repair could not be written.
        """
        if not self._flag():
            return self.repair()
        record = self._record()
        if record.get("version") == self.running and "tried" not in record:
            self._save_record({**record, "tried": self._boot_id()})
            return f"trial boot of {self.running}"
        return None

    def entries(self) -> dict[str, EntryState] | None:
        """The committed slot's version is blessed, and so is an older one in the other
        slot (the version before, kept to fall back to); a newer one there is being tried,
        or bad once its trial boot was followed by another boot without a commit (the
        one-shot flag was spent: the trial crashed, hung, lost power or failed the gate).
        None when ``autoboot.txt`` cannot be read."""
        try:
            choice = self.read_autoboot()
        except MemuError as e:
            log.error("tryboot: %s", e.message)
            return None
        versions = self._versions()
        entries: dict[str, EntryState] = {}
        committed = versions[choice.default]
        if committed is not None:
            entries[committed] = EntryState.BLESSED
        other = versions[choice.trial]
        if other is None or other == committed:
            return entries
        if committed is not None and not is_newer(other, committed):
            entries[other] = EntryState.BLESSED
            return entries
        record = self._record()
        tried = record.get("tried")
        spent = (record.get("version") == other and tried is not None
                 and tried != self._boot_id() and self.running != other)
        entries[other] = EntryState.BAD if spent else EntryState.TRYING
        return entries

    def this_boot(self) -> ThisBoot:
        """The slot booted (``partition N: memu-os_<version>``); a trial when it is the
        boot :meth:`begin_boot` recorded as the trial, from the slot ``autoboot.txt`` does
        not commit."""
        try:
            default: int | None = self.read_autoboot().default
        except MemuError:
            default = None
        versions = self._versions()
        booted = self._booted(versions, default)
        entry = None if booted is None else f"partition {booted}: memu-os_{versions[booted]}"
        record = self._record()
        trial = (self._flag() and booted is not None and booted != default
                 and record.get("version") == self.running
                 and record.get("tried") == self._boot_id())
        return ThisBoot(entry, trial)

    def prepare_reboot(self, version: str | None) -> tuple[str, ...]:
        """For ``version``: record that its trial is asked for, then reboot with the
        tryboot flag (``reboot(2)``'s argument "0 tryboot", which Memu's kernel module
        passes to the firmware). None: a plain reboot into the committed slot.

        Raises:
            MemuError: ``autoboot.txt`` cannot be read, ``version`` is not in the slot it
                would try, or the record cannot be written.
        """
        if version is None:
            return ("systemctl", "reboot")
        choice = self.read_autoboot()
        held = self._versions()[choice.trial]
        if held != version:
            raise MemuError(f"boot partition {choice.trial}, the one a restart would try, "
                            f"holds {held or 'nothing'}, not {version}",
                            hint="install the update again")
        self._save_record({"version": version, "partition": choice.trial,
                           "asked": self._boot_id()})
        return TRYBOOT_REBOOT

    def commit(self) -> str:
        """Make the booted slot the default: rewrite ``autoboot.txt`` in place (fsync, read
        back), then drop the trial record.

        Raises:
            MemuError: this is no trial, or autoboot.txt could not be rewritten (the old
                slot then stays the default).
        """
        if not self.this_boot().trial:
            raise MemuError("this boot is no trial of a requested update; nothing to commit")
        choice = self.read_autoboot()
        new = Autoboot(choice.trial, choice.default)
        fat.rewrite(self.selector, AUTOBOOT, render_autoboot(new))
        try:
            (self.state_dir / TRIAL_FILE).unlink(missing_ok=True)
        except OSError as e:  # committed all the same; the record names a committed version
            log.warning("cannot remove the trial record: %s", e.strerror)
        return f"autoboot.txt now boots partition {new.default} ({self.running})"

    def boot_artifact(self, version: str) -> Path | None:
        """The boot slot partition holding ``version`` (a delta's source for the new boot
        slot image)."""
        parts = partitions(self.selector, self.sysfs)
        for number, held in self._versions().items():
            if held == version and number in parts:
                device = self.dev / parts[number]
                return device if device.exists() else None
        return None
