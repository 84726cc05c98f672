"""The Raspberry Pi 5's boot chain (memu_ota.boot.tryboot, .fat and .gpt) against real file
systems and tables: FAT made by mkfs.vfat, written and read by mtools (an independent FAT
implementation), checked by fsck.fat; the slots' names in a GPT made and relabelled by
sfdisk, as sysupdate relabels a slot; the firmware's side is a fake
/proc/device-tree/chosen/bootloader. The story of an update through it: a trial, a commit,
a failed trial rolled back, a flag that never reached the firmware, and the firmware's
known quirks."""

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
    TRYBOOT_REBOOT,
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
    """A fake Raspberry Pi: the disk (a real GPT, naming the slots), its selector partition
    (a real FAT image named like the disk's first partition), the partitions in sysfs (as
    the kernel saw them at boot: no names), the device tree and the boot ID."""

    root: Path

    @property
    def selector(self) -> Path:
        return self.root / "dev" / "nvme0n1p1"

    @property
    def disk(self) -> Path:
        return self.root / "dev" / "nvme0n1"

    def make_disk(self) -> None:
        with self.disk.open("wb") as f:
            f.truncate(8 << 20)
        _tool("sfdisk", "-q", str(self.disk), data=b"label: gpt\n" + b"".join(
            f"size=1M, name={name}\n".encode()
            for name in ("memu-autoboot", "memu-os_0.1.0", "_empty")))
        for number in (1, 2, 3):
            part = self.root / "sys/devices/nvme0n1" / f"nvme0n1p{number}"
            part.mkdir(parents=True)
            (part / "partition").write_text(f"{number}\n")
            (self.root / "sys/class/block").mkdir(parents=True, exist_ok=True)
            (self.root / "sys/class/block" / part.name).symlink_to(part)

    def label(self, number: int, label: str) -> None:
        """Name a partition in the GPT, as sysupdate does when it writes a slot."""
        _tool("sfdisk", "-q", "--part-label", str(self.disk), str(number), label)

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
    pi.make_disk()
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


@pytest.mark.parametrize("bits", [12, 16])
def test_a_file_over_many_clusters_is_read_through_the_fat_and_a_fragmented_one_refused(
        tmp_path: Path, bits: int) -> None:
    image = make_fat(tmp_path / "fat.img", bits)
    put(image, "one.txt", b"1")  # cluster 2: the next file starts on an odd cluster
    body = os.urandom(9 * 4096 + 7)  # many clusters, each link decoded from the FAT
    put(image, "config.txt", body)
    assert fat.read(image, "config.txt") == body
    put(image, "two.txt", b"2")
    _tool("mdel", "-i", str(image), "::one.txt")  # a one-cluster hole before the others
    put(image, "kernel.img", os.urandom(3 * 4096))  # fills the hole first: fragmented
    with pytest.raises(MemuError, match=r"kernel\.img is fragmented"):
        fat.read(image, "kernel.img")


def test_a_fat32_root_directory_over_several_clusters_is_searched(tmp_path: Path) -> None:
    image = tmp_path / "fat32.img"
    with image.open("wb") as f:
        f.truncate(40 << 20)
    _tool("mkfs.vfat", "-F", "32", "-s", "1", str(image))  # 512-byte clusters: 16 entries
    for n in range(40):
        put(image, f"file{n:02}.txt", b"x")
    put(image, "autoboot.txt", render_autoboot(Autoboot(2, 3)))
    assert parse_autoboot(fat.read(image, "autoboot.txt")) == Autoboot(2, 3)


def test_a_directory_entry_pointing_outside_the_data_is_refused(tmp_path: Path) -> None:
    image = make_fat(tmp_path / "fat.img", 16)
    put(image, "autoboot.txt", render_autoboot(Autoboot(2, 3)))
    with image.open("r+b") as f:
        entry = fat.find(f.fileno(), "autoboot.txt").entry
        f.seek(entry + 26)
        f.write(b"\x01\x00")  # first cluster 1: the FAT's own reserved entry
    with pytest.raises(MemuError, match="points outside the data area"):
        fat.rewrite(image, "autoboot.txt", render_autoboot(Autoboot(3, 2)))


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
    assert chain.begin_boot() is None
    assert chain.entries() == {"0.1.0": EntryState.BLESSED}
    assert (chain.this_boot().entry, chain.this_boot().trial) == (
        "partition 2: memu-os_0.1.0", False)
    assert chain.prepare_reboot(None) == ("systemctl", "reboot")

    pi.label(3, "memu-os_0.2.0")  # sysupdate wrote boot slot B (the kernel's view is older)
    assert chain.entries() == {"0.1.0": EntryState.BLESSED, "0.2.0": EntryState.TRYING}
    assert chain.prepare_reboot("0.2.0") == TRYBOOT_REBOOT
    assert pi.firmware_choice(tryboot=True) == 3 and pi.firmware_choice(tryboot=False) == 2

    pi.boot("boot-2", partition=3, tryboot=True)  # the trial boot
    chain = pi.chain("0.2.0")
    assert chain.begin_boot() == "trial boot of 0.2.0"
    assert chain.this_boot().trial
    assert chain.entries() == {"0.1.0": EntryState.BLESSED, "0.2.0": EntryState.TRYING}
    assert chain.commit() == "autoboot.txt now boots partition 3 (0.2.0)"
    assert pi.firmware_choice(tryboot=False) == 3 and fsck_clean(pi.selector)
    assert not (pi.root / "state" / TRIAL_FILE).exists()
    assert chain.entries() == {"0.2.0": EntryState.BLESSED, "0.1.0": EntryState.BLESSED}
    assert not chain.this_boot().trial  # committed: the gate cannot fail it any more

    pi.label(2, "memu-os_0.3.0")  # the next update, into slot A
    assert chain.prepare_reboot("0.3.0") == TRYBOOT_REBOOT
    pi.boot("boot-3", partition=2, tryboot=True)
    trial = pi.chain("0.3.0")
    trial.begin_boot()
    assert trial.this_boot().trial  # ... and its health gate fails: a plain reboot
    pi.boot("boot-4", partition=pi.firmware_choice(tryboot=False))  # the flag was one-shot
    chain = pi.chain("0.2.0")
    assert chain.begin_boot() is None
    assert chain.entries() == {"0.2.0": EntryState.BLESSED, "0.3.0": EntryState.BAD}
    state = OtaState(pending=Pending("0.2.0", "0.3.0", 1.0, PendingPhase.REBOOTING, "boot-2"))
    failure = HealthFailure("0.3.0", "synapse is unhealthy after 300 seconds", 2.0)
    done = reconcile(state, "0.2.0", chain.entries(), failure, boot_id="boot-4", now=3.0)
    assert done.message == ("rolled back from 0.3.0 to 0.2.0, because synapse is unhealthy "
                            "after 300 seconds")
    assert pi.firmware_choice(tryboot=False) == 3

    pi.boot("boot-5", partition=2, tryboot=True)  # later, a flag nobody asked for into it
    stray = pi.chain("0.3.0")
    assert stray.begin_boot() is None and not stray.this_boot().trial
    with pytest.raises(MemuError, match="no trial of a requested update"):
        stray.commit()  # the rolled-back version is never committed
    assert pi.firmware_choice(tryboot=False) == 3


