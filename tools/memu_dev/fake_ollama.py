"""A deterministic stand-in for Ollama's HTTP API (no model can run on the test hosts).

Serves the endpoints the bot's ``ollama.AsyncClient`` uses, with Ollama's request and
response shapes (https://github.com/ollama/ollama/blob/main/docs/api.md):

- ``POST /api/embed``: embeddings from a hashed bag of words (texts sharing words are close);
- ``POST /api/chat``: non-streaming (one JSON object) and streaming (NDJSON chunks, the last
  with ``done: true``); the answer quotes the context line sharing most words with the
  question, with its ``[id]``, so tests can check what was retrieved and cited;
- ``GET /api/tags``: one model.

It runs on its own event loop in a thread (session-scoped while tests use per-test loops)
and can be switched ``down()`` (listener closed: connection refused), ``up()``,
``slow(seconds)``, ``hold()``/``release()`` (chat answers wait on an event) and
``without_models()`` (every model missing, as on a box still downloading them: Ollama's
404 ``model "…" not found, try pulling it first``).
``requests`` records every chat request body.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import threading
from typing import Any

from aiohttp import web

_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"the", "is", "a", "an", "of", "to", "what", "where", "who", "our", "my", "and", "in"}


def embed_text(text: str, dim: int) -> list[float]:
    """Hashed bag of words, L2-normalised: shared words ⇒ high cosine similarity."""
    vec = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        if word in _STOP:
            continue
        h = int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "big")
        vec[h % dim] += 1.0
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    return [x / norm for x in vec]


def answer_from_prompt(messages: list[dict[str, Any]]) -> str:
    """The context line sharing most words with the question, quoted with its id."""
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    context, _, question = user.partition("\n\nQuestion: ")
    q = set(_WORD.findall(question.lower())) - _STOP
    lines = [ln for ln in context.splitlines() if ln.startswith("[")]
    if not lines:
        return "I don't know."
    scored = sorted(lines, key=lambda ln: -len(q & set(_WORD.findall(ln.lower()))))
    cited = [ln for ln in scored if q & set(_WORD.findall(ln.lower()))] or scored[:1]
    return "From what I know: " + " ".join(cited[:2])


class FakeOllama:
    """The fake server; ``url`` is its base URL once ``start()`` returned."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.delay = 0.0
        self.embed_delay = 0.0
        self.models_missing = False
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._held: asyncio.Event | None = None
        self._waiting = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self, port: int) -> None:
        self.port = port
        self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        if self._runner:
            self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def down(self) -> None:
        """Close the listener and every open connection: clients get 'connection refused'."""
        if self._runner:
            self._call(self._runner.cleanup())
            self._runner = self._site = None

    def up(self) -> None:
        """Listen again (same port) and answer without delay or hold, with every model."""
        self.release()
        self.delay = self.embed_delay = 0.0
        self.models_missing = False
        if self._runner is None:
            self._call(self._start())

    def without_models(self) -> None:
        """Answer chat and embed calls as Ollama does for a model it has not pulled."""
        self.models_missing = True

    def _missing(self, model: str) -> web.Response:
        return web.json_response(
            {"error": f'model "{model}" not found, try pulling it first'}, status=404)

    def hold(self) -> None:
        """Keep every chat answer from now on waiting until ``release()``."""
        self._call(self._hold())

    async def _hold(self) -> None:
        self._held = asyncio.Event()
        self._waiting = asyncio.Event()

    def wait_held(self, timeout: float) -> bool:
        """True once a chat request is waiting on the hold (within ``timeout`` seconds)."""
        async def waiting() -> bool:
            try:
                await asyncio.wait_for(self._waiting.wait(), timeout)
                return True
            except TimeoutError:
                return False
        return bool(asyncio.run_coroutine_threadsafe(waiting(), self._loop).result(
            timeout=timeout + 5))

    def release(self) -> None:
        """Let held answers go (and later ones answer at once)."""
        self._call(self._release())

    async def _release(self) -> None:
        if self._held is not None:
            self._held.set()
        self._held = None

    def slow(self, seconds: float, *, embeddings: bool = True) -> None:
        """Delay every chat answer (and embed answer, unless ``embeddings`` is False: a real
        model embeds a sentence in milliseconds) by ``seconds``."""
        self.delay = seconds
        self.embed_delay = seconds if embeddings else 0.0

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/embed", self._embed)
        app.router.add_post("/api/chat", self._chat)
        app.router.add_get("/api/tags", self._tags)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _embed(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.models_missing:
            return self._missing(body.get("model", ""))
        await asyncio.sleep(self.embed_delay)
        inputs = body.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        return web.json_response(
            {"model": body.get("model", ""), "embeddings": [embed_text(t, self.dim) for t in texts]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if self.models_missing:
            return self._missing(body.get("model", ""))
        if self._held is not None:
            held = self._held
            self._waiting.set()
            await held.wait()
        await asyncio.sleep(self.delay)
        text = answer_from_prompt(body.get("messages", []))
        model = body.get("model", "")
        base = {"model": model, "created_at": "2025-01-01T00:00:00Z"}
        if body.get("stream", True) is False:
            return web.json_response({**base, "message": {"role": "assistant", "content": text},
                                      "done": True, "done_reason": "stop"})
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for word in text.split(" "):
            chunk = {**base, "message": {"role": "assistant", "content": word + " "},
                     "done": False}
            await resp.write(json.dumps(chunk).encode() + b"\n")
        done = {**base, "message": {"role": "assistant", "content": ""}, "done": True,
                "done_reason": "stop"}
        await resp.write(json.dumps(done).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{
            "name": "fake:latest", "model": "fake:latest", "modified_at": "2025-01-01T00:00:00Z",
            "size": 1, "digest": "0" * 64,
            "details": {"format": "gguf", "family": "fake", "parameter_size": "0B",
                        "quantization_level": "Q0"},
        }]})
