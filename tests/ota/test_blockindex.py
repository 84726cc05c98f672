"""Block indexes and delta plans (memu_ota.blockindex) on files made here: what is fetched,
what is copied, and that a damaged source, a wrong range or a damaged index is refused."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from memu_common import MemuError
from memu_ota.blockindex import BLOCK, BlockIndex, merged, plan, rebuild

KiB = 1024


def _blocks(seed: int, n: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(BLOCK) for _ in range(n)]


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _rebuilt(tmp_path: Path, old: Path, new: Path, gap: int = 0) -> tuple[int, bytes]:
    """Rebuild ``new`` from ``old`` and ranges of ``new``; return (bytes fetched, result)."""
    target = BlockIndex.of_file(new)
    how = plan(target, [BlockIndex.of_file(old)], merge_gap=gap)
    asked: list[tuple[int, int]] = []

    def fetch(off: int, length: int) -> bytes:
        asked.append((off, length))
        with new.open("rb") as f:
            f.seek(off)
            return f.read(length)

    out = tmp_path / "out.raw"
    out.unlink(missing_ok=True)
    assert rebuild(target, how, [old], fetch, out) == how.fetch_bytes
    assert sum(length for _, length in asked) == how.fetch_bytes
    return how.fetch_bytes, out.read_bytes()


def test_only_changed_blocks_are_fetched_and_moved_blocks_are_copied(tmp_path: Path) -> None:
    blocks = _blocks(1, 64)
    old = _file(tmp_path / "old.raw", b"".join(blocks))
    moved = [*blocks[:10], b"n" * BLOCK, *blocks[10:30], *blocks[40:], *blocks[30:40]]
    new = _file(tmp_path / "new.raw", b"".join(moved) + b"tail")  # a short last block
    fetched, result = _rebuilt(tmp_path, old, new)
    assert result == new.read_bytes()
    assert fetched == BLOCK + 4  # the one new block and the new short tail, nothing else


def test_identical_artifacts_fetch_nothing(tmp_path: Path) -> None:
    old = _file(tmp_path / "old.raw", b"".join(_blocks(2, 16)))
    fetched, result = _rebuilt(tmp_path, old, old)
    assert (fetched, result) == (0, old.read_bytes())


def test_runs_close_together_are_one_range() -> None:
    assert merged([(0, 4), (8, 4), (100, 4)], gap=4) == [(0, 12), (100, 4)]
    assert merged([(0, 4), (8, 4)], gap=3) == [(0, 4), (8, 4)]


def test_a_merged_range_also_refetches_the_known_blocks_between(tmp_path: Path) -> None:
    blocks = _blocks(3, 16)
    old = _file(tmp_path / "old.raw", b"".join(blocks))
    changed = list(blocks)
    changed[2], changed[5] = b"a" * BLOCK, b"b" * BLOCK
    new = _file(tmp_path / "new.raw", b"".join(changed))
    apart, _ = _rebuilt(tmp_path, old, new)
    together, result = _rebuilt(tmp_path, old, new, gap=2 * BLOCK)
    assert (apart, together) == (2 * BLOCK, 4 * BLOCK)
    assert result == new.read_bytes()


def test_a_damaged_local_block_is_refused(tmp_path: Path) -> None:
    old = _file(tmp_path / "old.raw", b"".join(_blocks(4, 8)))
    target = BlockIndex.of_file(old)
    how = plan(target, [BlockIndex.of_file(old)])
    with old.open("r+b") as f:  # the local copy rots after it was indexed
        f.seek(3 * BLOCK + 17)
        f.write(b"\xff")
    with pytest.raises(MemuError, match=r"block 3 .* does not match"):
        rebuild(target, how, [old], lambda off, n: b"", tmp_path / "out.raw")


def test_a_server_answering_other_bytes_is_refused(tmp_path: Path) -> None:
    old = _file(tmp_path / "old.raw", b"".join(_blocks(5, 4)))
    new = _file(tmp_path / "new.raw", b"".join(_blocks(6, 4)))
    target = BlockIndex.of_file(new)
    how = plan(target, [BlockIndex.of_file(old)])
    with pytest.raises(MemuError, match="does not match"):
        rebuild(target, how, [old], lambda off, n: os.urandom(n), tmp_path / "out.raw")
    with pytest.raises(MemuError, match="got 0"):  # e.g. a 200 with no body for a range
        rebuild(target, how, [old], lambda off, n: b"", tmp_path / "out.raw")


def test_the_index_file_round_trips_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    f = _file(tmp_path / "a.raw", b"x" * (10 * KiB))
    index = BlockIndex.of_file(f)
    assert (index.size, index.count, index.length(2)) == (10 * KiB, 3, 2 * KiB)
    assert index.digest(2) == hashlib.sha256(b"x" * (2 * KiB)).digest()
    data = index.to_bytes()
    assert len(data) == 20 + 3 * 32
    assert BlockIndex.from_bytes(data) == index
    with pytest.raises(MemuError, match="bad magic"):
        BlockIndex.from_bytes(b"GARBAGE!" + data[8:])
    with pytest.raises(MemuError, match="damaged"):
        BlockIndex.from_bytes(data[:-1])


def test_indexing_past_the_end_of_a_file_is_refused(tmp_path: Path) -> None:
    f = _file(tmp_path / "short.raw", b"x" * BLOCK)
    assert BlockIndex.of_file(f, size=BLOCK // 2).size == BLOCK // 2
    with pytest.raises(MemuError, match="truncated"):
        BlockIndex.of_file(f, size=2 * BLOCK)


def test_sources_with_another_block_size_are_refused(tmp_path: Path) -> None:
    f = _file(tmp_path / "a.raw", b"x" * (64 * KiB))
    with pytest.raises(MemuError, match="block sizes differ"):
        plan(BlockIndex.of_file(f), [BlockIndex.of_file(f, block=16 * KiB)])


def test_an_interrupted_rebuild_resumes_with_the_blocks_it_has(tmp_path: Path) -> None:
    # 40 new blocks fetched in 4-block pieces; the "power cut" comes during the third piece
    # (the file has what was written and fsynced before it). The second try fetches only
    # what is missing and the result is whole.
    old = _file(tmp_path / "old.raw", b"".join(_blocks(7, 8)))
    new = _file(tmp_path / "new.raw", b"".join(_blocks(7, 8) + _blocks(8, 40)))
    target = BlockIndex.of_file(new)
    how = plan(target, [BlockIndex.of_file(old)])
    asked: list[tuple[int, int]] = []

    def fetch(off: int, length: int) -> bytes:
        if len(asked) == 2 and not resumed:
            raise OSError("power cut")
        asked.append((off, length))
        with new.open("rb") as f:
            f.seek(off)
            return f.read(length)

    out = tmp_path / "out.raw"
    resumed = False
    with pytest.raises(OSError):
        rebuild(target, how, [old], fetch, out, max_fetch=4 * BLOCK)
    assert asked == [(8 * BLOCK, 4 * BLOCK), (12 * BLOCK, 4 * BLOCK)]
    resumed = True
    asked.clear()
    assert rebuild(target, how, [old], fetch, out, max_fetch=4 * BLOCK) == 32 * BLOCK
    assert asked[0] == (16 * BLOCK, 4 * BLOCK) and len(asked) == 8
    assert out.read_bytes() == new.read_bytes()


def test_a_damaged_block_in_the_resumed_file_is_fetched_again(tmp_path: Path) -> None:
    old = _file(tmp_path / "old.raw", b"".join(_blocks(9, 4)))
    new = _file(tmp_path / "new.raw", b"".join(_blocks(10, 12)))
    out = _file(tmp_path / "out.raw", new.read_bytes()[:6 * BLOCK] + b"x" * BLOCK)
    target = BlockIndex.of_file(new)
    asked: list[tuple[int, int]] = []

    def fetch(off: int, length: int) -> bytes:
        asked.append((off, length))
        return new.read_bytes()[off:off + length]

    rebuild(target, plan(target, [BlockIndex.of_file(old)]), [old], fetch, out)
    assert asked == [(6 * BLOCK, 6 * BLOCK)]
    assert out.read_bytes() == new.read_bytes()