def test_a_restart_whose_flag_never_reached_the_firmware_waits_for_another(pi: Pi) -> None:
    pi.label(3, "memu-os_0.2.0")
    assert pi.chain("0.1.0").prepare_reboot("0.2.0") == TRYBOOT_REBOOT
    pi.boot("boot-2", partition=2)  # e.g. the kernel module is missing: no flag
    chain = pi.chain("0.1.0")
    chain.begin_boot()
    assert chain.entries() == {"0.1.0": EntryState.BLESSED, "0.2.0": EntryState.TRYING}
    state = OtaState(pending=Pending("0.1.0", "0.2.0", 1.0, PendingPhase.REBOOTING, "boot-1"))
    done = reconcile(state, "0.1.0", chain.entries(), None, boot_id="boot-2", now=3.0)
    assert done.message == "the restart did not start 0.2.0; it is installed and waits for " \
                           "another restart"
    assert done.state.pending is not None and done.state.pending.phase is PendingPhase.WRITTEN
    assert chain.prepare_reboot("0.2.0") == TRYBOOT_REBOOT  # and it can be asked again


def test_a_restart_into_a_version_not_in_the_trial_slot_is_refused(pi: Pi) -> None:
    with pytest.raises(MemuError, match=r"partition 3, the one a restart would try, holds "
                                        r"nothing, not 0\.2\.0"):
        pi.chain("0.1.0").prepare_reboot("0.2.0")
    assert not (pi.root / "state" / TRIAL_FILE).exists()


def test_a_tryboot_flag_nobody_asked_for_never_commits(pi: Pi) -> None:
    pi.label(3, "memu-os_0.0.9")  # an older version left in the other slot
    pi.boot("boot-2", partition=3, tryboot=True)  # e.g. `reboot "0 tryboot"` by hand
    chain = pi.chain("0.0.9")
    assert chain.begin_boot() is None
    assert not chain.this_boot().trial
    with pytest.raises(MemuError, match="no trial of a requested update"):
        chain.commit()
    assert pi.firmware_choice(tryboot=False) == 2


def test_firmware_that_reports_partition_0_is_told_by_the_labels(pi: Pi) -> None:
    pi.label(3, "memu-os_0.2.0")
    pi.chain("0.1.0").prepare_reboot("0.2.0")
    pi.boot("boot-2", partition=0, tryboot=True)
    chain = pi.chain("0.2.0")
    chain.begin_boot()
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
    assert chain.entries() is None  # reading never writes
    assert chain.begin_boot() == ("autoboot.txt repaired to boot partition 3 "
                                  f"({parse_error(garbage)})")
    assert chain.entries() == {"0.2.0": EntryState.BLESSED, "0.1.0": EntryState.BLESSED}
    assert pi.firmware_choice(tryboot=False) == 3 and fsck_clean(pi.selector)
    assert chain.repair() is None  # readable now


def test_an_unreadable_autoboot_txt_is_left_alone_on_a_trial_boot(pi: Pi) -> None:
    pi.label(3, "memu-os_0.2.0")
    pi.chain("0.1.0").prepare_reboot("0.2.0")
    put(pi.selector, "autoboot.txt", b"x" * AUTOBOOT_SIZE)
    pi.boot("boot-2", partition=3, tryboot=True)
    pi.chain("0.2.0").begin_boot()  # repairing now would commit what is being tried
    assert mtype(pi.selector, "autoboot.txt") == b"x" * AUTOBOOT_SIZE


def parse_error(data: bytes) -> str:
    with pytest.raises(MemuError) as e:
        parse_autoboot(data)
    return e.value.message


def test_the_boot_artifact_is_the_slot_partition_holding_the_version(pi: Pi) -> None:
    (pi.root / "dev" / "nvme0n1p2").touch()
    assert pi.chain("0.1.0").boot_artifact("0.1.0") == pi.root / "dev" / "nvme0n1p2"
    assert pi.chain("0.1.0").boot_artifact("0.2.0") is None
