"""`just test`'s summary: per-group seconds from the JUnit report."""

from __future__ import annotations

import os
import time
from pathlib import Path

from memu_dev import check
from memu_dev.check import group_of, junit_groups

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="5">
<testcase classname="tests.agent.test_auth" name="a" time="0.5"/>
<testcase classname="tests.ota.test_updater" name="b" time="1.5"/>
<testcase classname="tests.intelligence.test_bot_e2e" name="c" time="30"/>
<testcase classname="tests.qemu.test_ota" name="d" time="400.25"/>
<testcase classname="tests.qemu.test_ota" name="e" time="100"/>
</testsuite></testsuites>
"""


def test_groups_sum_each_budget_group(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(REPORT)
    assert junit_groups(str(report)) == {"unit": 2.0, "services": 30.0,
                                         "qemu/test_ota": 500.25}


def test_group_of_names() -> None:
    assert group_of("tests.qemu.test_boot") == "qemu/test_boot"
    assert group_of("tests.intelligence.test_bot_store") == "services"
    assert group_of("tests.containers.test_container_lock") == "unit"
    assert group_of("tests.stack.test_stack_images") == "stack"
    assert group_of("") == "unit"


def test_disk_watch_sees_space_taken_during_the_run(tmp_path: Path) -> None:
    # 64 MiB written, synced and held for ten samples, then removed: the lowest free space
    # seen is about that much under the start's.
    with check.DiskWatch(tmp_path, interval=0.02) as disk:
        blob = tmp_path / "blob"
        with blob.open("wb") as f:
            f.write(b"\1" * (64 << 20))
            f.flush()
            os.fsync(f.fileno())
        time.sleep(0.2)
        blob.unlink()
    assert disk.start_free - disk.lowest_free >= 60 << 20
    assert "GB free at the start" in disk.summary()


def test_a_disk_too_small_for_a_test_run_is_named_before_it_starts(tmp_path: Path) -> None:
    watch = check.DiskWatch(tmp_path)
    watch.start_free = 6_200_000_000
    warning = watch.warning(need_gb=10)
    assert warning is not None and "6.2 GB free" in warning and "about 10 GB" in warning
    assert "just test-unit" in warning
    watch.start_free = 60_000_000_000
    assert watch.warning(need_gb=10) is None
