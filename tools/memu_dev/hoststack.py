"""The family stack on a Docker engine on the build host, started as the box starts it: the
stack's own compose.yaml, configuration rendered by memu_firstboot.stack_config, images
preloaded by memu_agent.preload (and, for the registry images, stand-ins as the device's pull
would have fetched them: memu_dev.standins) and services started by memu_agent.stack. Used
by tests/stack and `just bench-stack`.

PostgreSQL makes Synapse's role and database (UTF8, C collation) from an init script; Synapse
reads a homeserver.yaml for a box behind nginx that never calls out to the internet; nginx
routes ``/_matrix`` and ``/_synapse/client`` to Synapse and nothing else (Synapse's admin API
is not reachable from the LAN). Synapse's own port is published on loopback, standing for the
box's inside (where the first-boot apply creates users).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from memu_agent import stack
from memu_agent.preload import Docker, Preload, image_env_name
from memu_common import MemuError
from memu_common.files import write_atomic
from memu_dev import matrix
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
    """A running stack: ``base`` is nginx's URL (the LAN's view, through the agent on the
    box), ``inside`` Synapse's own URL, ``shared_secret`` Synapse's registration secret,
    ``containers`` the names of every container the project started by service,
    ``photos`` nginx's photos URL, ``not_started`` what did not start and why,
    ``config`` the stack's configuration directory, ``compose`` how to call Compose on it
    (to start what becomes startable, as the box's pull does)."""

    base: str
    inside: str
    shared_secret: str
    containers: tuple[str, ...]
    photos: str = ""
    by_service: Mapping[str, str] = field(default_factory=dict)
    not_started: Mapping[str, str] = field(default_factory=dict)
    config: Path = Path()
    compose: stack.Compose | None = None


def compose_for(engine: Engine, workdir: Path, project: str) -> stack.Compose:
    """The stack's compose.yaml on ``engine``, as memu-stack.service runs it on the box, with
    configuration, state and images.env under ``workdir``, ports published on random
    loopback ports, and every health check run each second (an override file); run-time
    files (Tailscale's socket) under ``workdir/run``."""
    fast = workdir / "fast-health.yaml"
    fast.write_text(json.dumps({"services": {
        name: {"healthcheck": {"interval": "1s"}}
        for name in ("postgres", "valkey", "synapse", "proxy", "element", "immich-server",
                     "immich-ml", "ollama", "intelligence")}}))
    return stack.Compose(
        command=(str(COMPOSE_BIN),), files=(STACK_DIR / "compose.yaml", fast),
        env_files=(workdir / "config" / "stack.env", workdir / "images.env",
                   workdir / "pulled.env"),
        env={"DOCKER_HOST": engine.host, "MEMU_STACK_STATE": str(workdir / "state"),
             "MEMU_STACK_CONFIG": str(workdir / "config"),
             "MEMU_STACK_RUNTIME": str(workdir / "run"),
             "MEMU_STACK_ROUTES": str(STACK_DIR / "proxy"),
             "MEMU_PROXY_BIND": "127.0.0.1:", "MEMU_SYNAPSE_BIND": "127.0.0.1:",
             "MEMU_PHOTOS_BIND": "127.0.0.1:", "MEMU_OLLAMA_BIND": "127.0.0.1:",
             "MEMU_IMMICH_BIND": "127.0.0.1:"},
        project=project)


def _lift_login_limits(homeserver_yaml: Path) -> None:
    """Let the tests sign in as often as they need: Synapse allows 5 logins per address and
    per account, then one per ~5 minutes (``rc_login``), and a test module signs in far
    more often than a family (the box keeps Synapse's defaults). The file is JSON, which
    is YAML."""
    config = json.loads(homeserver_yaml.read_text())
    lifted = {"per_second": 1000, "burst_count": 1000}
    config["rc_login"] = {"address": lifted, "account": lifted, "failed_attempts": lifted}
    write_atomic(homeserver_yaml, json.dumps(config, indent=2).encode(),
                 mode=homeserver_yaml.stat().st_mode & 0o777)


@contextlib.contextmanager
def chat(engine: Engine, workdir: Path, project: str = "memu-test-chat",
         pulled: Mapping[str, str] | None = None,
         optional: Mapping[str, str] | None = None,
         server_name: str = SERVER_NAME) -> Iterator[Chat]:
    """Start the stack from its compose.yaml with its configuration rendered by
    memu_firstboot.stack_config and the images preloaded by memu_agent.preload (from the
    archives ``just build`` made), state under ``workdir``; wait until every container
    started is healthy; ``compose down`` afterwards.

    Args:
        pulled: registry images as the device's pull leaves them (``{service: image ID}``,
            written to pulled.env): without them only the services built here start.
        optional: the optional services switched on or off (:mod:`memu_common.optional`).
        server_name: the Matrix server name.

    Raises:
        MemuError: an image was refused, the chat core did not start, or a container did not
            become healthy (the message has its log tail).
    """
    if not COMPOSE_BIN.exists():
        raise MemuError(f"{COMPOSE_BIN} is missing", hint="run tools/setup-services.sh")
    preload = Preload(Docker(engine.host), TREE, workdir / "booted.json",
                      workdir / "preload.json", "test", workdir / "images.env")
    if not preload.run():
        raise MemuError(f"preload: {preload.status['images']}")
    write_atomic(workdir / "pulled.env", "".join(
        f"{image_env_name(n)}={i}\n" for n, i in (pulled or {}).items()).encode(), mode=0o644)
    stack_config.apply(stack_config.Settings(server_name, optional or {}), workdir / "config")
    _lift_login_limits(workdir / "config" / "synapse" / "homeserver.yaml")
    compose = compose_for(engine, workdir, project)
    try:
        decision = stack.start(compose, workdir / "images.env", workdir / "pulled.env",
                               workdir / "config" / "stack.env")
        if set(CHAT) - set(decision.start):
            raise MemuError(f"not started: {decision.not_started}")
        names = {name: f"{project}-{name}-1" for name in decision.start}
        for name in names.values():
            engine.wait_healthy(name, timeout=300)
        yield Chat(base=f"http://127.0.0.1:{engine.port(names['proxy'], '80/tcp')}",
                   inside=f"http://127.0.0.1:{engine.port(names['synapse'], '8008/tcp')}",
                   shared_secret=(workdir / "config/secrets/synapse-registration")
                   .read_text().strip(),
                   containers=tuple(names.values()),
                   photos=f"http://127.0.0.1:{engine.port(names['proxy'], '2283/tcp')}",
                   by_service=names, not_started=decision.not_started,
                   config=workdir / "config", compose=compose)
    finally:
        compose("down", "--volumes", "--timeout", "20", check=False)


def start_bot(engine: Engine, running: Chat, project: str) -> tuple[str, matrix.Registered]:
    """Give the stack's assistant its Matrix account as the first-boot setup will (made
    through Synapse's shared-secret admin API, recorded by
    :func:`memu_firstboot.stack_config.write_bot_account`), start it as the box's pull
    would (:func:`memu_agent.stack.start`) and wait until it is healthy; return its
    container's name and its account.

    Raises:
        MemuError: it did not start or did not become healthy.
    """
    bot = matrix.register(running.inside, running.shared_secret, "memu", "bot password 1234")
    stack_config.write_bot_account(running.config, bot.user_id, bot.access_token,
                                   bot.device_id)
    return start_assistant(engine, running, project), bot


def start_assistant(engine: Engine, running: Chat, project: str) -> str:
    """Start the stack's assistant, whose account is in the configuration already, as the
    box's reload does (:func:`memu_agent.stack.start`), and wait until it is healthy;
    return its container's name.

    Raises:
        MemuError: it did not start or did not become healthy.
    """
    if running.compose is None:
        raise MemuError("this stack was not started by hoststack.chat")
    workdir = running.config.parent
    decision = stack.start(running.compose, workdir / "images.env", workdir / "pulled.env",
                           running.config / "stack.env")
    if "intelligence" not in decision.start:
        raise MemuError(f"the assistant did not start: {decision.not_started}")
    name = f"{project}-intelligence-1"
    engine.wait_healthy(name, timeout=180)
    return name
