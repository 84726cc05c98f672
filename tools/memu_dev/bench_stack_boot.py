"""The QEMU part of `just bench-stack`: how long the family stack takes on a booting box, and
what it adds to the image.

For each of ``runs`` fresh VMs (overlays on the built N100 image, no network but the host's
forwarded ports): seconds from QEMU start to the agent answering (READY), the preload's own
seconds to load every image from the slot into Docker (``/api/status`` ``stack.preload``),
then test settings are rendered and ``memu-stack.service`` started, and the seconds to the
core services (``memu_agent.stack.CORE``) healthy are timed: a first start, with PostgreSQL's
initdb and Synapse's first migrations. In the last VM the box is then rebooted ``runs``
times: seconds from the new kernel's first line to READY and to core healthy (a warm boot:
images present, data there). Medians are printed next to each other with the ratio (goal on
a warm boot: stack healthy <= 2x READY). TCG seconds are not hardware seconds; the ratio is
what counts.

Sizes: the OS image and its /usr slot, gzip -6 (as a release ships them), with the stack
(the N100 image) and without it (the "bare" profile of `just bench-boot`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pexpect

from memu_agent.stack import CORE
from memu_common import MemuError
from memu_dev.bench_boot import bare_image, fmt, median
from memu_dev.paths import image_path
from memu_dev.release import compressed
from memu_dev.vm import VM, VMConfig

#: Every wait's deadline, seconds (TCG: a first stack start takes minutes).
DEADLINE = 1200.0


@dataclass
class FirstBoot:
    """One fresh VM: seconds from QEMU start to READY; the preload's seconds; seconds from
    ``systemctl start memu-stack`` to core healthy (None: not reached)."""

    ready: float | None = None
    preload: float | None = None
    stack: float | None = None


@dataclass
class WarmBoots:
    """Reboots of a set-up box: seconds from the kernel's first line to READY and to core
    healthy, one per reboot."""

    ready: list[float | None] = field(default_factory=list)
    core: list[float | None] = field(default_factory=list)


def _stack(vm: VM) -> dict[str, Any] | None:
    """``/api/status``'s ``stack`` object; None while the agent does not answer."""
    with contextlib.suppress(OSError, ValueError):
        code, body = vm.http_get("/api/status", timeout=5)
        if code == 200:
            stack = json.loads(body).get("stack")
            return stack if isinstance(stack, dict) else {}
    return None


def answers(stack: dict[str, Any] | None) -> bool:
    """The agent answered (READY)."""
    return stack is not None


def images_loaded(stack: dict[str, Any] | None) -> bool:
    """The preload has ended (done or failed)."""
    return (stack or {}).get("preload", {}).get("state") in ("done", "failed")


def _core_healthy(stack: dict[str, Any] | None) -> bool:
    services = (stack or {}).get("services", {})
    return all(services.get(s, {}).get("health") == "healthy" for s in CORE)


def poll(vm: VM, done: Callable[[dict[str, Any] | None], bool], t0: float,
          deadline: float = DEADLINE) -> float | None:
    """Seconds since ``t0`` (monotonic) until ``done(stack status)`` holds; None past the
    deadline. Drains the console meanwhile, so QEMU never blocks on a full pty."""
    while time.monotonic() - t0 < deadline and vm.alive():
        if done(_stack(vm)):
            return time.monotonic() - t0
        with contextlib.suppress(pexpect.TIMEOUT):
            vm.child.expect(pexpect.TIMEOUT, timeout=1)
    return None


def first_boot(vm: VM) -> FirstBoot:
    """Time a fresh VM's first boot and its stack's first start (see the module docstring)."""
    out = FirstBoot()
    out.ready = poll(vm, answers, time.monotonic() - vm.seconds_since_start())
    if out.ready is None:
        return out
    poll(vm, images_loaded, time.monotonic())
    seconds = ((_stack(vm) or {}).get("preload") or {}).get("seconds")
    out.preload = float(seconds) if isinstance(seconds, int | float) else None
    vm.wait_for_shell(timeout=300)
    vm.sh("python3 -m memu_firstboot.stack_config --server-name family.test >/dev/null",
          timeout=120)
    vm.sh("systemctl --no-block start memu-stack.service", timeout=60)
    out.stack = poll(vm, _core_healthy, time.monotonic())
    return out


