"""The boot health gate's decisions."""

from __future__ import annotations

import pytest

from memu_ota.health import Decision, Observations, Outcome, decide, gate, parse_show

UNITS = ("memu-agent.service", "docker.service")


def obs(agent: str = "active", docker: str = "active", api: bool | None = True,
        services: dict[str, str] | None = None) -> Observations:
    return Observations(units={"memu-agent.service": agent, "docker.service": docker},
                        api_ok=api, services=services)


CORE_OK = {"postgres": "healthy", "synapse": "healthy", "proxy": "healthy"}


@pytest.mark.parametrize(
    ("observation", "elapsed", "outcome", "reason"),
    [
        (obs(), 1, Outcome.PASS, "all core services are up"),
        (obs(api=None), 1, Outcome.PASS, "all core services are up"),
        (obs(docker="activating"), 10, Outcome.WAIT, "docker.service is activating"),
        (obs(docker="activating"), 300, Outcome.FAIL,
         "docker.service is activating after 300 seconds"),
        (obs(agent="failed"), 1, Outcome.FAIL, "memu-agent.service failed to start"),
        (obs(api=False), 1, Outcome.WAIT, "the agent does not answer on /api/status"),
        (obs(agent="activating", api=False), 301, Outcome.FAIL,
         "memu-agent.service is activating; the agent does not answer on /api/status "
         "after 300 seconds"),
        (obs(docker=""), 300, Outcome.FAIL, "docker.service is unknown after 300 seconds"),
        # Once set up, the stack's core services must be healthy too.
        (obs(services=CORE_OK), 1, Outcome.PASS, "all core services are up"),
        (obs(services={**CORE_OK, "synapse": "starting"}), 60, Outcome.WAIT,
         "synapse is starting"),
        (obs(services={**CORE_OK, "synapse": "unhealthy", "proxy": ""}), 10, Outcome.WAIT,
         "proxy is not running; synapse is unhealthy"),
        (obs(services={**CORE_OK, "postgres": "unhealthy"}), 300, Outcome.FAIL,
         "postgres is unhealthy after 300 seconds"),
    ],
)
def test_decide(observation: Observations, elapsed: float, outcome: Outcome, reason: str) -> None:
    assert decide(observation, elapsed, 300) == Decision(outcome, reason)


def test_parse_show() -> None:
    text = ("Id=memu-agent.service\nActiveState=active\n\n"
            "Id=docker.service\nActiveState=activating\n")
    assert parse_show(text) == {"memu-agent.service": "active", "docker.service": "activating"}


def test_gate_polls_until_pass_or_deadline() -> None:
    t = [0.0]
    looks = iter([obs(docker="activating"), obs(docker="activating"), obs()])
    decision = gate(lambda: next(looks), 300, clock=lambda: t[0],
                    sleep=lambda s: t.__setitem__(0, t[0] + s))
    assert decision.outcome is Outcome.PASS and t[0] == 4.0
    decision = gate(lambda: obs(docker="activating"), 10, clock=lambda: t[0],
                    sleep=lambda s: t.__setitem__(0, t[0] + s))
    assert decision.outcome is Outcome.FAIL


def test_forced_failure_flag() -> None:
    decision = gate(lambda: obs(), 300, forced_fail=True)
    assert decision == Decision(Outcome.FAIL, "test build: health gate forced to fail")
