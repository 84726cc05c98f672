"""The assistant's language models (Ollama model names), known to the bot, which uses them,
and to the box, which downloads them (:mod:`memu_agent.model`). They are data on the writable
partition, not images: several GB, pulled once the box is online. The family's stack
settings may name others (``MEMU_BOT_CHAT_MODEL``, ``MEMU_BOT_EMBED_MODEL`` in stack.env)."""

from __future__ import annotations

from pathlib import Path

from memu_common.files import read_env_file

#: Answers in chat: small enough for an N100 with 16 GiB next to the rest of the stack.
CHAT_MODEL = "llama3.2:3b"
#: Embeddings for recall (768 dimensions: the bot's ``embed_dim``).
EMBED_MODEL = "nomic-embed-text"


def wanted(stack_env: Path) -> tuple[str, ...]:
    """The models the box should have: the stack settings' choices, else the defaults."""
    env = read_env_file(stack_env)
    return (env.get("MEMU_BOT_CHAT_MODEL") or CHAT_MODEL,
            env.get("MEMU_BOT_EMBED_MODEL") or EMBED_MODEL)


def full_name(name: str) -> str:
    """Ollama's name with its tag (``nomic-embed-text`` -> ``nomic-embed-text:latest``), as
    ``GET /api/tags`` lists it."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
