"""Delta updates, device side: rebuild a release's artifacts from the blocks the box already
holds plus byte ranges fetched from the release channel.

A release publishes, next to each artifact sysupdate downloads, its delta material
(tools/memu_dev/release.py): the artifact uncompressed and cut as the slot holds it
(``memu-os_V_x86-64.usr.UUID.img`` for ``….usr.UUID.raw.gz``; the UKI ``.efi`` is published
uncompressed already) and its block index (:func:`index_name`, :mod:`memu_ota.blockindex`).
All are listed in the channel's signed ``SHA256SUMS``. No name of them begins with the name
of an artifact sysupdate's transfers fetch: systemd-sysupdate 257 (Debian's) accepts a name
that only begins with what a ``MatchPattern=`` describes (the check for the name's end came
later), so ``memu-os_V_x86-64.efi.bix`` would pass for the UKI and ``….raw.bix`` for a
slot partition. A box that does not take deltas is not affected.

The steps, each checked:

1. :func:`signed_sums`: ``SHA256SUMS`` and ``SHA256SUMS.gpg`` from the channel, the
   signature verified by gpg against the keyring sysupdate trusts
   (``/usr/lib/systemd/import-pubring.gpg``), invoked as systemd-pull invokes it.
2. :func:`rebuild_artifact`: the artifact's index (its SHA-256 checked against the sums),
   the plan against the indexes of the local sources (the running ``/usr`` read through its
   verity device, the running verity partition, the booted UKI), the missing ranges fetched
   with HTTP Range requests (RFC 9110 §14), every block checked against the index, then the
   whole file against the sums, written under ``<name>.partial`` and renamed.

A rebuild interrupted by a power cut or a dropped connection resumes by content: the blocks
of ``<name>.partial`` that already match the index are kept, so only what is missing is
fetched again. Anything that does not check out raises :class:`MemuError`; the caller then
falls back to the full download, which sysupdate verifies on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from memu_common import MemuError, osrelease
from memu_common.files import sha256_file
from memu_ota import blockindex
from memu_ota.blockindex import BlockIndex

#: The keyring systemd-sysupdate (systemd-pull) verifies channel signatures against.
KEYRING = Path("/usr/lib/systemd/import-pubring.gpg")
INDEX_SUFFIX = ".bix"
#: The suffix of a slot artifact published uncompressed (``.raw.gz`` becomes ``.img``).
PLAIN_SUFFIX = ".img"
PARTIAL_SUFFIX = ".partial"
#: Fetched runs closer than this are fetched as one range (bench-delta: 64 KiB costs 0.01 %
#: more bytes than separate ranges and needs a tenth of the requests).
MERGE_GAP = 65536
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
#: ``uname -m`` -> the architecture name sysupdate's ``%a`` and our artifact names use.
ARCH = {"x86_64": "x86-64", "aarch64": "arm64"}
#: Free space a rebuild leaves on the file system it writes to (logs, the stack's data).
RESERVE = 256 << 20

log = logging.getLogger(__name__)


def parse_sums(text: str) -> dict[str, str]:
    """``SHA256SUMS`` (sha256sum(1) output: ``<64 hex>  <name>``, or ``*<name>`` for binary
    mode) as file name -> hex digest.

    Raises:
        MemuError: a line is not in that format.
    """
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _SUMS_LINE.match(line)
        if not m:
            raise MemuError(f"SHA256SUMS line {n} is not '<sha256>  <name>': {line[:80]!r}",
                            hint="the channel's SHA256SUMS is damaged; publish the release again")
        sums[m[2]] = m[1]
    return sums


def verify_signature(data: bytes, signature: bytes, keyring: Path = KEYRING) -> None:
    """Check the detached OpenPGP ``signature`` of ``data`` against the public keys in
    ``keyring`` (an exported binary keyring), with gpg in a throwaway home directory and the
    options systemd-pull uses (src/import/pull-common.c): no trust database, no key lookups.

    Raises:
        MemuError: gpg is missing, or the signature is bad or made by a key not in
            ``keyring``.
    """
    with tempfile.TemporaryDirectory(prefix="memu-gpg-") as home:
        sig = Path(home) / "SHA256SUMS.gpg"
        sig.write_bytes(signature)
        try:
            done = subprocess.run(
                ["gpg", "--homedir", home, "--no-options", "--no-default-keyring",
                 "--no-auto-key-locate", "--no-auto-check-trustdb", "--batch",
                 "--trust-model=always", f"--keyring={keyring}", "--verify", str(sig), "-"],
                input=data, capture_output=True, timeout=60, check=False)
        except FileNotFoundError as e:
            raise MemuError("gpg is not installed", hint="the image needs gpg (25-ota.conf)"
                            ) from e
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise MemuError("the channel's SHA256SUMS signature does not verify against "
                        f"{keyring}: {said[-1] if said else done.returncode}",
                        hint="the channel was not signed with this box's release key")


@dataclasses.dataclass
class Http:
    """HTTP(S) GETs for the channel, with urllib (no proxy or cookie state of its own).

    ``timeout`` is seconds per socket operation; a range whose connection breaks is asked for
    again from the byte it reached, up to ``retries`` times in a row without progress.
    ``received`` counts the body bytes received (what the update cost).
    """

    timeout: float = 30.0
    retries: int = 4
    received: int = 0

    def get(self, url: str) -> bytes:
        """The whole body of ``url`` (small files: sums, signature, index).

        Raises:
            MemuError: the server answered an error or could not be reached.
        """
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as r:
                body: bytes = r.read()
        except urllib.error.HTTPError as e:
            raise MemuError(f"{url}: HTTP {e.code}",
                            hint="the channel does not offer it; the update falls back to "
                                 "a full download") from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise MemuError(f"{url}: {e}", hint="check the box's network") from e
        self.received += len(body)
        return body

    def get_range(self, url: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``url`` from byte ``offset`` (``Range: bytes=a-b``, answered
        with 206 and a matching ``Content-Range``, RFC 9110 §14.2 and §15.3.7).

        Raises:
            MemuError: the server ignores ranges (answers 200), answers another range or an
                error, or the connection broke ``retries`` times without progress.
        """
        buf = bytearray()
        failures = 0
        while len(buf) < length:
            start, end = offset + len(buf), offset + length - 1
            req = urllib.request.Request(url, headers={"Range": f"bytes={start}-{end}"})
            before = len(buf)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    if r.status != 206:
                        raise MemuError(f"{url}: the server answered {r.status} to a byte "
                                        "range request", hint="serve the channel with a web "
                                        "server that supports Range (any CDN, nginx, caddy)")
                    got = r.headers.get("Content-Range", "")
                    if not got.startswith(f"bytes {start}-{end}/"):
                        raise MemuError(f"{url}: asked for bytes {start}-{end}, the server "
                                        f"sent {got!r}", hint="the update falls back to a "
                                        "full download")
                    while chunk := r.read(min(1 << 20, length - len(buf))):
                        buf += chunk
                        self.received += len(chunk)
                        if len(buf) >= length:
                            break
            except urllib.error.HTTPError as e:
                raise MemuError(f"{url}: HTTP {e.code} for bytes {start}-{end}",
                                hint="the update falls back to a full download") from e
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                failures = 0 if len(buf) > before else failures + 1
                if failures > self.retries:
                    raise MemuError(f"{url}: the connection broke {failures} times at byte "
                                    f"{offset + len(buf)}: {e}",
                                    hint="check the box's network; the next try resumes") from e
                time.sleep(min(2.0 ** failures, 30.0))
        return bytes(buf)


