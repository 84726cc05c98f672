"""`just bench-setup`: seconds from pressing "Set up" on the first-boot page to "ready", in QEMU.

For each of ``runs`` fresh VMs (overlays on the built N100 image, TCG, 2 vCPUs, no network
but the host's forwarded ports): seconds from QEMU start to the agent answering (READY),
then, once the preload has loaded the slot's images (a family takes longer than that to read
the code off the screen and fill in the form), the form is sent from the host as a browser
without JavaScript sends it (:mod:`memu_dev.setup_client`) and the seconds to the end are
timed, with each step's share. Printed: every run, the medians, and setup / READY (goal:
<= 2x). TCG seconds are not hardware seconds; the ratio is what counts.

    python -m memu_dev.bench_setup [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from memu_common import MemuError
from memu_dev import setup_client
from memu_dev.bench_boot import fmt, median
from memu_dev.bench_stack_boot import answers, fresh_vms, images_loaded, poll
from memu_dev.vm import VM


def one(vm: VM) -> tuple[float | None, setup_client.SetupResult | None]:
    """READY seconds and the setup's result for one fresh VM (None where not reached)."""
    ready = poll(vm, answers, time.monotonic() - vm.seconds_since_start())
    if ready is None:
        return None, None
    poll(vm, images_loaded, time.monotonic())
    vm.wait_for_shell(timeout=300)
    code = setup_client.code_on_screen(vm.sh(f"cat {setup_client.GREETING}"))
    result = setup_client.Browser(vm.url("")).set_up(code, deadline_s=1800)
    return ready, result


def run(runs: int) -> int:
    """Boot, set up, time and print (see the module docstring); 1 when a setup failed.

    Raises:
        MemuError: the image is not built, or a VM could not start.
    """
    readies: list[float | None] = []
    results: list[setup_client.SetupResult] = []
    for i, vm in enumerate(fresh_vms(runs, "memu-bench-setup-")):
        ready, result = one(vm)
        readies.append(ready)
        if result is None:
            print(f"run {i + 1}/{runs}: READY {fmt(ready)} s, no setup", flush=True)
            continue
        steps = ", ".join(f"{s['name']} {s['seconds']} s" for s in result.progress["steps"])
        print(f"run {i + 1}/{runs}: READY {fmt(ready)} s; setup {result.progress['state']} "
              f"in {result.seconds:.1f} s ({steps})", flush=True)
        if not result.done:
            return 1
        results.append(result)
    ready_s = median(readies)
    setup_s = median([r.seconds for r in results])
    print(f"\nQEMU (TCG, 2 vCPUs), median of {runs}: boot to READY {fmt(ready_s)} s; "
          f"\"Set up\" to ready {fmt(setup_s)} s", end="")
    print(f" = {setup_s / ready_s:.2f}x READY (goal <= 2x)" if ready_s and setup_s else "")
    if results:
        names = list(results[0].shares())
        print("share of each step (median): " + ", ".join(
            f"{n} {statistics.median(r.shares().get(n, 0.0) for r in results):.0%}"
            for n in names))
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="bench-setup", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        return run(args.runs)
    except MemuError as e:
        print(f"memu: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
