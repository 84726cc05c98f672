"""`just release VERSION CHANNEL`: turn a build into a release channel directory.

    python -m memu_dev.release VERSION CHANNEL [--root DIR] [--board n100] [--hailo]

A channel is a plain directory that any HTTP(S) server or CDN can serve, in the format
systemd-sysupdate reads (sysupdate.d(5)): the artifacts, ``SHA256SUMS`` listing every file,
and a detached OpenPGP signature ``SHA256SUMS.gpg`` made with the release key
(tools/memu_dev/keys.py). Several versions coexist in one channel; devices take the newest.

Artifacts of version V for an x86-64 board (names match overlays/.../sysupdate.d):
``memu-os_V_x86-64.usr.UUID.raw.gz``, ``.usr-verity.UUID.raw.gz``,
``.usr-verity-sig.UUID.raw.gz`` (the slot's three partitions as mkosi split them out, each
named with its GPT partition UUID), ``memu-os_V_x86-64.efi`` (the UKI) and
``memu-os_V_x86-64.manifest`` (the build's package set, mkosi's JSON manifest; not fetched by
devices). For delta updates (memu_ota.delta), also each slot artifact uncompressed
(``….usr.UUID.img``, fetched by byte ranges) and a block index of it and of the UKI
(``….usr.UUID.bix``, ``memu-os_V_x86-64.uki.bix``); no sysupdate transfer matches these
names, not even by their beginning (see memu_ota.delta).

A build with the hailo option (``MEMU_HAILO=1``, or ``--hailo``) is released under its own
name, ``memu-os-hailo_V_…``, into the same channel: a box built with the option fetches only
those (its os-release says ``VARIANT_ID=hailo``; memu_common.osrelease), so an update keeps
its driver, and a plain box never sees them.

gzip, not xz: the erofs ``/usr`` is zstd-compressed inside already, so xz saves only ~9 % of
the bytes (372 vs 410 MB for 0.2.0) while a device unpacks gzip twice as fast (systemd-pull in
the TCG guest: 22.7 s against 50.4 s for the same slot). Debian's systemd-pull 257 unpacks gzip
and xz but not zstd. The transfers accept ``.raw.xz`` too (an operator short of bandwidth may
publish xz).

The ``/usr`` and verity artifacts are cut to what the slot really holds: the erofs
filesystem's blocks (which must be exactly the blocks dm-verity covers) and the verity
superblock plus hash tree. The partitions are 2 GiB and 64 MiB so that later releases fit;
shipping and writing their empty tails would cost every device 1.6 GiB of writes per update.
The root hash does not change (it covers only those blocks); the bytes past the end in the
device's slot are never read.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from memu_common import MemuError, boards, osrelease, run
from memu_common.files import sha256_file
from memu_dev import hailo
from memu_dev.keys import build_keys
from memu_dev.paths import DEFAULT_BOARD, OUTPUT
from memu_ota.blockindex import BlockIndex
from memu_ota.delta import PLAIN_SUFFIX, index_name

log = logging.getLogger("memu.release")

CHANNELS = ("stable", "beta")
PARTITIONS = ("usr", "usr-verity", "usr-verity-sig")
#: What each boot chain (memu_common.boards) adds to a release: split partitions, and
#: whole output files by suffix. systemd-boot: the UKI; tryboot: the boot slot, a FAT image
#: written whole into the other boot partition (tools/memu_dev/bootslot.py).
BOOT_ARTIFACTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "systemd-boot": ((), (".efi",)),
    "tryboot": (("boot",), ()),
}
#: How slot artifacts are compressed (see the module docstring for why gzip).
COMPRESSED_SUFFIX = ".gz"


def artifacts(version: str, board: str = DEFAULT_BOARD,
              variant: str | None = None) -> dict[str, Path]:
    """The build outputs a release of ``version`` needs: release name -> built file. A
    ``variant`` ("hailo") has artifacts of its own name (``memu-os-hailo_V_…``: see
    memu_common.osrelease), which only boxes of that variant fetch.

    Raises:
        MemuError: one is missing (the version was not built, or not with split partitions).
    """
    stem = osrelease.artifact_stem(version, boards.get(board).arch, variant)
    boot_parts, boot_files = BOOT_ARTIFACTS[boards.get(board).boot]
    found: dict[str, Path] = {}
    missing: list[str] = []
    for part in (*PARTITIONS, *boot_parts):
        # mkosi names split partitions <output>.<part>.<partition UUID>.raw; sysupdate sets the
        # slot's partition UUID from the name (@u), which is how the initrd finds the verity
        # data and hash partitions of the UKI's usrhash=.
        matches = sorted(OUTPUT.glob(f"{stem}.{part}.*.raw"), key=lambda p: p.stat().st_mtime)
        if not matches:
            missing.append(f"{stem}.{part}.<uuid>.raw")
            continue
        src = matches[-1]
        found[src.name + COMPRESSED_SUFFIX] = src
    # The UKI (N100), and mkosi's manifest of the build (ManifestFormat=json: every package's
    # name and version), so that anyone can see, and a rebuild can install, a release's exact
    # package set. Covered by the signed SHA256SUMS like the rest; sysupdate's patterns do
    # not match it, so devices never download it.
    for extra in (*(OUTPUT / f"{stem}{suffix}" for suffix in boot_files),
                  OUTPUT / f"{stem}.manifest"):
        if not extra.exists():
            missing.append(extra.name)
        found[extra.name] = extra
    if missing:
        flag = " --hailo" if variant == "hailo" else ""
        raise MemuError(f"build outputs for {version} are missing: {', '.join(missing)}",
                        hint=f"build it first: `python -m memu_dev.build --version "
                             f"{version}{flag}`")
    return found


EROFS_MAGIC = 0xE0F5E1E2
VERITY_SIGNATURE = b"verity\0\0"


def erofs_bytes(usr: Path) -> int:
    """Size in bytes of the erofs filesystem at the start of ``usr``: its superblock (at byte
    1024; linux ``fs/erofs/erofs_fs.h``) gives the block size (``blkszbits`` at +12) and
    the block count (``blocks`` at +36).

    Raises:
        MemuError: ``usr`` does not start with an erofs filesystem.
    """
    with usr.open("rb") as f:
        f.seek(1024)
        sb = f.read(40)
    if len(sb) < 40 or struct.unpack_from("<I", sb, 0)[0] != EROFS_MAGIC:
        raise MemuError(f"{usr.name} holds no erofs filesystem", hint="rebuild the image")
    return int(struct.unpack_from("<I", sb, 36)[0]) << sb[12]


def verity_layout(verity: Path) -> tuple[int, int]:
    """What a dm-verity hash partition covers and how long it is, from its superblock
    (veritysetup(8) "on-disk format": ``data_block_size`` at +64, ``hash_block_size`` at
    +68, ``data_blocks`` at +72, hash name at +32; the hash tree follows the superblock's
    block, one level after another, down to a single block).

    Returns:
        (bytes of data covered, bytes of superblock + hash tree).

    Raises:
        MemuError: no verity superblock (or one we do not understand).
    """
    with verity.open("rb") as f:
        sb = f.read(512)
    if len(sb) < 512 or sb[:8] != VERITY_SIGNATURE:
        raise MemuError(f"{verity.name} holds no dm-verity superblock", hint="rebuild the image")
    algorithm = sb[32:64].rstrip(b"\0").decode("ascii", "replace")
    digest = {"sha256": 32, "sha512": 64, "sha1": 20}.get(algorithm)
    if digest is None:
        raise MemuError(f"{verity.name}: unknown verity hash {algorithm!r}")
    data_block, hash_block, data_blocks = struct.unpack_from("<IIQ", sb, 64)
    per_block = hash_block // (1 << math.ceil(math.log2(digest)))  # digests padded to 2^n
    hash_blocks, level = 0, data_blocks
    while True:
        level = math.ceil(level / per_block)
        hash_blocks += level
        if level <= 1:
            break
    return data_blocks * data_block, hash_block + hash_blocks * hash_block


def partition_of(src: Path) -> str:
    """Which slot partition a split artifact ``<stem>.<partition>.<uuid>.raw`` is."""
    return src.name.rsplit(".", 3)[1]


def used_bytes(src: Path, slot: dict[str, Path]) -> int | None:
    """How much of the split partition ``src`` a slot needs, or None to ship it whole (the
    signature partition: 16 KiB). ``slot`` maps partition names to the slot's artifacts.

    Raises:
        MemuError: the filesystem is not exactly what verity covers, or bytes past the cut
            are not zero (the cut would lose data).
    """
    part = partition_of(src)
    if part == "usr-verity":
        _, size = verity_layout(src)
    elif part == "usr":
        size = erofs_bytes(src)
        covered, _ = verity_layout(slot["usr-verity"])
        if covered != size:
            raise MemuError(f"{src.name}: the erofs filesystem is {size} bytes but dm-verity "
                            f"covers {covered}", hint="rebuild the image; this is a build bug")
    else:
        return None
    with src.open("rb") as f:
        f.seek(size)
        for block in iter(lambda: f.read(1 << 22), b""):
            if block.count(0) != len(block):
                raise MemuError(f"{src.name} has data past its first {size} bytes",
                                hint="the release would cut it off; this is a build bug")
    return size


def cuts(files: dict[str, Path]) -> dict[str, int | None]:
    """For each slot artifact of :func:`artifacts`' ``files`` (release name -> built file),
    the bytes the release keeps of it (:func:`used_bytes`; None: all of it).

    Raises:
        MemuError: as :func:`used_bytes`.
    """
    slot = {name: src for name, src in files.items() if name.endswith(COMPRESSED_SUFFIX)}
    by_part = {partition_of(src): src for src in slot.values()}
    return {name: used_bytes(src, by_part) for name, src in slot.items()}


def compressed(src: Path, size: int | None = None) -> Path:
    """The first ``size`` bytes of ``src`` (all of it when None) compressed with gzip (no
    name or time stamp in the header: the same input gives the same bytes), cached in
    mkosi.output/release-cache (recompressed only when ``src`` is newer).

    Raises:
        MemuError: gzip failed.
    """
    cache = OUTPUT / "release-cache"
    cache.mkdir(exist_ok=True)
    out = cache / (src.name + COMPRESSED_SUFFIX)
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        tmp = out.with_suffix(".tmp")
        with tmp.open("wb") as f, src.open("rb") as data:
            gz = subprocess.Popen(["gzip", "-6", "-n", "-c"], stdin=subprocess.PIPE, stdout=f)
            assert gz.stdin is not None
            left = src.stat().st_size if size is None else size
            with gz.stdin:
                while left > 0:
                    block = data.read(min(left, 1 << 22))
                    if not block:
                        break
                    gz.stdin.write(block)
                    left -= len(block)
            gz.wait()
        if gz.returncode != 0 or tmp.stat().st_size == 0:
            raise MemuError(f"gzip could not compress {src}", hint="is gzip installed?")
        os.replace(tmp, out)
    return out


def copy_prefix(src: Path, dest: Path, size: int | None) -> None:
    """Copy the first ``size`` bytes of ``src`` (all of it when None) to ``dest``."""
    left = src.stat().st_size if size is None else size
    with src.open("rb") as i, dest.open("wb") as o:
        while left > 0:
            copied = os.sendfile(o.fileno(), i.fileno(), None, min(left, 1 << 30))
            if copied == 0:
                raise MemuError(f"{src} ends {left} bytes early", hint="build the version again")
            left -= copied


def write_index(artifact: Path) -> Path:
    """Write the block index of ``artifact`` (memu_ota.blockindex) beside it, named by
    :func:`memu_ota.delta.index_name`."""
    out = artifact.with_name(index_name(artifact.name))
    out.write_bytes(BlockIndex.of_file(artifact).to_bytes())
    log.info("memu: %s (%d bytes)", out, out.stat().st_size)
    return out


def write_sums(channel_dir: Path) -> Path:
    """(Re)write ``SHA256SUMS`` for every artifact in the channel (sha256sum(1) format)."""
    names = sorted(p.name for p in channel_dir.iterdir()
                   if p.is_file() and not p.name.startswith("SHA256SUMS"))
    sums = channel_dir / "SHA256SUMS"
    tmp = sums.with_suffix(".tmp")
    tmp.write_text("".join(f"{sha256_file(channel_dir / n)}  {n}\n" for n in names))
    os.replace(tmp, sums)
    return sums


def sign(sums: Path, gnupghome: Path) -> Path:
    """Write the detached binary signature ``SHA256SUMS.gpg`` next to ``sums``."""
    sig = sums.with_name("SHA256SUMS.gpg")
    run(["gpg", "--homedir", gnupghome, "--batch", "--yes", "--pinentry-mode", "loopback",
         "--passphrase", "", "--detach-sign", "--output", sig, sums],
        hint="is the release key's GnuPG home right (MEMU_RELEASE_GNUPGHOME)?")
    return sig


def release(version: str, channel: str, root: Path, board: str = DEFAULT_BOARD, *,
            delta: bool = True, variant: str | None = None) -> Path:
    """Add ``version`` (of ``variant``'s build, e.g. "hailo"; None: the plain image) to
    ``root/channel`` and re-sign the channel; return the channel dir.

    With ``delta`` (the default), the release also carries what a box needs to update by
    delta (memu_ota.delta): each slot artifact uncompressed, cut as the slot holds it
    (``….usr.UUID.img``), and a block index of it and of the UKI (memu_ota.delta.index_name). Test
    channels that only exercise full updates leave them out (0.7 GB and seconds per version).

    Raises:
        MemuError: unknown channel, missing build outputs, or a tool failed.
    """
    if channel not in CHANNELS:
        raise MemuError(f"unknown channel {channel!r}", hint=f"use one of {', '.join(CHANNELS)}")
    files = artifacts(version, board, variant)
    sizes = cuts(files)
    keys = build_keys()
    channel_dir = root / channel
    channel_dir.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        dest = channel_dir / name
        if name in sizes:
            size = sizes[name]
            shutil.copyfile(compressed(src, size), dest)
            log.info("memu: %s (%d bytes; %s of the %d-byte partition)", dest,
                     dest.stat().st_size, "all" if size is None else f"first {size}",
                     src.stat().st_size)
            if delta:
                plain = channel_dir / (name.removesuffix(".raw" + COMPRESSED_SUFFIX)
                                       + PLAIN_SUFFIX)
                copy_prefix(src, plain, size)
                write_index(plain)
        else:
            shutil.copyfile(src, dest)
            log.info("memu: %s (%d bytes)", dest, dest.stat().st_size)
            if delta and name.endswith(".efi"):
                write_index(dest)
    sign(write_sums(channel_dir), keys.gnupghome)
    return channel_dir


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description="make or extend a release channel directory")
    ap.add_argument("version")
    ap.add_argument("channel", choices=CHANNELS)
    ap.add_argument("--root", type=Path, default=OUTPUT / "channels")
    ap.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(boards.BOARDS))
    ap.add_argument("--hailo", action=argparse.BooleanOptionalAction, default=None,
                    help="release the hailo build (default: MEMU_HAILO=1, as `just build`)")
    args = ap.parse_args(argv)
    with_hailo = args.hailo if args.hailo is not None else hailo.enabled()
    try:
        d = release(args.version, args.channel, args.root, args.board,
                    variant="hailo" if with_hailo else None)
    except MemuError as e:
        print(f"memu: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"memu: hint: {e.hint}", file=sys.stderr)
        return 1
    print(f"memu: channel {args.channel} in {d} now offers: {offers(d)}")
    return 0


def offers(channel_dir: Path) -> str:
    """What a channel directory holds, by image name, architecture and version, from the
    manifests every release carries: ``memu-os x86-64 0.1.0 0.2.0; memu-os-hailo …``."""
    found: dict[str, set[str]] = {}
    for manifest in channel_dir.glob(f"{osrelease.IMAGE_ID}*_*_*.manifest"):
        name, version, arch = manifest.name.removesuffix(".manifest").split("_", 2)
        found.setdefault(f"{name} {arch}", set()).add(version)
    return "; ".join(f"{key} {' '.join(sorted(versions))}"
                     for key, versions in sorted(found.items())) or "nothing"


if __name__ == "__main__":
    sys.exit(main())