@dataclasses.dataclass(frozen=True)
class SignedSums:
    """A channel's ``SHA256SUMS`` (``data``) and its detached signature (``signature``),
    verified, and the sums parsed (``sums``: name -> hex digest)."""

    data: bytes
    signature: bytes
    sums: dict[str, str]


def signed_sums(http: Http, channel_url: str, keyring: Path = KEYRING) -> SignedSums:
    """The channel's ``SHA256SUMS`` and its signature, after verifying the signature.

    Raises:
        MemuError: either file is missing or damaged, or the signature does not verify.
    """
    data = http.get(channel_url + "SHA256SUMS")
    signature = http.get(channel_url + "SHA256SUMS.gpg")
    verify_signature(data, signature, keyring)
    return SignedSums(data, signature, parse_sums(data.decode("utf-8", errors="replace")))


@dataclasses.dataclass(frozen=True)
class Rebuilt:
    """One artifact rebuilt: its path and size in bytes, the bytes fetched for it this time
    (its index included), and its bytes not fetched this time (copied from local blocks, or
    kept from a ``.partial`` an interrupted try left)."""

    path: Path
    size: int
    fetched: int
    local: int


def index_sources(sources: Sequence[Path], block: int = blockindex.BLOCK) -> list[BlockIndex]:
    """Block indexes of the local files a delta may copy from (read once per update)."""
    return [BlockIndex.of_file(p, block) for p in sources]


