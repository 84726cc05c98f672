"""`just vm`: boot the built image in QEMU on a copy-on-write overlay, print where the
first-boot page is, and attach the terminal to the serial console (Ctrl-] quits). Without a
terminal (from a script or CI) it runs headless: the console goes only to the serial log,
whose path it prints, until the guest powers off or the process is interrupted.

    python -m memu_dev.vmrun [--board n100] [--shell] [--port 8080] [--disk-size 32G]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import pexpect

from memu_common import boards
from memu_dev.paths import DEFAULT_BOARD, image_path
from memu_dev.vm import VM, VMConfig


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description="boot a Memu OS image in QEMU")
    ap.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(boards.BOARDS))
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
    vm = VM(VMConfig(image=img, workdir=workdir, board=args.board, forwards={80: args.port},
                     shell=args.shell, disk_size=args.disk_size))
    with vm:
        print(f"memu: booting {img.name} (overlay and serial log in {workdir})")
        print(f"memu: first-boot page: {vm.url('/')}  (answers once the agent is READY)")
        if not sys.stdin.isatty():
            print(f"memu: no terminal: running headless; console in {vm.serial_log}; "
                  "interrupt (Ctrl-C, SIGINT) to power off", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                vm.child.expect(pexpect.EOF, timeout=None)  # reads (and drains) the console
            return 0
        print("memu: console follows; press Ctrl-] to power off and quit\n", flush=True)
        vm.child.interact()
    return 0


if __name__ == "__main__":
    sys.exit(main())
