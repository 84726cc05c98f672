"""Write a Memu OS disk image to a whole disk and prove it landed: `just flash IMAGE DEVICE`
on a workstation, and the same code as ``memu-flash`` on a box later.

    python -m memu_ota.flash IMAGE DEVICE [--confirm NAME]

The target is checked first (:mod:`memu_ota.flash_target`: not the machine's own disk, not
mounted, not read-only, large enough, a whole disk). A disk the kernel does not call
removable (an internal drive; also a loop device) is written only after its name is typed,
or given as ``--confirm NAME`` by a script.

``.raw`` images are written as they are; ``.raw.xz`` and ``.raw.zst`` are streamed through
``xz -dc`` and ``zstd -dc``. The disk is opened with ``O_EXCL``, which the kernel refuses for
a disk that is mounted or held. The first MiB (protective MBR and GPT header) is zeroed
first and written last, after the decompressor said the image was whole, so an interrupted
write or a damaged image leaves a disk that no firmware boots and no tool takes for a
finished one. After ``fsync`` the disk's cached pages are dropped (``POSIX_FADV_DONTNEED``,
posix_fadvise(2)) and every written byte is read back and compared by SHA-256 with what was
written. Progress (bytes, throughput, time left) goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TextIO

from memu_common import MemuError, run
from memu_ota.flash_target import FlashRefused, Target, inspect

CHUNK = 4 << 20
#: Written last: the protective MBR, the GPT header and its partition entries.
HEAD = 1 << 20
DECOMPRESSORS = {".xz": ["xz", "-dc"], ".zst": ["zstd", "-dc"]}


def image_size(image: Path) -> int | None:
    """Bytes the image holds once decompressed: a ``.raw``'s size, an ``.xz``'s from its
    index (``xz --robot --list``, xz(1)), a ``.zst``'s from its frame header (``zstd -lv``,
    None when the frame does not record it).

    Raises:
        MemuError: the image is missing, or ``xz``/``zstd`` cannot read it.
    """
    if not image.is_file():
        raise MemuError(f"{image}: no such image", hint="build one with `just build`")
    if image.suffix == ".xz":
        try:
            out = run(["xz", "--robot", "--list", str(image)]).stdout
        except MemuError as e:
            raise MemuError(f"{image} is damaged or truncated: xz cannot read its index",
                            hint="download the image again") from e
        totals = next((line.split("\t") for line in out.splitlines()
                       if line.startswith("totals\t")), [])
        return int(totals[4]) if len(totals) > 4 else None
    if image.suffix == ".zst":
        try:
            out = run(["zstd", "-lv", str(image)]).stdout
        except MemuError as e:
            raise MemuError(f"{image} is damaged or truncated: zstd cannot read it",
                            hint="download the image again") from e
        m = re.search(r"Decompressed Size:.*\((\d+) B\)", out)
        return int(m[1]) if m else None
    return image.stat().st_size


@contextlib.contextmanager
def _stream(image: Path) -> Iterator[IO[bytes]]:
    """The image's decompressed bytes as a file to read from.

    Raises:
        MemuError: the decompressor failed (a damaged or truncated image).
    """
    argv = DECOMPRESSORS.get(image.suffix)
    if argv is None:
        with image.open("rb") as f:
            yield f
        return
    proc = subprocess.Popen([*argv, str(image)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        yield proc.stdout
    except BaseException:
        proc.kill()
        raise
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        code = proc.wait()
    if code != 0:
        raise MemuError(f"{image} cannot be decompressed: {err or f'exit status {code}'}",
                        hint="the image is damaged or truncated; download it again")


class Progress:
    """Prints ``written / total, throughput, time left`` on one line of ``out`` at most
    every ``every`` seconds (``total`` None: no time left)."""

    def __init__(self, what: str, total: int | None, out: TextIO | None = None,
                 every: float = 0.5) -> None:
        self.what, self.total, self.every = what, total, every
        self.out = out or sys.stderr
        self.start = self.last = time.monotonic()

    def line(self, done: int, now: float) -> str:
        """The progress line for ``done`` bytes at monotonic time ``now``."""
        rate = done / max(now - self.start, 1e-6)
        text = f"{self.what} {done / 2**20:,.0f} MiB"
        if self.total:
            left = (self.total - done) / rate if rate > 0 else 0
            text += (f" of {self.total / 2**20:,.0f} MiB ({100 * done / self.total:.0f} %), "
                     f"{rate / 2**20:.1f} MiB/s, {int(left) // 60}:{int(left) % 60:02d} left")
        else:
            text += f", {rate / 2**20:.1f} MiB/s"
        return text

    def update(self, done: int, final: bool = False) -> None:
        """Show ``done`` bytes (always when ``final``, which also ends the line)."""
        now = time.monotonic()
        if final or now - self.last >= self.every:
            self.last = now
            self.out.write("\r" + self.line(done, now) + ("\n" if final else ""))
            self.out.flush()


def write(image: Path, target: Target, total: int | None) -> tuple[str, int]:
    """Write ``image`` (decompressed) to ``target``, the first :data:`HEAD` bytes last, and
    fsync; return (SHA-256 hex of the bytes written, their count).

    Raises:
        MemuError: the disk cannot be opened exclusively, is too small, or a write failed.
    """
    try:
        fd = os.open(target.path, os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as e:
        raise FlashRefused(f"{target.path} cannot be opened for writing: {e.strerror}",
                           hint="something holds the disk (a mount, a RAID, a VM); "
                                "release it and try again") from e
    digest = hashlib.sha256()
    done = 0
    show = Progress("writing", total)
    try:
        # No partition table while the rest is written: a cut-off write leaves a disk that
        # nothing takes for a finished one.
        _write_all(fd, bytes(min(HEAD, target.size)))
        os.fsync(fd)
        with _stream(image) as src:  # a damaged image raises here, before the head is written
            head = src.read(HEAD)
            digest.update(head)
            done = len(head)
            while chunk := src.read(CHUNK):
                if done + len(chunk) > target.size:
                    raise MemuError(f"the image is larger than {target.describe()}",
                                    hint="use a larger disk")
                digest.update(chunk)
                _write_all(fd, chunk)
                done += len(chunk)
                show.update(done)
        if total is not None and done != total:
            raise MemuError(f"{image} gave {done} bytes, its header says {total}",
                            hint="the image is damaged or truncated; download it again")
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        _write_all(fd, head)
        os.fsync(fd)
        show.update(done, final=True)
    except OSError as e:
        raise MemuError(f"writing {target.path} failed at byte {done}: {e.strerror}",
                        hint="the disk may be failing or was unplugged; try another") from e
    finally:
        os.close(fd)
    return digest.hexdigest(), done


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def verify(target: Target, digest: str, size: int) -> None:
    """Read the first ``size`` bytes of ``target`` back, past the page cache, and compare
    their SHA-256 with ``digest``.

    Raises:
        MemuError: they differ, or the disk cannot be read.
    """
    read = hashlib.sha256()
    show = Progress("verifying", size)
    with open(target.path, "rb", buffering=0) as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        done = 0
        while done < size:
            chunk = f.read(min(CHUNK, size - done))
            if not chunk:
                break
            read.update(chunk)
            done += len(chunk)
            show.update(done)
    show.update(done, final=True)
    if done != size or read.hexdigest() != digest:
        raise MemuError(f"{target.path} does not hold what was written: the read-back "
                        f"differs (SHA-256 {read.hexdigest()[:16]}…, wrote {digest[:16]}…)",
                        hint="the disk or its adapter is faulty; do not boot from it, try "
                             "another")


def confirmed(target: Target, given: str | None, ask: TextIO | None = None) -> bool:
    """Whether writing ``target`` is confirmed: removable disks need nothing; others need
    their name (``sdb``) typed, or given as ``--confirm``."""
    if target.removable:
        return True
    if given is not None:
        return given in (target.name, str(target.path))
    sys.stderr.write(f"{target.describe()} is not a removable disk. Everything on it will be "
                     f"lost. Type its name ({target.name}) to go on: ")
    sys.stderr.flush()
    return (ask or sys.stdin).readline().strip() in (target.name, str(target.path))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 written and verified, 1 refused or failed,
    2 not confirmed)."""
    ap = argparse.ArgumentParser(prog="memu-flash", description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path, help=".raw, .raw.xz or .raw.zst")
    ap.add_argument("device", type=Path, help="the whole disk, e.g. /dev/sdb")
    ap.add_argument("--confirm", metavar="NAME",
                    help="the disk's name, for a script writing a non-removable disk")
    args = ap.parse_args(argv)
    try:
        total = image_size(args.image)
        target = inspect(args.device, total)
        if not confirmed(target, args.confirm):
            print(f"memu-flash: {target.path} not confirmed; nothing written", file=sys.stderr)
            return 2
        digest, size = write(args.image, target, total)
        verify(target, digest, size)
    except MemuError as e:
        print(f"memu-flash: {e.message}" + (f"\nhint: {e.hint}" if e.hint else ""),
              file=sys.stderr)
        return 1
    print(f"memu-flash: {args.image.name} written to {target.describe()} and verified "
          f"({size / 2**20:,.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
