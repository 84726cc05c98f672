"""`just bench-boot`: how much Memu adds to boot time.

    python -m memu_dev.bench_boot [--runs 3]

Boots the N100 image and a "bare" image built from the same tree without Memu's additions
(profile ``bare``: no agent, no Docker) ``--runs`` times each, in this one process, under TCG.
Prints the median seconds from QEMU start to the login prompt for both, from QEMU start to
the agent answering HTTP (READY) for Memu, and the ratios against the bare baseline, then
``systemd-analyze`` and its critical chain from the guest of each image's last boot. TCG
seconds are not hardware seconds; the ratio is what counts.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pexpect

from memu_common import MemuError
from memu_dev.build import build, ensure_host, newest_input_mtime
from memu_dev.paths import image_path
from memu_dev.vm import VM, VMConfig

LOGIN = r"login: "


@dataclass(frozen=True)
class BootTimes:
    """Seconds from QEMU start to each milestone of one boot (None: not reached), and what
    the guest's ``systemd-analyze`` said (empty unless asked for)."""

    login: float | None
    ready: float | None
    analysis: str = ""


def bare_image() -> Path:
    """The baseline image, built (profiles n100 + bare) when missing or stale."""
    img = image_path("n100", variant="bare")
    if not img.exists() or img.stat().st_mtime < newest_input_mtime():
        ensure_host("n100")
        build("n100", profiles=["bare"])
    return img


def boot_once(image: Path, want_http: bool, deadline: float,
              analyze: str | None = None) -> BootTimes:
    """Boot ``image`` once and time the milestones; stops the VM afterwards. With
    ``analyze`` (a unit), also asks the guest for ``systemd-analyze`` and that unit's
    critical chain (through the test-only console shell, after the timing)."""
    login: float | None = None
    ready: float | None = None
    analysis = ""
    with tempfile.TemporaryDirectory(prefix="memu-bench-") as tmp:
        vm = VM(VMConfig(image=image, workdir=Path(tmp), shell=analyze is not None))
        with vm:
            while vm.seconds_since_start() < deadline:
                if login is None:
                    with contextlib.suppress(pexpect.TIMEOUT):
                        vm.child.expect(LOGIN, timeout=0.5)
                        login = vm.seconds_since_start()
                else:
                    with contextlib.suppress(pexpect.TIMEOUT):
                        vm.child.expect(pexpect.TIMEOUT, timeout=0.5)
                if want_http and ready is None:
                    with contextlib.suppress(OSError):
                        vm.http_get("/api/status", timeout=2)
                        ready = vm.seconds_since_start()
                if login is not None and (ready is not None or not want_http):
                    break
            if analyze is not None and login is not None:
                with contextlib.suppress(MemuError):
                    vm.wait_for_shell(timeout=120)
                    analysis = vm.sh("systemctl is-system-running --wait >/dev/null; "
                                     "systemd-analyze time; "
                                     f"systemd-analyze critical-chain {analyze}",
                                     timeout=300, check=False)
    return BootTimes(login, ready, analysis)


def median(values: list[float | None]) -> float | None:
    """Median of the reached values; None when none was reached."""
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def fmt(v: float | None) -> str:
    """Seconds with one decimal, or a dash."""
    return "-" if v is None else f"{v:.1f}"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description="boot-time benchmark against a bare image")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--deadline", type=float, default=600, help="seconds per boot")
    args = ap.parse_args(argv)
    memu = image_path("n100")
    if not memu.exists():
        print(f"memu: {memu} is missing; run `just build` first", file=sys.stderr)
        return 1
    try:
        bare = bare_image()
    except MemuError as e:
        print(f"memu: error: {e}", file=sys.stderr)
        return 1
    results: dict[str, list[BootTimes]] = {"bare": [], "memu": []}
    units = {"bare": "multi-user.target", "memu": "memu-agent.service"}
    for i in range(args.runs):
        for name, img in (("bare", bare), ("memu", memu)):
            t0 = time.monotonic()
            last = i + 1 == args.runs
            bt = boot_once(img, want_http=(name == "memu"), deadline=args.deadline,
                           analyze=units[name] if last else None)
            results[name].append(bt)
            print(f"run {i + 1}/{args.runs} {name}: login {fmt(bt.login)} s, "
                  f"READY {fmt(bt.ready)} s ({time.monotonic() - t0:.0f} s wall)", flush=True)
    b_login = median([r.login for r in results["bare"]])
    m_login = median([r.login for r in results["memu"]])
    m_ready = median([r.ready for r in results["memu"]])
    print(f"\nboot to milestone, median of {args.runs} runs (QEMU TCG, 2 vCPUs):")
    print(f"  {'image':<6} {'login prompt s':>15} {'agent READY s':>14}")
    print(f"  {'bare':<6} {fmt(b_login):>15} {'-':>14}")
    print(f"  {'memu':<6} {fmt(m_login):>15} {fmt(m_ready):>14}")
    if b_login and m_login and m_ready:
        print(f"  ratio memu/bare: login {m_login / b_login:.2f}x, "
              f"READY vs bare login {m_ready / b_login:.2f}x (goal <= 1.15x)")
    for name, runs in results.items():
        if runs and runs[-1].analysis:
            print(f"\n{name}, last boot, from the guest:\n{runs[-1].analysis}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
