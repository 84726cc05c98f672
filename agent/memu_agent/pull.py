"""Pull the registry images the booted slot's lock names but does not carry, by digest.

    /usr/bin/python3 -m memu_agent.pull     (memu-stack-pull.service, once the box is online)

Images too big for the OS slot (Immich, Ollama), and small ones the build could not copy
because their registry was not reachable, have lock entries without an archive
(:attr:`memu_common.container_lock.LockEntry.in_slot`); their ``origin`` is
``repository@sha256:…``. Each one Docker lacks is pulled through the Docker Engine API
(``POST /images/create``, https://docs.docker.com/reference/api/engine/) by that digest, never
by tag: Docker checks that the manifest it gets hashes to the digest and every blob to the
digest the manifest names (the distribution spec's content addressing), so what runs is
exactly what the lock pinned. A digest the registry does not have is refused by name. A
service that needs more RAM than the box has (or is switched off) is not pulled: "off"
(:mod:`memu_common.optional`).

Progress goes to ``/run/memu-stack/pull.json`` (for ``/api/status``, merged into
``stack.images`` by :func:`memu_agent.stack.read_preload`)::

    {"state": "running" | "done" | "failed", "images": {
        "immich-ml": {"state": "pulling", "bytes": 123456, "total": 987654},
        "immich-server": {"state": "pulled", "seconds": 81.2},
        "element": {"state": "failed", "error": "..."},
        "ollama": {"state": "off", "reason": "off on this box: 4 GiB of RAM, ..."}}}

and the image ID of every pulled image to ``/run/memu-stack/pulled.env``
(``MEMU_IMAGE_OLLAMA=sha256:…``), which the Compose project reads after ``images.env``.
Then, on a box that is set up, the services whose images are now there are started
(:func:`memu_agent.stack.start`; what already runs is left alone), and the LLM's models are
downloaded into Ollama when it runs on this box (:mod:`memu_agent.model`). Exit status 0 when every
such image is in Docker, 1 otherwise: the unit is restarted later (backing off), so a box
that was offline gets its images, and their services, once it is online.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from memu_agent import model, stack, streamed
from memu_agent.facts import HostPaths
from memu_agent.preload import IMAGES_DIR, image_env_name
from memu_agent.progress import StatusFile
from memu_agent.stack import PULLED_ENV, STACK_ENV
from memu_common import MemuError, models, optional
from memu_common import container_lock as lock
from memu_common.files import write_atomic

log = logging.getLogger("memu_agent.pull")

STATUS_FILE = HostPaths().pull_status
DOCKER_SOCKET = HostPaths().docker_socket


def pinned(entry: lock.LockEntry) -> tuple[str, str]:
    """(repository, digest) of an entry's ``origin`` ``repository@sha256:<hex>``.

    Raises:
        MemuError: ``origin`` is not pinned by digest (the lock file's validation forbids it
            for entries without an archive).
    """
    repo, sep, digest = entry.origin.rpartition("@")
    if not sep or not digest.startswith("sha256:"):
        raise MemuError(f"{entry.name}: {entry.origin!r} is not pinned by digest")
    return repo, digest


def progress(layers: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
    """(bytes downloaded, bytes in all) over the layers seen so far, from Docker's progress
    messages (per layer ID: ``progressDetail.current`` and ``.total`` of "Downloading")."""
    return sum(c for c, _ in layers.values()), sum(t for _, t in layers.values())


class DockerApi:
    """The Engine API calls the pull makes, on a Unix socket."""

    def __init__(self, socket: Path = DOCKER_SOCKET) -> None:
        self.socket = socket

    def _session(self, total_s: float | None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.socket)),
                                     timeout=aiohttp.ClientTimeout(total=total_s,
                                                                   sock_read=600))

    async def image_id(self, reference: str) -> str | None:
        """The ID of the image ``reference`` (``repo@sha256:…``), or None when Docker lacks it.

        Raises:
            MemuError: Docker does not answer.
        """
        try:
            async with self._session(30) as s, s.get(
                    f"http://docker/images/{reference}/json") as resp:
                if resp.status == 404:
                    return None
                resp.raise_for_status()
                return str((await resp.json())["Id"])
        except (aiohttp.ClientError, TimeoutError, KeyError) as e:
            raise MemuError(f"Docker on {self.socket} does not answer: {e}") from e

    async def pull(self, repository: str, digest: str,
                   on_progress: Callable[[int, int], None]) -> None:
        """Pull ``repository@digest``, calling ``on_progress(done, total)`` (bytes) as layers
        download.

        Raises:
            MemuError: the registry or Docker refused it (the message is Docker's).
        """
        layers: dict[str, tuple[int, int]] = {}
        try:
            async with self._session(None) as s, s.post(
                    "http://docker/images/create",
                    params={"fromImage": repository, "tag": digest}) as resp:
                if resp.status != 200:
                    body = await resp.text()
                    raise MemuError(f"pulling {repository}@{digest}: "
                                    f"{streamed.refusal(body, 'message') or resp.reason}")
                async for line in resp.content:
                    event = streamed.event(line)
                    error = (event.get("errorDetail") or {}).get("message") or event.get("error")
                    if error:
                        raise MemuError(f"pulling {repository}@{digest}: {error}")
                    detail = event.get("progressDetail") or {}
                    if event.get("status") == "Downloading" and detail.get("total"):
                        layers[str(event.get("id"))] = (int(detail.get("current", 0)),
                                                        int(detail["total"]))
                        on_progress(*progress(layers))
                    elif event.get("status") == "Download complete" and event.get("id") in layers:
                        total = layers[str(event["id"])][1]
                        layers[str(event["id"])] = (total, total)
                        on_progress(*progress(layers))
        except (aiohttp.ClientError, TimeoutError) as e:
            raise MemuError(f"pulling {repository}@{digest}: {e}") from e


@dataclasses.dataclass
class Pull:
    """One run over the lock's entries without an archive (see the module docstring)."""

    docker: DockerApi
    status_path: Path = STATUS_FILE
    pulled_env: Path = PULLED_ENV
    clock: Callable[[], float] = time.monotonic
    status: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self._file = StatusFile(self.status_path, self.clock)

    def _report(self, force: bool = True) -> None:
        self._file.write(self.status, force)  # progress: at most every 2 s

    async def run(self, entries: Iterable[lock.LockEntry], memory: int = 0,
                  choices: Mapping[str, str] | None = None) -> bool:
        """Pull what Docker lacks; True when every wanted entry's image is in Docker.

        Args:
            memory: the box's RAM in bytes (MemTotal), for the services that need much of
                it (:mod:`memu_common.optional`); choices: their "auto" | "on" | "off".

        Raises:
            MemuError: Docker does not answer.
        """
        images: dict[str, dict[str, Any]] = {}
        todo = []
        for e in entries:
            if e.in_slot:
                continue
            wanted, why = optional.enabled(e.name, memory, (choices or {}).get(e.name, "auto"))
            if wanted:
                todo.append(e)
                images[e.name] = {"state": "waiting"}
            else:
                images[e.name] = {"state": "off", "reason": why}
        self.status = {"state": "running", "images": images}
        ids: dict[str, str] = {}
        try:
            await self._pull_all(todo, images, ids)
        except MemuError as err:  # Docker stopped answering: say so, then give up this run
            self.status.update(state="failed", error=str(err))
            self._report()
            raise
        text = "".join(f"{image_env_name(n)}={i}\n" for n, i in ids.items())
        try:
            write_atomic(self.pulled_env, text.encode(), mode=0o644, dir_mode=0o755)
        except OSError as err:
            log.error("cannot write %s: %s", self.pulled_env, err)
        ok = len(ids) == len(todo)
        self.status["state"] = "done" if ok else "failed"
        self._report()
        return ok

    async def _pull_all(self, todo: Sequence[lock.LockEntry], images: dict[str, dict[str, Any]],
                        ids: dict[str, str]) -> None:
        for e in todo:
            repo, digest = pinned(e)
            have = await self.docker.image_id(f"{repo}@{digest}")
            if have:
                ids[e.name] = have
                images[e.name] = {"state": "present"}
                continue
            t0 = self.clock()
            images[e.name] = {"state": "pulling", "bytes": 0, "total": 0}
            self._report()

            def seen(done: int, total: int, name: str = e.name) -> None:
                images[name].update(bytes=done, total=total)
                self._report(force=False)

            try:
                await self.docker.pull(repo, digest, seen)
                got = await self.docker.image_id(f"{repo}@{digest}")
                if got is None:
                    raise MemuError(f"{e.name}: Docker pulled {repo}@{digest} but does not "
                                    "list it")
            except MemuError as err:
                log.error("%s: %s", e.name, err)
                images[e.name] = {"state": "failed", "error": str(err),
                                  "seconds": round(self.clock() - t0, 1)}
            else:
                ids[e.name] = got
                images[e.name] = {"state": "pulled", "seconds": round(self.clock() - t0, 1)}
                log.info("pulled %s@%s in %.1f s", repo, digest, self.clock() - t0)
            self._report()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 0 (every image the slot does not carry is in Docker) or 1."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="memu-pull", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=IMAGES_DIR)
    parser.add_argument("--status", type=Path, default=STATUS_FILE)
    parser.add_argument("--pulled-env", type=Path, default=PULLED_ENV)
    parser.add_argument("--docker-socket", type=Path, default=DOCKER_SOCKET)
    parser.add_argument("--stack-env", type=Path, default=STACK_ENV,
                        help="the stack's settings: which optional services are on or off")
    parser.add_argument("--model-status", type=Path, default=model.STATUS_FILE)
    parser.add_argument("--no-start", action="store_true",
                        help="only pull; do not start the services whose images arrived")
    args = parser.parse_args(argv)
    pull = Pull(DockerApi(args.docker_socket), args.status, args.pulled_env)
    try:
        ok = asyncio.run(pull.run(lock.read(args.images), optional.mem_total(),
                                  optional.read_choices(args.stack_env)))
    except MemuError as e:
        log.error("%s", e)
        return 1
    # memu-stack.service has run by now (ordered before), or is started later by the setup
    # (stack.UP_LOCK keeps the two Composes apart); a box not set up yet, or whose
    # stack was left stopped on purpose (a failed restore of its data), starts nothing here.
    if args.no_start or not args.stack_env.exists() or not stack.may_start():
        return 0 if ok else 1
    try:
        decision = stack.start(stack.Compose(lock=stack.UP_LOCK), pulled_env=args.pulled_env,
                               stack_env=args.stack_env)
    except (MemuError, OSError) as e:
        log.error("starting the pulled services: %s", e)
        return 1
    llm = model.ModelPull(status_path=args.model_status)
    if "ollama" in decision.start:
        ok = asyncio.run(llm.run(models.wanted(args.stack_env))) and ok
    else:
        llm.not_running(decision.not_started.get("ollama", "not in the stack"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