def rebuild_artifact(http: Http, channel_url: str, name: str, sums: dict[str, str],
                     sources: Sequence[Path], source_indexes: Sequence[BlockIndex],
                     dest: Path) -> Rebuilt:
    """Rebuild the channel's artifact ``name`` into ``dest/name`` from ``sources`` (with
    their ``source_indexes``, same order) and fetched ranges; see the module docstring.

    Raises:
        MemuError: the channel has no delta material for ``name``, the index or the result
            does not match the signed sums, ``dest`` has not room for the artifact plus
            :data:`RESERVE`, a block does not match, or the fetch failed.
            ``dest/name`` is then absent; a ``.partial`` file may stay for the next try.
    """
    index = index_name(name)
    if name not in sums or index not in sums:
        raise MemuError(f"the channel has no delta material for {name}",
                        hint="the release was published without it; the update falls back "
                             "to a full download")
    raw = http.get(channel_url + index)
    if hashlib.sha256(raw).hexdigest() != sums[index]:
        raise MemuError(f"{index} does not match the signed SHA256SUMS",
                        hint="the channel is damaged or was changed; the update falls back "
                             "to a full download")
    target = BlockIndex.from_bytes(raw)
    how = blockindex.plan(target, source_indexes, merge_gap=MERGE_GAP)
    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / (name + PARTIAL_SUFFIX)
    need = target.size - (partial.stat().st_size if partial.exists() else 0)
    free = shutil.disk_usage(dest).free
    if free - need < RESERVE:
        raise MemuError(f"{name} needs {need >> 20} MiB in {dest}, which has {free >> 20} MiB "
                        f"free (and keeps {RESERVE >> 20} MiB)",
                        hint="free space on /var; the update falls back to a full download, "
                             "which needs none")
    fetched = blockindex.rebuild(
        target, how, list(sources),
        lambda off, length: http.get_range(channel_url + name, off, length), partial)
    if sha256_file(partial) != sums[name]:
        partial.unlink()
        raise MemuError(f"the rebuilt {name} does not match the signed SHA256SUMS",
                        hint="the index and the artifact disagree; the update falls back to "
                             "a full download")
    final = dest / name
    os.replace(partial, final)
    return Rebuilt(final, target.size, len(raw) + fetched, target.size - fetched)


def index_name(artifact: str) -> str:
    """The block index's name for a delta artifact: ``<stem>.<part>.<uuid>.img`` ->
    ``<stem>.<part>.<uuid>.bix``, ``<stem>.efi`` -> ``<stem>.uki.bix`` (never the
    artifact's own name plus a suffix: see the module docstring)."""
    if artifact.endswith(".efi"):
        return artifact.removesuffix(".efi") + ".uki" + INDEX_SUFFIX
    return artifact.removesuffix(PLAIN_SUFFIX) + INDEX_SUFFIX


