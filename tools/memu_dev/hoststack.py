"""Chat's core (PostgreSQL, Synapse, nginx) on a Docker engine on the build host, started as
the box starts it: the stack's own compose.yaml, configuration rendered by
memu_firstboot.stack_config, images preloaded by memu_agent.preload and services started by
memu_agent.stack. Used by tests/stack and `just bench-stack`.

PostgreSQL makes Synapse's role and database (UTF8, C collation) from an init script; Synapse
reads a homeserver.yaml for a box behind nginx that never calls out to the internet; nginx
routes ``/_matrix`` and ``/_synapse/client`` to Synapse and nothing else (Synapse's admin API
is not reachable from the LAN). Synapse's own port is published on loopback, standing for the
box's inside (where the first-boot apply creates users).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from memu_agent import stack
from memu_agent.preload import Docker, Preload
from memu_common import MemuError
from memu_dev.containers import TREE
from memu_dev.engine import Engine
from memu_dev.paths import REPO
from memu_firstboot import stack_config

SERVER_NAME = "family.test"
#: The images' own health checks, run every second (Docker 20.10 has no start interval).
FAST_HEALTH = "--health-interval=1s"
#: The stack's Compose project and nginx routes, as the OS image ships them.
STACK_DIR = REPO / "overlays/common/usr/share/memu/stack"
#: Compose v2 from Debian trixie, unpacked by tools/setup-services.sh.
COMPOSE_BIN = REPO / ".tools/compose/usr/libexec/docker/cli-plugins/docker-compose"
#: The chat core's services (compose.yaml's names).
CHAT = ("postgres", "synapse", "proxy")


@dataclass(frozen=True)
class Chat:
    """A running chat core: ``base`` is nginx's URL (the LAN's view), ``inside`` Synapse's
    own URL, ``shared_secret`` Synapse's registration secret, ``containers`` the names of
    every container the project started (Valkey's too)."""

    base: str
    inside: str
    shared_secret: str
    containers: tuple[str, ...]


def compose_for(engine: Engine, workdir: Path, project: str) -> stack.Compose:
    """The stack's compose.yaml on ``engine``, as memu-stack.service runs it on the box, with
    configuration, state and images.env under ``workdir``, ports published on random
    loopback ports, and every health check run each second (an override file)."""
    fast = workdir / "fast-health.yaml"
    fast.write_text(json.dumps({"services": {
        name: {"healthcheck": {"interval": "1s"}}
        for name in ("postgres", "valkey", "synapse", "proxy")}}))
    return stack.Compose(
        command=(str(COMPOSE_BIN),), files=(STACK_DIR / "compose.yaml", fast),
        env_files=(workdir / "config" / "stack.env", workdir / "images.env"),
        env={"DOCKER_HOST": engine.host, "MEMU_STACK_STATE": str(workdir / "state"),
             "MEMU_STACK_CONFIG": str(workdir / "config"),
             "MEMU_STACK_ROUTES": str(STACK_DIR / "proxy"),
             "MEMU_PROXY_BIND": "127.0.0.1:", "MEMU_SYNAPSE_BIND": "127.0.0.1:"},
        project=project)


@contextlib.contextmanager
def chat(engine: Engine, workdir: Path, project: str = "memu-test-chat") -> Iterator[Chat]:
    """Start the chat core from the stack's compose.yaml with its configuration rendered by
    memu_firstboot.stack_config and the images preloaded by memu_agent.preload (from the
    archives ``just build`` made), state under ``workdir``; wait until every container is
    healthy; ``compose down`` afterwards.

    Raises:
        MemuError: an image was refused, or a container did not become healthy (the message
            has its log tail).
    """
    if not COMPOSE_BIN.exists():
        raise MemuError(f"{COMPOSE_BIN} is missing", hint="run tools/setup-services.sh")
    preload = Preload(Docker(engine.host), TREE, workdir / "booted.json",
                      workdir / "preload.json", "test", workdir / "images.env")
    if not preload.run():
        raise MemuError(f"preload: {preload.status['images']}")
    stack_config.apply(stack_config.Settings(SERVER_NAME), workdir / "config")
    compose = compose_for(engine, workdir, project)
    present = stack.present_ids(workdir / "images.env")
    try:
        decision = stack.up(compose, present)
        if set(CHAT) - set(decision.start):
            raise MemuError(f"not started: {decision.not_started}")
        names = {name: f"{project}-{name}-1" for name in decision.start}
        for name in names.values():
            engine.wait_healthy(name, timeout=300)
        yield Chat(base=f"http://127.0.0.1:{engine.port(names['proxy'], '80/tcp')}",
                   inside=f"http://127.0.0.1:{engine.port(names['synapse'], '8008/tcp')}",
                   shared_secret=(workdir / "config/secrets/synapse-registration")
                   .read_text().strip(),
                   containers=tuple(names.values()))
    finally:
        compose("down", "--volumes", "--timeout", "20", check=False)
