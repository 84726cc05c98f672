"""Build a Memu OS image with mkosi: `just build` and `just test` call this.

    python -m memu_dev.build [--board n100] [--if-stale] [--clean]

Sets up what the build needs on the host (mkosi 25.3 from Debian trixie, binfmt for foreign
boards), then runs ``mkosi --profile=<board> --profile=<its boot chain> -f build`` and names
what came out.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from memu_common import MemuError, boards, run
from memu_dev import bootslot, hailo, paths, wheelhouse
from memu_dev.keys import build_keys
from memu_dev.paths import DEFAULT_BOARD, OUTPUT, REPO, image_path, mkosi_cmd

log = logging.getLogger("memu.build")

#: The partition definitions every board's image has (mkosi.conf's RepartDirectories=).
REPART_DIR = REPO / "image/repart"


def repart_dirs(board: str) -> list[Path]:
    """All partition definitions of ``board``'s image: :data:`REPART_DIR` and its boot
    chain's (``image/repart-<boot>``, added by ``mkosi.conf.d/45-boot-<boot>.conf``)."""
    return [REPART_DIR, REPO / f"image/repart-{boards.get(board).boot}"]
#: The hash-pinned PyPI wheels the OS itself needs (image/build/10-memu-python.build.chroot).
OS_WHEELS = REPO / "image/build/requirements.txt"
#: systemd-repart's words when a file system outgrows its fixed-size partition (systemd 257
#: of mkosi's tools tree, captured from a real run: tests/dev/test_build.py).
_NO_FIT = re.compile(r"Partition (\d+)'s contents \(([^)]+)\) don't fit in the partition "
                     r"\(([^)]+)\)")

#: What goes into an image; a change to any of these makes a built image stale.
IMAGE_INPUTS = ("mkosi.conf", "mkosi.conf.d", "mkosi.images", "mkosi.version", "image",
                "overlays",
                "pyproject.toml", "common", "agent", "firstboot", "ota", "intelligence")