def artifact_names(sums: dict[str, str], version: str, arch: str,
                   image_name: str = osrelease.IMAGE_ID) -> list[str]:
    """The delta names of the artifacts sysupdate would fetch for ``version``: for every
    ``<image_name>_<version>_<arch>.<partition>.<uuid>.raw.gz`` of the sums the ``.img`` of
    the same stem, and the UKI ``<image_name>_<version>_<arch>.efi``; sorted. Empty when the
    channel lacks either. ``image_name``: the box's (``memu-os``, ``memu-os-hailo``: see
    memu_common.osrelease)."""
    prefix = f"{image_name}_{version}_{arch}."
    slot = sorted(n.removesuffix(".raw.gz") + PLAIN_SUFFIX for n in sums
                  if n.startswith(prefix) and n.endswith(".raw.gz"))
    uki = f"{prefix}efi"
    return [*slot, uki] if slot and uki in sums else []


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A local channel ``directory`` holding a version's artifacts, rebuilt by delta;
    ``fetched`` bytes were downloaded for it (sums, signature, indexes and ranges) and
    ``size`` bytes is what it holds."""

    directory: Path
    fetched: int
    size: int


def prepare(http: Http, channel_url: str, version: str, arch: str, sources: Sequence[Path],
            dest: Path, keyring: Path = KEYRING,
            image_name: str = osrelease.IMAGE_ID) -> Prepared:
    """Rebuild ``version``'s artifacts from the channel at ``channel_url`` into ``dest`` (a
    local channel: the uncompressed artifacts beside the channel's signed ``SHA256SUMS`` and
    ``SHA256SUMS.gpg``, which list them), copying what ``sources`` (the running slot's
    devices and UKI) hold. ``image_name``: which artifacts are the box's
    (:func:`artifact_names`).

    Files in ``dest`` that belong to no artifact of ``version`` are removed first; the
    ``.partial`` files of ``version`` stay, so an interrupted update resumes.

    Raises:
        MemuError: the channel is not signed right, offers no delta material for
            ``version``, or a rebuild failed (see :func:`rebuild_artifact`). The caller
            falls back to the full download.
    """
    before = http.received
    signed = signed_sums(http, channel_url, keyring)
    sums = signed.sums
    names = artifact_names(sums, version, arch, image_name)
    if not names:
        raise MemuError(f"the channel offers no {image_name} artifacts of {version} for {arch}",
                        hint="the update falls back to a full download")
    lacking = [n for n in names if n not in sums or index_name(n) not in sums]
    if lacking:  # before reading the sources: indexing the running slot takes a while
        raise MemuError(f"the channel has no delta material for {', '.join(lacking)}",
                        hint="the release was published without it; the update falls back "
                             "to a full download")
    dest.mkdir(parents=True, exist_ok=True)
    keep = {*names, *(n + PARTIAL_SUFFIX for n in names), "SHA256SUMS", "SHA256SUMS.gpg"}
    for old in dest.iterdir():
        if old.name not in keep:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    indexes = index_sources(sources)
    size = 0
    for name in names:
        done = dest / name
        if done.exists() and sha256_file(done) == sums.get(name):
            size += done.stat().st_size  # rebuilt by an earlier try
            continue
        got = rebuild_artifact(http, channel_url, name, sums, sources, indexes, dest)
        log.info("delta: %s: %d of %d bytes fetched", name, got.fetched, got.size)
        size += got.size
    # The channel's own signed sums, byte for byte: sysupdate verifies the signature and
    # every file's checksum again when it installs from here.
    (dest / "SHA256SUMS").write_bytes(signed.data)
    (dest / "SHA256SUMS.gpg").write_bytes(signed.signature)
    return Prepared(dest, http.received - before, size)


def running_sources(boot_artifact: Path | None, *, usr: Path = Path("/usr"),
                    cmdline: Path = Path("/proc/cmdline"), sysfs: Path = Path("/sys"),
                    dev: Path = Path("/dev")) -> list[Path]:
    """The local files a delta to a new version can copy from, those that exist: the block
    device the running ``/usr`` is mounted from (its dm-verity device, so every block read
    is verified; found from ``/usr``'s device number through sysfs, since the image has no
    device-mapper udev rules for ``/dev/mapper/usr``), the running slot's verity partition
    (by its partition UUID: the last 128 bits of the ``usrhash=`` on the kernel command
    line, as the Discoverable Partitions Specification and systemd-repart derive it) and
    ``boot_artifact``, what the running version booted from
    (:meth:`memu_ota.boot.BootBackend.boot_artifact`: its UKI on the N100)."""
    found = []
    number = os.stat(usr).st_dev
    block = sysfs / f"dev/block/{os.major(number)}:{os.minor(number)}"
    m = re.search(r"^DEVNAME=(\S+)$", _read(block / "uevent"), re.MULTILINE)
    if m and (block / "dm").is_dir():  # a device-mapper (verity) device, never a whole disk
        found.append(dev / m[1])
    m = re.search(r"(?:^|\s)usrhash=([0-9a-f]{64})(?:\s|$)", _read(cmdline))
    if m:
        h = m[1][32:]
        found.append(dev / "disk/by-partuuid" /
                     f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    if boot_artifact is not None:
        found.append(boot_artifact)
    return [p for p in found if p.exists()]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
