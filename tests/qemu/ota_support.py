"""Helpers for the update tests: test builds of other versions and reading the guest's disk.
The channel server and the agent API helpers are in memu_dev.channel."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memu_dev.build import ensure_built
from memu_dev.channel import (
    Channel,
    api,
    channel,
    drain,
    setup_code,
    update,
    wait_update,
    wait_version,
)
from memu_dev.golden import Golden, restore
from memu_dev.paths import DEFAULT_BOARD, REPO
from memu_dev.vm import VM, VMConfig

TREES = Path(__file__).parent / "trees"


@contextlib.contextmanager
def restored_vm(golden: Golden, name: str) -> Iterator[VM]:
    """A VM of its own (workdir test-results/qemu/<name>) resumed from ``golden`` with a root
    shell; stopped and its overlay removed afterwards (the serial log stays)."""
    with step("restore the golden VM"):
        vm = restore(golden, REPO / "test-results" / "qemu" / name)
    try:
        yield vm
    finally:
        vm.stop()
        print(f"\nserial log: {vm.serial_log}")
        vm.overlay.unlink(missing_ok=True)


@contextlib.contextmanager
def booted_vm(name: str, image: Path, version: str = "0.1.0",
              disk_size: str | None = None, board: str = DEFAULT_BOARD) -> Iterator[VM]:
    """A VM of its own (workdir test-results/qemu/<name>) of ``board``'s ``image``, booted
    until the agent answers with ``version`` and a root shell answers; stopped and its
    overlay removed afterwards (the serial log stays)."""
    workdir = REPO / "test-results" / "qemu" / name
    shutil.rmtree(workdir, ignore_errors=True)
    vm = VM(VMConfig(image=image, workdir=workdir, disk_size=disk_size, board=board))
    vm.start()
    try:
        with step(f"boot {version} to READY"):
            wait_version(vm, version, timeout=420)
            vm.wait_for_shell(240)
        yield vm
    finally:
        vm.stop()
        print(f"\nserial log: {vm.serial_log}")
        vm.overlay.unlink(missing_ok=True)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Print how long a step of a test took (seen with ``-s`` and in a failing test's captured
    output), so the suite's cost can be read per step, not only per test."""
    start = time.monotonic()
    try:
        yield
    finally:
        print(f"[step] {what}: {time.monotonic() - start:.1f} s", flush=True)


def ensure_build(version: str, *trees: str | Path) -> Path:
    """Build ``version`` with test trees (tests/qemu/trees/<name>, or a path) when missing
    or stale; return its package manifest (:func:`memu_dev.build.ensure_built`)."""
    return ensure_built(version, [TREES / t for t in trees])


def labels(vm: VM) -> dict[int, str]:
    """GPT partition number -> label on the guest's disk (read from the GPT, not a cache)."""
    out = vm.sh(f"for p in {vm.disk}*[0-9]; do "
                "echo \"$p $(blkid -p -s PART_ENTRY_NAME -o value $p)\"; done")
    result: dict[int, str] = {}
    for line in out.splitlines():
        device, _, name = line.strip().partition(" ")
        number = device.rsplit("/", 1)[-1].removeprefix(vm.disk.rsplit("/", 1)[-1])
        number = number.removeprefix("p")
        if number.isdigit():
            result[int(number)] = name.strip()
    return result


def boot_entries(vm: VM) -> list[str]:
    """UKI file names in the ESP's EFI/Linux."""
    return sorted(vm.sh("ls /boot/EFI/Linux/").split())


def point_at(vm: VM, ch: Channel) -> None:
    """Point the box's update source at the test channel ``ch``."""
    with step("point at the test channel"):
        status, snap = update(vm, "source", channel="stable", base_url=ch.guest_base)
        assert status == 202, snap


def install_and_wait_ready(vm: VM, version: str) -> list[int]:
    """Install ``version`` through the API; return the progress percentages seen."""
    with step(f"install {version}"):
        status, snap = update(vm, "install", version=version)
        assert status == 202, snap
        seen: list[dict[str, Any]] = []
        snap = wait_update(vm, {"ready", "failed"}, timeout=900, seen=seen)
    assert snap["state"] == "ready", snap
    return [int(s["progress"]) for s in seen if isinstance(s.get("progress"), int)]


def reboot_into(vm: VM, version: str) -> dict[str, Any]:
    """Reboot through the API into ``version``; return its /api/status."""
    with step(f"reboot into {version}"):
        status, snap = update(vm, "reboot")
        assert status == 202, snap
        st = wait_version(vm, version, timeout=600)
        vm.wait_for_shell(240)
    return st


def wait_blessed(vm: VM, version: str) -> None:
    """Wait for the health gate to pass and systemd-bless-boot (ordered after
    boot-complete.target) to rename the entry to its blessed name, without counters."""
    with step(f"blessed {version}"):
        vm.sh("systemctl start boot-complete.target", timeout=900)
        entry = f"/boot/EFI/Linux/memu-os_{version}.efi"
        vm.sh(f"timeout 300 sh -c 'until [ -e {entry} ]; do sleep 2; done'", timeout=330,
              check=False)
    assert f"memu-os_{version}.efi" in boot_entries(vm), boot_entries(vm)


__all__ = ["REPO", "Channel", "api", "boot_entries", "boot_id", "booted_vm", "channel", "drain",
           "ensure_build", "install_and_wait_ready", "labels", "point_at", "reboot_into",
           "restored_vm", "setup_code", "step", "update", "wait_blessed", "wait_rebooted",
           "wait_update", "wait_version"]


def boot_id(vm: VM) -> str:
    """The guest's boot ID (a new one every boot)."""
    return vm.sh("cat /proc/sys/kernel/random/boot_id").strip()


def wait_rebooted(vm: VM, old_boot_id: str, version: str) -> None:
    """Wait until the guest is back from a reboot into ``version``: the agent answers with
    it, the root shell works, and the boot ID is not ``old_boot_id``."""
    drain(vm, 15)
    wait_version(vm, version, timeout=600)
    vm.wait_for_shell(240)
    assert boot_id(vm) != old_boot_id
