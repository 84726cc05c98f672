"""`just bench-ota`: what a minor update costs, against writing the same slot with dd.

    python -m memu_dev.bench_ota

Builds 0.2.0 from the same tree plus one changed file (tests/qemu/trees/v-marker), releases
it to a channel served on the host's loopback, boots 0.1.0 in QEMU and, in that one guest:

1. installs 0.2.0 through the agent (``POST /api/update``), timing it to "ready" and counting
   the bytes the channel served;
2. writes the same number of slot bytes with ``dd`` from ``/dev/zero`` to the inactive slot's
   partitions (the floor for any full-slot write on that disk).

Prints both, and the ratio. This is the baseline for later delta updates; TCG seconds are not
hardware seconds, the ratio is what counts.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from memu_dev.build import ensure_built
from memu_dev.channel import channel, update, wait_update, wait_version
from memu_dev.paths import REPO, image_path
from memu_dev.vm import VM, VMConfig

MARKER_TREE = REPO / "tests/qemu/trees/v-marker"
SLOT_B = {5: "usr-verity-sig", 6: "usr-verity", 7: "usr"}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    v1 = image_path()
    if not v1.exists():
        print(f"memu: {v1} is missing; run `just build` first", file=sys.stderr)
        return 1
    ensure_built("0.2.0", [MARKER_TREE])
    with tempfile.TemporaryDirectory(prefix="memu-bench-ota-") as tmp, \
            channel(Path(tmp) / "channels") as ch:
        ch.add("0.2.0")
        served = sum(p.stat().st_size for p in ch.dir.glob("memu-os_0.2.0_*"))
        vm = VM(VMConfig(image=v1, workdir=Path(tmp) / "vm"))
        with vm:
            wait_version(vm, "0.1.0", timeout=420)
            vm.wait_for_shell(240)
            update(vm, "source", channel="stable", base_url=ch.guest_base)
            t0 = time.monotonic()
            status, snap = update(vm, "install", version="0.2.0")
            if status != 202:
                print(f"memu: install refused: {snap}", file=sys.stderr)
                return 1
            snap = wait_update(vm, {"ready", "failed"}, timeout=1800)
            t_update = time.monotonic() - t0
            if snap["state"] != "ready":
                print(f"memu: update failed: {snap}", file=sys.stderr)
                return 1
            written = sum(int(vm.sh(f"blockdev --getsize64 {vm.part(n)}"))
                          for n in SLOT_B)
            t0 = time.monotonic()
            for n in SLOT_B:
                vm.sh(f"dd if=/dev/zero of={vm.part(n)} bs=4M oflag=direct status=none",
                      timeout=1800, check=False)
            vm.sh("sync", timeout=600)
            t_dd = time.monotonic() - t0
        shutil.rmtree(Path(tmp) / "vm", ignore_errors=True)
    mib = 1 << 20
    print("\nminor update 0.1.0 -> 0.2.0 (one file changed), one guest (QEMU TCG):")
    print(f"  {'':<28} {'MiB':>9} {'seconds':>9}")
    print(f"  {'downloaded (compressed)':<28} {served / mib:>9.1f} {'':>9}")
    print(f"  {'sysupdate: slot written':<28} {written / mib:>9.1f} {t_update:>9.1f}")
    print(f"  {'dd: same bytes, no network':<28} {written / mib:>9.1f} {t_dd:>9.1f}")
    print(f"  ratio update/dd: {t_update / t_dd:.2f}x time; "
          f"downloaded/written: {served / written:.2f}x bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
