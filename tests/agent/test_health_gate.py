"""The health gate's last word (memu_agent.health_gate.conclude): only a trial boot may fail
and reboot; a blessed boot that is not healthy stays up, so a service that breaks long after
an update (or a full disk) never reboots the box in a loop."""

from __future__ import annotations

from pathlib import Path

from memu_agent.health_gate import conclude
from memu_common import MemuError
from memu_ota.boot import EntryState, ThisBoot
from memu_ota.health import Decision, Outcome
from memu_ota.state import load_health_failure

SICK = Decision(Outcome.FAIL, "synapse is unhealthy")


class Chain:
    """A boot chain (memu_ota.boot.BootBackend) that counts its commits."""

    name = "test"

    def __init__(self, trial: bool, refuse: str | None = None) -> None:
        self.trial, self.refuse, self.commits = trial, refuse, 0

    def begin_boot(self) -> str | None:
        return None

    def entries(self) -> dict[str, EntryState] | None:
        return None

    def this_boot(self) -> ThisBoot:
        return ThisBoot("test", self.trial)

    def prepare_reboot(self, version: str | None) -> tuple[str, ...]:
        return ("true",)

    def commit(self) -> str:
        if self.refuse:
            raise MemuError(self.refuse)
        self.commits += 1
        return "committed"

    def boot_artifact(self, version: str) -> Path | None:
        return None


def test_a_trial_boot_that_is_not_healthy_fails_and_is_recorded(tmp_path: Path) -> None:
    assert conclude(SICK, Chain(trial=True), version="0.2.0", state_dir=tmp_path) == 1
    failure = load_health_failure(tmp_path)
    assert failure is not None and (failure.version, failure.reason) == (
        "0.2.0", "synapse is unhealthy")


def test_a_blessed_boot_that_is_not_healthy_stays_up(tmp_path: Path) -> None:
    assert conclude(SICK, Chain(trial=False), version="0.2.0", state_dir=tmp_path) == 0
    assert load_health_failure(tmp_path) is None  # no rollback report for a kept version


def test_a_healthy_boot_passes(tmp_path: Path) -> None:
    for trial in (True, False):
        chain = Chain(trial)
        assert conclude(Decision(Outcome.PASS, "all up"), chain, "0.2.0", tmp_path) == 0
        assert chain.commits == int(trial)  # only a trial is committed


def test_a_trial_that_cannot_be_committed_fails_and_is_recorded(tmp_path: Path) -> None:
    chain = Chain(trial=True, refuse="autoboot.txt did not read back")
    assert conclude(Decision(Outcome.PASS, "all up"), chain, "0.2.0", tmp_path) == 1
    failure = load_health_failure(tmp_path)
    assert failure is not None and failure.reason == (
        "it could not be made the default: autoboot.txt did not read back")
