"""The Raspberry Pi 5 image (arm64) booted in QEMU on ``-M virt``, with the harness playing the
Pi's firmware (memu_dev.pifirmware: autoboot.txt picks the boot slot, the one-shot tryboot
flag picks the other once, ``/chosen/bootloader`` tells the box), and updated as a Pi is
(memu_ota.boot.tryboot):

1. 0.1.0 boots from boot slot A (partition 2) to READY and names that slot in /api/status;
2. 0.2.0 from a signed channel is written to slot B; the box restarts with the tryboot flag,
   the trial boot's health gate commits it (autoboot.txt now names partition 3), and a plain
   restart boots 0.2.0 again;
3. a power cut as 0.3.0's trial boot starts: the firmware boots 0.2.0's slot again (the flag
   was spent) and the box, which never saw 0.3.0 run, keeps it ready for another restart;
4. that restart tries 0.3.0 again, its health gate fails, the box restarts without the flag
   into 0.2.0 and reports "rolled back from 0.3.0 to 0.2.0" with the gate's reason.

Not in ``just test``: a first arm64 build takes about 20 minutes under binfmt and every boot
about 100 s under TCG. ``just test-pi5`` builds the images and runs this module.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ota_support import (
    Channel,
    booted_vm,
    channel,
    drain,
    install_and_wait_ready,
    point_at,
    step,
    update,
    wait_update,
    wait_version,
)

from memu_dev.build import ensure_built
from memu_dev.paths import image_path
from memu_dev.pifirmware import DirectBoot
from memu_dev.vm import VM

pytestmark = pytest.mark.pi5

BOARD = "pi5"
TREES = Path(__file__).parent / "trees"


@pytest.fixture(scope="module")
def pi5_image() -> Path:
    """The Pi 5 image of the current version (``just test-pi5`` builds it)."""
    img = image_path(BOARD)
    if not img.exists():
        pytest.fail(f"{img} does not exist: run `just test-pi5` (it builds the Pi 5 image)")
    return img


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Channel]:
    """A channel on the host carrying the Pi 5 builds of 0.2.0 (a marker file) and 0.3.0 (a
    health gate that fails on purpose)."""
    ensure_built("0.2.0", [TREES / "v-marker"], board=BOARD)
    ensure_built("0.3.0", [TREES / "failing-health"], board=BOARD)
    with channel(tmp_path_factory.mktemp("pi5") / "channels") as ch:
        for version in ("0.2.0", "0.3.0"):
            ch.add(version, board=BOARD)
        yield ch


@pytest.fixture(scope="module")
def pi(pi5_image: Path, served: Channel) -> Iterator[VM]:
    """The Pi 5 image booted on a new overlay until the agent runs 0.1.0 and a root shell
    answers (after ``served``'s builds, so no VM idles through them). The tests that use it
    run in order, each going on from where the one before left the box."""
    with booted_vm("pi5", pi5_image, board=BOARD) as vm:
        yield vm


def _status(vm: VM, version: str) -> dict[str, Any]:
    return wait_version(vm, version, timeout=900)


def _next_boot(vm: VM, after: DirectBoot | None, *, timeout: float = 900) -> DirectBoot:
    """The firmware's next boot after ``after`` (the harness starts QEMU again when the guest
    restarts: memu_dev.vm), waiting for it while reading the console."""
    deadline = time.monotonic() + timeout
    while vm.direct is after or vm.direct is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"no new boot within {timeout}s (serial log: {vm.serial_log})")
        drain(vm, 2)
    return vm.direct


def _committed(vm: VM) -> int:
    """The partition autoboot.txt's ``[all]`` section boots, read in the guest from the
    selector partition with the box's own FAT reader."""
    return int(vm.sh(
        "python3 -c 'from pathlib import Path; from memu_ota.boot import fat, tryboot; "
        "print(tryboot.parse_autoboot(fat.read(Path(\"/dev/disk/by-partlabel/memu-autoboot\"),"
        " \"autoboot.txt\")).default)'").strip())


