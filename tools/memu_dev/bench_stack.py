"""`just bench-stack`: what the family stack costs.

    python -m memu_dev.bench_stack [--settle SECONDS] [--runs N] [--no-qemu]

On the host's Docker: starts chat's core as the stack wires it (memu_dev.hoststack:
PostgreSQL, Synapse, nginx) plus Valkey and the assistant (with a Matrix account made as
setup will) on a private dockerd, waits until all are healthy and
then ``--settle`` seconds (idle: no clients), and prints each container's memory as ``docker
stats`` reports it (the cgroup's memory use minus its inactive page cache), the total against
the 1.5 GiB budget for the services built here, and each image's archive size from the lock
files. The registry images (Element, Immich, Ollama, Tailscale) are not measured: only
stand-ins run here.

Then, unless ``--no-qemu``, in QEMU (memu_dev.bench_stack_boot): boot to READY and to "core
stack healthy" on first and warm boots, the time to load the preloaded images, and the
compressed sizes of the OS image and its /usr slot with and without the stack.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from memu_common import MemuError
from memu_dev import bench_stack_boot, hoststack
from memu_dev import engine as docker_engine

BUDGET_BYTES = 1.5 * (1 << 30)
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "kB": 1000, "MB": 10**6,
          "GB": 10**9}


def parse_size(text: str) -> float:
    """Bytes from Docker's human size (``"48.3MiB"``, ``"512kB"``).

    Raises:
        ValueError: not a size Docker prints.
    """
    text = text.strip()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * _UNITS[unit]
    raise ValueError(f"not a Docker size: {text!r}")


def memory(engine: docker_engine.Engine, names: list[str]) -> dict[str, float]:
    """Bytes of memory each container uses now (``docker stats --no-stream``)."""
    out = engine.docker("stats", "--no-stream", "--format", "{{json .}}", *names).stdout
    usage: dict[str, float] = {}
    for line in out.splitlines():
        row = json.loads(line)
        usage[row["Name"]] = parse_size(row["MemUsage"].split("/")[0])
    return usage


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description="idle memory of the stack's images built here")
    ap.add_argument("--settle", type=float, default=60, help="idle seconds before measuring")
    ap.add_argument("--runs", type=int, default=3, help="QEMU boots of each kind")
    ap.add_argument("--no-qemu", action="store_true", help="only the host Docker part")
    args = ap.parse_args(argv)
    try:
        engine = docker_engine.start()
        images = docker_engine.load_built(engine)
        with tempfile.TemporaryDirectory(prefix="memu-bench-stack-") as tmp:
            work = Path(tmp)
            (work / "chat").mkdir()
            with hoststack.chat(engine, work / "chat", project="memu-bench") as core:
                bot, _ = hoststack.start_bot(engine, core, "memu-bench")
                time.sleep(args.settle)
                usage = memory(engine, [*core.containers, bot])
    except MemuError as e:
        print(f"memu: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"memu: hint: {e.hint}", file=sys.stderr)
        return 1
    print(f"idle memory after {args.settle:.0f} s (docker stats: cgroup use minus page cache):")
    for name, used in sorted(usage.items()):
        print(f"  {name:<24} {used / (1 << 20):8.1f} MiB")
    total = sum(usage.values())
    print(f"  {'total':<24} {total / (1 << 20):8.1f} MiB = {total / BUDGET_BYTES:.2f}x "
          f"the 1.5 GiB budget")
    print("image archives (docker-archive, uncompressed layers):")
    for name, entry in sorted(images.items()):
        if entry.in_slot:
            print(f"  {name:<24} {entry.archive_bytes / 1e6:8.0f} MB")
        else:
            print(f"  {name:<24} not in the slot: pulled by digest ({entry.origin})")
    if args.no_qemu:
        return 0
    try:
        bench_stack_boot.run(args.runs)
    except MemuError as e:
        print(f"memu: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"memu: hint: {e.hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
