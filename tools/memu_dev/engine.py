"""A private Docker engine on the build host, for testing the stack's container images fast,
outside QEMU (tests/stack, `just bench-stack`).

``dockerd`` (Debian's ``docker.io``, installed by tools/setup-services.sh) is started with its
own socket, data root and exec root under ``.tools/docker/`` so it never touches a Docker the
host may run, and keeps the images it loaded between runs (:func:`load_built` skips an image
already there). The CLI is driven through ``DOCKER_HOST``; its JSON output
(``docker inspect``) is the interface, as documented in the Docker Engine API reference.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memu_agent.preload import Docker, Preload
from memu_common import MemuError, run
from memu_common import container_lock as lock
from memu_dev.containers import TREE
from memu_dev.paths import REPO

ROOT = REPO / ".tools" / "docker"
SETUP_HINT = "run tools/setup-services.sh as root (installs docker.io)"


@dataclass
class Engine:
    """A running ``dockerd`` reached at ``host`` (``unix://…``)."""

    root: Path
    host: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def docker(self, *args: str | Path, check: bool = True, timeout: float = 300,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS…`` against this engine.

        Raises:
            MemuError: with ``check``, a non-zero exit (stderr in the message).
        """
        env = {**os.environ, "DOCKER_HOST": self.host}
        return run(["docker", *args], check=check, env=env, timeout=timeout, input=input)

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        """``docker <kind> inspect NAME`` as a dict (kind: container, image, network…)."""
        out = self.docker(kind, "inspect", name).stdout
        (obj,) = json.loads(out)
        return dict(obj)

    def port(self, name: str, inside: str) -> int:
        """The loopback port Docker published for a container's ``inside`` (``80/tcp``)."""
        out = self.docker("port", name, inside).stdout.split()[0]
        return int(out.rsplit(":", 1)[1])

    def wait_healthy(self, container: str, timeout: float) -> dict[str, Any]:
        """Wait for a container's health check to report ``healthy``; return its state.

        Raises:
            MemuError: it stopped, turned ``unhealthy``, or the deadline passed (the message
                carries the last health check output and the container's log tail).
        """
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.inspect("container", container)["State"]
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy":
                return state
            if not state.get("Running") or health == "unhealthy":
                break
            time.sleep(0.5)
        tail = self.docker("logs", "--tail", "30", container, check=False)
        raise MemuError(
            f"{container} is not healthy (state {state.get('Status')}, health "
            f"{(state.get('Health') or {}).get('Status')}); last check: "
            f"{_latest_check_output(state).strip()!r}; log:\n{tail.stdout}{tail.stderr}")

    def last_health_output(self, container: str) -> str:
        """What the container's latest health check printed ("" before the first)."""
        return _latest_check_output(self.inspect("container", container)["State"])

    def stop(self) -> None:
        """Stop the daemon this object started (containers are left to ``--rm``/tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _latest_check_output(state: dict[str, Any]) -> str:
    """The output of the latest health check in a container's ``State`` (Docker Engine API,
    ``State.Health.Log``), or "" when none has run."""
    checks = (state.get("Health") or {}).get("Log") or [{}]
    return str(checks[-1].get("Output", ""))


def load_built(engine: Engine) -> dict[str, lock.LockEntry]:
    """Load every image ``just build`` made (those the OS image carries) into ``engine`` the
    way the box does (:class:`memu_agent.preload.Preload`: loaded only when missing, size,
    SHA-256 and image ID checked); return their lock entries by name.

    Raises:
        MemuError: a lock file is missing (not built yet) or an archive was refused.
    """
    if not (TREE / lock.LOCK_NAME).exists():
        raise MemuError(f"{TREE / lock.LOCK_NAME} is missing", hint="run `just build`")
    state = engine.root / "preload"
    preload = Preload(Docker(engine.host), TREE, state / "booted.json", state / "status.json",
                      "built", state / "images.env")
    if not preload.run():
        raise MemuError(f"preload of the built images: {preload.status['images']}",
                        hint="delete mkosi.output/containers/ and run `just build`")
    return {e.name: e for e in lock.read(TREE)}


def start(root: Path = ROOT, timeout: float = 60) -> Engine:
    """Start a private dockerd under ``root`` (or reuse the one already running there).

    Raises:
        MemuError: dockerd is not installed, we are not root, or it did not answer in time
            (the message carries the tail of its log).
    """
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        raise MemuError("dockerd is not installed", hint=SETUP_HINT)
    if os.geteuid() != 0:
        raise MemuError("starting dockerd needs root", hint="run the tests as root")
    root.mkdir(parents=True, exist_ok=True)
    engine = Engine(root=root, host=f"unix://{root / 'docker.sock'}")
    if engine.docker("version", check=False, timeout=10).returncode == 0:
        return engine  # left running by an earlier session
    with engine.log.open("ab") as log:
        engine.process = subprocess.Popen(
            ["dockerd", f"--host={engine.host}", f"--data-root={root / 'data'}",
             f"--exec-root={root / 'exec'}", f"--pidfile={root / 'dockerd.pid'}",
             "--storage-driver=overlay2"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.process.poll() is not None:
            break
        if engine.docker("version", check=False, timeout=10).returncode == 0:
            return engine
        time.sleep(0.5)
    engine.stop()
    tail = engine.log.read_text(errors="replace")[-3000:] if engine.log.exists() else ""
    raise MemuError(f"dockerd did not come up within {timeout:.0f} s:\n{tail}",
                    hint=SETUP_HINT)


@contextlib.contextmanager
def container(engine: Engine, name: str, args: Sequence[str | Path]) -> Iterator[str]:
    """``docker run -d --name NAME ARGS…`` for a ``with`` block; removed afterwards (its log
    is printed when the block raised)."""
    engine.docker("rm", "-f", name, check=False)
    engine.docker("run", "-d", "--name", name, *args)
    try:
        yield name
    except BaseException:
        logs = engine.docker("logs", "--tail", "60", name, check=False)
        print(f"--- docker logs {name} ---\n{logs.stdout}{logs.stderr}")
        raise
    finally:
        engine.docker("rm", "-f", "-v", name, check=False)