def warm_boots(vm: VM, runs: int) -> WarmBoots:
    """Reboot the set-up box ``runs`` times; time each boot (see the module docstring)."""
    out = WarmBoots()
    for _ in range(runs):
        vm.sh("systemctl --no-block reboot", check=False)
        vm.wait_for(r"Linux version", timeout=600)
        t0 = time.monotonic()
        out.ready.append(poll(vm, answers, t0))
        out.core.append(poll(vm, _core_healthy, t0))
        vm.wait_for_shell(timeout=300)
    return out


def _usr_partition(image: Path) -> Path:
    """The /usr partition mkosi split out of ``image`` (``<stem>.usr.<uuid>.raw``)."""
    found = sorted(image.parent.glob(f"{image.stem}.usr.*.raw"))
    if not found:
        raise MemuError(f"no /usr partition next to {image}", hint="run `just build`")
    return found[-1]


def sizes() -> dict[str, tuple[int, int]]:
    """{"OS image": (with the stack, without), "/usr slot": (...)}: bytes, gzip -6.

    Raises:
        MemuError: an image or its /usr partition is missing, or gzip failed.
    """
    memu, bare = image_path("n100"), bare_image()
    return {"OS image": (compressed(memu).stat().st_size, compressed(bare).stat().st_size),
            "/usr slot": (compressed(_usr_partition(memu)).stat().st_size,
                          compressed(_usr_partition(bare)).stat().st_size)}


def fresh_vms(runs: int, prefix: str) -> Iterator[VM]:
    """``runs`` VMs one after another, each booting the built N100 image for the first time
    (a throw-away disk in a temporary directory named ``prefix…``); each is stopped when
    the caller asks for the next one or leaves the loop.

    Raises:
        MemuError: the image is not built, or a VM could not start.
    """
    image = image_path("n100")
    if not image.exists():
        raise MemuError(f"{image} is missing", hint="run `just build` first")
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            vm = VM(VMConfig(image=image, workdir=Path(tmp), shell=True, memory_mb=4096,
                             disk_size="16G"))
            with vm:
                yield vm


def run(runs: int) -> None:
    """Boot, time and print (see the module docstring).

    Raises:
        MemuError: the image is not built, or a VM could not start.
    """
    firsts: list[FirstBoot] = []
    warm = WarmBoots()
    for i, vm in enumerate(fresh_vms(runs, "memu-bench-stack-")):
        fb = first_boot(vm)
        firsts.append(fb)
        print(f"first boot {i + 1}/{runs}: READY {fmt(fb.ready)} s, preload "
              f"{fmt(fb.preload)} s, stack start to core healthy {fmt(fb.stack)} s",
              flush=True)
        if i + 1 == runs and fb.stack is not None:
            warm = warm_boots(vm, runs)
            for n, (r, c) in enumerate(zip(warm.ready, warm.core, strict=True), 1):
                print(f"warm boot {n}/{runs}: READY {fmt(r)} s, core healthy "
                      f"{fmt(c)} s", flush=True)
    f_ready = median([f.ready for f in firsts])
    f_stack = median([f.stack for f in firsts])
    w_ready, w_core = median(warm.ready), median(warm.core)
    print(f"\nQEMU (TCG, 2 vCPUs), median of {runs}:")
    print(f"  first boot: READY {fmt(f_ready)} s after QEMU start; images loaded in "
          f"{fmt(median([f.preload for f in firsts]))} s; core healthy {fmt(f_stack)} s "
          "after the stack's first start")
    print(f"  warm boot:  READY {fmt(w_ready)} s, core healthy {fmt(w_core)} s after the "
          "kernel's first line", end="")
    print(f" = {w_core / w_ready:.2f}x READY (goal <= 2x)" if w_ready and w_core else "")
    print("sizes, gzip -6 (with the stack / without it, the bare image):")
    for what, (with_stack, without) in sizes().items():
        print(f"  {what:<10} {with_stack / 1e6:8.0f} MB / {without / 1e6:8.0f} MB = "
              f"{with_stack / without:.2f}x")
