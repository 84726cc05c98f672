"""The boot health gate's logic; its entry point is ``python3 -m memu_agent.health_gate``
(the agent's side, which knows the device's config).

Run by ``memu-health-gate.service`` (``Before=boot-complete.target``,
``RequiredBy=boot-complete.target``, ``FailureAction=reboot``): it exits 0 once the agent
answers, every core unit is active and (once the box is set up) the stack's core services are
healthy, so ``systemd-bless-boot`` marks this boot entry
good; it exits 1 when they are not within the deadline (or a core unit failed), so the box
reboots and boot counting runs the entry down until systemd-boot falls back to the
previous version. Before exiting 1 it writes ``{version, reason}`` to
``<ota state_dir>/health-failure.json``, which the agent turns into "rolled back from Y to
X, because <reason>".

Test builds only: when ``/usr/lib/memu/test-fail-health-gate`` exists the gate fails at
once with "test build: health gate forced to fail" (to exercise rollback in QEMU).

Settings come from the agent's config file (``[ota] health_deadline_s``, ``core_units``,
``state_dir``; the agent's ``port``).
"""

from __future__ import annotations

import enum
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from memu_common import MemuError, run

log = logging.getLogger("memu_ota.health")

TEST_FAIL_FLAG = Path("/usr/lib/memu/test-fail-health-gate")
POLL_S = 2.0


class Outcome(enum.StrEnum):
    PASS = "pass"
    WAIT = "wait"
    FAIL = "fail"


@dataclass(frozen=True)
class Observations:
    """One look at the system.

    Attributes:
        units: core unit → ``ActiveState`` (active, activating, failed, inactive, …).
        api_ok: ``GET /api/status`` on the agent answered 200 (None: not checked).
        services: the family stack's core services → health (``healthy``, ``starting``,
            ``unhealthy``; "" when not running); None when they are not judged (the box is
            not set up yet, so nothing is expected to run).
    """

    units: Mapping[str, str]
    api_ok: bool | None = None
    services: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str


def decide(obs: Observations, elapsed_s: float, deadline_s: float) -> Decision:
    """Pass when every unit is active, the API answers and every judged stack service is
    healthy; fail at once when a unit has failed; otherwise wait until ``deadline_s`` and then
    fail, naming what is not ready (an unhealthy service may still recover, so it waits)."""
    failed = sorted(u for u, s in obs.units.items() if s == "failed")
    if failed:
        return Decision(Outcome.FAIL, f"{', '.join(failed)} failed to start")
    waiting = [f"{u} is {s or 'unknown'}" for u, s in sorted(obs.units.items())
               if s != "active"]
    if obs.api_ok is False:
        waiting.append("the agent does not answer on /api/status")
    waiting += [f"{name} is {health or 'not running'}"
                for name, health in sorted((obs.services or {}).items()) if health != "healthy"]
    if not waiting:
        return Decision(Outcome.PASS, "all core services are up")
    if elapsed_s >= deadline_s:
        return Decision(Outcome.FAIL,
                        f"{'; '.join(waiting)} after {deadline_s:.0f} seconds")
    return Decision(Outcome.WAIT, "; ".join(waiting))


def parse_show(text: str) -> dict[str, str]:
    """``systemctl show -p Id,ActiveState u1 u2…`` output (blank-line separated blocks) →
    unit → ActiveState."""
    result: dict[str, str] = {}
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            result[props["Id"]] = props.get("ActiveState", "")
    return result


def observe(units: tuple[str, ...], port: int) -> Observations:
    """Ask systemd about ``units`` and the agent's HTTP API on ``port``."""
    try:
        out = run(["systemctl", "show", "--property=Id,ActiveState", "--", *units]).stdout
        states = parse_show(out)
    except MemuError as e:
        log.warning("%s", e)
        states = {}
    return Observations(units={u: states.get(u, "") for u in units}, api_ok=_api_ok(port))


def _api_ok(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/api/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def gate(
    look: Callable[[], Observations],
    deadline_s: float,
    *,
    forced_fail: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Decision:
    """Poll ``look`` until :func:`decide` passes or fails."""
    if forced_fail:
        return Decision(Outcome.FAIL, "test build: health gate forced to fail")
    start = clock()
    last = ""
    while True:
        decision = decide(look(), clock() - start, deadline_s)
        if decision.outcome is not Outcome.WAIT:
            return decision
        if decision.reason != last:
            log.info("waiting: %s", decision.reason)
            last = decision.reason
        sleep(POLL_S)
