"""The Raspberry Pi 5's boot chain (memu_ota.boot.tryboot and .fat) against real FAT file
systems: made by mkfs.vfat, written and read by mtools (an independent FAT implementation),
checked by fsck.fat; the firmware's side is a fake /proc/device-tree/chosen/bootloader and
the slots' labels a fake sysfs. The story of an update through it: a trial, a commit, a
failed trial rolled back, and the firmware's known quirks."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from memu_common import MemuError
from memu_ota.boot import EntryState, Firmware, TryBoot, fat
from memu_ota.boot.tryboot import (
    AUTOBOOT_SIZE,
    TRIAL_FILE,
    Autoboot,
    parse_autoboot,
    render_autoboot,
)
from memu_ota.report import reconcile
from memu_ota.state import HealthFailure, OtaState, Pending, PendingPhase

MTOOLS = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def _tool(*argv: str, data: bytes | None = None) -> bytes:
    if shutil.which(argv[0]) is None:
        raise AssertionError(f"{argv[0]} is missing: run tools/setup-services.sh "
                             "(dosfstools, mtools)")
    return subprocess.run(argv, input=data, capture_output=True, check=True, env=MTOOLS).stdout


def make_fat(path: Path, bits: int = 16, size_mib: int = 16) -> Path:
    """A FAT file system of ``bits`` (12, 16, 32) in the file ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size_mib << 20)
    _tool("mkfs.vfat", "-F", str(bits), "-n", "MEMU", str(path))
    return path


def put(image: Path, name: str, data: bytes) -> None:
    """Write ``name`` into the root directory with mtools."""
    source = image.with_name("put.tmp")
    source.write_bytes(data)
    _tool("mcopy", "-o", "-i", str(image), str(source), f"::{name}")
    source.unlink()


def mtype(image: Path, name: str) -> bytes:
    return _tool("mtype", "-i", str(image), f"::{name}")


def fsck_clean(image: Path) -> bool:
    return subprocess.run(["fsck.fat", "-n", str(image)], capture_output=True).returncode == 0


@dataclass
class Pi:
    """A fake Raspberry Pi: the selector partition (a real FAT image named like the disk's
    first partition), the disk's partitions in sysfs, the device tree and the boot ID."""

    root: Path

    @property
    def selector(self) -> Path:
        return self.root / "dev" / "nvme0n1p1"

    def label(self, number: int, label: str) -> None:
        part = self.root / "sys/devices/nvme0n1" / f"nvme0n1p{number}"
        part.mkdir(parents=True, exist_ok=True)
        (part / "partition").write_text(f"{number}\n")
        (part / "uevent").write_text(f"DEVTYPE=partition\nPARTN={number}\nPARTNAME={label}\n")
        link = self.root / "sys/class/block" / part.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(part)

    def boot(self, boot_id: str, *, partition: int, tryboot: bool = False) -> None:
        """What the firmware tells the kernel about a boot."""
        chosen = self.root / "dt/chosen/bootloader"
        chosen.mkdir(parents=True, exist_ok=True)
        (chosen / "partition").write_bytes(partition.to_bytes(4, "big"))
        (chosen / "tryboot").write_bytes(int(tryboot).to_bytes(4, "big"))
        (self.root / "boot_id").write_text(boot_id + "\n")

    def chain(self, running: str) -> TryBoot:
        return TryBoot(running, self.root / "state", selector=self.selector,
                       firmware=Firmware(device_tree=self.root / "dt"), sysfs=self.root / "sys",
                       boot_id_file=self.root / "boot_id", dev=self.root / "dev")

    def firmware_choice(self, tryboot: bool) -> int:
        """The partition the firmware boots, read as it does: from autoboot.txt."""
        choice = parse_autoboot(mtype(self.selector, "autoboot.txt"))
        return choice.trial if tryboot else choice.default


@pytest.fixture
def pi(tmp_path: Path) -> Pi:
    pi = Pi(tmp_path)
    make_fat(pi.selector)
    put(pi.selector, "autoboot.txt", render_autoboot(Autoboot(2, 3)))
    (tmp_path / "state").mkdir()
    pi.label(1, "memu-autoboot")
    pi.label(2, "memu-os_0.1.0")
    pi.label(3, "_empty")
    pi.boot("boot-1", partition=2)
    return pi


