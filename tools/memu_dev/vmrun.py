"""`just vm`: boot the built image in QEMU on a copy-on-write overlay, print where the
first-boot page is, and attach the terminal to the serial console (Ctrl-] quits).

    python -m memu_dev.vmrun [--board n100] [--shell] [--port 8080] [--disk-size 32G]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from memu_dev.paths import DEFAULT_BOARD, image_path
from memu_dev.vm import VM, VMConfig


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description="boot a Memu OS image in QEMU")
    ap.add_argument("--board", default=DEFAULT_BOARD)
    ap.add_argument("--port", type=int, default=0, help="host port for the page (0: free)")
    ap.add_argument("--shell", action="store_true",
                    help="log root in on the console (development only)")
    ap.add_argument("--disk-size", default=None, help="virtual disk size, e.g. 32G")
    args = ap.parse_args(argv)
    img = image_path(args.board)
    if not img.exists():
        print(f"memu: {img} does not exist; run `just build` first", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="memu-vm-"))
    vm = VM(VMConfig(image=img, workdir=workdir, forwards={80: args.port},
                     shell=args.shell, disk_size=args.disk_size))
    with vm:
        print(f"memu: booting {img.name} (overlay and serial log in {workdir})")
        print(f"memu: first-boot page: {vm.url('/')}  (answers once the agent is READY)")
        print("memu: console follows; press Ctrl-] to power off and quit\n", flush=True)
        vm.child.interact()
    return 0


if __name__ == "__main__":
    sys.exit(main())
