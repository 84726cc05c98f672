"""`just bench-size`: what the built OS image weighs, and where.

    python -m memu_dev.bench_size [--top N] [--no-xz]

For the built N100 image (``just build``) it prints:

- the whole disk image compressed with ``xz -6`` (how images are usually published; Home
  Assistant OS's Pi 5 image is 347 MB as ``.xz``), with our container archives, and without
  them: the archives are compressed already (xz gains nothing on them), so their bytes are
  subtracted — an estimate, said as one;
- the ``/usr`` slot's content by directory, two levels deep, largest first (extracted from the
  erofs, see :func:`memu_dev.reproducible.extract_usr`);
- the largest Debian source packages by installed size, from mkosi's package report
  (``ManifestFormat=changelog``, ``<image>.changelog``); the package set itself, name and
  version, is in ``<image>.manifest`` (JSON), the record a rebuild of a release starts from.

The goal of the image-size issue: the OS without container archives at most 250 MB as xz.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from memu_common import MemuError
from memu_dev.paths import image_path
from memu_dev.reproducible import extract_usr, release_artifacts

#: The goal, bytes of xz, for the OS image without container archives.
GOAL_BYTES = 250 * 10**6
#: Home Assistant OS's Raspberry Pi 5 image, .xz, for comparison (not measured here).
HAOS_BYTES = 347 * 10**6
#: Where the slot's container archives are inside /usr.
ARCHIVES = Path("share/memu/containers")
_SOURCE = re.compile(r"^SourcePackage:\s*(\S+)\s*$")
_SIZE = re.compile(r"^Size:\s*(\d+)\s*$")


def xz_bytes(path: Path, threads: int = 2) -> int:
    """Bytes of ``path`` compressed with ``xz -6`` (counted, not kept).

    Raises:
        MemuError: xz failed.
    """
    with subprocess.Popen(["xz", "-6", f"-T{threads}", "-c", str(path)],
                          stdout=subprocess.PIPE) as xz:
        assert xz.stdout is not None
        total = 0
        while chunk := xz.stdout.read(1 << 20):
            total += len(chunk)
    if xz.returncode != 0:
        raise MemuError(f"xz failed on {path} (exit {xz.returncode})")
    return total


def by_directory(tree: Path, depth: int = 2) -> dict[str, int]:
    """Bytes of the regular files under ``tree``, summed by their first ``depth`` path
    components (``lib/modules``, ``share/locale``; a file nearer the top counts under its
    own directory)."""
    out: collections.Counter[str] = collections.Counter()
    for f in tree.rglob("*"):
        if f.is_file() and not f.is_symlink():
            parts = f.relative_to(tree).parts
            key = "/".join(parts[:depth]) if len(parts) > depth else "/".join(parts[:-1])
            out[key or "."] += f.stat().st_size
    return dict(out)


def source_packages(report: Iterable[str]) -> dict[str, int]:
    """Installed bytes by Debian source package, from mkosi's changelog-format package
    report (``SourcePackage: <name>`` … ``Size: <bytes>`` per block)."""
    out: dict[str, int] = {}
    name = None
    for line in report:
        if m := _SOURCE.match(line):
            name = m[1]
        elif (m := _SIZE.match(line)) and name is not None:
            out[name] = out.get(name, 0) + int(m[1])
            name = None
    return out


def _mb(n: float) -> str:
    return f"{n / 1e6:8.1f} MB"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 0, or 1 with a message and hint."""
    ap = argparse.ArgumentParser(prog="bench-size", description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=15, help="rows per table")
    ap.add_argument("--no-xz", action="store_true", help="skip compressing the image (slow)")
    args = ap.parse_args(argv)
    img = image_path("n100")
    try:
        if not img.exists():
            raise MemuError(f"{img} does not exist", hint="run `just build` first")
        usr = release_artifacts(img.parent, img.stem)[f"{img.stem}.usr.raw"]
        with tempfile.TemporaryDirectory(prefix="memu-size-", dir=img.parent) as tmp:
            extract_usr(usr, Path(tmp) / "usr")
            dirs = by_directory(Path(tmp) / "usr")
            archives = sum(f.stat().st_size for f in (Path(tmp) / "usr" / ARCHIVES).iterdir()
                           if f.is_file())
        image_xz = None if args.no_xz else xz_bytes(img)
    except MemuError as e:
        print(f"error: {e.message}" + (f"\nhint: {e.hint}" if e.hint else ""), file=sys.stderr)
        return 1
    total = sum(dirs.values())
    print(f"image {img.name}")
    if image_xz is not None:
        without = image_xz - archives
        print(f"  disk image, xz -6:                   {_mb(image_xz)}")
        print(f"  container archives in /usr:          {_mb(archives)}")
        print(f"  without them (estimate):             {_mb(without)}  "
              f"= {without / GOAL_BYTES:.2f}x the 250 MB goal, "
              f"{without / HAOS_BYTES:.2f}x HAOS's 347 MB")
    print(f"\n/usr content: {_mb(total)} (files, uncompressed); largest directories:")
    for name, size in sorted(dirs.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {_mb(size)}  {size / total:5.1%}  {name}")
    report = img.with_name(img.stem + ".changelog")
    if report.exists():
        with report.open(errors="replace") as f:
            packages = source_packages(f)
        print(f"\nlargest Debian source packages (installed size, before RemoveFiles=; "
              f"{len(packages)} in all, from {report.name}):")
        for name, size in sorted(packages.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {_mb(size)}  {name}")
    else:
        print(f"\n(no package report {report.name}: build with ManifestFormat=changelog)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
