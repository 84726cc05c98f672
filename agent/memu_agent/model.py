"""Download the assistant's language models into Ollama, with progress for ``/api/status``.

    (run by memu_agent.pull, memu-stack-pull.service, after the stack's images)

Models are data, not images: several GB under ``/var/lib/memu/stack/ollama``, pulled once
the box is online, by Ollama itself, which verifies every layer's SHA-256. Ollama's HTTP API
(https://github.com/ollama/ollama/blob/main/docs/api.md): ``GET /api/tags`` lists the models
it has (``{"models": [{"name": "llama3.2:3b", ...}]}``); ``POST /api/pull`` with
``{"model": name, "stream": true}`` streams NDJSON lines ``{"status": "pulling <digest>",
"digest", "total", "completed"}`` (bytes per layer) and ends with ``{"status": "success"}`` or
``{"error": "..."}``.

Status goes to ``/run/memu-stack/model.json`` (``stack.model`` of ``/api/status``)::

    {"state": "off" | "waiting" | "pulling" | "ready" | "failed", "reason": "...",
     "models": {"llama3.2:3b": {"state": "pulling", "bytes": 1200000, "total": 2019377376},
                "nomic-embed-text": {"state": "present"}}, "error": "..."}

Until the chat model is there the bot says so and answers from what it remembers
(:class:`memu_intelligence.llm.ModelMissing`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from memu_agent import streamed
from memu_agent.facts import HostPaths
from memu_agent.progress import StatusFile
from memu_common import MemuError
from memu_common.models import full_name

log = logging.getLogger("memu_agent.model")

#: Ollama's API as compose.yaml publishes it on the box's loopback.
OLLAMA_URL = "http://127.0.0.1:11434"
STATUS_FILE = HostPaths().model_status


@dataclasses.dataclass
class ModelPull:
    """One run over the wanted models (see the module docstring).

    Attributes:
        url: Ollama's base URL; status_path: where the status goes; wait_s: how long to wait
        for Ollama to answer at all (it starts with the stack) before giving up this run.
    """

    url: str = OLLAMA_URL
    status_path: Path = STATUS_FILE
    wait_s: float = 300
    clock: Callable[[], float] = time.monotonic
    status: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self._file = StatusFile(self.status_path, self.clock)

    def report(self, force: bool = True) -> None:
        """Write the status file (progress at most every 2 s unless ``force``)."""
        self._file.write(self.status, force)

    def not_running(self, reason: str) -> None:
        """Report that Ollama does not run, with the stack's reason
        (:attr:`memu_agent.stack.Decision.not_started`): "off" when this box runs no LLM
        ("off: …"), else "waiting" (its image is not there yet)."""
        state = "off" if reason.startswith("off:") else "waiting"
        self.status = {"state": state, "reason": reason.removeprefix("off: "), "models": {}}
        self.report()

    async def run(self, names: Sequence[str]) -> bool:
        """Pull each of ``names`` Ollama lacks; True when all are there. Never raises: a
        failure is reported in the status (and the unit retries later)."""
        models: dict[str, dict[str, Any]] = {n: {"state": "waiting"} for n in names}
        self.status = {"state": "waiting", "models": models}
        self.report()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=600)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                have = await self._tags(session)
            except MemuError as e:
                self.status.update(state="failed", error=e.message)
                self.report()
                return False
            self.status["state"] = "pulling"
            for name in names:
                if full_name(name) in have:
                    models[name] = {"state": "present"}
                    continue
                t0 = self.clock()
                try:
                    await self._pull(session, name, models)
                except MemuError as e:
                    log.error("%s", e.message)
                    models[name] = {"state": "failed", "error": e.message}
                else:
                    models[name] = {"state": "pulled", "seconds": round(self.clock() - t0, 1)}
                    log.info("pulled model %s in %.1f s", name, self.clock() - t0)
                self.report()
        ok = all(m["state"] in ("present", "pulled") for m in models.values())
        self.status["state"] = "ready" if ok else "failed"
        self.report()
        return ok

    async def _tags(self, session: aiohttp.ClientSession) -> set[str]:
        deadline = self.clock() + self.wait_s
        while True:
            try:
                async with session.get(f"{self.url}/api/tags") as resp:
                    resp.raise_for_status()
                    body = await resp.json()
                return {str(m.get("name")) for m in body.get("models") or []}
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                if self.clock() > deadline:
                    raise MemuError(f"Ollama does not answer on {self.url}: {e}",
                                    hint="see docker logs memu-ollama-1") from e
                await asyncio.sleep(2)

    async def _pull(self, session: aiohttp.ClientSession, name: str,
                    models: dict[str, dict[str, Any]]) -> None:
        layers: dict[str, tuple[int, int]] = {}
        models[name] = {"state": "pulling", "bytes": 0, "total": 0}
        self.report()
        try:
            async with session.post(f"{self.url}/api/pull",
                                    json={"model": name, "stream": True}) as resp:
                if resp.status != 200:
                    body = await resp.text()
                    raise MemuError(f"model {name}: Ollama says {resp.status}: "
                                    f"{streamed.refusal(body, 'error', body)}")
                async for raw in resp.content:
                    event = streamed.event(raw)
                    if event.get("error"):
                        raise MemuError(f"model {name}: {event['error']}")
                    if event.get("digest") and event.get("total"):
                        layers[str(event["digest"])] = (int(event.get("completed") or 0),
                                                        int(event["total"]))
                        models[name].update(bytes=sum(c for c, _ in layers.values()),
                                            total=sum(t for _, t in layers.values()))
                        self.report(force=False)
                    if event.get("status") == "success":
                        return
        except (aiohttp.ClientError, TimeoutError) as e:
            raise MemuError(f"model {name}: {e}") from e
        raise MemuError(f"model {name}: Ollama ended the pull without success")

