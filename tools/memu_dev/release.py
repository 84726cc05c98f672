"""`just release VERSION CHANNEL`: turn a build into a release channel directory.

    python -m memu_dev.release VERSION CHANNEL [--root DIR] [--board n100]

A channel is a plain directory that any HTTP(S) server or CDN can serve, in the format
systemd-sysupdate reads (sysupdate.d(5)): the artifacts, ``SHA256SUMS`` listing every file,
and a detached OpenPGP signature ``SHA256SUMS.gpg`` made with the release key
(tools/memu_dev/keys.py). Several versions coexist in one channel; devices take the newest.

Artifacts of version V for an x86-64 board (names match overlays/.../sysupdate.d):
``memu-os_V_x86-64.usr.UUID.raw.xz``, ``.usr-verity.UUID.raw.xz``,
``.usr-verity-sig.UUID.raw.xz`` (the slot's three partitions as mkosi split them out, each
named with its GPT partition UUID) and ``memu-os_V_x86-64.efi`` (the UKI).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from memu_common import MemuError, run
from memu_dev.keys import build_keys
from memu_dev.paths import BOARD_ARCH, DEFAULT_BOARD, OUTPUT

log = logging.getLogger("memu.release")

CHANNELS = ("stable", "beta")
PARTITIONS = ("usr", "usr-verity", "usr-verity-sig")


def artifacts(version: str, board: str = DEFAULT_BOARD) -> dict[str, Path]:
    """The build outputs a release of ``version`` needs: release name -> built file.

    Raises:
        MemuError: one is missing (the version was not built, or not with split partitions).
    """
    stem = f"memu-os_{version}_{BOARD_ARCH[board]}"
    found: dict[str, Path] = {}
    missing: list[str] = []
    for part in PARTITIONS:
        # mkosi names split partitions <output>.<part>.<partition UUID>.raw; sysupdate sets the
        # slot's partition UUID from the name (@u), which is how the initrd finds the verity
        # data and hash partitions of the UKI's usrhash=.
        matches = sorted(OUTPUT.glob(f"{stem}.{part}.*.raw"), key=lambda p: p.stat().st_mtime)
        if not matches:
            missing.append(f"{stem}.{part}.<uuid>.raw")
            continue
        src = matches[-1]
        found[src.name + ".xz"] = src
    uki = OUTPUT / f"{stem}.efi"
    if not uki.exists():
        missing.append(uki.name)
    found[uki.name] = uki
    if missing:
        raise MemuError(f"build outputs for {version} are missing: {', '.join(missing)}",
                        hint=f"build it first: MEMU_VERSION={version} just build, "
                             "or `python -m memu_dev.build --version VERSION`")
    return found


def compressed(src: Path) -> Path:
    """``src`` compressed with xz, cached in mkosi.output/release-cache (recompressed only when
    ``src`` is newer). xz because Debian's systemd-pull 257 decompresses xz but not zstd.

    Raises:
        MemuError: xz failed.
    """
    cache = OUTPUT / "release-cache"
    cache.mkdir(exist_ok=True)
    out = cache / (src.name + ".xz")
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        tmp = out.with_suffix(".tmp")
        with tmp.open("wb") as f:
            subprocess.run(["xz", "-T0", "-1", "-c", str(src)], stdout=f, check=False)
        if tmp.stat().st_size == 0:
            raise MemuError(f"xz could not compress {src}", hint="is xz-utils installed?")
        os.replace(tmp, out)
    return out


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_sums(channel_dir: Path) -> Path:
    """(Re)write ``SHA256SUMS`` for every artifact in the channel (sha256sum(1) format)."""
    names = sorted(p.name for p in channel_dir.iterdir()
                   if p.is_file() and not p.name.startswith("SHA256SUMS"))
    sums = channel_dir / "SHA256SUMS"
    tmp = sums.with_suffix(".tmp")
    tmp.write_text("".join(f"{sha256(channel_dir / n)}  {n}\n" for n in names))
    os.replace(tmp, sums)
    return sums


def sign(sums: Path, gnupghome: Path) -> Path:
    """Write the detached binary signature ``SHA256SUMS.gpg`` next to ``sums``."""
    sig = sums.with_name("SHA256SUMS.gpg")
    run(["gpg", "--homedir", gnupghome, "--batch", "--yes", "--pinentry-mode", "loopback",
         "--passphrase", "", "--detach-sign", "--output", sig, sums],
        hint="is the release key's GnuPG home right (MEMU_RELEASE_GNUPGHOME)?")
    return sig


def release(version: str, channel: str, root: Path, board: str = DEFAULT_BOARD) -> Path:
    """Add ``version`` to ``root/channel`` and re-sign the channel; return the channel dir.

    Raises:
        MemuError: unknown channel, missing build outputs, or a tool failed.
    """
    if channel not in CHANNELS:
        raise MemuError(f"unknown channel {channel!r}", hint=f"use one of {', '.join(CHANNELS)}")
    files = artifacts(version, board)
    keys = build_keys()
    channel_dir = root / channel
    channel_dir.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        dest = channel_dir / name
        shutil.copyfile(compressed(src) if name.endswith(".xz") else src, dest)
        log.info("memu: %s (%d bytes)", dest, dest.stat().st_size)
    sign(write_sums(channel_dir), keys.gnupghome)
    return channel_dir


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description="make or extend a release channel directory")
    ap.add_argument("version")
    ap.add_argument("channel", choices=CHANNELS)
    ap.add_argument("--root", type=Path, default=OUTPUT / "channels")
    ap.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(BOARD_ARCH))
    args = ap.parse_args(argv)
    try:
        d = release(args.version, args.channel, args.root, args.board)
    except MemuError as e:
        print(f"memu: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"memu: hint: {e.hint}", file=sys.stderr)
        return 1
    print(f"memu: channel {args.channel} in {d} now offers: "
          + ", ".join(sorted({p.name.split('_')[1] for p in d.glob('memu-os_*.efi')})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