def _reboot_for_update(vm: VM) -> None:
    status, snap = update(vm, "reboot")
    assert status == 202, snap


def test_0_1_0_boots_from_slot_a_and_says_so(pi: VM) -> None:
    assert pi.direct is not None and (pi.direct.partition, pi.direct.tryboot) == (2, False)
    st = _status(pi, "0.1.0")
    assert st["boot"]["entry"] == "partition 2: memu-os_0.1.0", st["boot"]
    assert st["boot"]["usr_partlabel"] == "memu-os_0.1.0", st["boot"]
    assert pi.sh("od -An -tu1 /proc/device-tree/chosen/bootloader/partition").split() == [
        "0", "0", "0", "2"]
    assert _committed(pi) == 2


def test_an_update_is_tried_once_with_the_flag_and_committed(pi: VM, served: Channel) -> None:
    point_at(pi, served)
    install_and_wait_ready(pi, "0.2.0")
    before = pi.direct
    with step("restart into the trial of 0.2.0"):
        _reboot_for_update(pi)
        trial = _next_boot(pi, before)
        _status(pi, "0.2.0")
    assert (trial.partition, trial.tryboot) == (3, True)
    with step("the trial's health gate commits 0.2.0"):
        pi.wait_for_shell(300)
        pi.sh("systemctl start boot-complete.target", timeout=900)
    assert pi.sh("cat /usr/share/memu/test-marker").strip()
    assert _committed(pi) == 3
    st = _status(pi, "0.2.0")
    assert st["boot"]["entry"] == "partition 3: memu-os_0.2.0", st["boot"]
    assert st["update"]["last_result"] == "updated from 0.1.0 to 0.2.0", st["update"]
    with step("a plain restart boots the committed 0.2.0"):
        pi.sh("systemctl --no-block reboot", timeout=30)
        again = _next_boot(pi, trial)
        _status(pi, "0.2.0")
        pi.wait_for_shell(300)
    assert (again.partition, again.tryboot) == (3, False)


def test_a_power_cut_during_a_trial_then_a_failed_gate_keep_the_committed_slot(pi: VM) -> None:
    install_and_wait_ready(pi, "0.3.0")
    before = pi.direct
    with step("restart into the trial of 0.3.0, cut the power as its kernel starts"):
        _reboot_for_update(pi)
        trial = _next_boot(pi, before)
        assert (trial.partition, trial.tryboot) == (2, True)
        pi.wait_for(r"Booting Linux on physical CPU", timeout=300)
        pi.power_cut()
    with step("power on: the firmware's flag was spent, 0.2.0 boots"):
        pi.start()
        _status(pi, "0.2.0")
        pi.wait_for_shell(300)
    assert pi.direct is not None and (pi.direct.partition, pi.direct.tryboot) == (3, False)
    assert _committed(pi) == 3
    # 0.3.0 never ran (nothing on the box saw its trial), so it is still installed and
    # waits for a restart: nothing is lost and nothing is blamed on it.
    snap = wait_update(pi, {"ready"}, timeout=120)
    assert snap["target"] == "0.3.0" and snap["running"] == "0.2.0", snap

    before = pi.direct
    with step("restart into the trial of 0.3.0 again; its gate fails and restarts the box"):
        _reboot_for_update(pi)
        trial = _next_boot(pi, before)
        back = _next_boot(pi, trial)
        st = _status(pi, "0.2.0")
        pi.wait_for_shell(300)
    assert (trial.partition, trial.tryboot) == (2, True)
    assert (back.partition, back.tryboot) == (3, False)
    assert _committed(pi) == 3
    last = str(st["update"]["last_result"])
    assert re.search(r"rolled back from 0\.3\.0 to 0\.2\.0", last), last
    assert "health" in last, last
