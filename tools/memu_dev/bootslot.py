"""The Raspberry Pi 5's boot slot, assembled after mkosi (tryboot boot chain).

The Pi's firmware boots from a FAT partition: ``config.txt``, ``cmdline.txt``, the kernel
(gzipped), the initrd and the device trees (raspberrypi/documentation, config_txt/boot.adoc).
mkosi 25.3 has no such boot loader, and the command line needs ``usrhash=``, which exists only
once systemd-repart has made ``/usr``'s verity tree. So the build runs mkosi with the kernel,
the initrd and the device trees as outputs (``SplitArtifacts=kernel,initrd`` and
``image/build/40-tryboot-dtbs.finalize``), then this module makes the slot's FAT image (also
the release artifact sysupdate writes into the other slot) and writes it into partition 2 of
the disk image.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from memu_common import MemuError, run
from memu_common.files import sha256_file
from memu_dev.paths import REPO, source_date_epoch
from memu_ota.boot import gpt

CONFIG_TXT = REPO / "image/tryboot/config.txt"
#: Boot slot A's partition number (image/repart-tryboot/01-boot-a.conf).
SLOT_A = 2
#: The Pi 5's device trees, both steppings (the D0 boards' has the ``-d-``).
DTBS = ("bcm2712-rpi-5-b.dtb", "bcm2712-d-rpi-5-b.dtb")


def root_hash(verity_sig: Path) -> str:
    """``/usr``'s dm-verity root hash (hex), from its verity signature partition: a JSON
    object ``{"rootHash": …, "signature": …}`` padded with NUL bytes (systemd's
    Discoverable Partitions Specification, "verity signature" partitions).

    Raises:
        MemuError: the partition does not hold such an object.
    """
    raw = verity_sig.read_bytes().rstrip(b"\0")
    try:
        value = json.loads(raw)["rootHash"]
    except (ValueError, KeyError, TypeError):
        raise MemuError(f"{verity_sig} is not a verity signature partition") from None
    if not isinstance(value, str) or len(value) != 64:
        raise MemuError(f"{verity_sig}: its root hash is not a SHA-256 in hex")
    return value


def cmdline(base: str, usrhash: str, root_uuid: str) -> str:
    """The boot slot's ``cmdline.txt`` (one line): the image's kernel command line, its root
    partition by UUID (without UEFI, systemd cannot find the root by itself) and ``usrhash=``,
    from which systemd sets up and mounts the verity-protected ``/usr``."""
    return f"root=PARTUUID={root_uuid} usrhash={usrhash} {base}".strip() + "\n"


def make_fat(out: Path, files: Mapping[str, bytes], size: int, label: str,
             volume_id: str) -> Path:
    """Write a FAT file system image ``out`` of ``size`` bytes holding ``files`` (name →
    contents) in its root: mkfs.vfat with 512-byte sectors (what the Pi firmware reads) and
    a fixed volume ID and label, then mtools' mcopy, so nothing is mounted.

    Raises:
        MemuError: the files do not fit, or a tool failed.
    """
    if sum(len(v) for v in files.values()) > size * 0.95:
        raise MemuError(f"{out.name}: the boot files ({sum(map(len, files.values()))} bytes) "
                        f"do not fit its {size} bytes",
                        hint="make the initrd smaller, or the boot slots bigger "
                             "(image/repart-tryboot)")
    out.unlink(missing_ok=True)
    # --invariant: no time or random value in the file system's own structures; the files'
    # times are the build's SOURCE_DATE_EPOCH (mcopy -m keeps them), so one build gives one
    # image (tools/memu_dev/reproducible.py).
    run(["mkfs.vfat", "--invariant", "-C", "-S", "512", "-n", label, "-i", volume_id,
         str(out), str(size // 1024)])
    epoch = source_date_epoch()
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
            os.utime(Path(tmp) / name, (epoch, epoch))
        run(["mcopy", "-i", str(out), "-m", *(str(Path(tmp) / n) for n in files), "::"],
            env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    return out


def boot_files(kernel: Path, initrd: Path, dtb_dir: Path, cmdline_txt: str) -> dict[str, bytes]:
    """What goes into a boot slot: config.txt, cmdline.txt, ``vmlinuz.gz`` (the kernel,
    gzipped with no name or time in its header, so one build gives one file), ``initrd.img``
    and the device trees.

    Raises:
        MemuError: a device tree is missing.
    """
    files = {"config.txt": CONFIG_TXT.read_bytes(), "cmdline.txt": cmdline_txt.encode(),
             "vmlinuz.gz": gzip.compress(kernel.read_bytes(), compresslevel=9, mtime=0),
             "initrd.img": initrd.read_bytes()}
    for name in DTBS:
        if not (dtb_dir / name).is_file():
            raise MemuError(f"{dtb_dir / name} is missing",
                            hint="the tryboot profile's finalize script hands them out")
        files[name] = (dtb_dir / name).read_bytes()
    return files


def splice(disk: Path, number: int, image: Path) -> None:
    """Write the file system image ``image`` over partition ``number`` of ``disk`` (in
    place; the rest of the partition is zeroed).

    Raises:
        MemuError: there is no such partition, or the image is bigger than it.
    """
    part = gpt.entries(disk).get(number)
    if part is None:
        raise MemuError(f"{disk} has no partition {number}")
    if image.stat().st_size > part.size:
        raise MemuError(f"{image.name} ({image.stat().st_size} bytes) is bigger than "
                        f"partition {number} ({part.size} bytes)")
    with disk.open("r+b") as dst, image.open("rb") as src:
        dst.seek(part.start)
        shutil.copyfileobj(src, dst, 1 << 20)
        left = part.size - image.stat().st_size
        while left:
            n = min(left, 1 << 20)
            dst.write(bytes(n))
            left -= n


def assemble(image: Path, base_cmdline: str) -> Path:
    """Make the boot slot of the tryboot build whose disk image is ``image``
    (``…/memu-os_<version>_arm64.raw``) from the outputs beside it, write it into partition
    :data:`SLOT_A` and over the slot's split artifact (``<stem>.boot.<uuid>.raw``, what a
    release carries), and bring mkosi's ``<stem>.SHA256SUMS`` up to date; return the artifact.

    Raises:
        MemuError: an output is missing, or the slot does not fit.
    """
    stem = image.with_suffix("")
    out = image.parent

    def one(pattern: str) -> Path:
        found = sorted(out.glob(f"{stem.name}.{pattern}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise MemuError(f"{out / (stem.name + '.' + pattern)} is missing",
                            hint="build with the tryboot profile (its SplitArtifacts=)")
        return found[-1]

    parts = gpt.entries(image)
    root = next((p for p in parts.values() if p.name.startswith("root-")), None)
    if root is None:
        raise MemuError(f"{image} has no root partition")
    usrhash = root_hash(one("usr-verity-sig.*.raw"))
    files = boot_files(one("vmlinuz"), one("initrd"), out / "tryboot-dtbs",
                       cmdline(base_cmdline, usrhash, root.uuid))
    artifact = one("boot.*.raw")
    slot = parts[SLOT_A]
    make_fat(artifact, files, slot.size, "MEMU-BOOT", usrhash[:8])
    splice(image, SLOT_A, artifact)
    _refresh_sums(stem.with_name(stem.name + ".SHA256SUMS"), (image, artifact))
    return artifact


def _refresh_sums(sums: Path, changed: tuple[Path, ...]) -> None:
    """Replace the lines of ``changed`` files in a sha256sum(1)-format file."""
    if not sums.exists():
        return
    digests = {p.name: sha256_file(p) for p in changed}
    lines = []
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition(" ")
        name = name.lstrip(" *")
        lines.append(f"{digests.get(name, digest)} *{name}" if name in digests else line)
    sums.write_text("\n".join(lines) + "\n")
