"""The language model, through the ollama Python client (``ollama.AsyncClient``).

Two Ollama HTTP API calls are used (https://github.com/ollama/ollama/blob/main/docs/api.md):
``POST /api/embed`` (``{"model", "input": [texts]}`` → ``{"embeddings": [[float]]}``) and
``POST /api/chat`` non-streaming (``{"model", "messages", "stream": false}`` →
``{"message": {"role", "content"}}``). Every call has a deadline; failures are reported as
``LlmUnavailable`` (chat) or None (embeddings), never as a crash, because the bot must keep
answering from retrieved facts when the model is down or slow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import httpx
import ollama

from memu_intelligence.config import Config

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are Memu, a family's helpful assistant. Answer the question using ONLY the numbered "
    "context below: facts the family asked you to remember [m…] and messages from their chat "
    "[h…]. Cite the ids you used in square brackets. If the context does not contain the "
    "answer, say you don't know. Answer in one to three short sentences."
)


class LlmUnavailable(Exception):
    """The chat model did not answer (unreachable, error, or past the deadline)."""


class ModelMissing(LlmUnavailable):
    """Ollama runs but does not have the chat model (404, "model … not found"): on a new box
    it is still being downloaded (the box's pull, ``/api/status`` ``stack.model``)."""


class Llm:
    """Chat and embeddings with deadlines; model names and URL come from ``Config``."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._client = ollama.AsyncClient(host=cfg.ollama_url, timeout=cfg.llm_timeout + 5)

    async def embed(self, texts: Sequence[str]) -> list[list[float]] | None:
        """One embedding per text (``Config.embed_dim`` floats each), or None on any failure
        or a dimension mismatch (then callers fall back to full-text search)."""
        if not texts:
            return []
        try:
            resp = await asyncio.wait_for(
                self._client.embed(model=self._cfg.embed_model, input=list(texts)),
                timeout=self._cfg.embed_timeout,
            )
        except (TimeoutError, ollama.ResponseError, httpx.HTTPError, ConnectionError) as e:
            log.warning("embedding unavailable: %s", e or type(e).__name__)
            return None
        vectors = [list(map(float, v)) for v in resp.embeddings]
        if len(vectors) != len(texts) or any(len(v) != self._cfg.embed_dim for v in vectors):
            log.warning(
                "embedding model %s returned %s dims, expected %d",
                self._cfg.embed_model, {len(v) for v in vectors}, self._cfg.embed_dim,
            )
            return None
        return vectors

    async def answer(self, question: str, context: str) -> str:
        """The model's answer to ``question`` given only ``context`` (numbered snippets).

        Raises:
            ModelMissing: Ollama does not have the chat model (yet).
            LlmUnavailable: Ollama unreachable, returned an error, or exceeded
                ``Config.llm_timeout`` seconds.
        """
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
        ]
        try:
            resp = await asyncio.wait_for(
                self._client.chat(
                    model=self._cfg.chat_model, messages=messages, options={"temperature": 0.2}
                ),
                timeout=self._cfg.llm_timeout,
            )
        except TimeoutError as e:
            raise LlmUnavailable(f"no answer within {self._cfg.llm_timeout:g}s") from e
        except ollama.ResponseError as e:
            if e.status_code == 404:
                raise ModelMissing(str(e)) from e
            raise LlmUnavailable(str(e) or type(e).__name__) from e
        except (httpx.HTTPError, ConnectionError) as e:
            raise LlmUnavailable(str(e) or type(e).__name__) from e
        content = (resp.message.content or "").strip()
        if not content:
            raise LlmUnavailable("empty answer")
        return content

    async def reachable(self) -> bool:
        """True when ``GET /api/tags`` answers (used for logging at start-up)."""
        try:
            await asyncio.wait_for(self._client.list(), timeout=self._cfg.embed_timeout)
        except Exception:
            return False
        return True
