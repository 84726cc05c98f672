"""`just bench-size`: what the built OS image weighs, and where.

    python -m memu_dev.bench_size [--top N] [--no-xz]

For the built N100 image (``just build``) it prints:

- the whole disk image compressed with ``xz -6`` (how images are usually published; Home
  Assistant OS's Pi 5 image is 347 MB as ``.xz``), with our container archives;
- the OS without them: the ``/usr`` slot made again from its own files minus the archives
  (:func:`lean_usr`, erofs with zstd like ``image/repart/12-usr.conf``), plus the UKI, the
  verity hashes and their signature, each with ``xz -6`` (the disk's ESP and root partition
  add under 1 MB of metadata beside the UKI, not counted; the verity partition is the real
  one, which also hashes the archives: a few MB too many);
- the ``/usr`` slot's content by directory, two levels deep, largest first (extracted from the
  erofs, see :func:`memu_dev.reproducible.extract_usr`);
- the largest Debian source packages by installed size (``Installed-Size``, before
  ``RemoveFiles=``), from the dpkg database of mkosi's cached tree (the image itself has
  none: ``CleanPackageMetadata=yes``); the package set of the build, name and version, is in
  ``<image>.manifest`` (mkosi's JSON manifest), the record a rebuild of a release starts
  from.

The goal of the image-size issue: the OS without container archives at most 250 MB as xz.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO

from memu_common import MemuError, run
from memu_dev.paths import REPO, image_path, mkosi_cmd
from memu_dev.reproducible import extract_usr, release_artifacts

#: The goal, bytes of xz, for the OS without container archives.
GOAL_BYTES = 250 * 10**6
#: Home Assistant OS's Raspberry Pi 5 image, .xz, for comparison (not measured here).
HAOS_BYTES = 347 * 10**6
#: Where the slot's container archives are inside /usr.
ARCHIVES = Path("share/memu/containers")
#: The dpkg database of mkosi's cached image tree (Incremental=yes).
DPKG_STATUS = REPO / "mkosi.cache" / "debian~trixie~x86-64.cache" / "var/lib/dpkg/status"


def data_extents(path: Path) -> list[tuple[int, int]]:
    """The (offset, length) runs of ``path`` that hold data, by ``SEEK_DATA``/``SEEK_HOLE``
    (lseek(2)); the holes between them read as zeros."""
    out = []
    with path.open("rb") as f:
        fd, end, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, stop - start))
            pos = stop
    return out


def xz_bytes(*paths: Path, threads: int = 2) -> int:
    """Bytes of the ``paths``' data, one after the other, compressed with ``xz -6``, counted,
    not kept. Only each file's data extents are fed to xz (:func:`data_extents`): the holes
    of a sparse disk image are zeros, which xz stores in a few bytes per MiB, and reading
    them would take most of the time (the N100 image is 5.7 GiB with 0.9 GiB of data).

    Raises:
        MemuError: xz failed.
    """
    with subprocess.Popen(["xz", "-6", f"-T{threads}", "-c"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE) as xz:
        assert xz.stdin is not None and xz.stdout is not None
        counted: list[int] = []
        out = xz.stdout
        reader = threading.Thread(target=lambda: counted.append(_count(out)))
        reader.start()
        for path in paths:
            with path.open("rb") as f:
                for start, length in data_extents(path):
                    f.seek(start)
                    while length > 0:
                        chunk = f.read(min(length, 1 << 20))
                        if not chunk:
                            break
                        xz.stdin.write(chunk)
                        length -= len(chunk)
        xz.stdin.close()
        reader.join()
    if xz.returncode != 0:
        raise MemuError(f"xz failed (exit {xz.returncode})")
    return counted[0]


def lean_usr(tree: Path, dest: Path) -> Path:
    """Make the ``/usr`` slot's erofs again from its extracted ``tree`` without the container
    archives (deleted from ``tree``), compressed as the image's is (zstd, mkfs.erofs(1) from
    mkosi's tools tree); returns ``dest``.

    Raises:
        MemuError: mkfs.erofs failed.
    """
    shutil.rmtree(tree / ARCHIVES, ignore_errors=True)
    run([*mkosi_cmd(), "sandbox", "--", "mkfs.erofs", "-zzstd", str(dest), str(tree)],
        hint="is mkosi's tools tree built? run `just build` once")
    return dest


def _count(stream: IO[bytes]) -> int:
    total = 0
    while chunk := stream.read(1 << 20):
        total += len(chunk)
    return total


def by_directory(tree: Path, depth: int = 2) -> dict[str, int]:
    """Bytes of the regular files under ``tree``, summed by their first ``depth`` path
    components (``lib/modules``, ``share/locale``; a file nearer the top counts under its
    own directory); a file with several hard links counts once, under its first path."""
    out: collections.Counter[str] = collections.Counter()
    seen: set[tuple[int, int]] = set()
    for f in sorted(tree.rglob("*")):
        if f.is_file() and not f.is_symlink():
            st = f.stat()
            if (st.st_dev, st.st_ino) in seen:  # a hard link: counted once
                continue
            seen.add((st.st_dev, st.st_ino))
            parts = f.relative_to(tree).parts
            key = "/".join(parts[:depth]) if len(parts) > depth else "/".join(parts[:-1])
            out[key or "."] += st.st_size
    return dict(out)


def source_packages(status: str) -> dict[str, int]:
    """Installed bytes by Debian source package, from a dpkg ``status`` file's stanzas
    (deb-control(5): ``Package``, ``Source`` (the package's own name when absent, a version in
    parentheses dropped), ``Installed-Size`` in KiB); packages not installed are left out."""
    out: dict[str, int] = {}
    for stanza in status.split("\n\n"):
        fields = dict(line.split(":", 1) for line in stanza.splitlines()
                      if ":" in line and not line.startswith(" "))
        if "install ok installed" not in fields.get("Status", ""):
            continue
        source = (fields.get("Source") or fields.get("Package", "?")).split()[0]
        out[source] = out.get(source, 0) + int(fields.get("Installed-Size", "0") or 0) * 1024
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
        artifacts = release_artifacts(img.parent, img.stem)
        usr = artifacts[f"{img.stem}.usr.raw"]
        rest = [artifacts[f"{img.stem}.{r}"] for r in ("efi", "usr-verity.raw",
                                                         "usr-verity-sig.raw")]
        with tempfile.TemporaryDirectory(prefix="memu-size-", dir=img.parent) as tmp:
            extract_usr(usr, Path(tmp) / "usr")
            dirs = by_directory(Path(tmp) / "usr")
            archives = sorted(f for f in (Path(tmp) / "usr" / ARCHIVES).iterdir()
                              if f.is_file())
            archives_bytes = sum(a.stat().st_size for a in archives)
            lean = lean_usr(Path(tmp) / "usr", Path(tmp) / "usr.erofs")
            lean_xz = None if args.no_xz else xz_bytes(lean)
        rest_xz = None if args.no_xz else xz_bytes(*rest)
        image_xz = None if args.no_xz else xz_bytes(img)
    except MemuError as e:
        print(f"error: {e.message}" + (f"\nhint: {e.hint}" if e.hint else ""), file=sys.stderr)
        return 1
    print(f"image {img.name}")
    if image_xz is not None and lean_xz is not None and rest_xz is not None:
        without = lean_xz + rest_xz
        print(f"  disk image, xz -6 (its data extents):  {_mb(image_xz)}  "
              f"({len(archives)} container archives inside, {_mb(archives_bytes)} as files)")
        print(f"  the OS without the archives, xz -6:    {_mb(without)}  "
              f"= {without / GOAL_BYTES:.2f}x the 250 MB goal, "
              f"{without / HAOS_BYTES:.2f}x HAOS's 347 MB")
        print(f"    /usr slot without archives:         {_mb(lean_xz)}")
        print(f"    UKI, verity hashes, signature:      {_mb(rest_xz)}")
    total = sum(dirs.values())
    print(f"\n/usr content: {_mb(total)} (files, uncompressed); largest directories:")
    for name, size in sorted(dirs.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {_mb(size)}  {size / total:5.1%}  {name}")
    if DPKG_STATUS.exists():
        packages = source_packages(DPKG_STATUS.read_text(errors="replace"))
        print(f"\nlargest Debian source packages (installed size, before RemoveFiles=; "
              f"{len(packages)} in all):")
        for name, size in sorted(packages.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {_mb(size)}  {name}")
    else:
        print(f"\n(no package sizes: {DPKG_STATUS} is missing; `just build` makes it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
