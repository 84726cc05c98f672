"""`just bench-delta`: what a delta update would download, on two of our own releases.

    python -m memu_dev.bench_delta [OLD] [NEW]

Builds (when missing) 0.1.0 from the tree and 0.3.0 from the same tree plus one changed file
(tests/qemu/trees/v-marker; the QEMU update tests build the same 0.3.0). Takes each version's
release artifacts uncompressed and cut as `just release` cuts them (the ``/usr`` erofs, the
verity hash tree, the UKI) and, for block sizes of 4, 16 and 64 KiB, plans the rebuild of
every NEW artifact from all of OLD's (memu_ota.blockindex.plan: the device's running slot and
UKI). Prints the bytes to fetch plus the block indexes the device downloads first, the number
of HTTP ranges (runs closer than 64 KiB merged), and the ratio against the full update (the
release's gzip artifacts plus the UKI, what a device downloads today).

The goal of the updates issue: a one-file update fetches at most 5 % of the full one.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from memu_common import MemuError
from memu_dev import release
from memu_dev.build import ensure_built
from memu_dev.paths import REPO
from memu_ota.blockindex import BlockIndex, Plan, plan, rebuild
from memu_ota.delta import MERGE_GAP

MARKER_TREE = REPO / "tests/qemu/trees/v-marker"
BLOCK_SIZES = (4096, 16384, 65536)
GOAL = 0.05


def release_inputs(version: str) -> list[tuple[Path, int | None, int]]:
    """``(artifact, bytes the release keeps or None for all, bytes of the full download)``
    for each artifact of ``version`` a device downloads (release.artifacts, without the
    manifest), the full download being the release's gzip file (cached, see
    release.compressed) or the UKI itself.

    Raises:
        MemuError: the version is not built.
    """
    files = release.artifacts(version)
    out = [(files[name], size, release.compressed(files[name], size).stat().st_size)
           for name, size in release.cuts(files).items()]
    uki = next(src for name, src in files.items() if name.endswith(".efi"))
    return [*out, (uki, None, uki.stat().st_size)]


@dataclasses.dataclass(frozen=True)
class Cost:
    """What a delta from one release to another costs with ``block``-byte blocks: ``fetch``
    bytes in ``ranges`` HTTP ranges plus ``indexes`` bytes of block indexes, against ``full``
    bytes of the full download; ``rows`` says it per artifact."""

    block: int
    fetch: int
    ranges: int
    indexes: int
    full: int
    rows: tuple[str, ...]

    @property
    def total(self) -> int:
        """Bytes the device downloads by delta (the signed sums aside: under 2 KiB)."""
        return self.fetch + self.indexes


def plans(old: list[tuple[Path, int | None, int]], new: list[tuple[Path, int | None, int]],
          block: int = BLOCK_SIZES[0]) -> Iterator[tuple[Path, BlockIndex, Plan]]:
    """For every artifact of ``new``, planned from all of ``old`` (both
    :func:`release_inputs`) as a device plans it (memu_ota.blockindex.plan, runs closer than
    :data:`MERGE_GAP` merged): the artifact, its block index and the plan."""
    have = [BlockIndex.of_file(path, block, size) for path, size, _ in old]
    for path, size, _ in new:
        target = BlockIndex.of_file(path, block, size)
        yield path, target, plan(target, have, merge_gap=MERGE_GAP)


def cost(old: list[tuple[Path, int | None, int]], new: list[tuple[Path, int | None, int]],
         block: int = BLOCK_SIZES[0]) -> Cost:
    """What the delta from ``old`` to ``new`` (both :func:`release_inputs`) costs with
    ``block``-byte blocks (:func:`plans`)."""
    fetch = index_bytes = ranges = 0
    rows = []
    for path, target, how in plans(old, new, block):
        index_bytes += len(target.to_bytes())
        fetch += how.fetch_bytes
        ranges += len(how.fetch)
        what = "UKI" if path.suffix == ".efi" else release.partition_of(path)
        rows.append(f"{what} {how.fetch_bytes / 2**20:.2f} MiB of {target.size / 2**20:.1f}")
    return Cost(block, fetch, ranges, index_bytes, sum(d for _, _, d in new), tuple(rows))


def rebuild_release(old: list[tuple[Path, int | None, int]],
                    new: list[tuple[Path, int | None, int]], tmp: Path,
                    check: Callable[[Path, int, Path, Plan], object]) -> int:
    """Rebuild every artifact of ``new`` from all of ``old`` as a device does (:func:`plans`,
    then memu_ota.blockindex.rebuild), the missing ranges read from the new artifact's own
    file in place of the channel. ``check(artifact, bytes the release keeps of it, rebuilt
    file, plan)`` sees each result in ``tmp`` before it is deleted; returns the bytes
    fetched."""
    fetched = 0
    for path, target, how in plans(old, new):

        def ranges(off: int, length: int, path: Path = path) -> bytes:
            with path.open("rb") as f:
                f.seek(off)
                return f.read(length)

        out = tmp / path.name
        fetched += rebuild(target, how, [p for p, _, _ in old], ranges, out)
        check(path, target.size, out, how)
        out.unlink()
    return fetched


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    ap = argparse.ArgumentParser(prog="bench-delta", description=__doc__.splitlines()[0])
    ap.add_argument("old", nargs="?", default="0.1.0")
    ap.add_argument("new", nargs="?", default="0.3.0")
    args = ap.parse_args(argv)
    try:
        ensure_built(args.old)
        ensure_built(args.new, [MARKER_TREE])
        old, new = release_inputs(args.old), release_inputs(args.new)
    except MemuError as e:
        print(f"error: {e.message}" + (f"\nhint: {e.hint}" if e.hint else ""), file=sys.stderr)
        return 1
    full = sum(download for _, _, download in new)
    print(f"{args.old} -> {args.new}: the full update downloads {full / 2**20:.1f} MiB "
          f"(gzip slot artifacts and the UKI)")
    for block in BLOCK_SIZES:
        c = cost(old, new, block)
        print(f"  {block // 1024:2d} KiB blocks: fetch {c.fetch / 2**20:7.2f} MiB in {c.ranges} "
              f"ranges + indexes {c.indexes / 2**20:5.2f} MiB = {c.total / 2**20:7.2f} MiB "
              f"= {c.total / full:6.2%} of the full update (goal {GOAL:.0%})  "
              f"[{'; '.join(c.rows)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
