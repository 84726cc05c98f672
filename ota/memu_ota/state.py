"""The update state that survives reboots, as small JSON files in the OTA state directory.

``state.json`` (written only by the agent)::

    {"last_check": {"at": 1700000000.0, "result": "0.2.0 is available"} | null,
     "pending": {"from": "0.1.0", "to": "0.2.0", "started_at": 1700000000.0,
                 "phase": "downloading" | "written" | "rebooting", "boot_id": "…"} | null,
     "last_result": {"kind": "updated" | "rolled-back" | "interrupted" | "failed",
                     "message": "…", "at": 1700000000.0} | null,
     "blocked": ["0.2.0"]}                 # versions that were rolled back

``health-failure.json`` (written only by the boot health gate, so two processes never
write one file): ``{"version": "0.2.0", "reason": "…", "at": 1700000000.0}``.

Times are seconds since the epoch. Every write is atomic (:mod:`memu_ota.jsonfile`); a
damaged file is logged and read as empty.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memu_common.files import read_json_object, write_json_atomic

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
HEALTH_FAILURE_FILE = "health-failure.json"


class PendingPhase(enum.StrEnum):
    """How far an update got: downloading (slot B being written), written (installed,
    waiting for a reboot), rebooting (reboot asked for)."""

    DOWNLOADING = "downloading"
    WRITTEN = "written"
    REBOOTING = "rebooting"


@dataclass(frozen=True)
class Pending:
    """An update that was started and whose outcome is not known yet."""

    from_version: str
    to_version: str
    started_at: float
    phase: PendingPhase
    boot_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How the last update attempt ended, as a sentence for the family."""

    kind: str
    message: str
    at: float


@dataclass(frozen=True)
class Check:
    """The last check for a new version."""

    at: float
    result: str


@dataclass(frozen=True)
class HealthFailure:
    """Why the boot health gate failed on ``version``."""

    version: str
    reason: str
    at: float


@dataclass(frozen=True)
class OtaState:
    """Everything in ``state.json``."""

    last_check: Check | None = None
    pending: Pending | None = None
    last_result: Outcome | None = None
    blocked: tuple[str, ...] = field(default_factory=tuple)


def _pending(data: Any) -> Pending | None:
    if not isinstance(data, dict):
        return None
    return Pending(
        from_version=str(data["from"]),
        to_version=str(data["to"]),
        started_at=float(data["started_at"]),
        phase=PendingPhase(data["phase"]),
        boot_id=data.get("boot_id"),
    )


def load_state(state_dir: Path) -> OtaState:
    """Read ``state.json``; missing or damaged parts read as empty (never raises)."""
    data = read_json_object(state_dir / STATE_FILE) or {}
    try:
        check = data.get("last_check")
        result = data.get("last_result")
        blocked = data.get("blocked") or []
        return OtaState(
            last_check=Check(float(check["at"]), str(check["result"])) if check else None,
            pending=_pending(data.get("pending")),
            last_result=Outcome(str(result["kind"]), str(result["message"]),
                                float(result["at"])) if result else None,
            blocked=tuple(str(v) for v in blocked),
        )
    except (KeyError, TypeError, ValueError) as e:
        log.error("%s: damaged (%s); starting from an empty update state",
                  state_dir / STATE_FILE, e)
        return OtaState()


def save_state(state_dir: Path, state: OtaState) -> None:
    """Write ``state.json`` atomically. Raises OSError."""
    pending = None
    if state.pending is not None:
        p = state.pending
        pending = {"from": p.from_version, "to": p.to_version, "started_at": p.started_at,
                   "phase": str(p.phase), "boot_id": p.boot_id}
    write_json_atomic(state_dir / STATE_FILE, {
        "last_check": asdict(state.last_check) if state.last_check else None,
        "pending": pending,
        "last_result": asdict(state.last_result) if state.last_result else None,
        "blocked": list(state.blocked),
    })


def load_health_failure(state_dir: Path) -> HealthFailure | None:
    """Read ``health-failure.json`` (None when missing or damaged)."""
    data = read_json_object(state_dir / HEALTH_FAILURE_FILE)
    if not data:
        return None
    try:
        return HealthFailure(str(data["version"]), str(data["reason"]), float(data["at"]))
    except (KeyError, TypeError, ValueError):
        return None


def save_health_failure(state_dir: Path, failure: HealthFailure) -> None:
    """Write ``health-failure.json`` atomically. Raises OSError."""
    write_json_atomic(state_dir / HEALTH_FAILURE_FILE, asdict(failure))
