"""The health gate's last word (memu_agent.health_gate.conclude): only a trial boot may fail
and reboot; a blessed boot that is not healthy stays up, so a service that breaks long after
an update (or a full disk) never reboots the box in a loop."""

from __future__ import annotations

from pathlib import Path

from memu_agent.facts import LOADER_GUID, HostPaths, on_trial
from memu_agent.health_gate import conclude
from memu_ota.health import Decision, Outcome
from memu_ota.state import load_health_failure

SICK = Decision(Outcome.FAIL, "synapse is unhealthy")


def test_a_trial_boot_that_is_not_healthy_fails_and_is_recorded(tmp_path: Path) -> None:
    assert conclude(SICK, trial=True, version="0.2.0", state_dir=tmp_path) == 1
    failure = load_health_failure(tmp_path)
    assert failure is not None and (failure.version, failure.reason) == (
        "0.2.0", "synapse is unhealthy")


def test_a_blessed_boot_that_is_not_healthy_stays_up(tmp_path: Path) -> None:
    assert conclude(SICK, trial=False, version="0.2.0", state_dir=tmp_path) == 0
    assert load_health_failure(tmp_path) is None  # no rollback report for a kept version


def test_a_healthy_boot_passes(tmp_path: Path) -> None:
    for trial in (True, False):
        assert conclude(Decision(Outcome.PASS, "all up"), trial, "0.2.0", tmp_path) == 0


def test_a_trial_boot_is_told_by_systemd_boots_counter_variable(tmp_path: Path) -> None:
    paths = HostPaths(efivars=tmp_path)
    assert not on_trial(paths)
    (tmp_path / f"LoaderBootCountPath-{LOADER_GUID}").write_bytes(
        b"\x06\x00\x00\x00" + "\\EFI\\Linux\\memu-os_0.2.0+2-1.efi\0".encode("utf-16-le"))
    assert on_trial(paths)
