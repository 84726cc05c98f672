"""`just bench-ota`: what an update costs in full and by delta, against writing the same bytes
with dd.

    python -m memu_dev.bench_ota

**One-file change** (0.1.0 -> 0.2.0, tests/qemu/trees/v-marker), measured in QEMU: two guests
resumed from the golden snapshot of 0.1.0's first boot (memu_dev.golden; the QEMU tests'
own, made when missing), each updated through the agent (``POST /api/update``) from a
channel served on the host's loopback that counts every byte it serves:

1. full: the channel carries the full artifacts only (the box asks for delta material,
   finds none and downloads the update whole);
2. delta: the channel also carries the delta material; the box rebuilds the artifacts from
   its running slot and the changed blocks, and reports the rebuild's peak memory and the
   bytes the rebuilt artifacts took on ``/var`` (the peak extra disk);

then, in the second guest, ``dd`` copies as many bytes as the update installed from the
running slot's ``/usr`` partition to the inactive one (``iflag=direct oflag=direct``; real
data, since QEMU's qcow2 makes writing zeros nearly free): what writing those bytes from a
local file costs on that disk. Apply time is from the install request to "ready".

The same rebuild is timed on the host's own CPU as well (:func:`host_rebuild`: the 0.1.0
artifacts indexed, every 0.2.0 artifact planned, rebuilt with the ranges read from 0.2.0's
file, its SHA-256 taken), against ``dd`` of the same bytes there (``conv=fsync``): under TCG
every SHA-256 runs on an emulated CPU while ``dd`` does almost no CPU work, so the guest's
ratio says little about hardware.

**Package upgrade** (0.1.0 -> 0.4.0: libcurl4t64 and firmware-intel-graphics from
trixie-backports laid over the image's ``/usr``, memu_dev.backports), planned on the host
exactly as the device plans it (:func:`memu_dev.bench_delta.cost`): the bytes to fetch
against the release's compressed artifacts.

Goals (the updates issue): a one-file change fetches at most 5 % of the full download;
applying it takes at most 4x the dd of the same bytes. TCG seconds are not hardware seconds:
the ratios are what count.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from memu_common import MemuError, run
from memu_common.files import sha256_file
from memu_dev import bench_delta
from memu_dev.backports import packages_tree
from memu_dev.build import build, ensure_built, ensure_host, is_stale
from memu_dev.channel import Channel, channel, update, wait_update, wait_version
from memu_dev.golden import restore, shared
from memu_dev.paths import DEFAULT_BOARD, REPO, image_path
from memu_dev.vm import VM
from memu_ota.blockindex import Plan

MARKER_TREE = REPO / "tests/qemu/trees/v-marker"
RESULTS = REPO / "test-results" / "qemu"
UPGRADED = ["libcurl4t64", "firmware-intel-graphics"]
USR_A, USR_B = 4, 7  # the slots' /usr partitions
MIB = 1 << 20


def timed_install(vm: VM, ch: Channel, version: str) -> tuple[float, dict[str, Any]]:
    """Point ``vm`` at ``ch``, install ``version``; return (seconds to "ready", snapshot).

    Raises:
        MemuError: the install was refused or failed.
    """
    status, snap = update(vm, "source", channel="stable", base_url=ch.guest_base)
    if status != 202:
        raise MemuError(f"the update source was refused: {snap}")
    ch.served = 0
    t0 = time.monotonic()
    status, snap = update(vm, "install", version=version)
    if status != 202:
        raise MemuError(f"install refused: {snap}")
    snap = wait_update(vm, {"ready", "failed"}, timeout=3600)
    if snap["state"] != "ready":
        raise MemuError(f"the update failed: {snap}")
    return time.monotonic() - t0, snap


def one_file_change(tmp: Path) -> dict[str, Any]:
    """The QEMU half (see the module docstring); returns its figures."""
    golden = shared(image_path())
    out: dict[str, Any] = {}
    for how in ("full", "delta"):
        with channel(tmp / how) as ch:
            ch.add("0.2.0", delta=how == "delta")
            vm = restore(golden, RESULTS / f"bench-ota-{how}")
            try:
                wait_version(vm, "0.1.0", timeout=300)
                seconds, snap = timed_install(vm, ch, "0.2.0")
                out[how] = {"seconds": seconds, "served": ch.served, "delta": snap["delta"]}
                if how == "delta":
                    if not (snap["delta"] or {}).get("fetched"):
                        raise MemuError(f"the update did not go by delta: {snap['delta']}")
                    written = int(snap["delta"]["size"])
                    t0 = time.monotonic()
                    vm.sh(f"dd if={vm.part(USR_A)} of={vm.part(USR_B)} bs=1M "
                          f"count={-(-written // MIB)} iflag=direct oflag=direct status=none; "
                          "sync", timeout=3600)
                    out["dd"] = {"seconds": time.monotonic() - t0, "bytes": written}
            finally:
                vm.stop()
                vm.overlay.unlink(missing_ok=True)
    return out


def host_rebuild(old_version: str, new_version: str, tmp: Path) -> tuple[float, float, int]:
    """Rebuild ``new_version``'s artifacts from ``old_version``'s on the host as a device does
    (index, plan, rebuild, whole-file SHA-256); return (rebuild seconds, seconds of ``dd``
    writing the same bytes with ``conv=fsync``, bytes)."""
    old = bench_delta.release_inputs(old_version)
    new = bench_delta.release_inputs(new_version)
    sizes: list[int] = []

    def whole(_: Path, size: int, out: Path, __: Plan) -> None:
        sizes.append(size)
        sha256_file(out)  # as the device checks each rebuilt file against the signed sums

    t0 = time.monotonic()
    bench_delta.rebuild_release(old, new, tmp, whole)
    t_rebuild = time.monotonic() - t0
    t0 = time.monotonic()
    for (path, _, _), size in zip(new, sizes, strict=True):
        run(["dd", f"if={path}", f"of={tmp / 'dd'}", "bs=1M", f"count={-(-size // MIB)}",
             "conv=fsync", "status=none"])
        (tmp / "dd").unlink()
    return t_rebuild, time.monotonic() - t0, sum(sizes)


def package_upgrade(tmp: Path) -> tuple[dict[str, str], bench_delta.Cost]:
    """The host half: build 0.4.0 with :data:`UPGRADED` from trixie-backports, plan it."""
    tree = RESULTS / "bench-ota-upgrade"
    versions = packages_tree(UPGRADED, tree)
    ensure_built("0.4.0", [tree])
    return versions, bench_delta.cost(bench_delta.release_inputs("0.1.0"),
                                      bench_delta.release_inputs("0.4.0"))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    try:
        # The base from the same tree as the updates (a base older than the tree would add
        # the tree's changes to every delta).
        if is_stale(DEFAULT_BOARD):
            ensure_host(DEFAULT_BOARD)
            build(DEFAULT_BOARD)
        ensure_built("0.2.0", [MARKER_TREE])
        with tempfile.TemporaryDirectory(prefix="memu-bench-ota-") as tmp:
            vm = one_file_change(Path(tmp))
            on_host = host_rebuild("0.1.0", "0.2.0", Path(tmp))
            versions, upgrade = package_upgrade(Path(tmp))
    except MemuError as e:
        print(f"memu: {e.message}" + (f"\nhint: {e.hint}" if e.hint else ""), file=sys.stderr)
        return 1
    full, by_delta, dd = vm["full"], vm["delta"], vm["dd"]
    report = by_delta["delta"]
    print("\none-file change 0.1.0 -> 0.2.0, one guest each (QEMU TCG):")
    print(f"  {'':<22} {'downloaded MiB':>15} {'apply s':>9} {'vs dd':>7}")
    for name, how in (("full", full), ("delta", by_delta)):
        print(f"  {name:<22} {how['served'] / MIB:>15.1f} {how['seconds']:>9.1f} "
              f"{how['seconds'] / dd['seconds']:>6.2f}x")
    print(f"  {'dd, same bytes':<22} {dd['bytes'] / MIB:>15.1f} {dd['seconds']:>9.1f}")
    print(f"  delta/full downloaded: {by_delta['served'] / full['served']:.2%} (goal 5 %); "
          f"delta apply/dd: {by_delta['seconds'] / dd['seconds']:.2f}x (goal 4x)")
    print(f"  delta peak memory {report['memory'] / MIB:.0f} MiB; peak extra disk on /var "
          f"{report['size'] / MIB:.0f} MiB (the rebuilt artifacts)")
    print(f"  delta apply/full apply: {by_delta['seconds'] / full['seconds']:.2f}x")
    t_rebuild, t_dd, size = on_host
    print(f"  on the host's CPU: rebuild of {size / MIB:.0f} MiB {t_rebuild:.1f} s, dd of the "
          f"same bytes {t_dd:.1f} s: {t_rebuild / t_dd:.2f}x")
    print(f"\npackage upgrade 0.1.0 -> 0.4.0 ({', '.join(f'{p} {v}' for p, v in versions.items())}"
          " from trixie-backports), planned on the host as the device plans it:")
    print(f"  full {upgrade.full / MIB:.1f} MiB; delta {upgrade.total / MIB:.2f} MiB "
          f"({upgrade.fetch / MIB:.2f} in {upgrade.ranges} ranges + indexes "
          f"{upgrade.indexes / MIB:.2f}) = {upgrade.total / upgrade.full:.2%} of the full")
    print(f"  [{'; '.join(upgrade.rows)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
