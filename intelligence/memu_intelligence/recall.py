"""Answering a question from the room's memory and its chat history.

Steps: embed the question (optional, short deadline) → search explicit memory (this room
only) → search the room's history on the homeserver → number the snippets ``[m12]`` /
``[h1]`` → ask the model with *only* that context → append the sources. When the model is
unavailable or slow, the answer is the retrieved snippets verbatim with a note saying so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from memu_intelligence.config import Config
from memu_intelligence.llm import Llm, LlmUnavailable, ModelMissing
from memu_intelligence.matrix import HistoryHit, Matrix, MatrixError
from memu_intelligence.memory import MemoryHit, MemoryStore
from memu_intelligence.text import one_line

log = logging.getLogger(__name__)

# Question words and fillers dropped before asking the homeserver's search (which ANDs
# terms unless told "or", and does not stem on SQLite).
_STOP = frozenset(
    (
        "a", "about", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "been",
        "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have",
        "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of", "on",
        "or", "our", "ours", "please", "remind", "remember", "so", "some", "tell", "that",
        "the", "their", "them", "then", "there", "these", "they", "this", "to", "us", "was",
        "we", "were", "what", "when", "where", "which", "who", "whom", "why", "will", "with",
        "would", "you", "your", "yours",
    )
)
_WORD = re.compile(r"[\w-]+", re.UNICODE)
#: Matching messages read from the homeserver per question. The bot's own are left out by
#: the search itself; commands ("/recall wifi" asked again and again) are skipped here, so
#: the window is wide enough that they do not crowd out a fact said once.
HISTORY_WINDOW = 100
UNAVAILABLE = "(The language model is unavailable right now, so here is what I found.)"
DOWNLOADING = ("(The language model is not on the box yet: it is downloaded once the box is "
               "online, and the box's page shows how far along it is. Meanwhile, here is what "
               "I found.)")


@dataclass(frozen=True)
class Answer:
    """A recall answer: the text for the room and what it was built from."""

    text: str
    memories: Sequence[MemoryHit] = field(default_factory=tuple)
    messages: Sequence[HistoryHit] = field(default_factory=tuple)
    used_model: bool = False


def keywords(question: str) -> list[str]:
    """The content words of ``question``, lower-case, in order, without repeats."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(question.lower()):
        w = w.strip("-")
        if w and w not in _STOP and not w.startswith("#"):
            seen.setdefault(w, None)
    return list(seen)


def history_term(question: str) -> str | None:
    """A homeserver search term that matches any of the question's keywords, or None."""
    words = keywords(question)
    return " or ".join(words[:8]) if words else None


class Recaller:
    """Retrieval plus answer; ``recall()`` never raises for model or search failures
    (database errors do propagate, for the dispatcher to apologise)."""

    def __init__(self, cfg: Config, memory: MemoryStore, llm: Llm, matrix: Matrix) -> None:
        self._cfg = cfg
        self._memory = memory
        self._llm = llm
        self._matrix = matrix

    async def retrieve(
        self, room_id: str, question: str, *, exclude_events: Sequence[str] = (), limit: int = 5
    ) -> tuple[list[MemoryHit], list[HistoryHit]]:
        """Best memories and chat messages of ``room_id`` for ``question``."""
        embedding = None
        if self._memory.vector:
            vectors = await self._llm.embed([question])
            embedding = vectors[0] if vectors else None
        memories = await self._memory.search(room_id, question, embedding=embedding, limit=limit)
        messages: list[HistoryHit] = []
        term = history_term(question)
        if term:
            try:
                found = await self._matrix.search_history(
                    room_id, term, limit=HISTORY_WINDOW, deadline=self._cfg.search_timeout
                )
            except MatrixError as e:
                log.warning("history search in %s failed: %s", room_id, e)
                found = []
            remembered = {h.memory.body.strip() for h in memories}
            for hit in found:
                text = hit.body.strip()
                if (
                    hit.sender == self._cfg.user_id
                    or hit.event_id in exclude_events
                    or text.startswith("/")
                    or text in remembered
                ):
                    continue
                messages.append(hit)
                if len(messages) >= limit:
                    break
        return memories, messages

    async def recall(
        self, room_id: str, question: str, *, exclude_events: Sequence[str] = ()
    ) -> Answer:
        """Answer ``question`` for ``room_id``; see the module docstring."""
        memories, messages = await self.retrieve(room_id, question, exclude_events=exclude_events)
        if not memories and not messages:
            return Answer(
                "I don't know anything about that yet. Tell me with "
                "“/remember …” and I'll keep it for next time."
            )
        context = build_context(memories, messages)
        sources = format_sources(memories, messages)
        try:
            reply = await self._llm.answer(question, context)
        except ModelMissing as e:
            log.warning("chat model not downloaded yet: %s", e)
            return Answer(f"{DOWNLOADING}\n{context}", memories, messages)
        except LlmUnavailable as e:
            log.warning("chat model unavailable: %s", e)
            return Answer(f"{UNAVAILABLE}\n{context}", memories, messages)
        return Answer(f"{reply}\n\nSources: {sources}", memories, messages, used_model=True)


def build_context(memories: Sequence[MemoryHit], messages: Sequence[HistoryHit]) -> str:
    """Numbered snippets, one per line: ``[m12] text (remembered by @a, 2025-06-01)``."""
    lines = [
        f"[{h.memory.short_id}] {one_line(h.memory.body, 500)} "
        f"(remembered by {h.memory.author}, {h.memory.created_at:%Y-%m-%d})"
        for h in memories
    ]
    lines += [
        f"[h{i}] {one_line(m.body, 500)} (said by {m.sender}, {m.ts:%Y-%m-%d})"
        for i, m in enumerate(messages, start=1)
    ]
    return "\n".join(lines)


def format_sources(memories: Sequence[MemoryHit], messages: Sequence[HistoryHit]) -> str:
    """``m12, m3; h1 @bob 2025-06-01`` — what the answer was built from."""
    parts = [h.memory.short_id for h in memories]
    parts += [f"h{i} ({m.sender}, {m.ts:%Y-%m-%d})" for i, m in enumerate(messages, start=1)]
    return ", ".join(parts)
