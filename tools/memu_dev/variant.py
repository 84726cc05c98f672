"""Test builds whose container lock differs from the built one: a file tree for
``--extra-tree`` that replaces the lock file and adds one changed archive, so an update test
can prove that the stack runs the booted slot's images (and a rollback the old ones again);
or that names more registry images to pull, so it can prove the device's pull by digest.

The changed image is the built one with one more label in its image config: same layers, a
different config, so a different image ID (the ID is the config's SHA-256). The archive is
rewritten in docker-archive form (``manifest.json`` names the config file; what ``docker
load`` reads, see moby's image/tarexport), without copying any layer's bytes through Docker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
from pathlib import Path

from memu_common import MemuError
from memu_common import container_lock as lock

CONTAINERS = Path("usr/share/memu/containers")


def changed_image_tree(built: Path, out: Path, name: str, version: str) -> lock.LockEntry:
    """Write ``out``/usr/share/memu/containers/ with a lock file like ``built``'s, in which
    image ``name`` is replaced by a copy labelled ``org.memu.test.version=<version>`` and
    tagged ``<repository>:<version>``; return the new entry. Skipped (the entry is read back)
    when ``out`` is newer than ``built``'s lock.

    Raises:
        MemuError: ``built`` has no image ``name``, or its archive is not a docker-archive.
    """
    dest = out / CONTAINERS
    entries = lock.read(built)
    try:
        old = next(e for e in entries if e.name == name)
    except StopIteration:
        raise MemuError(f"{built} has no image {name!r}") from None
    if (dest / lock.LOCK_NAME).exists() and (
            (dest / lock.LOCK_NAME).stat().st_mtime > (built / lock.LOCK_NAME).stat().st_mtime):
        return next(e for e in lock.read(dest) if e.name == name)
    dest.mkdir(parents=True, exist_ok=True)
    ref = f"{old.ref.rsplit(':', 1)[0]}:{version}"
    archive = dest / old.archive.replace(old.archive.split("_")[1], version, 1)
    with tarfile.open(built / old.archive) as src, tarfile.open(archive, "w") as dst:
        manifest = json.load(_member(src, "manifest.json"))
        if len(manifest) != 1 or "Config" not in manifest[0]:
            raise MemuError(f"{old.archive}: not a one-image docker-archive")
        config = json.load(_member(src, manifest[0]["Config"]))
        config.setdefault("config", {}).setdefault("Labels", {})[
            "org.memu.test.version"] = version
        blob = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
        image_id = hashlib.sha256(blob).hexdigest()
        manifest[0].update(Config=f"{image_id}.json", RepoTags=[f"docker.io/{ref}"])
        for member in src.getmembers():
            if member.name in ("manifest.json", "repositories", old.image_id[7:] + ".json"):
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        _add(dst, f"{image_id}.json", blob)
        manifest_bytes = json.dumps(manifest).encode()
        _add(dst, "manifest.json", manifest_bytes)
    # A docker-archive has no OCI manifest; the lock's manifest digest is then that of the
    # archive's manifest.json (nothing on the device reads it for built images).
    new = dataclasses.replace(
        old, ref=ref, image_id=f"sha256:{image_id}", archive=archive.name,
        archive_sha256=lock.sha256_file(archive), archive_bytes=archive.stat().st_size,
        manifest_digest=f"sha256:{hashlib.sha256(manifest_bytes).hexdigest()}")
    (dest / lock.LOCK_NAME).write_text(
        lock.dumps([new if e.name == name else e for e in entries]))
    return new


def _member(tar: tarfile.TarFile, name: str) -> io.BufferedReader:
    f = tar.extractfile(name)
    if f is None:
        raise MemuError(f"{name} in the archive is not a file")
    return f  # type: ignore[return-value]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o444
    tar.addfile(info, io.BytesIO(data))


def with_pulled_images(built: Path, out: Path, extra: list[lock.LockEntry]) -> None:
    """Write ``out``/usr/share/memu/containers/ with ``extra`` plus ``built``'s lock file
    (entries without an archive, pulled by the device); the file is left alone (and its
    mtime, so a test build is not made again) when its content would not change."""
    dest = out / CONTAINERS / lock.LOCK_NAME
    # First in the lock, so the pull tries them before the real registry images (which a
    # host with internet would otherwise download first, for minutes under TCG).
    text = lock.dumps([*extra, *lock.read(built)])
    if dest.exists() and dest.read_text() == text:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
