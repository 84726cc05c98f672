"""Block indexes of release artifacts, and what a device must fetch to rebuild one from the
blocks it already holds (the delta-update plan).

A block index lists the SHA-256 of every fixed-size block (4 KiB by default) of one
uncompressed artifact: the ``/usr`` erofs, its verity hash tree, the UKI. The device hashes
what it has (the running slot, read through its verity device so every read is verified, and
the running UKI), and needs from the server only the target's blocks whose digest it does not
hold, fetched as merged HTTP ranges (RFC 9110 §14). The rebuilt artifact is then checked
block by block against the index and whole against the signed ``SHA256SUMS``.

Why fixed 4 KiB blocks: erofs and the verity tree are laid out in 4 KiB blocks, so an
unchanged file's blocks keep their contents even when they move. On a synthetic erofs like
ours content-defined chunking (casync/desync) fetched 2-4x more than a fixed 4 KiB index;
``just bench-delta`` measures 4, 16 and 64 KiB blocks on two of our own releases. The index
costs 32 bytes per block (0.8 % of the artifact).

Index file format (little-endian): the 8-byte magic ``MEMUBIX1``, u32 block size, u64
artifact size in bytes, then one 32-byte SHA-256 digest per block, the last block hashed as
it is (it may be short).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from memu_common import MemuError

BLOCK = 4096
MAGIC = b"MEMUBIX1"
_HEADER = struct.Struct("<8sIQ")
DIGEST = 32


@dataclasses.dataclass(frozen=True)
class BlockIndex:
    """The SHA-256 of each ``block``-byte block of an artifact of ``size`` bytes;
    ``digests`` holds them back to back (32 bytes each, ``count`` of them)."""

    size: int
    block: int
    digests: bytes

    @property
    def count(self) -> int:
        """Number of blocks: ``ceil(size / block)``."""
        return -(-self.size // self.block)

    def digest(self, i: int) -> bytes:
        """The 32-byte digest of block ``i``."""
        return self.digests[i * DIGEST:(i + 1) * DIGEST]

    def length(self, i: int) -> int:
        """Bytes in block ``i`` (the last one may be short)."""
        return min(self.block, self.size - i * self.block)

    @classmethod
    def of_file(cls, path: Path, block: int = BLOCK, size: int | None = None) -> BlockIndex:
        """Index the first ``size`` bytes of ``path`` (all of it by default).

        Raises:
            MemuError: the file is shorter than ``size``.
        """
        out = bytearray()
        done = 0
        with path.open("rb") as f:
            total = size if size is not None else f.seek(0, 2)
            f.seek(0)
            while done < total:
                chunk = f.read(min(block, total - done))
                if not chunk:
                    raise MemuError(f"{path} ends at byte {done}, before {total}",
                                    hint="the file is truncated; index the whole artifact")
                out += hashlib.sha256(chunk).digest()
                done += len(chunk)
        return cls(total, block, bytes(out))

    def to_bytes(self) -> bytes:
        """The index file's bytes (see the module docstring)."""
        return _HEADER.pack(MAGIC, self.block, self.size) + self.digests

    @classmethod
    def from_bytes(cls, data: bytes) -> BlockIndex:
        """Parse an index file.

        Raises:
            MemuError: not an index, or its digest count does not match its size.
        """
        if len(data) < _HEADER.size or data[:8] != MAGIC:
            raise MemuError("not a Memu block index (bad magic)",
                            hint="fetch the index the release published next to the artifact")
        _, block, size = _HEADER.unpack_from(data)
        index = cls(size, block, data[_HEADER.size:])
        if block <= 0 or len(index.digests) != index.count * DIGEST:
            raise MemuError(f"block index damaged: {len(index.digests)} digest bytes for "
                            f"{size} bytes in {block}-byte blocks",
                            hint="fetch it again; the update falls back to a full download")
        return index


@dataclasses.dataclass(frozen=True)
class Copy:
    """``length`` bytes at ``target`` (offset in the artifact being rebuilt) are the bytes at
    ``offset`` of local source number ``source``."""

    target: int
    source: int
    offset: int
    length: int


@dataclasses.dataclass(frozen=True)
class Plan:
    """How to rebuild a target artifact: byte ranges copied from local sources, and byte
    ranges ``(offset, length)`` of the target to fetch from the server, in order, merged."""

    copies: tuple[Copy, ...]
    fetch: tuple[tuple[int, int], ...]

    @property
    def fetch_bytes(self) -> int:
        """Bytes to download."""
        return sum(length for _, length in self.fetch)


def plan(target: BlockIndex, sources: Sequence[BlockIndex], merge_gap: int = 0) -> Plan:
    """Plan the rebuild of the artifact ``target`` indexes from blocks the device holds in
    ``sources`` (indexes of local files, same block size), fetching the rest.

    Every target block whose digest a source holds (at a full-length block) is copied from
    the first such place; adjacent copies and adjacent fetches are merged. Two fetched runs
    whose gap is at most ``merge_gap`` bytes become one range (a few known blocks re-fetched
    cost less than another request).

    Raises:
        MemuError: a source has another block size than the target.
    """
    where: dict[bytes, tuple[int, int]] = {}
    for s, src in enumerate(sources):
        if src.block != target.block:
            raise MemuError(f"block sizes differ: {src.block} and {target.block}",
                            hint="index both with the same block size")
        for i in range(src.count):
            if src.length(i) == src.block:
                where.setdefault(src.digest(i), (s, i * src.block))
    copies: list[Copy] = []
    fetch: list[tuple[int, int]] = []
    for i in range(target.count):
        off, length = i * target.block, target.length(i)
        found = where.get(target.digest(i)) if length == target.block else None
        if found is None:
            fetch.append((off, length))  # adjacent blocks become one run in merged()
            continue
        s, src_off = found
        last = copies[-1] if copies else None
        if (last and last.source == s and last.target + last.length == off
                and last.offset + last.length == src_off):
            copies[-1] = dataclasses.replace(last, length=last.length + length)
        else:
            copies.append(Copy(off, s, src_off, length))
    return Plan(tuple(copies), tuple(merged(fetch, merge_gap)))


