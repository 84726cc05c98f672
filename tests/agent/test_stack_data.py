"""The stack's data across updates and rollbacks: the decision table, and the copies and
renames on a real directory tree (owners and modes kept, a power cut mid-copy leaves no
half snapshot)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from memu_agent.stack import Compose, prepare_data
from memu_agent.stack_data import Layout, Step, carry_out, decide


@pytest.mark.parametrize(("booted", "ran", "snapshots", "has_data", "step", "of"), [
    ("0.1.0", None, set(), False, Step.NOTHING, None),       # a fresh box
    ("0.1.0", None, set(), True, Step.NOTHING, None),        # data from before the record
    ("0.2.0", "0.2.0", {"0.1.0"}, True, Step.NOTHING, None),  # a plain reboot
    ("0.2.0", "0.1.0", set(), True, Step.SNAPSHOT, "0.1.0"),  # an update's first start
    ("0.2.0", "0.1.0", set(), False, Step.NOTHING, None),     # nothing to keep yet
    ("0.1.0", "0.2.0", {"0.1.0"}, True, Step.RESTORE, "0.1.0"),  # a rollback
    ("0.1.0", "0.2.0", set(), True, Step.NO_WAY_BACK, None),
    ("0.1.0", "0.2.0", {"0.1.0"}, False, Step.RESTORE, "0.1.0"),  # a restore cut short
    ("0.10.0", "0.9.0", set(), True, Step.SNAPSHOT, "0.9.0"),  # versions compare as systemd does
])
def test_decide(booted: str, ran: str | None, snapshots: set[str], has_data: bool,
                step: Step, of: str | None) -> None:
    plan = decide(booted, ran, frozenset(snapshots), has_data)
    assert (plan.step, plan.of) == (step, of)
    assert plan.reason


def _layout(tmp_path: Path) -> Layout:
    return Layout(stack=tmp_path / "stack", snapshots=tmp_path / "snapshots",
                  record=tmp_path / "stack-data.json")


def _write_db(layout: Layout, content: str) -> None:
    pg = layout.stack / "postgres" / "pgdata"
    pg.mkdir(parents=True, exist_ok=True, mode=0o700)
    (pg / "PG_VERSION").write_text("17\n")
    (pg / "rows").write_text(content)


def test_update_then_rollback_puts_the_old_database_back_and_keeps_the_new_aside(
        tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    assert carry_out(layout, "0.1.0").step is Step.NOTHING  # first boot: no data yet
    _write_db(layout, "written by 0.1.0")
    (layout.stack / "synapse").mkdir()
    (layout.stack / "synapse" / "photo.jpg").write_text("media")
    os.chmod(layout.stack / "postgres" / "pgdata", 0o700)

    plan = carry_out(layout, "0.2.0")  # the update's first start
    assert plan.step is Step.SNAPSHOT
    snap = layout.snapshots / "0.1.0" / "postgres" / "pgdata"
    assert (snap / "rows").read_text() == "written by 0.1.0"
    assert (snap.stat().st_mode & 0o777) == 0o700
    _write_db(layout, "migrated and written by 0.2.0")
    assert carry_out(layout, "0.2.0").step is Step.NOTHING  # a reboot of 0.2.0

    plan = carry_out(layout, "0.1.0")  # rolled back
    assert plan.step is Step.RESTORE and "rolled back from 0.2.0" in plan.reason
    live = layout.stack / "postgres" / "pgdata" / "rows"
    assert live.read_text() == "written by 0.1.0"
    aside = layout.snapshots / "abandoned-0.2.0" / "postgres" / "pgdata" / "rows"
    assert aside.read_text() == "migrated and written by 0.2.0"
    assert (layout.stack / "synapse" / "photo.jpg").read_text() == "media"  # not touched
    assert not (layout.snapshots / "0.1.0").exists()

    # Updating again makes a new snapshot of 0.1.0's data and drops nothing else's.
    assert carry_out(layout, "0.3.0").step is Step.SNAPSHOT
    assert sorted(p.name for p in layout.snapshots.iterdir()) == ["0.1.0", "abandoned-0.2.0"]


def test_a_copy_cut_short_is_not_a_snapshot(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    _write_db(layout, "x")
    partial = layout.snapshots / ".0.1.0.partial"
    partial.mkdir(parents=True)
    (partial / "postgres").mkdir()
    assert layout.complete_snapshots() == frozenset()
    layout.record.write_text('{"ran": "0.2.0"}')
    assert carry_out(layout, "0.1.0").step is Step.NO_WAY_BACK
    assert (layout.stack / "postgres" / "pgdata" / "rows").read_text() == "x"


def test_a_restore_cut_short_is_finished_by_the_next_boot(tmp_path: Path) -> None:
    """A power cut after the newer data was moved aside, before the snapshot was put back:
    the record still names the newer version, so the next boot finishes the restore."""
    layout = _layout(tmp_path)
    _write_db(layout, "written by 0.1.0")
    carry_out(layout, "0.1.0")
    carry_out(layout, "0.2.0")
    _write_db(layout, "written by 0.2.0")
    aside = layout.snapshots / "abandoned-0.2.0"
    aside.mkdir()
    (layout.stack / "postgres").rename(aside / "postgres")  # where the cut came

    assert carry_out(layout, "0.1.0").step is Step.RESTORE
    assert (layout.stack / "postgres" / "pgdata" / "rows").read_text() == "written by 0.1.0"
    assert (aside / "postgres" / "pgdata" / "rows").read_text() == "written by 0.2.0"
    assert carry_out(layout, "0.1.0").step is Step.NOTHING


def test_prepare_data_reports_what_it_did(tmp_path: Path) -> None:
    """memu-stack.service's step before `up`, with a Compose stand-in (`true`) that only has
    to exit 0 when asked to stop the containers."""
    layout, status = _layout(tmp_path), tmp_path / "run" / "data.json"
    compose = Compose(command=("true",), env_files=())
    _write_db(layout, "x")
    layout.record.write_text('{"ran": "0.1.0"}')
    out = prepare_data(compose, "0.2.0", layout, status)
    assert out["step"] == "snapshot" and json.loads(status.read_text()) == out
    # Where the next snapshot would go is not a directory: reported, nothing else touched.
    blocked = Layout(stack=layout.stack, snapshots=tmp_path / "not-a-dir",
                     record=layout.record)
    blocked.snapshots.write_text("")
    out = prepare_data(compose, "0.3.0", blocked, status)
    assert out["step"] == "failed" and "copying the database" in out["reason"]
    assert (layout.stack / "postgres" / "pgdata" / "rows").read_text() == "x"
    # The failed copy is recorded: a rollback to 0.2.0 now knows it has no way back (instead
    # of a later boot copying 0.3.0's migrated data under 0.2.0's name).
    assert json.loads(layout.record.read_text())["ran"] == "0.3.0"
    assert carry_out(layout, "0.2.0").step is Step.NO_WAY_BACK


def test_containers_that_do_not_stop_are_not_copied(tmp_path: Path) -> None:
    layout, status = _layout(tmp_path), tmp_path / "run" / "data.json"
    _write_db(layout, "x")
    layout.record.write_text('{"ran": "0.1.0"}')
    out = prepare_data(Compose(command=("false",), env_files=()), "0.2.0", layout, status)
    assert out["step"] == "failed" and out["start"] is True
    assert layout.complete_snapshots() == frozenset()


def test_a_failed_restore_keeps_the_stack_stopped_and_loses_nothing(tmp_path: Path) -> None:
    layout, status = _layout(tmp_path), tmp_path / "run" / "data.json"
    compose = Compose(command=("true",), env_files=())
    _write_db(layout, "written by 0.1.0")
    carry_out(layout, "0.1.0")
    carry_out(layout, "0.2.0")
    _write_db(layout, "written by 0.2.0")
    (layout.snapshots / "abandoned-0.2.0").write_text("in the way")  # the aside dir fails
    out = prepare_data(compose, "0.1.0", layout, status)
    assert out["step"] == "failed" and out["start"] is False
    assert (layout.stack / "postgres" / "pgdata" / "rows").read_text() == "written by 0.2.0"
    assert (layout.snapshots / "0.1.0" / "postgres" / "pgdata" / "rows").read_text() == (
        "written by 0.1.0")


def test_a_second_rollback_from_the_same_version_keeps_the_first_copy(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    for attempt in ("first", "second"):
        _write_db(layout, "written by 0.1.0")
        carry_out(layout, "0.1.0")
        carry_out(layout, "0.2.0")
        _write_db(layout, f"{attempt} try of 0.2.0")
        assert carry_out(layout, "0.1.0").step is Step.RESTORE
    aside = layout.snapshots / "abandoned-0.2.0"
    assert (aside / "postgres" / "pgdata" / "rows").read_text() == "first try of 0.2.0"
    assert (aside / "postgres.1" / "pgdata" / "rows").read_text() == "second try of 0.2.0"
