"""The boot health gate's entry point: ``/usr/bin/python3 -m memu_agent.health_gate``, run by
``memu-health-gate.service`` (see :mod:`memu_ota.health` for what it decides and why). It
lives on the agent's side because it reads the agent's config, the OS version and the
stack's health (once the box is set up, the core services must be healthy); the decision
itself stays in memu_ota.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from memu_agent import stack
from memu_agent.config import DEFAULT_CONFIG_PATH, load_config
from memu_agent.facts import HostPaths, boot_chain, os_version
from memu_common import MemuError
from memu_ota.boot import BootBackend
from memu_ota.health import TEST_FAIL_FLAG, Decision, Observations, Outcome, gate, observe
from memu_ota.state import HealthFailure, save_health_failure

log = logging.getLogger("memu_agent.health_gate")


def core_health(socket: Path) -> dict[str, str]:
    """The stack's core services (:data:`memu_agent.stack.CORE`) → health, "" for one that
    is not running; every one "" when Docker does not answer."""
    try:
        services = asyncio.run(stack.services(socket))
    except OSError as e:
        log.warning("%s", e)
        services = {}
    return {name: services.get(name, {}).get("health", "") for name in stack.CORE}


def main() -> int:
    """Entry point; exit status 0 (healthy) or 1 (not healthy, failure recorded)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config, problems = load_config(DEFAULT_CONFIG_PATH)
    for problem in problems:
        log.warning("config: %s", problem)
    ota = config.ota
    judge_stack = stack.STACK_ENV.exists()  # set up: the family's services must come up
    socket = HostPaths().docker_socket

    def look() -> Observations:
        obs = observe(ota.core_units, config.port)
        return replace(obs, services=core_health(socket) if judge_stack else None)

    decision = gate(look, ota.health_deadline_s, forced_fail=TEST_FAIL_FLAG.exists())
    version = os_version(HostPaths())
    try:
        boot: BootBackend | None = boot_chain(HostPaths(), ota, version)
    except MemuError as e:  # never a reboot loop over it: judged as a committed boot
        log.error("%s", e)
        boot = None
    return conclude(decision, boot, version, ota.state_dir)


def conclude(decision: Decision, boot: BootBackend | None, version: str,
             state_dir: Path) -> int:
    """The gate's exit status for ``decision``: 0 (boot-complete.target is reached) or 1
    (``FailureAction=reboot``; the failure is recorded in ``state_dir`` for the rollback
    report). ``boot`` is None when the boot chain is not known: the boot is then judged as
    a committed one. A trial boot that passes is committed (:meth:`BootBackend.commit`);
    when that fails, the failure is recorded like an unhealthy boot's and the box reboots
    into the old version.

    Only a trial boot (:attr:`memu_ota.boot.ThisBoot.trial`) can fail: rebooting a box
    whose boot entry is already committed changes nothing (the boot chain picks the same
    version), so a service that breaks months after an update, or a full disk, would reboot
    the box in a loop and keep the family from even the agent's pages. Such a boot stays up
    and the failure is logged; ``/api/status`` shows the unhealthy service.
    """
    trial = boot is not None and boot.this_boot().trial
    if decision.outcome is Outcome.PASS:
        log.info("healthy: %s", decision.reason)
        if boot is None or not trial:
            return 0
        try:
            log.info("the trial boot of %s passed; %s", version, boot.commit())
            return 0
        except MemuError as e:
            decision = Decision(Outcome.FAIL, f"it could not be made the default: {e.message}")
    if not trial:
        log.error("not healthy on %s: %s; this boot is already committed, so the box "
                  "stays up instead of rebooting into the same version", version,
                  decision.reason)
        return 0
    log.error("not healthy on %s: %s", version, decision.reason)
    try:
        save_health_failure(state_dir, HealthFailure(version, decision.reason, time.time()))
    except OSError as e:
        log.error("cannot record the failure in %s: %s", state_dir, e)
    return 1


if __name__ == "__main__":
    sys.exit(main())