def merged(runs: Iterable[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Merge sorted ``(offset, length)`` runs whose distance is at most ``gap`` bytes."""
    out: list[tuple[int, int]] = []
    for off, length in runs:
        if out and off - (out[-1][0] + out[-1][1]) <= gap:
            start = out[-1][0]
            out[-1] = (start, max(out[-1][0] + out[-1][1], off + length) - start)
        else:
            out.append((off, length))
    return out


def rebuild(target: BlockIndex, how: Plan, sources: Sequence[Path],
            fetch: Callable[[int, int], bytes], out: Path, max_fetch: int = 8 << 20) -> int:
    """Write the artifact ``target`` indexes to ``out`` by ``how``: copies from the local
    ``sources`` (paths, in the plan's numbering), the rest from ``fetch(offset, length)``
    (e.g. an HTTP Range request), at most ``max_fetch`` bytes per call. Every block written
    is checked against ``target``; ``out`` is flushed to disk (fsync) before returning. The
    caller writes to a temporary name and renames only after the whole artifact's signed
    checksum matched.

    When ``out`` exists (an earlier rebuild was interrupted), its blocks that already match
    ``target`` are kept and only the others are fetched: each fetched piece is written as it
    arrives, so an interrupted rebuild loses at most one piece.

    Returns:
        The bytes fetched.

    Raises:
        MemuError: a copied or fetched block does not match its digest (a damaged source or
            a wrong range), or ``fetch`` returned the wrong number of bytes.
    """
    parts: list[tuple[int, int, int | None, int]] = sorted(
        [(c.target, c.length, c.source, c.offset) for c in how.copies]
        + [(off, length, None, 0) for off, length in how.fetch], key=lambda part: part[0])
    resume = out.exists()
    handles = [p.open("rb") for p in sources]
    fetched = 0
    try:
        with out.open("r+b" if resume else "wb") as f:
            written = 0
            for off, length, source, src_off in parts:
                if off + length <= written:
                    continue  # a merged fetch already covered these copied blocks
                skip = max(0, written - off)
                off, length, src_off = off + skip, length - skip, src_off + skip
                written = off + length
                if source is not None:
                    handles[source].seek(src_off)
                    data = handles[source].read(length)
                    _put(f, target, off, data, length,
                         f"{sources[source]} ends before byte {src_off + length}",
                         "the local copy changed since it was indexed")
                    continue
                todo = _missing(target, f, off, length) if resume else [(off, length)]
                for run_off, run_len in todo:
                    for piece in range(run_off, run_off + run_len, max_fetch):
                        size = min(max_fetch, run_off + run_len - piece)
                        data = fetch(piece, size)
                        _put(f, target, piece, data, size,
                             f"asked for {size} bytes at {piece}, got {len(data)}",
                             "the server does not answer byte ranges right")
                        fetched += size
            if written != target.size:
                raise MemuError(f"the plan covers {written} of {target.size} bytes",
                                hint="make the plan from this index")
            f.truncate(target.size)
            f.flush()
            os.fsync(f.fileno())
    finally:
        for h in handles:
            h.close()
    return fetched


def _put(f: BinaryIO, target: BlockIndex, off: int, data: bytes, want: int, short: str,
         why: str) -> None:
    """Write ``data`` at ``off`` of ``f`` once it is ``want`` bytes long (else raise
    :class:`MemuError` saying ``short`` and ``why``) and matches ``target``'s digests."""
    if len(data) != want:
        raise MemuError(short, hint=f"{why}; the update falls back to a full download")
    _check(target, off, data)
    f.seek(off)
    f.write(data)


def _missing(target: BlockIndex, f: BinaryIO, off: int, length: int) -> list[tuple[int, int]]:
    """The runs ``(offset, length)`` of ``[off, off + length)`` (block-aligned) whose blocks
    in the open file ``f`` do not match ``target`` (yet)."""
    runs: list[tuple[int, int]] = []
    f.seek(off)
    have = f.read(length)
    for pos in range(off, off + length, target.block):
        i = pos // target.block
        size = target.length(i)
        chunk = have[pos - off:pos - off + size]
        if len(chunk) == size and hashlib.sha256(chunk).digest() == target.digest(i):
            continue
        runs.append((pos, size))
    return merged(runs, 0)


def _check(target: BlockIndex, off: int, data: bytes) -> None:
    """Raise :class:`MemuError` unless ``data`` at ``off`` (block-aligned) matches
    ``target``'s digests."""
    first = off // target.block
    for n in range(0, len(data), target.block):
        i = first + n // target.block
        if hashlib.sha256(data[n:n + target.length(i)]).digest() != target.digest(i):
            raise MemuError(f"block {i} (byte {i * target.block}) does not match the index",
                            hint="a local block was damaged or the server sent other bytes; "
                                 "the update falls back to a full download")