def newest_input_mtime(paths: Iterable[str] = IMAGE_INPUTS) -> float:
    """The newest modification time (seconds since the epoch) among the image's inputs."""
    newest = 0.0
    for name in paths:
        p = REPO / name
        files = [p] if p.is_file() else (f for f in p.rglob("*") if f.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc" or ".egg-info" in str(f):
                continue
            newest = max(newest, f.stat().st_mtime)
    return newest


def is_stale(board: str, variant: str | None = None) -> bool:
    """True when the board's image (or its ``variant``'s) is missing or older than any of
    its inputs."""
    img = image_path(board, variant=variant)
    return not img.exists() or img.stat().st_mtime < newest_input_mtime()


def ensure_host(board: str) -> None:
    """Install or find what the build needs on this host. Idempotent.

    Raises:
        MemuError: a set-up step failed (the message says which).
    """
    if os.geteuid() != 0:
        raise MemuError("building an image needs root on this host",
                        hint="run `sudo just build`")
    run(["bash", str(REPO / "tools/setup-mkosi.sh")], capture=False,
        hint="is deb.debian.org reachable?")
    if boards.get(board).arch != "x86-64" and os.uname().machine == "x86_64":
        log.info("memu: %s is arm64; making sure binfmt emulation is set up", board)
        run(["bash", str(REPO / "tools/setup-binfmt.sh")], capture=False)


#: Profiles that make another image than the board's own, under their own output name
#: (``memu-os-<profile>_<version>_<arch>``: their drop-in's Output=).
VARIANTS = ("bare", "hailo")


def build(board: str, *, clean: bool = False, version: str | None = None,
          extra_trees: Sequence[Path] = (), profiles: Sequence[str] = (),
          hailo_settings: hailo.Settings | None = None, variant: str | None = None) -> Path:
    """Build the image for ``board``; return the raw disk image's path.

    Args:
        board: a key of :data:`memu_common.boards.BOARDS`.
        clean: also rebuild mkosi's cached layers and tools tree (``-ff``).
        version: build this version instead of mkosi.version's (test and release builds).
        extra_trees: more file trees to copy into the image (test builds only).
        profiles: more mkosi profiles (e.g. "bare" for the boot benchmark's baseline); one
            of :data:`VARIANTS` names the output.
        hailo_settings: build the hailo option (:mod:`memu_dev.hailo`) with this driver
            source and firmware.
        variant: name the output ``memu-os-<variant>_…`` (test builds that must not replace
            an image an operator built); by default a profile of :data:`VARIANTS` names it.

    Raises:
        MemuError: a key is missing, the hailo option's settings are wrong (before mkosi
            runs), or mkosi failed (its output went to the terminal; when
            /usr outgrew its slot, the error says so: :func:`slot_overflow`).
    """
    OUTPUT.mkdir(exist_ok=True)
    (REPO / "mkosi.cache").mkdir(exist_ok=True)
    environment: dict[str, str] = {}
    if hailo_settings is not None:
        environment |= hailo.stage(hailo_settings)
        profiles = [*profiles, "hailo"]
    named = variant is not None
    variant = variant or next((p for p in profiles if p in VARIANTS), None)
    run([sys.executable, "-m", "memu_dev.containers", board], cwd=REPO / "tools", capture=False)
    # The OS's own PyPI wheels (pyinfra), hash-pinned, fetched here: the build is offline.
    wheelhouse.fetch(OS_WHEELS, "os", boards.get(board).arch)
    keys = build_keys()
    force = ["-ff"] if clean else ["-f"]
    # Split partitions carry their UUID in the name; drop the previous build's so a release
    # of this version picks exactly this build's files.
    for old in OUTPUT.glob(f"{image_path(board, version, variant).stem}.usr*.raw"):
        old.unlink()
    # The board's profile and its boot chain's (memu_common.boards: the drop-ins and overlays
    # of systemd-boot or tryboot match the backend's name, so the table says it once).
    args = [f"--profile={p}" for p in (board, boards.get(board).boot, *profiles)]
    # The architecture on the command line, not only in the board's drop-in: mkosi.conf's
    # Output=%i_%v_%a expands %a before a drop-in could change it.
    args.append(f"--architecture={boards.get(board).arch}")
    args += [f"--verity-key={keys.verity_key}",
            f"--verity-certificate={keys.verity_cert}", f"--extra-tree={keys.pubring_tree}"]
    args += [f"--extra-tree={t}" for t in extra_trees]
    args += [f"--environment={k}={v}" for k, v in environment.items()]
    if named:
        args.append(f"--output={image_path(board, version, variant).stem}")
    if version:
        args.append(f"--image-version={version}")
    log.info("memu: building the %s image %s with mkosi (first build: ~5 min, then ~1-2 min)",
             board, version or "")
    status, tail = _run_shown([*mkosi_cmd(), *args, *force, "build"], cwd=REPO)
    if status != 0:
        # Its last lines go into the error too: under pytest (and in CI's excerpt) the output
        # is captured far from the error, and mkosi says its reason last.
        last = "\n".join(f"  | {line}" for line in tail[-12:])
        raise slot_overflow(tail, repart_dirs(board)) or MemuError(
            f"mkosi failed (exit status {status}); it ended with:\n{last}\n",
            hint="if packages changed since the last build, try `just build-clean`")
    img = image_path(board, version, variant)
    if not img.exists():
        raise MemuError(f"mkosi finished but {img} is missing",
                        hint="check Output= in mkosi.conf")
    if boards.get(board).boot == "tryboot":
        # No boot loader in mkosi for the Pi: its boot slot is made from mkosi's outputs.
        try:
            summary = json.loads(run([*mkosi_cmd(), *args, "--json", "summary"],
                                     cwd=REPO).stdout)
            bootslot.assemble(img, " ".join(summary["Images"][-1]["KernelCommandLine"]))
        except BaseException:
            # mkosi's manifest stamps a finished build (ensure_built); this one is not.
            img.with_suffix(".manifest").unlink(missing_ok=True)
            raise
    return img


def _run_shown(argv: Sequence[str], cwd: Path) -> tuple[int, list[str]]:
    """Run ``argv`` with its output on our stdout as it comes; (exit status, last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=300)
    with subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line.rstrip("\n"))
    return proc.returncode, list(tail)


def slot_overflow(output: Iterable[str], definitions: Sequence[Path]) -> MemuError | None:
    """The error to show when systemd-repart's ``output`` says a file system outgrew its
    partition (None when it does not): which partition (by its definition in the
    directories ``definitions``, numbered as repart numbers them: file names in order), how
    big its content is and what to do."""
    for line in output:
        m = _NO_FIT.search(line)
        if not m:
            continue
        index, content, size = int(m[1]), m[2], m[3]
        files = sorted((p.name, p) for d in definitions for p in d.glob("*.conf"))
        if index >= len(files):
            return MemuError(f"partition {index}: {content} of files do not fit its "
                             f"partition ({size})", hint="see image/repart*/")
        name, path = files[index]
        shown = f"{path.parent.name}/{name}"
        if re.search(r"^Type=usr$", path.read_text(), re.MULTILINE):
            return MemuError(
                f"the OS does not fit its /usr slot: {content} of files for {size} "
                f"({shown})",
                hint="make the OS smaller: an image too big for the slot belongs in Docker's "
                     "store (where = \"store\" in image/containers.toml); a larger slot "
                     "means raising SizeMinBytes/SizeMaxBytes of both slots in image/repart "
                     "and overlays/common/usr/lib/repart.d together, and boxes already "
                     "installed keep their old partition sizes")
        return MemuError(f"{name}: {content} of files do not fit its partition ({size})",
                         hint=f"see {shown}")
    return None


def ensure_built(version: str, extra_trees: Sequence[Path] = (), board: str = DEFAULT_BOARD
                 ) -> Path:
    """Build ``version`` (with ``extra_trees``) when its package manifest is missing or older
    than its inputs or trees; return the manifest (``<stem>.manifest``, which every board's
    build writes), which stands for the build's split artifacts. Used for test and benchmark
    builds, which need only what a release carries.

    A version other than ``mkosi.version``'s is a trial: its combined disk image (a second
    copy of /usr, 0.75 GB on disk) is deleted after the build, since only a release is made of
    it; a test run builds four such versions."""
    img = image_path(board, version)
    manifest = img.with_suffix(".manifest")
    newest = max([newest_input_mtime()] + [f.stat().st_mtime for t in extra_trees
                                           for f in t.rglob("*")])
    if not manifest.exists() or manifest.stat().st_mtime < newest:
        ensure_host(board)
        build(board, version=version, extra_trees=extra_trees)
        if version != paths.version():
            img.unlink()
            img.with_suffix("").unlink(missing_ok=True)  # mkosi's symlink to it
    return manifest


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(boards.BOARDS))
    ap.add_argument("--if-stale", action="store_true", help="build only when inputs changed")
    ap.add_argument("--clean", action="store_true", help="also rebuild cached layers (-ff)")
    ap.add_argument("--version", default=None, help="override mkosi.version (test builds)")
    ap.add_argument("--extra-tree", action="append", default=[], type=Path,
                    help="copy this tree into the image too (test builds)")
    ap.add_argument("--hailo", action=argparse.BooleanOptionalAction, default=None,
                    help="with the Hailo-8 driver and firmware (default: MEMU_HAILO=1, except "
                         "with --if-stale, which keeps the image the tests boot; the paths "
                         "come from MEMU_HAILO_SRC and MEMU_HAILO_FW)")
    args = ap.parse_args(argv)
    with_hailo = args.hailo if args.hailo is not None else (
        hailo.enabled() and not args.if_stale)
    try:
        variant = "hailo" if with_hailo else None
        if args.if_stale and not args.version and not is_stale(args.board, variant):
            log.info("memu: %s is up to date", image_path(args.board, variant=variant).name)
            return 0
        ensure_host(args.board)
        img = build(args.board, clean=args.clean, version=args.version,
                    extra_trees=args.extra_tree,
                    hailo_settings=hailo.Settings.from_env() if with_hailo else None)
    except MemuError as e:
        print(f"memu: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"memu: hint: {e.hint}", file=sys.stderr)
        return 1
    outputs = sorted(p.name for p in OUTPUT.glob(f"{img.stem}*") if p.is_file())
    log.info("memu: built %s\n  %s", board_label(args.board), "\n  ".join(outputs))
    return 0


def board_label(board: str) -> str:
    """A readable name for a board."""
    return {"n100": "the N100 image (x86-64)", "pi5": "the Raspberry Pi 5 image (arm64)"}[board]


if __name__ == "__main__":
    sys.exit(main())
