"""The writable partition's fullness in /api/status (memu_agent.storage): thresholds and
words, on small and big disks."""

from __future__ import annotations

from pathlib import Path

import pytest

from memu_agent.storage import GIB, MIB, judge, measure


@pytest.mark.parametrize(("total", "free", "state"), [
    (16 * GIB, 8 * GIB, "ok"),
    (16 * GIB, 1.5 * GIB, "low"),      # small disk: below 2 GiB is low
    (16 * GIB, 400 * MIB, "full"),
    (1000 * GIB, 40 * GIB, "ok"),      # big disk: 40 GB left is not low
    (1000 * GIB, 9 * GIB, "low"),      # ... but below 10 GiB is
    (100 * GIB, 4 * GIB, "low"),       # 5 % of 100 GiB
    (100 * GIB, 6 * GIB, "ok"),
    (1000 * GIB, 0, "full"),
])
def test_judge(total: float, free: float, state: str) -> None:
    got = judge(int(total), int(free))
    assert got.state == state
    assert (got.total_bytes, got.free_bytes) == (int(total), int(free))
    assert bool(got.message) == (state != "ok")
    if state != "ok":
        assert "GB free of" in got.message and "delete" in got.message.lower()


def test_measure_reads_the_filesystem_or_says_it_cannot(tmp_path: Path) -> None:
    here = measure(tmp_path)
    assert here.state in ("ok", "low", "full") and here.total_bytes >= here.free_bytes > 0
    missing = measure(tmp_path / "nowhere")
    assert missing.state == "unknown" and "nowhere" in missing.message
