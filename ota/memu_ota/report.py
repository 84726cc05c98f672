"""What happened to the last update, worked out at agent start from the persisted state,
the running version and what the boot chain says about each version
(:meth:`memu_ota.boot.BootBackend.entries`: blessed, trying, bad or missing).

The rules (``P`` = pending update from ``X`` to ``Y``, ``R`` = running version):

* ``Y == R`` and the entry is blessed (or there are no entries to look at) → "updated";
  not blessed yet → still verifying (the health gate decides; keep ``P``).
* ``Y != R`` and ``P`` was downloading → interrupted; it will be retried.
* ``Y != R`` and ``P`` was written/rebooting and the boot chain has ``Y`` missing or bad →
  rolled back, and ``Y`` is blocked (a newer version is still offered).
* ``Y != R``, ``P`` was rebooting, this is another boot than ``P``'s and ``Y`` is still
  being tried → the restart did not start ``Y`` (a boot chain that tries a version only
  when asked, like the Pi's tryboot, whose flag did not reach the firmware): ``P`` is
  written again, waiting for a restart.
* otherwise ``P`` stands (written, waiting for its reboot).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from memu_ota.boot import EntryState
from memu_ota.state import HealthFailure, OtaState, Outcome, PendingPhase


@dataclass(frozen=True)
class Reconciled:
    """The new state and, when something was decided, the sentence for the family."""

    state: OtaState
    message: str | None


def reconcile(
    state: OtaState,
    running: str,
    entries: dict[str, EntryState] | None,
    health: HealthFailure | None,
    *,
    boot_id: str | None,
    now: float,
) -> Reconciled:
    """Apply the rules in the module docstring. Pure: no files are read or written."""
    p = state.pending
    if p is None:
        return Reconciled(state, None)
    entry = EntryState.MISSING if entries is None else entries.get(p.to_version,
                                                                     EntryState.MISSING)
    if p.to_version == running:
        if entries is not None and entry is not EntryState.BLESSED:
            return Reconciled(state, None)  # the health gate has not passed yet
        return _done(state, "updated", f"updated from {p.from_version} to {running}", now)
    if p.phase is PendingPhase.DOWNLOADING:
        if boot_id is not None and p.boot_id == boot_id:
            why = "the agent restarted"
        else:
            why = "power loss or crash"
        return _done(state, "interrupted",
                     f"update to {p.to_version} was interrupted ({why}) before it finished; "
                     f"the running version {running} is untouched; it will be retried", now)
    if entries is not None and entry in (EntryState.MISSING, EntryState.BAD):
        if health is not None and health.version == p.to_version:
            reason = health.reason
        else:
            reason = "it did not finish booting on any of its tries"
        blocked = state.blocked if p.to_version in state.blocked else (
            *state.blocked, p.to_version)
        return _done(replace(state, blocked=blocked), "rolled-back",
                     f"rolled back from {p.to_version} to {running}, because {reason}", now)
    if (p.phase is PendingPhase.REBOOTING and entry is EntryState.TRYING
            and boot_id is not None and p.boot_id != boot_id):
        return Reconciled(replace(state, pending=replace(p, phase=PendingPhase.WRITTEN)),
                          f"the restart did not start {p.to_version}; it is installed and "
                          "waits for another restart")
    return Reconciled(state, None)


def _done(state: OtaState, kind: str, message: str, now: float) -> Reconciled:
    outcome = Outcome(kind=kind, message=message, at=now)
    return Reconciled(replace(state, pending=None, last_result=outcome), message)