def test_autoboot_txt_is_read_and_written_as_the_firmware_documents_it() -> None:
    text = render_autoboot(Autoboot(3, 2))
    assert len(text) == AUTOBOOT_SIZE
    assert text.endswith(b"[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n")
    assert parse_autoboot(text) == Autoboot(3, 2)
    for bad, why in ((b"[all]\nboot_partition=2\n[tryboot]\nboot_partition=3\n",
                      "does not turn on tryboot_a_b=1"),
                     (b"[all]\ntryboot_a_b=1\nboot_partition=7\n[tryboot]\nboot_partition=3\n",
                      r"\[all\] boot_partition is 7, not one of \(2, 3\)"),
                     (b"[all]\ntryboot_a_b=1\nboot_partition=2\n", "boot_partition is missing"),
                     (b"[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n",
                      "tries the partition it boots"),
                     (b"\xff\xfe", "not text"), (b"[all]\nnonsense\n", "not key=value")):
        with pytest.raises(MemuError, match=why):
            parse_autoboot(bad)


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_a_file_is_found_read_and_rewritten_in_place_on_each_fat(tmp_path: Path,
                                                                 bits: int) -> None:
    image = make_fat(tmp_path / "fat.img", bits, 40 if bits == 32 else 16)
    put(image, "config.txt", b"x" * 5000)  # something before it, over more than a cluster
    old, new = render_autoboot(Autoboot(2, 3)), render_autoboot(Autoboot(3, 2))
    put(image, "autoboot.txt", old)
    assert fat.read(image, "autoboot.txt") == old
    before = image.read_bytes()
    fat.rewrite(image, "autoboot.txt", new)
    assert mtype(image, "autoboot.txt") == new  # mtools reads what we wrote
    assert fsck_clean(image)
    after = image.read_bytes()
    with image.open("rb") as f:
        extent = fat.find(f.fileno(), "autoboot.txt")
    changed = [i for i in range(0, len(after), 512) if before[i:i + 512] != after[i:i + 512]]
    assert changed == [extent.offset // 512 * 512]  # its data sector only: no FAT, no entry
    with pytest.raises(MemuError, match="is 128 bytes; a rewrite in place must be too, not 3"):
        fat.rewrite(image, "autoboot.txt", b"abc")
    with pytest.raises(MemuError, match=r"nothing\.txt is not on the partition"):
        fat.read(image, "nothing.txt")
    (tmp_path / "zeros").write_bytes(bytes(4096))
    with pytest.raises(MemuError, match="not a FAT file system"):
        fat.read(tmp_path / "zeros", "autoboot.txt")


def test_a_power_cut_during_the_commit_leaves_the_old_or_the_new_choice(pi: Pi) -> None:
    """Every subset of the sectors a commit changes, applied to the old partition, reads as
    the old autoboot.txt or the new one."""
    old = pi.selector.read_bytes()
    fat.rewrite(pi.selector, "autoboot.txt", render_autoboot(Autoboot(3, 2)))
    new = pi.selector.read_bytes()
    sectors = [i for i in range(0, len(new), 512) if old[i:i + 512] != new[i:i + 512]]
    assert sectors
    cut = pi.root / "cut.img"
    for n in range(len(sectors) + 1):
        for subset in itertools.combinations(sectors, n):
            image = bytearray(old)
            for at in subset:
                image[at:at + 512] = new[at:at + 512]
            cut.write_bytes(image)
            assert parse_autoboot(mtype(cut, "autoboot.txt")) in (Autoboot(2, 3), Autoboot(3, 2))


def test_an_update_is_tried_committed_and_a_failed_one_rolled_back(pi: Pi) -> None:
    chain = pi.chain("0.1.0")
    assert chain.entries() == {"0.1.0": EntryState.BLESSED}
    assert (chain.this_boot().entry, chain.this_boot().trial) == (
        "partition 2: memu-os_0.1.0", False)
    assert chain.prepare_reboot(None) == ("systemctl", "reboot")

    pi.label(3, "memu-os_0.2.0")  # sysupdate wrote boot slot B
    assert chain.entries() == {"0.1.0": EntryState.BLESSED, "0.2.0": EntryState.TRYING}
    assert chain.prepare_reboot("0.2.0") == ("systemctl", "reboot", "0 tryboot")
    assert pi.firmware_choice(tryboot=True) == 3 and pi.firmware_choice(tryboot=False) == 2

    pi.boot("boot-2", partition=3, tryboot=True)  # the trial boot
    chain = pi.chain("0.2.0")
    assert chain.this_boot().trial
    assert chain.entries() == {"0.1.0": EntryState.BLESSED, "0.2.0": EntryState.TRYING}
    assert chain.commit() == "autoboot.txt now boots partition 3 (0.2.0)"
    assert pi.firmware_choice(tryboot=False) == 3 and fsck_clean(pi.selector)
    assert not (pi.root / "state" / TRIAL_FILE).exists()
    assert chain.entries() == {"0.2.0": EntryState.BLESSED, "0.1.0": EntryState.BLESSED}
    assert not chain.this_boot().trial  # committed: the gate cannot fail it any more

    pi.label(2, "memu-os_0.3.0")  # the next update, into slot A
    assert chain.prepare_reboot("0.3.0") == ("systemctl", "reboot", "0 tryboot")
    pi.boot("boot-3", partition=2, tryboot=True)
    assert pi.chain("0.3.0").this_boot().trial  # ... and its health gate fails: a plain reboot
    pi.boot("boot-4", partition=pi.firmware_choice(tryboot=False))  # the flag was one-shot
    chain = pi.chain("0.2.0")
    assert chain.entries() == {"0.2.0": EntryState.BLESSED, "0.3.0": EntryState.BAD}
    state = OtaState(pending=Pending("0.2.0", "0.3.0", 1.0, PendingPhase.REBOOTING, "boot-3"))
    failure = HealthFailure("0.3.0", "synapse is unhealthy after 300 seconds", 2.0)
    done = reconcile(state, "0.2.0", chain.entries(), failure, boot_id="boot-4", now=3.0)
    assert done.message == ("rolled back from 0.3.0 to 0.2.0, because synapse is unhealthy "
                            "after 300 seconds")
    assert pi.firmware_choice(tryboot=False) == 3


def test_a_tryboot_flag_nobody_asked_for_never_commits(pi: Pi) -> None:
    pi.label(3, "memu-os_0.0.9")  # an older version left in the other slot
    pi.boot("boot-2", partition=3, tryboot=True)  # e.g. `reboot "0 tryboot"` by hand
    chain = pi.chain("0.0.9")
    assert not chain.this_boot().trial
    with pytest.raises(MemuError, match="no trial of a requested update"):
        chain.commit()
    assert pi.firmware_choice(tryboot=False) == 2


def test_firmware_that_reports_partition_0_is_told_by_the_labels(pi: Pi) -> None:
    pi.label(3, "memu-os_0.2.0")
    pi.chain("0.1.0").prepare_reboot("0.2.0")
    pi.boot("boot-2", partition=0, tryboot=True)
    chain = pi.chain("0.2.0")
    assert chain.this_boot().entry == "partition 3: memu-os_0.2.0" and chain.this_boot().trial
    chain.commit()
    assert pi.firmware_choice(tryboot=False) == 3


@pytest.mark.parametrize("garbage", [os.urandom(AUTOBOOT_SIZE), b"boot_partition=\n"])
def test_an_unreadable_autoboot_txt_is_repaired_to_the_running_slot(pi: Pi,
                                                                    garbage: bytes) -> None:
    pi.label(3, "memu-os_0.2.0")
    put(pi.selector, "autoboot.txt", garbage)
    pi.boot("boot-2", partition=0)  # and the firmware does not say which it booted
    chain = pi.chain("0.2.0")
    assert chain.entries() == {"0.2.0": EntryState.BLESSED, "0.1.0": EntryState.BLESSED}
    assert pi.firmware_choice(tryboot=False) == 3 and fsck_clean(pi.selector)
    assert chain.repair() is None  # readable now


def test_the_boot_artifact_is_the_slot_partition_holding_the_version(pi: Pi) -> None:
    (pi.root / "dev" / "nvme0n1p2").touch()
    assert pi.chain("0.1.0").boot_artifact("0.1.0") == pi.root / "dev" / "nvme0n1p2"
    assert pi.chain("0.1.0").boot_artifact("0.2.0") is None
