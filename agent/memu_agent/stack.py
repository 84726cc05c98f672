"""The family stack: start and stop the Compose project, and say how it is doing.

    /usr/bin/python3 -m memu_agent.stack up | stop      (memu-stack.service)

``up`` starts the services of ``/usr/share/memu/stack/compose.yaml`` whose images are in
Docker — and whose dependencies' images are — and reports the others by name ("not starting
synapse: needs postgres, which cannot start"), so one damaged image does not keep the rest of
the stack down. It does not wait for health: that is what :func:`services` reports
(``/api/status``) and the health gate judges.

The project reads the family's configuration (``/etc/memu/stack/stack.env``, written by
:mod:`memu_firstboot.stack_config`) and the booted slot's image IDs
(``/run/memu-stack/images.env``, written by :mod:`memu_agent.preload`).
Compose CLI reference: https://docs.docker.com/reference/cli/docker/compose/
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from memu_agent import stack_data
from memu_agent.facts import HostPaths, os_version
from memu_agent.preload import IMAGES_ENV
from memu_common import MemuError, optional, run
from memu_common.files import read_env_file, read_json_object, write_json_atomic
from memu_firstboot import stack_config

log = logging.getLogger("memu_agent.stack")

COMPOSE_FILE = Path("/usr/share/memu/stack/compose.yaml")
STACK_ENV = Path("/etc/memu/stack/stack.env")
#: The image IDs of the registry images pulled on the device (memu_agent.pull).
PULLED_ENV = Path("/run/memu-stack/pulled.env")
#: What the last start did with the stack's data (memu_agent.stack_data), for /api/status.
DATA_STATUS = Path("/run/memu-stack/data.json")
#: The services the health gate requires healthy once the box is set up: chat works.
CORE = ("postgres", "synapse", "proxy")
#: A service label naming (comma-separated) the services it needs without a ``depends_on``,
#: which would make Compose hold its start until they have started (compose.yaml: synapse).
NEEDS_LABEL = "memu.needs"
#: Held while the box's Compose changes the project: memu-stack.service (start, the setup's
#: reload) and the pull (starting what it pulled) may run ``up`` at the same moment, and two
#: Composes creating the same containers fail ("Conflict. The container name … is already in
#: use"), as measured on a first boot whose pull retried while the setup started the stack.
UP_LOCK = Path("/run/memu-stack/compose.lock")


@dataclasses.dataclass(frozen=True)
class Compose:
    """How to call Compose on the stack's project.

    Attributes:
        command: the Compose CLI (``docker compose``, or a standalone ``docker-compose``).
        files: the project's compose files (later ones override earlier ones).
        env_files: ``--env-file`` arguments, in order (missing files are skipped).
        env: extra environment for Compose (e.g. ``DOCKER_HOST``, ``MEMU_STACK_STATE``).
        project: the project name (``memu`` on the box).
        lock: a file :func:`up` and ``stop`` hold an exclusive flock(2) on while Compose runs
            (:data:`UP_LOCK` on the box), or None.
    """

    command: tuple[str, ...] = ("docker", "compose")
    files: tuple[Path, ...] = (COMPOSE_FILE,)
    env_files: tuple[Path, ...] = (STACK_ENV, IMAGES_ENV, PULLED_ENV)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    project: str = "memu"
    lock: Path | None = None

    def argv(self, *args: str) -> list[str]:
        """The full command line for ``docker compose <args>`` on this project."""
        out = [*self.command, "--project-name", self.project]
        for f in self.files:
            out += ["--file", str(f)]
        for e in self.env_files:
            if e.exists():
                out += ["--env-file", str(e)]
        return [*out, *args]

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        """Run Compose; its stdout.

        Raises:
            MemuError: Compose failed or took longer than ``timeout`` seconds.
        """
        proc = run(self.argv(*args), env={**os.environ, **self.env}, timeout=timeout,
                   check=check, hint="see journalctl -u memu-stack.service")
        return proc.stdout


@dataclasses.dataclass(frozen=True)
class Decision:
    """Which services ``up`` starts, and why each other one is not started."""

    start: tuple[str, ...]
    not_started: Mapping[str, str]


def needs(service: Mapping[str, Any]) -> list[str]:
    """The services ``service`` (one of ``config --format json``'s ``services``) cannot run
    without: its ``depends_on``, then those its :data:`NEEDS_LABEL` names, in that order."""
    out = list(service.get("depends_on") or {})
    label = (service.get("labels") or {}).get(NEEDS_LABEL, "")
    out += [n for n in (s.strip() for s in str(label).split(",")) if n and n not in out]
    return out


def startable(project: Mapping[str, Any], present_ids: set[str],
              off: Mapping[str, str] | None = None) -> Decision:
    """Decide which services can start: they are not switched off, their image is in Docker
    (by ID, as images.env or pulled.env names it) and so are the images of everything they
    depend on: their ``depends_on`` and the services their :data:`NEEDS_LABEL` names (a
    comma-separated list, for a need Compose must not wait for).

    Args:
        project: ``docker compose config --format json``'s object (``services`` → name →
            ``image``, ``depends_on``, ``labels``).
        present_ids: the image IDs Docker has.
        off: optional services this box does not run → why (:mod:`memu_common.optional`).
    """
    services: Mapping[str, Any] = project.get("services", {})
    reasons: dict[str, str] = {}
    off = off or {}

    def why_not(name: str, seen: tuple[str, ...] = ()) -> str | None:
        if name in seen:
            return f"depends on itself through {' -> '.join(seen)}"
        if name in off:
            return f"off: {off[name]}"
        svc = services.get(name, {})
        if svc.get("image") not in present_ids:
            return "image not loaded"
        for dep in needs(svc):
            if why_not(dep, (*seen, name)) is not None:
                return f"needs {dep}, which cannot start"
        return None

    for name in sorted(services):
        reason = why_not(name)
        if reason is not None:
            reasons[name] = reason
    return Decision(start=tuple(n for n in sorted(services) if n not in reasons),
                    not_started=reasons)


def up(compose: Compose, present_ids: set[str],
       off: Mapping[str, str] | None = None) -> Decision:
    """Start what can start (``up --detach``, no waiting for health); log what cannot. A
    service already running as configured is left alone, so calling it again (when a pulled
    image arrives) starts only what is new.

    Raises:
        MemuError: Compose failed.
    """
    with exclusive(compose.lock):
        project = json.loads(compose("config", "--format", "json", timeout=120))
        decision = startable(project, present_ids, off)
        for name, reason in decision.not_started.items():
            (log.info if reason.startswith("off:") else log.error)(
                "not starting %s: %s", name, reason)
        if decision.start:
            compose("up", "--detach", "--remove-orphans", *decision.start)
            log.info("started %s", ", ".join(decision.start))
    return decision


@contextlib.contextmanager
def exclusive(path: Path | None) -> Iterator[None]:
    """Hold an exclusive flock(2) on ``path`` (created, with its directory) while the block
    runs, waiting for whoever holds it; nothing when ``path`` is None.

    Raises:
        OSError: the file cannot be created.
    """
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


async def services(socket: Path, project: str = "memu",
                   time_limit_s: float = 5) -> dict[str, dict[str, str]]:
    """How each of the project's containers is doing, from the Docker Engine API
    (``GET /containers/json``, https://docs.docker.com/reference/api/engine/) on ``socket``::

        {"synapse": {"state": "running", "health": "healthy", "status": "Up 2 minutes
                     (healthy)"}, "proxy": {"state": "restarting", "health": "", ...}}

    ``health`` is "healthy", "unhealthy", "starting" or "" (no health check); a crash-looping
    service shows ``restarting`` or ``exited``. Empty when nothing of the project exists.

    Raises:
        OSError: Docker does not answer on ``socket`` (within ``time_limit_s`` seconds).
    """
    # Imported here, not at the top: `memu-stack up` (at every boot, and twice in the
    # family's wait at setup) never needs it, and importing aiohttp is about 70 % of this
    # module's import time (seconds on a small or emulated CPU).
    import aiohttp

    filters = json.dumps({"label": [f"com.docker.compose.project={project}"]})
    try:
        async with aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(socket)),
                timeout=aiohttp.ClientTimeout(total=time_limit_s)) as session, session.get(
                    "http://docker/containers/json", params={"all": "1", "filters": filters}
                ) as resp:
            resp.raise_for_status()
            rows = await resp.json()
    except (aiohttp.ClientError, TimeoutError) as e:
        raise OSError(f"Docker on {socket}: {e}") from e
    out = {}
    for row in rows:
        name = row.get("Labels", {}).get("com.docker.compose.service")
        if not name:
            continue
        status = str(row.get("Status", ""))
        health = next((h for h in ("unhealthy", "healthy", "starting")
                       if f"({h})" in status or f"(health: {h})" in status), "")
        out[name] = {"state": str(row.get("State", "")), "health": health, "status": status}
    return out


def read_preload(path: Path, pull_path: Path | None = None) -> dict[str, Any]:
    """The ``stack`` object of ``/api/status``, from the preload's status file ``path``
    (``HostPaths.preload_status``) and the pull's (``pull_path``, :mod:`memu_agent.pull`),
    whose word on an image the slot does not carry replaces the preload's "to pull"; never
    raises (a missing or damaged file means that step has not run yet)::

        {"preload": {"state": "not started" | "running" | "done" | "failed",
                     "version": "0.2.0", "seconds": 41.2, "error": "..."},   # when known
         "pull": {"state": "not started" | "running" | "done" | "failed"},
         "images": {"postgres": {"state": "loaded", "seconds": 12.5}, ...,
                    "synapse": {"state": "refused", "error": "synapse: refused: ..."},
                    "ollama": {"state": "pulling", "bytes": 1234, "total": 98765}}}
    """
    data = read_json_object(path)
    pulled = read_json_object(pull_path) if pull_path else None
    pull = {"state": str(pulled.get("state", ""))} if pulled else {"state": "not started"}
    if data is None:
        return {"preload": {"state": "not started"}, "pull": pull, "images": {}}
    preload = {k: data[k] for k in ("state", "version", "seconds", "error") if k in data}
    images = data.get("images")
    images = dict(images) if isinstance(images, dict) else {}
    from_pull = pulled.get("images") if pulled else None
    if isinstance(from_pull, dict):
        for name, state in from_pull.items():
            before = images.get(name)
            if isinstance(before, dict) and before.get("state") == "to pull" \
                    and isinstance(state, dict):
                images[name] = {**before, **state}
    return {"preload": preload, "pull": pull, "images": images}


def prepare_data(compose: Compose, version: str, layout: stack_data.Layout | None = None,
                 status: Path = DATA_STATUS) -> dict[str, Any]:
    """Snapshot or restore the stack's database as :mod:`memu_agent.stack_data` decides for
    ``version``, before anything starts; write what happened to ``status`` (for
    ``/api/status``) and return it: ``{"step": "snapshot" | ... | "failed", "reason": ...,
    "start": bool}``. A failed snapshot is reported and the stack still starts (the family
    keeps chat; the report says a rollback would have no way back); a failed restore keeps
    it stopped (``start`` false): PostgreSQL must not start on half-moved data."""
    def stop() -> None:
        compose("stop", timeout=300)

    out: dict[str, Any]
    try:
        plan = stack_data.carry_out(layout or stack_data.Layout(), version, stop=stop)
        out = {"step": str(plan.step), "reason": plan.reason, "start": True}
    except stack_data.RestoreFailed as e:
        log.error("stack data: %s", e.message)
        out = {"step": "failed", "reason": e.message, "hint": e.hint or "", "start": False}
    except MemuError as e:
        log.error("stack data: %s", e.message)
        out = {"step": "failed", "reason": e.message, "hint": e.hint or "", "start": True}
    except OSError as e:
        log.error("stack data: %s", e)
        out = {"step": "failed", "reason": str(e), "hint": "", "start": True}
    try:
        write_json_atomic(status, out, mode=0o644)
    except OSError as e:
        log.error("cannot write %s: %s", status, e)
    return out


def present_ids(*env_files: Path) -> set[str]:
    """The image IDs the preload found in Docker and the pull fetched (the values of
    ``images.env`` and ``pulled.env``; a file not written yet adds nothing)."""
    return {v for f in env_files for v in read_env_file(f).values()}


def start(compose: Compose, images_env: Path = IMAGES_ENV, pulled_env: Path = PULLED_ENV,
          stack_env: Path = STACK_ENV) -> Decision:
    """Start every service that can start now (:func:`up`) with the images the preload and
    the pull have put in Docker, leaving off the optional services this box does not run and
    the assistant until its Matrix account exists (``stack_config.BOT_ACCOUNT`` next to
    ``stack_env``).

    Raises:
        MemuError: Compose failed.
    """
    off = optional.switched_off(optional.mem_total(), optional.read_choices(stack_env))
    if not (stack_env.parent / stack_config.BOT_ACCOUNT).exists():
        off["intelligence"] = "the assistant's Matrix account is made when the box is set up"
    return up(compose, present_ids(images_env, pulled_env), off)


def may_start(status: Path = DATA_STATUS) -> bool:
    """False when the last ``up`` left the stack stopped on purpose (a restore of its data
    failed: PostgreSQL must not start on half-moved data) or has not run on this boot."""
    data = read_json_object(status)
    return bool(data and data.get("start"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``up`` or ``stop``; exit status 0, or 1 with the reason logged."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(prog="memu-stack", description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=("up", "stop"))
    args = ap.parse_args(argv)
    compose = Compose(lock=UP_LOCK)
    try:
        if args.action == "up":
            if not prepare_data(compose, os_version(HostPaths()))["start"]:
                return 1
            start(compose)
        else:
            with exclusive(compose.lock):
                compose("stop", timeout=300)
    except MemuError as e:
        log.error("%s%s", e.message, f" ({e.hint})" if e.hint else "")
        return 1
    except OSError as e:
        log.error("cannot lock %s: %s", compose.lock, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
