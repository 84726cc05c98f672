"""Persisted state (atomic writes) and the rollback / interrupted report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from memu_common.files import write_json_atomic
from memu_ota.boot import EntryState
from memu_ota.report import reconcile
from memu_ota.state import (
    Check,
    HealthFailure,
    OtaState,
    Pending,
    PendingPhase,
    load_health_failure,
    load_state,
    save_health_failure,
    save_state,
)

NOW = 1_700_000_000.0


def pending(phase: PendingPhase, boot_id: str | None = "boot-1") -> OtaState:
    return OtaState(pending=Pending("0.1.0", "0.2.0", NOW - 100, phase, boot_id))


def test_state_round_trip(tmp_path: Path) -> None:
    state = OtaState(last_check=Check(NOW, "0.2.0 is available"),
                     pending=Pending("0.1.0", "0.2.0", NOW, PendingPhase.WRITTEN, "b"),
                     blocked=("0.1.5",))
    save_state(tmp_path, state)
    assert load_state(tmp_path) == state
    assert oct((tmp_path / "state.json").stat().st_mode & 0o777) == "0o600"
    assert load_state(tmp_path / "missing") == OtaState()


def test_damaged_state_reads_empty(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"pending": {"from": "x"}}')
    assert load_state(tmp_path) == OtaState()
    (tmp_path / "state.json").write_text("{not json")
    assert load_state(tmp_path) == OtaState()


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    write_json_atomic(path, {"v": 1})

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_json_atomic(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left


def test_health_failure_file(tmp_path: Path) -> None:
    assert load_health_failure(tmp_path) is None
    save_health_failure(tmp_path, HealthFailure("0.2.0", "docker.service failed", NOW))
    assert load_health_failure(tmp_path) == HealthFailure("0.2.0", "docker.service failed", NOW)


def test_updated_once_blessed() -> None:
    state = pending(PendingPhase.REBOOTING)
    trying = reconcile(state, "0.2.0", {"0.2.0": EntryState.TRYING}, None, boot_id="b2", now=NOW)
    assert trying.message is None and trying.state == state  # health gate not passed yet
    done = reconcile(state, "0.2.0", {"0.2.0": EntryState.BLESSED}, None, boot_id="b2", now=NOW)
    assert done.message == "updated from 0.1.0 to 0.2.0"
    assert done.state.pending is None and done.state.last_result is not None
    assert done.state.last_result.kind == "updated"


def test_interrupted_download() -> None:
    r = reconcile(pending(PendingPhase.DOWNLOADING), "0.1.0", {}, None, boot_id="b2", now=NOW)
    assert r.message == ("update to 0.2.0 was interrupted (power loss or crash) before it "
                         "finished; the running version 0.1.0 is untouched; it will be retried")
    assert r.state.pending is None and r.state.blocked == ()
    same_boot = reconcile(pending(PendingPhase.DOWNLOADING), "0.1.0", {}, None,
                          boot_id="boot-1", now=NOW)
    assert same_boot.message is not None and "agent restarted" in same_boot.message


@pytest.mark.parametrize("entries", [{}, {"0.2.0": EntryState.BAD}])
def test_rolled_back_blocks_the_version(entries: dict[str, EntryState]) -> None:
    r = reconcile(pending(PendingPhase.REBOOTING), "0.1.0", entries, None, boot_id="b9", now=NOW)
    assert r.message == ("rolled back from 0.2.0 to 0.1.0, because it did not finish "
                         "booting on any of its tries")
    assert r.state.blocked == ("0.2.0",) and r.state.pending is None
    health = HealthFailure("0.2.0", "docker.service failed to start", NOW - 50)
    r = reconcile(pending(PendingPhase.WRITTEN), "0.1.0", entries, health, boot_id="b", now=NOW)
    assert r.message == "rolled back from 0.2.0 to 0.1.0, because docker.service failed to start"


def test_written_and_waiting_stays_pending() -> None:
    state = pending(PendingPhase.WRITTEN)
    r = reconcile(state, "0.1.0", {"0.2.0": EntryState.TRYING}, None, boot_id="boot-1", now=NOW)
    assert r.message is None and r.state == state
